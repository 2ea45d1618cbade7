//! The shared state: everything the delivery side keeps beyond the outbox — the
//! thread map, the pacing budget and 429 gate, mutes, clicks and their audit, board
//! locations, the key that signs buttons — behind one async trait, [`SharedState`].
//! The caller names what it needs (reserve a send slot, replace a parent, record a
//! click), never the engine: [`sqlite::SqliteShared`] keeps it for one host, in the
//! state database beside the outbox; a fleet keeps it in PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::card::CrashContext;
use crate::pacing::Call;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

pub mod postgres;
pub mod sqlite;

/// How many states a thread remembers (the parent's trail shows the recent part).
pub const HISTORY_MAX: usize = 200;

/// A thread's state: where its parent is and what it has shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub key: ThreadKey,
    /// The channel as configured (name or id): part of the thread's identity.
    pub channel: String,
    /// The channel id Slack answered with (`chat.update` needs the id).
    pub channel_id: Option<String>,
    /// The parent message's `ts`; `None` until the parent is posted.
    pub parent_ts: Option<String>,
    /// When the parent was posted (for `thread_ttl`).
    pub created: DateTime<Utc>,
    /// States delivered in this thread, oldest first (at most [`HISTORY_MAX`]).
    pub history: Vec<State>,
    /// The latest event delivered.
    pub latest: Option<ProcessState>,
}

impl ThreadRecord {
    pub fn new(key: ThreadKey, channel: &str) -> Self {
        ThreadRecord {
            key,
            channel: channel.to_string(),
            channel_id: None,
            parent_ts: None,
            created: Utc::now(),
            history: Vec::new(),
            latest: None,
        }
    }

    /// Appends delivered states, keeping the most recent [`HISTORY_MAX`].
    pub fn push_history(&mut self, states: impl IntoIterator<Item = State>) {
        self.history.extend(states);
        if self.history.len() > HISTORY_MAX {
            let cut = self.history.len() - HISTORY_MAX;
            self.history.drain(..cut);
        }
    }
}

/// Where a message is: what `chat.update` needs, and when it was posted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    pub channel_id: String,
    pub ts: String,
    pub at: DateTime<Utc>,
}

/// A muted thread: its replies are not shown in the channel and carry no mentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    /// The Slack user id of who muted it.
    pub by: String,
    pub until: DateTime<Utc>,
}

/// One click, as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user: String,
    pub key: ThreadKey,
    pub action: String,
    /// What became of it: `None` while it runs.
    pub outcome: Option<String>,
}

/// How much of the click audit is kept: the newest `rows`, none older than `days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditKeep {
    pub days: i64,
    pub rows: usize,
}

impl Default for AuditKeep {
    fn default() -> Self {
        AuditKeep {
            days: 90,
            rows: 10_000,
        }
    }
}

/// How the budget is paced: posts per channel and their burst, edits per minute.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub post_burst: u32,
    pub post_interval: Duration,
    pub updates_per_minute: u32,
}

/// One process as its host last reported it (the host's heartbeat): for the fleet
/// board and for questions about the fleet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostProcess {
    pub group: String,
    pub process: String,
    pub state: State,
    /// Since when it is in that state, when known.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// For EXITED: whether the exit was expected.
    #[serde(default)]
    pub expected: Option<bool>,
}

impl HostProcess {
    /// `group:process`, or `process` when they match.
    pub fn name(&self) -> String {
        if self.group == self.process {
            self.process.clone()
        } else {
            format!("{}:{}", self.group, self.process)
        }
    }
}

/// A host of the fleet, as the shared state knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    pub host: String,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// How long ago that was, by the shared state's clock (hosts' clocks may differ).
    pub quiet_for: Duration,
    /// Its processes as it last reported them.
    pub processes: Vec<HostProcess>,
    /// Whether that table came from supervisord (else from the events it saw).
    pub from_supervisord: bool,
    /// Since when it is known silent (`None`: it is not, or nobody said so yet).
    pub silent_since: Option<DateTime<Utc>>,
}

