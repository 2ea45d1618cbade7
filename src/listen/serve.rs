//! The protocol loop on stdin/stdout.

use std::io::{self, Read as IoRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Handler;
use crate::shutdown::Shutdown;
use crate::supervisord::protocol::{self, EventReader, Read};

/// Whether the reader has an event in hand (between its first byte and its answer):
/// a stop waits for the answer before the process exits.
#[derive(Debug, Default)]
pub struct InHand(AtomicBool);

impl InHand {
    fn set(&self, busy: bool) {
        self.0.store(busy, Ordering::SeqCst);
    }

    /// Waits (up to `within`) until no event is in hand.
    pub async fn answered(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.0.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The protocol loop: READY, read, handle, answer, repeat until EOF or shutdown.
/// Every event supervisord writes gets exactly one answer: `RESULT 2\nOK` once it is
/// committed (or held), `RESULT 4\nFAIL` for input the reader cannot use, so that
/// supervisord sends that event again — once: if what comes again cannot be used
/// either, it is answered OK and dropped, loudly, rather than loop.
pub fn serve<R: IoRead, W: Write>(
    input: R,
    out: &mut W,
    handler: &mut Handler,
    shutdown: &Shutdown,
    in_hand: &InHand,
) -> io::Result<()> {
    let mut reader = EventReader::new(input);
    let mut refused_last = false;
    protocol::write_ready(out)?;
    loop {
        if !reader.wait_for_input()? {
            tracing::info!("stdin closed: supervisord is gone, exiting");
            // A last chance for events held while the disk refused writes.
            handler.last_words();
            return Ok(());
        }
        in_hand.set(true);
        let refuse = match reader.next_event()? {
            Read::Eof => return Ok(()),
            Read::Event(raw) => {
                handler.handle(&raw);
                refused_last = false;
                false
            }
            Read::Bad(e) if e.at_end_of_input() => {
                tracing::error!("{e}; exiting");
                handler.last_words();
                return Ok(());
            }
            Read::Bad(e) if e.read_whole() => {
                tracing::error!("bad input from supervisord: {e}; answered OK and dropped (sent again it would be the same)");
                false
            }
            Read::Bad(e) if refused_last => {
                tracing::error!("bad input from supervisord again, right after asking for it again: {e}; answered OK and dropped");
                refused_last = false;
                false
            }
            Read::Bad(e) => {
                tracing::error!("bad input from supervisord: {e}; answered FAIL so that supervisord sends the event again");
                refused_last = true;
                true
            }
        };
        if refuse {
            protocol::write_fail_ready(out)?;
            in_hand.set(false);
        } else if shutdown.is_triggered() || handler.after_answer_due() {
            // Work to do between the answer and the next event (a checkpoint, a
            // recount), or a stop: the answer first, READY after it.
            protocol::write_ok(out)?;
            handler.after_answer();
            in_hand.set(false);
            if shutdown.is_triggered() {
                tracing::info!("stopping after answering the event in hand");
                return Ok(());
            }
            protocol::write_ready(out)?;
        } else {
            // The common case: answer and READY in one write.
            protocol::write_ok_ready(out)?;
            in_hand.set(false);
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}
