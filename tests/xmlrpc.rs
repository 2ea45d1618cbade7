//! The supervisord XML-RPC client against a real supervisord: what each call answers,
//! the typed faults a user gets for the wrong request, and the errors (with their
//! fixes) when supervisord cannot be reached, refuses the credentials or never
//! answers.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use supervisor_slack::check::{check_supervisor, Level};
use supervisor_slack::config::Secret;
use supervisor_slack::supervisord::event::State;
use supervisor_slack::supervisord::xmlrpc::{Client, Error, Fault, LogChannel};
use common::{secs, wait_until};
use common::supervisord::*;

fn client(sv: &Supervisord) -> Client {
    Client::new(&sv.server_url(), None, None).unwrap()
}

/// A TCP port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `f` until it gives `Some`, for up to `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn all_process_info_lists_every_program_in_its_state() {
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .program(Program::sleeper("idle").autostart(false))
            .program(
                Program::new("broken", "/bin/sh -c 'exit 3'")
                    .startsecs(0)
                    .exitcodes("0"),
            ),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    sv.wait_for_state("broken", "EXITED", secs(10));

    let all = client(&sv).get_all_process_info().await.unwrap();
    let states: BTreeMap<_, _> = all
        .iter()
        .map(|p| (p.full_name(), (p.state(), p.statename.as_str())))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("broken:broken".to_string(), (Some(State::Exited), "EXITED")),
            ("idle:idle".to_string(), (Some(State::Stopped), "STOPPED")),
            ("web:web".to_string(), (Some(State::Running), "RUNNING")),
        ])
    );
    let web = all.iter().find(|p| p.name == "web").unwrap();
    assert_eq!(Some(web.pid as u32), sv.process_pid("web"));
    let broken = all.iter().find(|p| p.name == "broken").unwrap();
    assert_eq!(broken.exitstatus, 3);
    assert_eq!(broken.spawnerr, "Bad exit code 3");
    assert!(web.stderr_logfile.ends_with("web.stderr.log"), "{web:?}");
}

#[tokio::test]
async fn supervisord_itself_answers_running() {
    let sv = Supervisord::start(SupervisordConfig::new().program(Program::sleeper("web")));
    let state = client(&sv).get_state().await.unwrap();
    assert_eq!((state.code, state.name.as_str()), (1, "RUNNING"));

    let f = check_supervisor(Some(&sv.server_url()), None, None, secs(2)).await;
    assert_eq!(f.level, Level::Ok, "{f:?}");
    assert_eq!(
        f.what,
        format!(
            "supervisord answers XML-RPC at {} (state RUNNING)",
            sv.server_url()
        )
    );
}

#[tokio::test]
async fn an_unknown_process_is_a_bad_name_fault() {
    let sv = Supervisord::start(SupervisordConfig::new().program(Program::sleeper("web")));
    let err = client(&sv).get_process_info("ghost").await.unwrap_err();
    match &err {
        Error::Fault { fault, string } => {
            assert_eq!(*fault, Fault::BadName);
            assert_eq!(string, "BAD_NAME: ghost");
        }
        other => panic!("expected BAD_NAME, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "supervisord refused: BAD_NAME: ghost (fault 10)"
    );
}

#[tokio::test]
async fn starting_a_running_process_and_stopping_a_stopped_one_are_refused() {
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .program(Program::sleeper("idle").autostart(false)),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    let c = client(&sv);

    let started = c.start_process("web:web", false).await.unwrap_err();
    assert_eq!(started.fault(), Some(Fault::AlreadyStarted), "{started}");
    assert!(
        started.to_string().contains("ALREADY_STARTED: web:web"),
        "{started}"
    );

    let stopped = c.stop_process("idle:idle", false).await.unwrap_err();
    assert_eq!(stopped.fault(), Some(Fault::NotRunning), "{stopped}");

    // and neither refusal changed anything
    assert_eq!(sv.state("web").as_deref(), Some("RUNNING"));
    assert_eq!(sv.state("idle").as_deref(), Some("STOPPED"));
}

#[tokio::test]
async fn stop_then_start_runs_a_new_process() {
    let sv = Supervisord::start(SupervisordConfig::new().program(Program::sleeper("web").startsecs(0)));
    sv.wait_for_state("web", "RUNNING", secs(10));
    let c = client(&sv);
    let before = c.get_process_info("web:web").await.unwrap();
    assert_eq!(before.statename, "RUNNING");

    c.stop_process("web:web", true).await.unwrap();
    let stopped = c.get_process_info("web:web").await.unwrap();
    assert_eq!((stopped.statename.as_str(), stopped.pid), ("STOPPED", 0));
    assert_eq!(sv.state("web").as_deref(), Some("STOPPED"));

    c.start_process("web:web", true).await.unwrap();
    let after = c.get_process_info("web:web").await.unwrap();
    assert_eq!(after.statename, "RUNNING");
    assert_ne!(after.pid, before.pid);
    assert_eq!(sv.process_pid("web"), Some(after.pid as u32));
}

#[tokio::test]
async fn a_signal_reaches_the_process() {
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(
                Program::new(
                    "hup",
                    "/bin/sh -c 'trap \"echo reloading on USR1 >&2\" USR1; echo ready >&2; while :; do sleep 0.1; done'",
                )
                .startsecs(0),
            )
            .program(Program::sleeper("idle").autostart(false)),
    );
    sv.wait_for_state("hup", "RUNNING", secs(10));
    let c = client(&sv);
    assert!(
        wait_until(secs(5), || sv.program_stderr("hup").contains("ready")),
        "the trap was never set: {}",
        sv.diagnostics()
    );

    c.signal_process("hup:hup", "USR1").await.unwrap();
    assert!(
        wait_until(secs(5), || sv
            .program_stderr("hup")
            .contains("reloading on USR1")),
        "the program never saw USR1: {:?}",
        sv.program_stderr("hup")
    );
    assert_eq!(sv.state("hup").as_deref(), Some("RUNNING"));

    let bad = c
        .signal_process("hup:hup", "NOSUCHSIGNAL")
        .await
        .unwrap_err();
    assert_eq!(bad.fault(), Some(Fault::BadSignal), "{bad}");
    let idle = c.signal_process("idle:idle", "HUP").await.unwrap_err();
    assert_eq!(idle.fault(), Some(Fault::NotRunning), "{idle}");
}

