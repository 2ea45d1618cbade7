//! Acting from Slack: clicks on a card's buttons arrive over Socket Mode
//! (slack-morphism's listener, no public URL), are acked at once, and run afterwards
//! on the async side — never near stdin/stdout, so supervisord's answers do not wait
//! on any of it.
//! - this module: the Socket Mode connection, the [`Click`] taken from each
//!   `block_actions` payload, and the bounded queue a few runners take clicks from;
//! - [`run`]: what a click does — checked (signature, owner host, age, who may),
//!   deduped, run against supervisord with a bounded time, then audited in its
//!   thread (as notes the thread's worker posts in their turn) and the log;
//! - [`refusals`]: how often one user is told "no" (a flood of refused clicks costs
//!   neither Slack calls nor audit rows);
//! - [`members`]: who is in an allowed user group (`usergroups.users.list`, cached).
//!
//! One Slack app for a fleet:
//! - [`holder`]: a few hosts hold the app's connections for all (leases in the
//!   fleet's database; `socket_connections`), the others open none;
//! - [`route`]: a click on another host's card, checked and queued for its owner in
//!   the fleet's action queue, and the owner's side that takes, runs and answers;
//! - [`fleet_source`]: `/supervisor` across the fleet (every host's processes, a
//!   question routed to its owner).
//!
//! Asking from Slack (`/supervisor`), on the same connection:
//! - [`command`]: the slash command — parsed, checked (who may), answered in the ack
//!   or, when slower, to its `response_url`; only the asker sees the answer;
//! - [`ask`]: where answers come from (the [`ask::Source`] seam: one host, or a
//!   fleet) and which process a typed name means;
//! - [`local`]: the one-host source (this supervisord, this shared state).

pub mod ask;
pub mod command;
pub mod fleet_source;
pub mod holder;
pub mod local;
pub mod members;
pub mod refusals;
pub mod route;
pub mod run;

use std::sync::Arc;
use std::time::{Duration, Instant};

use slack_morphism::prelude::*;
use tokio::sync::{mpsc, Mutex};

use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::slack::{Connector, SlackApi};
use crate::store::AuditKeep;

pub use command::Asker;
pub use run::Runner;

/// Clicks waiting for a runner; beyond this many, new ones are dropped (logged).
const QUEUE: usize = 64;

/// Clicks run at once (each on a different process: one at a time per process).
const RUNNERS: usize = 4;

/// How often the click audit is trimmed to what [`AuditKeep`] keeps.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One button click, as Slack delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// The clicker's user id (`U…`).
    pub user: String,
    pub channel_id: String,
    /// The message the button is on.
    pub message_ts: String,
    /// The thread that message is in (a reply's parent), when Slack says.
    pub thread_ts: Option<String>,
    pub action_id: String,
    pub value: String,
    /// Slack's time of the click: with the user, what makes a click unique.
    pub action_ts: String,
    /// When it reached this listener.
    pub received: Instant,
}

impl Click {
    /// The clicks of a `block_actions` payload (one per action; Slack sends one).
    /// Payloads without a user, channel or message are not clicks on a card.
    pub fn from_event(ev: &SlackInteractionBlockActionsEvent) -> Vec<Click> {
        let Some(user) = ev.user.as_ref().map(|u| u.id.to_string()) else {
            return Vec::new();
        };
        let (message_ts, container_channel) = match &ev.container {
            SlackInteractionActionContainer::Message(m) => (m.message_ts.to_string(), m.channel_id.clone()),
            SlackInteractionActionContainer::MessageAttachment(m) => (m.message_ts.to_string(), m.channel_id.clone()),
            SlackInteractionActionContainer::View(_) => return Vec::new(),
        };
        let Some(channel_id) = ev
            .channel
            .as_ref()
            .map(|c| c.id.to_string())
            .or(container_channel.map(|c| c.to_string()))
        else {
            return Vec::new();
        };
        let thread_ts = ev
            .message
            .as_ref()
            .and_then(|m| m.origin.thread_ts.as_ref())
            .map(|t| t.to_string());
        let received = Instant::now();
        ev.actions
            .iter()
            .flatten()
            .map(|a| Click {
                user: user.clone(),
                channel_id: channel_id.clone(),
                message_ts: message_ts.clone(),
                thread_ts: thread_ts.clone(),
                action_id: a.action_id.to_string(),
                value: a.value.clone().unwrap_or_default(),
                action_ts: a
                    .action_ts
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| format!("{}:{}", message_ts, a.action_id)),
                received,
            })
            .collect()
    }

    /// How old the click is: by Slack's clock when its `action_ts` says, at least
    /// since it reached this listener.
    pub fn age(&self) -> Duration {
        let here = self.received.elapsed();
        let slack = self
            .action_ts
            .parse::<f64>()
            .ok()
            .and_then(|ts| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64();
                Duration::try_from_secs_f64(now - ts).ok()
            })
            .unwrap_or_default();
        here.max(slack)
    }
}

