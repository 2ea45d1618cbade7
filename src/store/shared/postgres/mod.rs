//! The shared state of a fleet, in PostgreSQL: many hosts, one database (one
//! connection each), every row tagged with the fleet's name so that one database can
//! hold several fleets. What stays local is the outbox (each host's SQLite): a host
//! answers supervisord whatever the database does, and its deliveries wait (events
//! kept on disk) while the database is out of reach.
//! - [`conn`]: the one connection, kept up in the background, queries bounded;
//! - [`schema`]: the listener's own tables, migrated at connect under an advisory lock;
//! - [`budget`]: one budget per channel for the whole fleet, and the shared 429 gate.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{
    ActionState, AuditKeep, AuditRow, Budget, CommandSeen, CrashRecord, Episode, HostProcess, HostRecord, Mute, Posted, ProgramOnHost, QueuedAction, SharedState, ThreadRecord,
    HISTORY_MAX,
};
use crate::config::FleetSettings;
use crate::pacing::Call;
use crate::store::StoreError;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

mod actions;
mod budget;
mod conn;
mod schema;

use budget::SharedBudget;
use conn::Pg;

/// The newest `/supervisor` command that reached the fleet, in `meta`.
const COMMAND_META: &str = "last_command";
const KEY_META: &str = "action_signing_key";

/// A fleet's shared state.
pub struct PostgresShared {
    pg: Arc<Pg>,
    fleet: String,
    budget: Arc<SharedBudget>,
    /// Rung when an action is queued for a host of this process.
    bells: Arc<actions::Bells>,
    /// The tasks that keep the connection and hear notifications: stopped (and the
    /// connection closed) when this is dropped.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for PostgresShared {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What `check` reports of the fleet database.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetProbe {
    /// `HOST:PORT/DATABASE as USER`.
    pub address: String,
    /// The server's version (`server_version`).
    pub server_version: String,
    /// The listener's schema version there (0: none yet), and this release's.
    pub schema: i32,
    pub schema_known: i32,
    /// The hosts of this fleet, and how long since each was heard of.
    pub hosts: Vec<(String, Duration)>,
    /// Whether the role may create tables in the database (the first listener needs
    /// to, to create the schema; later migrations too).
    pub can_create: bool,
    /// Who holds the Slack app's Socket Mode connections: (slot, host).
    pub sockets: Vec<(String, String)>,
}

impl PostgresShared {
    /// The fleet's shared state, connecting in the background (call inside the
    /// runtime): it is usable at once, and its calls fail (or pace locally) until the
    /// database answers.
    pub fn start(fleet: &FleetSettings, pace: Budget) -> Result<Arc<PostgresShared>, StoreError> {
        let pg = Pg::new(&fleet.url)?;
        let keeper = tokio::spawn(pg.clone().keep()).abort_handle();
        let (budget, hearing) = SharedBudget::new(pg.clone(), fleet.name.clone(), pace);
        let bells = Arc::new(actions::Bells::default());
        let ringing = tokio::spawn(bells.clone().hear(pg.clone(), fleet.name.clone())).abort_handle();
        Ok(Arc::new(PostgresShared {
            budget,
            pg,
            bells,
            fleet: fleet.name.clone(),
            tasks: vec![keeper, hearing, ringing],
        }))
    }

    /// Completes when the database answers (for tests and `check`).
    pub async fn until_connected(&self) {
        self.pg.until_up().await;
    }

    /// Whether the database answers now.
    pub fn connected(&self) -> bool {
        self.pg.is_up()
    }

