//! The hosts of a fleet, in the database: heartbeats with each host's process table,
//! silence and return (each said once across the fleet), and leases (one holder at a
//! time, taken over when they expire).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{json, PostgresShared};
use crate::store::shared::{HostProcess, HostRecord};
use crate::store::StoreError;

pub(super) async fn heartbeat(
    s: &PostgresShared,
    host: &str,
    processes: &[HostProcess],
    from_supervisord: bool,
) -> Result<(), StoreError> {
    s.pg.query(
        "INSERT INTO hosts (fleet, host, last_seen, processes, from_supervisord)
             VALUES ($1, $2, now(), $3, $4)
             ON CONFLICT (fleet, host) DO UPDATE SET last_seen = now(),
                 processes = excluded.processes, from_supervisord = excluded.from_supervisord",
        &[&s.fleet, &host, &json(&processes), &from_supervisord],
    )
    .await?;
    Ok(())
}

pub(super) async fn hosts(s: &PostgresShared) -> Result<Vec<HostRecord>, StoreError> {
    let rows =
        s.pg.query(
            "SELECT host, last_seen, EXTRACT(EPOCH FROM now() - last_seen)::float8, processes,
                    from_supervisord, silent_since
             FROM hosts WHERE fleet = $1 ORDER BY host",
            &[&s.fleet],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HostRecord {
            host: r.get(0),
            last_seen: r.get(1),
            quiet_for: Duration::try_from_secs_f64(r.get(2)).unwrap_or_default(),
            processes: serde_json::from_value(r.get(3)).unwrap_or_default(),
            from_supervisord: r.get(4),
            silent_since: r.get(5),
        })
        .collect())
}

pub(super) async fn newly_silent(
    s: &PostgresShared,
    after: Duration,
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let rows = s
        .pg
        .query(
            "UPDATE hosts SET silent_since = last_seen
             WHERE fleet = $1 AND silent_since IS NULL AND last_seen < now() - make_interval(secs => $2)
             RETURNING host, last_seen",
            &[&s.fleet, &after.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn back_again(
    s: &PostgresShared,
    after: Duration,
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let rows =
        s.pg.query(
            "UPDATE hosts h SET silent_since = NULL
             FROM (SELECT host, silent_since AS was FROM hosts
                   WHERE fleet = $1 AND silent_since IS NOT NULL
                     AND last_seen >= now() - make_interval(secs => $2)
                   FOR UPDATE) back
             WHERE h.fleet = $1 AND h.host = back.host
             RETURNING h.host, back.was",
            &[&s.fleet, &after.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn lease(
    s: &PostgresShared,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let row = s
        .pg
        .query_opt(
            "INSERT INTO leases AS l (fleet, name, holder, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (fleet, name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE l.holder = excluded.holder OR l.expires_at < now()
             RETURNING holder",
            &[&s.fleet, &name, &holder, &ttl.as_secs_f64()],
        )
        .await?;
    Ok(row.is_some())
}

pub(super) async fn release(
    s: &PostgresShared,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    s.pg.query(
        "DELETE FROM leases WHERE fleet = $1 AND name = $2 AND holder = $3",
        &[&s.fleet, &name, &holder],
    )
    .await?;
    Ok(())
}
