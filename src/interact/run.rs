//! What one click does. In order: read the button's value (which host, group,
//! process, action); a click on another host's card gets an answer naming the owner;
//! the signature must be this listener's; the click is recorded (the same click
//! delivered twice runs once); the user must be allowed and the action switched on;
//! then the action runs against supervisord with a bounded time, between a "requested
//! by" line and its outcome in the card's thread. Whoever is refused is told
//! (ephemeral) and the log says who and why.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use super::members::Members;
use super::Click;
use crate::actions::{Action, ButtonValue, Signer};
use crate::card::controls::{self, refusal};
use crate::card::Card;
use crate::config::ActionSettings;
use crate::crash::ContextSource;
use crate::dispatch::Dispatcher;
use crate::slack::SlackApi;
use crate::store::{Store, ThreadRecord};
use crate::supervisord::event::{State, ThreadKey};
use crate::supervisord::xmlrpc::{self, Fault, LogChannel};
use crate::wakeup::Wakeup;

/// Runs clicks for one listener.
pub struct Runner {
    /// This listener's host: only its cards' buttons run here.
    pub host: String,
    pub settings: ActionSettings,
    pub signer: Signer,
    /// For ephemeral answers and user groups.
    pub api: SlackApi,
    /// For the thread of a card, and the audit posted into it.
    pub dispatcher: Arc<Dispatcher>,
    pub store: Mutex<Store>,
    /// supervisord's XML-RPC; `None`: actions on processes cannot run.
    pub supervisor: Option<ContextSource>,
    /// Wakes a thread's keeper after a mute changes its parent.
    pub wakeup: Arc<Wakeup>,
    members: Members,
    /// Threads with an action under way: one at a time per process.
    busy: Mutex<HashSet<ThreadKey>>,
}

