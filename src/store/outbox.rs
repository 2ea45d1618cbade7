//! The outbox: events committed before supervisord is answered, waiting for
//! delivery. Rows are kept a day after delivery, so that a resend is recognised.

use chrono::Utc;
use rusqlite::{params, OptionalExtension};

use super::threads::save_history;
use super::{Store, StoreError, ThreadRecord};
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

/// What waits in the outbox for one thread, as its parent shows it (see
/// [`Store::waiting_view`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitingView {
    /// The newest waiting event (`None`: nothing waits).
    pub newest: Option<ProcessState>,
    /// The states of the newest waiting entries, oldest first.
    pub states: Vec<State>,
}

/// An entry set aside (see [`Store::set_aside`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub id: i64,
    pub serial: u64,
    pub key: ThreadKey,
    pub reason: String,
}

impl Store {
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
    /// thread that is not being delivered, so the thread still ends in the right state and the card can say how
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
                "SELECT MAX(id) FROM outbox WHERE delivered_at IS NULL AND set_aside IS NULL
                 AND claimed = 0 AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4",
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
        // The row may have been claimed for delivery since: then it is left alone
        // (what is sent is what is marked delivered) and the event gets a row.
        let folded = self
            .conn
            .prepare_cached(
                "UPDATE OR IGNORE outbox SET instance = ?1, serial = ?2, event = ?3,
                 dropped_before = dropped_before + ?4, coalesced = coalesced + 1
                 WHERE id = ?5 AND claimed = 0 AND delivered_at IS NULL",
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
        if folded == 0 {
            return self.append(instance, channel, event, dropped_before);
        }
        Ok(Appended::Coalesced(id))
    }

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

    /// Claims a thread's waiting entries up to `upto` (an id from [`Store::pending`])
    /// for delivery, and returns them as they are now. From then on the listener never
    /// folds a new event into them (see [`Store::coalesce`]): what is marked delivered
    /// is exactly what was sent. One statement each, so a fold either happened before
    /// the claim (and is read here) or goes to a new row.
    pub fn claim(
        &mut self,
        key: &ThreadKey,
        channel: &str,
        upto: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET claimed = 1 WHERE delivered_at IS NULL AND set_aside IS NULL
                 AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4 AND id <= ?5",
            )
            .and_then(|mut st| st.execute(params![key.host, key.group, key.process, channel, upto]))
            .map_err(|e| self.err(e))?;
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
        self.conn
            .execute(
                "UPDATE outbox SET claimed = 0 WHERE delivered_at IS NULL AND claimed = 1",
                [],
            )
            .map_err(|e| self.err(e))
    }

    /// Sets entries aside: Slack would not take them (or they cannot be read back).
    /// They stay on disk with the reason, are counted, and `check` lists them; their
    /// thread goes on without them.
    pub fn set_aside(&mut self, ids: &[i64], reason: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
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
        result.and_then(|_| tx.commit()).map_err(|e| self.err(e))
    }

    /// Entries set aside, newest first (at most `limit`), with their reason.
    pub fn set_aside_entries(&self, limit: usize) -> Result<(u64, Vec<SetAside>), StoreError> {
        let count: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE set_aside IS NOT NULL AND delivered_at IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, serial, host, grp, process, set_aside FROM outbox
                 WHERE set_aside IS NOT NULL AND delivered_at IS NULL ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
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
            .map_err(|e| self.err(e))?;
        Ok((count as u64, rows))
    }

    fn entries(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
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
            .map_err(|e| self.err(e))?;
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
                    let _ = self.conn.execute(
                        "UPDATE outbox SET set_aside = ?1 WHERE id = ?2",
                        params![reason, id],
                    );
                }
            }
        }
        Ok(out)
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
                 WHERE delivered_at IS NULL AND set_aside IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
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
                     WHERE delivered_at IS NULL AND set_aside IS NULL AND host = ?1 AND grp = ?2 AND process = ?3 AND channel = ?4
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
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND set_aside IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
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

}