#[tokio::test]
async fn the_stderr_tail_has_what_the_program_wrote() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "talker",
                "/bin/sh -c 'echo \"error: <db> & cache ☃ unreachable\" >&2; echo \"to stdout\"; exec sleep 1000'",
            )
            .startsecs(0),
        ),
    );
    sv.wait_for_state("talker", "RUNNING", secs(10));
    let line = "error: <db> & cache ☃ unreachable\n";
    assert!(wait_until(secs(5), || sv.program_stderr("talker") == line));
    let c = client(&sv);

    let tail = c
        .tail_process_stderr_log("talker:talker", 0, 4096)
        .await
        .unwrap();
    assert_eq!(tail.text, line);
    assert_eq!(tail.offset as usize, line.len());
    assert!(!tail.overflow);

    // the last 10 bytes of a longer log: overflow, and the offset to continue from
    let short = c
        .tail_process_stderr_log("talker:talker", 0, 10)
        .await
        .unwrap();
    assert_eq!(short.text, "reachable\n");
    assert!(short.overflow);
    assert_eq!(short.offset, tail.offset);
    // nothing new since that offset
    let more = c
        .tail_process_log(LogChannel::Stderr, "talker:talker", short.offset, 4096)
        .await
        .unwrap();
    assert_eq!(more.text, "");

    assert_eq!(
        c.read_process_stderr_log("talker:talker", -10, 0)
            .await
            .unwrap(),
        "reachable\n"
    );
    assert_eq!(
        c.read_process_stdout_log("talker:talker", 0, 0)
            .await
            .unwrap(),
        "to stdout\n"
    );
    let main = c.read_main_log(0, 0).await.unwrap();
    assert!(main.contains("spawned: 'talker' with pid"), "{main}");
}

#[tokio::test]
async fn basic_auth_over_tcp_takes_the_right_password_only() {
    let port = free_port();
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web"))
            .raw(&format!(
                "[inet_http_server]\nport=127.0.0.1:{port}\nusername=user\npassword=s3cret"
            )),
    );
    let url = format!("http://127.0.0.1:{port}");
    let with = |pass: Option<&str>| {
        Client::new(
            &url,
            pass.map(|_| "user".to_string()),
            pass.map(Secret::new),
        )
        .unwrap()
    };

    let state = with(Some("s3cret")).get_state().await.unwrap();
    assert_eq!(state.name, "RUNNING");

    let wrong = with(Some("nope")).get_state().await.unwrap_err();
    assert!(
        matches!(
            wrong,
            Error::Auth {
                sent_credentials: true
            }
        ),
        "{wrong:?}"
    );
    assert_eq!(
        wrong.to_string(),
        "authentication failed: set supervisor_username/password (the ones set were rejected)"
    );
    let none = with(None).get_state().await.unwrap_err();
    assert_eq!(
        none.to_string(),
        "authentication failed: set supervisor_username/password"
    );

    // `check` says the same, with where the credentials come from
    let f = check_supervisor(Some(&url), None, None, secs(2)).await;
    assert_eq!(f.level, Level::Problem, "{f:?}");
    assert!(f.what.contains("authentication failed"), "{f:?}");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("supervisor_username and supervisor_password"),
        "{f:?}"
    );
    let f = check_supervisor(
        Some(&url),
        Some("user".into()),
        Some(Secret::new("s3cret")),
        secs(2),
    )
    .await;
    assert_eq!(f.level, Level::Ok, "{f:?}");
    drop(sv);
}

#[tokio::test]
async fn a_missing_socket_is_named_and_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.sock");
    let c = Client::new(&format!("unix://{}", path.display()), None, None).unwrap();
    let started = Instant::now();
    let err = c.get_state().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(matches!(err, Error::SocketMissing(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no supervisord socket at {}", path.display())
    );
}

#[tokio::test]
async fn a_closed_tcp_port_is_connection_refused() {
    let port = free_port();
    let err = Client::new(&format!("http://127.0.0.1:{port}"), None, None)
        .unwrap()
        .get_all_process_info()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("connection refused on 127.0.0.1:{port} (is supervisord running?)")
    );
}

#[tokio::test]
async fn a_socket_that_never_answers_costs_no_more_than_the_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Accepts and holds every connection without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let c = Client::new(&format!("unix://{}", path.display()), None, None)
        .unwrap()
        .with_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let err = c.get_process_info("web:web").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(800),
        "took {took:?}"
    );
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(err.to_string(), "supervisord did not answer within 300ms");
}

#[tokio::test]
async fn a_started_process_can_be_polled_until_running() {
    // start_process without waiting answers at once; the state follows.
    let sv = Supervisord::start(SupervisordConfig::new().program(Program::sleeper("late").autostart(false)));
    let c = client(&sv);
    c.start_process("late:late", false).await.unwrap();
    let running = eventually(secs(5), || async {
        let info = c.get_process_info("late:late").await.ok()?;
        (info.state() == Some(State::Running)).then_some(info)
    })
    .await;
    assert!(running.is_some(), "{}", sv.diagnostics());
}
