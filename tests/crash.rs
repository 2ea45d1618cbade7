//! Crash context against a real supervisord: what a thread reply would show when a
//! process dies (exit status, spawn error, stderr tail) and, when context cannot be
//! had, the reason the user reads instead.

mod common;

use std::time::{Duration, Instant};

use common::events::{ev, EventBuilder};
use common::supervisord::*;
use common::{secs, wait_until};
use supervisor_slack::card::CrashContext;
use supervisor_slack::config::Secret;
use supervisor_slack::crash::{ContextOptions, ContextSource};
use supervisor_slack::supervisord::event::{ProcessState, State};

/// The event supervisord would have sent for `name`'s transition to `to`, now.
fn event(name: &str, from: State, to: State, expected: Option<bool>) -> ProcessState {
    ev(name, to)
        .from(from)
        .expected(expected)
        .host("test-host")
        .server("supervisor-slack-test")
        .at(chrono::Utc::now())
}

fn source(url: &str) -> ContextSource {
    ContextSource::new(url, None, None, ContextOptions::default()).unwrap()
}

async fn context_for(src: &ContextSource, ev: &ProcessState) -> CrashContext {
    src.for_event(ev)
        .await
        .expect("a failure event always gets a CrashContext")
}

#[tokio::test]
async fn unexpected_exit_shows_exit_status_and_the_stderr_tail() {
    let sv = Supervisord::start(SupervisordConfig::new().program(
        Program::new(
            "crash",
            "/bin/sh -c 'echo starting up >&2; echo \"FATAL: cannot open /etc/app.conf\" >&2; exit 3'",
        )
        .startsecs(0)
        .exitcodes("0"),
    ));
    sv.wait_for_state("crash", "EXITED", secs(10));

    let ctx = context_for(
        &source(&sv.server_url()),
        &event("crash", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert_eq!(ctx.exit_status, Some(3), "{ctx:?}");
    assert_eq!(ctx.spawn_error.as_deref(), Some("Bad exit code 3"));
    assert_eq!(ctx.log_name.as_deref(), Some("stderr"));
    assert_eq!(
        ctx.log_tail.as_deref(),
        Some("starting up\nFATAL: cannot open /etc/app.conf")
    );
    assert!(matches!(ctx.uptime_secs, Some(0..=2)), "{ctx:?}");
    assert_eq!(ctx.unavailable, None);
}

#[tokio::test]
async fn fatal_after_quick_exits_shows_the_spawn_error_and_the_logged_exit_status() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "boot",
                "/bin/sh -c 'echo \"panic: DATABASE_URL is not set\" >&2; exit 1'",
            )
            .startsecs(1)
            .startretries(0),
        ),
    );
    sv.wait_for_state("boot", "FATAL", secs(10));

    let ctx = context_for(
        &source(&sv.server_url()),
        &event("boot", State::Backoff, State::Fatal, None),
    )
    .await;

    assert_eq!(
        ctx.spawn_error.as_deref(),
        Some("Exited too quickly (process log may have details)")
    );
    // getProcessInfo reports 0 for a process that died before startsecs; the real
    // status comes from supervisord's log.
    assert_eq!(ctx.exit_status, Some(1), "{ctx:?}");
    assert_eq!(
        ctx.log_tail.as_deref(),
        Some("panic: DATABASE_URL is not set")
    );
    assert_eq!(ctx.unavailable, None);
}

