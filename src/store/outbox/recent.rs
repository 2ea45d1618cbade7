//! What the outbox remembers of recent events (delivered rows are kept a day), for
//! what must be known again after a restart: the state each process was in before
//! its current start (routing's `running = "after_failure"`), each thread's newest
//! event (reconcile and the board compare it with supervisord), each thread's recent
//! transitions (flapping), and where supervisord's pool serials stopped (events
//! dropped while the listener was down).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::Outbox;
use crate::store::StoreError;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// The newest row the outbox holds for one thread of a host (waiting, delivered or
/// set aside: its state was seen either way).
#[derive(Debug, Clone, PartialEq)]
pub struct NewestRow {
    pub id: i64,
    pub channel: String,
    pub event: ProcessState,
}

impl Outbox {
    /// Per thread key, the newest state other than STARTING the outbox saw it in,
    /// oldest rows first (the shared state's latest delivered events are older).
    pub fn previous_states(&self) -> Result<Vec<(ThreadKey, State)>, StoreError> {
        let mut out: HashMap<ThreadKey, State> = HashMap::new();
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

    /// The newest row of each thread of `host` (one per thread key: the channel of its
    /// newest row).
    pub fn newest_rows(&self, host: &str) -> Result<Vec<NewestRow>, StoreError> {
        let mut st = self
            .db
            .conn
            .prepare(
                "SELECT o.id, o.channel, o.event FROM outbox o
                 JOIN (SELECT MAX(id) AS id FROM outbox WHERE host = ?1
                       GROUP BY grp, process) m ON o.id = m.id",
            )
            .map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(params![host], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.db.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, channel, json)| {
                let event = serde_json::from_str(&json).ok()?;
                Some(NewestRow { id, channel, event })
            })
            .collect())
    }

    /// Rows of (host, group, process, a text column: event JSON, channel).
    pub(super) fn keyed_events(&self, sql: &str) -> Result<Vec<(ThreadKey, String)>, StoreError> {
        let mut st = self.db.conn.prepare(sql).map_err(|e| self.db.err(e))?;
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
        .map_err(|e| self.db.err(e))
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
            .db
            .conn
            .prepare_cached(
                "SELECT id, received_at FROM outbox
                 WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4 ORDER BY id",
            )
            .map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(params![key.host, key.group, key.process, channel], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.db.err(e))?;
        let newest = rows.last().map(|(id, _)| *id);
        let times = rows
            .iter()
            .filter_map(|(_, at)| DateTime::parse_from_rfc3339(at).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t >= since)
            .collect();
        Ok((times, newest))
    }

    /// Per pool, the highest pool serial stored from the supervisord process `parent`
    /// (`PID@START`, the end of its instance names): where its count stood when this
    /// listener (or the one before it) last stored an event.
    pub fn last_poolserials(&self, parent: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .db
            .conn
            .prepare(
                "SELECT json_extract(event, '$.pool'), MAX(json_extract(event, '$.poolserial'))
                 FROM outbox WHERE instance LIKE '%/' || ?1 GROUP BY 1",
            )
            .map_err(|e| self.db.err(e))?;
        let mut out: HashMap<String, u64> = st
            .query_map(params![parent], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.db.err(e))?
            .into_iter()
            .filter_map(|(p, s)| Some((p.filter(|p| !p.is_empty())?, s? as u64)))
            .collect();
        // What the last listener saw but did not store (other events, routing drops),
        // saved when it stopped.
        if let Some(saved) = self.db.meta(&poolserials_key(parent))? {
            let saved: HashMap<String, u64> = serde_json::from_str(&saved).unwrap_or_default();
            for (pool, s) in saved {
                let e = out.entry(pool).or_insert(0);
                *e = (*e).max(s);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Saves where each pool's serials stood after events that were not stored (other
    /// events, routing drops), for [`Outbox::last_poolserials`].
    pub fn save_poolserials(
        &mut self,
        parent: &str,
        serials: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let map: HashMap<&str, u64> = serials.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let json = serde_json::to_string(&map).expect("a map serializes");
        self.db.set_meta(&poolserials_key(parent), &json)
    }
}

fn poolserials_key(parent: &str) -> String {
    format!("poolserials {parent}")
}
