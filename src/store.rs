//! The store: the *outbox* of events not yet delivered and the thread map, in one
//! SQLite file (bundled SQLite, WAL). Knows nothing of Slack's wire format.
//!
//! Two connections use the file: the stdin reader appends (and must commit before it
//! answers supervisord), the dispatcher reads pending entries and records deliveries.
//! WAL lets them work side by side; `synchronous=NORMAL` keeps a commit at a fraction
//! of a millisecond and survives a crash or `kill -9` of the listener (the OS still
//! has the pages); only a power cut can lose the last commits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// Bumped whenever the schema changes; `open` migrates older files forward.
pub const SCHEMA_VERSION: i64 = 1;

/// How many states a thread remembers (the parent's trail shows the recent part).
pub const HISTORY_MAX: usize = 200;

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
    /// Earlier transitions folded into this entry because the outbox was full.
    pub coalesced: u64,
}

/// What waits in the outbox for one thread, as its parent shows it (see
/// [`Store::waiting_view`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitingView {
    /// The newest waiting event (`None`: nothing waits).
    pub newest: Option<ProcessState>,
    /// The states of the newest waiting entries, oldest first.
    pub states: Vec<State>,
}

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

/// A thread's state: where its parent is and what it has shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub key: ThreadKey,
    /// The channel as configured (name or id): part of the thread's identity.
    pub channel: String,
    /// The channel id Slack answered with (`chat.update` needs the id).
    pub channel_id: Option<String>,
    /// The parent message's `ts`; `None` until the parent is posted.
    pub parent_ts: Option<String>,
    /// When the parent was posted (for `thread_ttl`).
    pub created: DateTime<Utc>,
    /// States delivered in this thread, oldest first (at most [`HISTORY_MAX`]).
    pub history: Vec<State>,
    /// The latest event delivered.
    pub latest: Option<ProcessState>,
}

impl ThreadRecord {
    pub fn new(key: ThreadKey, channel: &str) -> Self {
        ThreadRecord {
            key,
            channel: channel.to_string(),
            channel_id: None,
            parent_ts: None,
            created: Utc::now(),
            history: Vec::new(),
            latest: None,
        }
    }

    /// Appends delivered states, keeping the most recent [`HISTORY_MAX`].
    pub fn push_history(&mut self, states: impl IntoIterator<Item = State>) {
        self.history.extend(states);
        self.truncate_history();
    }

