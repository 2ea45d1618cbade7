//! The protocol reader over arbitrary bytes: read until Eof; it must never panic,
//! never loop forever, and always make progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor_slack::supervisord::protocol::{EventReader, Read};

fuzz_target!(|data: &[u8]| {
    let mut reader = EventReader::new(data);
    // Every read that is not Eof consumes at least one byte, so there can be no more
    // reads than bytes; more means the reader is stuck.
    let mut reads = 0usize;
    loop {
        match reader.next_event() {
            Ok(Read::Eof) => break,
            Ok(Read::Event(ev)) => {
                // What the reader returns must hold what it promises.
                assert_eq!(ev.payload.chars().count(), ev.header.len);
                let _ = ev.header.event_name();
                let _ = ev.header.number("serial");
            }
            Ok(Read::Bad(e)) => {
                let _ = e.to_string();
                let _ = e.needs_answer();
            }
            Err(e) => panic!("I/O error from a byte slice: {e}"),
        }
        reads += 1;
        assert!(
            reads <= data.len(),
            "{reads} reads from {} bytes: no progress",
            data.len()
        );
    }
});
