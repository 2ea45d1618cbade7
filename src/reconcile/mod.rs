//! Reconcile: every card matches what supervisord says now. Events are not the whole
//! truth — supervisord drops the oldest when a listener's buffer is full, sends
//! nothing while the listener is stopped, and a listener added later never saw what
//! came before — so this room asks `supervisor.getAllProcessInfo` at start (once
//! supervisord answers), at once after a gap in the serials, after supervisord
//! (re)starts or changes its groups, and every minute, and compares each process with
//! the newest event the listener holds for its thread.
//!
//! A disagreement becomes an outbox entry like any event (a *reconciled* transition
//! from what the card shows to what supervisord reports), so the worker posts the
//! reply that says what was missed and the keeper edits the parent, with the same
//! order, pacing and durability as everything else. A comparison costs one XML-RPC
//! call and one read of the state database; nothing is written when all agree.
//!
//! Events still on their way (supervisord's buffer, the reader) would look like
//! disagreements: a pass waits until the reader has been quiet for a moment, and acts
//! only on what still disagrees, the same way, a few seconds later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;

use crate::routing::Routes;
use crate::store::{known, Outbox, SharedState};
use crate::supervisord::xmlrpc::{Client, ProcessInfo};
use crate::wakeup::Wakeup;

mod compare;

pub use compare::{compare, event, instance, Disagreement};
use compare::{stable, why_for};

/// Why a pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Start,
    Gap,
    SupervisordStarted,
    Timer,
    GroupAdded(String),
    GroupRemoved(String),
}

impl Why {
    fn text(&self) -> String {
        match self {
            Why::Start => "listener started".into(),
            Why::Gap => "events were dropped".into(),
            Why::SupervisordStarted => "supervisord started".into(),
            Why::Timer => "regular check".into(),
            Why::GroupAdded(g) => format!("group {g} added"),
            Why::GroupRemoved(g) => format!("group {g} removed"),
        }
    }
}

/// Shared between the stdin reader (which notices gaps, supervisord's own events and
/// when events arrive) and the reconciler. Nothing here blocks the reader.
#[derive(Default)]
pub struct Trigger {
    asked: Mutex<Vec<Why>>,
    notify: Notify,
    /// When the reader last took an event, in ms since `epoch`.
    last_event_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// Events supervisord dropped (gaps in pool serials) since the last pass.
    dropped: AtomicU64,
    /// Events the reader took.
    seen: AtomicU64,
}

impl Trigger {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    /// Asks for a pass as soon as the reconciler can.
    pub fn ask(&self, why: Why) {
        let mut asked = self.asked.lock().unwrap();
        if !asked.contains(&why) {
            asked.push(why);
        }
        drop(asked);
        self.notify.notify_one();
    }

    /// The reader took an event.
    pub fn event_seen(&self) {
        self.last_event_ms.store(self.now_ms(), Ordering::Relaxed);
        self.seen.fetch_add(1, Ordering::Relaxed);
    }

    /// How many events the reader has taken (for the board: has anything changed?).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// How long since the reader last took an event.
    pub fn quiet_for(&self) -> Duration {
        self.idle_for()
    }

    /// Waits until the reader has been idle for `quiet` (events on their way have
    /// arrived), at most `max`.
    pub async fn wait_quiet(&self, quiet: Duration, max: Duration) {
        let start = Instant::now();
        while self.idle_for() < quiet && start.elapsed() < max {
            let left = quiet.saturating_sub(self.idle_for()).min(max.saturating_sub(start.elapsed()));
            tokio::time::sleep(left.max(Duration::from_millis(10))).await;
        }
    }

    /// supervisord dropped `n` events (a gap in the pool serials).
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_event_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Duration::MAX;
        }
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    fn take(&self) -> Vec<Why> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }
}

/// How a reconciler paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between regular passes.
    pub every: Duration,
    /// Between the two looks of a pass that found a disagreement.
    pub settle: Duration,
    /// How long the reader must have been idle before a look.
    pub quiet: Duration,
    /// The longest a look waits for that.
    pub quiet_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            every: Duration::from_secs(60),
            settle: Duration::from_secs(3),
            quiet: Duration::from_millis(1000),
            quiet_max: Duration::from_secs(10),
        }
    }
}

/// Asks supervisord and corrects the cards that disagree.
pub struct Reconciler {
    pub client: Client,
    /// Its own connection to the outbox (never held across an await).
    pub outbox: Mutex<Outbox>,
    pub shared: Arc<dyn SharedState>,
    pub host: String,
    pub routes: Routes,
    pub wake: Arc<Wakeup>,
    pub trigger: Arc<Trigger>,
    pub timing: Timing,
    /// (group, process) left out: the listener's own process when it has no card.
    pub ignore: Option<(String, String)>,
    last_serial: u64,
}

impl Reconciler {
    pub fn new(
        client: Client,
        outbox: Outbox,
        shared: Arc<dyn SharedState>,
        host: String,
        routes: Routes,
        wake: Arc<Wakeup>,
        trigger: Arc<Trigger>,
    ) -> Self {
        Reconciler {
            client,
            outbox: Mutex::new(outbox),
            shared,
            host,
            routes,
            wake,
            trigger,
            timing: Timing::default(),
            ignore: None,
            last_serial: 0,
        }
    }

