//! The delivery side's part of the outbox: the waiting entries of a thread, claimed
//! before they are sent (nothing is folded into them after that), marked delivered
//! once Slack accepted them, or set aside when Slack never will.

use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::Outbox;
use crate::store::StoreError;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Row id: increases in commit order, so ordering by id is event order.
    pub id: i64,
    /// Which supervisord instance sent it (see `listen::instance_id`), so that serials of
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
/// [`Outbox::waiting_view`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitingView {
    /// The newest waiting event (`None`: nothing waits).
    pub newest: Option<ProcessState>,
    /// The states of the newest waiting entries, oldest first.
    pub states: Vec<State>,
}

/// An entry set aside (see [`Outbox::set_aside`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub id: i64,
    pub serial: u64,
    pub key: ThreadKey,
    pub reason: String,
}

impl Outbox {
    /// Thread keys (with channel) that have undelivered entries, oldest entry first.
    pub fn pending_keys(&self) -> Result<Vec<(ThreadKey, String)>, StoreError> {
        self.keyed_events(
            "SELECT host, grp, process, channel, MIN(id) AS first FROM outbox
             WHERE delivered_at IS NULL AND set_aside IS NULL
             GROUP BY host, grp, process, channel ORDER BY first",
        )
    }

    /// The oldest `limit` entries waiting in a thread, in order. An entry that cannot
    /// be read back (a damaged row, a row from a future version) is set aside alone,
    /// so that it never blocks its thread.
    pub fn pending(
        &self,
        key: &ThreadKey,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.entries(
            "SELECT id, instance, channel, event, dropped_before, coalesced FROM outbox
             WHERE delivered_at IS NULL AND set_aside IS NULL
             AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
             ORDER BY id LIMIT ?5",
            params![key.host, key.group, key.process, channel, limit as i64],
        )
    }

    /// Claims a thread's waiting entries up to `upto` (an id from [`Outbox::pending`])
    /// for delivery, and returns them as they are now. From then on the listener never
    /// folds a new event into them (see [`Outbox::coalesce`]): what is marked delivered
    /// is exactly what was sent. One statement each, so a fold either happened before
    /// the claim (and is read here) or goes to a new row.
    pub fn claim(
        &mut self,
        key: &ThreadKey,
        channel: &str,
        upto: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.db.conn
            .prepare_cached(
                "UPDATE outbox SET claimed = 1 WHERE delivered_at IS NULL AND set_aside IS NULL
                 AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4 AND id <= ?5",
            )
            .and_then(|mut st| st.execute(params![key.host, key.group, key.process, channel, upto]))
            .map_err(|e| self.db.err(e))?;
        self.entries(
            "SELECT id, instance, channel, event, dropped_before, coalesced FROM outbox
             WHERE delivered_at IS NULL AND set_aside IS NULL AND claimed = 1
             AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4 AND id <= ?5
             ORDER BY id",
            params![key.host, key.group, key.process, channel, upto],
        )
    }

    /// Claims left by a process that died while delivering: its entries wait again.
    pub fn release_claims(&mut self) -> Result<usize, StoreError> {
        self.db.conn
            .execute(
                "UPDATE outbox SET claimed = 0 WHERE delivered_at IS NULL AND claimed = 1",
                [],
            )
            .map_err(|e| self.db.err(e))
    }

