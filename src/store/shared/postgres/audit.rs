//! The click audit of a fleet, in the database: each click once (a click delivered
//! twice, to two connections, is recorded by the first), its outcome, the newest rows
//! for `check`, and a bounded history (the action queue's old rows go with it).

use super::{actions, PostgresShared};
use crate::store::shared::{AuditKeep, AuditRow};
use crate::store::StoreError;
use crate::supervisord::event::ThreadKey;

pub(super) async fn record_click(
    s: &PostgresShared,
    user: &str,
    click: &str,
    key: &ThreadKey,
    action: &str,
) -> Result<Option<i64>, StoreError> {
    let row = s
        .pg
        .query_opt(
            "INSERT INTO clicks (fleet, user_id, click, host, grp, process, action)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (fleet, user_id, click) DO NOTHING RETURNING id",
            &[&s.fleet, &user, &click, &key.host, &key.group, &key.process, &action],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn click_outcome(s: &PostgresShared, id: i64, outcome: &str) -> Result<(), StoreError> {
    s.pg
        .query(
            "UPDATE clicks SET outcome = $3 WHERE fleet = $1 AND id = $2",
            &[&s.fleet, &id, &outcome],
        )
        .await?;
    Ok(())
}

pub(super) async fn rows(s: &PostgresShared, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
    let rows = s
        .pg
        .query(
            "SELECT id, at, user_id, host, grp, process, action, outcome FROM clicks
             WHERE fleet = $1 ORDER BY id DESC LIMIT $2",
            &[&s.fleet, &(limit as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            id: r.get(0),
            at: r.get(1),
            user: r.get(2),
            key: ThreadKey {
                host: r.get(3),
                group: r.get(4),
                process: r.get(5),
            },
            action: r.get(6),
            outcome: r.get(7),
        })
        .collect())
}

pub(super) async fn prune(s: &PostgresShared, keep: AuditKeep) -> Result<usize, StoreError> {
    let gone = s
        .pg
        .query(
            "DELETE FROM clicks WHERE fleet = $1 AND (at < now() - make_interval(days => $2)
                 OR id <= (SELECT id FROM clicks WHERE fleet = $1 ORDER BY id DESC OFFSET $3 LIMIT 1))
             RETURNING 1",
            &[&s.fleet, &(keep.days as i32), &(keep.rows as i64)],
        )
        .await?;
    let done = actions::prune(&s.pg, &s.fleet).await?;
    if done > 0 {
        tracing::info!(rows = done, "forgot the fleet's actions older than {} day(s)", actions::KEEP_DAYS);
    }
    Ok(gone.len())
}