    /// Runs until the process ends: waits for supervisord to answer, then a pass at
    /// start, after each ask and every `timing.every`.
    pub async fn run(mut self) {
        let mut whys = vec![Why::Start];
        let mut wait = Duration::from_secs(1);
        let mut said = false;
        loop {
            match self.client.get_state().await {
                Ok(s) if s.code == 1 => break,
                Ok(s) => {
                    tracing::debug!(state = %s.name, "reconcile waits for supervisord to be RUNNING")
                }
                Err(e) if !said => {
                    said = true;
                    tracing::warn!(
                        url = %self.client.url(),
                        "reconcile is off until supervisord's XML-RPC answers: {e}. Until then cards follow events only and may miss what supervisord drops; `supervisor-slack check` says what it needs"
                    );
                }
                Err(e) => tracing::debug!("supervisord's XML-RPC still does not answer: {e}"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.timing.every);
        }
        if said {
            tracing::info!("supervisord's XML-RPC answers: reconcile is on");
        }
        loop {
            self.pass(&mut whys).await;
            whys = tokio::select! {
                _ = self.trigger.notify.notified() => self.trigger.take(),
                _ = tokio::time::sleep(self.timing.every) => vec![Why::Timer],
            };
        }
    }

    async fn look(&self) -> Option<Vec<Disagreement>> {
        self.trigger
            .wait_quiet(self.timing.quiet, self.timing.quiet_max)
            .await;
        let infos = match self.client.get_all_process_info().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("reconcile: supervisord's XML-RPC did not answer: {e}");
                return None;
            }
        };
        let infos: Vec<ProcessInfo> = infos
            .into_iter()
            .filter(|i| self.ignore.as_ref() != Some(&(i.group.clone(), i.name.clone())))
            .collect();
        let rows = self.outbox.lock().unwrap().newest_rows(&self.host);
        let latest = self.shared.latest_states(&self.host).await;
        match rows.and_then(|rows| Ok(known(rows, latest?))) {
            Ok(mut known) => {
                known.retain(|k| {
                    self.ignore.as_ref() != Some(&(k.key.group.clone(), k.key.process.clone()))
                });
                Some(compare(&self.host, &known, &infos))
            }
            Err(e) => {
                tracing::warn!("reconcile: cannot read the state database: {e}");
                None
            }
        }
    }

    /// One pass: look, and if something disagrees, look again after `settle` and
    /// correct what still disagrees the same way.
    pub async fn pass(&mut self, whys: &mut Vec<Why>) -> usize {
        self.take_asked(whys);
        let Some(first) = self.look().await else {
            return 0;
        };
        if first.is_empty() {
            tracing::debug!(?whys, "reconcile: every card matches supervisord");
            return 0;
        }
        tokio::time::sleep(self.timing.settle).await;
        let Some(second) = self.look().await else {
            return 0;
        };
        let found = stable(&first, second);
        if found.is_empty() {
            return 0;
        }
        // Asked while looking (a group removed meanwhile): said with what it caused.
        self.take_asked(whys);
        let dropped = self.trigger.dropped.swap(0, Ordering::Relaxed);
        let dropped = (dropped > 0).then_some(dropped);
        let mut corrected = 0;
        for d in &found {
            let why = why_for(d, whys);
            let serial = self.next_serial();
            let ev = event(d, &why, dropped, serial);
            // The operator's routes decide here too: a state they skip (such as a
            // routine RUNNING with `running = "after_failure"`) is not posted.
            let Some(route) = self.routes.route(&ev, d.shown.as_ref().map(|e| e.to)) else {
                tracing::debug!(thread = %d.key, supervisord = ev.to.as_str(), "reconcile: routing skips this state");
                continue;
            };
            let channel = d.channel.clone().unwrap_or(route.channel);
            tracing::info!(
                thread = %d.key, shown = ev.from.as_str(), supervisord = ev.to.as_str(), why,
                "reconcile: the card disagreed with supervisord; correcting it"
            );
            let appended =
                self.outbox
                    .lock()
                    .unwrap()
                    .append(&instance(&self.host), &channel, &ev, 0);
            match appended {
                Ok(_) => {
                    corrected += 1;
                    self.wake.wake((d.key.clone(), channel));
                }
                Err(e) => {
                    tracing::warn!(thread = %d.key, "reconcile: cannot write the correction: {e}")
                }
            }
        }
        corrected
    }

    fn take_asked(&self, whys: &mut Vec<Why>) {
        for w in self.trigger.take() {
            if !whys.contains(&w) {
                whys.push(w);
            }
        }
    }

    /// Serials of reconciled entries: microseconds since the epoch, strictly
    /// increasing (unique across restarts of the listener too).
    fn next_serial(&mut self) -> u64 {
        let now = Utc::now().timestamp_micros().max(0) as u64;
        self.last_serial = now.max(self.last_serial + 1);
        self.last_serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_collects_reasons_once() {
        let t = Trigger::default();
        t.ask(Why::Gap);
        t.ask(Why::Gap);
        t.ask(Why::Start);
        assert_eq!(t.take(), vec![Why::Gap, Why::Start]);
        assert!(t.take().is_empty());
        assert_eq!(t.idle_for(), Duration::MAX);
        t.event_seen();
        assert!(t.idle_for() < Duration::from_secs(1));
    }
}
