//! One event, from its bytes to the outbox: typed, deduplicated, routed, committed —
//! or held in memory while the disk refuses writes.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::instance::{instance_id, GapTracker, RecentSerials};
use crate::reconcile::{Trigger, Why};
use crate::routing::Router;
use crate::store::{Appended, Outbox, StoreError};
use crate::supervisord::event::{self, Event, OtherEvent, ProcessState, State};
use crate::supervisord::protocol::{self, RawEvent};
use crate::wakeup::Wakeup;

/// An event that could not be committed (disk full, read-only, locked): kept in memory
/// and written as soon as the disk recovers.
struct Held {
    instance: String,
    channel: String,
    event: ProcessState,
    dropped_before: u64,
}

/// Events held in memory while the disk refuses writes. Beyond this the oldest are
/// dropped (loudly): memory must stay bounded too.
pub const HELD_MAX: usize = 100_000;

/// The part of the listener that handles one event: typed, deduplicated, committed.
pub struct Handler {
    pub host: String,
    pub store: Option<Outbox>,
    pub store_path: std::path::PathBuf,
    pub router: Box<dyn Router>,
    pub wake: Option<Arc<Wakeup>>,
    /// Tells reconcile about gaps, supervisord's own changes and when events arrive.
    pub reconcile: Option<Arc<Trigger>>,
    /// The listener's own (group, process), from `SUPERVISOR_GROUP_NAME` /
    /// `SUPERVISOR_PROCESS_NAME`: its events get no card (unless `own_card`).
    pub own: Option<(String, String)>,
    /// supervisord's own state as last seen, for its thread's transitions.
    supervisord_state: Option<State>,
    /// An event was taken but not stored: the pool serials are saved after the answer.
    serials_unsaved: bool,
    recent: RecentSerials,
    gaps: GapTracker,
    held: HeldEvents,
    last_reopen: Option<Instant>,
    /// Waiting entries beyond which events are folded (see [`Outbox::coalesce`]).
    pub outbox_cap: u64,
    full_reported: bool,
}

impl Handler {
    pub fn new(
        host: String,
        store: Option<Outbox>,
        store_path: std::path::PathBuf,
        router: Box<dyn Router>,
        wake: Option<Arc<Wakeup>>,
    ) -> Self {
        let held = HeldEvents::new(store_path.clone());
        Self {
            host,
            store,
            store_path,
            router,
            wake,
            reconcile: None,
            own: None,
            supervisord_state: None,
            serials_unsaved: false,
            recent: RecentSerials::new(4096),
            gaps: GapTracker::default(),
            held,
            last_reopen: None,
            outbox_cap: 100_000,
            full_reported: false,
        }
    }

    /// Whether the outbox holds `outbox_cap` waiting entries or more, by the count
    /// kept up to date after answers (never counted before an answer).
    fn outbox_full(&mut self) -> bool {
        let full = self
            .store
            .as_ref()
            .is_some_and(|s| s.is_full(self.outbox_cap));
        if full != self.full_reported {
            self.full_reported = full;
            if full {
                tracing::error!(
                    cap = self.outbox_cap,
                    "the outbox is full (Slack has not taken events for a long while): new events now replace the newest waiting event of their process, and cards say how many were folded"
                );
            } else {
                tracing::info!("the outbox has room again: every event is kept");
            }
        }
        full
    }

