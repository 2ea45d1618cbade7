//! Everything supervisord writes is one event it waits for an answer to, and gets
//! exactly one: `RESULT 2\nOK` once it is taken (a payload over the cap too: sent
//! again it would be the same), `RESULT 4\nFAIL` for input the reader cannot use (a
//! line that is not a header, a broken header, a payload that is not UTF-8), so that
//! supervisord sends the event again — and if what comes right after a FAIL cannot
//! be used either, OK, so that it never loops. A stray `RESULT` puts the listener in
//! supervisord's UNKNOWN state for good; a missing one leaves supervisord waiting for
//! ever.
//!
//! The protocol loop ([`serve`]) runs over in-memory input and output; the reader is
//! checked beside it for resynchronisation; the real binary runs over pipes, in step
//! with its answers the way supervisord drives it.

mod common;

use std::io::Write;

use common::pipe::{event_frame, read_all, spawn_listener, tick, Stdout};
use common::{secs, wait_exit};
use proptest::prelude::*;
use supervisor_slack::listen::{serve, Handler, InHand};
use supervisor_slack::shutdown::Shutdown;
use supervisor_slack::routing::OneChannel;
use supervisor_slack::supervisord::protocol::{
    frame, ProtocolError, Read, MAX_PAYLOAD_CHARS, READY, RESULT_FAIL, RESULT_OK,
};

const ANSWER: &str = "RESULT 2\nOKREADY\n";

/// Runs the protocol loop over `input`; returns what it wrote.
fn serve_bytes(input: &[u8]) -> Vec<u8> {
    serve_from(input)
}

/// Runs the protocol loop over any reader; returns what it wrote.
fn serve_from(input: impl std::io::Read) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut handler = Handler::new(
        "web-1".into(),
        None,
        dir.path().join("s.db"),
        Box::new(OneChannel("#ops".into())),
        None,
    );
    let mut out = Vec::new();
    serve(input, &mut out, &mut handler, &Shutdown::new(), &InHand::default()).unwrap();
    out
}

/// The output as `READY` / `OK` / `FAIL` tokens; panics on any other byte.
fn tokens(out: &[u8]) -> Vec<&'static str> {
    let mut rest = out;
    let mut got = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(READY) {
            got.push("READY");
            rest = r;
        } else if let Some(r) = rest.strip_prefix(RESULT_OK) {
            got.push("OK");
            rest = r;
        } else if let Some(r) = rest.strip_prefix(RESULT_FAIL) {
            got.push("FAIL");
            rest = r;
        } else {
            panic!(
                "stdout holds bytes that are not protocol: {:?} (after {:?})",
                String::from_utf8_lossy(&rest[..rest.len().min(80)]),
                got
            );
        }
    }
    got
}

/// What `serve` must write when it answers `n` events and then meets EOF.
fn answered(n: usize) -> String {
    format!("READY\n{}", ANSWER.repeat(n))
}

/// The answers `serve` wrote, in order, checking that READY came first and after
/// each answer.
fn answers(out: &[u8]) -> Vec<&'static str> {
    let toks = tokens(out);
    assert_eq!(toks.first(), Some(&"READY"), "{toks:?}");
    let answers: Vec<&str> = toks.iter().skip(1).step_by(2).copied().collect();
    let readies = toks.iter().skip(2).step_by(2).copied();
    assert!(readies.clone().all(|t| t == "READY"), "{toks:?}");
    assert_eq!(readies.count(), answers.len(), "READY after each answer: {toks:?}");
    assert!(answers.iter().all(|t| *t != "READY"), "{toks:?}");
    answers
}

/// One event from server `sv` (poolserial = serial).
fn event(serial: u64, name: &str, payload: &str) -> Vec<u8> {
    event_frame("sv", serial, serial, name, payload)
}

