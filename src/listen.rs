//! The `listen` command: the loop supervisord talks to.
//!
//! stdin is read on a plain thread. For each event it commits the event to the
//! outbox, answers `RESULT 2\nOK`, and nudges the dispatcher — it never waits on the
//! network, so supervisord is never slowed down by Slack. The dispatcher runs on
//! tokio and delivers from the outbox at its own pace.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read as IoRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::supervisord::event::{self, Event, ProcessState, ThreadKey};
use crate::supervisord::protocol::{self, EventReader, RawEvent, Read};
use crate::store::{Appended, Store, StoreError};

/// A nudge to the dispatcher: this thread has new outbox entries.
pub type Wake = (ThreadKey, String);

/// Wake-ups from the stdin reader to the dispatcher: the set of threads with new
/// entries since the dispatcher last looked. A set, not a queue: however far the
/// delivery side falls behind, memory is bounded by the number of processes, not by
/// the number of events.
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

/// Which supervisord instance is talking to us: its `server` name and its pid (our
/// parent). Serials restart at 0 with a new supervisord, never within one (a reload
/// keeps the process and the counter).
pub fn instance_id(server: &str) -> String {
    #[cfg(unix)]
    let ppid = std::os::unix::process::parent_id();
    #[cfg(not(unix))]
    let ppid = 0;
    format!("{server}/{ppid}")
}

/// Remembers the last few thousand serials to drop events supervisord sent twice
/// (a resend after a rejection can reach several pools). Bounded memory.
pub struct RecentSerials {
    order: VecDeque<(String, u64)>,
    seen: HashSet<(String, u64)>,
    cap: usize,
}

impl RecentSerials {
    pub fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(cap),
            seen: HashSet::with_capacity(cap),
            cap,
        }
    }

    /// `true` when (instance, serial) was seen before; records it otherwise.
    pub fn check_and_insert(&mut self, instance: &str, serial: u64) -> bool {
        let key = (instance.to_string(), serial);
        if self.seen.contains(&key) {
            return true;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.seen.insert(key);
        false
    }
}

/// Notices gaps in `poolserial`: events supervisord discarded because its buffer was
/// full. The count is carried to the next process-state event so its card can say so.
#[derive(Default)]
pub struct GapTracker {
    last: HashMap<String, u64>,
    /// Dropped events not yet attached to a card.
    owed: u64,
}

impl GapTracker {
    /// Records an event's pool serial; returns how many events were skipped before it.
    pub fn observe(&mut self, pool: &str, poolserial: u64) -> u64 {
        let gap = match self.last.get(pool) {
            Some(&last) if poolserial > last + 1 => poolserial - last - 1,
            _ => 0,
        };
        // A lower number means supervisord restarted its count: start over.
        self.last.insert(pool.to_string(), poolserial);
        self.owed += gap;
        gap
    }

    /// Takes the owed count (to attach it to an event that is being stored).
    pub fn take(&mut self) -> u64 {
        std::mem::take(&mut self.owed)
    }
}

/// Routing: which channel an event goes to. (One channel for now; routing rules come
/// from the settings.)
pub trait Router: Send {
    fn channel_for(&self, event: &ProcessState) -> Option<String>;
}

/// Every event to one channel.
pub struct OneChannel(pub String);

impl Router for OneChannel {
    fn channel_for(&self, _: &ProcessState) -> Option<String> {
        Some(self.0.clone())
    }
}

/// An event that could not be committed (disk full, read-only, locked): kept in memory
/// and written as soon as the disk recovers.
struct Held {
    instance: String,
    channel: String,
    event: ProcessState,
    dropped_before: u64,
}

/// Commits between two WAL checkpoints (about 4 pages each: a WAL of ~3 MB at most).
pub const CHECKPOINT_EVERY: u32 = 200;

/// Events held in memory while the disk refuses writes. Beyond this the oldest are
/// dropped (loudly): memory must stay bounded too.
pub const HELD_MAX: usize = 100_000;

/// The part of the listener that handles one event: typed, deduplicated, committed.
pub struct Handler {
    pub host: String,
    pub store: Option<Store>,
    pub store_path: std::path::PathBuf,
    pub router: Box<dyn Router>,
    pub wake: Option<Arc<Wakeup>>,
    recent: RecentSerials,
    gaps: GapTracker,
    held: VecDeque<Held>,
    last_reopen: Option<Instant>,
    /// Waiting entries beyond which events are folded (see [`Store::coalesce`]).
    pub outbox_cap: u64,
    /// Waiting entries, as last counted plus what was added since; recounted now and
    /// then because the dispatcher removes entries through its own connection.
    pending: Option<u64>,
    appended_since_count: u32,
    appended_since_checkpoint: u32,
    full_reported: bool,
}

impl Handler {
    pub fn new(
        host: String,
        store: Option<Store>,
        store_path: std::path::PathBuf,
        router: Box<dyn Router>,
        wake: Option<Arc<Wakeup>>,
    ) -> Self {
        Self {
            host,
            store,
            store_path,
            router,
            wake,
            recent: RecentSerials::new(4096),
            gaps: GapTracker::default(),
            held: VecDeque::new(),
            last_reopen: None,
            outbox_cap: 100_000,
            pending: None,
            appended_since_count: 0,
            appended_since_checkpoint: 0,
            full_reported: false,
        }
    }

