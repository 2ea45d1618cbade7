//! The one in-memory state of a thread while the listener runs: what its worker
//! (replies) and its keeper (the parent) share. What must outlive the process is in
//! the shared state's [`ThreadRecord`](crate::store::ThreadRecord); this holds what
//! is derived from the events seen, and what one task asks of the other.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::card::Card;
use crate::slack::Failure;
use crate::store::OutboxEntry;

/// A thread's live state.
#[derive(Default)]
pub struct ThreadState {
    /// For the worker: new entries, a note, a new parent.
    pub work: Notify,
    /// For the keeper: the parent may need an edit, or a new parent is asked for.
    pub parent: Notify,
    /// For a worker waiting for its parent: the keeper posted it, or Slack refused it.
    /// (Not `work`: new entries must not wake a worker that cannot reply yet, or it
    /// reads its whole batch again for every event of a storm.)
    pub parent_ready: Notify,
    flapping: AtomicBool,
    last_event: Mutex<Option<Instant>>,
    /// The parent card the channel shows now (as posted or last edited).
    pub shown: Mutex<Option<Card>>,
    /// How often the process changes (the worker's alone, behind a lock for sharing).
    flap: Mutex<Flap>,
    /// A new parent the worker asks of the keeper (the keeper alone posts parents).
    renew: Mutex<Option<Renew>>,
    /// Notes waiting to be posted in the thread, in order.
    notes: Mutex<VecDeque<Note>>,
    /// Slack refused the new parent for good: the worker sets its entries aside.
    refused: Mutex<Option<Failure>>,
}

/// What the worker asks of the keeper when it cannot reply under the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    /// The parent to replace (`None`: the thread has none yet).
    pub replaces: Option<String>,
    /// The thread starts over (older than `thread_ttl`): its history is emptied.
    pub start_over: bool,
}

/// A note for the thread (an action's audit, Show stderr): posted by the worker,
/// after every entry of the thread up to `after` (the thread's newest outbox entry
/// when the note was written), so that it follows what came before it.
#[derive(Debug, Clone)]
pub struct Note {
    pub card: Card,
    pub after: Option<i64>,
}

/// Recent transitions, to tell whether the process is flapping.
#[derive(Default)]
struct Flap {
    /// When each recent transition was first seen (within the flap window).
    times: VecDeque<Instant>,
    /// The newest outbox entry counted.
    seen: Option<i64>,
    last_reply: Option<Instant>,
}

/// How flapping is told: more than `threshold` transitions within `window`.
#[derive(Debug, Clone, Copy)]
pub struct FlapRule {
    pub threshold: u32,
    pub window: Duration,
}

impl ThreadState {
    /// Something new happened to the process: wake the worker and the keeper.
    pub fn nudge(&self) {
        *self.last_event.lock().unwrap() = Some(Instant::now());
        self.work.notify_one();
        self.parent.notify_one();
    }

    /// How long since the process last changed state.
    pub fn quiet(&self) -> Duration {
        self.last_event
            .lock()
            .unwrap()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }

    pub fn is_flapping(&self) -> bool {
        self.flapping.load(Ordering::SeqCst)
    }

    /// Asks the keeper for a new parent (the worker's side).
    pub fn ask_renew(&self, renew: Renew) {
        *self.renew.lock().unwrap() = Some(renew);
        self.parent.notify_one();
    }

    /// The new parent asked for, if any (the keeper's side; taken).
    pub fn take_renew(&self) -> Option<Renew> {
        self.renew.lock().unwrap().take()
    }

    /// A new parent was recorded: the worker replies under it.
    pub fn parent_posted(&self) {
        self.parent_ready.notify_one();
        self.work.notify_one();
    }

    /// Slack will not take the parent asked for (the keeper's side).
    pub fn parent_refused(&self, f: Failure) {
        *self.refused.lock().unwrap() = Some(f);
        self.parent_ready.notify_one();
        self.work.notify_one();
    }

    /// Why the parent asked for was refused, if it was (the worker's side; taken).
    pub fn take_refusal(&self) -> Option<Failure> {
        self.refused.lock().unwrap().take()
    }

    /// Queues a note for the worker.
    pub fn push_note(&self, note: Note) {
        self.notes.lock().unwrap().push_back(note);
        self.work.notify_one();
    }

    /// The next note, without taking it.
    pub fn next_note(&self) -> Option<Note> {
        self.notes.lock().unwrap().front().cloned()
    }

    /// The next note was posted (or given up on).
    pub fn pop_note(&self) {
        self.notes.lock().unwrap().pop_front();
    }

    /// Counts the entries of `batch` not seen before; when this makes the process
    /// start flapping, returns the transitions counted in the window.
    pub fn observe(&self, batch: &[OutboxEntry], rule: FlapRule) -> Option<usize> {
        let now = Instant::now();
        let mut flap = self.flap.lock().unwrap();
        let seen = flap.seen;
        for e in batch.iter().filter(|e| seen.is_none_or(|id| e.id > id)) {
            flap.times.push_back(now);
            flap.seen = Some(e.id);
        }
        while flap
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > rule.window)
        {
            flap.times.pop_front();
        }
        // Only "more than the threshold" matters: keep no more than that many.
        while flap.times.len() > rule.threshold as usize + 1 {
            flap.times.pop_front();
        }
        if !self.is_flapping() && flap.times.len() > rule.threshold as usize {
            self.flapping.store(true, Ordering::SeqCst);
            self.parent.notify_one();
            return Some(flap.times.len());
        }
        None
    }

    /// Takes up what an earlier run saw: the thread's recent transitions (when each
    /// happened) up to outbox entry `seen`, so that a process that flapped before a
    /// restart is still flapping after it.
    pub fn seed(&self, times: &[Duration], seen: Option<i64>, rule: FlapRule) {
        let now = Instant::now();
        let mut flap = self.flap.lock().unwrap();
        flap.times = times
            .iter()
            .filter(|ago| **ago <= rule.window)
            .filter_map(|ago| now.checked_sub(*ago))
            .collect();
        flap.times.make_contiguous().sort();
        while flap.times.len() > rule.threshold as usize + 1 {
            flap.times.pop_front();
        }
        flap.seen = seen;
        if flap.times.len() > rule.threshold as usize {
            self.flapping.store(true, Ordering::SeqCst);
        }
        // Quiet since the newest transition, not since forever: a process seeded as
        // flapping does not settle at once.
        if let Some(newest) = flap.times.back().copied() {
            *self.last_event.lock().unwrap() = Some(newest);
        }
    }

    /// The flapping episode is over.
    pub fn settle(&self) {
        self.flap.lock().unwrap().times.clear();
        self.flapping.store(false, Ordering::SeqCst);
        self.parent.notify_one();
    }

    /// A reply went out (digests are spaced from it).
    pub fn replied(&self) {
        self.flap.lock().unwrap().last_reply = Some(Instant::now());
        self.parent.notify_one();
    }

    /// How long since the last reply.
    pub fn since_reply(&self) -> Duration {
        self.flap
            .lock()
            .unwrap()
            .last_reply
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }
}
