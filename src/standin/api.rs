//! The Web API methods: `auth.test`, `chat.postMessage`, `chat.update`, `pins.add`,
//! `conversations.replies`, `conversations.history`, `apps.connections.open` (its
//! tickets kept by `socket`), `chat.postEphemeral` and `usergroups.users.list` (run
//! by `people`). One handler takes every call through the same steps —
//! record it, inject a fault, check the token, then run the method — so that what a
//! test sees in [`Call`](super::Call) is what happened.
//!
//! Methods that change the channel take POST only (GET answers 405, as a read-only
//! link or an `<img>` on another site must not post); reads also take GET, as
//! slack-morphism sends them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::auth::bearer_token;
use super::conn::ConnHandle;
use super::handle::{Inner, Shared};
use super::state::{Call, Message};
use super::wire::{bool_param, message_json, read_params, str_param, with_thread_summary, Answer};
use super::{people, validate};
use super::{Fault, StandInOptions};

/// The methods that only read, and so may come by GET.
const READS: [&str; 4] = [
    "auth.test",
    "conversations.history",
    "conversations.replies",
    "usergroups.users.list",
];

/// Whether `method` may be called with the HTTP method `verb`: reads by GET, HEAD or
/// POST; everything else (every method that changes state, and unknown ones) by POST
/// only.
pub(super) fn allowed(verb: &Method, method: &str) -> bool {
    *verb == Method::POST
        || ((*verb == Method::GET || *verb == Method::HEAD) && READS.contains(&method))
}