    /// Whether the outbox holds `outbox_cap` waiting entries or more, by the count
    /// kept up to date in [`Handler::after_answer`] (never counted before an answer).
    fn outbox_full(&mut self) -> bool {
        let full = self.pending.is_some_and(|n| n >= self.outbox_cap);
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
        if let (Some(pool), Some(ps)) = (raw.header.get("pool"), raw.header.number("poolserial")) {
            let gap = self.gaps.observe(pool, ps);
            if gap > 0 {
                tracing::warn!(
                    pool, poolserial = ps, dropped = gap,
                    "{gap} events dropped by supervisord (its event buffer overflowed); raise buffer_size in [eventlistener:...]"
                );
            }
        }
        let event = match event::parse(raw, &self.host, Utc::now()) {
            Ok(Event::ProcessState(ps)) => ps,
            Ok(Event::Other(o)) => {
                tracing::debug!(eventname = %o.name, "ignoring an event that is not a process state change");
                return;
            }
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
        let Some(channel) = self.router.channel_for(&event) else {
            tracing::debug!(group = %event.group, process = %event.process, "no channel for this event (routing)");
            return;
        };
        let dropped_before = self.gaps.take();
        self.held.push_back(Held {
            instance,
            channel,
            event,
            dropped_before,
        });
        self.flush();
    }

    /// Writes held events to the outbox, oldest first. On failure they stay held.
    fn flush(&mut self) {
        if self.store.is_none() {
            self.reopen();
        }
        while !self.held.is_empty() {
            let full = self.outbox_full();
            let (Some(h), Some(store)) = (self.held.front(), self.store.as_mut()) else {
                break;
            };
            let result = if full {
                store.coalesce(&h.instance, &h.channel, &h.event, h.dropped_before)
            } else {
                store.append(&h.instance, &h.channel, &h.event, h.dropped_before)
            };
            match result {
                Ok(Appended::Inserted(_)) | Ok(Appended::Coalesced(_)) => {
                    self.appended_since_count += 1;
                    self.appended_since_checkpoint += 1;
                    if let Some(n) = self.pending.as_mut() {
                        *n += 1;
                    }
                    if let Some(w) = &self.wake {
                        w.wake((h.event.thread_key(), h.channel.clone()));
                    }
                    self.held.pop_front();
                }
                Ok(Appended::Duplicate) => {
                    tracing::info!(
                        serial = h.event.serial,
                        "dropped a duplicate: already in the outbox"
                    );
                    self.held.pop_front();
                }
                Err(e) => {
                    self.disk_trouble(&e);
                    break;
                }
            }
        }
        if self.held.len() > HELD_MAX {
            let n = self.held.len() - HELD_MAX;
            self.held.drain(..n);
            tracing::error!(dropped = n, "the state database has refused writes for a long time: dropped the {n} oldest events held in memory");
        }
    }

    fn disk_trouble(&mut self, e: &StoreError) {
        tracing::error!(
            held = self.held.len(), error = %e,
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
        match Store::open(&self.store_path).and_then(Store::without_autocheckpoint) {
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

    /// Called after an answer, before asking for the next event: every
    /// [`CHECKPOINT_EVERY`] commits, folds the WAL into the database. Done here, the
    /// checkpoint's fsyncs never delay an answer, and since this connection is the
    /// writer the checkpoint completes and the WAL stays small (a checkpoint from
    /// another connection never catches up with a steady writer).
    /// It also recounts the waiting entries now and then (the dispatcher removes
    /// them through its own connection), for the outbox cap.
    pub fn after_answer(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if self.pending.is_none() || self.appended_since_count >= 1000 {
            self.pending = store.pending_count().ok();
            self.appended_since_count = 0;
        }
        if self.appended_since_checkpoint >= CHECKPOINT_EVERY {
            self.appended_since_checkpoint = 0;
            if let Err(e) = store.checkpoint() {
                tracing::warn!(error = %e, "cannot checkpoint the state database");
            }
        }
    }

    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

/// Shared between the reader and the signal watcher.
#[derive(Default)]
pub struct Lifecycle {
    /// An event is in hand (between its first byte and its answer).
    pub busy: AtomicBool,
    /// SIGTERM/SIGINT arrived: finish the event in hand, then stop.
    pub stopping: AtomicBool,
}

/// The protocol loop: READY, read, handle, answer, repeat until EOF or stop. Bad
/// input is reported on stderr, answered OK, and reading goes on.
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
            handler.retry_held();
            return Ok(());
        }
        life.busy.store(true, Ordering::SeqCst);
        match reader.next_event()? {
            Read::Eof => return Ok(()),
            Read::Event(raw) => handler.handle(&raw),
            Read::Bad(e) if e.needs_answer() => {
                tracing::error!("bad input from supervisord: {e}; answering OK and reading on");
            }
            Read::Bad(e) => {
                tracing::error!("{e}; exiting");
                handler.retry_held();
                return Ok(());
            }
        }
        protocol::write_ok(out)?;
        handler.after_answer();
        life.busy.store(false, Ordering::SeqCst);
        if life.stopping.load(Ordering::SeqCst) {
            tracing::info!("stopping after answering the event in hand");
            return Ok(());
        }
        protocol::write_ready(out)?;
    }
}

/// Watches SIGTERM/SIGINT: lets an event in hand be answered, then exits the process
/// (the reader may be blocked on stdin, which cannot be interrupted portably).
pub fn watch_signals(life: Arc<Lifecycle>) -> io::Result<()> {
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
                std::process::exit(0);
            }
        })?;
    Ok(())
}
