//! Wake-ups from the stdin reader to the dispatcher: the set of threads with new
//! outbox entries since the dispatcher last looked. A set, not a queue: however far
//! the delivery side falls behind, memory is bounded by the number of processes, not
//! by the number of events.

use std::collections::HashSet;

use crate::supervisord::event::ThreadKey;

/// A nudge to the dispatcher: this thread has new outbox entries.
pub type Wake = (ThreadKey, String);

/// The pending wake-ups, and a notification for the dispatcher.
#[derive(Default)]
pub struct Wakeup {
    keys: std::sync::Mutex<HashSet<Wake>>,
    notify: tokio::sync::Notify,
}

impl Wakeup {
    /// Never blocks (called by the stdin reader).
    pub fn wake(&self, w: Wake) {
        let fresh = self.keys.lock().unwrap().insert(w);
        if fresh {
            self.notify.notify_one();
        }
    }

    /// Waits for wake-ups and takes them all.
    pub async fn take(&self) -> Vec<Wake> {
        loop {
            let keys: Vec<Wake> = self.keys.lock().unwrap().drain().collect();
            if !keys.is_empty() {
                return keys;
            }
            self.notify.notified().await;
        }
    }
}