/// The route `/api/{method}`.
pub(super) async fn handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(method): Path<String>,
    req: Request,
) -> Response {
    if !allowed(req.method(), &method) {
        // Refused before anything is recorded: a refused request changes nothing.
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            format!("{method} changes state: POST only\n"),
        )
            .into_response();
    }
    let arrived = Instant::now();
    let auth_header = bearer_token(req.headers());
    let params = read_params(req).await;
    // Handle the call in its own task: a slow call still takes effect when the client
    // stops waiting, as it would on Slack.
    let handle = tokio::spawn(async move {
        handle_call(shared, conn, method, params, auth_header, arrived).await
    });
    match handle.await {
        Ok(answer) => answer.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn handle_call(
    shared: Arc<Shared>,
    conn: ConnHandle,
    method: String,
    params: Result<Map<String, Value>, &'static str>,
    auth_header: Option<String>,
    arrived: Instant,
) -> Answer {
    let opts = &shared.opts;
    let unreadable = params.as_ref().err().copied();
    let params = params.unwrap_or_default();
    let token = auth_header.or_else(|| str_param(&params, "token").map(str::to_owned));
    let Recorded { index, fault, auth } =
        record(&shared, &method, &params, token.as_deref(), arrived);

    let answer = match fault {
        Some(Fault::Drop) => {
            conn.kill();
            shared.lock().calls[index].error = Some("connection dropped".into());
            return Answer {
                status: 0,
                body: Value::Null,
                retry_after: None,
            };
        }
        Some(Fault::Status(429)) => Some(Answer::rate_limited(opts.retry_after_secs)),
        Some(Fault::Status(code)) => Some(Answer {
            status: code,
            body: json!({"ok": false, "error": format!("stand_in_http_{code}")}),
            retry_after: None,
        }),
        Some(Fault::ApiError(code)) => Some(Answer::error(&code)),
        Some(Fault::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            None
        }
        Some(Fault::None) | None => None,
    };

    let mut inner = shared.lock();
    let answer = answer.unwrap_or_else(|| {
        if let Some(code) = unreadable {
            Answer::error(code)
        } else if let Err(code) = auth {
            Answer::error(code)
        } else {
            dispatch(&mut inner, opts, &method, &params)
        }
    });
    let channel = inner.calls[index].channel.clone().unwrap_or_default();
    if let Some(secs) = answer.retry_after {
        inner
            .limits
            .announce(&method, &channel, secs, Instant::now());
    }
    let call = &mut inner.calls[index];
    call.status = answer.status;
    call.error = answer.error_code();
    call.retry_after = answer.retry_after;
    call.ts = answer.ts();
    answer
}

/// A call as recorded: where it is in the record, the fault it met, and whether its
/// token passed (Slack's error code if not).
struct Recorded {
    index: usize,
    fault: Option<Fault>,
    auth: Result<(), &'static str>,
}

/// Records the call as it arrived (never its token) and takes the fault it meets.
fn record(
    shared: &Shared,
    method: &str,
    params: &Map<String, Value>,
    token: Option<&str>,
    arrived: Instant,
) -> Recorded {
    let opts = &shared.opts;
    let mut inner = shared.lock();
    let channel = str_param(params, "channel").and_then(|c| {
        inner
            .workspace
            .channel_mut(c, opts.channels.as_deref())
            .map(|c| c.id.clone())
    });
    let during_retry_after =
        inner
            .limits
            .inside_retry_after(method, channel.as_deref().unwrap_or_default(), arrived);
    let auth = inner.auth.check(method, token);
    let fault = inner.faults.take(method);
    let mut body = Value::Object(params.clone());
    if let Some(map) = body.as_object_mut() {
        map.remove("token");
    }
    inner.calls.push(Call {
        method: method.to_string(),
        body,
        at: arrived.duration_since(shared.started),
        channel,
        status: 0,
        error: None,
        retry_after: None,
        authorization_ok: auth.is_ok(),
        during_retry_after,
        fault: fault.as_ref().map(|f| format!("{f:?}")),
        ts: None,
    });
    Recorded {
        index: inner.calls.len() - 1,
        fault,
        auth,
    }
}

fn dispatch(
    inner: &mut Inner,
    opts: &StandInOptions,
    method: &str,
    params: &Map<String, Value>,
) -> Answer {
    match method {
        "auth.test" => {
            let who = &opts.identity;
            Answer::ok(json!({
                "url": who.url,
                "team": who.team,
                "user": who.user,
                "team_id": who.team_id,
                "user_id": who.user_id,
                "bot_id": who.bot_id,
                "is_enterprise_install": false,
            }))
        }
        "chat.postMessage" => post_message(inner, opts, params),
        "chat.update" => update_message(inner, opts, params),
        "pins.add" => pin_message(inner, opts, params),
        "conversations.replies" => replies(inner, opts, params),
        "conversations.history" => history(inner, opts, params),
        "apps.connections.open" => Answer::ok(json!({"url": inner.sockets.issue_url()})),
        "chat.postEphemeral" => people::post_ephemeral(inner, opts, params),
        "usergroups.users.list" => people::usergroup_users(opts, params),
        _ => Answer::error("unknown_method"),
    }
}

/// The id of the call's channel, once the channel exists, the bot is in it and the
/// method's rate limit for it allows the call; otherwise the answer to send.
fn channel_within_limits(
    inner: &mut Inner,
    opts: &StandInOptions,
    params: &Map<String, Value>,
    method: &str,
) -> Result<String, Answer> {
    let channel_id = inner.invited_channel(opts, params)?;
    inner
        .limits
        .take(opts, method, &channel_id, Instant::now())
        .map_err(Answer::rate_limited)?;
    Ok(channel_id)
}

fn post_message(inner: &mut Inner, opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    let channel_id = match channel_within_limits(inner, opts, params, "chat.postMessage") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let body = Value::Object(params.clone());
    if let Err(refusal) = validate::check_message(&body, opts.blocks_text_limit) {
        return Answer::refusal(refusal.code, &refusal.reason);
    }
    let thread_ts = str_param(params, "thread_ts").map(str::to_owned);
    let ts = inner.workspace.next_ts();
    let Some(channel) = inner.workspace.channel_by_id(&channel_id) else {
        return Answer::error("channel_not_found");
    };
    if let Some(parent) = &thread_ts {
        let is_parent = channel
            .messages
            .iter()
            .any(|m| &m.ts == parent && !m.is_reply());
        if !is_parent {
            return Answer::error("thread_not_found");
        }
    }
    let message = Message {
        ts: ts.clone(),
        reply_broadcast: thread_ts.is_some() && bool_param(params, "reply_broadcast"),
        thread_ts,
        text: params
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned),
        blocks: params.get("blocks").filter(|v| !v.is_null()).cloned(),
        attachments: params.get("attachments").filter(|v| !v.is_null()).cloned(),
        metadata: params.get("metadata").filter(|v| !v.is_null()).cloned(),
        edited: None,
        edits: 0,
        pinned: false,
    };
    let answer = Answer::ok(json!({
        "channel": channel_id,
        "ts": ts,
        "message": message_json(&message, &opts.identity, true),
    }));
    channel.messages.push(message);
    answer
}

/// `pins.add`: pins a message of the channel (`already_pinned` the second time).
fn pin_message(inner: &mut Inner, opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    let channel_id = match channel_within_limits(inner, opts, params, "pins.add") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let Some(ts) = str_param(params, "timestamp").map(str::to_owned) else {
        return Answer::error("no_item_specified");
    };
    let Some(channel) = inner.workspace.channel_by_id(&channel_id) else {
        return Answer::error("channel_not_found");
    };
    let Some(message) = channel.messages.iter_mut().find(|m| m.ts == ts) else {
        return Answer::error("message_not_found");
    };
    if message.pinned {
        return Answer::error("already_pinned");
    }
    message.pinned = true;
    Answer::ok(json!({}))
}

