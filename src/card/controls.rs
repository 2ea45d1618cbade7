//! The controls a card carries when actions from Slack are on: its buttons (each with
//! a signed value, made by the caller) and the mute line; and every text an action
//! writes — the audit in the thread, Show stderr's lines, and what a refused user is
//! told. Pure: what a button does is [`crate::interact`]'s.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::when::When;
use super::text::{escape_mrkdwn, fit_escaped_tail, fit_plain, sanitize_line, sanitize_log};
use super::{color, Card};
use crate::actions::Action;
use crate::supervisord::event::{State, ThreadKey};

/// The `block_id` of the buttons.
pub const BLOCK_ID: &str = "supervisor_slack_controls";

/// Most characters of stderr a Show stderr reply carries (a section's text is 3,000).
const STDERR_MAX: usize = 2_800;

/// What a card offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    /// The buttons, in order, each with its signed value.
    pub buttons: Vec<(Action, String)>,
    /// Who muted the thread and until when, if it is muted.
    pub muted: Option<(String, DateTime<Utc>)>,
    /// How long Mute silences ("1h").
    pub mute_for: String,
    /// The process's name on the card, for the confirmation dialogs.
    pub name: String,
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": true})
}

/// A user id as Slack gives it (`U…`, `W…`), as a mention; anything else is shown
/// escaped, never as a link.
pub fn user_ref(id: &str) -> String {
    if !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        format!("<@{id}>")
    } else {
        escape_mrkdwn(&sanitize_line(id))
    }
}

/// What an action is called on its button and in the audit.
fn title(action: Action) -> &'static str {
    match action {
        Action::Restart => "Restart",
        Action::Start => "Start",
        Action::Stop => "Stop",
        Action::Stderr => "Show stderr",
        Action::Mute => "Mute",
        Action::Unmute => "Unmute",
    }
}

/// The button's text: Mute says for how long.
fn label(action: Action, mute_for: &str) -> String {
    match action {
        Action::Mute => format!("Mute {mute_for}"),
        a => title(a).to_string(),
    }
}

fn button(action: Action, value: &str, c: &Controls) -> Value {
    let mut b = json!({
        "type": "button",
        "action_id": action.name(),
        "text": plain(&label(action, &c.mute_for)),
        "value": value,
    });
    let name = fit_plain(&sanitize_line(&c.name), 60);
    let confirm = match action {
        Action::Restart => Some(("Restart", format!("supervisord stops {name} and starts it again. The thread says who asked."))),
        Action::Stop => Some(("Stop", format!("supervisord stops {name}; it stays stopped until someone starts it. The thread says who asked."))),
        _ => None,
    };
    match action {
        Action::Start => b["style"] = json!("primary"),
        Action::Stop => b["style"] = json!("danger"),
        _ => {}
    }
    if let Some((verb, text)) = confirm {
        b["confirm"] = json!({
            "title": {"type": "plain_text", "text": fit_plain(&format!("{verb} {name}?"), 100)},
            "text": {"type": "plain_text", "text": fit_plain(&text, 300)},
            "confirm": {"type": "plain_text", "text": verb},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger",
        });
    }
    b
}

impl Card {
    /// The card with its controls at the end: the mute line, then the buttons. A
    /// plain-text card (no blocks) stays as it is.
    pub fn with_controls(mut self, c: Option<&Controls>) -> Card {
        let (Some(c), Some(blocks)) = (c, self.blocks.as_array_mut()) else {
            return self;
        };
        if let Some((by, until)) = &c.muted {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                "🔕 Muted by {} until {}: replies stay in the thread, without mentions",
                user_ref(by),
                When::new(*until).slack
            )}]}));
        }
        if !c.buttons.is_empty() {
            let elements: Vec<Value> = c.buttons.iter().map(|(a, v)| button(*a, v, c)).collect();
            blocks.push(json!({"type": "actions", "block_id": BLOCK_ID, "elements": elements}));
        }
        self
    }
}

impl Card {
    /// A program's card across the fleet with its one button: Start on every host
    /// where the program is down now (`hosts`, as drawn), with a confirmation naming
    /// them. `value` is signed for the program across the fleet.
    pub fn with_fleet_start(mut self, value: &str, name: &str, hosts: &[String]) -> Card {
        let Some(blocks) = self.blocks.as_array_mut() else {
            return self;
        };
        let name = fit_plain(&sanitize_line(name), 60);
        let mut listed: Vec<String> = hosts.iter().take(10).map(|h| sanitize_line(h)).collect();
        if hosts.len() > 10 {
            listed.push(format!("and {} more", hosts.len() - 10));
        }
        let n = hosts.len();
        let button = json!({
            "type": "button",
            "action_id": Action::Start.name(),
            "text": plain(&fit_plain(&format!("Start on the {n} failing hosts"), 75)),
            "value": value,
            "style": "primary",
            "confirm": {
                "title": {"type": "plain_text", "text": fit_plain(&format!("Start {name} on {n} hosts?"), 100)},
                "text": {"type": "plain_text", "text": fit_plain(&format!(
                    "supervisord starts {name} on {}: each host where it is down when you click. Each host's outcome is in the thread.",
                    listed.join(", ")
                ), 300)},
                "confirm": {"type": "plain_text", "text": "Start"},
                "deny": {"type": "plain_text", "text": "Cancel"},
            },
        });
        blocks.push(json!({"type": "actions", "block_id": BLOCK_ID, "elements": [button]}));
        self
    }
}

