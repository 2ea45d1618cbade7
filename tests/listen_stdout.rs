//! The listener's stdout, byte for byte, for good and bad input; and the outbox rows
//! it commits. Runs the real binary with stdin/stdout as pipes, as supervisord does.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::pipe::{event_frame, listen_command, spawn_listener, tick, Stdout, HANG};
use common::slack::TOKEN;
use common::{signal, wait_exit, SLACK_BIN};
use supervisor_slack::supervisord::protocol::frame;

const CAPTURE_BIN: &[u8] = include_bytes!("fixtures/supervisord-4.2.5-events.bin");
const OK: &str = "RESULT 2\nOKREADY\n";
const FAIL: &str = "RESULT 4\nFAILREADY\n";

struct Run {
    stdout: Vec<u8>,
    stderr: String,
    state: tempfile::TempDir,
}

/// Feeds `input` to a listener, closes its stdin and collects what it wrote.
fn listen(input: &[u8]) -> Run {
    let state = tempfile::tempdir().unwrap();
    let mut child = listen_command(state.path())
        .env("SUPERVISOR_SLACK_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit status {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        state,
    }
}

fn expected(answers: usize) -> String {
    format!("READY\n{}", OK.repeat(answers))
}

/// What the listener must write when it refuses the first input (supervisord would
/// send that event again) and then accepts `answers` events.
fn refused_then(answers: usize) -> String {
    format!("READY\n{FAIL}{}", OK.repeat(answers))
}

/// One event from server `sv`.
fn event(serial: u64, poolserial: u64, eventname: &str, payload: &str) -> Vec<u8> {
    event_frame("sv", serial, poolserial, eventname, payload)
}

#[test]
fn real_capture_gets_exactly_one_ok_per_event_and_nothing_else() {
    let run = listen(CAPTURE_BIN);
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(59));
    assert!(!run.stderr.contains(TOKEN));
}

