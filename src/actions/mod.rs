//! What can be asked from Slack, as values: the [`Action`]s, which of them a card
//! offers for a state ([`offered`]), and the signed button value ([`sign`]) that says
//! which process a click is about; and what the slash command may ask ([`Ask`]).
//! Pure: the clicks and commands themselves arrive in [`crate::interact`], the
//! settings that allow them are in [`crate::config`].

pub mod ask;
pub mod sign;

use std::fmt;
use std::str::FromStr;

use crate::supervisord::event::State;

pub use ask::Ask;
pub use sign::{ButtonValue, Signer, ValueError};

/// Something a user may ask from a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Restart,
    Start,
    Stop,
    /// Show the last lines of the process's stderr in the thread.
    Stderr,
    Mute,
    Unmute,
}

impl Action {
    /// Every action, in the order buttons show them.
    pub const ALL: [Action; 6] = [
        Action::Restart,
        Action::Start,
        Action::Stop,
        Action::Stderr,
        Action::Mute,
        Action::Unmute,
    ];

    /// The name in settings (`allowed`), in `action_id`s and in the audit: `mute`
    /// covers unmuting.
    pub fn name(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Stderr => "stderr",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
        }
    }

    /// The setting that allows it (`unmute` is allowed with `mute`).
    pub fn setting(self) -> Action {
        match self {
            Action::Unmute => Action::Mute,
            a => a,
        }
    }

    /// Whether it changes the process (and so runs an XML-RPC call that supervisord
    /// may refuse).
    pub fn controls_process(self) -> bool {
        matches!(self, Action::Restart | Action::Start | Action::Stop)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An action name that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an action; the actions are restart, start, stop, stderr and mute",
            self.0
        )
    }
}

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Action, UnknownAction> {
        Action::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// The actions a card offers for a process in `state`, among those `allowed`, given
/// whether its thread is muted now: Restart and Stop while it runs (or is starting or
/// backing off), Start once it stopped, exited or failed, Show stderr whenever it has
/// a process, Mute or Unmute always. A process supervisord no longer has offers none.
pub fn offered(state: State, muted: bool, allowed: &[Action]) -> Vec<Action> {
    use State::*;
    let by_state: &[Action] = match state {
        Running => &[Action::Restart, Action::Stop, Action::Stderr],
        Starting | Backoff => &[Action::Stop, Action::Stderr],
        Stopped | Exited | Fatal => &[Action::Start, Action::Stderr],
        Stopping => &[Action::Stderr],
        Unknown | Removed => return Vec::new(),
    };
    let mute = if muted { Action::Unmute } else { Action::Mute };
    by_state
        .iter()
        .copied()
        .chain(std::iter::once(mute))
        .filter(|a| allowed.contains(&a.setting()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_offers_restart_stop_stderr_and_mute() {
        let all = [Action::Restart, Action::Start, Action::Stop, Action::Stderr, Action::Mute];
        assert_eq!(
            offered(State::Running, false, &all),
            [Action::Restart, Action::Stop, Action::Stderr, Action::Mute]
        );
        assert_eq!(
            offered(State::Fatal, true, &all),
            [Action::Start, Action::Stderr, Action::Unmute]
        );
        assert_eq!(offered(State::Removed, false, &all), []);
        // Only what the settings allow; unmute comes with mute.
        assert_eq!(offered(State::Running, true, &[Action::Stderr]), [Action::Stderr]);
        assert_eq!(offered(State::Exited, true, &[Action::Mute]), [Action::Unmute]);
    }

    #[test]
    fn names_parse_back_and_unknown_ones_say_what_exists() {
        for a in Action::ALL {
            assert_eq!(a.name().parse::<Action>(), Ok(a));
        }
        let e = "reboot".parse::<Action>().unwrap_err();
        assert!(e.to_string().contains("restart, start, stop, stderr and mute"), "{e}");
    }
}
