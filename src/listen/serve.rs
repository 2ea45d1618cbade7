//! The protocol loop on stdin/stdout, and the signal watcher that lets an event in
//! hand be answered before the process exits.

use std::io::{self, Read as IoRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handler::HeldEvents;
use crate::dispatch::InFlight;
use super::Handler;
use crate::supervisord::protocol::{self, EventReader, Read};

/// Shared between the reader and the signal watcher.
#[derive(Default)]
pub struct Lifecycle {
    /// An event is in hand (between its first byte and its answer).
    pub busy: AtomicBool,
    /// SIGTERM/SIGINT arrived: finish the event in hand, then stop.
    pub stopping: AtomicBool,
}

/// The protocol loop: READY, read, handle, answer, repeat until EOF or stop. Every
/// header gets exactly one `RESULT 2\nOK`: bad events are reported on stderr and
/// answered OK; bytes that are not a header are reported and never answered.
pub fn serve<R: IoRead, W: Write>(
    input: R,
    out: &mut W,
    handler: &mut Handler,
    life: &Lifecycle,
) -> io::Result<()> {
    let mut reader = EventReader::new(input);
    protocol::write_ready(out)?;
    loop {
        if !reader.wait_for_input()? {
            tracing::info!("stdin closed: supervisord is gone, exiting");
            // A last chance for events held while the disk refused writes.
            handler.last_words();
            return Ok(());
        }
        life.busy.store(true, Ordering::SeqCst);
        match reader.next_event()? {
            Read::Eof => return Ok(()),
            Read::Event(raw) => handler.handle(&raw),
            Read::Bad(e) if e.needs_answer() => {
                tracing::error!("bad input from supervisord: {e}; answering OK and reading on");
            }
            Read::Bad(e) if e.at_end_of_input() => {
                tracing::error!("{e}; exiting");
                handler.last_words();
                return Ok(());
            }
            Read::Bad(e) => {
                // Not an event: supervisord waits for nothing here, and an answer it
                // does not expect would put this listener in its UNKNOWN state for
                // good. Still waiting for the event it will send next: no READY either.
                tracing::error!("bad input from supervisord: {e}; discarded without an answer");
                life.busy.store(false, Ordering::SeqCst);
                if life.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
        }
        if life.stopping.load(Ordering::SeqCst) || handler.after_answer_due() {
            // Work to do between the answer and the next event (a checkpoint, a
            // recount), or a stop: the answer first, READY after it.
            protocol::write_ok(out)?;
            handler.after_answer();
            life.busy.store(false, Ordering::SeqCst);
            if life.stopping.load(Ordering::SeqCst) {
                tracing::info!("stopping after answering the event in hand");
                return Ok(());
            }
            protocol::write_ready(out)?;
        } else {
            // The common case: answer and READY in one write.
            protocol::write_ok_ready(out)?;
            life.busy.store(false, Ordering::SeqCst);
        }
    }
}

/// Watches SIGTERM/SIGINT: lets an event in hand be answered, then exits the process
/// (the reader may be blocked on stdin, which cannot be interrupted portably).
pub fn watch_signals(
    life: Arc<Lifecycle>,
    held: HeldEvents,
    in_flight: Arc<InFlight>,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "asked to stop");
                life.stopping.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_millis(900);
                while life.busy.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                held.last_words(None);
                let unfinished = in_flight.drain(super::DRAIN);
                if unfinished > 0 {
                    tracing::warn!(unfinished, "exiting with deliveries under way: they are sent again at the next start");
                }
                std::process::exit(0);
            }
        })?;
    Ok(())
}