    /// Connects once (no schema change) and says what the fleet database holds: for
    /// `check`. The error says what is wrong and how to fix it.
    pub async fn probe(fleet: &FleetSettings) -> Result<FleetProbe, StoreError> {
        let pg = Pg::new(&fleet.url)?;
        let address = pg.address();
        let config: tokio_postgres::Config = fleet.url.expose().parse().map_err(|_| StoreError::Fleet {
            message: "fleet_url is not a PostgreSQL connection string".into(),
        })?;
        let connect = tokio::time::timeout(Duration::from_secs(10), config.connect(tokio_postgres::NoTls));
        let (client, connection) = match connect.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(pg.error(&e)),
            Err(_) => {
                return Err(StoreError::Fleet {
                    message: format!("no answer from {address} within 10s"),
                })
            }
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let can_create: bool = client
            .query_one("SELECT has_database_privilege(current_user, current_database(), 'CREATE')", &[])
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let at = match schema::version(&client).await {
            Ok(v) => v,
            // A role that may not create the schema's bookkeeping table: no schema yet.
            Err(_) if !can_create => 0,
            Err(e) => return Err(pg.error(&e)),
        };
        let has_hosts: bool = client
            .query_one("SELECT to_regclass('hosts') IS NOT NULL", &[])
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let hosts = if has_hosts {
            client
                .query(
                    "SELECT host, EXTRACT(EPOCH FROM now() - last_seen)::float8 FROM hosts WHERE fleet = $1 ORDER BY host",
                    &[&fleet.name],
                )
                .await
                .map_err(|e| pg.error(&e))?
                .iter()
                .map(|r| (r.get::<_, String>(0), Duration::try_from_secs_f64(r.get(1)).unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        let sockets = if has_hosts {
            client
                .query(
                    "SELECT name, holder FROM leases WHERE fleet = $1 AND starts_with(name, 'socket ') AND expires_at > now() ORDER BY name",
                    &[&fleet.name],
                )
                .await
                .map_err(|e| pg.error(&e))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(FleetProbe {
            sockets,
            address,
            server_version: version,
            schema: at,
            schema_known: schema::VERSION,
            hosts,
            can_create,
        })
    }
}

fn thread_from(key: &ThreadKey, channel: &str, r: &Row) -> Result<ThreadRecord, StoreError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| StoreError::Fleet {
        message: format!("thread {key}: bad {what} in the fleet database: {e}"),
    };
    let history: serde_json::Value = r.get("history");
    let latest: Option<serde_json::Value> = r.get("latest");
    Ok(ThreadRecord {
        key: key.clone(),
        channel: channel.to_string(),
        channel_id: r.get("channel_id"),
        parent_ts: r.get("parent_ts"),
        created: r.get("created"),
        history: serde_json::from_value(history).map_err(|e| bad("history", &e))?,
        latest: latest
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("latest", &e))?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializes")
}

#[async_trait]
impl SharedState for PostgresShared {
    async fn thread(&self, key: &ThreadKey, channel: &str) -> Result<Option<ThreadRecord>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "SELECT channel_id, parent_ts, created, history, latest FROM threads
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel],
            )
            .await?;
        row.map(|r| thread_from(key, channel, &r)).transpose()
    }

    async fn threads_of(&self, key: &ThreadKey) -> Result<Vec<ThreadRecord>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT channel, channel_id, parent_ts, created, history, latest FROM threads
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4",
                &[&self.fleet, &key.host, &key.group, &key.process],
            )
            .await?;
        rows.iter()
            .map(|r| thread_from(key, &r.get::<_, String>("channel"), r))
            .collect()
    }

    async fn latest_states(&self, host: &str) -> Result<Vec<(ThreadKey, String, ProcessState)>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT grp, process, channel, latest FROM threads
                 WHERE fleet = $1 AND host = $2 AND latest IS NOT NULL",
                &[&self.fleet, &host],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let event = serde_json::from_value(r.get::<_, serde_json::Value>(3)).ok()?;
                let key = ThreadKey {
                    host: host.to_string(),
                    group: r.get(0),
                    process: r.get(1),
                };
                Some((key, r.get(2), event))
            })
            .collect())
    }

    async fn set_parent(
        &self,
        key: &ThreadKey,
        channel: &str,
        replaces: Option<&str>,
        parent: &Posted,
        start_over: bool,
    ) -> Result<bool, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &self.fleet,
            &key.host,
            &key.group,
            &key.process,
            &channel,
            &parent.channel_id,
            &parent.ts,
            &parent.at,
            &start_over,
            &replaces,
        ];
        let updated = self
            .pg
            .query(
                "UPDATE threads SET channel_id = $6, parent_ts = $7, created = $8,
                     history = CASE WHEN $9 THEN '[]'::jsonb ELSE history END,
                     claim_holder = NULL, claim_until = NULL
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5
                   AND parent_ts IS NOT DISTINCT FROM $10
                 RETURNING 1",
                &params,
            )
            .await?;
        if !updated.is_empty() {
            return Ok(true);
        }
        if replaces.is_some() {
            return Ok(false);
        }
        // A thread not recorded yet.
        let inserted = self
            .pg
            .query(
                "INSERT INTO threads (fleet, host, grp, process, channel, channel_id, parent_ts, created)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT DO NOTHING RETURNING 1",
                &params[..8],
            )
            .await?;
        Ok(!inserted.is_empty())
    }

    async fn record_delivery(
        &self,
        key: &ThreadKey,
        channel: &str,
        states: &[State],
        latest: &ProcessState,
    ) -> Result<(), StoreError> {
        let states = &states[states.len().saturating_sub(HISTORY_MAX)..];
        let max = HISTORY_MAX as i64;
        self.pg
            .query(
                "INSERT INTO threads AS t (fleet, host, grp, process, channel, history, latest)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (fleet, host, grp, process, channel) DO UPDATE SET
                     history = (SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb) FROM (
                         SELECT e, i FROM jsonb_array_elements(t.history || excluded.history)
                             WITH ORDINALITY AS x(e, i)
                         ORDER BY i DESC LIMIT $8) kept),
                     latest = excluded.latest",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel, &json(&states), &json(latest), &max],
            )
            .await?;
        Ok(())
    }

    async fn acquire(&self, call: Call<'_>) {
        self.budget.acquire(call).await;
    }

    async fn rate_limited(&self, call: Call<'_>, retry_after: Duration) {
        self.budget.rate_limited(call, retry_after).await;
    }

    async fn accepted(&self, call: Call<'_>) {
        self.budget.accepted(call);
    }

    async fn mute(&self, key: &ThreadKey, by: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        self.pg
            .query(
                "INSERT INTO mutes (fleet, host, grp, process, by_user, until) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (fleet, host, grp, process) DO UPDATE SET by_user = excluded.by_user, until = excluded.until",
                &[&self.fleet, &key.host, &key.group, &key.process, &by, &until],
            )
            .await?;
        Ok(())
    }

    async fn unmute(&self, key: &ThreadKey) -> Result<bool, StoreError> {
        let gone = self
            .pg
            .query(
                "DELETE FROM mutes WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 RETURNING 1",
                &[&self.fleet, &key.host, &key.group, &key.process],
            )
            .await?;
        Ok(!gone.is_empty())
    }

    async fn mute_of(&self, key: &ThreadKey) -> Result<Option<Mute>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "SELECT by_user, until FROM mutes
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND until > now()",
                &[&self.fleet, &key.host, &key.group, &key.process],
            )
            .await?;
        Ok(row.map(|r| Mute {
            by: r.get(0),
            until: r.get(1),
        }))
    }

    async fn record_click(
        &self,
        user: &str,
        click: &str,
        key: &ThreadKey,
        action: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "INSERT INTO clicks (fleet, user_id, click, host, grp, process, action)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (fleet, user_id, click) DO NOTHING RETURNING id",
                &[&self.fleet, &user, &click, &key.host, &key.group, &key.process, &action],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn click_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.pg
            .query(
                "UPDATE clicks SET outcome = $3 WHERE fleet = $1 AND id = $2",
                &[&self.fleet, &id, &outcome],
            )
            .await?;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT id, at, user_id, host, grp, process, action, outcome FROM clicks
                 WHERE fleet = $1 ORDER BY id DESC LIMIT $2",
                &[&self.fleet, &(limit as i64)],
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

    async fn prune_audit(&self, keep: AuditKeep) -> Result<usize, StoreError> {
        let gone = self
            .pg
            .query(
                "DELETE FROM clicks WHERE fleet = $1 AND (at < now() - make_interval(days => $2)
                     OR id <= (SELECT id FROM clicks WHERE fleet = $1 ORDER BY id DESC OFFSET $3 LIMIT 1))
                 RETURNING 1",
                &[&self.fleet, &(keep.days as i32), &(keep.rows as i64)],
            )
            .await?;
        let done = actions::prune(&self.pg, &self.fleet).await?;
        if done > 0 {
            tracing::info!(rows = done, "forgot the fleet's actions older than {} day(s)", actions::KEEP_DAYS);
        }
        Ok(gone.len())
    }

    async fn signing_key(&self) -> Result<Vec<u8>, StoreError> {
        let fresh = crate::actions::Signer::generate_key().map_err(|_| StoreError::Fleet {
            message: "no random bytes for the signing key".into(),
        })?;
        // The first host to ask makes the fleet's key; every other host reads it.
        let row = self
            .pg
            .query_opt(
                "WITH made AS (
                     INSERT INTO meta (fleet, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (fleet, key) DO NOTHING RETURNING value)
                 SELECT value FROM made UNION ALL
                 SELECT value FROM meta WHERE fleet = $1 AND key = $2 LIMIT 1",
                &[&self.fleet, &KEY_META, &hex::encode(fresh)],
            )
            .await?;
        let text: String = row.map(|r| r.get(0)).unwrap_or_default();
        match hex::decode(text) {
            Ok(b) if b.len() >= 32 => Ok(b),
            _ => Err(StoreError::Fleet {
                message: format!("the fleet's signing key (meta {KEY_META}) is damaged; delete that row to make a new one (buttons on older cards stop working)"),
            }),
        }
    }

    async fn board(&self, name: &str) -> Result<Option<Posted>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "SELECT channel_id, ts, at FROM boards WHERE fleet = $1 AND name = $2",
                &[&self.fleet, &name],
            )
            .await?;
        Ok(row.map(|r| Posted {
            channel_id: r.get(0),
            ts: r.get(1),
            at: r.get(2),
        }))
    }

    async fn save_board(&self, name: &str, at: &Posted) -> Result<(), StoreError> {
        self.pg
            .query(
                "INSERT INTO boards (fleet, name, channel_id, ts, at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (fleet, name) DO UPDATE SET channel_id = excluded.channel_id, ts = excluded.ts, at = excluded.at",
                &[&self.fleet, &name, &at.channel_id, &at.ts, &at.at],
            )
            .await?;
        Ok(())
    }

    fn fleet(&self) -> Option<&str> {
        Some(&self.fleet)
    }

    async fn ready(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.pg.until_up()).await;
    }

    async fn heartbeat(&self, host: &str, processes: &[HostProcess], from_supervisord: bool) -> Result<(), StoreError> {
        self.pg
            .query(
                "INSERT INTO hosts (fleet, host, last_seen, processes, from_supervisord)
                 VALUES ($1, $2, now(), $3, $4)
                 ON CONFLICT (fleet, host) DO UPDATE SET last_seen = now(),
                     processes = excluded.processes, from_supervisord = excluded.from_supervisord",
                &[&self.fleet, &host, &json(&processes), &from_supervisord],
            )
            .await?;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT host, last_seen, EXTRACT(EPOCH FROM now() - last_seen)::float8, processes,
                        from_supervisord, silent_since
                 FROM hosts WHERE fleet = $1 ORDER BY host",
                &[&self.fleet],
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

    async fn newly_silent(&self, after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = self
            .pg
            .query(
                "UPDATE hosts SET silent_since = last_seen
                 WHERE fleet = $1 AND silent_since IS NULL AND last_seen < now() - make_interval(secs => $2)
                 RETURNING host, last_seen",
                &[&self.fleet, &after.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn back_again(&self, after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = self
            .pg
            .query(
                "UPDATE hosts h SET silent_since = NULL
                 FROM (SELECT host, silent_since AS was FROM hosts
                       WHERE fleet = $1 AND silent_since IS NOT NULL
                         AND last_seen >= now() - make_interval(secs => $2)
                       FOR UPDATE) back
                 WHERE h.fleet = $1 AND h.host = back.host
                 RETURNING h.host, back.was",
                &[&self.fleet, &after.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let row = self
            .pg
            .query_opt(
                "INSERT INTO leases AS l (fleet, name, holder, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                 ON CONFLICT (fleet, name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE l.holder = excluded.holder OR l.expires_at < now()
                 RETURNING holder",
                &[&self.fleet, &name, &holder, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.pg
            .query(
                "DELETE FROM leases WHERE fleet = $1 AND name = $2 AND holder = $3",
                &[&self.fleet, &name, &holder],
            )
            .await?;
        Ok(())
    }

    async fn claim_parent(
        &self,
        key: &ThreadKey,
        channel: &str,
        replaces: Option<&str>,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let secs = ttl.as_secs_f64();
        // The row of a thread nobody posted yet is made by the first to claim it.
        let row = self
            .pg
            .query_opt(
                "INSERT INTO threads AS t (fleet, host, grp, process, channel, claim_holder, claim_until)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
                 ON CONFLICT (fleet, host, grp, process, channel) DO UPDATE SET
                     claim_holder = excluded.claim_holder, claim_until = excluded.claim_until
                 WHERE t.parent_ts IS NOT DISTINCT FROM $8
                   AND (t.claim_holder IS NULL OR t.claim_holder = excluded.claim_holder OR t.claim_until < now())
                 RETURNING 1",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel, &holder, &secs, &replaces],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn program_hosts(&self, group: &str, process: &str, channel: &str) -> Result<Vec<ProgramOnHost>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT t.host, t.latest, h.processes, EXTRACT(EPOCH FROM now() - h.last_seen)::float8
                 FROM threads t LEFT JOIN hosts h ON h.fleet = t.fleet AND h.host = t.host
                 WHERE t.fleet = $1 AND t.grp = $2 AND t.process = $3 AND t.channel = $4 AND t.host <> ''
                 ORDER BY t.host",
                &[&self.fleet, &group, &process, &channel],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let table: Option<serde_json::Value> = r.get(2);
                let reported = table
                    .and_then(|t| serde_json::from_value::<Vec<HostProcess>>(t).ok())
                    .and_then(|t| t.into_iter().find(|p| p.group == group && p.process == process));
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

    async fn record_trail(&self, key: &ThreadKey, channel: &str, state: State) -> Result<(), StoreError> {
        let max = HISTORY_MAX as i64;
        self.pg
            .query(
                "UPDATE threads t SET history = (SELECT COALESCE(jsonb_agg(e ORDER BY i), '[]'::jsonb) FROM (
                     SELECT e, i FROM jsonb_array_elements(t.history || $6) WITH ORDINALITY AS x(e, i)
                     ORDER BY i DESC LIMIT $7) kept)
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel, &json(&[state]), &max],
            )
            .await?;
        Ok(())
    }

    async fn fleet_broadcast(
        &self,
        key: &ThreadKey,
        channel: &str,
        failing: usize,
        hosts: usize,
        regroup: Duration,
    ) -> Result<bool, StoreError> {
        let (failing, hosts) = (failing as i32, hosts as i32);
        let row = self
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
                &[&self.fleet, &key.host, &key.group, &key.process, &channel, &failing, &hosts, &regroup.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }

    async fn fleet_calm(&self, key: &ThreadKey, channel: &str) -> Result<(), StoreError> {
        self.pg
            .query(
                "UPDATE threads SET episode = episode || jsonb_build_object('calm_since', now())
                 WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5
                   AND episode IS NOT NULL AND episode->>'calm_since' IS NULL",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel],
            )
            .await?;
        Ok(())
    }

    // --- episodes

    async fn episode(&self, key: &ThreadKey, channel: &str) -> Result<Option<Episode>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "SELECT episode FROM episodes WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5",
                &[&self.fleet, &key.host, &key.group, &key.process, &channel],
            )
            .await?;
        // One this version cannot read is no episode: at worst one more broadcast.
        Ok(row.and_then(|r| {
            serde_json::from_value(r.get(0))
                .map_err(|e| tracing::warn!(thread = %key, error = %e, "cannot read the thread's failure episode; starting afresh"))
                .ok()
        }))
    }

    async fn save_episode(&self, key: &ThreadKey, channel: &str, episode: Option<&Episode>) -> Result<(), StoreError> {
        match episode {
            Some(ep) => {
                self.pg
                    .query(
                        "INSERT INTO episodes (fleet, host, grp, process, channel, episode) VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (fleet, host, grp, process, channel) DO UPDATE SET episode = EXCLUDED.episode",
                        &[&self.fleet, &key.host, &key.group, &key.process, &channel, &json(ep)],
                    )
                    .await?
            }
            None => {
                self.pg
                    .query(
                        "DELETE FROM episodes WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4 AND channel = $5",
                        &[&self.fleet, &key.host, &key.group, &key.process, &channel],
                    )
                    .await?
            }
        };
        Ok(())
    }

    // --- asking from Slack: the last crash, the last command

    async fn record_crash(&self, key: &ThreadKey, crash: &CrashRecord) -> Result<(), StoreError> {
        self.pg
            .query(
                "INSERT INTO crashes (fleet, host, grp, process, at, crash) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (fleet, host, grp, process) DO UPDATE SET at = EXCLUDED.at, crash = EXCLUDED.crash",
                &[&self.fleet, &key.host, &key.group, &key.process, &crash.at, &json(crash)],
            )
            .await?;
        Ok(())
    }

    async fn last_crash(&self, key: &ThreadKey) -> Result<Option<CrashRecord>, StoreError> {
        let row = self
            .pg
            .query_opt(
                "SELECT crash FROM crashes WHERE fleet = $1 AND host = $2 AND grp = $3 AND process = $4",
                &[&self.fleet, &key.host, &key.group, &key.process],
            )
            .await?;
        row.map(|r| {
            serde_json::from_value(r.get(0)).map_err(|e| StoreError::Fleet {
                message: format!("the last crash of {key} in the fleet database cannot be read: {e}"),
            })
        })
        .transpose()
    }

    async fn command_seen(&self, user: &str) -> Result<(), StoreError> {
        let value = serde_json::json!({"at": Utc::now(), "user": user}).to_string();
        self.pg
            .query(
                "INSERT INTO meta (fleet, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (fleet, key) DO UPDATE SET value = EXCLUDED.value",
                &[&self.fleet, &COMMAND_META, &value],
            )
            .await?;
        Ok(())
    }

    async fn last_command(&self) -> Result<Option<CommandSeen>, StoreError> {
        let row = self
            .pg
            .query_opt("SELECT value FROM meta WHERE fleet = $1 AND key = $2", &[&self.fleet, &COMMAND_META])
            .await?;
        Ok(row.and_then(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.get::<_, String>(0)).ok()?;
            Some(CommandSeen {
                at: serde_json::from_value(v["at"].clone()).ok()?,
                user: v["user"].as_str()?.to_string(),
            })
        }))
    }

    // --- the fleet's action queue

    async fn queue_action(&self, owner: &str, kind: &str, payload: &serde_json::Value, ttl: Duration) -> Result<i64, StoreError> {
        actions::queue(&self.pg, &self.fleet, owner, kind, payload, ttl).await
    }

    async fn take_actions(&self, owner: &str) -> Result<Vec<QueuedAction>, StoreError> {
        actions::take(&self.pg, &self.fleet, owner).await
    }

    async fn wait_for_actions(&self, owner: &str, within: Duration) {
        self.bells.wait(owner, within).await
    }

    async fn finish_action(&self, id: i64, answer: &serde_json::Value) -> Result<(), StoreError> {
        actions::finish(&self.pg, &self.fleet, id, answer).await
    }

    async fn action_state(&self, id: i64) -> Result<ActionState, StoreError> {
        actions::state(&self.pg, &self.fleet, id).await
    }

    async fn expire_action(&self, id: i64) -> Result<bool, StoreError> {
        actions::expire(&self.pg, &self.fleet, id).await
    }

    async fn lease_holders(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .pg
            .query(
                "SELECT name, holder FROM leases WHERE fleet = $1 AND starts_with(name, $2) AND expires_at > now() ORDER BY name",
                &[&self.fleet, &prefix],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
