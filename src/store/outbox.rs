//! The outbox: events committed before supervisord is answered, waiting for
//! delivery. Rows are kept a day after delivery, so that a resend is recognised.

use chrono::Utc;
use rusqlite::params;

use super::threads::save_history;
use super::{Store, StoreError, ThreadRecord};
use crate::supervisord::event::{ProcessState, ThreadKey};

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
