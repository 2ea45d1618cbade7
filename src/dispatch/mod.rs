//! The delivery policy, on the async side: it reads the outbox, renders cards and
//! calls Slack; it knows no wire bytes and no database engine. Its rooms:
//! - [`delivery`]: the core every task below shares (Slack under the policy, the
//!   outbox, the shared state, the renderer, the settings);
//! - [`worker`]: one per thread — replies strictly in order, coalescing what piled
//!   up, digests while the process flaps, the "settled" reply after, the
//!   broadcasts its episode calls for, and notes;
//! - [`keeper`]: one per thread — the only task that posts a parent, and keeps it
//!   showing the newest known state within the edit budget;
//! - [`fleet_keeper`]: instead, with cards per program across a fleet — one parent
//!   per program whatever the race (a claim before the post), drawn by one host at
//!   a time (a lease), from every host's part;
//! - [`board`]: one per listener with `board = true` — the host's board message,
//!   or the fleet's (one host at a time draws it);
//! - [`heartbeat`]: in a fleet, this host's heartbeat and process table;
//! - [`retry`]: every reaction to a failed call, in one place;
//! - [`episode`]: failure episodes on supervisord's clock — which replies the
//!   channel sees too (one per episode, and its FATAL);
//! - [`thread`]: the in-memory state a thread's worker and keeper share;
//! - [`controls`]: the buttons and the mute line on a thread's cards.
//!
//! Per thread: the keeper posts the parent (its `ts` is recorded at once, so a
//! restart never posts a second parent), the worker posts every transition as a
//! reply, and the keeper keeps the parent current. Entries are marked delivered only
//! after Slack confirmed the reply.

mod board;
mod controls;
mod delivery;
mod episode;
mod fleet_keeper;
pub mod heartbeat;
mod keeper;
pub mod retry;
mod thread;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use board::Board;
pub use controls::Offer;
pub use delivery::{Delivery, Parts};
pub use thread::FlapRule;

use crate::card::Card;
use crate::store::{known, Known, StoreError};
use crate::supervisord::event::ThreadKey;
use crate::wakeup::{Wake, Wakeup};
use fleet_keeper::FleetKeeper;
use keeper::Keeper;
use thread::{Note, ThreadState};
use worker::Worker;

/// Delivered entries are kept this long so that a resend is still recognised.
const KEEP_DELIVERED: chrono::Duration = chrono::Duration::hours(24);

/// Delivers the outbox to Slack for the life of the process: one worker and one
/// keeper per thread.
pub struct Dispatcher {
    core: Arc<Delivery>,
    threads: Mutex<HashMap<Wake, Arc<ThreadState>>>,
}