/// A process's last crash, as its failure reply showed it: kept for `/supervisor
/// why`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CrashRecord {
    /// When the process entered `state` (the event's time).
    pub at: DateTime<Utc>,
    /// BACKOFF, FATAL or EXITED.
    pub state: State,
    /// supervisord's judgement of an EXITED (`None`: not known).
    pub expected: Option<bool>,
    /// Exit status, spawn error, uptime and the log tail at the time.
    pub context: CrashContext,
}

/// The newest `/supervisor` command that reached a listener (for `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSeen {
    pub at: DateTime<Utc>,
    /// The asker's user id.
    pub user: String,
}

/// The delivery side's state beyond the outbox. Every method is one short call to
/// the engine; none holds anything across an await of the caller's.
#[async_trait]
pub trait SharedState: Send + Sync {
    // --- the thread map -------------------------------------------------------

    /// The thread of `key` in `channel`, if it was ever recorded.
    async fn thread(&self, key: &ThreadKey, channel: &str) -> Result<Option<ThreadRecord>, StoreError>;

    /// Every thread of `key` (one per channel it is routed to).
    async fn threads_of(&self, key: &ThreadKey) -> Result<Vec<ThreadRecord>, StoreError>;

    /// Per thread of `host`, the channel and the latest event delivered.
    async fn latest_states(&self, host: &str) -> Result<Vec<(ThreadKey, String, ProcessState)>, StoreError>;

    /// Makes `parent` the thread's parent if the thread's parent is still
    /// `replaces` (`None`: it has none yet), creating the thread when it is new;
    /// `start_over` also empties its history (a new thread after `thread_ttl`).
    /// `false`: the parent changed meanwhile and nothing was written — read the
    /// thread again. Compare-and-set: a parent is never replaced from a stale copy.
    async fn set_parent(
        &self,
        key: &ThreadKey,
        channel: &str,
        replaces: Option<&str>,
        parent: &Posted,
        start_over: bool,
    ) -> Result<bool, StoreError>;

    /// Records a delivered reply: its states are appended to the thread's history
    /// and `latest` becomes its latest event. The parent is left as it is.
    async fn record_delivery(
        &self,
        key: &ThreadKey,
        channel: &str,
        states: &[State],
        latest: &ProcessState,
    ) -> Result<(), StoreError>;

    // --- the budget -------------------------------------------------------------

