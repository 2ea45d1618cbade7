//! The thread map: per thread key, where its parent is and what it has shown. It
//! must survive restarts: a thread's replies always go under the same parent.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{Store, StoreError, HISTORY_MAX};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

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

impl Store {
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

}

pub(super) fn save_thread(conn: &Connection, t: &ThreadRecord) -> Result<(), rusqlite::Error> {
    upsert_thread(
        conn,
        t,
        "channel_id = excluded.channel_id, parent_ts = excluded.parent_ts, created = excluded.created,
         history = excluded.history, latest = excluded.latest",
    )
}

/// Saves history and latest; inserts the whole record when the thread is new.
pub(super) fn save_history(conn: &Connection, t: &ThreadRecord) -> Result<(), rusqlite::Error> {
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