    /// Sets entries aside: Slack would not take them (or they cannot be read back).
    /// They stay on disk with the reason, are counted, and `check` lists them; their
    /// thread goes on without them.
    pub fn set_aside(&mut self, ids: &[i64], reason: &str) -> Result<(), StoreError> {
        let tx = self.db.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.db.path.clone(),
            source: e,
        })?;
        let result = (|| {
            let mut st = tx.prepare_cached(
                "UPDATE outbox SET set_aside = ?1 WHERE id = ?2 AND delivered_at IS NULL",
            )?;
            for id in ids {
                st.execute(params![reason, id])?;
            }
            Ok::<_, rusqlite::Error>(())
        })();
        result.and_then(|_| tx.commit()).map_err(|e| self.db.err(e))
    }

    /// Entries set aside, newest first (at most `limit`), with their reason.
    pub fn set_aside_entries(&self, limit: usize) -> Result<(u64, Vec<SetAside>), StoreError> {
        let count: i64 = self
            .db
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE set_aside IS NOT NULL AND delivered_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.db.err(e))?;
        let mut st = self
            .db
            .conn
            .prepare_cached(
                "SELECT id, serial, host, grp, process, set_aside FROM outbox
                 WHERE set_aside IS NOT NULL AND delivered_at IS NULL ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(params![limit as i64], |r| {
                Ok(SetAside {
                    id: r.get(0)?,
                    serial: r.get::<_, i64>(1)? as u64,
                    key: ThreadKey {
                        host: r.get(2)?,
                        group: r.get(3)?,
                        process: r.get(4)?,
                    },
                    reason: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.db.err(e))?;
        Ok((count as u64, rows))
    }

    fn entries(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut st = self.db.conn.prepare_cached(sql).map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(params, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.db.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, instance, channel, json, dropped, coalesced) in rows {
            match serde_json::from_str(&json) {
                Ok(event) => out.push(OutboxEntry {
                    id,
                    instance,
                    channel,
                    event,
                    dropped_before: dropped as u64,
                    coalesced: coalesced as u64,
                }),
                Err(e) => {
                    let reason = format!("cannot be read back: {e}");
                    tracing::error!(entry = id, "outbox entry {reason}; set aside");
                    let _ = self.db.conn.execute(
                        "UPDATE outbox SET set_aside = ?1 WHERE id = ?2",
                        params![reason, id],
                    );
                }
            }
        }
        Ok(out)
    }

    /// What a thread's parent shows of the outbox, lighter than [`Outbox::pending`]:
    /// the newest waiting event, and the states (only `to`, read inside SQLite: no
    /// event is decoded) of the newest `limit` waiting entries, oldest first. One
    /// read transaction, so the two agree.
    pub fn waiting_view(
        &self,
        key: &ThreadKey,
        channel: &str,
        limit: usize,
    ) -> Result<WaitingView, StoreError> {
        let tx = self.db.conn.unchecked_transaction().map_err(|e| self.db.err(e))?;
        let newest: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, event FROM outbox
                 WHERE delivered_at IS NULL AND set_aside IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![key.host, key.group, key.process, channel], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.db.err(e))?;
        let Some((id, json)) = newest else {
            return Ok(WaitingView::default());
        };
        let unreadable = |what: &str| StoreError::Other {
            path: self.db.path.clone(),
            message: format!("outbox entry {id} cannot be read back: {what}"),
        };
        let newest: ProcessState =
            serde_json::from_str(&json).map_err(|e| unreadable(&e.to_string()))?;
        let mut states = Vec::new();
        {
            let mut st = tx
                .prepare_cached(
                    "SELECT json_extract(event, '$.to') FROM outbox
                     WHERE delivered_at IS NULL AND set_aside IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
                     ORDER BY id DESC LIMIT ?5",
                )
                .map_err(|e| self.db.err(e))?;
            let mut rows = st
                .query(params![
                    key.host,
                    key.group,
                    key.process,
                    channel,
                    limit as i64
                ])
                .map_err(|e| self.db.err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.db.err(e))? {
                let to = r.get_ref(0).map_err(|e| self.db.err(e))?;
                let state = to
                    .as_str()
                    .ok()
                    .and_then(|s| s.parse::<State>().ok())
                    .ok_or_else(|| unreadable("no state"))?;
                states.push(state);
            }
        }
        tx.finish().map_err(|e| self.db.err(e))?;
        states.reverse();
        Ok(WaitingView {
            newest: Some(newest),
            states,
        })
    }

    /// The newest entry a thread has (waiting or not): what a note written now
    /// follows.
    pub fn newest_id(&self, key: &ThreadKey, channel: &str) -> Result<Option<i64>, StoreError> {
        self.db
            .conn
            .prepare_cached(
                "SELECT MAX(id) FROM outbox WHERE host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
            )
            .and_then(|mut st| st.query_row(params![key.host, key.group, key.process, channel], |r| r.get(0)))
            .map_err(|e| self.db.err(e))
    }

    /// Marks entries delivered: Slack accepted the reply that carried them.
    pub fn mark_delivered(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        let now = Utc::now().to_rfc3339();
        let tx = self.db.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.db.path.clone(),
            source: e,
        })?;
        let result = (|| {
            let mut st = tx.prepare_cached("UPDATE outbox SET delivered_at = ?1 WHERE id = ?2")?;
            for id in ids {
                st.execute(params![now, id])?;
            }
            Ok::<_, rusqlite::Error>(())
        })();
        result.and_then(|_| tx.commit()).map_err(|e| self.db.err(e))
    }

    /// Deletes delivered entries older than `keep` (they are kept a while so that a
    /// resent event is still recognised as a duplicate).
    pub fn prune(&mut self, keep: chrono::Duration) -> Result<usize, StoreError> {
        let cutoff = (Utc::now() - keep).to_rfc3339();
        self.db.conn
            .execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?1",
                params![cutoff],
            )
            .map_err(|e| self.db.err(e))
    }

}
