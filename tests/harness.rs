//! The harness itself against a real supervisord, with tiny Python listeners (no
//! dependence on `supervisor-slack listen`): config quoting survives supervisord's
//! parser, events arrive, protocol trouble is detected, nothing outlives a test.

mod common;

use std::path::Path;

use common::supervisord::*;
use common::{alive, descendants, secs, wait_until};

/// Logs its `T_*` environment once, then each event in the shape `supervisor-slack
/// listen` uses. With `BAD=1` it answers garbage instead of `RESULT 2\nOK`.
const PY_LISTENER: &str = r#"
import os, sys
from supervisor import childutils
sys.stderr.write("env " + repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("T_"))) + "\n")
sys.stderr.flush()
while True:
    headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
    p = dict(t.split(":", 1) for t in payload.split("\n", 1)[0].split())
    sys.stderr.write("INFO received event serial=%s eventname=%s group=%s process=%s\n" % (
        headers["serial"], headers["eventname"], p.get("groupname", ""), p.get("processname", "")))
    sys.stderr.flush()
    if os.environ.get("BAD") == "1":
        sys.stdout.write("hello\n")
        sys.stdout.flush()
    else:
        childutils.listener.ok(sys.stdout)
"#;

fn py_listener(scratch: &Path) -> ListenerEntry {
    let script = scratch.join("listener.py");
    std::fs::write(&script, PY_LISTENER).unwrap();
    let python = supervisord_path().with_file_name("python3");
    ListenerEntry::custom(&[python.to_str().unwrap(), "-u", script.to_str().unwrap()])
}

#[test]
fn env_values_survive_quoting_and_events_arrive() {
    let scratch = tempfile::tempdir().unwrap();
    let values = [
        ("T_COMMA", "a,b c"),
        ("T_DQUOTE", r#"say "hi" now"#),
        ("T_HASH", "#ops"),
        ("T_PERCENT", "100%"),
        ("T_PLAIN", "xoxb-test"),
        ("T_SQUOTE", "it's"),
        ("T_URL", "http://127.0.0.1:9/api?a=1&b=2"),
    ];
    let mut listener = py_listener(scratch.path());
    for (k, v) in values {
        listener = listener.env(k, v);
    }
    let mut sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web"))
            .listener(listener),
    );
    sv.wait_for_state("web", "RUNNING", secs(5));
    let running = |sv: &Supervisord| {
        received_events(&sv.listener_stderr())
            .iter()
            .any(|e| e.process == "web" && e.eventname == "PROCESS_STATE_RUNNING")
    };
    assert!(wait_until(secs(5), || running(&sv)), "{}", sv.diagnostics());

    let stderr = sv.listener_stderr();
    let expected: Vec<(String, String)> = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let line = stderr.lines().find(|l| l.starts_with("env ")).unwrap();
    let py_repr = |s: &str| {
        if s.contains('\'') && !s.contains('"') {
            format!("\"{s}\"")
        } else {
            format!("'{s}'")
        }
    };
    let want = format!(
        "env [{}]",
        expected
            .iter()
            .map(|(k, v)| format!("('{k}', {})", py_repr(v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(line, want);

    let pid = sv.pid().unwrap();
    let children = descendants(pid);
    assert!(
        children.len() >= 2,
        "listener and web should run: {children:?}"
    );
    assert!(
        sv.stop(),
        "supervisord did not exit on SIGTERM\n{}",
        sv.diagnostics()
    );
    assert!(!alive(pid));
    for c in children {
        assert!(!alive(c), "process {c} outlived supervisord");
    }
    sv.assert_no_protocol_trouble();
    // Only protocol bytes went to the listener's stdout.
    let proto = sv.listener_stdout();
    assert!(proto.starts_with("READY\n"), "{proto:?}");
    assert_eq!(proto.replace("READY\n", "").replace("RESULT 2\nOK", ""), "");
}

#[test]
fn protocol_trouble_is_detected_and_drop_leaves_nothing_running() {
    let scratch = tempfile::tempdir().unwrap();
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web"))
            .listener(py_listener(scratch.path()).env("BAD", "1")),
    );
    assert!(
        wait_until(secs(5), || sv.main_log().contains("UNKNOWN state")),
        "{}",
        sv.diagnostics()
    );
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sv.assert_no_protocol_trouble()
    }));
    let msg = *caught
        .expect_err("trouble must be reported")
        .downcast::<String>()
        .unwrap();
    assert!(msg.contains("bad result line"), "{msg}");

    // No stop(): Drop must clean up supervisord and its children.
    let pid = sv.pid().unwrap();
    let children = descendants(pid);
    assert!(!children.is_empty());
    drop(sv);
    assert!(!alive(pid));
    for c in children {
        assert!(
            wait_until(secs(2), || !alive(c)),
            "process {c} outlived a dropped Supervisord"
        );
    }
}

#[test]
fn env_values_supervisord_cannot_hold_are_refused() {
    for bad in [
        r#"both ' and ""#,
        "\"leading",
        "trailing'",
        "a ;comment",
        "two\nlines",
    ] {
        let r = std::panic::catch_unwind(|| env_value(bad));
        assert!(r.is_err(), "{bad:?} should be refused");
    }
    assert_eq!(env_value("#ops"), "\"#ops\"");
    assert_eq!(env_value("50%"), "\"50%%\"");
}
