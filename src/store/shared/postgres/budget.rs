//! One budget per Slack channel (and one for edits), shared by every host of the
//! fleet. Before a call a host *reserves* a send time in one statement (GCRA: the
//! lane's next free slot moves on by one interval; a quiet lane lets a burst through
//! at once), and sleeps until it; nobody polls. A 429 closes the lane for every host
//! until `Retry-After` (the next slot moves past it) and is announced with `NOTIFY`,
//! so that hosts already holding a slot inside that window wait too. While the
//! database is out of reach, each host paces itself alone (local pacing), and says
//! so in the log once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::Pg;
use crate::pacing::{Call, LocalPacing};
use crate::store::shared::Budget as Pace;
use crate::store::StoreError;

/// A lane's interval and how many calls it lets through at once.
#[derive(Debug, Clone, Copy)]
struct LaneRule {
    interval: f64,
    burst: u32,
}

pub struct SharedBudget {
    pg: Arc<Pg>,
    fleet: String,
    pace: Pace,
    /// Lanes closed by a 429 this host was told about (its own, or another's).
    gates: Mutex<HashMap<String, Instant>>,
    /// Used while the database is out of reach.
    alone: LocalPacing,
    pacing_alone: AtomicBool,
    /// When this host started: until the database first answers (or
    /// [`FIRST_CONNECT`] has passed), calls wait for it rather than pace alone.
    started: Instant,
}

/// How long calls wait for the database's first answer before pacing alone: hosts
/// starting together would otherwise each spend the channel's whole burst at once.
const FIRST_CONNECT: Duration = Duration::from_secs(15);

fn lane(call: Call<'_>) -> String {
    match call {
        Call::Post(channel) => format!("post {channel}"),
        Call::Update => "update".to_string(),
    }
}

impl SharedBudget {
    /// The budget, and the task that hears other hosts' 429s.
    pub fn new(pg: Arc<Pg>, fleet: String, pace: Pace) -> (Arc<SharedBudget>, tokio::task::AbortHandle) {
        let budget = Arc::new(SharedBudget {
            alone: LocalPacing::new(pace.post_burst, pace.post_interval, pace.updates_per_minute, None),
            pg,
            fleet,
            pace,
            gates: Mutex::new(HashMap::new()),
            pacing_alone: AtomicBool::new(false),
            started: Instant::now(),
        });
        let listener = budget.clone();
        let hearing = tokio::spawn(async move { listener.hear_gates().await }).abort_handle();
        (budget, hearing)
    }

    fn rule(&self, call: Call<'_>) -> LaneRule {
        match call {
            Call::Post(_) => LaneRule {
                interval: self.pace.post_interval.as_secs_f64(),
                burst: self.pace.post_burst.max(1),
            },
            Call::Update => LaneRule {
                interval: 60.0 / f64::from(self.pace.updates_per_minute.max(1)),
                burst: (self.pace.updates_per_minute / 2).max(1),
            },
        }
    }

    /// When the lane's gate opens, if this host knows it closed.
    fn gate(&self, lane: &str) -> Option<Instant> {
        let gates = self.gates.lock().unwrap();
        gates.get(lane).copied().filter(|t| *t > Instant::now())
    }

    fn close(&self, lane: &str, for_: Duration) {
        let until = Instant::now() + for_.min(crate::pacing::MAX_GATE);
        let mut gates = self.gates.lock().unwrap();
        let g = gates.entry(lane.to_string()).or_insert(until);
        *g = (*g).max(until);
    }

    /// Waits until `call` may go.
    pub async fn acquire(&self, call: Call<'_>) {
        let lane = lane(call);
        loop {
            if let Some(t) = self.gate(&lane) {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            match self.reserve(&lane, self.rule(call)).await {
                Ok(wait) => {
                    if self.pacing_alone.swap(false, Ordering::SeqCst) {
                        tracing::info!("the fleet database is back: pacing with the fleet again");
                    }
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    // A 429 another host was given while this one waited.
                    if self.gate(&lane).is_some() {
                        continue;
                    }
                    return;
                }
                Err(_) if !self.pg.was_up() && self.started.elapsed() < FIRST_CONNECT => {
                    let left = FIRST_CONNECT.saturating_sub(self.started.elapsed());
                    let _ = tokio::time::timeout(left, self.pg.until_up()).await;
                    if !self.pg.is_up() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                Err(e) => {
                    if !self.pacing_alone.swap(true, Ordering::SeqCst) {
                        tracing::warn!("the fleet's budget is out of reach ({e}): this host paces itself alone until the fleet database is back");
                    }
                    self.alone.acquire(call).await;
                    return;
                }
            }
        }
    }

    /// Reserves the lane's next slot: how long until it.
    async fn reserve(&self, lane: &str, rule: LaneRule) -> Result<Duration, StoreError> {
        let burst_window = rule.interval * f64::from(rule.burst - 1);
        let row = self
            .pg
            .query_opt(
                "INSERT INTO budget AS b (fleet, lane, next_at)
                 VALUES ($1, $2, now() - make_interval(secs => $4) + make_interval(secs => $3))
                 ON CONFLICT (fleet, lane) DO UPDATE SET next_at =
                     GREATEST(b.next_at, now() - make_interval(secs => $4), COALESCE(b.gate_until, now()))
                     + make_interval(secs => $3)
                 RETURNING EXTRACT(EPOCH FROM (b.next_at - make_interval(secs => $3) - now()))::float8",
                &[&self.fleet, &lane, &rule.interval, &burst_window],
            )
            .await?;
        let wait: f64 = row.map(|r| r.get(0)).unwrap_or(0.0);
        Ok(Duration::try_from_secs_f64(wait).unwrap_or_default())
    }

    /// Slack answered `call` with a 429: the lane closes for every host.
    pub async fn rate_limited(&self, call: Call<'_>, retry_after: Duration) {
        let lane = lane(call);
        self.close(&lane, retry_after);
        self.alone.rate_limited(call, retry_after);
        let secs = retry_after.min(crate::pacing::MAX_GATE).as_secs_f64();
        let said = self
            .pg
            .query(
                "WITH closed AS (
                     UPDATE budget SET
                         gate_until = GREATEST(COALESCE(gate_until, now()), now() + make_interval(secs => $3)),
                         next_at = GREATEST(next_at, now() + make_interval(secs => $3))
                     WHERE fleet = $1 AND lane = $2 RETURNING lane)
                 SELECT pg_notify('supervisor_slack', 'gate ' || $1 || ' ' || $3::text || ' ' || $2)",
                &[&self.fleet, &lane, &secs],
            )
            .await;
        if let Err(e) = said {
            tracing::warn!("cannot tell the fleet about Slack's Retry-After ({e}): the other hosts learn it from their own 429s");
        }
    }

    pub fn accepted(&self, call: Call<'_>) {
        self.alone.accepted(call);
    }

    /// Closes lanes as other hosts announce their 429s.
    async fn hear_gates(&self) {
        let mut notices = self.pg.notices();
        loop {
            match notices.recv().await {
                Ok(payload) => {
                    let mut parts = payload.splitn(4, ' ');
                    let (Some("gate"), Some(fleet), Some(secs), Some(lane)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if fleet != self.fleet {
                        continue;
                    }
                    if let Ok(secs) = secs.parse::<f64>() {
                        let for_ = Duration::try_from_secs_f64(secs).unwrap_or_default();
                        tracing::info!(lane, wait_secs = secs, "another host was told to wait by Slack: so does this one");
                        self.close(lane, for_);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    }
}
