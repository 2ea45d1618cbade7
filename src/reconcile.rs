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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::Notify;

use crate::routing::Routes;
use crate::store::{Known, Store};
use crate::supervisord::event::{ProcessState, Reconciled, State, ThreadKey};
use crate::supervisord::xmlrpc::{Client, ProcessInfo};
use crate::wakeup::Wakeup;

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

/// A thread whose card disagrees with supervisord.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub key: ThreadKey,
    /// The channel of the thread; `None` for a process the channel has never seen
    /// (routing decides).
    pub channel: Option<String>,
    /// What the card shows (`None`: never seen).
    pub shown: Option<ProcessState>,
    /// What supervisord reports (`Removed`: not configured any more).
    pub now: State,
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    pub description: String,
    pub exitstatus: i64,
}

/// Whether a process never seen by the channel needs a card: it is failing now.
fn failing_unseen(state: State, exitstatus: i64) -> bool {
    match state {
        State::Fatal | State::Backoff | State::Unknown => true,
        State::Exited => exitstatus != 0,
        _ => false,
    }
}

/// When supervisord says the process entered its current state.
fn since(info: &ProcessInfo, state: State) -> Option<DateTime<Utc>> {
    let t = match state {
        State::Starting | State::Running | State::Backoff => info.start,
        _ => info.stop,
    };
    (t > 0).then(|| Utc.timestamp_opt(t, 0).single()).flatten()
}

