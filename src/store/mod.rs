//! The store: the two kinds of state, each behind its own door. Nothing outside this
//! room names a database, its crate or its settings.
//! - [`Outbox`]: local and synchronous — the stdin reader's only store, and the
//!   delivery side's queue. Events are committed here before supervisord is answered
//!   (SQLite, WAL). It never moves to the network.
//! - [`SharedState`]: one async trait for everything the delivery side keeps beyond
//!   the outbox (the thread map, the budget and 429 gate, mutes, clicks and their
//!   audit, board locations, the signing key, failure episodes, each process's last
//!   crash, hosts and leases). [`SqliteShared`] implements it for one host, in the
//!   same state database; [`PostgresShared`] for a fleet of hosts sharing one
//!   PostgreSQL.
//! - [`known`]: what the channel shows per thread, from both, for reconcile and the
//!   board.

use std::path::{Path, PathBuf};

mod db;
mod known;
mod outbox;
mod shared;

pub use db::SCHEMA_VERSION;
pub use known::{known, Known};
pub use outbox::{Appended, NewestRow, Outbox, OutboxEntry, SetAside, WaitingView, CHECKPOINT_EVERY};
pub use shared::sqlite::SqliteShared;
pub use shared::postgres::{FleetProbe, PostgresShared};
pub use shared::{
    ActionState, AuditKeep, AuditRow, Budget, CommandSeen, CrashRecord, Episode, HostProcess, HostRecord, Mute, Posted,
    ProgramOnHost, QueuedAction, SharedState, ThreadRecord, HISTORY_MAX,
};

/// The last thing the process does with the local state (after the delivery side has
/// drained): the WALs of the state database and its pacing file are folded in and
/// emptied, if nothing else holds them. Failing here loses nothing: SQLite folds the
/// WAL in at the next open.
pub fn at_exit(state: &Path) {
    for path in [state.to_path_buf(), shared::sqlite::pacing_path(state)] {
        if let Err(e) = db::truncate_wal(&path) {
            tracing::debug!(path = %path.display(), error = %e, "the WAL is left for the next start to fold in");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: {message}")]
    Other { path: PathBuf, message: String },
    /// The fleet's PostgreSQL (out of reach, refused, ...): the message says what and
    /// the fix, never the password.
    #[error("{message}")]
    Fleet { message: String },
}