    /// Keeps the most recent [`HISTORY_MAX`] states.
    pub fn truncate_history(&mut self) {
        if self.history.len() > HISTORY_MAX {
            let cut = self.history.len() - HISTORY_MAX;
            self.history.drain(..cut);
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
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

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
";

impl Store {
    /// Opens (creating if needed) the database at `path`. A file that is not a
    /// database, or is corrupt, is moved aside (`state.db.corrupt-<time>`) with a
    /// loud log line and a fresh one is started: losing the thread map is better than
    /// a listener that cannot start.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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

    fn open_inner(path: &Path) -> Result<Store, StoreError> {
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
        // Version 1 is the first schema; later versions add their migrations here.
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        // A quick integrity check catches a damaged file before we rely on it.
        let ok: String = store
            .conn
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
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
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
            .map_err(|e| self.err(e))?;
        Ok(if n == 0 {
            Appended::Duplicate
        } else {
            Appended::Inserted(self.conn.last_insert_rowid())
        })
    }

    /// When the outbox is full: folds `event` into the newest waiting entry of its
    /// thread, so the thread still ends in the right state and the card can say how
    /// many transitions were folded. Inserts normally when the thread has no waiting
    /// entry (every process keeps at least one).
    pub fn coalesce(
        &mut self,
        instance: &str,
        channel: &str,
        event: &ProcessState,
        dropped_before: u64,
    ) -> Result<Appended, StoreError> {
        let last: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT MAX(id) FROM outbox WHERE delivered_at IS NULL
                 AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
            )
            .and_then(|mut st| {
                st.query_row(
                    params![event.host, event.group, event.process, channel],
                    |r| r.get(0),
                )
            })
            .map_err(|e| self.err(e))?;
        let Some(id) = last else {
            return self.append(instance, channel, event, dropped_before);
        };
        let json = serde_json::to_string(event).expect("events serialize");
        self.conn
            .prepare_cached(
                "UPDATE OR IGNORE outbox SET instance = ?1, serial = ?2, event = ?3,
                 dropped_before = dropped_before + ?4, coalesced = coalesced + 1
                 WHERE id = ?5",
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
            .map_err(|e| self.err(e))?;
        Ok(Appended::Coalesced(id))
    }

    /// Thread keys (with channel) that have undelivered entries, oldest entry first.
    pub fn pending_keys(&self) -> Result<Vec<(ThreadKey, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT host, grp, process, channel, MIN(id) AS first FROM outbox
                 WHERE delivered_at IS NULL GROUP BY host, grp, process, channel ORDER BY first",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    ThreadKey {
                        host: r.get(0)?,
                        group: r.get(1)?,
                        process: r.get(2)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Undelivered entries of one thread, in event order, at most `limit`.
    pub fn pending(
        &self,
        key: &ThreadKey,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, instance, channel, event, dropped_before, coalesced FROM outbox
                 WHERE delivered_at IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
                 ORDER BY id LIMIT ?5",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(
                params![key.host, key.group, key.process, channel, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(id, instance, channel, json, dropped, coalesced)| {
                let event = serde_json::from_str(&json).map_err(|e| StoreError::Other {
                    path: self.path.clone(),
                    message: format!("outbox entry {id} cannot be read back: {e}"),
                })?;
                Ok(OutboxEntry {
                    id,
                    instance,
                    channel,
                    event,
                    dropped_before: dropped as u64,
                    coalesced: coalesced as u64,
                })
            })
            .collect()
    }

    /// What a thread's parent shows of the outbox, lighter than [`Store::pending`]:
    /// the newest waiting event, and the states (only `to`, read inside SQLite: no
    /// event is decoded) of the newest `limit` waiting entries, oldest first. One
    /// read transaction, so the two agree.
    pub fn waiting_view(
        &self,
        key: &ThreadKey,
        channel: &str,
        limit: usize,
    ) -> Result<WaitingView, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let newest: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, event FROM outbox
                 WHERE delivered_at IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![key.host, key.group, key.process, channel], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((id, json)) = newest else {
            return Ok(WaitingView::default());
        };
        let unreadable = |what: &str| StoreError::Other {
            path: self.path.clone(),
            message: format!("outbox entry {id} cannot be read back: {what}"),
        };
        let newest: ProcessState =
            serde_json::from_str(&json).map_err(|e| unreadable(&e.to_string()))?;
        let mut states = Vec::new();
        {
            let mut st = tx
                .prepare_cached(
                    "SELECT json_extract(event, '$.to') FROM outbox
                     WHERE delivered_at IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
                     ORDER BY id DESC LIMIT ?5",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = st
                .query(params![
                    key.host,
                    key.group,
                    key.process,
                    channel,
                    limit as i64
                ])
                .map_err(|e| self.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                let to = r.get_ref(0).map_err(|e| self.err(e))?;
                let state = to
                    .as_str()
                    .ok()
                    .and_then(|s| s.parse::<State>().ok())
                    .ok_or_else(|| unreadable("no state"))?;
                states.push(state);
            }
        }
        tx.finish().map_err(|e| self.err(e))?;
        states.reverse();
        Ok(WaitingView {
            newest: Some(newest),
            states,
        })
    }

    /// How many entries wait in the outbox.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    pub fn thread(
        &self,
        key: &ThreadKey,
        channel: &str,
    ) -> Result<Option<ThreadRecord>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT channel_id, parent_ts, created, history, latest FROM threads
                 WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
            )
            .and_then(|mut st| {
                st.query_row(params![key.host, key.group, key.process, channel], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((channel_id, parent_ts, created, history, latest)) = row else {
            return Ok(None);
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| StoreError::Other {
            path: self.path.clone(),
            message: format!("thread {key}: bad {what}: {e}"),
        };
        Ok(Some(ThreadRecord {
            key: key.clone(),
            channel: channel.to_string(),
            channel_id,
            parent_ts,
            created: DateTime::parse_from_rfc3339(&created)
                .map_err(|e| bad("created", &e))?
                .with_timezone(&Utc),
            history: serde_json::from_str(&history).map_err(|e| bad("history", &e))?,
            latest: latest
                .map(|l| serde_json::from_str(&l))
                .transpose()
                .map_err(|e| bad("latest", &e))?,
        }))
    }

    /// Records where a thread's parent is (channel id, ts, when posted), leaving its
    /// history alone.
    pub fn save_parent(&mut self, thread: &ThreadRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE threads SET channel_id = ?5, parent_ts = ?6, created = ?7
                 WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![
                    thread.key.host,
                    thread.key.group,
                    thread.key.process,
                    thread.channel,
                    thread.channel_id,
                    thread.parent_ts,
                    thread.created.to_rfc3339(),
                ])
            })
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Saves a thread record (e.g. right after its parent was posted, so a restart
    /// never posts a second parent).
    pub fn save_thread(&mut self, thread: &ThreadRecord) -> Result<(), StoreError> {
        save_thread(&self.conn, thread).map_err(|e| self.err(e))
    }

    /// Records what a thread has delivered (history, latest) and marks `delivered`
    /// entries as delivered, in one transaction. The parent's fields are left as they
    /// are: the parent keeper may have replaced the parent meanwhile.
    pub fn commit_delivery(
        &mut self,
        thread: &ThreadRecord,
        delivered: &[i64],
    ) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339();
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            save_history(&tx, thread)?;
            let mut st = tx.prepare_cached("UPDATE outbox SET delivered_at = ?1 WHERE id = ?2")?;
            for id in delivered {
                st.execute(params![now, id])?;
            }
            Ok::<_, rusqlite::Error>(())
        })();
        result.and_then(|_| tx.commit()).map_err(|e| self.err(e))
    }

    /// Deletes delivered entries older than `keep` (they are kept a while so that a
    /// resent event is still recognised as a duplicate).
    pub fn prune(&mut self, keep: chrono::Duration) -> Result<usize, StoreError> {
        let cutoff = (Utc::now() - keep).to_rfc3339();
        self.conn
            .execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?1",
                params![cutoff],
            )
            .map_err(|e| self.err(e))
    }