/// Compares what the channel shows for `host` with what supervisord reports.
pub fn compare(host: &str, known: &[Known], infos: &[ProcessInfo]) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let mut by_key: HashMap<ThreadKey, &ProcessInfo> = HashMap::new();
    for info in infos {
        let key = ThreadKey {
            host: host.to_string(),
            group: info.group.clone(),
            process: info.name.clone(),
        };
        by_key.insert(key, info);
    }
    let mut seen: HashSet<&ThreadKey> = HashSet::new();
    for k in known {
        if k.event.is_supervisord() {
            continue;
        }
        seen.insert(&k.key);
        match by_key.get(&k.key) {
            Some(info) => {
                let Some(state) = info.state() else { continue };
                if state != k.event.to {
                    out.push(Disagreement {
                        key: k.key.clone(),
                        channel: Some(k.channel.clone()),
                        shown: Some(k.event.clone()),
                        now: state,
                        pid: u32::try_from(info.pid).ok().filter(|p| *p > 0),
                        since: since(info, state),
                        description: info.description.clone(),
                        exitstatus: info.exitstatus,
                    });
                }
            }
            None if k.event.to != State::Removed => out.push(Disagreement {
                key: k.key.clone(),
                channel: Some(k.channel.clone()),
                shown: Some(k.event.clone()),
                now: State::Removed,
                pid: None,
                since: None,
                description: String::new(),
                exitstatus: 0,
            }),
            None => {}
        }
    }
    for (key, info) in &by_key {
        if seen.contains(key) {
            continue;
        }
        let Some(state) = info.state() else { continue };
        if failing_unseen(state, info.exitstatus) {
            out.push(Disagreement {
                key: key.clone(),
                channel: None,
                shown: None,
                now: state,
                pid: u32::try_from(info.pid).ok().filter(|p| *p > 0),
                since: since(info, state),
                description: info.description.clone(),
                exitstatus: info.exitstatus,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Keeps what both looks found the same way (the same state, since the same time):
/// anything else was a change on its way.
fn stable(first: &[Disagreement], second: Vec<Disagreement>) -> Vec<Disagreement> {
    second
        .into_iter()
        .filter(|d| {
            first.iter().any(|f| {
                f.key == d.key
                    && f.now == d.now
                    && f.since == d.since
                    && f.shown.as_ref().map(|e| (e.to, e.serial))
                        == d.shown.as_ref().map(|e| (e.to, e.serial))
            })
        })
        .collect()
}

/// The instance name of reconciled entries in the outbox (their serials are this
/// listener's own).
pub fn instance(host: &str) -> String {
    format!("reconcile/{host}")
}

/// The reconciled transition for a disagreement.
pub fn event(d: &Disagreement, why: &str, dropped: Option<u64>, serial: u64) -> ProcessState {
    let from = d.shown.as_ref().map_or(State::Unknown, |e| e.to);
    let expected = match d.now {
        State::Exited if d.exitstatus == 0 => Some(true),
        _ => None,
    };
    ProcessState {
        host: d.key.host.clone(),
        server: d
            .shown
            .as_ref()
            .map(|e| e.server.clone())
            .unwrap_or_default(),
        serial,
        pool: "reconcile".into(),
        poolserial: 0,
        group: d.key.group.clone(),
        process: d.key.process.clone(),
        from,
        to: d.now,
        pid: d.pid,
        tries: None,
        expected,
        at: Utc::now(),
        extra: Vec::new(),
        reconciled: Some(Reconciled {
            why: why.to_string(),
            since: d.since,
            dropped,
            description: d.description.clone(),
            first_seen: d.shown.is_none(),
        }),
    }
}

/// Asks supervisord and corrects the cards that disagree.
pub struct Reconciler {
    pub client: Client,
    /// Its own connection (never held across an await).
    pub store: Mutex<Store>,
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
        store: Store,
        host: String,
        routes: Routes,
        wake: Arc<Wakeup>,
        trigger: Arc<Trigger>,
    ) -> Self {
        Reconciler {
            client,
            store: Mutex::new(store),
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

    async fn wait_quiet(&self) {
        let start = Instant::now();
        while self.trigger.idle_for() < self.timing.quiet && start.elapsed() < self.timing.quiet_max
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn look(&self) -> Option<Vec<Disagreement>> {
        self.wait_quiet().await;
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
        let known = self.store.lock().unwrap().known_states(&self.host);
        match known {
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
                self.store
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

/// The reason said in a thread: the group change that concerns it, else the reasons
/// of the pass.
fn why_for(d: &Disagreement, whys: &[Why]) -> String {
    let own = whys.iter().find(|w| match w {
        Why::GroupRemoved(g) => *g == d.key.group && d.now == State::Removed,
        Why::GroupAdded(g) => *g == d.key.group && d.now != State::Removed,
        _ => false,
    });
    match own {
        Some(w) => w.text(),
        None => {
            let general: Vec<String> = whys
                .iter()
                .filter(|w| !matches!(w, Why::GroupAdded(_) | Why::GroupRemoved(_)))
                .map(Why::text)
                .collect();
            if general.is_empty() {
                whys.first()
                    .map(Why::text)
                    .unwrap_or_else(|| Why::Timer.text())
            } else {
                general.join(", ")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, name: &str, state: &str, exitstatus: i64) -> ProcessInfo {
        ProcessInfo {
            name: name.into(),
            group: group.into(),
            statename: state.into(),
            start: 1_700_000_000,
            stop: 1_700_000_100,
            exitstatus,
            pid: if state == "RUNNING" { 42 } else { 0 },
            ..Default::default()
        }
    }

    fn known(group: &str, name: &str, to: State) -> Known {
        let key = ThreadKey {
            host: "web-1".into(),
            group: group.into(),
            process: name.into(),
        };
        let d = Disagreement {
            key: key.clone(),
            channel: None,
            shown: None,
            now: to,
            pid: None,
            since: None,
            description: String::new(),
            exitstatus: 0,
        };
        let mut event = event(&d, "x", None, 1);
        event.reconciled = None;
        Known {
            key,
            channel: "#ops".into(),
            event,
        }
    }

    #[test]
    fn agreeing_cards_give_nothing() {
        let k = vec![known("a", "a", State::Running)];
        assert!(compare("web-1", &k, &[info("a", "a", "RUNNING", 0)]).is_empty());
    }

    #[test]
    fn a_card_that_disagrees_is_corrected_with_supervisords_state_and_time() {
        let k = vec![known("a", "a", State::Running)];
        let d = compare("web-1", &k, &[info("a", "a", "STOPPED", 0)]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].now, State::Stopped);
        assert_eq!(d[0].channel.as_deref(), Some("#ops"));
        assert_eq!(d[0].since.unwrap().timestamp(), 1_700_000_100);
        let ev = event(&d[0], "listener started", Some(27), 9);
        assert_eq!((ev.from, ev.to), (State::Running, State::Stopped));
        assert_eq!(ev.reconciled.as_ref().unwrap().dropped, Some(27));
    }

    #[test]
    fn unseen_processes_get_a_card_only_when_failing() {
        let infos = [
            info("a", "ok", "RUNNING", 0),
            info("a", "done", "EXITED", 0),
            info("a", "crashed", "EXITED", 3),
            info("b", "b", "FATAL", 0),
            info("c", "c", "BACKOFF", 0),
            info("d", "d", "STOPPED", 0),
        ];
        let d = compare("web-1", &[], &infos);
        let names: Vec<&str> = d.iter().map(|d| d.key.process.as_str()).collect();
        assert_eq!(names, ["crashed", "b", "c"]);
        assert!(d.iter().all(|d| d.channel.is_none() && d.shown.is_none()));
        assert!(event(&d[0], "x", None, 1).reconciled.unwrap().first_seen);
    }

    #[test]
    fn a_process_supervisord_no_longer_has_is_removed_once() {
        let k = vec![known("gone", "gone", State::Stopped)];
        let d = compare("web-1", &k, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].now, State::Removed);
        let k = vec![known("gone", "gone", State::Removed)];
        assert!(compare("web-1", &k, &[]).is_empty());
    }

    #[test]
    fn supervisords_own_thread_is_not_a_process() {
        let mut k = known("", "supervisord", State::Running);
        k.event.group = String::new();
        k.key.group = String::new();
        assert!(compare("web-1", &[k], &[]).is_empty());
    }

    #[test]
    fn only_what_disagrees_the_same_way_twice_is_corrected() {
        let k = vec![
            known("a", "a", State::Running),
            known("b", "b", State::Running),
        ];
        let first = compare(
            "web-1",
            &k,
            &[info("a", "a", "STOPPED", 0), info("b", "b", "STOPPED", 0)],
        );
        let mut b_restarted = info("b", "b", "STARTING", 0);
        b_restarted.start += 5;
        let second = compare("web-1", &k, &[info("a", "a", "STOPPED", 0), b_restarted]);
        let kept = stable(&first, second);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key.process, "a");
    }

    #[test]
    fn the_reason_is_the_groups_own_change_when_there_is_one() {
        let k = vec![known("gone", "gone", State::Stopped)];
        let d = compare("web-1", &k, &[]);
        let whys = [
            Why::GroupAdded("gone".into()),
            Why::Timer,
            Why::GroupRemoved("gone".into()),
        ];
        assert_eq!(why_for(&d[0], &whys), "group gone removed");
        assert_eq!(
            why_for(&d[0], &[Why::Start, Why::Gap]),
            "listener started, events were dropped"
        );
    }

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
