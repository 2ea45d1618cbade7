//! The protocol reader against a real supervisord capture, random payloads and bad input.

mod common;

use common::pipe::read_all;
use proptest::prelude::*;
use supervisor_slack::supervisord::event::{self, Event, State};
use supervisor_slack::supervisord::protocol::{frame, ProtocolError, Read};

const CAPTURE_BIN: &[u8] = include_bytes!("fixtures/supervisord-4.2.5-events.bin");
const CAPTURE_TXT: &str = include_str!("fixtures/supervisord-4.2.5-events.txt");

/// (header line, payload) pairs from the readable rendering beside the capture.
fn expected_from_rendering() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in CAPTURE_TXT.split("\n\n[").skip(1) {
        let (first, rest) = block.split_once('\n').unwrap();
        let header = first.split_once("] ").unwrap().1;
        let header = header
            .split("   (payload bytes")
            .next()
            .unwrap()
            .to_string();
        let payload = rest.trim_end_matches('\n');
        let payload = &payload[1..payload.len() - 1]; // strip the |...|
        out.push((header, payload.replace("⏎\n", "\n")));
    }
    out
}

#[test]
fn real_capture_parses_into_its_59_events_exactly() {
    let expected = expected_from_rendering();
    assert_eq!(expected.len(), 59);
    let got = read_all(CAPTURE_BIN);
    assert_eq!(got.len(), 59);
    for (i, (read, (header, payload))) in got.iter().zip(&expected).enumerate() {
        let Read::Event(ev) = read else {
            panic!("event {i} did not parse: {read:?}")
        };
        let line: Vec<String> = ev
            .header
            .tokens
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        assert_eq!(&line.join(" "), header, "header of event {i}");
        assert_eq!(&ev.payload, payload, "payload of event {i}");
    }
}

#[test]
fn real_capture_multibyte_payload_is_read_by_code_points() {
    let got = read_all(CAPTURE_BIN);
    let Read::Event(ev) = &got[30] else { panic!() };
    assert_eq!(ev.header.len, 136);
    assert_eq!(ev.payload.chars().count(), 136);
    assert_eq!(ev.payload.len(), 139);
    assert!(ev.payload.ends_with("second line naïve ☃\n"));
    // and the next event is still in step
    let Read::Event(next) = &got[31] else {
        panic!()
    };
    assert_eq!(next.header.event_name(), "PROCESS_STATE_BACKOFF");
}

#[test]
fn real_capture_types_every_process_state_event() {
    let at = chrono::Utc::now();
    let mut states = Vec::new();
    let mut other = 0;
    for read in read_all(CAPTURE_BIN) {
        let Read::Event(raw) = read else { panic!() };
        match event::parse(&raw, "web-1", at).unwrap() {
            Event::ProcessState(ps) => states.push(ps),
            Event::Other(o) => {
                assert!(
                    o.name.starts_with("TICK_") || o.name.starts_with("PROCESS_LOG_"),
                    "{}",
                    o.name
                );
                other += 1;
            }
        }
    }
    assert_eq!(states.len(), 43);
    assert_eq!(other, 16);
    let fatal = states.iter().find(|s| s.to == State::Fatal).unwrap();
    assert_eq!(
        (fatal.group.as_str(), fatal.process.as_str(), fatal.from),
        ("crasher", "crasher", State::Backoff)
    );
    assert_eq!(
        (fatal.serial, fatal.poolserial, fatal.pool.as_str()),
        (42, 32, "rawlog")
    );
    assert_eq!(fatal.server, "research-sv");
    assert_eq!(fatal.pid, None);
    let exited = states
        .iter()
        .find(|s| s.to == State::Exited && s.process == "shortlived")
        .unwrap();
    assert_eq!((exited.expected, exited.pid), (Some(true), Some(12716)));
    let backoff = states.iter().find(|s| s.to == State::Backoff).unwrap();
    assert!(backoff.tries.is_some());
    assert_eq!(backoff.host, "web-1");
}

#[test]
fn len_zero_and_back_to_back_events() {
    let mut bytes = frame(
        &[
            ("ver", "3.0"),
            ("eventname", "SUPERVISOR_STATE_CHANGE_RUNNING"),
        ],
        "",
    );
    bytes.extend(frame(
        &[("eventname", "PROCESS_GROUP_ADDED"), ("ver", "3.0")],
        "groupname:g\n",
    ));
    bytes.extend(frame(&[("future", "x"), ("eventname", "TICK_5")], "when:1"));
    let got = read_all(&bytes);
    assert_eq!(got.len(), 3);
    let Read::Event(a) = &got[0] else { panic!() };
    assert_eq!(a.payload, "");
    let Read::Event(b) = &got[1] else { panic!() };
    assert_eq!(b.payload, "groupname:g\n");
    let Read::Event(c) = &got[2] else { panic!() };
    assert_eq!(c.header.get("future"), Some("x"), "unknown keys are kept");
    assert_eq!(c.payload, "when:1");
}

