//! Slash commands: a user typing `/supervisor …` in a channel, turned into the
//! `slash_commands` envelope Slack sends over Socket Mode, delivered to one live
//! connection and waited on for its ack. The answer is what Slack shows only that
//! user: the ack's `payload`, or what the app later POSTs to the command's
//! `response_url` (a local endpoint here, `/api/_socket/response_url/{id}`, that
//! records every post). Both are kept as [`Ephemeral`]s of the user, so the page
//! shows them marked "Only visible to you", and as [`CommandAnswer`]s for tests.
//! Tests type through [`StandIn::command`]; the page's message box through
//! `POST /api/_socket/command`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::APP_ID;
use super::handle::Shared;
use super::people::user_name;
use super::state::{Ephemeral, Pending};
pub use super::state::CommandAnswer;
use super::validate;
use super::StandIn;

/// How long a command waits for its ack: Slack's 3 seconds.
const ACK_WITHIN: Duration = Duration::from_secs(3);

/// A command typed by a user, as [`StandIn::command`] and `POST /api/_socket/command`
/// take it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlashCommand {
    /// Who types it (`U…`).
    pub user: String,
    /// Where, by name or id (a channel never posted to is made).
    pub channel: String,
    /// The command, `/supervisor` unless said.
    #[serde(default = "supervisor")]
    pub command: String,
    /// The rest of the line.
    #[serde(default)]
    pub text: String,
}

fn supervisor() -> String {
    "/supervisor".into()
}

impl SlashCommand {
    /// `user` types `/supervisor TEXT` in `channel`.
    pub fn new(user: impl Into<String>, channel: impl Into<String>, text: impl Into<String>) -> SlashCommand {
        SlashCommand {
            user: user.into(),
            channel: channel.into(),
            command: supervisor(),
            text: text.into(),
        }
    }
}

/// What became of a typed command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    pub envelope_id: String,
    /// Acked within 3 s.
    pub acked: bool,
    /// Milliseconds from sending to the ack (to giving up, when not acked).
    pub ack_ms: u64,
    /// The ack's `payload`: the answer, when it came with the ack.
    pub payload: Option<Value>,
    /// Why Slack would not show that payload (its checks of a message), if so.
    pub refused: Option<String>,
    /// Where a later answer goes.
    pub response_url: String,
}

/// Records an answer and shows it to its user (unless it would show nothing or
/// says it is for the whole channel, which this stand-in does not draw).
fn record(shared: &Shared, id: &str, via: &'static str, body: &Value) {
    let mut inner = shared.lock();
    let Some(p) = inner.commands.get(id).cloned() else {
        return;
    };
    let text = body.get("text").and_then(Value::as_str).map(str::to_owned);
    let blocks = body.get("blocks").filter(|b| !b.is_null()).cloned();
    let at = Instant::now().duration_since(shared.started);
    inner.answers.push(CommandAnswer {
        id: id.to_string(),
        user: p.user.clone(),
        channel: p.channel.clone(),
        via,
        body: body.clone(),
        at,
    });
    if text.as_deref().is_none_or(str::is_empty) && blocks.is_none() {
        return;
    }
    let ts = inner.workspace.next_ts();
    inner.ephemerals.push(Ephemeral {
        channel: p.channel,
        user: p.user,
        text,
        thread_ts: None,
        blocks,
        attachments: body.get("attachments").filter(|a| !a.is_null()).cloned(),
        ts,
    });
}

