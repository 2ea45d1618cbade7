//! Wake-ups from the stdin reader to the dispatcher: the set of threads with new
//! outbox entries since the dispatcher last looked. A set, not a queue: however far
//! the delivery side falls behind, memory is bounded by the number of processes, not
//! by the number of events.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::supervisord::event::ThreadKey;

/// A nudge to the dispatcher: this thread has new outbox entries.
pub type Wake = (ThreadKey, String);

/// The shortest time between two batches of wake-ups taken by the dispatcher. Within
/// it the reader adds keys without waking anyone: one wake-up of the async side per
/// window rather than per event (each one a futex wake whose thread may preempt the
/// reader on its CPU). Deliveries wait at most this much longer; Slack's pace is a
/// post a second.
pub const WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// The pending wake-ups, and a notification for the dispatcher.
#[derive(Default)]
pub struct Wakeup {
    keys: std::sync::Mutex<HashSet<Wake>>,
    notify: tokio::sync::Notify,
    /// The dispatcher waits for a notification (it found nothing pending): the next
    /// new key must wake it. While it is awake (or in its window) keys just wait.
    asleep: AtomicBool,
    last_taken: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Wakeup {
    /// Never blocks (called by the stdin reader).
    pub fn wake(&self, w: Wake) {
        let fresh = self.keys.lock().unwrap().insert(w);
        if fresh && self.asleep.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Waits for wake-ups and takes them all, at most once per [`WINDOW`].
    pub async fn take(&self) -> Vec<Wake> {
        let last = *self.last_taken.lock().unwrap();
        if let Some(last) = last {
            tokio::time::sleep_until(last + WINDOW).await;
        }
        loop {
            let keys: Vec<Wake> = self.keys.lock().unwrap().drain().collect();
            if !keys.is_empty() {
                *self.last_taken.lock().unwrap() = Some(tokio::time::Instant::now());
                return keys;
            }
            self.asleep.store(true, Ordering::SeqCst);
            // A key added between the drain and `asleep` did not notify: look again.
            if !self.keys.lock().unwrap().is_empty() {
                self.asleep.store(false, Ordering::SeqCst);
                continue;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisord::event::ThreadKey;

    fn key(p: &str) -> Wake {
        let k = ThreadKey {
            host: "h".into(),
            group: p.into(),
            process: p.into(),
        };
        (k, "#ops".into())
    }

    #[tokio::test]
    async fn keys_added_while_the_dispatcher_sleeps_or_works_are_all_taken() {
        let w = std::sync::Arc::new(Wakeup::default());
        w.wake(key("a"));
        assert_eq!(w.take().await, vec![key("a")]);
        // Added while it is "working" (no one waits): taken by the next call.
        w.wake(key("b"));
        w.wake(key("b"));
        assert_eq!(w.take().await, vec![key("b")]);
        // Added while it waits: wakes it.
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.take().await });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        w.wake(key("c"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, vec![key("c")]);
    }
}
