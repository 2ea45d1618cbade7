//! What the outbox remembers of recent events (delivered rows are kept a day), for
//! the in-memory state that must survive a restart: the state each process was in
//! before its current start (routing's `running = "after_failure"`), and each
//! thread's recent transitions (flapping).

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Store, StoreError};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

impl Store {
    /// Per thread key, the newest state other than STARTING it was seen in: from the
    /// outbox (newest row first), else the thread map's latest event.
    pub fn previous_states(&self) -> Result<Vec<(ThreadKey, State)>, StoreError> {
        let mut out: std::collections::HashMap<ThreadKey, State> = Default::default();
        let latest = "SELECT host, grp, process, latest FROM threads WHERE latest IS NOT NULL";
        for (key, json) in self.keyed_events(latest)? {
            if let Ok(ev) = serde_json::from_str::<ProcessState>(&json) {
                let state = if ev.to == State::Starting { ev.from } else { ev.to };
                if state != State::Starting {
                    out.insert(key, state);
                }
            }
        }
        // The outbox is newer than the thread map: its rows win, oldest to newest.
        let rows = "SELECT host, grp, process, event FROM outbox ORDER BY id";
        for (key, json) in self.keyed_events(rows)? {
            if let Ok(ev) = serde_json::from_str::<ProcessState>(&json) {
                if ev.to != State::Starting {
                    out.insert(key, ev.to);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Rows of (host, group, process, a text column: event JSON, channel).
    pub(super) fn keyed_events(&self, sql: &str) -> Result<Vec<(ThreadKey, String)>, StoreError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        st.query_map([], |r| {
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
        .map_err(|e| self.err(e))
    }

    /// A thread's transitions since `since` (when each happened), and the newest
    /// outbox id among all its rows.
    pub fn recent_transitions(
        &self,
        key: &ThreadKey,
        channel: &str,
        since: DateTime<Utc>,
    ) -> Result<(Vec<DateTime<Utc>>, Option<i64>), StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, received_at FROM outbox
                 WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![key.host, key.group, key.process, channel], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let newest = rows.last().map(|(id, _)| *id);
        let times = rows
            .iter()
            .filter_map(|(_, at)| DateTime::parse_from_rfc3339(at).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t >= since)
            .collect();
        Ok((times, newest))
    }
}