#[tokio::test]
async fn redirected_stderr_is_read_from_the_stdout_log() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "merged",
                "/bin/sh -c 'echo \"error: port 8080 in use\" >&2; exit 2'",
            )
            .startsecs(0)
            .line("redirect_stderr=true"),
        ),
    );
    sv.wait_for_state("merged", "EXITED", secs(10));

    let ctx = context_for(
        &source(&sv.server_url()),
        &event("merged", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert_eq!(ctx.log_name.as_deref(), Some("stdout"), "{ctx:?}");
    assert_eq!(ctx.log_tail.as_deref(), Some("error: port 8080 in use"));
    assert_eq!(ctx.exit_status, Some(2));
}

#[tokio::test]
async fn a_window_starting_inside_a_multibyte_character_is_shifted_and_read() {
    // 30 snowmen (3 bytes each) + "\n" + "last line: boom\n" = 107 bytes. With
    // tail_chars 16 the window is the last 64 bytes, which starts on the second
    // byte of a snowman: supervisord answers HTTP 500 until the start is shifted.
    let sv = Supervisord::start(SupervisordConfig::new().program(
        Program::new(
            "snow",
            "/bin/sh -c 'printf \"%s\\n\" ☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃ >&2; echo \"last line: boom\" >&2; exit 1'",
        )
        .startsecs(0),
    ));
    sv.wait_for_state("snow", "EXITED", secs(10));
    assert_eq!(sv.program_stderr("snow").len(), 107, "fixture drifted");

    let opts = ContextOptions {
        tail_chars: 16,
        ..ContextOptions::default()
    };
    let src = ContextSource::new(&sv.server_url(), None, None, opts).unwrap();
    let ctx = context_for(
        &src,
        &event("snow", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert_eq!(ctx.log_tail.as_deref(), Some("last line: boom"), "{ctx:?}");
    assert_eq!(ctx.unavailable, None);
}

#[tokio::test]
async fn a_log_with_non_utf8_bytes_still_gives_a_card_ready_answer() {
    let sv = Supervisord::start(SupervisordConfig::new().program(
        Program::new(
            "binary",
            "/bin/sh -c 'printf \"\\377\\376 garbage\\n\" >&2; echo \"after the garbage\" >&2; exit 4'",
        )
        .startsecs(0),
    ));
    sv.wait_for_state("binary", "EXITED", secs(10));
    let raw = std::fs::read(sv.dir().join("binary.stderr.log")).unwrap();
    assert!(
        raw.starts_with(b"\xff\xfe garbage\n"),
        "fixture drifted: {raw:?}"
    );

    let started = Instant::now();
    let ctx = context_for(
        &source(&sv.server_url()),
        &event("binary", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert!(started.elapsed() < Duration::from_secs(2));
    // the exit details survive a tail that cannot be read
    assert_eq!(ctx.exit_status, Some(4), "{ctx:?}");
    assert_eq!(ctx.log_tail, None);
    let reason = ctx.unavailable.expect("the reason the tail is missing");
    assert!(
        reason.contains("log tail unreadable (not UTF-8"),
        "{reason}"
    );
}

/// A supervisord whose socket wants `user` / `s3cret`, started here rather than by
/// the harness: the harness checks readiness with `supervisorctl`, which would need
/// the credentials in the same `[unix_http_server]` section the harness writes.
struct LockedSupervisord {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl LockedSupervisord {
    fn start(program_command: &str) -> LockedSupervisord {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("sv-auth-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
                 childlogdir={d}\n\n[unix_http_server]\nfile={d}/supervisor.sock\nusername=user\n\
                 password=s3cret\n\n[rpcinterface:supervisor]\n\
                 supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [program:locked]\ncommand={program_command}\nstartsecs=0\nautorestart=false\n\
                 stdout_logfile={d}/locked.stdout.log\nstderr_logfile={d}/locked.stderr.log\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(supervisord_path())
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        LockedSupervisord { dir, child }
    }

    fn server_url(&self) -> String {
        format!("unix://{}/supervisor.sock", self.dir.path().display())
    }
}

impl Drop for LockedSupervisord {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        if !wait_until(secs(5), || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn a_password_protected_socket_works_with_the_right_credentials_only() {
    let sv = LockedSupervisord::start("/bin/sh -c 'echo \"denied: bad token\" >&2; exit 5'");
    let client = supervisor_slack::supervisord::xmlrpc::Client::new(
        &sv.server_url(),
        Some("user".into()),
        Some(Secret::new("s3cret")),
    )
    .unwrap();
    let deadline = Instant::now() + secs(10);
    loop {
        match client.get_process_info("locked:locked").await {
            Ok(info) if info.statename == "EXITED" => break,
            other => assert!(Instant::now() < deadline, "locked never EXITED: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = event("locked", State::Running, State::Exited, Some(false));
    let with = |user: Option<&str>, pass: Option<&str>| {
        ContextSource::new(
            &sv.server_url(),
            user.map(String::from),
            pass.map(Secret::new),
            ContextOptions::default(),
        )
        .unwrap()
    };

    let ok = context_for(&with(Some("user"), Some("s3cret")), &ev).await;
    assert_eq!(ok.exit_status, Some(5), "{ok:?}");
    assert_eq!(ok.log_tail.as_deref(), Some("denied: bad token"));
    assert_eq!(ok.unavailable, None);

    let none = context_for(&with(None, None), &ev).await;
    assert_eq!(
        none.unavailable.as_deref(),
        Some("authentication failed: set supervisor_username/password")
    );
    assert_eq!((none.exit_status, none.log_tail), (None, None));

    let wrong = context_for(&with(Some("user"), Some("nope")), &ev).await;
    let reason = wrong.unavailable.unwrap();
    assert!(reason.starts_with("authentication failed"), "{reason}");
    assert!(
        !reason.contains("nope"),
        "the password must not be shown: {reason}"
    );
}

#[tokio::test]
async fn details_of_a_later_run_are_not_passed_off_as_this_ones() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "again",
                "/bin/sh -c 'echo \"died once\" >&2; exec sleep 100'",
            )
            .startsecs(0),
        ),
    );
    sv.wait_for_state("again", "RUNNING", secs(10));
    let src = source(&sv.server_url());

    // The EXITED event of a run before this one: the process is RUNNING again.
    let ctx = context_for(
        &src,
        &event("again", State::Running, State::Exited, Some(false)),
    )
    .await;
    assert_eq!(
        (ctx.exit_status, &ctx.spawn_error, ctx.uptime_secs),
        (None, &None, None)
    );
    let reason = ctx.unavailable.clone().unwrap();
    assert!(
        reason.starts_with("the process was restarted before supervisord was asked (now RUNNING)"),
        "{reason}"
    );
    // the log is still worth showing
    assert_eq!(ctx.log_tail.as_deref(), Some("died once"));

    // An event delivered long after it happened (an outage): the process has been
    // started since.
    let mut old = event("again", State::Running, State::Exited, Some(false));
    old.at -= chrono::Duration::seconds(60);
    let ctx = context_for(&src, &old).await;
    assert_eq!(ctx.exit_status, None);
    assert!(ctx.unavailable.unwrap().contains("restarted"));
}

#[tokio::test]
async fn an_autorestarted_crash_still_shows_its_exit_status() {
    // autorestart restarts the process before the listener even receives EXITED, and
    // the restart clears getProcessInfo's exit status: it comes from supervisord's log.
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "loop",
                "/bin/sh -c 'echo \"worker crashed: out of memory\" >&2; sleep 0.5; exit 3'",
            )
            .startsecs(0)
            .autorestart("true"),
        ),
    );
    assert!(
        wait_until(secs(10), || sv
            .main_log()
            .contains("exited: loop (exit status 3")),
        "{}",
        sv.diagnostics()
    );

    let ctx = context_for(
        &source(&sv.server_url()),
        &event("loop", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert_eq!(ctx.exit_status, Some(3), "{ctx:?}");
    assert!(matches!(ctx.uptime_secs, Some(0..=1)), "{ctx:?}");
    assert_eq!(ctx.unavailable, None);
    assert!(ctx
        .log_tail
        .unwrap()
        .ends_with("worker crashed: out of memory"));
}

#[tokio::test]
async fn a_death_by_signal_is_told_in_words() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(
            Program::new(
                "killed",
                "/bin/sh -c 'echo \"about to die\" >&2; kill -TERM $$'",
            )
            .startsecs(0),
        ),
    );
    sv.wait_for_state("killed", "EXITED", secs(10));

    let ctx = context_for(
        &source(&sv.server_url()),
        &event("killed", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert_eq!(
        ctx.spawn_error.as_deref(),
        Some("terminated by SIGTERM"),
        "{ctx:?}"
    );
    assert_eq!(ctx.exit_status, None);
    assert_eq!(ctx.log_tail.as_deref(), Some("about to die"));
}

#[tokio::test]
async fn a_missing_socket_is_named_in_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.sock");
    let ctx = context_for(
        &source(&format!("unix://{}", path.display())),
        &event("web", State::Running, State::Exited, Some(false)),
    )
    .await;
    assert_eq!(
        ctx.unavailable,
        Some(format!("no supervisord socket at {}", path.display()))
    );
    assert_eq!(ctx.log_tail, None);
}

#[tokio::test]
async fn a_path_that_is_not_a_socket_is_named_in_the_reason() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let ctx = context_for(
        &source(&format!("unix://{}", file.path().display())),
        &event("web", State::Starting, State::Backoff, None),
    )
    .await;
    assert_eq!(
        ctx.unavailable,
        Some(format!("{} is not a socket", file.path().display()))
    );
}

#[tokio::test]
async fn a_server_that_never_answers_costs_no_more_than_the_time_out() {
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
    let opts = ContextOptions {
        timeout: Duration::from_millis(300),
        ..ContextOptions::default()
    };
    let src = ContextSource::new(&format!("unix://{}", path.display()), None, None, opts).unwrap();

    let started = Instant::now();
    let ctx = context_for(
        &src,
        &event("web", State::Running, State::Exited, Some(false)),
    )
    .await;

    assert!(
        started.elapsed() < Duration::from_millis(800),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        ctx.unavailable.as_deref(),
        Some("supervisord did not answer within 300ms")
    );
}

#[tokio::test]
async fn an_unknown_process_gives_supervisords_reason() {
    let sv = Supervisord::start(
        SupervisordConfig::new().program(Program::new("real", "/bin/sh -c 'exec sleep 100'")),
    );
    let ctx = context_for(
        &source(&sv.server_url()),
        &event("ghost", State::Starting, State::Fatal, None),
    )
    .await;
    let reason = ctx.unavailable.unwrap();
    assert!(reason.contains("BAD_NAME: ghost:ghost"), "{reason}");
}

#[tokio::test]
async fn transitions_that_are_not_failures_get_no_context() {
    // No supervisord at all: nothing may even be attempted.
    let src = source("unix:///nonexistent/supervisor.sock");
    for (from, to, expected) in [
        (State::Starting, State::Running, None),
        (State::Running, State::Exited, Some(true)),
        (State::Stopping, State::Stopped, None),
        (State::Stopped, State::Starting, None),
    ] {
        assert_eq!(
            src.for_event(&event("web", from, to, expected)).await,
            None,
            "{to}"
        );
    }
}