#[test]
fn real_capture_commits_every_process_state_event_to_the_outbox() {
    let run = listen(CAPTURE_BIN);
    let db = rusqlite::Connection::open(run.state.path().join("state.db")).unwrap();
    let rows: Vec<(i64, String, String, String)> = db
        .prepare("SELECT serial, host, grp, process FROM outbox ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 43, "43 of the 59 events are PROCESS_STATE");
    assert_eq!(rows[0], (9, "web-1".into(), "misc".into(), "misc".into()));
    let fatal: String = db
        .query_row("SELECT event FROM outbox WHERE serial = 42", [], |r| {
            r.get(0)
        })
        .unwrap();
    let fatal: serde_json::Value = serde_json::from_str(&fatal).unwrap();
    assert_eq!(fatal["to"], "FATAL");
    assert_eq!(fatal["from"], "BACKOFF");
    assert_eq!(fatal["process"], "crasher");
}

#[test]
fn duplicate_serial_is_answered_but_stored_once() {
    let ev = event(
        5,
        1,
        "PROCESS_STATE_RUNNING",
        "processname:a groupname:a from_state:STARTING pid:7",
    );
    let run = listen(&[ev.clone(), ev].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(2));
    assert!(run.stderr.contains("dropped a duplicate"), "{}", run.stderr);
    let db = rusqlite::Connection::open(run.state.path().join("state.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn poolserial_gap_is_recorded_for_the_next_card() {
    let a = event(
        1,
        1,
        "PROCESS_STATE_STARTING",
        "processname:a groupname:a from_state:STOPPED tries:0",
    );
    let b = event(
        9,
        5,
        "PROCESS_STATE_RUNNING",
        "processname:a groupname:a from_state:STARTING pid:7",
    );
    let run = listen(&[a, b].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(2));
    assert!(
        run.stderr.contains("3 events dropped by supervisord"),
        "{}",
        run.stderr
    );
    let db = rusqlite::Connection::open(run.state.path().join("state.db")).unwrap();
    let dropped: i64 = db
        .query_row(
            "SELECT dropped_before FROM outbox WHERE serial = 9",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dropped, 3);
}

#[test]
fn header_without_len_is_refused_once_and_serving_goes_on() {
    let run = listen(
        &[
            b"ver:3.0 server:sv serial:1 eventname:TICK_5\n".to_vec(),
            tick(2),
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8(run.stdout).unwrap(), refused_then(1));
    assert!(
        run.stderr.contains(
            "event header has no `len` token: \"ver:3.0 server:sv serial:1 eventname:TICK_5\""
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn non_numeric_len_is_refused_once_and_its_payload_not_taken_for_an_event() {
    let run = listen(
        &[
            b"ver:3.0 eventname:TICK_5 len:ten\nwhen:1".to_vec(),
            tick(2),
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8(run.stdout).unwrap(), refused_then(1));
    assert!(
        run.stderr
            .contains("`len` that is not a whole number (\"ten\")"),
        "{}",
        run.stderr
    );
}

#[test]
fn absurd_len_is_answered_once() {
    let run = listen(
        &[
            b"ver:3.0 eventname:TICK_5 len:18446744073709551616\n".to_vec(),
            tick(2),
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8(run.stdout).unwrap(), refused_then(1));
    assert!(
        run.stderr.contains("not a whole number") || run.stderr.contains("absurd"),
        "{}",
        run.stderr
    );
    // An oversized but honest `len`: its payload is skipped, the header answered once.
    let n = supervisor_slack::supervisord::protocol::MAX_PAYLOAD_CHARS + 1;
    let oversized = [
        format!("ver:3.0 eventname:TICK_5 len:{n}\n").into_bytes(),
        "x".repeat(n).into_bytes(),
    ]
    .concat();
    let run = listen(&[oversized, tick(2)].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(2));
    assert!(
        run.stderr.contains(&format!("absurd `len` of {n}")),
        "{}",
        run.stderr
    );
}

/// A line that is no header is still something supervisord wrote as an event, and
/// waits for an answer to: it is reported and refused once (supervisord sends the
/// event again); the event after it is answered. (Unanswered, both sides would wait
/// for each other for good.)
#[test]
fn garbage_line_is_reported_and_refused_once() {
    let run = listen(&[b"\x1b[2Jrm -rf /\n".to_vec(), tick(2)].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), refused_then(1));
    assert!(
        run.stderr.contains(r#"not an event header"#),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(r"\x1b[2Jrm -rf /"), "{}", run.stderr);
}

#[test]
fn payload_cut_off_by_eof_is_not_answered_and_the_listener_exits_0() {
    let run = listen(&[tick(1), b"ver:3.0 eventname:TICK_5 len:100\nwhen:".to_vec()].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(1));
    assert!(
        run.stderr.contains("input ended inside the payload"),
        "{}",
        run.stderr
    );
}

#[test]
fn payload_that_is_not_utf8_is_refused_once() {
    let run = listen(
        &[
            b"ver:3.0 serial:1 eventname:PROCESS_LOG_STDERR len:3\na\xffb".to_vec(),
            tick(2),
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8(run.stdout).unwrap(), refused_then(1));
    assert!(
        run.stderr.contains(r#"is not valid UTF-8: "a\xffb""#),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_process_state_payload_is_answered_and_named() {
    let ev = frame(
        &[
            ("ver", "3.0"),
            ("serial", "3"),
            ("eventname", "PROCESS_STATE_RUNNING"),
        ],
        "groupname:a from_state:STARTING",
    );
    let run = listen(&[ev, tick(4)].concat());
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected(2));
    assert!(
        run.stderr.contains("lacks the `processname` token"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_token_refuses_to_start_with_a_clear_error() {
    let out = Command::new(SLACK_BIN)
        .arg("listen")
        .env_remove("SLACK_TOKEN")
        .env_remove("SLACK_TOKEN_FILE")
        .env("SLACK_CHANNEL", "#ops")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Slack token: set SLACK_TOKEN"));
}

/// The next `n` bytes on stdout (bounded: a listener that does not write them fails).
fn read_n(stdout: &mut Stdout, n: usize) -> String {
    let got = stdout
        .take(n, HANG)
        .unwrap_or_else(|got| panic!("{n} bytes within {HANG:?}; got {got:?}"));
    String::from_utf8(got).unwrap()
}

fn sigterm(child: &std::process::Child) {
    assert!(signal(child.id(), "TERM"), "kill -TERM {}", child.id());
}

#[test]
fn sigterm_while_idle_exits_0_at_once() {
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_listener(state.path());
    let mut stdout = Stdout::drain(&mut child);
    assert_eq!(read_n(&mut stdout, 6), "READY\n");
    sigterm(&child);
    let status = wait_exit(&mut child, common::secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_with_an_event_in_hand_answers_it_then_exits() {
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_listener(state.path());
    let mut stdout = Stdout::drain(&mut child);
    assert_eq!(read_n(&mut stdout, 6), "READY\n");
    let ev = event(
        1,
        1,
        "PROCESS_STATE_RUNNING",
        "processname:a groupname:a from_state:STARTING pid:7",
    );
    let (head, tail) = ev.split_at(ev.len() - 10);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(head).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(std::time::Duration::from_millis(100));
    stdin.write_all(tail).unwrap();
    stdin.flush().unwrap();
    let status = wait_exit(&mut child, common::secs(10));
    assert!(status.success(), "{}", status);
    // Everything after READY: the event in hand is answered, nothing after.
    stdout.expect_all("READY\nRESULT 2\nOK");
    let db = rusqlite::Connection::open(state.path().join("state.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "and it is on disk");
}
