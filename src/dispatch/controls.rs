//! The controls on a thread's cards, when actions from Slack are on: which buttons
//! (signed), the mute, and what a mute changes in delivery (no broadcast, no
//! mentions). Also the door [`crate::interact`] uses to write into a thread: the
//! audit of an action, paced and retried like every other post.

use std::time::Duration;

use chrono::Utc;

use super::Dispatcher;
use crate::actions::{self, Action, Signer};
use crate::card::controls::Controls;
use crate::card::Card;
use crate::slack::{Failure, Outgoing, Posted};
use crate::store::{Mute, ThreadRecord};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// What cards offer when actions are on.
#[derive(Debug, Clone)]
pub struct Offer {
    pub signer: Signer,
    /// The actions that exist (the `allowed` setting).
    pub allowed: Vec<Action>,
    /// How long Mute silences.
    pub mute_for: Duration,
}

impl Dispatcher {
    /// The mute on `key` now, if any: none when actions are off (nothing is read),
    /// and a store error counts as none (delivery goes on).
    pub(super) fn mute_of(&self, key: &ThreadKey) -> Option<Mute> {
        self.offer.as_ref()?;
        self.with_store(|s| s.mute_of(key)).ok().flatten()
    }

    /// The controls for a card of `key` in `state`: `None` when actions are off, for
    /// supervisord's own thread, and when no button would be left.
    pub(super) fn controls(&self, key: &ThreadKey, state: State, mute: Option<&Mute>) -> Option<Controls> {
        let offer = self.offer.as_ref()?;
        if key.group.is_empty() && key.process == "supervisord" {
            return None;
        }
        let buttons: Vec<(Action, String)> = actions::offered(state, mute.is_some(), &offer.allowed)
            .into_iter()
            .map(|a| (a, offer.signer.value(key, a)))
            .collect();
        if buttons.is_empty() && mute.is_none() {
            return None;
        }
        Some(Controls {
            buttons,
            muted: mute.map(|m| (m.by.clone(), m.until)),
            mute_for: humantime::format_duration(offer.mute_for).to_string(),
            name: key.display_name(),
        })
    }

    /// Controls on a reply: only on one that reports a failure (FATAL, an unexpected
    /// exit), where the next step is to act; the buttons are those of the state the
    /// reply ends in (a crash already restarted by supervisord offers Stop, not Start).
    pub(super) fn reply_controls(&self, key: &ThreadKey, events: &[ProcessState], mute: Option<&Mute>) -> Option<Controls> {
        let last = events.last()?;
        events
            .iter()
            .any(|e| e.to == State::Fatal || (e.to == State::Exited && e.is_failure()))
            .then(|| self.controls(key, last.to, mute))
            .flatten()
    }

    /// How long until the mute on a thread ends (its parent then loses the mute line).
    pub(super) fn mute_left(mute: Option<&Mute>) -> Option<Duration> {
        mute.and_then(|m| (m.until - Utc::now()).to_std().ok())
    }

    /// The thread of `key` in the channel `channel_id` (where a button was clicked).
    pub fn thread_in(&self, key: &ThreadKey, channel_id: &str) -> Option<ThreadRecord> {
        self.with_store(|s| s.threads_of(key))
            .ok()?
            .into_iter()
            .find(|t| t.channel_id.as_deref() == Some(channel_id) && t.parent_ts.is_some())
    }

    /// Whether `thread` still has events waiting to be posted (a store error: no).
    pub fn events_waiting(&self, thread: &ThreadRecord) -> bool {
        self.with_store(|s| s.pending(&thread.key, &thread.channel, 1))
            .map(|p| !p.is_empty())
            .unwrap_or(false)
    }

    /// Posts `card` into `thread` (an action's audit, Show stderr), paced and retried
    /// like every reply; never broadcast, never a mention.
    pub async fn post_note(&self, thread: &ThreadRecord, card: Card) -> Result<Posted, Failure> {
        let out = Outgoing {
            channel: thread.channel.clone(),
            card,
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        // No plain-text stand-in (that would show an event): a note Slack refuses
        // is logged by the caller.
        let call = super::pacing::Call::Post(&out.channel);
        self.retrier.run(call, &out.channel, || self.retrier.api.post(&out)).await
    }
}
