//! The fleet's action queue: a click or a question for the host that owns the
//! process, as a row its owner takes once (`FOR UPDATE SKIP LOCKED`), runs and
//! answers. `NOTIFY` only wakes the owner ([`Bells`]); the row is the truth, and the
//! owner looks every few seconds anyway (a notification sent while its connection
//! was down is lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::conn::Pg;
use crate::store::{ActionState, QueuedAction, StoreError};

/// How long done and expired actions are kept (for a look at what happened).
pub const KEEP_DAYS: i32 = 1;

/// One bell per owner host of this process, rung when an action is queued for it.
#[derive(Default)]
pub struct Bells(Mutex<HashMap<String, Arc<Notify>>>);

impl Bells {
    fn bell(&self, owner: &str) -> Arc<Notify> {
        self.0
            .lock()
            .unwrap()
            .entry(owner.to_string())
            .or_default()
            .clone()
    }

    /// Rings `owner`'s bell: its next wait ends at once, even if nobody waits now.
    pub fn ring(&self, owner: &str) {
        self.bell(owner).notify_one();
    }

    /// Waits at most `within` for `owner`'s bell.
    pub async fn wait(&self, owner: &str, within: Duration) {
        let bell = self.bell(owner);
        let _ = tokio::time::timeout(within, bell.notified()).await;
    }

    /// Rings the bells of the actions other hosts queue in `fleet`, for the life of
    /// the connection keeper.
    pub async fn hear(self: Arc<Self>, pg: Arc<Pg>, fleet: String) {
        let mut notices = pg.notices();
        loop {
            match notices.recv().await {
                Ok(payload) => {
                    let mut parts = payload.splitn(3, ' ');
                    if let (Some("action"), Some(f), Some(owner)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        if f == fleet {
                            self.ring(owner);
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Some were missed: whoever waits looks now.
                    for bell in self.0.lock().unwrap().values() {
                        bell.notify_one();
                    }
                }
                Err(_) => return,
            }
        }
    }
}

pub async fn queue(
    pg: &Pg,
    fleet: &str,
    owner: &str,
    kind: &str,
    payload: &serde_json::Value,
    ttl: Duration,
) -> Result<i64, StoreError> {
    let row = pg
        .query_opt(
            "WITH q AS (
                 INSERT INTO actions (fleet, owner, kind, payload, expires_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                 RETURNING id)
             SELECT id, pg_notify('supervisor_slack', 'action ' || $1 || ' ' || $2) FROM q",
            &[&fleet, &owner, &kind, payload, &ttl.as_secs_f64()],
        )
        .await?;
    row.map(|r| r.get::<_, i64>(0))
        .ok_or_else(|| StoreError::Fleet {
            message: "the fleet database did not queue the action".into(),
        })
}

pub async fn take(pg: &Pg, fleet: &str, owner: &str) -> Result<Vec<QueuedAction>, StoreError> {
    let rows = pg
        .query(
            "UPDATE actions SET state = 'taken', taken_at = now()
             WHERE id IN (SELECT id FROM actions
                          WHERE fleet = $1 AND owner = $2 AND state = 'queued' AND expires_at > now()
                          ORDER BY id FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, payload",
            &[&fleet, &owner],
        )
        .await?;
    let mut out: Vec<QueuedAction> = rows
        .iter()
        .map(|r| QueuedAction {
            id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
        })
        .collect();
    out.sort_by_key(|a| a.id);
    Ok(out)
}

pub async fn finish(
    pg: &Pg,
    fleet: &str,
    id: i64,
    answer: &serde_json::Value,
) -> Result<(), StoreError> {
    pg.query(
        "UPDATE actions SET state = 'done', answer = $3 WHERE fleet = $1 AND id = $2",
        &[&fleet, &id, answer],
    )
    .await?;
    Ok(())
}

pub async fn state(pg: &Pg, fleet: &str, id: i64) -> Result<ActionState, StoreError> {
    let row = pg
        .query_opt(
            "SELECT state, answer FROM actions WHERE fleet = $1 AND id = $2",
            &[&fleet, &id],
        )
        .await?;
    Ok(match row {
        None => ActionState::Gone,
        Some(r) => match r.get::<_, String>(0).as_str() {
            "queued" => ActionState::Queued,
            "taken" => ActionState::Taken,
            "done" => {
                ActionState::Done(r.get::<_, Option<serde_json::Value>>(1).unwrap_or_default())
            }
            _ => ActionState::Expired,
        },
    })
}

pub async fn expire(pg: &Pg, fleet: &str, id: i64) -> Result<bool, StoreError> {
    let row = pg
        .query_opt(
            "UPDATE actions SET state = 'expired' WHERE fleet = $1 AND id = $2 AND state = 'queued' RETURNING id",
            &[&fleet, &id],
        )
        .await?;
    Ok(row.is_some())
}

/// Forgets the actions older than [`KEEP_DAYS`]; how many.
pub async fn prune(pg: &Pg, fleet: &str) -> Result<usize, StoreError> {
    let gone = pg
        .query(
            "DELETE FROM actions WHERE fleet = $1 AND created_at < now() - make_interval(days => $2) RETURNING 1",
            &[&fleet, &KEEP_DAYS],
        )
        .await?;
    Ok(gone.len())
}
