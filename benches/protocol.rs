//! Criterion benchmarks of the protocol reader: `EventReader` over the real capture
//! of supervisord 4.2.5 (59 events, read 50 times over) and over synthetic events whose payloads hold
//! multi-byte characters (where `len` counts code points, not bytes).
//!
//! `cargo bench --bench protocol`. Under `cargo test --all-targets` criterion runs each
//! routine once (a smoke run, no timing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use supervisor_slack::supervisord::protocol::{frame, EventReader, Read};

const CAPTURE: &[u8] = include_bytes!("../tests/fixtures/supervisord-4.2.5-events.bin");

/// Reads every event in `bytes`; returns how many were read.
fn read_all(bytes: &[u8]) -> usize {
    let mut reader = EventReader::new(bytes);
    let mut n = 0;
    loop {
        match reader.next_event().expect("reading a slice") {
            Read::Event(ev) => {
                black_box(&ev);
                n += 1;
            }
            Read::Bad(e) => panic!("bad input in benchmark data: {e}"),
            Read::Eof => return n,
        }
    }
}

/// `n` PROCESS_STATE events plus log events whose data is multi-byte text
/// (accents, CJK, emoji: 2, 3 and 4 bytes per code point).
fn synthetic(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let line = "naïve café — 東京 ☃ 🔥 Größe: ";
    for i in 0..n {
        let serial = i.to_string();
        let (name, payload) = if i % 2 == 0 {
            (
                "PROCESS_STATE_RUNNING".to_string(),
                format!("processname:wörker_{i} groupname:grüppe from_state:STARTING pid:4242"),
            )
        } else {
            (
                "PROCESS_LOG_STDERR".to_string(),
                format!(
                    "processname:wörker_{i} groupname:grüppe pid:4242 channel:stderr\n{}",
                    line.repeat(8)
                ),
            )
        };
        out.extend(frame(
            &[
                ("ver", "3.0"),
                ("server", "bench"),
                ("serial", &serial),
                ("pool", "slack"),
                ("poolserial", &serial),
                ("eventname", &name),
            ],
            &payload,
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    assert_eq!(read_all(CAPTURE), 59, "the capture holds 59 events");
    // The capture 50 times over, so that the reader's set-up (a 256 KiB buffer) is
    // spread over many events as it is in a long-running listener.
    let capture = CAPTURE.repeat(50);
    let captured = read_all(&capture);
    let synth = synthetic(1000);
    assert_eq!(read_all(&synth), 1000);

    let mut g = c.benchmark_group("protocol");
    g.throughput(Throughput::Elements(captured as u64));
    g.bench_function("capture 4.2.5 x50 (2950 events)", |b| {
        b.iter(|| read_all(black_box(&capture)))
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("synthetic multi-byte (1000 events)", |b| {
        b.iter(|| read_all(black_box(&synth)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
