//! Clicks: a user pressing a button of a stored message (or of one of their
//! ephemeral messages), turned into the `block_actions` envelope Slack sends over
//! Socket Mode, delivered to one live connection and waited on for its ack. Tests
//! click through [`StandIn::click`]; the page through `POST /api/_socket/click`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::APP_ID;
use super::people::user_name;
use super::handle::{Inner, Shared};
use super::wire::message_json;
use super::StandIn;

/// How long a click waits for each envelope's ack: Slack's 3 seconds.
const ACK_WITHIN: Duration = Duration::from_secs(3);

/// A click on a button, as [`StandIn::click`] and `POST /api/_socket/click` take it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Click {
    /// Who clicks (`U…`).
    pub user: String,
    /// The message's channel, by name or id.
    pub channel: String,
    /// The message's `ts`.
    pub message_ts: String,
    /// The button's `action_id`.
    pub action_id: String,
    /// The value sent; `None`: the button's own `value`.
    #[serde(default)]
    pub value: Option<String>,
    /// The action's `action_ts`; `None`: a fresh one.
    #[serde(default)]
    pub action_ts: Option<String>,
    /// Deliver the same payload this many times (at least once), each in an envelope
    /// of its own, all at once: a redelivery for dedupe tests.
    #[serde(default = "once")]
    pub repeat: u32,
}

fn once() -> u32 {
    1
}

impl Click {
    /// `user` clicks the button `action_id` of the message `message_ts` in `channel`,
    /// once, with the button's value.
    pub fn new(
        user: impl Into<String>,
        channel: impl Into<String>,
        message_ts: impl Into<String>,
        action_id: impl Into<String>,
    ) -> Click {
        Click {
            user: user.into(),
            channel: channel.into(),
            message_ts: message_ts.into(),
            action_id: action_id.into(),
            value: None,
            action_ts: None,
            repeat: 1,
        }
    }
}

/// What became of a click's envelopes, one entry each, in sending order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClickOutcome {
    /// The envelopes sent.
    pub envelope_ids: Vec<String>,
    /// Whether each was acked within 3 s.
    pub acked: Vec<bool>,
    /// Milliseconds from sending to its ack (to giving up, when not acked).
    pub ack_ms: Vec<u64>,
}

/// Why a click could not be delivered: a code and the words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClickError {
    code: &'static str,
    message: String,
}

impl ClickError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        ClickError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ClickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A button found on a message: where it sits and what it is.
struct Found<'a> {
    /// `attachments[i]`'s 1-based id, for a button inside an attachment's blocks.
    attachment_id: Option<usize>,
    block_id: String,
    button: &'a Value,
}