    /// Waits until `call` may go to Slack: the 429 gate is open and its budget has
    /// room (posts per channel, edits shared by every parent).
    async fn acquire(&self, call: Call<'_>);

    /// Slack answered `call` with a 429: nothing goes before `retry_after`.
    async fn rate_limited(&self, call: Call<'_>, retry_after: Duration);

    /// Slack accepted `call`.
    async fn accepted(&self, call: Call<'_>);

    // --- mutes ------------------------------------------------------------------

    /// Mutes `key` until `until`.
    async fn mute(&self, key: &ThreadKey, by: &str, until: DateTime<Utc>) -> Result<(), StoreError>;

    /// Ends a mute; `false` when there was none.
    async fn unmute(&self, key: &ThreadKey) -> Result<bool, StoreError>;

    /// The mute on `key` now (an expired one is none).
    async fn mute_of(&self, key: &ThreadKey) -> Result<Option<Mute>, StoreError>;

    // --- clicks and their audit ---------------------------------------------------

    /// Records a click before it runs. `None` when the same click (user and
    /// `action_ts`) was recorded before: Slack delivered it twice, it runs once.
    async fn record_click(
        &self,
        user: &str,
        click: &str,
        key: &ThreadKey,
        action: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// What became of a recorded click.
    async fn click_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError>;

    /// The newest `limit` audited clicks, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditRow>, StoreError>;

    /// Forgets audited clicks beyond what `keep` keeps; returns how many.
    async fn prune_audit(&self, keep: AuditKeep) -> Result<usize, StoreError>;

    /// The key that signs button values: made once (32 random bytes) and kept, so
    /// that cards posted before a restart still work after it.
    async fn signing_key(&self) -> Result<Vec<u8>, StoreError>;

    // --- boards -----------------------------------------------------------------

    /// Where the board named `name` (a host's, or a fleet's) was posted.
    async fn board(&self, name: &str) -> Result<Option<Posted>, StoreError>;

    /// Records where the board named `name` is now.
    async fn save_board(&self, name: &str, at: &Posted) -> Result<(), StoreError>;

    // --- the fleet: hosts and leases ---------------------------------------------
    // One host is a fleet of one: it is never silent to itself and holds every lease.

    /// The fleet's name when the state is shared by several hosts (`None`: one host).
    fn fleet(&self) -> Option<&str> {
        None
    }

    /// Waits (at most `within`) until the state can be read: a fleet database that
    /// is connecting, not one that is down.
    async fn ready(&self, _within: Duration) {}

    /// Says that `host` is alive, with its processes now.
    async fn heartbeat(&self, _host: &str, _processes: &[HostProcess], _from_supervisord: bool) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every host of the fleet, by name.
    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        Ok(Vec::new())
    }

    /// Marks the hosts not heard of for `after` as silent, and returns those newly
    /// marked with their last heartbeat: each is returned once across the fleet.
    async fn newly_silent(&self, _after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(Vec::new())
    }

    /// Clears the mark of silent hosts heard of again, and returns them with the
    /// time they had gone silent: each is returned once across the fleet.
    async fn back_again(&self, _after: Duration) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(Vec::new())
    }

    /// Takes (or renews) the lease `name` for `holder`, for `ttl` from now.
    /// `false`: another holder has it and it has not expired.
    async fn lease(&self, _name: &str, _holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives the lease `name` up, if `holder` has it.
    async fn release(&self, _name: &str, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }

    // --- cards across the fleet ---------------------------------------------------
    // A program's card across the fleet is the thread of `ThreadKey::fleet(group,
    // process)` (host ""): its parent, and its trail in `history`.

    /// Claims, for `ttl`, the right to post the parent of `key` in `channel` that
    /// replaces `replaces` (`None`: the first). `false`: another host holds the claim
    /// or the parent is no longer `replaces` — wait for theirs. The claim ends with
    /// [`SharedState::set_parent`], or when it expires (its holder died).
    async fn claim_parent(
        &self,
        _key: &ThreadKey,
        _channel: &str,
        _replaces: Option<&str>,
        _holder: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Each host's part of a program in `channel`: the hosts that have a thread of it
    /// there, with their process as they last reported it and when they were heard of.
    async fn program_hosts(&self, _group: &str, _process: &str, _channel: &str) -> Result<Vec<ProgramOnHost>, StoreError> {
        Ok(Vec::new())
    }

    /// Appends `state` to the trail of the card `key` in `channel`.
    async fn record_trail(&self, _key: &ThreadKey, _channel: &str, _state: State) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether a failure reply of a program goes to the channel too: the first
    /// failure of its fleet episode, and once more when the episode has grown from
    /// under half of its `hosts` to `failing` ≥ half, `regroup` after the first.
    /// Opens an episode when none is open (or it has been calm for `regroup`).
    async fn fleet_broadcast(
        &self,
        _key: &ThreadKey,
        _channel: &str,
        _failing: usize,
        _hosts: usize,
        _regroup: Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// No host of the program is failing now: its episode is calm (and ends once
    /// calm for `regroup`, at the next failure).
    async fn fleet_calm(&self, _key: &ThreadKey, _channel: &str) -> Result<(), StoreError> {
        Ok(())
    }

    // --- episodes -------------------------------------------------------------

    /// The failure episode under way in the thread of `key` in `channel`, as the last
    /// delivered reply left it (`None`: none under way, or never recorded).
    async fn episode(&self, key: &ThreadKey, channel: &str) -> Result<Option<Episode>, StoreError>;

    /// Records the thread's episode after Slack accepted a reply that changed it
    /// (`None`: the episode ended).
    async fn save_episode(
        &self,
        key: &ThreadKey,
        channel: &str,
        episode: Option<&Episode>,
    ) -> Result<(), StoreError>;

    // --- asking from Slack: the last crash, the last command ---------------------

    /// Keeps `crash` as the last crash of `key` (an older one is replaced).
    async fn record_crash(&self, key: &ThreadKey, crash: &CrashRecord) -> Result<(), StoreError>;

    /// The last crash recorded for `key`, if any.
    async fn last_crash(&self, key: &ThreadKey) -> Result<Option<CrashRecord>, StoreError>;

    /// Notes that a `/supervisor` command from `user` reached this listener now.
    async fn command_seen(&self, user: &str) -> Result<(), StoreError>;

    /// The newest command noted by [`SharedState::command_seen`].
    async fn last_command(&self) -> Result<Option<CommandSeen>, StoreError>;

    // --- the fleet's action queue -------------------------------------------------
    // A click or a question for the host that owns the process, wherever Slack
    // delivered it: a durable row its owner takes once, runs and answers; NOTIFY only
    // wakes the owner, and it looks anyway every few seconds. One host has no queue.

    /// Queues `payload` (a `kind`: `click`, `ask`) for `owner`, to be taken within
    /// `ttl` or never.
    async fn queue_action(
        &self,
        _owner: &str,
        _kind: &str,
        _payload: &serde_json::Value,
        _ttl: Duration,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Fleet {
            message: "no fleet: a click or a question cannot reach another host".into(),
        })
    }

    /// Takes every action queued for `owner` that has not expired, oldest first: each
    /// is taken by one call only.
    async fn take_actions(&self, _owner: &str) -> Result<Vec<QueuedAction>, StoreError> {
        Ok(Vec::new())
    }

    /// Waits, at most `within`, until an action is queued for `owner`.
    async fn wait_for_actions(&self, _owner: &str, within: Duration) {
        tokio::time::sleep(within).await
    }

    /// Records the answer of the action `id`: it is done.
    async fn finish_action(&self, _id: i64, _answer: &serde_json::Value) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where the action `id` stands.
    async fn action_state(&self, _id: i64) -> Result<ActionState, StoreError> {
        Ok(ActionState::Gone)
    }

    /// Expires the action `id` if nobody took it yet: `true` when it will never run,
    /// `false` when its owner took it first.
    async fn expire_action(&self, _id: i64) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The holders of the live leases whose names start with `prefix`, as (name,
    /// holder).
    async fn lease_holders(&self, _prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }
}

/// An action its owner took from the fleet's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedAction {
    pub id: i64,
    /// `click` or `ask`.
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Where a queued action stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionState {
    /// Waiting for its owner.
    Queued,
    /// Its owner took it and runs it.
    Taken,
    /// Done, with its answer.
    Done(serde_json::Value),
    /// Nobody took it in time: it never runs.
    Expired,
    /// No such action (pruned, or never queued).
    Gone,
}

/// One host's part of a program, for the program's card across the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramOnHost {
    pub host: String,
    /// How long since the host was heard of (`None`: never: it has no heartbeat).
    pub quiet_for: Option<Duration>,
    /// The program as the host last reported it (its heartbeat's table).
    pub reported: Option<HostProcess>,
    /// The newest event of the host's thread of the program.
    pub latest: Option<ProcessState>,
}

// --- episodes -----------------------------------------------------------------

/// A thread's failure episode under way: from a failure until the process is stopped
/// on purpose or has been up for `settle_after` (`dispatch::episode` decides). Kept
/// with the thread so that a restart does not open a new one. All times are
/// supervisord's (an event's, or reconcile's `since`), never a delivery's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// When its first failure happened.
    pub started: DateTime<Utc>,
    /// A reply of it was shown in the channel (broadcast, or would have been but for
    /// a mute): its failures are not shown again.
    pub told: bool,
    /// Its FATAL was shown in the channel.
    pub fatal_told: bool,
    /// Since when the process has been up (RUNNING, or exited as expected) with no
    /// failure after; `None` while it is failing.
    pub calm_since: Option<DateTime<Utc>>,
}
