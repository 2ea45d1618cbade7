//! The delivery policy, on the async side: it reads the outbox, renders cards and
//! calls Slack; it knows no wire bytes. Its rooms:
//! - [`worker`]: one per thread key — replies strictly in order, coalescing what piled
//!   up, digests while the process flaps, the "settled" reply after, and which
//!   replies the channel sees too (the first failure of an episode, FATAL);
//! - [`keeper`]: one per thread key — keeps the parent showing the newest known state,
//!   within the edit budget;
//! - [`board`]: one per listener with `board = true` — the host's board message,
//!   redrawn after a storm settles, within the same edit budget;
//! - [`pacing`]: the 429 gate and the token buckets (posts per channel, edits);
//! - [`retry`]: every reaction to a failed call, in one place;
//! - [`thread`]: the in-memory state a thread's worker and keeper share;
//! - [`controls`]: the buttons and the mute on a thread's cards (actions from Slack),
//!   and the paced post [`crate::interact`] audits an action with.
//!
//! Per thread: post a parent the first time (its `ts` is saved at once, so a restart
//! never posts a second parent), post every transition as a reply, and keep the
//! parent current. Entries are marked delivered only after Slack confirmed the reply.

mod board;
mod controls;
mod keeper;
mod pacing;
mod retry;
mod thread;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::card::Renderer;
use crate::config::Settings;
use crate::crash::ContextSource;
use crate::slack::SlackApi;
use crate::store::{Store, StoreError};
use crate::wakeup::{Wake, Wakeup};

pub use controls::Offer;
use pacing::Pacing;
use retry::Retrier;
use thread::ThreadState;

/// Delivered entries are kept this long so that a resend is still recognised.
const KEEP_DELIVERED: chrono::Duration = chrono::Duration::hours(24);

/// Deliveries under way: a post Slack may have accepted whose answer is not yet on
/// disk. On SIGTERM the process lets them finish (bounded), so that a clean stop
/// never makes the next start post the same entry again; no new one starts then.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    closing: AtomicBool,
}

