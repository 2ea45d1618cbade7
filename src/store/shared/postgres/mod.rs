//! The shared state of a fleet, in PostgreSQL: many hosts, one database (one
//! connection each), every row tagged with the fleet's name so that one database can
//! hold several fleets. What stays local is the outbox (each host's SQLite): a host
//! answers supervisord whatever the database does, and its deliveries wait (events
//! kept on disk) while the database is out of reach.
//! - [`conn`]: the one connection, kept up in the background, queries bounded;
//! - [`schema`]: the listener's own tables, migrated at connect under an advisory lock;
//! - [`budget`]: one budget per channel for the whole fleet, and the shared 429 gate;
//! - [`hosts`]: heartbeats, silence and return, leases;
//! - [`cards`]: a program's card across the fleet (the claim, each host's part, the
//!   trail, the broadcast episode);
//! - [`actions`]: the action queue (a click or a question for its owner host);
//! - [`audit`]: the click audit (each click once, its outcome, a bounded history);
//! - [`probe`]: what `check` reports of the fleet database.

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
mod audit;
mod budget;
mod cards;
mod conn;
mod hosts;
mod probe;
mod schema;

use budget::SharedBudget;
use conn::Pg;
pub use probe::FleetProbe;

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

    async fn record_click(&self, user: &str, click: &str, key: &ThreadKey, action: &str) -> Result<Option<i64>, StoreError> {
        audit::record_click(self, user, click, key, action).await
    }

    async fn click_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        audit::click_outcome(self, id, outcome).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        audit::rows(self, limit).await
    }

    async fn prune_audit(&self, keep: AuditKeep) -> Result<usize, StoreError> {
        audit::prune(self, keep).await
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
        hosts::heartbeat(self, host, processes, from_supervisord).await
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        hosts::hosts(self).await
    }

    async fn newly_silent(&self, after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        hosts::newly_silent(self, after).await
    }

    async fn back_again(&self, after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        hosts::back_again(self, after).await
    }

    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        hosts::lease(self, name, holder, ttl).await
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        hosts::release(self, name, holder).await
    }

    async fn claim_parent(&self, key: &ThreadKey, channel: &str, replaces: Option<&str>, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        cards::claim_parent(self, key, channel, replaces, holder, ttl).await
    }

    async fn program_hosts(&self, group: &str, process: &str, channel: &str) -> Result<Vec<ProgramOnHost>, StoreError> {
        cards::program_hosts(self, group, process, channel).await
    }

    async fn record_trail(&self, key: &ThreadKey, channel: &str, state: State) -> Result<(), StoreError> {
        cards::record_trail(self, key, channel, state).await
    }

    async fn fleet_broadcast(&self, key: &ThreadKey, channel: &str, failing: usize, hosts: usize, regroup: Duration) -> Result<bool, StoreError> {
        cards::fleet_broadcast(self, key, channel, failing, hosts, regroup).await
    }

    async fn fleet_calm(&self, key: &ThreadKey, channel: &str) -> Result<(), StoreError> {
        cards::fleet_calm(self, key, channel).await
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
