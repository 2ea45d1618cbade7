//! The SQLite file both local doors open: WAL, the schema and its migrations, a
//! corrupt file moved aside, a file from a newer release refused. Each door opens its
//! own connection and tunes it for its one job ([`Db::for_reader`]).
//!
//! WAL lets the reader's commits and the delivery side's reads and writes work side by
//! side; `synchronous=NORMAL` keeps a commit at a fraction of a millisecond and
//! survives a crash or `kill -9` of the listener (the OS still has the pages); only a
//! power cut can lose the last commits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Bumped whenever the schema changes; opening migrates older files forward. Tables
/// that only add (mutes, actions, episodes, crashes) need no bump: an older listener ignores
/// them.
pub const SCHEMA_VERSION: i64 = 2;

/// The page cache of each of the listener's connections, in KiB (SQLite's default:
/// 2,000). The reader only appends and the delivery side reads a thread's first or
/// newest entries: both touch a few dozen pages, and the rest are in the OS page
/// cache anyway. At the default, the caches filled up to ~4 MB of heap as the outbox
/// grew (peak RSS after 100,000 events: 21.3 MB with Slack healthy; 16.0 MB at
/// 256 KiB; see BENCHMARKS.md).
const CACHE_KIB: u32 = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance       TEXT    NOT NULL,
    serial         INTEGER NOT NULL,
    host           TEXT    NOT NULL,
    grp            TEXT    NOT NULL,
    process        TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    event          TEXT    NOT NULL,
    dropped_before INTEGER NOT NULL DEFAULT 0,
    coalesced      INTEGER NOT NULL DEFAULT 0,
    received_at    TEXT    NOT NULL,
    delivered_at   TEXT,
    UNIQUE (instance, serial)
);
CREATE INDEX IF NOT EXISTS outbox_pending
    ON outbox (host, grp, process, channel, id) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS threads (
    host         TEXT NOT NULL,
    grp          TEXT NOT NULL,
    process      TEXT NOT NULL,
    channel      TEXT NOT NULL,
    channel_id   TEXT,
    parent_ts    TEXT,
    created      TEXT NOT NULL,
    history      TEXT NOT NULL,
    latest       TEXT,
    PRIMARY KEY (host, grp, process, channel)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mutes (
    host     TEXT NOT NULL,
    grp      TEXT NOT NULL,
    process  TEXT NOT NULL,
    by_user  TEXT NOT NULL,
    until    TEXT NOT NULL,
    PRIMARY KEY (host, grp, process)
);
CREATE TABLE IF NOT EXISTS actions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    user     TEXT NOT NULL,
    click    TEXT NOT NULL,
    host     TEXT NOT NULL,
    grp      TEXT NOT NULL,
    process  TEXT NOT NULL,
    action   TEXT NOT NULL,
    outcome  TEXT,
    UNIQUE (user, click)
);
CREATE TABLE IF NOT EXISTS episodes (
    host     TEXT NOT NULL,
    grp      TEXT NOT NULL,
    process  TEXT NOT NULL,
    channel  TEXT NOT NULL,
    episode  TEXT NOT NULL,
    PRIMARY KEY (host, grp, process, channel)
);
CREATE TABLE IF NOT EXISTS crashes (
    host     TEXT NOT NULL,
    grp      TEXT NOT NULL,
    process  TEXT NOT NULL,
    at       TEXT NOT NULL,
    crash    TEXT NOT NULL,
    PRIMARY KEY (host, grp, process)
);
";