/// Every button of `actions` blocks among `blocks` and the `attachments`' blocks (in
/// that order). A block without `block_id` gets a made-up one (Slack would have
/// given it a random one when the message was posted).
fn find_buttons<'a>(blocks: Option<&'a Value>, attachments: Option<&'a Value>) -> Vec<Found<'a>> {
    let lists = blocks.into_iter().map(|b| (None, b)).chain(
        attachments
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, a)| Some((Some(i + 1), a.get("blocks")?))),
    );
    let mut found = Vec::new();
    for (attachment_id, list) in lists {
        for (i, block) in list.as_array().into_iter().flatten().enumerate() {
            if block.get("type").and_then(Value::as_str) != Some("actions") {
                continue;
            }
            let block_id = match block.get("block_id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => format!("standin-{}-{i}", attachment_id.unwrap_or(0)),
            };
            let buttons = block.get("elements").and_then(Value::as_array);
            found.extend(
                buttons
                    .into_iter()
                    .flatten()
                    .filter(|e| e.get("type").and_then(Value::as_str) == Some("button"))
                    .map(|button| Found {
                        attachment_id,
                        block_id: block_id.clone(),
                        button,
                    }),
            );
        }
    }
    found
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The `block_actions` payload of a click (`action_ts` drawn from the clock when the
/// click has none).
fn payload(inner: &mut Inner, shared: &Shared, click: &Click) -> Result<Value, ClickError> {
    let opts = &shared.opts;
    let action_ts = click
        .action_ts
        .clone()
        .unwrap_or_else(|| inner.workspace.next_ts());
    let channel = inner
        .workspace
        .find_channel(&click.channel)
        .ok_or_else(|| {
            ClickError::new("channel_not_found", format!("no channel {}", click.channel))
        })?;
    let channel_id = channel.id.clone();
    let channel_name = channel.name.clone().unwrap_or_else(|| channel.id.clone());
    let stored = channel.messages.iter().find(|m| m.ts == click.message_ts);
    let ephemeral = inner
        .ephemerals
        .iter()
        .find(|e| e.channel == channel_id && e.ts == click.message_ts && e.user == click.user);
    // An ephemeral message is not stored by Slack: its clicks carry no `message`.
    let (message, blocks, attachments) = match (stored, ephemeral) {
        (Some(m), _) => (
            Some(message_json(m, &opts.identity, false)),
            m.blocks.as_ref(),
            m.attachments.as_ref(),
        ),
        (None, Some(e)) => (None, e.blocks.as_ref(), e.attachments.as_ref()),
        (None, None) => {
            return Err(ClickError::new(
                "message_not_found",
                format!("no message {} in #{channel_name}", click.message_ts),
            ))
        }
    };
    let buttons = find_buttons(blocks, attachments);
    let found = buttons
        .iter()
        .find(|f| str_at(f.button, "/action_id") == Some(click.action_id.as_str()))
        .ok_or_else(|| {
            ClickError::new(
                "no_button",
                format!(
                    "message {} has no button with action_id {:?}",
                    click.message_ts, click.action_id
                ),
            )
        })?;
    let mut container = json!({
        "type": "message",
        "message_ts": click.message_ts,
        "channel_id": channel_id,
        "is_ephemeral": message.is_none(),
        "is_app_unfurl": false,
    });
    if let Some(id) = found.attachment_id {
        container["type"] = json!("message_attachment");
        container["attachment_id"] = json!(id);
    }
    let value = click
        .value
        .clone()
        .or_else(|| str_at(found.button, "/value").map(str::to_owned));
    let mut action = json!({
        "type": "button",
        "action_id": click.action_id,
        "block_id": found.block_id,
        "text": found.button.get("text"),
        "action_ts": action_ts,
    });
    if let Some(v) = value {
        action["value"] = json!(v);
    }
    if let Some(style) = found.button.get("style") {
        action["style"] = style.clone();
    }
    let name = user_name(&opts.users, &click.user).unwrap_or(&click.user);
    let who = &opts.identity;
    let trigger_id = format!("{}.{}", fastrand::u64(..), fastrand::u64(..));
    let mut payload = json!({
        "type": "block_actions",
        "user": {"id": click.user, "username": name, "name": name, "team_id": who.team_id},
        "api_app_id": APP_ID,
        "team": {"id": who.team_id, "domain": "standin"},
        "enterprise": null,
        "is_enterprise_install": false,
        "container": container,
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": channel_name},
        "response_url": format!("{}/_socket/response_url/{trigger_id}", shared.api_url),
        "actions": [action],
        "state": {"values": {}},
    });
    if let Some(m) = message {
        payload["message"] = m;
    }
    Ok(payload)
}

/// Builds the click's payload, sends it in `repeat` envelopes and waits for their
/// acks.
async fn deliver(shared: &Shared, click: &Click) -> Result<ClickOutcome, ClickError> {
    let mut sent = Vec::new();
    {
        let mut inner = shared.lock();
        if !inner.sockets.any_live() {
            return Err(ClickError::new(
                "no_socket",
                "no listener connected over Socket Mode",
            ));
        }
        let payload = payload(&mut inner, shared, click)?;
        for _ in 0..click.repeat.max(1) {
            let envelope_id = format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                fastrand::u32(..),
                fastrand::u16(..),
                fastrand::u16(..0x1000),
                fastrand::u16(..),
                fastrand::u64(..1 << 48)
            );
            let envelope = json!({
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": false,
                "payload": payload,
            });
            let ack = inner.sockets.send(&envelope_id, envelope.to_string());
            sent.push((envelope_id, Instant::now(), ack));
        }
    }
    let mut outcome = ClickOutcome {
        envelope_ids: Vec::new(),
        acked: Vec::new(),
        ack_ms: Vec::new(),
    };
    for (envelope_id, at, ack) in sent {
        let acked_at = match ack {
            Some(rx) => tokio::time::timeout_at((at + ACK_WITHIN).into(), rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        if acked_at.is_none() {
            // Stop waiting: an ack that comes later is still recorded.
            shared.lock().sockets.forget(&envelope_id);
        }
        let until = acked_at.unwrap_or_else(Instant::now);
        outcome.envelope_ids.push(envelope_id);
        outcome.acked.push(acked_at.is_some());
        outcome
            .ack_ms
            .push(until.saturating_duration_since(at).as_millis() as u64);
    }
    Ok(outcome)
}

/// `POST /api/_socket/click` (JSON, the fields of [`Click`]): `{"ok":true,
/// envelope_ids, acked, ack_ms}`, or `{"ok":false,"error":CODE,"message":…}`.
pub(super) async fn click_handler(
    State(shared): State<Arc<Shared>>,
    Json(click): Json<Click>,
) -> Json<Value> {
    Json(match deliver(&shared, &click).await {
        Ok(outcome) => {
            let mut answer = json!(outcome);
            answer["ok"] = json!(true);
            answer
        }
        Err(e) => json!({"ok": false, "error": e.code, "message": e.message}),
    })
}

impl StandIn {
    /// Clicks a button: sends the `block_actions` envelope(s) over one live Socket
    /// Mode connection (round-robin) and waits up to 3 s for each ack. Errors, as
    /// `code: words`: `no_socket`, `channel_not_found`, `message_not_found`,
    /// `no_button`.
    pub async fn click(&self, click: Click) -> Result<ClickOutcome, String> {
        deliver(&self.shared, &click)
            .await
            .map_err(|e| e.to_string())
    }

    /// The buttons a message offers (top-level blocks, then attachments' blocks), as
    /// (action_id, text, value); empty when there is no such message.
    pub fn buttons(&self, channel: &str, ts: &str) -> Vec<(String, String, String)> {
        let inner = self.shared.lock();
        let Some(channel) = inner.workspace.find_channel(channel) else {
            return Vec::new();
        };
        let stored = channel.messages.iter().find(|m| m.ts == ts);
        let (blocks, attachments) = match stored {
            Some(m) => (m.blocks.as_ref(), m.attachments.as_ref()),
            None => match inner
                .ephemerals
                .iter()
                .find(|e| e.channel == channel.id && e.ts == ts)
            {
                Some(e) => (e.blocks.as_ref(), e.attachments.as_ref()),
                None => return Vec::new(),
            },
        };
        let text = |v: &Value, p: &str| str_at(v, p).unwrap_or("").to_string();
        find_buttons(blocks, attachments)
            .iter()
            .map(|f| {
                (
                    text(f.button, "/action_id"),
                    text(f.button, "/text/text"),
                    text(f.button, "/value"),
                )
            })
            .collect()
    }
}