fn bad(bytes: &[u8]) -> (ProtocolError, Vec<Read>) {
    let mut got = read_all(bytes);
    let rest = got.split_off(1);
    match got.pop().unwrap() {
        Read::Bad(e) => (e, rest),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn good_event() -> Vec<u8> {
    frame(
        &[("ver", "3.0"), ("serial", "7"), ("eventname", "TICK_5")],
        "when:1",
    )
}

#[test]
fn header_without_len_is_named_and_reading_goes_on() {
    let mut input = b"ver:3.0 serial:1 eventname:TICK_5\n".to_vec();
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(matches!(e, ProtocolError::MissingLen { .. }), "{e}");
    assert!(e.to_string().contains("no `len` token"), "{e}");
    assert!(e.to_string().contains("ver:3.0 serial:1"), "{e}");
    assert!(matches!(&rest[..], [Read::Event(_)]), "{rest:?}");
}

#[test]
fn non_numeric_len_is_named() {
    let mut input = b"ver:3.0 eventname:TICK_5 len:abc\nwhen:1".to_vec();
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(
        e.to_string().contains("not a whole number (\"abc\")"),
        "{e}"
    );
    // the leftover payload is not taken for an event of its own
    assert!(
        matches!(&rest[..], [Read::Event(ev)] if ev.header.get("serial") == Some("7")),
        "{rest:?}"
    );
}

/// supervisord's `len` is honest: a payload over the cap is skipped (by code points,
/// never kept) and the event after it is read. (Before issue 14 the reader refused the
/// header without reading its payload, and every later payload line was answered.)
#[test]
fn absurd_len_is_skipped_by_code_points_and_the_next_event_is_read() {
    let n = supervisor_slack::supervisord::protocol::MAX_PAYLOAD_CHARS + 10;
    let mut input = format!("ver:3.0 eventname:TICK_5 len:{n}\n").into_bytes();
    input.extend("☃".repeat(n).into_bytes());
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(e.to_string().contains(&format!("absurd `len` of {n}")), "{e}");
    assert!(
        matches!(&rest[..], [Read::Event(ev)] if ev.header.get("serial") == Some("7")),
        "{rest:?}"
    );
}

#[test]
fn garbage_line_is_shown_escaped() {
    let mut input = b"hello \x1b[31mworld\n".to_vec();
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(matches!(e, ProtocolError::NotAHeader { .. }));
    assert!(e.to_string().contains(r"hello \x1b[31mworld"), "{e}");
    assert_eq!(rest.len(), 1);
}

#[test]
fn payload_cut_off_by_eof() {
    let (e, rest) = bad(b"ver:3.0 serial:3 eventname:TICK_5 len:20\nwhen:12");
    assert!(
        e.to_string().contains("`len` says 20 characters, got 7"),
        "{e}"
    );
    assert!(e.to_string().contains("when:12"), "{e}");
    assert!(rest.is_empty());
}

#[test]
fn payload_that_is_not_utf8() {
    let mut input = b"ver:3.0 serial:4 eventname:PROCESS_LOG_STDERR len:5\nab\xff\xfecd".to_vec();
    input.truncate(input.len() - 1); // 5 units: a b \xff \xfe c
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(matches!(e, ProtocolError::PayloadNotUtf8 { .. }));
    assert!(e.to_string().contains(r"ab\xff\xfec"), "{e}");
    assert_eq!(rest.len(), 1, "{rest:?}");
}

#[test]
fn header_that_is_not_utf8() {
    let mut input = b"ver:3.0 server:\xff len:0\n".to_vec();
    input.extend(good_event());
    let (e, rest) = bad(&input);
    assert!(e.to_string().contains(r"server:\xff"), "{e}");
    assert_eq!(rest.len(), 1);
}

#[test]
fn endless_header_line_is_refused() {
    let input = [vec![b'x'; 100_000], b"\n".to_vec()].concat();
    let got = read_all(&input);
    assert!(matches!(
        &got[0],
        Read::Bad(ProtocolError::HeaderTooLong { .. })
    ));
    // Without its end, it is input cut off: supervisord is gone.
    let got = read_all(&vec![b'x'; 100_000]);
    assert!(matches!(&got[0], Read::Bad(e @ ProtocolError::HeaderCutOff { .. }) if e.at_end_of_input()));
}

#[test]
fn unknown_state_and_missing_tokens_are_typed_errors() {
    let raw = |name: &str, payload: &str| {
        let bytes = frame(&[("ver", "3.0"), ("eventname", name)], payload);
        match read_all(&bytes).pop().unwrap() {
            Read::Event(e) => e,
            r => panic!("{r:?}"),
        }
    };
    let now = chrono::Utc::now();
    let e = event::parse(
        &raw(
            "PROCESS_STATE_SLEEPING",
            "processname:a groupname:a from_state:RUNNING",
        ),
        "h",
        now,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "unknown process state \"SLEEPING\""
    );
    let e = event::parse(
        &raw(
            "PROCESS_STATE_RUNNING",
            "groupname:a from_state:STARTING pid:1",
        ),
        "h",
        now,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "PROCESS_STATE_RUNNING payload lacks the `processname` token"
    );
    let e = event::parse(
        &raw(
            "PROCESS_STATE_RUNNING",
            "processname:a groupname:a from_state:STARTING pid:x",
        ),
        "h",
        now,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "PROCESS_STATE_RUNNING payload has a bad `pid` value \"x\""
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn any_payloads_framed_by_code_points_parse_back(payloads in proptest::collection::vec(any::<String>(), 1..8)) {
        let mut bytes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            bytes.extend(frame(&[("ver", "3.0"), ("serial", &i.to_string()), ("eventname", "PROCESS_COMMUNICATION_STDOUT")], p));
        }
        let got = read_all(&bytes);
        prop_assert_eq!(got.len(), payloads.len());
        for (i, (read, p)) in got.iter().zip(&payloads).enumerate() {
            match read {
                Read::Event(e) => {
                    prop_assert_eq!(&e.payload, p);
                    prop_assert_eq!(e.header.number("serial"), Some(i as u64));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = read_all(&bytes);
    }
}