/// Folds the WAL of the database at `path` into it and empties the WAL file, if no
/// other connection is using it: for the end of the process, so that a stopped
/// listener leaves a compact state directory (the reader's checkpoints keep the WAL
/// bounded while it runs, but cannot empty it while the delivery side reads). Waits
/// 200 ms at most for a lock; a missing file is left missing.
pub(super) fn truncate_wal(path: &Path) -> Result<(), rusqlite::Error> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_millis(200))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// One connection to the state database.
pub(super) struct Db {
    pub conn: Connection,
    pub path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database at `path`. A file that is not a
    /// database, or is corrupt, is moved aside (`state.db.corrupt-<time>`) with a
    /// loud log line and a fresh one is started: losing the thread map is better than
    /// a listener that cannot start.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Other {
                path: path.to_path_buf(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        match Self::open_inner(path) {
            Ok(s) => Ok(s),
            Err(e) if is_corruption(&e) => {
                let aside = path
                    .with_extension(format!("db.corrupt-{}", Utc::now().format("%Y%m%dT%H%M%S")));
                tracing::error!(
                    path = %path.display(), moved_to = %aside.display(), error = %e,
                    "the state database is corrupt: moved it aside and started a fresh one (undelivered events in it are not sent; thread parents will be posted anew)"
                );
                std::fs::rename(path, &aside).map_err(|re| StoreError::Other {
                    path: path.to_path_buf(),
                    message: format!("corrupt, and it could not be moved aside: {re}"),
                })?;
                for suffix in ["-wal", "-shm"] {
                    let side = PathBuf::from(format!("{}{suffix}", path.display()));
                    let _ = std::fs::rename(
                        &side,
                        PathBuf::from(format!("{}{suffix}", aside.display())),
                    );
                }
                Self::open_inner(path)
            }
            Err(e) => Err(e),
        }
    }

    fn open_inner(path: &Path) -> Result<Db, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "cache_size", -i64::from(CACHE_KIB))
            .map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Other {
                path: path.to_path_buf(),
                message: format!(
                    "written by a newer supervisor-slack (schema {version}, this one knows {SCHEMA_VERSION}); upgrade, or point --state elsewhere"
                ),
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Migrations, oldest first (a new file has version 0 and the v1 tables).
        if version < 2 {
            // claimed: being delivered (never folded into); set_aside: Slack would
            // not take it (kept, counted, shown by `check`).
            // The index of waiting entries leaves set-aside ones out, so that every
            // query of waiting entries (and the count after each 1,000 answers)
            // stays on the index.
            conn.execute_batch(
                "ALTER TABLE outbox ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE outbox ADD COLUMN set_aside TEXT;
                 DROP INDEX IF EXISTS outbox_pending;
                 CREATE INDEX outbox_pending ON outbox (host, grp, process, channel, id)
                     WHERE delivered_at IS NULL AND set_aside IS NULL;",
            )
            .map_err(err)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        // A quick integrity check catches a damaged file before we rely on it.
        let ok: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if ok != "ok" {
            return Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(ok),
                ),
            });
        }
        Ok(Db {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// For the connection that answers supervisord: no automatic WAL checkpoints,
    /// whose fsyncs would land inside a commit (tens of milliseconds every few hundred
    /// events); the reader checkpoints itself, after answering
    /// ([`super::Outbox::after_answer`]).
    pub fn for_reader(self) -> Result<Db, StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.err(e))?;
        // The delivery side's short write transactions (a delivery recorded, entries
        // claimed) can hold the lock as the reader commits. SQLite's own busy wait
        // sleeps a whole millisecond first, then longer: ask again every 50 µs for
        // the first 5 ms instead, then every millisecond, for the same 5 s in all.
        self.conn
            .busy_handler(Some(reader_busy))
            .map_err(|e| self.err(e))?;
        Ok(self)
    }

    pub fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn other(&self, message: impl Into<String>) -> StoreError {
        StoreError::Other {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// The reader's busy handler (see [`Db::for_reader`]): `tries` is how many times it
/// was called for this lock; `false` gives up (SQLITE_BUSY).
fn reader_busy(tries: i32) -> bool {
    const FAST: i32 = 100;
    if tries < FAST {
        std::thread::sleep(Duration::from_micros(50));
        true
    } else if tries < FAST + 4_995 {
        std::thread::sleep(Duration::from_millis(1));
        true
    } else {
        false
    }
}

fn is_corruption(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => matches!(
            f.code,
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
        ),
        _ => false,
    }
}
