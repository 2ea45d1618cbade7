//! End to end: a real supervisord runs the built `supervisor-slack listen` as its event
//! listener next to three programs — one healthy, one crashing at once until FATAL,
//! one exiting 0 after 2 s — and the listener must receive every state change, in
//! order, without supervisord ever complaining about the protocol.
//!
//! The listener points at an unreachable Slack (`127.0.0.1:9`), so nothing leaves the
//! machine; it must still answer every event at once.

mod common;

use std::collections::BTreeMap;

use common::supervisord::*;
use common::{secs, wait_until};

const STATE_PREFIX: &str = "PROCESS_STATE_";

fn start() -> Supervisord {
    Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web"))
            .program(
                Program::new("crasher", "/bin/sh -c 'echo boom >&2; exit 1'")
                    .startsecs(1)
                    .startretries(2),
            )
            .program(
                Program::new("oneshot", "/bin/sh -c 'sleep 2; exit 0'")
                    .startsecs(1)
                    .exitcodes("0")
                    .autorestart("false"),
            )
            .listener(
                ListenerEntry::slack()
                    .args(&["--state", "{dir}/state.db"])
                    .env("SLACK_API_URL", "http://127.0.0.1:9/api")
                    .env("SLACK_TOKEN", "xoxb-test")
                    .env("SLACK_CHANNEL", "#ops"),
            ),
    )
}

/// Event names (without `PROCESS_STATE_`) the listener logged, per process.
fn sequences(events: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut by_process: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        if let Some(state) = e.eventname.strip_prefix(STATE_PREFIX) {
            by_process
                .entry(e.process.clone())
                .or_default()
                .push(state.to_string());
        }
    }
    by_process
}

fn seq(states: &[&str]) -> Vec<String> {
    states.iter().map(|s| s.to_string()).collect()
}

#[test]
fn listener_receives_every_state_change_of_a_real_supervisord() {
    let mut sv = start();

    // crasher: three quick deaths (startretries=2 → 3 attempts, backoff 1 s then 2 s).
    sv.wait_for_state("crasher", "FATAL", secs(15));
    sv.wait_for_state("oneshot", "EXITED", secs(10));
    sv.wait_for_state("web", "RUNNING", secs(5));
    sv.ctl_ok(&["stop", "web"]);
    sv.wait_for_state("web", "STOPPED", secs(5));

    let expected: BTreeMap<String, Vec<String>> = [
        ("slack", seq(&["STARTING", "RUNNING"])),
        ("web", seq(&["STARTING", "RUNNING", "STOPPING", "STOPPED"])),
        (
            "crasher",
            seq(&[
                "STARTING", "BACKOFF", "STARTING", "BACKOFF", "STARTING", "BACKOFF", "FATAL",
            ]),
        ),
        ("oneshot", seq(&["STARTING", "RUNNING", "EXITED"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // Everything supervisord emitted must reach the listener; wait for the last ones.
    let done = wait_until(secs(5), || {
        sequences(&received_events(&sv.listener_stderr())) == expected
    });
    let events = received_events(&sv.listener_stderr());
    assert!(
        done,
        "listener did not log the expected state changes\n got: {:#?}\nwant: {:#?}\n{}",
        sequences(&events),
        expected,
        sv.diagnostics()
    );
    for e in &events {
        assert_eq!(e.group, e.process, "group of {e:?}");
    }

    // Serials: each event exactly once, none missing, the same ones supervisord sent.
    let serials: Vec<u64> = events.iter().map(|e| e.serial).collect();
    let total = expected.values().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(serials, (0..total).collect::<Vec<_>>(), "serials received");
    let sent: Vec<u64> = sv
        .main_log()
        .lines()
        .filter_map(|l| l.split("DEBG event ").nth(1))
        .filter_map(|rest| rest.strip_suffix(" sent to listener slack"))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(serials, sent, "serials sent by supervisord vs received");

    // The listener ran once, the whole time: no crash, no restart.
    assert_eq!(
        sv.main_log().matches("spawned: 'slack'").count(),
        1,
        "the listener was restarted\n{}",
        sv.diagnostics()
    );
    assert_eq!(sv.state("slack").as_deref(), Some("RUNNING"));
    assert!(
        sv.dir().join("state.db").is_file(),
        "the listener did not use --state"
    );
    sv.assert_no_protocol_trouble();

    assert!(
        sv.stop(),
        "supervisord did not shut down in time\n{}",
        sv.diagnostics()
    );
    sv.assert_no_protocol_trouble();
    // stdout carried nothing but the protocol.
    let proto = sv.listener_stdout();
    assert!(proto.starts_with("READY\n"), "{proto:?}");
    assert_eq!(
        proto.replace("READY\n", "").replace("RESULT 2\nOK", ""),
        "",
        "the listener wrote something other than the protocol to stdout"
    );
}

/// The listener's own process gets no card by default (supervisord names it in
/// `SUPERVISOR_PROCESS_NAME`); `own_card = true` brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_own_process_has_no_card_unless_asked() {
    use common::slack::{options, parent_process, slack_listener};
    use supervisor_slack::standin::StandIn;
    for (extra, want) in [("", false), ("own_card = true\n", true)] {
        let standin = StandIn::start(options()).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut sv = Supervisord::start(
            SupervisordConfig::new()
                .program(Program::sleeper("web").startsecs(0))
                .listener(slack_listener(state.path(), &standin.api_url(), extra)),
        );
        sv.wait_for_state("web", "RUNNING", secs(10));
        let has = |p: &str| standin.channel("#ops").iter().any(|t| parent_process(t) == p);
        assert!(wait_until(secs(15), || has("web") && (!want || has("slack"))));
        std::thread::sleep(secs(2));
        assert_eq!(has("slack"), want, "{extra:?}: {}", sv.listener_stderr());
        sv.stop();
    }
}
