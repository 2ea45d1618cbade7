//! A program's card across the fleet, in the database: the claim to post its parent
//! (one host wins, whatever the race), each host's part of the program, the card's
//! trail, and its broadcast episode (the first failure told once; once more if it
//! spreads to half the hosts).

use std::time::Duration;

use super::{json, PostgresShared};
use crate::store::shared::{HostProcess, ProgramOnHost, HISTORY_MAX};
use crate::store::StoreError;
use crate::supervisord::event::{State, ThreadKey};

pub(super) async fn claim_parent(
    s: &PostgresShared,
    key: &ThreadKey,
    channel: &str,
    replaces: Option<&str>,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let secs = ttl.as_secs_f64();
    // The row of a thread nobody posted yet is made by the first to claim it.
    let row = s
        .pg
        .query_opt(
            "INSERT INTO threads AS t (fleet, host, grp, process, channel, claim_holder, claim_until)
             VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
             ON CONFLICT (fleet, host, grp, process, channel) DO UPDATE SET
                 claim_holder = excluded.claim_holder, claim_until = excluded.claim_until
             WHERE t.parent_ts IS NOT DISTINCT FROM $8
               AND (t.claim_holder IS NULL OR t.claim_holder = excluded.claim_holder OR t.claim_until < now())
             RETURNING 1",
            &[&s.fleet, &key.host, &key.group, &key.process, &channel, &holder, &secs, &replaces],
        )
        .await?;
    Ok(row.is_some())
}

pub(super) async fn program_hosts(
    s: &PostgresShared,
    group: &str,
    process: &str,
    channel: &str,
) -> Result<Vec<ProgramOnHost>, StoreError> {
    let rows = s
        .pg
        .query(
            "SELECT t.host, t.latest, h.processes, EXTRACT(EPOCH FROM now() - h.last_seen)::float8
             FROM threads t LEFT JOIN hosts h ON h.fleet = t.fleet AND h.host = t.host
             WHERE t.fleet = $1 AND t.grp = $2 AND t.process = $3 AND t.channel = $4 AND t.host <> ''
             ORDER BY t.host",
            &[&s.fleet, &group, &process, &channel],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let table: Option<serde_json::Value> = r.get(2);
            let reported = table
                .and_then(|t| serde_json::from_value::<Vec<HostProcess>>(t).ok())
                .and_then(|t| {
                    t.into_iter()
                        .find(|p| p.group == group && p.process == process)
                });
            ProgramOnHost {
                host: r.get(0),
                latest: r
                    .get::<_, Option<serde_json::Value>>(1)
                    .and_then(|l| serde_json::from_value(l).ok()),
                reported,
                quiet_for: r
                    .get::<_, Option<f64>>(3)
                    .map(|s| Duration::try_from_secs_f64(s).unwrap_or_default()),
            }
        })
        .collect())
}

pub(super) async fn record_trail(
    s: &PostgresShared,
    key: &ThreadKey,
    channel: &str,
    state: State,
) -> Result<(), StoreError> {
    let max = HISTORY_MAX as i64;
    s.pg
        .query(
            "UPDATE threads t SET history = (SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb) FROM (
                 SELECT e, i FROM jsonb_array_elements(t.history || $6) WITH ORDINALITY AS x(e, i)
                 ORDER BY i DESC LIMIT $7) kept)
             WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5",
            &[&s.fleet, &key.host, &key.group, &key.process, &channel, &json(&[state]), &max],
        )
        .await?;
    Ok(())
}

pub(super) async fn fleet_broadcast(
    s: &PostgresShared,
    key: &ThreadKey,
    channel: &str,
    failing: usize,
    hosts: usize,
    regroup: Duration,
) -> Result<bool, StoreError> {
    let (failing, hosts) = (failing as i32, hosts as i32);
    let row = s
        .pg
        .query_opt(
            "UPDATE threads t SET episode = n.episode
             FROM (SELECT CASE
                 WHEN e IS NULL OR ((e->>'calm_since') IS NOT NULL
                                    AND (e->>'calm_since')::timestamptz < now() - make_interval(secs => $8))
                     THEN jsonb_build_object('since', now(), 'broadcasts', 1, 'first_failing', $6::int,
                                             'first_at', now(), 'said', true)
                 WHEN (e->>'broadcasts')::int < 2 AND $7::int > 1 AND $6::int * 2 >= $7::int
                      AND (e->>'first_failing')::int * 2 < $7::int
                      AND (e->>'first_at')::timestamptz < now() - make_interval(secs => $8)
                     THEN (e - 'calm_since') || jsonb_build_object('broadcasts', 2, 'said', true)
                 ELSE (e - 'calm_since') || jsonb_build_object('said', false)
               END AS episode
               FROM (SELECT episode AS e FROM threads
                     WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5
                     FOR UPDATE) cur) n
             WHERE t.fleet = $1 AND t.host = $2 AND t.grp = $3 AND t.process = $4 AND t.channel = $5
             RETURNING (n.episode->>'said')::bool",
            &[&s.fleet, &key.host, &key.group, &key.process, &channel, &failing, &hosts, &regroup.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, bool>(0)).unwrap_or(false))
}

pub(super) async fn fleet_calm(
    s: &PostgresShared,
    key: &ThreadKey,
    channel: &str,
) -> Result<(), StoreError> {
    s.pg.query(
        "UPDATE threads SET episode = episode || jsonb_build_object('calm_since', now())
             WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5
               AND episode IS NOT NULL AND episode->>'calm_since' IS NULL",
        &[&s.fleet, &key.host, &key.group, &key.process, &channel],
    )
    .await?;
    Ok(())
}
