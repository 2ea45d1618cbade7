//! The controls on a thread's cards, when actions from Slack are on: which buttons
//! (signed), and the mute line. What a mute changes in delivery (no broadcast, no
//! mentions) is the worker's.

use std::time::Duration;

use chrono::Utc;

use crate::actions::{self, Action, Signer};
use crate::card::controls::Controls;
use crate::store::Mute;
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

impl Offer {
    /// The controls for a card of `key` in `state`: `None` for supervisord's own
    /// thread, and when no button would be left.
    pub fn controls(&self, key: &ThreadKey, state: State, mute: Option<&Mute>) -> Option<Controls> {
        if key.is_supervisord() {
            return None;
        }
        let buttons: Vec<(Action, String)> = actions::offered(state, mute.is_some(), &self.allowed)
            .into_iter()
            .map(|a| (a, self.signer.value(key, a)))
            .collect();
        if buttons.is_empty() && mute.is_none() {
            return None;
        }
        Some(Controls {
            buttons,
            muted: mute.map(|m| (m.by.clone(), m.until)),
            mute_for: humantime::format_duration(self.mute_for).to_string(),
            name: key.display_name(),
        })
    }

    /// Controls on a reply: only on one that reports a failure (FATAL, an unexpected
    /// exit), where the next step is to act; the buttons are those of the state the
    /// reply ends in (a crash already restarted by supervisord offers Stop, not Start).
    pub fn reply_controls(&self, key: &ThreadKey, events: &[ProcessState], mute: Option<&Mute>) -> Option<Controls> {
        let last = events.last()?;
        events
            .iter()
            .any(ProcessState::is_failure)
            .then(|| self.controls(key, last.to, mute))
            .flatten()
    }
}

/// How long until a mute ends (its parent then loses the mute line).
pub fn mute_left(mute: Option<&Mute>) -> Option<Duration> {
    mute.and_then(|m| (m.until - Utc::now()).to_std().ok())
}