/// Why a click does nothing, as the user is told.
struct Refused {
    /// For the user (ephemeral).
    tell: String,
    /// For the log and the audit.
    why: String,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        host: String,
        settings: ActionSettings,
        signer: Signer,
        api: SlackApi,
        dispatcher: Arc<Dispatcher>,
        store: Store,
        supervisor: Option<ContextSource>,
        wakeup: Arc<Wakeup>,
    ) -> Runner {
        Runner {
            host,
            settings,
            signer,
            api,
            dispatcher,
            store: Mutex::new(store),
            supervisor,
            wakeup,
            members: Members::default(),
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Handles one click to its end.
    pub async fn handle(self: Arc<Self>, click: Click) {
        let value = match ButtonValue::parse(&click.value) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(user = %click.user, action_id = %click.action_id, "refused a click: {e}");
                self.tell(&click, "This button is not one supervisor-slack made; nothing was done.").await;
                return;
            }
        };
        let key = value.key();
        if value.host != self.host {
            // Slack gives a click to any connection of the app: this one is not ours.
            tracing::info!(user = %click.user, owner = %value.host, "a click on another host's card reached this listener; told the user");
            let text = format!(
                "This card belongs to the host *{}*, but your click reached the listener on *{}*: Slack hands each click to any connection of the app, not to the one that posted the card. Nothing was done. Give each host its own Slack app (its own bot and app-level token) so that every click reaches the host that posted the card.",
                crate::card::escape_mrkdwn(&value.host),
                crate::card::escape_mrkdwn(&self.host)
            );
            self.tell(&click, &text).await;
            return;
        }
        let action = match self.signer.verify(&value, &click.action_id) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(user = %click.user, thread = %key, action_id = %click.action_id, "refused a click: {e}");
                self.tell(&click, "This button's value is not signed by this listener (forged or edited); nothing was done.").await;
                return;
            }
        };
        let id = match self.with_store(|s| s.record_click(&click.user, &click.action_ts, &key, action.name())) {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::info!(user = %click.user, thread = %key, %action, action_ts = %click.action_ts, "the same click was delivered again: it ran once");
                return;
            }
            Err(e) => {
                tracing::error!(user = %click.user, thread = %key, error = %e, "cannot audit a click, so it does not run");
                self.tell(&click, "The listener cannot write its audit log (disk trouble?), so nothing was done.").await;
                return;
            }
        };
        let outcome = match self.admit(&click, &key, action).await {
            Err(r) => {
                tracing::warn!(user = %click.user, thread = %key, %action, "refused: {}", r.why);
                self.tell(&click, &r.tell).await;
                format!("refused: {}", r.why)
            }
            Ok(thread) => {
                let outcome = self.run(&click, &key, action, &thread).await;
                self.busy.lock().unwrap().remove(&key);
                outcome
            }
        };
        if let Err(e) = self.with_store(|s| s.click_outcome(id, &outcome)) {
            tracing::warn!(thread = %key, error = %e, "cannot record an action's outcome");
        }
    }

    /// Whether the click may run: who asks, whether the action is on, where its
    /// thread is, and that nothing else runs on the process. Marks it busy.
    async fn admit(&self, click: &Click, key: &ThreadKey, action: Action) -> Result<ThreadRecord, Refused> {
        let name = key.display_name();
        let allowed_user = self.settings.allow_users.contains(&click.user)
            || self.members.any_has(&self.api, &self.settings.allow_groups, &click.user).await;
        if !allowed_user {
            return Err(Refused {
                tell: format!(
                    "You are not allowed to {action} {} on {}: only the people and groups in [actions] allow_users / allow_groups of its listener are. Ask whoever runs it to add your member id {}.",
                    crate::card::escape_mrkdwn(&name),
                    crate::card::escape_mrkdwn(&self.host),
                    crate::card::escape_mrkdwn(&click.user)
                ),
                why: "user not in allow_users or allow_groups".into(),
            });
        }
        if !self.settings.allowed.contains(&action.setting()) {
            return Err(Refused {
                tell: format!("{action} is switched off on {} ([actions] allowed).", crate::card::escape_mrkdwn(&self.host)),
                why: "action not in [actions] allowed".into(),
            });
        }
        let Some(thread) = self.dispatcher.thread_in(key, &click.channel_id) else {
            return Err(Refused {
                tell: "This listener does not know this card's thread any more (was its state reset?); nothing was done.".into(),
                why: "no thread for this card".into(),
            });
        };
        if action != Action::Mute && action != Action::Unmute && self.supervisor.is_none() {
            return Err(Refused {
                tell: "This listener cannot reach supervisord's XML-RPC, so it cannot act on processes; nothing was done.".into(),
                why: "no supervisord XML-RPC (set supervisor_server_url)".into(),
            });
        }
        if !self.busy.lock().unwrap().insert(key.clone()) {
            return Err(Refused {
                tell: format!("Another action on {} is under way; try again when its outcome is in the thread.", crate::card::escape_mrkdwn(&name)),
                why: "another action on the process is under way".into(),
            });
        }
        Ok(thread)
    }

    /// Runs an admitted action and audits it in the thread; returns the outcome for
    /// the audit log.
    async fn run(&self, click: &Click, key: &ThreadKey, action: Action, thread: &ThreadRecord) -> String {
        let user = click.user.as_str();
        tracing::info!(user, thread = %key, %action, "action requested from Slack");
        if action.controls_process() {
            self.note(thread, controls::requested(action, key, user)).await;
        }
        let limit = self.settings.timeout + Duration::from_secs(1);
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
            // a moment after supervisord answers, and are posted at the channel's pace.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.dispatcher.events_waiting(thread) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.note(thread, card).await;
        outcome
    }

    async fn perform(&self, action: Action, key: &ThreadKey, thread: &ThreadRecord, user: &str) -> (Card, String) {
        let name = key.xmlrpc_name();
        match action {
            Action::Mute | Action::Unmute => {
                let until = (action == Action::Mute).then(|| {
                    Utc::now() + chrono::Duration::from_std(self.settings.mute_for).unwrap_or(chrono::Duration::hours(1))
                });
                let r = match until {
                    Some(t) => self.with_store(|s| s.mute(key, user, t)),
                    None => self.with_store(|s| s.unmute(key).map(|_| ())),
                };
                if let Err(e) = r {
                    return (controls::failed(action, key, &e.to_string(), user), format!("failed: {e}"));
                }
                // The parent shows the mute (and the other button) at once.
                self.wakeup.wake((key.clone(), thread.channel.clone()));
                let outcome = match until {
                    Some(t) => format!("muted until {}", t.to_rfc3339()),
                    None => "unmuted".into(),
                };
                (controls::muted(key, user, until), outcome)
            }
            Action::Stderr => self.show_log(key, &name, user).await,
            Action::Restart | Action::Start | Action::Stop => {
                let source = self.supervisor.as_ref().expect("admit checked XML-RPC");
                match process_call(source.client(), action, &name).await {
                    Err(e) => {
                        let said = fault_text(&e);
                        (controls::failed(action, key, &said, user), format!("failed: {said}"))
                    }
                    Ok(()) => match source.client().get_process_info(&name).await {
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
        let source = self.supervisor.as_ref().expect("admit checked XML-RPC");
        let lines = self.settings.stderr_lines;
        match source.last_lines(LogChannel::Stderr, name, lines, 2_800).await {
            Ok(text) => (controls::log_lines(key, "stderr", text.as_deref(), user), "stderr shown".into()),
            Err(stderr_err) => match source.last_lines(LogChannel::Stdout, name, lines, 2_800).await {
                Ok(text) => (
                    controls::log_lines(key, "stdout (no stderr log: redirect_stderr is on, or stderr_logfile is NONE)", text.as_deref(), user),
                    "stdout shown (no stderr log)".into(),
                ),
                Err(_) => (controls::failed(Action::Stderr, key, &stderr_err, user), format!("failed: {stderr_err}")),
            },
        }
    }

    async fn note(&self, thread: &ThreadRecord, card: Card) {
        if let Err(f) = self.dispatcher.post_note(thread, card).await {
            tracing::warn!(thread = %thread.key, "could not post an action's audit line in its thread: {f}");
        }
    }

    /// Tells the clicker alone (`chat.postEphemeral`), in the card's thread.
    async fn tell(&self, click: &Click, text: &str) {
        let thread = click.thread_ts.as_deref();
        if let Err(f) = self.api.post_ephemeral(&click.channel_id, &click.user, thread, &refusal(text)).await {
            tracing::warn!(user = %click.user, "could not tell the user why nothing was done: {f}");
        }
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError>) -> Result<T, crate::store::StoreError> {
        f(&mut self.store.lock().unwrap())
    }
}

/// Restart (a stop that finds it stopped is fine), Start or Stop, waiting for the
/// outcome as supervisorctl does.
async fn process_call(client: &xmlrpc::Client, action: Action, name: &str) -> Result<(), xmlrpc::Error> {
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