    /// For the connection that answers supervisord: no automatic WAL checkpoints,
    /// whose fsyncs would land inside a commit (tens of milliseconds every few hundred
    /// events). The listener calls [`Store::checkpoint`] itself, after answering.
    pub fn without_autocheckpoint(self) -> Result<Store, StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.err(e))?;
        Ok(self)
    }

    /// Caps this connection's page cache at `kib` KiB (SQLite's default is 2,000 KiB
    /// per connection). The pages are on disk and in the OS page cache anyway; a
    /// connection that only appends, or only reads a thread's newest entries, needs a
    /// few dozen.
    pub fn with_cache_kib(self, kib: u32) -> Result<Store, StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))
            .map_err(|e| self.err(e))?;
        Ok(self)
    }

    /// Folds the WAL into the database without waiting for readers or writers.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
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

fn save_thread(conn: &Connection, t: &ThreadRecord) -> Result<(), rusqlite::Error> {
    upsert_thread(
        conn,
        t,
        "channel_id = excluded.channel_id, parent_ts = excluded.parent_ts, created = excluded.created,
         history = excluded.history, latest = excluded.latest",
    )
}

/// Saves history and latest; inserts the whole record when the thread is new.
fn save_history(conn: &Connection, t: &ThreadRecord) -> Result<(), rusqlite::Error> {
    upsert_thread(
        conn,
        t,
        "history = excluded.history, latest = excluded.latest",
    )
}

/// Inserts a thread record, or updates the columns `on_conflict` names.
fn upsert_thread(
    conn: &Connection,
    t: &ThreadRecord,
    on_conflict: &str,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(&format!(
        "INSERT INTO threads (host, grp, process, channel, channel_id, parent_ts, created, history, latest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (host, grp, process, channel) DO UPDATE SET {on_conflict}"
    ))?
    .execute(params![
        t.key.host,
        t.key.group,
        t.key.process,
        t.channel,
        t.channel_id,
        t.parent_ts,
        t.created.to_rfc3339(),
        serde_json::to_string(&t.history).expect("states serialize"),
        t.latest.as_ref().map(|l| serde_json::to_string(l).expect("events serialize")),
    ])?;
    Ok(())
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