/// A payload of exactly `chars` code points, mixing header-looking lines, multi-byte
/// characters and long runs without a newline.
fn big_payload(chars: usize) -> String {
    const UNIT: &str = "ver:3.0 server:sv serial:99 pool:slack poolserial:99 eventname:TICK_5 len:6\nwhen:1 naïve ☃ 🎉 RESULT 2\nOKREADY\n";
    let unit_chars = UNIT.chars().count();
    let mut s = String::with_capacity(chars * 2);
    let mut count = 0;
    while count + unit_chars <= chars / 2 {
        s.push_str(UNIT);
        count += unit_chars;
    }
    // The second half: one long run without a newline.
    while count < chars {
        s.push(if count % 3 == 0 { 'é' } else { 'x' });
        count += 1;
    }
    s
}

// ---------------------------------------------------------------------------------
// Exact bytes.
// ---------------------------------------------------------------------------------

#[test]
fn oversized_len_gets_exactly_one_answer_and_the_next_event_is_handled() {
    let big = big_payload(MAX_PAYLOAD_CHARS + 1);
    let input = [
        event(1, "PROCESS_COMMUNICATION_STDOUT", &big),
        tick(2),
    ]
    .concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(2));

    let got = read_all(&input);
    assert_eq!(got.len(), 2, "{:?}", got.iter().map(|r| format!("{r:?}").chars().take(200).collect::<String>()).collect::<Vec<_>>());
    match &got[0] {
        Read::Bad(e @ ProtocolError::LenTooLarge { len, .. }) => {
            assert_eq!(*len, MAX_PAYLOAD_CHARS as u64 + 1);
            assert!(e.needs_answer());
            let msg = e.to_string();
            assert!(msg.contains(&format!("absurd `len` of {}", MAX_PAYLOAD_CHARS + 1)), "{msg}");
            assert!(msg.contains("skipped unread"), "{msg}");
            assert!(msg.contains("eventname:PROCESS_COMMUNICATION_STDOUT"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    match &got[1] {
        Read::Event(ev) => {
            assert_eq!(ev.header.number("serial"), Some(2));
            assert_eq!(ev.payload, "when:1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_payload_is_skipped_by_code_points_not_bytes() {
    // 3 bytes per character: a reader counting bytes would stop a third of the way in
    // and take the rest for headers.
    let big = "☃".repeat(MAX_PAYLOAD_CHARS + 7);
    let input = [event(1, "REMOTE_COMMUNICATION", &big), tick(2), tick(3)].concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(3));
    let got = read_all(&input);
    assert!(matches!(got[0], Read::Bad(ProtocolError::LenTooLarge { .. })));
    let serials: Vec<_> = got[1..]
        .iter()
        .map(|r| match r {
            Read::Event(ev) => ev.header.number("serial"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(serials, [Some(2), Some(3)]);
}

/// A reader that makes an endless run of `x` after a header, `n` bytes long, without
/// holding it: the oversized payload is streamed, never in one buffer.
struct Generated {
    head: Vec<u8>,
    body: u64,
    tail: Vec<u8>,
    at: u64,
}

impl std::io::Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let head = self.head.len() as u64;
        let total = head + self.body + self.tail.len() as u64;
        let mut n = 0;
        while n < buf.len() && self.at < total {
            buf[n] = if self.at < head {
                self.head[self.at as usize]
            } else if self.at < head + self.body {
                b'x'
            } else {
                self.tail[(self.at - head - self.body) as usize]
            };
            n += 1;
            self.at += 1;
        }
        Ok(n)
    }
}

#[test]
fn oversized_payload_streamed_in_is_skipped_and_answered_once() {
    let body = 24 * 1024 * 1024u64;
    let input = Generated {
        head: format!("ver:3.0 server:sv serial:1 pool:slack poolserial:1 eventname:PROCESS_LOG_STDOUT len:{body}\n").into_bytes(),
        body,
        tail: tick(2),
        at: 0,
    };
    let out = serve_from(input);
    assert_eq!(String::from_utf8(out).unwrap(), answered(2));
}

#[test]
fn oversized_payload_cut_off_by_eof_is_not_answered() {
    let mut input = tick(1);
    input.extend(format!("ver:3.0 serial:2 eventname:PROCESS_LOG_STDOUT len:{}\n", MAX_PAYLOAD_CHARS + 10).as_bytes());
    input.extend(vec![b'y'; 5000]);
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(1));
    let got = read_all(&input);
    match &got[1] {
        Read::Bad(e @ ProtocolError::Truncated { expected, got, .. }) => {
            assert_eq!((*expected, *got), (MAX_PAYLOAD_CHARS + 10, 5000));
            assert!(!e.needs_answer());
            assert!(e.to_string().contains("input ended inside the payload of PROCESS_LOG_STDOUT (serial 2)"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_oversized_len_is_trusted_what_follows_is_its_payload() {
    // supervisord sends exactly `len` characters and then waits: whatever comes within
    // them is payload, however much it looks like a header. Here input ends first, so
    // nothing is answered: no stray answers for the headers inside.
    let input = [b"ver:3.0 eventname:TICK_5 len:50000000\n".to_vec(), tick(2), tick(3)].concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(0));
}

#[test]
fn payload_that_holds_headers_and_results_is_one_event() {
    let inner = [tick(8), tick(9), b"\nRESULT 2\nOKREADY\n".to_vec()].concat();
    let inner = String::from_utf8(inner).unwrap();
    let input = [event(1, "PROCESS_LOG_STDOUT", &inner), tick(2)].concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(2));
    let got = read_all(&input);
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0], Read::Event(ev) if ev.payload == inner));
}

#[test]
fn each_bad_header_is_refused_once_and_the_next_event_read() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("missing len", b"ver:3.0 server:sv serial:1 eventname:TICK_5\n".to_vec(), "no `len` token"),
        ("non-numeric len", b"ver:3.0 serial:1 eventname:TICK_5 len:ten\nwhen:1".to_vec(), "not a whole number (\"ten\")"),
        ("signed len", b"ver:3.0 serial:1 eventname:TICK_5 len:+6\nwhen:1".to_vec(), "not a whole number (\"+6\")"),
        ("len over 64 bits", b"ver:3.0 serial:1 eventname:TICK_5 len:18446744073709551616\nwhen:1".to_vec(), "absurd `len` of 18446744073709551616"),
        ("header not UTF-8", b"ver:3.0 server:\xff serial:1 eventname:TICK_5 len:6\nwhen:1".to_vec(), r"header line is not valid UTF-8"),
        ("token without colon", b"ver:3.0 serial:1 junk eventname:TICK_5 len:11\nwhen:1\nver:".to_vec(), "token that is not `key:value` (\"junk\")"),
        ("payload not UTF-8", b"ver:3.0 serial:1 eventname:PROCESS_LOG_STDERR len:3\na\xffb".to_vec(), "is not valid UTF-8: \"a\\xffb\""),
        ("leftover bytes in front of a bad header", b"xyz\x80ver:3.0 serial:1 eventname:TICK_5\n".to_vec(), "no `len` token"),
    ];
    for (what, bad, message) in cases {
        let input = [bad, tick(2)].concat();
        assert_eq!(answers(&serve_bytes(&input)), ["FAIL", "OK"], "{what}");
        let got = read_all(&input);
        assert_eq!(got.len(), 2, "{what}: {got:?}");
        match &got[0] {
            Read::Bad(e) => {
                assert!(e.needs_answer(), "{what}: {e}");
                assert!(!e.read_whole(), "{what}: {e}");
                assert!(e.to_string().contains(message), "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            matches!(&got[1], Read::Event(ev) if ev.header.number("serial") == Some(2)),
            "{what}: {got:?}"
        );
    }
}

#[test]
fn input_that_is_not_a_header_is_refused_once_and_the_events_after_it_are_acked() {
    // (what, answers to [junk, tick 2, junk, tick 3]): junk on a line of its own is
    // refused once, with whatever was written with it; junk glued to a header is
    // dropped in front of the header, which is answered.
    let refused = ["FAIL", "OK", "FAIL", "OK"];
    let glued = ["OK", "OK"];
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("garbage line", b"\x1b[2Jrm -rf /\n".to_vec(), &refused),
        ("payload line", b"processname:a groupname:a from_state:STARTING pid:7\n".to_vec(), &refused),
        ("empty lines", b"\n\n\r\n".to_vec(), &refused),
        ("bytes glued to the header", b"when:1".to_vec(), &glued),
        ("binary", (0u8..=255).filter(|&b| b != b'\n').collect(), &glued),
        ("a long line", vec![b'z'; 100_000], &glued),
        ("a long line, then a newline", [vec![b'z'; 100_000], b"\n".to_vec()].concat(), &refused),
        ("a stray answer", b"RESULT 2\nOKREADY\n".to_vec(), &refused),
    ];
    for (what, junk, expected) in cases {
        let input = [junk.clone(), tick(2), junk, tick(3)].concat();
        assert_eq!(answers(&serve_bytes(&input)), expected, "{what}");
        let events: Vec<_> = read_all(&input)
            .into_iter()
            .filter_map(|r| match r {
                Read::Event(ev) => Some(ev.header.number("serial")),
                Read::Bad(e) => {
                    assert!(e.needs_answer(), "{what}: {e}");
                    None
                }
                Read::Eof => unreachable!(),
            })
            .collect();
        assert_eq!(events, [Some(2), Some(3)], "{what}");
    }
}

#[test]
fn what_comes_right_after_a_refusal_and_is_unusable_too_is_acked_not_refused_again() {
    // supervisord resends a refused event at once: if that cannot be read either,
    // a second FAIL would start a loop with no end.
    let bad = b"ver:3.0 serial:1 eventname:TICK_5 len:ten\nwhen:1".to_vec();
    let input = [bad.clone(), bad.clone(), bad, tick(2)].concat();
    assert_eq!(answers(&serve_bytes(&input)), ["FAIL", "OK", "FAIL", "OK"]);
}

#[test]
fn a_header_cut_off_by_eof_is_not_answered() {
    let input = [tick(1), b"ver:3.0 serial:2 eventname:TICK_5 len:6".to_vec()].concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(1));
    let got = read_all(&input);
    match &got[1] {
        Read::Bad(e @ ProtocolError::HeaderCutOff { .. }) => {
            assert!(!e.needs_answer());
            assert!(e.to_string().contains("input ended inside an event header"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_real_header_after_a_long_run_of_leftover_bytes_is_found() {
    // More than the header cap of leftover bytes on the same line: only the line's end
    // is kept, and the header there is read.
    let input = [vec![b'q'; 50_000], tick(2)].concat();
    assert_eq!(String::from_utf8(serve_bytes(&input)).unwrap(), answered(1));
    let got = read_all(&input);
    assert!(
        matches!(&got[..], [Read::Event(ev)] if ev.header.get("server") == Some("sv") && ev.header.get("ver") == Some("3.0")),
        "{got:?}"
    );
}

#[test]
fn the_header_start_is_not_taken_from_inside_server() {
    let input = [b"leftover".to_vec(), tick(2)].concat();
    let got = read_all(&input);
    match &got[..] {
        [Read::Event(ev)] => {
            assert_eq!(ev.header.get("ver"), Some("3.0"));
            assert_eq!(ev.header.get("server"), Some("sv"));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Random streams.
// ---------------------------------------------------------------------------------

/// One piece of a stream. All but `Garbage` are headers supervisord (or a broken
/// sender) would wait on an answer for.
#[derive(Debug, Clone)]
enum Seg {
    /// A well-framed event.
    Valid(String),
    /// An event over the cap, honest about its length.
    Oversized(usize),
    /// Broken headers whose payload length cannot be known, then some bytes that are
    /// neither a header nor a `ver:`.
    MissingLen(String),
    NonNumericLen(String, String),
    /// Broken headers whose `len` is still readable, then exactly that payload.
    HeaderNotUtf8(String),
    TokenWithoutColon(String),
    /// A valid header with a payload that is not UTF-8 (ASCII and `\xff`).
    PayloadNotUtf8(Vec<u8>),
    /// Bytes that are not a header.
    Garbage(Vec<u8>),
    LongGarbage(usize, bool),
}

fn seg() -> impl Strategy<Value = Seg> {
    let payload = prop_oneof![
        4 => any::<String>(),
        1 => Just(String::from_utf8([tick(77), b"\n".to_vec(), tick(78)].concat()).unwrap()),
        1 => "(ver:3\\.0 |len:[0-9]{1,3}|eventname:X|RESULT 2\nOK|READY\n|[a-z ☃\n]){0,12}",
    ];
    let remnant = "[a-z0-9 \n]{0,30}";
    prop_oneof![
        8 => payload.prop_map(Seg::Valid),
        1 => (1usize..3000).prop_map(Seg::Oversized),
        2 => remnant.prop_map(Seg::MissingLen),
        2 => ("[a-z+-]{1,6}|[1-9][0-9]{20,24}", remnant).prop_map(|(v, r)| Seg::NonNumericLen(v, r)),
        2 => any::<String>().prop_map(Seg::HeaderNotUtf8),
        2 => any::<String>().prop_map(Seg::TokenWithoutColon),
        2 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(0xffu8)], 0..20).prop_map(Seg::PayloadNotUtf8),
        4 => proptest::collection::vec(any::<u8>(), 1..60).prop_map(Seg::Garbage),
        1 => (8_000usize..30_000, any::<bool>()).prop_map(|(n, nl)| Seg::LongGarbage(n, nl)),
    ]
}

/// The bytes of a stream, how many headers it holds, and the serials and payloads
/// of its well-framed events in order.
fn build(segs: &[Seg], cut: Option<(String, usize)>) -> (Vec<u8>, usize, Vec<(u64, String)>) {
    let mut bytes = Vec::new();
    let mut headers = 0;
    let mut valid = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let serial = i as u64 + 1;
        let sn = serial.to_string();
        match s {
            Seg::Valid(p) => {
                bytes.extend(event(serial, "PROCESS_COMMUNICATION_STDOUT", p));
                valid.push((serial, p.clone()));
            }
            Seg::Oversized(extra) => {
                bytes.extend(event(serial, "PROCESS_LOG_STDOUT", &big_payload(MAX_PAYLOAD_CHARS + extra)));
            }
            Seg::MissingLen(rest) => {
                bytes.extend(format!("ver:3.0 server:sv serial:{sn} eventname:TICK_5\n{rest}").as_bytes());
            }
            Seg::NonNumericLen(v, rest) => {
                bytes.extend(format!("ver:3.0 server:sv serial:{sn} eventname:TICK_5 len:{v}\n{rest}").as_bytes());
            }
            Seg::HeaderNotUtf8(p) => {
                bytes.extend(b"ver:3.0 server:");
                bytes.extend(b"\xfe\xff");
                bytes.extend(format!(" serial:{sn} eventname:TICK_5 len:{}\n{p}", p.chars().count()).as_bytes());
            }
            Seg::TokenWithoutColon(p) => {
                bytes.extend(format!("ver:3.0 server:sv serial:{sn} oops eventname:TICK_5 len:{}\n{p}", p.chars().count()).as_bytes());
            }
            Seg::PayloadNotUtf8(p) => {
                let mut p = p.clone();
                p.push(0xff); // at least one bad byte
                bytes.extend(format!("ver:3.0 server:sv serial:{sn} eventname:PROCESS_LOG_STDERR len:{}\n", p.len()).as_bytes());
                bytes.extend(p);
            }
            Seg::Garbage(g) => {
                bytes.extend(g);
                continue;
            }
            Seg::LongGarbage(n, newline) => {
                bytes.extend(vec![b'g'; *n]);
                if *newline {
                    bytes.push(b'\n');
                }
                continue;
            }
        }
        headers += 1;
    }
    if let Some((p, at)) = cut {
        // The last event, cut off by EOF: a header supervisord sent, never answered.
        let f = event(segs.len() as u64 + 1, "PROCESS_COMMUNICATION_STDOUT", &format!("{p}!"));
        let at = 1 + at % (f.len() - 1);
        bytes.extend(&f[..at]);
        headers += 1;
    }
    (bytes, headers, valid)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn answers_never_outnumber_headers_and_every_valid_event_is_read(
        segs in proptest::collection::vec(seg(), 0..14),
        cut in proptest::option::of(("[a-z ☃]{0,20}", any::<usize>())),
    ) {
        let truncated = cut.is_some();
        let (bytes, headers, valid) = build(&segs, cut);

        // The protocol loop: only READY and RESULT tokens, one READY first and one
        // after each answer; at most one answer per write (junk on its own line is a
        // write too), every complete header answered, never two FAILs in a row.
        let out = serve_bytes(&bytes);
        let given = answers(&out);
        let writes = segs.len();
        prop_assert!(given.len() <= writes, "{} answers for {} writes", given.len(), writes);
        prop_assert!(given.len() >= headers - usize::from(truncated), "{} answers for {} headers", given.len(), headers);
        prop_assert!(!given.windows(2).any(|w| w == ["FAIL", "FAIL"]), "{:?}", given);
        let answers = given.len();

        // The reader with the same answer rule: every well-framed event, garbage or
        // broken headers before it or not, is read whole and in order.
        let reads = read_all(&bytes);
        let needing = reads.iter().filter(|r| match r {
            Read::Event(_) => true,
            Read::Bad(e) => e.needs_answer(),
            Read::Eof => false,
        }).count();
        prop_assert_eq!(needing, answers);
        let events: Vec<(u64, String)> = reads
            .iter()
            .filter_map(|r| match r {
                Read::Event(ev) => Some((ev.header.number("serial").unwrap(), ev.payload.clone())),
                _ => None,
            })
            .collect();
        prop_assert_eq!(events, valid);
    }
}

// ---------------------------------------------------------------------------------
// The real binary over pipes.
// ---------------------------------------------------------------------------------

#[test]
fn binary_answers_an_oversized_event_once_then_handles_the_next() {
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_listener(state.path());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = Stdout::drain(&mut child);
    // In step, as supervisord does: wait for READY, send one event, wait for its answer.
    stdout.expect_all("READY\n");
    let big = event(
        1,
        "PROCESS_COMMUNICATION_STDOUT",
        &big_payload(MAX_PAYLOAD_CHARS + 100),
    );
    let writer = std::thread::spawn(move || {
        for chunk in big.chunks(64 * 1024) {
            stdin.write_all(chunk).unwrap();
            stdin.flush().unwrap();
        }
        stdin
    });
    let mut stdin = writer.join().unwrap();
    stdout.expect_all("READY\nRESULT 2\nOKREADY\n");
    let running = event(
        2,
        "PROCESS_STATE_RUNNING",
        "processname:web groupname:web from_state:STARTING pid:42",
    );
    stdin.write_all(&running).unwrap();
    stdin.flush().unwrap();
    stdout.expect_all("READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n");
    drop(stdin);
    let status = wait_exit(&mut child, secs(20));
    let stderr = std::fs::read_to_string(state.path().join("stderr.log")).unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    stdout.expect_all("READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n");
    assert!(
        stderr.contains(&format!("absurd `len` of {}", MAX_PAYLOAD_CHARS + 100)),
        "{stderr}"
    );
    assert!(!stderr.contains("not an event header"), "{stderr}");
    let db = rusqlite::Connection::open(state.path().join("state.db")).unwrap();
    let serials: Vec<i64> = db
        .prepare("SELECT serial FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(serials, [2], "the event after the oversized one is committed");
}

#[test]
fn binary_stdout_is_exact_for_an_oversized_event_then_a_valid_one_written_at_once() {
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_listener(state.path());
    let mut stdin = child.stdin.take().unwrap();
    let input = [
        event(1, "PROCESS_LOG_STDERR", &big_payload(MAX_PAYLOAD_CHARS + 1)),
        event(
            2,
            "PROCESS_STATE_FATAL",
            "processname:web groupname:web from_state:BACKOFF",
        ),
    ]
    .concat();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = std::fs::read_to_string(state.path().join("stderr.log")).unwrap();
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    );
    assert!(stderr.contains("absurd `len` of"), "{stderr}");
}

/// Input the reader cannot use in the middle of a real supervisord capture — a line
/// that is not a header, a header with a bad `len`, a payload that is not UTF-8 —
/// gets one `RESULT 4\nFAIL` each (supervisord would send the event again), and
/// every real event after them is still acked and committed.
#[test]
fn binary_refuses_garbled_input_in_a_real_capture_once_and_acks_every_event_after_it() {
    let capture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/supervisord-4.2.5-events.bin"
    ))
    .unwrap();
    let events: Vec<Vec<u8>> = read_all(&capture)
        .into_iter()
        .map(|r| match r {
            Read::Event(ev) => {
                let tokens: Vec<(&str, &str)> = ev
                    .header
                    .tokens
                    .iter()
                    .filter(|(k, _)| k != "len")
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                frame(&tokens, &ev.payload)
            }
            other => panic!("the capture is clean: {other:?}"),
        })
        .collect();
    assert!(events.len() > 40, "{}", events.len());
    let garbled: [&[u8]; 3] = [
        b"this is not a header at all\n",
        b"ver:3.0 server:supervisor serial:9999 pool:slack poolserial:9999 eventname:PROCESS_STATE_RUNNING len:many\nprocessname:x groupname:x from_state:STARTING pid:1",
        b"ver:3.0 server:supervisor serial:9998 pool:slack poolserial:9998 eventname:PROCESS_STATE_RUNNING len:4\n\xff\xfe\xfd\xfc",
    ];
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_listener(state.path());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = Stdout::drain(&mut child);
    let mut want = String::from("READY\n");
    stdout.expect_all(&want);
    let mut garbage = garbled.iter();
    for (i, ev) in events.iter().enumerate() {
        if i % 15 == 7 {
            if let Some(g) = garbage.next() {
                stdin.write_all(g).unwrap();
                stdin.flush().unwrap();
                want.push_str("RESULT 4\nFAILREADY\n");
                stdout.expect_all(&want);
            }
        }
        stdin.write_all(ev).unwrap();
        stdin.flush().unwrap();
        want.push_str(ANSWER);
        stdout.expect_all(&want);
    }
    assert!(garbage.next().is_none(), "all three were played");
    drop(stdin);
    assert!(wait_exit(&mut child, secs(20)).success());
    let stderr = std::fs::read_to_string(state.path().join("stderr.log")).unwrap();
    assert_eq!(stderr.matches("answered FAIL").count(), 3, "{stderr}");
    let db = rusqlite::Connection::open(state.path().join("state.db")).unwrap();
    let committed: i64 = db
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    let process_states = read_all(&capture)
        .iter()
        .filter(|r| matches!(r, Read::Event(ev) if ev.header.event_name().starts_with("PROCESS_STATE_")))
        .count();
    assert_eq!(committed as usize, process_states, "every real process-state event is on disk");
}
