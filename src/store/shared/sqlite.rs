//! The shared state of one host, in the state database beside the outbox (its own
//! connection), with the pacing state in a file of its own beside it
//! (`state.pacing.db`): saving it on every call never holds the lock the reader
//! commits with. The budget is [`LocalPacing`]: buckets, the 429 gate and the pace
//! learnt from Slack's answers.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{AuditKeep, AuditRow, Budget, CommandSeen, CrashRecord, Episode, Mute, Posted, SharedState, ThreadRecord};
use crate::pacing::{Call, LocalPacing, PacingMemory};
use crate::store::db::Db;
use crate::store::StoreError;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

const KEY_META: &str = "action_signing_key";

/// The newest `/supervisor` command, in `meta`: `{"at":…,"user":…}`.
const COMMAND_META: &str = "last_command";

/// One host's shared state.
pub struct SqliteShared {
    db: Mutex<Db>,
    pacing: LocalPacing,
}

/// Where the pacing state of the state database at `state` lives.
pub(in crate::store) fn pacing_path(state: &Path) -> PathBuf {
    state.with_extension("pacing.db")
}

/// The pacing file, as local pacing's memory.
struct PacingFile(Mutex<Db>);

impl PacingMemory for PacingFile {
    fn load(&self, key: &str) -> Option<String> {
        self.0.lock().unwrap().meta(key).ok().flatten()
    }

    fn save(&self, key: &str, value: &str) {
        if let Err(e) = self.0.lock().unwrap().set_meta(key, value) {
            // Pacing still holds in memory; only a restart would forget it.
            tracing::debug!(error = %e, "cannot save the pacing state");
        }
    }
}

