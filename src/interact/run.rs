//! What one click does, bounded in time from start to end. In order: read the
//! button's value (which host, group, process, action); a click on another host's
//! card gets an answer naming the owner; the signature must be this listener's; a
//! click older than [`MAX_AGE`] is refused rather than run late; the user must be
//! allowed and the action switched on; the click is recorded (the same click
//! delivered twice runs once); one action at a time per process. Then the action
//! runs against supervisord, bounded by `timeout`, and nothing waits on Slack before
//! it: the "requested by" line and the outcome are notes the thread's worker posts in
//! their turn, paced like every reply. Whoever is refused is told (a message only
//! they see, a few times at most) and the log says who and why.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::members::Members;
use super::refusals::Refusals;
use super::Click;
use crate::actions::{Action, ButtonValue, Signer};
use crate::card::controls::{self, refusal};
use crate::card::{escape_mrkdwn, Card};
use crate::config::ActionSettings;
use crate::dispatch::Dispatcher;
use crate::reconcile::Trigger;
use crate::slack::SlackApi;
use crate::store::{AuditKeep, SharedState, ThreadRecord};
use crate::supervisord::event::{State, ThreadKey};
use crate::supervisord::xmlrpc::{self, Client, Fault, LogChannel};
use crate::wakeup::Wakeup;

/// The oldest a click may be when its turn comes: older, it is refused rather than
/// run at a moment nobody expects any more.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// What a click's handling may take beyond the action's own `timeout`: the checks
/// (a user group asked of Slack) and recording it.
const CHECKS: Duration = Duration::from_secs(10);

/// What a runner is built from.
pub struct RunnerParts {
    /// This listener's host: only its cards' buttons run here.
    pub host: String,
    pub settings: ActionSettings,
    pub signer: Signer,
    /// For the messages only the clicker sees, and user groups.
    pub api: Arc<SlackApi>,
    /// Threads, mutes, clicks and their audit.
    pub shared: Arc<dyn SharedState>,
    /// Posts the audit notes in the card's thread.
    pub dispatcher: Arc<Dispatcher>,
    /// supervisord's XML-RPC; `None`: actions on processes cannot run.
    pub supervisor: Option<Client>,
    /// Wakes a thread's keeper after a mute changes its parent.
    pub wakeup: Arc<Wakeup>,
    /// The reader's pulse: the outcome waits for the events the action caused.
    pub trigger: Arc<Trigger>,
    /// In a fleet: clicks on other hosts' cards are routed to them through the
    /// fleet's action queue (`None`: one host; such a click is refused).
    pub fleet: Option<FleetRunner>,
}

/// What a runner needs to know of its fleet.
#[derive(Debug, Clone)]
pub struct FleetRunner {
    /// Cards are per program across the fleet: a click's thread is the program's.
    pub by_program: bool,
    /// A host not heard of for this long is silent: nothing is routed to it.
    pub silent_after: Duration,
}

/// Runs clicks for one listener.
pub struct Runner {
    parts: RunnerParts,
    members: Members,
    /// Threads with an action under way: one at a time per process.
    busy: Mutex<HashSet<ThreadKey>>,
    refusals: Refusals,
}

/// Why a click does nothing, as the user is told.
pub(super) struct Refused {
    /// For the user (ephemeral).
    pub(super) tell: String,
    /// For the log and the audit.
    pub(super) why: String,
}

/// A click no older than [`MAX_AGE`]: an older one is refused rather than run late.
pub(super) fn fresh(click: &Click) -> Result<(), Refused> {
    let age = click.age();
    if age <= MAX_AGE {
        return Ok(());
    }
    Err(Refused {
        tell: format!(
            "Your click reached this listener {} late (the limit is {}), so nothing was done rather than act at a moment you no longer expect. Click again if it is still wanted.",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(MAX_AGE)
        ),
        why: format!("{}s old", age.as_secs()),
    })
}