impl Dispatcher {
    pub fn new(core: Arc<Delivery>) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            core,
            threads: Mutex::new(HashMap::new()),
        })
    }

    /// The core, for the board.
    pub fn core(&self) -> Arc<Delivery> {
        self.core.clone()
    }

    /// Runs for the life of the process: a worker and a keeper for every thread the
    /// outbox already holds (after a restart) and for every wake-up.
    pub async fn run(self: Arc<Self>, wakes: Arc<Wakeup>) {
        // Claims of a process that died while delivering: those entries wait again.
        match self.core.outbox(|o| o.release_claims()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "entries a previous run was delivering wait again"),
            Err(e) => tracing::error!(error = %e, "cannot release earlier claims"),
        }
        let start = self.core.outbox(|o| o.pending_keys()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the outbox");
            Vec::new()
        });
        if !start.is_empty() {
            tracing::info!(
                threads = start.len(),
                "delivering what the outbox held from before"
            );
        }
        for w in start {
            self.nudge(w);
        }
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                keys = wakes.take() => {
                    for w in keys {
                        self.nudge(w);
                    }
                }
                _ = prune.tick() => {
                    if let Err(e) = self.core.outbox(|o| o.prune(KEEP_DELIVERED)) {
                        tracing::warn!(error = %e, "cannot prune delivered entries");
                    }
                }
                _ = self.core.shutdown.triggered() => return,
            }
        }
    }

    /// Queues a note for the thread of `key` in `channel` (an action's audit, Show
    /// stderr): posted by its worker, paced and retried like every reply, after the
    /// entries the outbox holds for it now.
    pub fn note(&self, key: &ThreadKey, channel: &str, card: Card) {
        let after = self
            .core
            .outbox(|o| o.newest_id(key, channel))
            .unwrap_or(None);
        let state = self.thread((key.clone(), channel.to_string()));
        state.push_note(Note { card, after });
    }

    /// Something new for a thread: wakes its tasks, starting them the first time.
    fn nudge(&self, w: Wake) {
        self.thread(w).nudge();
    }

    /// The state of a thread, its worker and keeper started the first time.
    fn thread(&self, w: Wake) -> Arc<ThreadState> {
        let mut threads = self.threads.lock().unwrap();
        if let Some(state) = threads.get(&w) {
            return state.clone();
        }
        let state = Arc::new(ThreadState::default());
        self.seed_flapping(&w, &state);
        threads.insert(w.clone(), state.clone());
        let (key, channel) = w;
        let (core, k, c, s) = (self.core.clone(), key.clone(), channel.clone(), state.clone());
        if self.core.card_key(&key).is_fleet() {
            supervise("keeper", key.clone(), move || {
                FleetKeeper::new(core.clone(), k.clone(), c.clone(), s.clone()).run()
            });
        } else {
            supervise("keeper", key.clone(), move || {
                Keeper::new(core.clone(), k.clone(), c.clone(), s.clone()).run()
            });
        }
        let (core, k, s) = (self.core.clone(), key.clone(), state.clone());
        supervise("worker", key, move || {
            Worker::new(core.clone(), k.clone(), channel.clone(), s.clone()).run()
        });
        state
    }

    /// A new thread state starts from the transitions an earlier run saw (the outbox
    /// keeps delivered rows a day).
    fn seed_flapping(&self, w: &Wake, state: &ThreadState) {
        let s = &self.core.settings;
        let rule = FlapRule {
            threshold: s.flap_threshold,
            window: s.flap_window,
        };
        let window = chrono::Duration::from_std(rule.window).unwrap_or(chrono::Duration::MAX);
        let now = chrono::Utc::now();
        let since = now.checked_sub_signed(window).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        match self.core.outbox(|o| o.recent_transitions(&w.0, &w.1, since)) {
            Ok((times, seen)) => {
                let ago: Vec<Duration> = times
                    .iter()
                    .filter_map(|t| (now - *t).to_std().ok())
                    .collect();
                state.seed(&ago, seen, rule);
                if state.is_flapping() {
                    tracing::info!(thread = %w.0, "process is flapping (counting the transitions an earlier run saw): its replies become digests");
                }
            }
            Err(e) => tracing::warn!(thread = %w.0, error = %e, "cannot read recent transitions"),
        }
    }
}

/// What the channel shows for each thread of `host`, from the outbox and the
/// shared state (for the board without XML-RPC).
async fn known_states(core: &Delivery, host: &str) -> Result<Vec<Known>, StoreError> {
    let rows = core.outbox(|o| o.newest_rows(host))?;
    let latest = core.shared.latest_states(host).await?;
    Ok(known(rows, latest))
}

/// Runs a thread's task for the life of the process; a task that panics (a bug) is
/// logged and started again after a second, so that one bad moment never silences a
/// thread for good.
fn supervise<F, Fut>(what: &'static str, key: ThreadKey, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    tracing::error!(thread = %key, "the thread's {what} failed ({e}); starting it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_panics_is_started_again() {
        let starts = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let (s, d) = (starts.clone(), done.clone());
        let key = ThreadKey {
            host: "h".into(),
            group: "g".into(),
            process: "p".into(),
        };
        supervise("worker", key, move || {
            let (s, d) = (s.clone(), d.clone());
            async move {
                if s.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("a bug");
                }
                d.notify_one();
            }
        });
        tokio::time::timeout(Duration::from_secs(5), done.notified())
            .await
            .expect("started again");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }
}
