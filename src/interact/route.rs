//! Clicks across a fleet sharing one Slack app. Slack hands a click to any open
//! connection of the app, so the host that receives it (a socket holder) is seldom
//! the one that owns the process:
//! - the holder ([`Runner::route`]) checks what it can — the value signed with the
//!   fleet's key, its age, the owner a live host of the fleet, the clicker allowed,
//!   the click new (the shared audit dedupes it) — then queues it for the owner in
//!   the fleet's action queue and waits a few seconds ([`PICKUP`]) for the owner to
//!   take it. Not taken by then, it expires (it never runs later) and the clicker is
//!   told so at once;
//! - the owner ([`inbox`]) takes the actions queued for it (woken by NOTIFY, and
//!   looking every few seconds anyway), checks the click again as its own — the
//!   signed value must name this host, whatever the row says — runs it against its
//!   supervisord, audits it in the process's thread, and records the outcome.
//!
//! The database is the only way between hosts: whoever may write to it may ask any
//! host to act, as whoever holds the app token may (README says so).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ask::Question;
use super::local::LocalSource;
use super::run::{fresh, Refused, Runner};
use super::Click;
use crate::actions::{Action, ButtonValue};
use crate::card::escape_mrkdwn;
use crate::store::{ActionState, QueuedAction, SharedState};
use crate::supervisord::event::{State, ThreadKey};

/// How long the owner has to take an action: after that it expires (it never runs
/// later) and whoever asked is told.
pub const PICKUP: Duration = Duration::from_secs(5);

/// How often an owner looks at the queue when no notification woke it.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How often whoever queued an action looks at where it stands.
const POLL: Duration = Duration::from_millis(150);

/// A click as the queue carries it to its owner, with its row in the shared audit.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoutedClick {
    user: String,
    channel_id: String,
    message_ts: String,
    thread_ts: Option<String>,
    action_id: String,
    value: String,
    action_ts: String,
    /// The click's row in the shared audit (its outcome goes there).
    audit: i64,
    /// For a program's button across the fleet (its value names no host): the host
    /// this copy is for.
    #[serde(default)]
    target: Option<String>,
}

/// Whether the owner took an action in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pickup {
    Taken,
    /// It expired untaken: it never runs.
    Expired,
    /// The fleet database could not say (it expired untaken by now, unless the owner
    /// took it just before the database went away).
    Unknown,
}

