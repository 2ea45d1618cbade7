//! Cards: Block Kit attachments rendered from events. Pure functions over values;
//! knows nothing of the network or storage.
//!
//! CONTRACT (stub written by the lead; the card helper implements it — keep these
//! public names and signatures, add whatever else is needed).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::event::{ProcessState, State};

/// Which of the two cards of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The thread's parent: the process's current state, colour, history trail.
    Parent,
    /// One reply in the thread: one transition, or several coalesced ones.
    Reply,
}

/// What went wrong with a process, from supervisord's XML-RPC (crash-context issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CrashContext {
    pub exit_status: Option<i64>,
    pub spawn_error: Option<String>,
    /// Seconds the process ran before this transition.
    pub uptime_secs: Option<i64>,
    /// The last lines of the log (already cut to size by the caller is NOT assumed:
    /// the card cuts it at a character boundary to fit).
    pub log_tail: Option<String>,
    /// `stderr` or `stdout` — which log the tail came from.
    pub log_name: Option<String>,
    /// Why context is missing or partial, e.g. "permission denied on supervisor.sock".
    pub unavailable: Option<String>,
}

/// Everything a parent card shows.
#[derive(Debug, Clone)]
pub struct ParentInput<'a> {
    /// The latest event of the thread (its `to` is the current state).
    pub latest: &'a ProcessState,
    /// Every state of the thread so far, oldest first, the current one last
    /// (may be long; the card compacts it into a trail such as `BACKOFF ×3`).
    pub history: &'a [State],
    /// When the thread started.
    pub since: DateTime<Utc>,
    pub environment: Option<&'a str>,
    /// Set by flood control when the process is flapping.
    pub flapping: bool,
}

/// Everything a reply card shows.
#[derive(Debug, Clone)]
pub struct ReplyInput<'a> {
    /// One transition, or several coalesced ones in order (never empty).
    pub events: &'a [ProcessState],
    pub environment: Option<&'a str>,
    /// Extra lines such as "3 events dropped by supervisord" or "recovered after FATAL".
    pub notes: &'a [String],
    pub context: Option<&'a CrashContext>,
    /// Mentions from the operator's settings (e.g. `<!subteam^S1>`), NOT escaped:
    /// they never come from event text.
    pub mentions: &'a [String],
}

/// A rendered card: the top-level `text` plus one attachment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    /// Top-level message text (phone notifications, screen readers).
    pub text: String,
    /// `#RRGGBB`
    pub color: String,
    pub fallback: String,
    /// The Block Kit blocks (a JSON array).
    pub blocks: Value,
}

impl Card {
    /// `{"text": ..., "attachments": [{"color", "fallback", "blocks"}]}` — the message
    /// content as Slack receives it (channel, thread_ts etc. are added by the caller).
    pub fn to_message_json(&self) -> Value {
        serde_json::json!({"text": self.text, "attachments": [{"color": self.color, "fallback": self.fallback, "blocks": self.blocks}]})
    }
}

/// Escapes `&`, `<`, `>` for mrkdwn (only these three).
pub fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The colour of a state (`#RRGGBB`); `expected` matters for EXITED only.
pub fn color(state: State, expected: Option<bool>) -> &'static str {
    match (state, expected) {
        (State::Running, _) => "#2EB67D",
        (State::Fatal, _) => "#A30200",
        _ => "#9E9E9E",
    }
}

/// Renders cards from templates (built-in, or a user's `templates_dir`).
pub struct Renderer {}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Other(String),
}

impl Renderer {
    /// The built-in templates from `templates/`, compiled in.
    pub fn builtin() -> Renderer {
        Renderer {}
    }
    /// User templates from a directory; missing files fall back to the built-in ones.
    pub fn from_dir(_dir: &std::path::Path) -> Result<Renderer, TemplateError> {
        Ok(Renderer {})
    }
    /// Never fails: a user template that errors or yields invalid Block Kit is logged
    /// and the built-in card is used instead.
    pub fn parent(&self, input: &ParentInput) -> Card {
        plain_text(std::slice::from_ref(input.latest), Variant::Parent)
    }
    pub fn reply(&self, input: &ReplyInput) -> Card {
        plain_text(input.events, Variant::Reply)
    }
}

/// A plain-text card (no blocks) for when Slack refused the rich one.
pub fn plain_text(events: &[ProcessState], _variant: Variant) -> Card {
    let e = events.last().unwrap();
    Card {
        text: format!("{} {} {} -> {}", e.host, e.process, e.from, e.to),
        color: color(e.to, e.expected).into(),
        fallback: String::new(),
        blocks: Value::Null,
    }
}
