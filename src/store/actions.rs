//! What acting from Slack keeps on disk: the key that signs button values, the mutes,
//! and the audit of every click (which also makes a click delivered twice run once).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::supervisord::event::ThreadKey;

const KEY_META: &str = "action_signing_key";

/// A muted thread: its replies are not shown in the channel and carry no mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    /// The Slack user id of who muted it.
    pub by: String,
    pub until: DateTime<Utc>,
}

/// One click, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user: String,
    pub key: ThreadKey,
    pub action: String,
    /// What became of it: `None` while it runs.
    pub outcome: Option<String>,
}

impl Store {
    /// The key that signs button values: made once (32 random bytes) and kept in the
    /// state database, so cards posted before a restart still work after it.
    pub fn signing_key(&mut self) -> Result<Vec<u8>, StoreError> {
        if self.meta(KEY_META)?.is_none() {
            let key = crate::actions::Signer::generate_key().map_err(|_| StoreError::Other {
                path: self.path.clone(),
                message: "no random bytes for the signing key".into(),
            })?;
            // Two connections may race here: the first key written wins.
            self.conn
                .execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![KEY_META, hex::encode(key)],
                )
                .map_err(|e| self.err(e))?;
        }
        let text = self.meta(KEY_META)?.unwrap_or_default();
        match hex::decode(text) {
            Ok(b) if b.len() >= 32 => Ok(b),
            _ => Err(StoreError::Other {
                path: self.path.clone(),
                message: format!("the signing key in meta.{KEY_META} is damaged; delete that row to make a new one (buttons on older cards stop working)"),
            }),
        }
    }

    /// Every thread of `key` (one per channel it is routed to).
    pub fn threads_of(&self, key: &ThreadKey) -> Result<Vec<super::ThreadRecord>, StoreError> {
        let channels: Vec<String> = self
            .conn
            .prepare_cached("SELECT channel FROM threads WHERE host = ?1 AND grp = ?2 AND process = ?3")
            .and_then(|mut st| {
                st.query_map(params![key.host, key.group, key.process], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for c in channels {
            out.extend(self.thread(key, &c)?);
        }
        Ok(out)
    }

    /// Mutes `key` until `until`.
    pub fn mute(&mut self, key: &ThreadKey, by: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO mutes (host, grp, process, by_user, until) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host, grp, process) DO UPDATE SET by_user = excluded.by_user, until = excluded.until",
                params![key.host, key.group, key.process, by, until.to_rfc3339()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Ends a mute; `false` when there was none.
    pub fn unmute(&mut self, key: &ThreadKey) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM mutes WHERE host = ?1 AND grp = ?2 AND process = ?3",
                params![key.host, key.group, key.process],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The mute on `key` now (an expired one is none).
    pub fn mute_of(&self, key: &ThreadKey) -> Result<Option<Mute>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT by_user, until FROM mutes WHERE host = ?1 AND grp = ?2 AND process = ?3",
                params![key.host, key.group, key.process],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(by, until)| {
            let until = DateTime::parse_from_rfc3339(&until).ok()?.with_timezone(&Utc);
            (until > Utc::now()).then_some(Mute { by, until })
        }))
    }

    /// Records a click before it runs. `None` when the same click (user and
    /// `action_ts`) was recorded before: Slack delivered it twice, it runs once.
    pub fn record_click(
        &mut self,
        user: &str,
        click: &str,
        key: &ThreadKey,
        action: &str,
    ) -> Result<Option<i64>, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO actions (at, user, click, host, grp, process, action)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![Utc::now().to_rfc3339(), user, click, key.host, key.group, key.process, action],
            )
            .map_err(|e| self.err(e))?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// What became of a recorded click.
    pub fn click_outcome(&mut self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE actions SET outcome = ?2 WHERE id = ?1", params![id, outcome])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` audited clicks, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at, user, host, grp, process, action, outcome FROM actions
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let at: String = r.get(1)?;
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
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
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}