fn name_of(key: &ThreadKey) -> String {
    escape_mrkdwn(&sanitize_line(&key.display_name()))
}

/// An audit line: plain text (no attachment), so the thread reads it once.
fn note(state: State, emoji: &str, text: String) -> Card {
    Card::plain(format!("{emoji} {text}"), color(state, Some(true)))
}

/// "Restart requested by @user": posted before the action runs.
pub fn requested(action: Action, key: &ThreadKey, user: &str) -> Card {
    let what = title(action);
    note(State::Unknown, "🙋", format!("*{what}* of {} on {} requested by {}", name_of(key), escape_mrkdwn(&sanitize_line(&key.host)), user_ref(user)))
}

/// The outcome of Restart, Start or Stop: what supervisord reports now.
pub fn done(action: Action, key: &ThreadKey, state: State, pid: Option<u32>, user: &str) -> Card {
    let pid = pid.filter(|p| *p > 0).map(|p| format!(", pid {p}")).unwrap_or_default();
    let again = if action == Action::Restart && state == State::Running { " again" } else { "" };
    note(state, "✅", format!("{} is *{state}*{again}{pid} ({} by {})", name_of(key), action, user_ref(user)))
}

/// supervisord refused or failed the action: its fault, as it said it.
pub fn failed(action: Action, key: &ThreadKey, fault: &str, user: &str) -> Card {
    note(State::Fatal, "❌", format!(
        "*{action}* of {} failed: {} ({} asked)",
        name_of(key),
        escape_mrkdwn(&sanitize_line(&fit_plain(fault, 500))),
        user_ref(user)
    ))
}

/// The last lines of a log, in a code block; `None` lines: the log is empty.
pub fn log_lines(key: &ThreadKey, log: &str, text: Option<&str>, user: &str) -> Card {
    let who = user_ref(user);
    let Some(text) = text.map(|t| sanitize_log(t.trim_end())).filter(|t| !t.trim().is_empty()) else {
        return note(State::Unknown, "📄", format!("{log} of {} is empty (asked by {who})", name_of(key)));
    };
    let body = fit_escaped_tail(&text, STDERR_MAX);
    let lines = body.lines().count();
    let title = format!("Last {lines} line{} of {log} of {} (asked by {who})", if lines == 1 { "" } else { "s" }, name_of(key));
    note(State::Unknown, "📄", format!("{title}\n```\n{body}\n```"))
}

/// Mute set or ended.
pub fn muted(key: &ThreadKey, user: &str, until: Option<DateTime<Utc>>) -> Card {
    match until {
        Some(t) => note(State::Unknown, "🔕", format!(
            "{} muted by {} until {}: replies stay in this thread, not in the channel, and mention no one",
            name_of(key), user_ref(user), When::new(t).slack
        )),
        None => note(State::Unknown, "🔔", format!("{} unmuted by {}", name_of(key), user_ref(user))),
    }
}

/// What a user is told (ephemeral) when a click is refused or cannot run here.
pub fn refusal(text: &str) -> String {
    format!(":no_entry: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls(muted: bool) -> Controls {
        Controls {
            buttons: vec![(Action::Restart, "v1".into()), (Action::Stop, "v2".into()), (Action::Mute, "v3".into())],
            muted: muted.then(|| ("U0ADMIN".into(), Utc::now())),
            mute_for: "1h".into(),
            name: "app:<worker>".into(),
        }
    }

    #[test]
    fn buttons_survive_slack_morphism_and_keep_block_kit_limits() {
        let card = Card {
            text: "t".into(),
            color: "#000000".into(),
            fallback: "t".into(),
            blocks: json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]),
        };
        let card = card.with_controls(Some(&controls(true)));
        super::super::check_blocks_roundtrip(&card.blocks).unwrap();
        super::super::check_limits(&card.to_message_json()).unwrap();
        let blocks = card.blocks.as_array().unwrap();
        assert!(blocks[1]["elements"][0]["text"].as_str().unwrap().contains("<@U0ADMIN>"));
        let buttons = &blocks[2]["elements"];
        assert_eq!(buttons[0]["action_id"], "restart");
        assert_eq!(buttons[0]["confirm"]["title"]["text"], "Restart app:<worker>?");
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(buttons[2]["text"]["text"], "Mute 1h");
        assert!(buttons[2].get("confirm").is_none());
    }

    #[test]
    fn a_user_id_that_is_not_one_is_never_a_mention() {
        assert_eq!(user_ref("U0123ABC"), "<@U0123ABC>");
        assert_eq!(user_ref("<!channel>"), "&lt;!channel&gt;");
    }

    #[test]
    fn stderr_is_escaped_in_a_code_block() {
        let key = ThreadKey { host: "h".into(), group: "g".into(), process: "p".into() };
        let card = log_lines(&key, "stderr", Some("boom <!channel>\n```\nend"), "U1");
        assert!(card.blocks.is_null(), "a plain message");
        let body = card.text.split_once('\n').unwrap().1;
        assert!(body.starts_with("```\n") && body.ends_with("\n```"), "{body}");
        assert!(body.contains("&lt;!channel&gt;"), "{body}");
        assert!(!body[4..body.len() - 4].contains("```"), "no fence inside: {body}");
        assert!(log_lines(&key, "stderr", Some("\n"), "U1").text.contains("is empty"));
    }
}