fn update_message(inner: &mut Inner, opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    let channel_id = match channel_within_limits(inner, opts, params, "chat.update") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let Some(ts) = str_param(params, "ts").map(str::to_owned) else {
        return Answer::error("message_not_found");
    };
    let body = Value::Object(params.clone());
    if let Err(refusal) = validate::check_message(&body, opts.blocks_text_limit) {
        return Answer::refusal(refusal.code, &refusal.reason);
    }
    let edit_ts = inner.workspace.next_ts();
    let Some(channel) = inner.workspace.channel_by_id(&channel_id) else {
        return Answer::error("channel_not_found");
    };
    let Some(message) = channel.messages.iter_mut().find(|m| m.ts == ts) else {
        return Answer::error("message_not_found");
    };
    // Fields left out keep their old value; `[]` clears.
    if let Some(text) = params.get("text").and_then(Value::as_str) {
        message.text = Some(text.to_owned());
    }
    for (key, slot) in [
        ("blocks", &mut message.blocks),
        ("attachments", &mut message.attachments),
        ("metadata", &mut message.metadata),
    ] {
        if let Some(v) = params.get(key).filter(|v| !v.is_null()) {
            *slot = Some(v.clone());
        }
    }
    message.edited = Some(edit_ts);
    message.edits += 1;
    let mut updated = message_json(message, &opts.identity, true);
    if let Some(map) = updated.as_object_mut() {
        for key in ["ts", "thread_ts", "type", "parent_user_id", "subtype"] {
            map.remove(key);
        }
    }
    let mut body = json!({
        "channel": channel_id,
        "ts": ts,
        "text": message.text.clone().unwrap_or_default(),
        "message": updated,
    });
    if let Some(t) = &message.thread_ts {
        body["thread_ts"] = json!(t);
    }
    Answer::ok(body)
}

fn replies(inner: &mut Inner, opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    let (Some(channel_arg), Some(ts)) = (str_param(params, "channel"), str_param(params, "ts"))
    else {
        return Answer::error("invalid_arguments");
    };
    let Some(channel) = inner.workspace.find_channel(channel_arg) else {
        return Answer::error("channel_not_found");
    };
    let who = &opts.identity;
    let include_metadata = bool_param(params, "include_all_metadata");
    let Some(target) = channel.messages.iter().find(|m| m.ts == ts) else {
        return Answer::error("thread_not_found");
    };
    let parent_ts = target
        .thread_ts
        .clone()
        .unwrap_or_else(|| target.ts.clone());
    let mut messages = Vec::new();
    if let Some(parent) = channel.messages.iter().find(|m| m.ts == parent_ts) {
        messages.push(with_thread_summary(
            message_json(parent, who, include_metadata),
            parent,
            channel,
            who,
        ));
    }
    messages.extend(
        channel
            .replies_to(&parent_ts)
            .map(|m| message_json(m, who, include_metadata)),
    );
    Answer::ok(
        json!({"messages": messages, "has_more": false, "response_metadata": {"next_cursor": ""}}),
    )
}

fn history(inner: &mut Inner, opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    let Some(channel_arg) = str_param(params, "channel") else {
        return Answer::error("channel_not_found");
    };
    let Some(channel) = inner.workspace.find_channel(channel_arg) else {
        return Answer::error("channel_not_found");
    };
    let who = &opts.identity;
    let include_metadata = bool_param(params, "include_all_metadata");
    let limit = params
        .get("limit")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(100) as usize;
    let ts_num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    let oldest = str_param(params, "oldest").map(ts_num);
    let latest = str_param(params, "latest").map(ts_num);
    let flow: Vec<&Message> = channel
        .messages
        .iter()
        .rev()
        .filter(|m| !m.is_reply() || m.reply_broadcast)
        .filter(|m| {
            oldest.is_none_or(|o| ts_num(&m.ts) > o) && latest.is_none_or(|l| ts_num(&m.ts) < l)
        })
        .collect();
    let has_more = flow.len() > limit;
    let messages: Vec<Value> = flow
        .into_iter()
        .take(limit)
        .map(|m| {
            let v = message_json(m, who, include_metadata);
            if m.is_reply() {
                v
            } else {
                with_thread_summary(v, m, channel, who)
            }
        })
        .collect();
    Answer::ok(
        json!({"messages": messages, "has_more": has_more, "response_metadata": {"next_cursor": ""}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_post_only_and_reads_also_get() {
        assert!(allowed(&Method::POST, "chat.postMessage"));
        assert!(!allowed(&Method::GET, "chat.postMessage"));
        assert!(!allowed(&Method::GET, "chat.update"));
        assert!(!allowed(&Method::PUT, "chat.update"));
        assert!(!allowed(&Method::GET, "no.such.method"));
        assert!(allowed(&Method::GET, "auth.test"));
        assert!(allowed(&Method::GET, "conversations.history"));
        assert!(allowed(&Method::POST, "conversations.replies"));
        assert!(allowed(&Method::GET, "usergroups.users.list"));
        assert!(!allowed(&Method::GET, "apps.connections.open"));
        assert!(!allowed(&Method::GET, "chat.postEphemeral"));
    }
}