/// Waits, at most `within`, for the owner to take the action `id`; expires it if
/// nobody did.
pub async fn wait_taken(shared: &dyn SharedState, id: i64, within: Duration) -> Pickup {
    let deadline = Instant::now() + within;
    loop {
        match shared.action_state(id).await {
            Ok(ActionState::Taken | ActionState::Done(_)) => return Pickup::Taken,
            Ok(ActionState::Expired | ActionState::Gone) => return Pickup::Expired,
            Ok(ActionState::Queued) | Err(_) => {}
        }
        if Instant::now() >= deadline {
            return match shared.expire_action(id).await {
                Ok(true) => Pickup::Expired,
                Ok(false) => Pickup::Taken,
                Err(_) => Pickup::Unknown,
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the fleet knows of a host now.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// It beats.
    Alive,
    /// Not heard of for longer than the fleet's bound, since then.
    Silent(chrono::DateTime<chrono::Utc>),
    /// No such host in the fleet.
    Unknown,
}

/// Whether `host` is a live host of the fleet.
pub async fn owner(
    shared: &dyn SharedState,
    host: &str,
    silent_after: Duration,
) -> Result<Owner, String> {
    let hosts = shared.hosts().await.map_err(|e| e.to_string())?;
    Ok(match hosts.into_iter().find(|h| h.host == host) {
        None => Owner::Unknown,
        Some(h) if h.quiet_for > silent_after => Owner::Silent(h.last_seen),
        Some(_) => Owner::Alive,
    })
}

impl Runner {
    /// A click on another host's card, signed by the fleet and fresh: checked here
    /// as far as this host can, then queued for the owner, which runs it.
    pub(super) async fn route(&self, click: &Click, key: &ThreadKey, action: Action) {
        if key.is_fleet() {
            return self.route_to_every_host(click, key, action).await;
        }
        let p = self.parts();
        let silent_after = p.fleet.as_ref().map_or(Duration::MAX, |f| f.silent_after);
        let shared = p.shared.as_ref();
        let host = escape_mrkdwn(&key.host);
        match owner(shared, &key.host, silent_after).await {
            Err(_) => return self.tell(click, &self.no_audit()).await,
            Ok(Owner::Unknown) => {
                let r = Refused {
                    tell: format!("This card names the host *{host}*, which is not in this fleet; nothing was done."),
                    why: format!("{} is not a host of the fleet", key.host),
                };
                return self.refuse(click, None, r).await;
            }
            Ok(Owner::Silent(since)) => {
                let r = Refused {
                    tell: format!(
                        "*{host}* has not been heard of since {} (silent), so your {action} of {} was not sent to it: nothing was done, and nothing will run later.",
                        crate::card::when::When::new(since).slack,
                        escape_mrkdwn(&key.display_name())
                    ),
                    why: format!("{} is silent", key.host),
                };
                return self.refuse(click, Some((key, action)), r).await;
            }
            Ok(Owner::Alive) => {}
        }
        if let Err(r) = self.may(click, key, action).await {
            return self.refuse(click, Some((key, action)), r).await;
        }
        let audit = match shared.record_click(&click.user, &click.action_ts, key, action.name()).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::info!(user = %click.user, thread = %key, %action, action_ts = %click.action_ts, "the same click was delivered again: it is routed once");
                return;
            }
            Err(e) => {
                tracing::error!(user = %click.user, thread = %key, error = %e, "cannot audit a click, so it is not routed");
                return self.tell(click, &self.no_audit()).await;
            }
        };
        let name = escape_mrkdwn(&key.display_name());
        match self.queue_for(click, key, action, audit, None).await {
            None | Some(Pickup::Taken) => {}
            Some(Pickup::Expired) => {
                let tell = format!(
                    "*{host}* did not take your {action} of {name} within {} seconds, so it was dropped: nothing was done, and nothing will run later. Click again when *{host}* answers.",
                    PICKUP.as_secs()
                );
                self.tell(click, &tell).await;
            }
            Some(Pickup::Unknown) => {
                let tell = format!(
                    "The fleet database went away while your {action} of {name} waited for *{host}*: if it ran, its outcome is in the card's thread; if not, nothing will run later."
                );
                self.tell(click, &tell).await;
            }
        }
    }

    /// Queues a checked click (audited as `audit`) for `key`'s host and waits for it
    /// to be taken; `None`: it could not be queued (the clicker was told).
    async fn queue_for(&self, click: &Click, key: &ThreadKey, action: Action, audit: i64, target: Option<&str>) -> Option<Pickup> {
        let shared = self.parts().shared.as_ref();
        let routed = RoutedClick {
            user: click.user.clone(),
            channel_id: click.channel_id.clone(),
            message_ts: click.message_ts.clone(),
            thread_ts: click.thread_ts.clone(),
            action_id: click.action_id.clone(),
            value: click.value.clone(),
            action_ts: click.action_ts.clone(),
            audit,
            target: target.map(str::to_string),
        };
        let payload = serde_json::to_value(&routed).expect("a click serializes");
        let id = match shared.queue_action(&key.host, "click", &payload, PICKUP).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(user = %click.user, thread = %key, error = %e, "cannot queue a click for its host");
                let _ = shared.click_outcome(audit, "refused: the fleet database could not queue it").await;
                self.tell(click, &self.no_audit()).await;
                return None;
            }
        };
        tracing::info!(user = %click.user, thread = %key, %action, owner = %key.host, "routed a click to the host that owns the process");
        let pickup = wait_taken(shared, id, PICKUP).await;
        if pickup == Pickup::Expired {
            tracing::warn!(user = %click.user, thread = %key, %action, "the owner did not take a click in time: it expired");
            let expired = format!("expired: {} did not take it within {}s", key.host, PICKUP.as_secs());
            let _ = shared.click_outcome(audit, &expired).await;
        }
        Some(pickup)
    }

    /// A program's button across the fleet (Start on every host where it is down):
    /// one audited copy of the click for each live host whose process is FATAL or
    /// exited unexpectedly now, each queued for its host and run there.
    async fn route_to_every_host(&self, click: &Click, program: &ThreadKey, action: Action) {
        let p = self.parts();
        let shared = p.shared.as_ref();
        let name = escape_mrkdwn(&program.display_name());
        if action != Action::Start {
            let r = Refused {
                tell: "Only Start is offered for every host of a program; nothing was done.".into(),
                why: format!("{action} asked for every host"),
            };
            return self.refuse(click, None, r).await;
        }
        let shown = ThreadKey { host: "its failing hosts".into(), ..program.clone() };
        if let Err(r) = self.may(click, &shown, action).await {
            return self.refuse(click, None, r).await;
        }
        let silent_after = p.fleet.as_ref().map_or(Duration::MAX, |f| f.silent_after);
        let hosts = match shared.hosts().await {
            Ok(h) => h,
            Err(_) => return self.tell(click, &self.no_audit()).await,
        };
        let down: Vec<String> = hosts
            .iter()
            .filter(|h| h.quiet_for <= silent_after)
            .filter(|h| {
                h.processes.iter().any(|pr| {
                    pr.group == program.group
                        && pr.process == program.process
                        && (pr.state == State::Fatal || (pr.state == State::Exited && pr.expected == Some(false)))
                })
            })
            .map(|h| h.host.clone())
            .collect();
        if down.is_empty() {
            return self.tell(click, &format!("{name} is down on no live host now: nothing to start.")).await;
        }
        tracing::info!(user = %click.user, program = %program.display_name(), hosts = %down.join(", "), "Start on every host where the program is down");
        let runs = down.iter().map(|host| async move {
            let key = ThreadKey { host: host.clone(), ..program.clone() };
            // One audit row per host: the same click delivered again runs once.
            let click_id = format!("{}@{host}", click.action_ts);
            match shared.record_click(&click.user, &click_id, &key, action.name()).await {
                Ok(Some(audit)) => (host.clone(), self.queue_for(click, &key, action, audit, Some(host)).await),
                Ok(None) => (host.clone(), Some(Pickup::Taken)),
                Err(_) => (host.clone(), None),
            }
        });
        let results = futures_util::future::join_all(runs).await;
        let missed: Vec<String> = results
            .iter()
            .filter(|(_, r)| !matches!(r, Some(Pickup::Taken)))
            .map(|(h, _)| format!("*{}*", escape_mrkdwn(h)))
            .collect();
        if !missed.is_empty() {
            let tell = format!(
                "Start of {name}: {} did not take it within {} seconds, so nothing ran there (and nothing will later); the other hosts' outcomes are in the thread.",
                missed.join(", "),
                PICKUP.as_secs()
            );
            self.tell(click, &tell).await;
        }
    }

    /// A click routed to this host by another one: checked again as this host's own
    /// (the signed value must name this host, or be the program's button across the
    /// fleet with this host's copy), run, audited; its outcome.
    async fn run_routed(&self, routed: RoutedClick) -> String {
        let (audit, target) = (routed.audit, routed.target);
        let click = Click {
            user: routed.user,
            channel_id: routed.channel_id,
            message_ts: routed.message_ts,
            thread_ts: routed.thread_ts,
            action_id: routed.action_id,
            value: routed.value,
            action_ts: routed.action_ts,
            received: Instant::now(),
        };
        let p = self.parts();
        let value = match ButtonValue::parse(&click.value) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(user = %click.user, "a click queued for this host is not a button value ({e}): refused");
                return self.refuse_routed(audit, "refused: not a button value".into()).await;
            }
        };
        let for_every_host = value.host.is_empty() && target.as_deref() == Some(p.host.as_str());
        if value.host != p.host && !for_every_host {
            // The row says this host; the signed value does not: never run it here.
            tracing::error!(user = %click.user, named = %value.host, "a click queued for this host names another host in its signed value: refused");
            return self.refuse_routed(audit, format!("refused: addressed to {}", value.host)).await;
        }
        let key = ThreadKey { host: p.host.clone(), ..value.key() };
        let action = match self.signed(&click, &value) {
            Ok(a) => a,
            Err(r) => return self.refused_routed(&click, audit, r).await,
        };
        if let Err(r) = fresh(&click) {
            return self.refused_routed(&click, audit, r).await;
        }
        let thread = match self.admit(&click, &key, action).await {
            Ok(t) => t,
            Err(r) => return self.refused_routed(&click, audit, r).await,
        };
        if for_every_host {
            if let Err(r) = self.still_down(&key, action).await {
                return self.refused_routed(&click, audit, r).await;
            }
        }
        self.run_admitted(&click, &key, action, &thread, audit).await
    }

    /// For a program's Start across the fleet: the process must be down here now
    /// (FATAL, or exited), whatever the queue says.
    async fn still_down(&self, key: &ThreadKey, action: Action) -> Result<(), Refused> {
        let state = match self.parts().supervisor.as_ref() {
            Some(client) => client
                .get_process_info(&key.xmlrpc_name())
                .await
                .ok()
                .and_then(|i| i.state())
                .unwrap_or(State::Unknown),
            None => State::Unknown,
        };
        if action == Action::Start && matches!(state, State::Fatal | State::Exited) {
            return Ok(());
        }
        Err(Refused {
            tell: format!(
                "{} is {state} on *{}*, not down: the Start for every failing host did nothing there.",
                escape_mrkdwn(&key.display_name()),
                escape_mrkdwn(&key.host)
            ),
            why: format!("not down here ({state})"),
        })
    }

    async fn refused_routed(&self, click: &Click, audit: i64, r: Refused) -> String {
        tracing::warn!(user = %click.user, action_id = %click.action_id, "refused a routed click: {}", r.why);
        if self.may_tell(&click.user) {
            self.tell(click, &r.tell).await;
        }
        self.refuse_routed(audit, format!("refused: {}", r.why)).await
    }

    async fn refuse_routed(&self, audit: i64, outcome: String) -> String {
        let _ = self.parts().shared.click_outcome(audit, &outcome).await;
        outcome
    }
}