impl SqliteShared {
    /// Opens the shared state of the state database at `path` (creating it).
    pub fn open(path: &Path, budget: Budget) -> Result<SqliteShared, StoreError> {
        let db = Db::open(path)?;
        let memory = Db::open(&pacing_path(path))
            .map_err(|e| tracing::warn!(error = %e, "pacing is kept in memory only"))
            .ok()
            .map(|db| Box::new(PacingFile(Mutex::new(db))) as Box<dyn PacingMemory>);
        Ok(SqliteShared {
            db: Mutex::new(db),
            pacing: LocalPacing::new(
                budget.post_burst,
                budget.post_interval,
                budget.updates_per_minute,
                memory,
            ),
        })
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads one thread row.
fn read_thread(db: &Db, key: &ThreadKey, channel: &str) -> Result<Option<ThreadRecord>, StoreError> {
    let row = db
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
        .map_err(|e| db.err(e))?;
    let Some((channel_id, parent_ts, created, history, latest)) = row else {
        return Ok(None);
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| db.other(format!("thread {key}: bad {what}: {e}"));
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

/// Writes a whole thread row.
fn write_thread(db: &Db, t: &ThreadRecord) -> Result<(), StoreError> {
    db.conn
        .prepare_cached(
            "INSERT INTO threads (host, grp, process, channel, channel_id, parent_ts, created, history, latest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (host, grp, process, channel) DO UPDATE SET
             channel_id = excluded.channel_id, parent_ts = excluded.parent_ts, created = excluded.created,
             history = excluded.history, latest = excluded.latest",
        )
        .and_then(|mut st| {
            st.execute(params![
                t.key.host,
                t.key.group,
                t.key.process,
                t.channel,
                t.channel_id,
                t.parent_ts,
                t.created.to_rfc3339(),
                serde_json::to_string(&t.history).expect("states serialize"),
                t.latest
                    .as_ref()
                    .map(|l| serde_json::to_string(l).expect("events serialize")),
            ])
        })
        .map(|_| ())
        .map_err(|e| db.err(e))
}

/// Runs `f` in one write transaction (taken at once, so that a read-modify-write
/// never interleaves with another connection's).
fn in_transaction<T>(db: &Db, f: impl FnOnce(&Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
    db.conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| db.err(e))?;
    match f(db) {
        Ok(v) => {
            db.conn.execute_batch("COMMIT").map_err(|e| db.err(e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = db.conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[async_trait]
impl SharedState for SqliteShared {
    async fn thread(&self, key: &ThreadKey, channel: &str) -> Result<Option<ThreadRecord>, StoreError> {
        read_thread(&self.db(), key, channel)
    }

    async fn threads_of(&self, key: &ThreadKey) -> Result<Vec<ThreadRecord>, StoreError> {
        let db = self.db();
        let channels: Vec<String> = db
            .conn
            .prepare_cached("SELECT channel FROM threads WHERE host = ?1 AND grp = ?2 AND process = ?3")
            .and_then(|mut st| {
                st.query_map(params![key.host, key.group, key.process], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| db.err(e))?;
        let mut out = Vec::new();
        for c in channels {
            out.extend(read_thread(&db, key, &c)?);
        }
        Ok(out)
    }

    async fn latest_states(&self, host: &str) -> Result<Vec<(ThreadKey, String, ProcessState)>, StoreError> {
        let db = self.db();
        let mut st = db
            .conn
            .prepare("SELECT grp, process, channel, latest FROM threads WHERE host = ?1 AND latest IS NOT NULL")
            .map_err(|e| db.err(e))?;
        let rows = st
            .query_map(params![host], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(group, process, channel, json)| {
                let event = serde_json::from_str(&json).ok()?;
                let key = ThreadKey {
                    host: host.to_string(),
                    group,
                    process,
                };
                Some((key, channel, event))
            })
            .collect())
    }

    async fn set_parent(
        &self,
        key: &ThreadKey,
        channel: &str,
        replaces: Option<&str>,
        parent: &Posted,
        start_over: bool,
    ) -> Result<bool, StoreError> {
        let db = self.db();
        in_transaction(&db, |db| {
            let mut thread = read_thread(db, key, channel)?
                .unwrap_or_else(|| ThreadRecord::new(key.clone(), channel));
            if thread.parent_ts.as_deref() != replaces {
                return Ok(false);
            }
            thread.parent_ts = Some(parent.ts.clone());
            thread.channel_id = Some(parent.channel_id.clone());
            thread.created = parent.at;
            if start_over {
                thread.history.clear();
            }
            write_thread(db, &thread)?;
            Ok(true)
        })
    }

    async fn record_delivery(
        &self,
        key: &ThreadKey,
        channel: &str,
        states: &[State],
        latest: &ProcessState,
    ) -> Result<(), StoreError> {
        let db = self.db();
        in_transaction(&db, |db| {
            let mut thread = read_thread(db, key, channel)?
                .unwrap_or_else(|| ThreadRecord::new(key.clone(), channel));
            thread.push_history(states.iter().copied());
            thread.latest = Some(latest.clone());
            write_thread(db, &thread)
        })
    }

    async fn acquire(&self, call: Call<'_>) {
        self.pacing.acquire(call).await;
    }

    async fn rate_limited(&self, call: Call<'_>, retry_after: Duration) {
        self.pacing.rate_limited(call, retry_after);
    }

    async fn accepted(&self, call: Call<'_>) {
        self.pacing.accepted(call);
    }

    async fn mute(&self, key: &ThreadKey, by: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let db = self.db();
        db.conn
            .execute(
                "INSERT INTO mutes (host, grp, process, by_user, until) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host, grp, process) DO UPDATE SET by_user = excluded.by_user, until = excluded.until",
                params![key.host, key.group, key.process, by, until.to_rfc3339()],
            )
            .map(|_| ())
            .map_err(|e| db.err(e))
    }

    async fn unmute(&self, key: &ThreadKey) -> Result<bool, StoreError> {
        let db = self.db();
        db.conn
            .execute(
                "DELETE FROM mutes WHERE host = ?1 AND grp = ?2 AND process = ?3",
                params![key.host, key.group, key.process],
            )
            .map(|n| n > 0)
            .map_err(|e| db.err(e))
    }

    async fn mute_of(&self, key: &ThreadKey) -> Result<Option<Mute>, StoreError> {
        let db = self.db();
        let row: Option<(String, String)> = db
            .conn
            .query_row(
                "SELECT by_user, until FROM mutes WHERE host = ?1 AND grp = ?2 AND process = ?3",
                params![key.host, key.group, key.process],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| db.err(e))?;
        Ok(row.and_then(|(by, until)| {
            let until = parse_time(&until)?;
            (until > Utc::now()).then_some(Mute { by, until })
        }))
    }

    async fn record_click(
        &self,
        user: &str,
        click: &str,
        key: &ThreadKey,
        action: &str,
    ) -> Result<Option<i64>, StoreError> {
        let db = self.db();
        let n = db
            .conn
            .execute(
                "INSERT OR IGNORE INTO actions (at, user, click, host, grp, process, action)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![Utc::now().to_rfc3339(), user, click, key.host, key.group, key.process, action],
            )
            .map_err(|e| db.err(e))?;
        Ok((n == 1).then(|| db.conn.last_insert_rowid()))
    }

    async fn click_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        let db = self.db();
        db.conn
            .execute("UPDATE actions SET outcome = ?2 WHERE id = ?1", params![id, outcome])
            .map(|_| ())
            .map_err(|e| db.err(e))
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare(
                "SELECT id, at, user, host, grp, process, action, outcome FROM actions
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| db.err(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let at: String = r.get(1)?;
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: parse_time(&at).unwrap_or_default(),
                    user: r.get(2)?,
                    key: ThreadKey {
                        host: r.get(3)?,
                        group: r.get(4)?,
                        process: r.get(5)?,
                    },
                    action: r.get(6)?,
                    outcome: r.get(7)?,
                })
            })
            .map_err(|e| db.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| db.err(e))
    }

    async fn prune_audit(&self, keep: AuditKeep) -> Result<usize, StoreError> {
        let db = self.db();
        let cutoff = (Utc::now() - chrono::Duration::days(keep.days)).to_rfc3339();
        let old = db
            .conn
            .execute("DELETE FROM actions WHERE at < ?1", params![cutoff])
            .map_err(|e| db.err(e))?;
        let over = db
            .conn
            .execute(
                "DELETE FROM actions WHERE id <= (SELECT id FROM actions ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                params![keep.rows as i64],
            )
            .map_err(|e| db.err(e))?;
        Ok(old + over)
    }

    async fn signing_key(&self) -> Result<Vec<u8>, StoreError> {
        let db = self.db();
        if db.meta(KEY_META)?.is_none() {
            let key = crate::actions::Signer::generate_key()
                .map_err(|_| db.other("no random bytes for the signing key"))?;
            // Two connections may race here: the first key written wins.
            db.conn
                .execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![KEY_META, hex::encode(key)],
                )
                .map_err(|e| db.err(e))?;
        }
        let text = db.meta(KEY_META)?.unwrap_or_default();
        match hex::decode(text) {
            Ok(b) if b.len() >= 32 => Ok(b),
            _ => Err(db.other(format!(
                "the signing key in meta.{KEY_META} is damaged; delete that row to make a new one (buttons on older cards stop working)"
            ))),
        }
    }

    async fn board(&self, name: &str) -> Result<Option<Posted>, StoreError> {
        let text = self.db().meta(&board_key(name))?;
        Ok(text.and_then(|t| read_board(&t)))
    }

    async fn save_board(&self, name: &str, at: &Posted) -> Result<(), StoreError> {
        let json = serde_json::to_string(at).expect("serializes");
        self.db().set_meta(&board_key(name), &json)
    }

    // --- episodes

    async fn episode(&self, key: &ThreadKey, channel: &str) -> Result<Option<Episode>, StoreError> {
        let db = self.db();
        let text: Option<String> = db
            .conn
            .query_row(
                "SELECT episode FROM episodes WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
                params![key.host, key.group, key.process, channel],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db.err(e))?;
        // A row this version cannot read is no episode: at worst one more broadcast,
        // never a thread held up.
        Ok(text.and_then(|t| {
            serde_json::from_str(&t)
                .map_err(|e| tracing::warn!(thread = %key, error = %e, "cannot read the thread's failure episode; starting afresh"))
                .ok()
        }))
    }

    async fn save_episode(
        &self,
        key: &ThreadKey,
        channel: &str,
        episode: Option<&Episode>,
    ) -> Result<(), StoreError> {
        let db = self.db();
        let done = match episode {
            Some(ep) => db.conn.execute(
                "INSERT INTO episodes (host, grp, process, channel, episode) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host, grp, process, channel) DO UPDATE SET episode = excluded.episode",
                params![
                    key.host,
                    key.group,
                    key.process,
                    channel,
                    serde_json::to_string(ep).expect("episodes serialize")
                ],
            ),
            None => db.conn.execute(
                "DELETE FROM episodes WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
                params![key.host, key.group, key.process, channel],
            ),
        };
        done.map(|_| ()).map_err(|e| db.err(e))
    }

    // --- asking from Slack: the last crash, the last command

    async fn record_crash(&self, key: &ThreadKey, crash: &CrashRecord) -> Result<(), StoreError> {
        let db = self.db();
        let json = serde_json::to_string(crash).expect("a crash record serializes");
        db.conn
            .execute(
                "INSERT INTO crashes (host, grp, process, at, crash) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host, grp, process) DO UPDATE SET at = excluded.at, crash = excluded.crash",
                params![key.host, key.group, key.process, crash.at.to_rfc3339(), json],
            )
            .map(|_| ())
            .map_err(|e| db.err(e))
    }

    async fn last_crash(&self, key: &ThreadKey) -> Result<Option<CrashRecord>, StoreError> {
        let db = self.db();
        let json: Option<String> = db
            .conn
            .query_row(
                "SELECT crash FROM crashes WHERE host = ?1 AND grp = ?2 AND process = ?3",
                params![key.host, key.group, key.process],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db.err(e))?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| db.other(format!("crash of {key}: {e}"))))
            .transpose()
    }

    async fn command_seen(&self, user: &str) -> Result<(), StoreError> {
        let json = serde_json::json!({"at": Utc::now().to_rfc3339(), "user": user}).to_string();
        self.db().set_meta(COMMAND_META, &json)
    }

    async fn last_command(&self) -> Result<Option<CommandSeen>, StoreError> {
        let text = self.db().meta(COMMAND_META)?;
        Ok(text.and_then(|t| {
            let v: serde_json::Value = serde_json::from_str(&t).ok()?;
            Some(CommandSeen {
                at: parse_time(v["at"].as_str()?)?,
                user: v["user"].as_str()?.to_string(),
            })
        }))
    }
}

fn board_key(name: &str) -> String {
    format!("board {name}")
}

/// A board location as saved (older releases saved it without `at`).
fn read_board(text: &str) -> Option<Posted> {
    #[derive(serde::Deserialize)]
    struct Saved {
        ts: String,
        channel_id: String,
        at: Option<DateTime<Utc>>,
    }
    let s: Saved = serde_json::from_str(text).ok()?;
    Some(Posted {
        channel_id: s.channel_id,
        ts: s.ts,
        at: s.at.unwrap_or_default(),
    })
}
