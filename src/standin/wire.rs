//! Slack's wire shapes: a call's parameters read from a JSON body, a form or the query
//! (form values holding JSON parsed, as Slack does), the answer written back
//! (`{"ok":…}`, HTTP status, `Retry-After`), and the `message` object Slack returns.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Query, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::auth::{Identity, APP_ID};
use super::state::{ChannelState, Message};

/// What an API call is answered.
pub(super) struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Answer {
    /// HTTP 200 `{"ok":true, …body}`.
    pub fn ok(mut body: Value) -> Answer {
        body["ok"] = Value::Bool(true);
        Answer {
            status: 200,
            body,
            retry_after: None,
        }
    }
    /// HTTP 200 `{"ok":false,"error":code}`.
    pub fn error(code: &str) -> Answer {
        Answer {
            status: 200,
            body: json!({"ok": false, "error": code}),
            retry_after: None,
        }
    }
    /// An error with the reason Slack gives for refused blocks.
    pub fn refusal(code: &str, reason: &str) -> Answer {
        Answer {
            status: 200,
            body: json!({"ok": false, "error": code, "errors": [reason]}),
            retry_after: None,
        }
    }
    /// HTTP 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Answer {
        Answer {
            status: 429,
            body: json!({"ok": false, "error": "ratelimited"}),
            retry_after: Some(secs),
        }
    }
    /// The Slack error code answered, if any.
    pub fn error_code(&self) -> Option<String> {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
    /// The `ts` of the message a successful answer names (`message_ts` for an
    /// ephemeral one).
    pub fn ts(&self) -> Option<String> {
        if self.body.get("ok") != Some(&Value::Bool(true)) {
            return None;
        }
        self.body
            .get("ts")
            .or_else(|| self.body.get("message_ts"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        if let Some(secs) = self.retry_after {
            builder = builder.header(header::RETRY_AFTER, secs.to_string());
        }
        builder
            .body(Body::from(self.body.to_string()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// Reads the request's parameters into a JSON object: JSON body, form body or query.
/// Form values that hold JSON (`blocks`, `attachments`, `metadata`) are parsed, as
/// Slack does.
pub(super) async fn read_params(req: Request) -> Result<Map<String, Value>, &'static str> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let query = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let mut params: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Ok(decode_form_values(params));
    }
    if is_json {
        let bytes = Bytes::from_request(req, &())
            .await
            .map_err(|_| "invalid_json")?;
        if bytes.is_empty() {
            return Ok(params);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => params.extend(map),
            _ => return Err("invalid_json"),
        }
        Ok(params)
    } else {
        let form = axum::Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .map_err(|_| "invalid_form_data")?;
        params.extend(form.0.into_iter().map(|(k, v)| (k, Value::String(v))));
        Ok(decode_form_values(params))
    }
}

fn decode_form_values(mut params: Map<String, Value>) -> Map<String, Value> {
    for key in ["blocks", "attachments", "metadata"] {
        if let Some(Value::String(s)) = params.get(key) {
            if let Ok(v) = serde_json::from_str::<Value>(s) {
                params.insert(key.to_string(), v);
            }
        }
    }
    for key in ["reply_broadcast", "include_all_metadata", "inclusive"] {
        if let Some(Value::String(s)) = params.get(key) {
            let b = s == "true" || s == "1";
            params.insert(key.to_string(), Value::Bool(b));
        }
    }
    params
}

/// A non-empty string parameter.
pub(super) fn str_param<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A boolean parameter; absent is `false`.
pub(super) fn bool_param(params: &Map<String, Value>, key: &str) -> bool {
    params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The `message` object Slack returns and lists.
pub(super) fn message_json(m: &Message, who: &Identity, include_metadata: bool) -> Value {
    let mut v = json!({
        "type": "message",
        "ts": m.ts,
        "user": who.user_id,
        "bot_id": who.bot_id,
        "app_id": APP_ID,
        "team": who.team_id,
        "text": m.text.clone().unwrap_or_default(),
    });
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = json!(t);
        v["parent_user_id"] = json!(who.user_id);
        if m.reply_broadcast {
            v["subtype"] = json!("thread_broadcast");
        }
    }
    if let Some(b) = &m.blocks {
        v["blocks"] = b.clone();
    }
    if let Some(a) = &m.attachments {
        v["attachments"] = a.clone();
    }
    if include_metadata {
        if let Some(md) = &m.metadata {
            v["metadata"] = md.clone();
        }
    }
    if let Some(e) = &m.edited {
        v["edited"] = json!({"user": who.user_id, "ts": e});
    }
    v
}

/// Adds the thread summary Slack puts on a parent with replies.
pub(super) fn with_thread_summary(
    mut v: Value,
    parent: &Message,
    channel: &ChannelState,
    who: &Identity,
) -> Value {
    let replies: Vec<&Message> = channel.replies_to(&parent.ts).collect();
    if let Some(last) = replies.last() {
        v["thread_ts"] = json!(parent.ts);
        v["reply_count"] = json!(replies.len());
        v["reply_users_count"] = json!(1);
        v["reply_users"] = json!([who.user_id]);
        v["latest_reply"] = json!(last.ts);
        v["subscribed"] = json!(false);
    }
    v
}