/// Sends the command's envelope and waits for its ack.
async fn deliver(shared: &Shared, cmd: &SlashCommand) -> Result<CommandOutcome, (&'static str, String)> {
    let (envelope_id, response_url, at, ack) = {
        let mut inner = shared.lock();
        if !inner.sockets.any_live() {
            return Err(("no_socket", "no listener connected over Socket Mode".into()));
        }
        let opts = &shared.opts;
        let channel = inner
            .workspace
            .channel_mut(&cmd.channel, opts.channels.as_deref())
            .ok_or_else(|| ("channel_not_found", format!("no channel {}", cmd.channel)))?;
        let (channel_id, channel_name) = (channel.id.clone(), channel.name.clone());
        let name = user_name(&opts.users, &cmd.user).unwrap_or(&cmd.user).to_string();
        let trigger_id = format!("{}.{}", fastrand::u64(..), fastrand::u64(..));
        let response_url = format!("{}/_socket/response_url/{trigger_id}", shared.api_url);
        let envelope_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let envelope = json!({
            "envelope_id": envelope_id,
            "type": "slash_commands",
            "accepts_response_payload": true,
            "payload": {
                "token": "standin-verification-token",
                "team_id": opts.identity.team_id,
                "team_domain": "standin",
                "channel_id": channel_id,
                "channel_name": channel_name.clone().unwrap_or_else(|| "directmessage".into()),
                "user_id": cmd.user,
                "user_name": name,
                "command": cmd.command,
                "text": cmd.text,
                "api_app_id": APP_ID,
                "is_enterprise_install": "false",
                "response_url": response_url,
                "trigger_id": trigger_id,
            },
        });
        inner.commands.insert(
            trigger_id.clone(),
            Pending {
                user: cmd.user.clone(),
                channel: channel_id,
            },
        );
        let ack = inner.sockets.send(&envelope_id, envelope.to_string());
        (envelope_id, (trigger_id, response_url), Instant::now(), ack)
    };
    let acked_at = match ack {
        Some(rx) => tokio::time::timeout_at((at + ACK_WITHIN).into(), rx).await.ok().and_then(Result::ok),
        None => None,
    };
    if acked_at.is_none() {
        shared.lock().sockets.forget(&envelope_id);
    }
    let ack_ms = acked_at
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(at)
        .as_millis() as u64;
    let payload = acked_at.and_then(|_| {
        let inner = shared.lock();
        inner
            .sockets
            .acks
            .iter()
            .rev()
            .find(|a| a.envelope_id == envelope_id)
            .and_then(|a| a.payload.clone())
    });
    let refused = payload
        .as_ref()
        .and_then(|p| validate::check_message(p, shared.opts.blocks_text_limit).err())
        .map(|r| format!("{}: {}", r.code, r.reason));
    if let (Some(p), None) = (&payload, &refused) {
        record(shared, &response_url.0, "ack", p);
    }
    Ok(CommandOutcome {
        envelope_id,
        acked: acked_at.is_some(),
        ack_ms,
        payload,
        refused,
        response_url: response_url.1,
    })
}

/// `POST /api/_socket/command` (JSON, the fields of [`SlashCommand`]): `{"ok":true,
/// envelope_id, acked, ack_ms, payload, refused}`, or `{"ok":false,"error":…,"message":…}`.
pub(super) async fn command_handler(
    State(shared): State<Arc<Shared>>,
    Json(cmd): Json<SlashCommand>,
) -> Json<Value> {
    Json(match deliver(&shared, &cmd).await {
        Ok(outcome) => {
            let mut answer = json!(outcome);
            answer["ok"] = json!(true);
            answer
        }
        Err((code, message)) => json!({"ok": false, "error": code, "message": message}),
    })
}

/// `POST /api/_socket/response_url/{id}`: an answer that came later. Recorded (and
/// shown to its user when `id` is a command's); answered `{"ok":true}`, or
/// `{"ok":false,"error":"invalid_payload"}` for a body that is not a JSON object or
/// that Slack's message checks refuse.
pub(super) async fn response_url_handler(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return Json(json!({"ok": false, "error": "invalid_payload"}));
    };
    if !body.is_object() {
        return Json(json!({"ok": false, "error": "invalid_payload"}));
    }
    if let Err(r) = validate::check_message(&body, shared.opts.blocks_text_limit) {
        return Json(json!({"ok": false, "error": r.code, "message": r.reason}));
    }
    record(&shared, &id, "response_url", &body);
    Json(json!({"ok": true}))
}

impl StandIn {
    /// Types a command: sends the `slash_commands` envelope over one live Socket
    /// Mode connection (round-robin) and waits up to 3 s for its ack. Errors, as
    /// `code: words`: `no_socket`, `channel_not_found`.
    pub async fn command(&self, cmd: SlashCommand) -> Result<CommandOutcome, String> {
        deliver(&self.shared, &cmd).await.map_err(|(c, m)| format!("{c}: {m}"))
    }

    /// Every answer to a typed command so far (from acks and response URLs), in order.
    pub fn command_answers(&self) -> Vec<CommandAnswer> {
        self.shared.lock().answers.clone()
    }
}