    /// Handles one well-framed event. Never fails: whatever goes wrong is logged and
    /// the event is answered OK (a rejection would make supervisord resend it in a
    /// hot loop).
    pub fn handle(&mut self, raw: &RawEvent) {
        let name = raw.header.event_name();
        if let Some(t) = &self.reconcile {
            t.event_seen();
        }
        if let (Some(pool), Some(ps)) = (raw.header.get("pool"), raw.header.number("poolserial")) {
            let gap = self.gaps.observe(pool, ps);
            if gap > 0 {
                tracing::warn!(
                    pool, poolserial = ps, dropped = gap,
                    "{gap} events dropped by supervisord (its event buffer overflowed); raise buffer_size in [eventlistener:...]"
                );
                if let Some(t) = &self.reconcile {
                    t.dropped(gap);
                    t.ask(Why::Gap);
                }
            }
        }
        let event = match event::parse(raw, &self.host, Utc::now()) {
            Ok(Event::ProcessState(ps)) => ps,
            Ok(Event::Other(o)) => match self.other(&o, raw) {
                Some(ps) => ps,
                None => {
                    self.serials_unsaved = true;
                    return;
                }
            },
            Err(e) => {
                tracing::error!(
                    eventname = name, serial = raw.header.get("serial").unwrap_or("?"),
                    payload = %protocol::show_bytes(raw.payload.as_bytes()),
                    "cannot read this process-state event: {e}"
                );
                return;
            }
        };
        tracing::info!(
            serial = event.serial, eventname = name, group = %event.group, process = %event.process,
            from = %event.from, to = %event.to, "received event"
        );
        let instance = instance_id(&event.server);
        if self.recent.check_and_insert(&instance, event.serial) {
            tracing::info!(
                serial = event.serial,
                "dropped a duplicate: supervisord sent this serial before"
            );
            return;
        }
        if self
            .own
            .as_ref()
            .is_some_and(|(g, p)| *g == event.group && *p == event.process)
        {
            tracing::debug!("the listener's own process: no card (own_card = true shows it)");
            self.serials_unsaved = true;
            return;
        }
        let Some(channel) = self.router.channel_for(&event) else {
            tracing::debug!(group = %event.group, process = %event.process, "no channel for this event (routing)");
            self.serials_unsaved = true;
            return;
        };
        let dropped_before = self.gaps.take();
        self.held.queue.lock().unwrap().push_back(Held {
            instance,
            channel,
            event,
            dropped_before,
        });
        self.flush();
    }

    /// An event that is not a process's: supervisord's own state becomes a transition
    /// of the host's supervisord thread; a group added or removed asks reconcile to
    /// say so in the group's threads; the rest is ignored.
    fn other(&mut self, o: &OtherEvent, raw: &RawEvent) -> Option<ProcessState> {
        if let Some(to) = o.supervisor_state() {
            let from = self.supervisord_state.unwrap_or(match to {
                State::Running => State::Stopped,
                _ => State::Running,
            });
            self.supervisord_state = Some(to);
            tracing::info!(eventname = %o.name, "supervisord is {}", if to == State::Running { "running" } else { "stopping" });
            if to == State::Running {
                if let Some(t) = &self.reconcile {
                    t.ask(Why::SupervisordStarted);
                }
            }
            return Some(ProcessState {
                host: self.host.clone(),
                server: raw.header.get("server").unwrap_or("").to_string(),
                serial: o.serial(),
                pool: raw.header.get("pool").unwrap_or("").to_string(),
                poolserial: raw.header.number("poolserial").unwrap_or(0),
                group: event::SUPERVISORD_GROUP.to_string(),
                process: event::SUPERVISORD_PROCESS.to_string(),
                from,
                to,
                pid: None,
                tries: None,
                expected: None,
                at: Utc::now(),
                extra: Vec::new(),
                reconciled: None,
            });
        }
        if let Some(g) = o.group_change() {
            tracing::info!(group = %g.group, added = g.added, "supervisord's configuration changed");
            if let Some(t) = &self.reconcile {
                t.ask(if g.added { Why::GroupAdded(g.group) } else { Why::GroupRemoved(g.group) });
            }
            return None;
        }
        tracing::debug!(eventname = %o.name, "ignoring an event that is not a process state change");
        None
    }

    /// Starts gap counting where the events stored by this supervisord's earlier
    /// listeners stopped, so that events dropped while the listener was down are
    /// noticed too.
    pub fn seed_gaps(&mut self, serials: &[(String, u64)]) {
        for (pool, s) in serials {
            self.gaps.observe(pool, *s);
        }
        self.gaps.take();
    }

    /// Writes held events to the outbox, oldest first. On failure they stay held.
    fn flush(&mut self) {
        if self.store.is_none() {
            self.reopen();
        }
        let queue = self.held.queue.clone();
        let mut held = queue.lock().unwrap();
        while !held.is_empty() {
            let full = self.outbox_full();
            let (Some(h), Some(store)) = (held.front(), self.store.as_mut()) else {
                break;
            };
            let result = if full {
                store.coalesce(&h.instance, &h.channel, &h.event, h.dropped_before)
            } else {
                store.append(&h.instance, &h.channel, &h.event, h.dropped_before)
            };
            match result {
                Ok(Appended::Inserted(_)) | Ok(Appended::Coalesced(_)) => {
                    if let Some(w) = &self.wake {
                        w.wake((h.event.thread_key(), h.channel.clone()));
                    }
                    held.pop_front();
                }
                Ok(Appended::Duplicate) => {
                    tracing::info!(
                        serial = h.event.serial,
                        "dropped a duplicate: already in the outbox"
                    );
                    held.pop_front();
                }
                Err(e) => {
                    self.disk_trouble(held.len(), &e);
                    break;
                }
            }
        }
        if held.len() > HELD_MAX {
            let n = held.len() - HELD_MAX;
            let lost: Vec<u64> = held.drain(..n).map(|h| h.event.serial).collect();
            tracing::error!(
                dropped = n, first_serial = lost.first(), last_serial = lost.last(),
                "the state database has refused writes for a long time: dropped the {n} oldest events held in memory"
            );
        }
    }

