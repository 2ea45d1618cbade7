//! What the channel shows, per thread, as reconcile compares it with supervisord: the
//! newest event the listener holds for each thread (waiting or delivered), and where
//! supervisord's pool serials stopped (to notice events dropped while the listener
//! was down).

use std::collections::HashMap;

use rusqlite::params;

use super::{Store, StoreError};
use crate::supervisord::event::{ProcessState, ThreadKey};

/// The newest event the listener holds for one thread of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub key: ThreadKey,
    pub channel: String,
    /// The newest event: what the parent shows once the outbox is delivered.
    pub event: ProcessState,
}

impl Store {
    /// Per thread of `host`, the newest event held: the newest outbox row (delivered
    /// rows are kept a day; set-aside rows count too, their state was seen), else the
    /// thread map's latest delivered event. One thread per thread key: the channel of
    /// its newest row.
    pub fn known_states(&self, host: &str) -> Result<Vec<Known>, StoreError> {
        let mut out: HashMap<ThreadKey, (i64, Known)> = HashMap::new();
        let mut put = |rank: i64, channel: String, json: &str| {
            let Ok(event) = serde_json::from_str::<ProcessState>(json) else {
                return;
            };
            let key = event.thread_key();
            if out.get(&key).is_some_and(|(r, _)| *r > rank) {
                return;
            }
            out.insert(
                key.clone(),
                (
                    rank,
                    Known {
                        key,
                        channel,
                        event,
                    },
                ),
            );
        };
        let mut st = self
            .conn
            .prepare("SELECT channel, latest FROM threads WHERE host = ?1 AND latest IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![host], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        for (channel, json) in rows {
            put(0, channel, &json);
        }
        // The newest row of each thread (its id ranks above any thread-map entry).
        let mut st = self
            .conn
            .prepare(
                "SELECT o.id, o.channel, o.event FROM outbox o
                 JOIN (SELECT MAX(id) AS id FROM outbox WHERE host = ?1
                       GROUP BY grp, process) m ON o.id = m.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![host], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        for (id, channel, json) in rows {
            put(id, channel, &json);
        }
        let mut known: Vec<Known> = out.into_values().map(|(_, k)| k).collect();
        known.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(known)
    }

    /// Per pool, the highest pool serial stored from the supervisord process `parent`
    /// (`PID@START`, the end of its instance names): where its count stood when this
    /// listener (or the one before it) last stored an event.
    pub fn last_poolserials(&self, parent: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT json_extract(event, '$.pool'), MAX(json_extract(event, '$.poolserial'))
                 FROM outbox WHERE instance LIKE '%/' || ?1 GROUP BY 1",
            )
            .map_err(|e| self.err(e))?;
        let mut out: HashMap<String, u64> = st
            .query_map(params![parent], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?
            .into_iter()
            .filter_map(|(p, s)| Some((p.filter(|p| !p.is_empty())?, s? as u64)))
            .collect();
        // What the last listener saw but did not store (other events, routing drops),
        // saved when it stopped.
        if let Some(saved) = self.meta(&poolserials_key(parent))? {
            let saved: HashMap<String, u64> = serde_json::from_str(&saved).unwrap_or_default();
            for (pool, s) in saved {
                let e = out.entry(pool).or_insert(0);
                *e = (*e).max(s);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Saves where each pool's serials stood after events that were not stored (other
    /// events, routing drops), for [`Store::last_poolserials`].
    pub fn save_poolserials(
        &mut self,
        parent: &str,
        serials: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let map: HashMap<&str, u64> = serials.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let json = serde_json::to_string(&map).expect("a map serializes");
        self.set_meta(&poolserials_key(parent), &json)
    }
}

fn poolserials_key(parent: &str) -> String {
    format!("poolserials {parent}")
}