/// Where the Socket Mode callback hands clicks to the runners.
#[derive(Clone)]
struct ClickQueue(mpsc::Sender<Click>);

/// The interaction callback: queue the click and return, so that slack-morphism acks
/// the envelope at once (it acks when the callback returns, one at a time per
/// connection).
async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackClient<Connector>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let SlackInteractionEvent::BlockActions(ev) = event else {
        tracing::debug!("ignored an interaction that is not a button click");
        return Ok(());
    };
    let queue = states.read().await.get_user_state::<ClickQueue>().cloned();
    if let Some(queue) = queue {
        for click in Click::from_event(&ev) {
            if queue.0.try_send(click).is_err() {
                tracing::warn!(
                    "{QUEUE} clicks are waiting already: dropped one (its user sees nothing happen)"
                );
            }
        }
    }
    Ok(())
}

/// Keeps the Socket Mode connection(s) open until shutdown (through `api`'s Slack
/// client), runs every click with `runner` (`None`: buttons are off), a few at a
/// time, and answers `/supervisor` with `asker` (`None`: commands are off). Returns
/// when the connection cannot be set up at all, or at shutdown.
pub async fn serve(
    app_token: Secret,
    connections: u32,
    api: Arc<SlackApi>,
    runner: Option<Arc<Runner>>,
    asker: Option<Arc<Asker>>,
    shutdown: Shutdown,
) {
    // slack-morphism only logs a bad token and retries every 30 s: ask once here so
    // the operator reads what is wrong and how to fix it.
    match api.open_socket_url(&app_token).await {
        Ok(_) => tracing::info!(
            connections,
            buttons = runner.is_some(),
            commands = asker.is_some(),
            "actions from Slack are on: opening Socket Mode"
        ),
        Err(f) => tracing::error!(
            "Socket Mode cannot open with this app-level token (Slack answered {}); buttons do nothing until it can: {}",
            f.code().map(str::to_string).unwrap_or_else(|| f.to_string()),
            crate::check::app_token_fix()
        ),
    }
    let (tx, rx) = mpsc::channel::<Click>(QUEUE);
    let mut env = SlackClientEventsListenerEnvironment::new(api.client());
    if runner.is_some() {
        env = env.with_user_state(ClickQueue(tx));
    }
    if let Some(asker) = asker {
        env = env.with_user_state(asker);
    }
    let env = Arc::new(env);
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_interaction_events(on_interaction)
        .with_command_events(command::on_command);
    let config = SlackClientSocketModeConfig::new()
        .with_max_connections_count(connections)
        .with_reconnect_timeout_in_seconds(10);
    let listener = SlackClientSocketModeListener::new(&config, env, callbacks);
    let token = SlackApiToken::new(app_token.expose().to_string().into());
    if let Err(e) = listener.listen_for(&token).await {
        tracing::error!("cannot start Socket Mode: {}", app_token.redact(&e.to_string()));
        return;
    }
    listener.start().await;
    let rx = Arc::new(Mutex::new(rx));
    let mut runners = Vec::new();
    for runner in std::iter::repeat_n(runner.clone(), RUNNERS).flatten() {
        let (rx, runner) = (rx.clone(), runner.clone());
        runners.push(tokio::spawn(async move {
            loop {
                let Some(click) = rx.lock().await.recv().await else {
                    return;
                };
                runner.handle(click).await;
            }
        }));
    }
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = prune.tick() => {
                if let Some(runner) = &runner {
                    runner.prune_audit(AuditKeep::default()).await;
                }
            }
            _ = shutdown.triggered() => break,
        }
    }
    listener.shutdown().await;
    for r in runners {
        r.abort();
    }
}
