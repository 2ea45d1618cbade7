//! The store: the *outbox* of events not yet delivered and the thread map, in one
//! SQLite file (bundled SQLite, WAL). Knows nothing of Slack's wire format.
//!



use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::event::{ProcessState, State, ThreadKey};

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Row id: increases in commit order, so ordering by id is event order.
    pub id: i64,
    /// Which supervisord instance sent it (server name + its pid), so that serials of
    /// a restarted supervisord do not collide with old ones.
    pub instance: String,
    pub channel: String,
    pub event: ProcessState,
    /// "N events dropped by supervisord" noticed just before this event (0 if none).
    pub dropped_before: u64,
}

/// What `append` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Inserted(i64),
    /// Same (instance, serial) already in the outbox: supervisord resent it.
    Duplicate,
}

/// A thread's state: where its parent is and what it has shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub key: ThreadKey,
    pub channel: String,
    /// The parent message's `ts`; `None` until the parent is posted.
    pub parent_ts: Option<String>,
    /// When the parent was posted (for `thread_ttl`).
    pub created: DateTime<Utc>,
    /// States delivered in this thread, oldest first (bounded by the store).
    pub history: Vec<State>,
    /// The latest event delivered (what the parent should show).
    pub latest: Option<ProcessState>,
    /// The parent does not yet show `latest` (an edit is owed).
    pub parent_stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub struct Store {}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        todo!()
    }
    /// Commits one event to the outbox. Idempotent on (instance, event.serial).
    pub fn append(&mut self, instance: &str, channel: &str, event: &ProcessState, dropped_before: u64) -> Result<Appended, StoreError> {
        todo!()
    }
    /// Thread keys (with channel) that have undelivered entries, oldest entry first.
    pub fn pending_keys(&self) -> Result<Vec<(ThreadKey, String)>, StoreError> {
        todo!()
    }
    /// Undelivered entries of one thread, in event order, at most `limit`.
    pub fn pending(&self, key: &ThreadKey, channel: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        todo!()
    }
    pub fn thread(&self, key: &ThreadKey, channel: &str) -> Result<Option<ThreadRecord>, StoreError> {
        todo!()
    }
    /// Saves the thread record and marks `delivered` entries as delivered, in one
    /// transaction.
    pub fn commit_delivery(&mut self, thread: &ThreadRecord, delivered: &[i64]) -> Result<(), StoreError> {
        todo!()
    }
}
