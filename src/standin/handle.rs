//! The stand-in's handle and state: how it is configured ([`StandInOptions`]), the
//! state behind its one lock ([`Inner`]), and the handle tests drive ([`StandIn`]).
//! Every other part of the stand-in reads these; none of them is read here, so the
//! rooms around it import it and it imports only the plain data they keep.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::auth::{Auth, Identity};
use super::faults::Faults;
use super::limits::Limits;
use super::sockets::Sockets;
use super::state::{names_match, Call, CommandAnswer, Ephemeral, Pending, Workspace};
use super::wire::{str_param, Answer};
use crate::shutdown::Shutdown;

/// How the stand-in behaves. `Default` is Slack-like: one `chat.postMessage` per
/// second per channel with bursts of 3, `Retry-After: 1`, any `xoxb-` token, any
/// `xapp-` token for Socket Mode, one user (`U0DEMO`, `demo`) reading the page.
#[derive(Debug, Clone)]
pub struct StandInOptions {
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// One `chat.postMessage` token per this interval, per channel.
    pub post_interval: Duration,
    /// How many posts a channel may take at once before the interval applies.
    pub burst: u32,
    /// `chat.update` calls allowed per minute per channel (Slack's Tier 3: 50+).
    pub updates_per_minute: u32,
    /// Answer 429 when a bucket is empty. Off: count nothing, refuse nothing.
    pub enforce_rate_limit: bool,
    /// The least `Retry-After` (seconds) a 429 announces; more if the bucket needs it.
    pub retry_after_secs: u64,
    /// Characters of text all blocks of a message may carry together before
    /// `msg_blocks_too_long` (Slack reports it near 13k; the project aims under 12k).
    pub blocks_text_limit: usize,
    /// When set, only these channel names (or ids) exist; others are `channel_not_found`.
    pub channels: Option<Vec<String>>,
    /// Channels (names or ids) that exist but the bot was never invited to: posts and
    /// edits there answer `not_in_channel`.
    pub uninvited_channels: Vec<String>,
    /// The workspace and bot `auth.test` names, and that messages are posted as.
    pub identity: Identity,
    /// The app-level token `apps.connections.open` accepts (others: `invalid_auth`);
    /// `None`: any `xapp-` token.
    pub app_token: Option<String>,
    /// User groups (`S…`) and their members (`U…`), for `usergroups.users.list`.
    pub usergroups: Vec<(String, Vec<String>)>,
    /// When set, every `usergroups.users.list` answers this error (e.g.
    /// `plan_upgrade_required` on a free workspace, `missing_scope`).
    pub usergroups_error: Option<String>,
    /// The workspace's users, (id, name): `<@U…>` shows as `@name` on the page, and a
    /// click's payload names its user.
    pub users: Vec<(String, String)>,
    /// The user reading the page: the page's clicks are theirs, and it shows their
    /// ephemeral messages.
    pub page_user: String,
    /// Each envelope (a click, a command) goes to a live Socket Mode connection
    /// picked at random, as Slack may do; off: to each in turn.
    pub random_sockets: bool,
}

impl Default for StandInOptions {
    fn default() -> Self {
        StandInOptions {
            port: 0,
            post_interval: Duration::from_secs(1),
            burst: 3,
            updates_per_minute: 50,
            enforce_rate_limit: true,
            retry_after_secs: 1,
            blocks_text_limit: 12_000,
            channels: None,
            uninvited_channels: Vec::new(),
            identity: Identity::default(),
            app_token: None,
            usergroups: Vec::new(),
            usergroups_error: None,
            users: vec![("U0DEMO".into(), "demo".into())],
            random_sockets: false,
            page_user: "U0DEMO".into(),
        }
    }
}

/// Everything that changes while the stand-in runs, behind one lock.
#[derive(Debug)]
pub(super) struct Inner {
    pub calls: Vec<Call>,
    pub faults: Faults,
    pub auth: Auth,
    pub workspace: Workspace,
    pub limits: Limits,
    pub ephemerals: Vec<Ephemeral>,
    pub sockets: Sockets,
    /// Typed commands, by `trigger_id`: who typed them where.
    pub commands: std::collections::HashMap<String, Pending>,
    /// Their answers, from acks and response URLs.
    pub answers: Vec<CommandAnswer>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub opts: StandInOptions,
    pub started: Instant,
    pub api_url: String,
    pub(super) inner: Mutex<Inner>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in. Dropping it (or [`StandIn::stop`]) shuts the server down.
#[derive(Debug)]
pub struct StandIn {
    pub(super) addr: SocketAddr,
    pub(super) shared: Arc<Shared>,
    /// Stops the Web API server, the Socket Mode server and its sockets.
    pub(super) shutdown: Shutdown,
}

impl Inner {
    /// The id of the call's channel, once the channel exists and the bot is in it;
    /// otherwise the answer to send.
    pub fn invited_channel(
        &mut self,
        opts: &StandInOptions,
        params: &Map<String, Value>,
    ) -> Result<String, Answer> {
        let channel_arg =
            str_param(params, "channel").ok_or_else(|| Answer::error("channel_not_found"))?;
        let channel = self
            .workspace
            .channel_mut(channel_arg, opts.channels.as_deref())
            .ok_or_else(|| Answer::error("channel_not_found"))?;
        let uninvited = opts
            .uninvited_channels
            .iter()
            .any(|c| names_match(c, Some(&channel.id), channel.name.as_deref()));
        if uninvited {
            return Err(Answer::error("not_in_channel"));
        }
        Ok(channel.id.clone())
    }
}
