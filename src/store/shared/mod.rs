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

    // --- asking from Slack: the last crash, the last command ---------------------

    /// Keeps `crash` as the last crash of `key` (an older one is replaced).
    async fn record_crash(&self, key: &ThreadKey, crash: &CrashRecord) -> Result<(), StoreError>;

    /// The last crash recorded for `key`, if any.
    async fn last_crash(&self, key: &ThreadKey) -> Result<Option<CrashRecord>, StoreError>;

    /// Notes that a `/supervisor` command from `user` reached this listener now.
    async fn command_seen(&self, user: &str) -> Result<(), StoreError>;

    /// The newest command noted by [`SharedState::command_seen`].
    async fn last_command(&self) -> Result<Option<CommandSeen>, StoreError>;
}