/// The mark of an action under way on a process, released when dropped (on every
/// path out, a time-out included).
struct Busy<'a> {
    set: &'a Mutex<HashSet<ThreadKey>>,
    key: ThreadKey,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

impl Runner {
    pub fn new(parts: RunnerParts) -> Runner {
        let supervisor = parts
            .supervisor
            .clone()
            .map(|c| c.with_timeout(parts.settings.timeout));
        Runner {
            parts: RunnerParts { supervisor, ..parts },
            members: Members::default(),
            busy: Mutex::new(HashSet::new()),
            refusals: Refusals::default(),
        }
    }

    pub fn api(&self) -> &SlackApi {
        &self.parts.api
    }

    /// Trims the click audit to what `keep` keeps.
    pub async fn prune_audit(&self, keep: AuditKeep) {
        match self.parts.shared.prune_audit(keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "trimmed the click audit"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the click audit"),
        }
    }

    /// Handles one click to its end, within the action's `timeout` plus a little.
    pub async fn handle(&self, click: Click) {
        let limit = self.parts.settings.timeout + CHECKS;
        if tokio::time::timeout(limit, self.checked(&click)).await.is_err() {
            tracing::error!(
                user = %click.user, action_id = %click.action_id,
                "gave up on a click after {}", humantime::format_duration(limit)
            );
        }
    }

