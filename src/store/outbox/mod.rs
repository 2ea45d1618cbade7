//! The outbox: events committed before supervisord is answered, waiting for
//! delivery. Local and synchronous, in the state database (SQLite, WAL) beside the
//! one-host shared state; it never moves to the network, in a fleet either.
//!
//! Two connections use it: the stdin reader appends (and must commit before it
//! answers supervisord: [`Outbox::for_reader`] tunes its connection for that), the
//! delivery side reads waiting entries, claims and marks them ([`delivery`]).
//! Rows are kept a day after delivery, so that a resend is recognised; what they
//! remember of recent events is read back at start ([`recent`]).

use std::path::Path;

use rusqlite::params;

use super::db::Db;
use super::StoreError;
use crate::supervisord::event::ProcessState;

mod delivery;
mod recent;

pub use delivery::{OutboxEntry, SetAside, WaitingView};
pub use recent::NewestRow;

/// Commits between two WAL checkpoints of the reader (about 4 pages each). The WAL
/// restarts from its beginning only when no delivery-side read holds an older
/// snapshot, so under a steady load it grows to a few MB (4-15 MB in a 20,000-event
/// run); it is emptied at exit ([`crate::store::at_exit`]).
pub const CHECKPOINT_EVERY: u32 = 200;

/// Commits between two counts of the waiting entries (for the outbox cap).
const RECOUNT_EVERY: u32 = 1000;

/// What `append` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Inserted(i64),
    /// Same (instance, serial) already stored: supervisord resent it.
    Duplicate,
    /// The outbox was full: the event replaced the thread's newest waiting entry
    /// (whose transition is counted in `coalesced`).
    Coalesced(i64),
}

/// One connection to the outbox.
pub struct Outbox {
    db: Db,
    /// The reader's upkeep after answers: commits since the last checkpoint and
    /// count, and the waiting entries as last counted.
    since_checkpoint: u32,
    since_count: u32,
    waiting: Option<u64>,
}

impl Outbox {
    /// Opens (creating if needed) the state database at `path` for the delivery side,
    /// `check` and tests.
    pub fn open(path: &Path) -> Result<Outbox, StoreError> {
        Ok(Outbox::with(Db::open(path)?))
    }

    /// Opens it for the stdin reader, whose commits must never wait for a checkpoint:
    /// no automatic checkpoints (the reader runs [`Outbox::after_answer`]), and a
    /// busy handler that asks again within microseconds.
    pub fn for_reader(path: &Path) -> Result<Outbox, StoreError> {
        Ok(Outbox::with(Db::open(path)?.for_reader()?))
    }

    fn with(db: Db) -> Outbox {
        Outbox {
            db,
            since_checkpoint: 0,
            since_count: 0,
            waiting: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Commits one event to the outbox. Idempotent on (instance, event.serial).
    pub fn append(
        &mut self,
        instance: &str,
        channel: &str,
        event: &ProcessState,
        dropped_before: u64,
    ) -> Result<Appended, StoreError> {
        let json = serde_json::to_string(event).expect("events serialize");
        let n = self
            .db
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox
                 (instance, serial, host, grp, process, channel, event, dropped_before, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    instance,
                    event.serial as i64,
                    event.host,
                    event.group,
                    event.process,
                    channel,
                    json,
                    dropped_before as i64,
                    event.at.to_rfc3339(),
                ])
            })
            .map_err(|e| self.db.err(e))?;
        if n == 0 {
            return Ok(Appended::Duplicate);
        }
        self.committed();
        Ok(Appended::Inserted(self.db.conn.last_insert_rowid()))
    }

    /// When the outbox is full: folds `event` into the newest waiting entry of its
    /// thread that is not being delivered, so the thread still ends in the right
    /// state and the card can say how many transitions were folded. Inserts normally
    /// when the thread has no waiting entry (every process keeps at least one).
    pub fn coalesce(
        &mut self,
        instance: &str,
        channel: &str,
        event: &ProcessState,
        dropped_before: u64,
    ) -> Result<Appended, StoreError> {
        let last: Option<i64> = self
            .db
            .conn
            .prepare_cached(
                "SELECT MAX(id) FROM outbox WHERE delivered_at IS NULL AND set_aside IS NULL
                 AND claimed = 0 AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![event.host, event.group, event.process, channel],
                    |r| r.get(0),
                )
            })
            .map_err(|e| self.db.err(e))?;
        let Some(id) = last else {
            return self.append(instance, channel, event, dropped_before);
        };
        let json = serde_json::to_string(event).expect("events serialize");
        // The row may have been claimed for delivery since: then it is left alone
        // (what is sent is what is marked delivered) and the event gets a row.
        let folded = self
            .db
            .conn
            .prepare_cached(
                "UPDATE OR IGNORE outbox SET instance = ?1, serial = ?2, event = ?3,
                 dropped_before = dropped_before + ?4, coalesced = coalesced + 1
                 WHERE id = ?5 AND claimed = 0 AND delivered_at IS NULL",
            )
            .and_then(|mut st| {
                st.execute(params![
                    instance,
                    event.serial as i64,
                    json,
                    dropped_before as i64,
                    id
                ])
            })
            .map_err(|e| self.db.err(e))?;
        if folded == 0 {
            return self.append(instance, channel, event, dropped_before);
        }
        self.committed();
        Ok(Appended::Coalesced(id))
    }

    fn committed(&mut self) {
        self.since_checkpoint += 1;
        self.since_count += 1;
        if let Some(n) = self.waiting.as_mut() {
            *n += 1;
        }
    }

    /// Whether the outbox holds `cap` waiting entries or more, by the count kept up to
    /// date in [`Outbox::after_answer`] (never counted before an answer).
    pub fn is_full(&self, cap: u64) -> bool {
        self.waiting.is_some_and(|n| n >= cap)
    }

    /// Whether [`Outbox::after_answer`] has work to do now.
    pub fn upkeep_due(&self) -> bool {
        self.waiting.is_none()
            || self.since_count >= RECOUNT_EVERY
            || self.since_checkpoint >= CHECKPOINT_EVERY
    }

    /// The reader's upkeep, after an answer and before it asks for the next event:
    /// every [`CHECKPOINT_EVERY`] commits it folds the WAL into the database (done
    /// here, the checkpoint's fsyncs never delay an answer, and since this connection
    /// is the writer the checkpoint completes and the WAL stays small: a checkpoint
    /// from another connection never catches up with a steady writer); now and then
    /// it counts the waiting entries again (the delivery side removes them through
    /// its own connection), for the outbox cap.
    pub fn after_answer(&mut self) {
        if self.waiting.is_none() || self.since_count >= RECOUNT_EVERY {
            self.waiting = self.pending_count().ok();
            self.since_count = 0;
        }
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.since_checkpoint = 0;
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "cannot checkpoint the state database");
            }
        }
    }

    /// Folds the WAL into the database without waiting for readers or writers.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.db
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.db.err(e))
    }

    /// How many entries wait in the outbox.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.db
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND set_aside IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.db.err(e))
    }
}