    fn disk_trouble(&mut self, held: usize, e: &StoreError) {
        tracing::error!(
            held, error = %e,
            "cannot write to the state database; holding events in memory and answering supervisord anyway; they are written when the disk recovers (check free space and permissions)"
        );
        // A read-only remount or a deleted file needs a fresh connection.
        self.store = None;
    }

    fn reopen(&mut self) {
        if self
            .last_reopen
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_reopen = Some(Instant::now());
        match Outbox::for_reader(&self.store_path) {
            Ok(s) => {
                tracing::info!(path = %self.store_path.display(), "state database is writable again");
                self.store = Some(s);
            }
            Err(e) => tracing::debug!(error = %e, "state database still unavailable"),
        }
    }

    /// Retries held events (called when idle too, so they do not wait for the next
    /// event).
    pub fn retry_held(&mut self) {
        if !self.held.is_empty() {
            self.flush();
        }
    }

    /// The last chance before the process exits (stdin closed): writes what is held
    /// if the disk takes it now, otherwise says how many events and which serials are
    /// lost.
    pub fn last_words(&mut self) {
        self.held.last_words(self.store.as_mut());
    }

    /// The held events, for the signal watcher's last chance (see
    /// [`HeldEvents::last_words`]).
    pub fn held_events(&self) -> HeldEvents {
        self.held.clone()
    }

    /// Whether [`Handler::after_answer`] has work to do now.
    pub fn after_answer_due(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| self.serials_unsaved || s.upkeep_due())
    }

    /// Called after an answer, before asking for the next event: the outbox's upkeep
    /// (a checkpoint now and then, a recount for the cap), and where the pool serials
    /// stand when an event was taken but not stored. Done here, none of it delays an
    /// answer.
    pub fn after_answer(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        store.after_answer();
        if std::mem::take(&mut self.serials_unsaved) {
            if let Err(e) = store.save_poolserials(super::parent_identity(), &self.gaps.positions()) {
                tracing::debug!(error = %e, "cannot save where the pool serials stand");
            }
        }
    }

    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

/// Events held in memory while the disk refuses writes. Shared with the signal
/// watcher: SIGTERM may come while the reader waits on stdin, and the held events
/// must still get their last chance.
#[derive(Clone)]
pub struct HeldEvents {
    queue: Arc<Mutex<VecDeque<Held>>>,
    store_path: PathBuf,
}

impl HeldEvents {
    fn new(store_path: PathBuf) -> Self {
        HeldEvents {
            queue: Arc::default(),
            store_path,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what is held to the outbox (through `store`, else a fresh connection),
    /// right now; what cannot be written is logged with its count and serials, so that
    /// nothing vanishes without a word.
    pub fn last_words(&self, store: Option<&mut Outbox>) {
        let mut held = self.queue.lock().unwrap();
        if held.is_empty() {
            return;
        }
        let mut fresh;
        let store = match store {
            Some(s) => Some(s),
            None => {
                fresh = Outbox::open(&self.store_path).ok();
                fresh.as_mut()
            }
        };
        let mut written = 0;
        let mut error = None;
        if let Some(store) = store {
            while let Some(h) = held.front() {
                match store.append(&h.instance, &h.channel, &h.event, h.dropped_before) {
                    Ok(_) => {
                        held.pop_front();
                        written += 1;
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        } else {
            error = Some(format!("cannot open {}", self.store_path.display()));
        }
        if written > 0 {
            tracing::info!(written, "wrote the events held in memory before exiting");
        }
        if !held.is_empty() {
            let serials: Vec<u64> = held.iter().map(|h| h.event.serial).collect();
            tracing::error!(
                lost = held.len(), ?serials, error = error.as_deref().unwrap_or("unknown"),
                "exiting with events the state database never took: they were answered but will not reach Slack"
            );
        }
    }
}