    async fn checked(&self, click: &Click) {
        let value = match ButtonValue::parse(&click.value) {
            Ok(v) => v,
            Err(e) => {
                let r = Refused {
                    tell: "This button is not one supervisor-slack made; nothing was done.".into(),
                    why: e.to_string(),
                };
                return self.refuse(click, None, r).await;
            }
        };
        let key = value.key();
        if value.host != self.parts.host && self.parts.fleet.is_none() {
            // Slack gives a click to any connection of the app: this one is not ours.
            let r = Refused {
                tell: format!(
                    "This card belongs to the host *{}*, but your click reached the listener on *{}*: Slack hands each click to any connection of the app, not to the one that posted the card. Nothing was done. Hosts that share one Slack app need a fleet (fleet_url), which routes every click to the host that owns the process.",
                    escape_mrkdwn(&value.host),
                    escape_mrkdwn(&self.parts.host)
                ),
                why: format!("the card belongs to {}", value.host),
            };
            return self.refuse(click, None, r).await;
        }
        let action = match self.signed(click, &value) {
            Ok(a) => a,
            Err(r) => return self.refuse(click, None, r).await,
        };
        if let Err(r) = fresh(click) {
            return self.refuse(click, Some((&key, action)), r).await;
        }
        if value.host != self.parts.host {
            return self.route(click, &key, action).await;
        }
        let thread = match self.admit(click, &key, action).await {
            Ok(t) => t,
            Err(r) => return self.refuse(click, Some((&key, action)), r).await,
        };
        let shared = &self.parts.shared;
        let id = match shared.record_click(&click.user, &click.action_ts, &key, action.name()).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::info!(user = %click.user, thread = %key, %action, action_ts = %click.action_ts, "the same click was delivered again: it ran once");
                return;
            }
            Err(e) => {
                tracing::error!(user = %click.user, thread = %key, error = %e, "cannot audit a click, so it does not run");
                self.tell(click, &self.no_audit()).await;
                return;
            }
        };
        self.run_admitted(click, &key, action, &thread, id).await;
    }

    /// Runs a click that passed every check and was recorded as `id` in the audit:
    /// one action at a time per process; its outcome recorded.
    pub(super) async fn run_admitted(&self, click: &Click, key: &ThreadKey, action: Action, thread: &ThreadRecord, id: i64) -> String {
        let shared = &self.parts.shared;
        let outcome = match self.mark_busy(&key) {
            None => {
                let r = Refused {
                    tell: format!(
                        "Another action on {} is under way; try again when its outcome is in the thread.",
                        escape_mrkdwn(&key.display_name())
                    ),
                    why: "another action on the process is under way".into(),
                };
                tracing::warn!(user = %click.user, thread = %key, %action, "refused: {}", r.why);
                self.tell(click, &r.tell).await;
                format!("refused: {}", r.why)
            }
            Some(_busy) => self.run(click, key, action, thread).await,
        };
        if let Err(e) = shared.click_outcome(id, &outcome).await {
            tracing::warn!(thread = %key, error = %e, "cannot record an action's outcome");
        }
        outcome
    }

    /// The action a button's value asks for, if the value is signed by this
    /// listener's key (the fleet's, in a fleet) for this button.
    pub(super) fn signed(&self, click: &Click, value: &ButtonValue) -> Result<Action, Refused> {
        self.parts.signer.verify(value, &click.action_id).map_err(|e| Refused {
            tell: match self.parts.fleet {
                Some(_) => "This button's value is not signed by this fleet (forged, edited, or made by a host outside the fleet); nothing was done.".into(),
                None => "This button's value is not signed by this listener (forged or edited); nothing was done.".into(),
            },
            why: e.to_string(),
        })
    }

    /// What the clicker is told when the audit cannot be written.
    pub(super) fn no_audit(&self) -> String {
        match self.parts.fleet {
            Some(_) => "The fleet database cannot be reached now, so nothing was done (a click is never kept to run later). Try again in a moment.".into(),
            None => "The listener cannot write its audit log (disk trouble?), so nothing was done.".into(),
        }
    }

    pub(super) fn parts(&self) -> &RunnerParts {
        &self.parts
    }

    /// Whether `user` may be told why nothing was done (a few times at most).
    pub(super) fn may_tell(&self, user: &str) -> bool {
        self.refusals.may_tell(user)
    }

    /// Refuses a click: logged; told to the user and audited (when it names a
    /// process of this host) a few times per user at most.
    pub(super) async fn refuse(&self, click: &Click, about: Option<(&ThreadKey, Action)>, r: Refused) {
        tracing::warn!(user = %click.user, action_id = %click.action_id, "refused a click: {}", r.why);
        if !self.refusals.may_tell(&click.user) {
            return;
        }
        if let Some((key, action)) = about {
            let shared = &self.parts.shared;
            match shared.record_click(&click.user, &click.action_ts, key, action.name()).await {
                // The same refused click delivered again: told once.
                Ok(None) => return,
                Ok(Some(id)) => {
                    let _ = shared.click_outcome(id, &format!("refused: {}", r.why)).await;
                }
                Err(e) => tracing::warn!(thread = %key, error = %e, "cannot audit a refused click"),
            }
        }
        self.tell(click, &r.tell).await;
    }

    /// Whether the click may run: who asks, whether the action is on, where its
    /// thread is, and whether supervisord can be asked.
    pub(super) async fn admit(&self, click: &Click, key: &ThreadKey, action: Action) -> Result<ThreadRecord, Refused> {
        self.may(click, key, action).await?;
        let p = &self.parts;
        let thread = match self.thread_in(key, &click.channel_id).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(Refused {
                    tell: "This listener does not know this card's thread any more (was its state reset?); nothing was done.".into(),
                    why: "no thread for this card".into(),
                })
            }
            Err(e) => {
                return Err(Refused {
                    tell: self.no_audit(),
                    why: format!("the card's thread cannot be read: {e}"),
                })
            }
        };
        if action.controls_process() || action == Action::Stderr {
            if p.supervisor.is_none() {
                return Err(Refused {
                    tell: "This listener cannot reach supervisord's XML-RPC, so it cannot act on processes; nothing was done.".into(),
                    why: "no supervisord XML-RPC (set supervisor_server_url)".into(),
                });
            }
        }
        Ok(thread)
    }

    /// Whether the clicker may ask for `action` here: allowed, and the action on.
    pub(super) async fn may(&self, click: &Click, key: &ThreadKey, action: Action) -> Result<(), Refused> {
        let p = &self.parts;
        let allowed_user = p.settings.allow_users.contains(&click.user)
            || self.members.any_has(&p.api, &p.settings.allow_groups, &click.user).await;
        if !allowed_user {
            return Err(Refused {
                tell: format!(
                    "You are not allowed to {action} {} on {}: only the people and groups in [actions] allow_users / allow_groups of its listener are. Ask whoever runs it to add your member id {}.",
                    escape_mrkdwn(&key.display_name()),
                    escape_mrkdwn(&key.host),
                    escape_mrkdwn(&click.user)
                ),
                why: "user not in allow_users or allow_groups".into(),
            });
        }
        if !p.settings.allowed.contains(&action.setting()) {
            return Err(Refused {
                tell: format!("{action} is switched off on {} ([actions] allowed).", escape_mrkdwn(&p.host)),
                why: "action not in [actions] allowed".into(),
            });
        }
        Ok(())
    }

    /// The thread of `key` in the channel `channel_id` (where a button was clicked):
    /// its program's across the fleet when cards are per program.
    async fn thread_in(&self, key: &ThreadKey, channel_id: &str) -> Result<Option<ThreadRecord>, crate::store::StoreError> {
        let card = match &self.parts.fleet {
            Some(f) if f.by_program => ThreadKey::fleet(&key.group, &key.process),
            _ => key.clone(),
        };
        Ok(self
            .parts
            .shared
            .threads_of(&card)
            .await?
            .into_iter()
            .find(|t| t.channel_id.as_deref() == Some(channel_id) && t.parent_ts.is_some()))
    }

    fn mark_busy(&self, key: &ThreadKey) -> Option<Busy<'_>> {
        self.busy.lock().unwrap().insert(key.clone()).then(|| Busy {
            set: &self.busy,
            key: key.clone(),
        })
    }

    /// Runs an admitted action, then has it audited in the thread; returns the
    /// outcome for the audit log.
    async fn run(&self, click: &Click, key: &ThreadKey, action: Action, thread: &ThreadRecord) -> String {
        let user = click.user.as_str();
        tracing::info!(user, thread = %key, %action, "action requested from Slack");
        if action.controls_process() {
            self.note(key, thread, controls::requested(action, key, user));
        }
        let limit = self.parts.settings.timeout + Duration::from_secs(1);
        let (card, outcome) = match tokio::time::timeout(limit, self.perform(action, key, thread, user)).await {
            Ok(r) => r,
            Err(_) => {
                let why = format!("no outcome within {}", humantime::format_duration(limit));
                (controls::failed(action, key, &why, user), format!("failed: {why}"))
            }
        };
        tracing::info!(user, thread = %key, %action, outcome, "action done");
        if action.controls_process() {
            // The outcome after the changes it caused: their events reach the outbox
            // a moment after supervisord answers.
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.parts
                .trigger
                .wait_quiet(Duration::from_millis(300), Duration::from_secs(2))
                .await;
        }
        self.note(key, thread, card);
        outcome
    }

    async fn perform(&self, action: Action, key: &ThreadKey, thread: &ThreadRecord, user: &str) -> (Card, String) {
        let name = key.xmlrpc_name();
        let p = &self.parts;
        match action {
            Action::Mute | Action::Unmute => {
                let until = (action == Action::Mute).then(|| {
                    Utc::now() + chrono::Duration::from_std(p.settings.mute_for).unwrap_or(chrono::Duration::hours(1))
                });
                let r = match until {
                    Some(t) => p.shared.mute(key, user, t).await,
                    None => p.shared.unmute(key).await.map(|_| ()),
                };
                if let Err(e) = r {
                    return (controls::failed(action, key, &e.to_string(), user), format!("failed: {e}"));
                }
                // The parent shows the mute (and the other button) at once.
                p.wakeup.wake((key.clone(), thread.channel.clone()));
                let outcome = match until {
                    Some(t) => format!("muted until {}", t.to_rfc3339()),
                    None => "unmuted".into(),
                };
                (controls::muted(key, user, until), outcome)
            }
            Action::Stderr => self.show_log(key, &name, user).await,
            Action::Restart | Action::Start | Action::Stop => {
                let client = p.supervisor.as_ref().expect("admit checked XML-RPC");
                match process_call(client, action, &name).await {
                    Err(e) => {
                        let said = fault_text(&e);
                        (controls::failed(action, key, &said, user), format!("failed: {said}"))
                    }
                    Ok(()) => match client.get_process_info(&name).await {
                        Ok(info) => {
                            let state = info.state().unwrap_or(State::Unknown);
                            let pid = u32::try_from(info.pid).ok();
                            let outcome = format!("{state}{}", pid.filter(|p| *p > 0).map(|p| format!(", pid {p}")).unwrap_or_default());
                            (controls::done(action, key, state, pid, user), outcome)
                        }
                        Err(e) => {
                            let said = format!("done, but supervisord's state could not be read: {}", fault_text(&e));
                            (controls::failed(action, key, &said, user), said)
                        }
                    },
                }
            }
        }
    }

    /// Show stderr: its last lines; a process without a stderr log (redirect_stderr)
    /// gets its stdout's, said so.
    async fn show_log(&self, key: &ThreadKey, name: &str, user: &str) -> (Card, String) {
        let client = self.parts.supervisor.as_ref().expect("admit checked XML-RPC");
        let lines = self.parts.settings.stderr_lines;
        match client.last_lines(LogChannel::Stderr, name, lines, 2_800).await {
            Ok(text) => (controls::log_lines(key, "stderr", text.as_deref(), user), "stderr shown".into()),
            Err(stderr_err) => match client.last_lines(LogChannel::Stdout, name, lines, 2_800).await {
                Ok(text) => (
                    controls::log_lines(key, "stdout (no stderr log: redirect_stderr is on, or stderr_logfile is NONE)", text.as_deref(), user),
                    "stdout shown (no stderr log)".into(),
                ),
                Err(_) => (controls::failed(Action::Stderr, key, &stderr_err, user), format!("failed: {stderr_err}")),
            },
        }
    }

    /// Queues a line for the card's thread: the worker of `key`'s thread posts it in
    /// its turn (under the program's card, when cards are per program).
    fn note(&self, key: &ThreadKey, thread: &ThreadRecord, card: Card) {
        self.parts.dispatcher.note(key, &thread.channel, card);
    }

    /// Tells the clicker alone (`chat.postEphemeral`), in the card's thread.
    pub(super) async fn tell(&self, click: &Click, text: &str) {
        let thread = click.thread_ts.as_deref();
        if let Err(f) = self
            .parts
            .api
            .post_ephemeral(&click.channel_id, &click.user, thread, &refusal(text))
            .await
        {
            tracing::warn!(user = %click.user, "could not tell the user why nothing was done: {f}");
        }
    }
}

/// Restart (a stop that finds it stopped is fine), Start or Stop, waiting for the
/// outcome as supervisorctl does.
async fn process_call(client: &Client, action: Action, name: &str) -> Result<(), xmlrpc::Error> {
    match action {
        Action::Restart => {
            match client.stop_process(name, true).await {
                Ok(()) => {}
                Err(e) if e.fault() == Some(Fault::NotRunning) => {}
                Err(e) => return Err(e),
            }
            client.start_process(name, true).await
        }
        Action::Start => client.start_process(name, true).await,
        Action::Stop => client.stop_process(name, true).await,
        _ => Ok(()),
    }
}

/// supervisord's answer as an operator reads it: `SPAWN_ERROR: …`.
fn fault_text(e: &xmlrpc::Error) -> String {
    match e {
        xmlrpc::Error::Fault { fault, string } => {
            if string.starts_with(fault.name()) {
                string.clone()
            } else {
                format!("{}: {string}", fault.name())
            }
        }
        other => other.to_string(),
    }
}
