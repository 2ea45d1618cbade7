//! Shutdown: one handle, cloned into every part that must stop. Whoever decides to
//! stop (a signal, the end of stdin, a test) calls [`Shutdown::trigger`]; every task
//! selects on [`Shutdown::triggered`]; a plain thread asks
//! [`Shutdown::is_triggered`]. The same handle counts the deliveries under way (a
//! post Slack may have accepted whose answer is not yet on disk), so that a clean
//! stop can let them finish ([`Shutdown::drained`]) and start no new one.
//!
//! `listen`, `preview`, the Slack stand-in and the tests all stop this one way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// A shutdown signal and the deliveries it waits for.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    stop: watch::Sender<bool>,
    flights: AtomicUsize,
    landed: Notify,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("flights", &self.inner.flights.load(Ordering::SeqCst))
            .finish()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                stop: watch::channel(false).0,
                flights: AtomicUsize::new(0),
                landed: Notify::new(),
            }),
        }
    }

    /// Asks everything to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.stop.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Completes once [`Shutdown::trigger`] was called (at once if it was).
    pub async fn triggered(&self) {
        let mut rx = self.inner.stop.subscribe();
        // The sender lives as long as `self`: `wait_for` only fails if it is gone.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Triggers on SIGTERM or SIGINT (installed now; call inside the runtime).
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "asked to stop"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "asked to stop"),
                _ = this.triggered() => return,
            }
            this.trigger();
        });
        Ok(())
    }

    /// A delivery may start: `None` once shutdown was triggered. The delivery is
    /// under way until the [`Flight`] is dropped.
    pub fn flight(&self) -> Option<Flight> {
        self.inner.flights.fetch_add(1, Ordering::SeqCst);
        if self.is_triggered() {
            self.land();
            return None;
        }
        Some(Flight(self.clone()))
    }

    fn land(&self) {
        if self.inner.flights.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.landed.notify_waiters();
        }
    }

    /// Waits (up to `within`) for the deliveries under way to finish. Returns how many
    /// were still under way at the deadline.
    pub async fn drained(&self, within: Duration) -> usize {
        let wait = async {
            loop {
                let landed = self.inner.landed.notified();
                if self.inner.flights.load(Ordering::SeqCst) == 0 {
                    return;
                }
                landed.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.inner.flights.load(Ordering::SeqCst)
    }
}

/// One delivery under way (see [`Shutdown::flight`]).
pub struct Flight(Shutdown);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.land();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_and_no_flight_starts_after_the_trigger() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.triggered().await }
        });
        let flight = s.flight().expect("before the trigger a delivery may start");
        s.trigger();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(s.flight().is_none(), "none after it");
        assert_eq!(s.drained(Duration::from_millis(50)).await, 1, "still under way");
        let drained = tokio::spawn({
            let s = s.clone();
            async move { s.drained(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(flight);
        assert_eq!(drained.await.unwrap(), 0);
        // Triggered already: completes at once.
        s.triggered().await;
    }
}