/// One delivery under way (see [`InFlight`]).
pub struct Flight<'a>(&'a InFlight);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    /// A delivery may start: `None` once the process is stopping.
    pub fn enter(&self) -> Option<Flight<'_>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Flight(self))
    }

    /// Stops new deliveries and waits (up to `within`) for those under way. Returns
    /// how many were still under way at the deadline.
    pub fn drain(&self, within: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        loop {
            let n = self.count.load(Ordering::SeqCst);
            if n == 0 || Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Delivers the outbox to Slack for the life of the process.
pub struct Dispatcher {
    retrier: Retrier,
    /// supervisord's XML-RPC, for the crash context of failures (None: not available).
    context: Option<ContextSource>,
    store: Mutex<Store>,
    renderer: Renderer,
    settings: Settings,
    /// How many parents owe an edit now (they share the edit budget).
    owing: AtomicUsize,
    in_flight: Arc<InFlight>,
    /// What cards offer when actions from Slack are on (`None`: no buttons).
    offer: Option<Offer>,
}

impl Dispatcher {
    pub fn new(
        api: SlackApi,
        context: Option<ContextSource>,
        store: Store,
        renderer: Renderer,
        settings: Settings,
        in_flight: Arc<InFlight>,
        offer: Option<Offer>,
    ) -> Arc<Self> {
        // Pacing saves its state (on every call) in a file of its own: the reader's
        // commits never wait for it.
        let pacing_store = Store::open(&crate::store::pacing_path(store.path()))
            .map_err(|e| tracing::warn!(error = %e, "pacing is kept in memory only"))
            .ok();
        let pacing = Pacing::new(
            settings.post_burst,
            settings.post_interval,
            settings.updates_per_minute,
            pacing_store,
        );
        Arc::new(Dispatcher {
            retrier: Retrier::new(api, pacing, settings.retry_max, settings.setup_retry),
            context,
            store: Mutex::new(store),
            renderer,
            settings,
            owing: AtomicUsize::new(0),
            in_flight,
            offer,
        })
    }

    /// Records what Slack already accepted: retried (with backoff) until the disk takes
    /// it, never by asking Slack again — a post whose answer was thrown away would be
    /// posted twice.
    async fn persist(
        &self,
        key: &crate::supervisord::event::ThreadKey,
        what: &str,
        mut f: impl FnMut(&mut Store) -> Result<(), StoreError>,
    ) {
        let mut backoff = retry::Backoff::new(Duration::from_secs(5));
        let mut failed = false;
        loop {
            match self.with_store(&mut f) {
                Ok(()) => {
                    if failed {
                        tracing::info!(thread = %key, what, "recorded after all");
                    }
                    return;
                }
                Err(e) => {
                    if !failed {
                        tracing::error!(
                            thread = %key, what, error = %e,
                            "cannot record what Slack accepted; keeping Slack's answer and retrying the write (nothing is posted again)"
                        );
                        failed = true;
                    }
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.store.lock().unwrap())
    }

    /// Runs for the life of the process: one worker and one keeper per thread key,
    /// started for what the outbox already holds (after a restart) and for every
    /// wake-up.
    pub async fn run(self: Arc<Self>, wakes: Arc<Wakeup>) {
        let mut threads: HashMap<Wake, Arc<ThreadState>> = HashMap::new();
        // Claims of a process that died while delivering: those entries wait again.
        match self.with_store(|s| s.release_claims()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "entries a previous run was delivering wait again"),
            Err(e) => tracing::error!(error = %e, "cannot release earlier claims"),
        }
        let start = self.with_store(|s| s.pending_keys()).unwrap_or_else(|e| {
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
            self.clone().nudge(&mut threads, w);
        }
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                keys = wakes.take() => {
                    for w in keys {
                        self.clone().nudge(&mut threads, w);
                    }
                }
                _ = prune.tick() => {
                    if let Err(e) = self.with_store(|s| s.prune(KEEP_DELIVERED)) {
                        tracing::warn!(error = %e, "cannot prune delivered entries");
                    }
                }
            }
        }
    }

    fn nudge(self: Arc<Self>, threads: &mut HashMap<Wake, Arc<ThreadState>>, w: Wake) {
        if let Some(state) = threads.get(&w) {
            state.nudge();
            return;
        }
        let state = Arc::new(ThreadState::default());
        self.seed_flapping(&w, &state);
        threads.insert(w.clone(), state.clone());
        let (key, channel) = w;
        let keeper = self.clone();
        let (k, c, s) = (key.clone(), channel.clone(), state.clone());
        supervise("keeper", key.clone(), move || {
            keeper.clone().keeper(k.clone(), c.clone(), s.clone())
        });
        supervise("worker", key.clone(), move || {
            self.clone().worker(key.clone(), channel.clone(), state.clone())
        });
    }
}

impl Dispatcher {
    /// A new thread state starts from the transitions an earlier run saw (the outbox
    /// keeps delivered rows a day).
    fn seed_flapping(&self, w: &Wake, state: &ThreadState) {
        let rule = thread::FlapRule {
            threshold: self.settings.flap_threshold,
            window: self.settings.flap_window,
        };
        let window = chrono::Duration::from_std(rule.window).unwrap_or(chrono::Duration::MAX);
        let now = chrono::Utc::now();
        let since = now.checked_sub_signed(window).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        match self.with_store(|s| s.recent_transitions(&w.0, &w.1, since)) {
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

/// Runs a thread's task for the life of the process; a task that panics (a bug) is
/// logged and started again after a second, so that one bad moment never silences a
/// thread for good.
fn supervise<F, Fut>(what: &'static str, key: crate::supervisord::event::ThreadKey, start: F)
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
        let key = crate::supervisord::event::ThreadKey {
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