/// The owner's side: takes the actions queued for `host` as they come (woken by
/// the fleet, and looking every few seconds anyway) and runs each on its own task:
/// clicks with `runner` (`None`: buttons are off here), questions with `local`
/// (`None`: `/supervisor` is off here). Runs for the life of the listener.
pub async fn inbox(
    shared: Arc<dyn SharedState>,
    host: String,
    runner: Option<Arc<Runner>>,
    local: Option<Arc<LocalSource>>,
) {
    loop {
        match shared.take_actions(&host).await {
            Ok(taken) => {
                for action in taken {
                    let (shared, host, runner, local) =
                        (shared.clone(), host.clone(), runner.clone(), local.clone());
                    tokio::spawn(async move { answer(shared, host, runner, local, action).await });
                }
            }
            Err(e) => tracing::debug!("cannot look at the fleet's action queue now: {e}"),
        }
        shared.wait_for_actions(&host, LOOK_EVERY).await;
    }
}

async fn answer(
    shared: Arc<dyn SharedState>,
    host: String,
    runner: Option<Arc<Runner>>,
    local: Option<Arc<LocalSource>>,
    action: QueuedAction,
) {
    let answer = match action.kind.as_str() {
        "click" => match (
            runner,
            serde_json::from_value::<RoutedClick>(action.payload),
        ) {
            (Some(r), Ok(c)) => {
                let limit = r.parts().settings.timeout + Duration::from_secs(15);
                match tokio::time::timeout(limit, r.run_routed(c)).await {
                    Ok(outcome) => serde_json::json!({ "outcome": outcome }),
                    Err(_) => serde_json::json!({ "outcome": "failed: no outcome in time" }),
                }
            }
            (None, Ok(c)) => {
                tracing::warn!(user = %c.user, "a click was routed to this host, but its buttons are off ([actions] allows nobody, or no app-level token)");
                let _ = shared
                    .click_outcome(c.audit, "refused: buttons are off on the owner host")
                    .await;
                serde_json::json!({ "outcome": "refused: buttons are off on the owner host" })
            }
            (_, Err(e)) => serde_json::json!({ "error": format!("not a click: {e}") }),
        },
        "ask" => match (local, serde_json::from_value::<Question>(action.payload)) {
            (Some(l), Ok(q)) => {
                let answered = super::ask::Source::ask(l.as_ref(), &host, q).await;
                serde_json::to_value(&answered).expect("answers serialize")
            }
            (None, Ok(_)) => serde_json::to_value(Err::<super::ask::Answer, _>(
                super::ask::Unreachable::Failed(format!("/supervisor is off on {host}")),
            ))
            .expect("answers serialize"),
            (_, Err(e)) => serde_json::json!({ "error": format!("not a question: {e}") }),
        },
        other => serde_json::json!({ "error": format!("unknown action kind {other:?}") }),
    };
    if let Err(e) = shared.finish_action(action.id, &answer).await {
        tracing::warn!(error = %e, "cannot record an action's answer in the fleet database");
    }
}
