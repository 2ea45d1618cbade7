//! The Slack stand-in: a local HTTP server that speaks the part of Slack's Web API this
//! project uses, so tests (and `supervisor-slack preview`) can run the real client
//! against something that behaves like Slack where the project can trip:
//!
//! - answers in Slack's shapes (`ts` values, `message` objects), so slack-morphism
//!   parses every answer;
//! - refuses payloads Slack refuses (Block Kit limits, legacy attachment fields beside
//!   `blocks`, `no_text`, unknown `thread_ts`, edits of unknown messages): see
//!   [`validate`];
//! - rate-limits `chat.postMessage` per channel (token bucket) and `chat.update`, with
//!   HTTP 429 and `Retry-After`, and notes every request that arrives before an
//!   announced `Retry-After` elapsed;
//! - injects faults on demand ([`Fault`], [`FaultRule`]): HTTP statuses, slowness,
//!   dropped connections, API errors;
//! - keeps the channel as a reader sees it ([`StandIn::channel`]) and shows it as a
//!   Slack-like web page at `/` (see [`page`]).
//!
//! Routes: `/api/{method}` (GET with a query or POST with JSON or a form), `/` (the
//! page; `?channel=NAME`, `?thread=TS` for one thread, `?collapsed=1` for folded threads), `/api/_calls` and `/api/_channel/{name}` (JSON, for debugging).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use supervisor_slack::standin::{Fault, StandIn, StandInOptions};
//! let slack = StandIn::start(StandInOptions::default()).await?;
//! // point the client at slack.api_url(), then:
//! slack.set_fault(Fault::api_error("message_not_found").on("chat.update").times(1));
//! # Ok(()) }
//! ```

mod conn;
pub mod mrkdwn;
pub mod page;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use conn::{ConnHandle, KillableListener};

/// The identity the stand-in reports in `auth.test` and on every message it stores.
pub const TEAM_ID: &str = "T0STANDIN";
/// The bot user every message is posted as.
pub const BOT_USER_ID: &str = "U0STANDIN";
/// The bot id every message carries.
pub const BOT_ID: &str = "B0STANDIN";
const APP_ID: &str = "A0STANDIN";

/// How the stand-in behaves. `Default` is Slack-like: one `chat.postMessage` per
/// second per channel with bursts of 3, `Retry-After: 1`, any `xoxb-` token.
#[derive(Debug, Clone)]
pub struct StandInOptions {
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// One `chat.postMessage` token per this interval, per channel.
    pub post_interval: Duration,
    /// How many posts a channel may take at once before the interval applies.
    pub burst: u32,
    /// `chat.update` calls allowed per minute per channel (Slack's Tier 3: 50+).
    pub updates_per_minute: u32,
    /// Answer 429 when a bucket is empty. Off: count nothing, refuse nothing.
    pub enforce_rate_limit: bool,
    /// The least `Retry-After` (seconds) a 429 announces; more if the bucket needs it.
    pub retry_after_secs: u64,
    /// Characters of text all blocks of a message may carry together before
    /// `msg_blocks_too_long` (Slack reports it near 13k; the project aims under 12k).
    pub blocks_text_limit: usize,
    /// When set, only these channel names (or ids) exist; others are `channel_not_found`.
    pub channels: Option<Vec<String>>,
}

impl Default for StandInOptions {
    fn default() -> Self {
        StandInOptions {
            port: 0,
            post_interval: Duration::from_secs(1),
            burst: 3,
            updates_per_minute: 50,
            enforce_rate_limit: true,
            retry_after_secs: 1,
            blocks_text_limit: 12_000,
            channels: None,
        }
    }
}

/// A failure to inject into API calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No fault; `set_fault(Fault::None)` clears every rule.
    None,
    /// Answer with this HTTP status (body `{"ok":false,...}`); 429 also sends
    /// `Retry-After` and counts as an announced wait.
    Status(u16),
    /// Wait this long, then handle the call normally. The call takes effect even if
    /// the client gave up waiting (as with a slow Slack).
    Slow(Duration),
    /// Close the connection without answering; the call has no effect.
    Drop,
    /// Answer HTTP 200 `{"ok":false,"error":CODE}`; the call has no effect.
    ApiError(String),
}

impl Fault {
    /// `Fault::ApiError(code)`.
    pub fn api_error(code: impl Into<String>) -> Fault {
        Fault::ApiError(code.into())
    }
    /// Applies this fault only to calls of one API method, e.g. `"chat.update"`.
    pub fn on(self, method: impl Into<String>) -> FaultRule {
        FaultRule::from(self).on(method)
    }
    /// Applies this fault only to the next `n` (matching) calls.
    pub fn times(self, n: u32) -> FaultRule {
        FaultRule::from(self).times(n)
    }
}

/// A [`Fault`] with a scope: which API method it hits (all by default) and for how
/// many calls (forever by default). Build it with [`Fault::on`] / [`Fault::times`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// What happens to a matching call.
    pub fault: Fault,
    /// Only calls of this method match; `None`: every API method.
    pub method: Option<String>,
    /// How many more calls this rule hits; `None`: until replaced.
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// Restricts the rule to one API method.
    pub fn on(mut self, method: impl Into<String>) -> FaultRule {
        self.method = Some(method.into());
        self
    }
    /// Restricts the rule to the next `n` matching calls.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.remaining = Some(n);
        self
    }
}

impl From<Fault> for FaultRule {
    fn from(fault: Fault) -> Self {
        FaultRule {
            fault,
            method: None,
            remaining: None,
        }
    }
}

/// One request the stand-in received, as recorded in arrival order.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// API method, e.g. `chat.postMessage`.
    pub method: String,
    /// The request's parameters: the JSON body, or the form / query as a JSON object.
    pub body: Value,
    /// When it arrived, since the stand-in started.
    pub at: Duration,
    /// Channel id the call addressed, if any.
    pub channel: Option<String>,
    /// HTTP status answered; 0 while still being handled or if the connection was dropped.
    pub status: u16,
    /// Slack error code answered (`ratelimited` for 429s), if any.
    pub error: Option<String>,
    /// `Retry-After` seconds announced with this answer, if any.
    pub retry_after: Option<u64>,
    /// The token was present and accepted.
    pub authorization_ok: bool,
    /// Arrived while a `Retry-After` announced for the same method and channel was
    /// still running: Slack may disable apps that do this.
    pub during_retry_after: bool,
    /// The fault injected into this call, if any.
    pub fault: Option<String>,
    /// `ts` of the message posted or edited, if the call succeeded.
    pub ts: Option<String>,
}

/// A message as stored: the latest content after edits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Slack's id of the message, e.g. `1795702920.000100`.
    pub ts: String,
    /// The parent's `ts` if this is a thread reply.
    pub thread_ts: Option<String>,
    /// Top-level `text`.
    pub text: Option<String>,
    /// Top-level `blocks`, as sent.
    pub blocks: Option<Value>,
    /// `attachments`, as sent (the project's coloured card lives here).
    pub attachments: Option<Value>,
    /// Slack message metadata `{event_type, event_payload}`, as sent.
    pub metadata: Option<Value>,
    /// A reply also shown in the channel.
    pub reply_broadcast: bool,
    /// `ts` of the last edit, if edited.
    pub edited: Option<String>,
    /// How many times it was edited.
    pub edits: u32,
}

impl Message {
    /// Whether this is a thread reply.
    pub fn is_reply(&self) -> bool {
        self.thread_ts.is_some()
    }
    /// `color` of the first attachment that has one (the card's colour bar).
    pub fn color(&self) -> Option<String> {
        self.attachments
            .as_ref()?
            .as_array()?
            .iter()
            .find_map(|a| a.get("color")?.as_str().map(str::to_owned))
    }
    /// Text of the first `header` block, top-level or inside an attachment.
    pub fn header(&self) -> Option<String> {
        self.all_blocks()
            .into_iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("header"))
            .and_then(|b| b.pointer("/text/text")?.as_str().map(str::to_owned))
    }
    /// Every text a reader could see (top-level text and all text in blocks and
    /// attachments), joined by newlines: handy for `contains` assertions.
    pub fn visible_text(&self) -> String {
        let mut texts: Vec<String> = self.text.iter().cloned().collect();
        fn collect(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        match v {
                            Value::String(s)
                                if k == "text"
                                    || k == "fallback"
                                    || k == "title"
                                    || k == "value" =>
                            {
                                out.push(s.clone())
                            }
                            other => collect(other, out),
                        }
                    }
                }
                Value::Array(list) => list.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        self.blocks
            .iter()
            .chain(self.attachments.iter())
            .for_each(|v| collect(v, &mut texts));
        texts.join("\n")
    }
    /// Top-level blocks followed by the blocks of every attachment.
    pub fn all_blocks(&self) -> Vec<&Value> {
        let top = self.blocks.iter().filter_map(Value::as_array).flatten();
        let inner = self
            .attachments
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|a| a.get("blocks")?.as_array())
            .flatten();
        top.chain(inner).collect()
    }
}

/// A parent message and its replies, in order, edits applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thread {
    /// The message in the channel.
    pub parent: Message,
    /// Its thread replies, oldest first.
    pub replies: Vec<Message>,
}

/// A channel the stand-in has seen.
#[derive(Debug, Clone, Default)]
struct ChannelState {
    id: String,
    name: Option<String>,
    /// Every message, parents and replies, in `ts` order.
    messages: Vec<Message>,
}

/// A token bucket: `capacity` tokens, one more every `interval`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is available.
    fn take(&mut self, capacity: u32, interval: Duration, now: Instant) -> Result<(), Duration> {
        let per_sec = 1.0 / interval.as_secs_f64().max(1e-6);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * per_sec)
            .min(capacity as f64);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

#[derive(Debug)]
struct StateInner {
    calls: Vec<Call>,
    faults: Vec<FaultRule>,
    token: Option<String>,
    channels: Vec<ChannelState>,
    last_ts_micros: u64,
    buckets: HashMap<(String, String), Bucket>,
    /// (method, channel id) → when the last announced `Retry-After` ends.
    retry_until: HashMap<(String, String), Instant>,
}

#[derive(Debug)]
struct Shared {
    opts: StandInOptions,
    started: Instant,
    api_url: String,
    inner: Mutex<StateInner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in. Dropping it (or [`StandIn::stop`]) shuts the server down.
#[derive(Debug)]
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl StandIn {
    /// Binds 127.0.0.1:`opts.port` and serves in a background tokio task.
    pub async fn start(opts: StandInOptions) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            started: Instant::now(),
            api_url: format!("http://{addr}/api"),
            inner: Mutex::new(StateInner {
                calls: Vec::new(),
                faults: Vec::new(),
                token: None,
                channels: Vec::new(),
                last_ts_micros: 0,
                buckets: HashMap::new(),
                retry_until: HashMap::new(),
            }),
        });
        let app = Router::new()
            .route("/", get(page_handler))
            .route("/api/_calls", get(calls_handler))
            .route("/api/_channel/{name}", get(channel_handler))
            .route("/api/{method}", any(api_handler))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = axum::serve(
            KillableListener::new(listener),
            app.into_make_service_with_connect_info::<ConnHandle>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        });
        tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::warn!(%err, "Slack stand-in stopped with an error");
            }
        });
        tracing::debug!(%addr, "Slack stand-in listening");
        Ok(StandIn {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// The base URL to give the Slack client: `http://127.0.0.1:PORT/api`.
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// The preview page: `http://127.0.0.1:PORT/`.
    pub fn page_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every API request received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of one API method, in arrival order.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Requests that arrived before a `Retry-After` announced for the same method and
    /// channel had elapsed. Well-behaved clients make this empty.
    pub fn calls_during_retry_after(&self) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.during_retry_after)
            .cloned()
            .collect()
    }

    /// The channel (by `#name`, `name` or id) as a reader sees it: parents in order,
    /// edits applied, each with its replies in order. Empty if never posted to.
    pub fn channel(&self, channel: &str) -> Vec<Thread> {
        let inner = self.shared.lock();
        inner
            .find_channel(channel)
            .map(threads_of)
            .unwrap_or_default()
    }

    /// The channel's own flow: parents and broadcast replies, in order.
    pub fn channel_flow(&self, channel: &str) -> Vec<Message> {
        let inner = self.shared.lock();
        inner
            .find_channel(channel)
            .map(|c| {
                c.messages
                    .iter()
                    .filter(|m| !m.is_reply() || m.reply_broadcast)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The id the stand-in gave a channel name (or the id itself), if it has seen it.
    pub fn channel_id(&self, channel: &str) -> Option<String> {
        self.shared
            .lock()
            .find_channel(channel)
            .map(|c| c.id.clone())
    }

    /// Replaces all fault rules with this one; `Fault::None` clears them.
    /// Accepts a bare [`Fault`] (every call, until replaced) or a [`FaultRule`].
    pub fn set_fault(&self, fault: impl Into<FaultRule>) {
        let rule = fault.into();
        let mut inner = self.shared.lock();
        inner.faults.clear();
        if rule.fault != Fault::None {
            inner.faults.push(rule);
        }
    }

    /// Adds a fault rule after the existing ones; the first rule that matches a call
    /// (and has calls left) applies.
    pub fn add_fault(&self, fault: impl Into<FaultRule>) {
        let rule = fault.into();
        if rule.fault != Fault::None {
            self.shared.lock().faults.push(rule);
        }
    }

    /// Accepts only this bot token from now on (others: `invalid_auth`). By default
    /// any `xoxb-` token is accepted.
    pub fn set_token(&self, token: impl Into<String>) {
        self.shared.lock().token = Some(token.into());
    }

    /// Polls until `done(self)` holds or `timeout` passes; returns whether it held.
    /// For tests that wait on a delivery loop running elsewhere.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&StandIn) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops accepting connections and closes idle ones.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Groups a channel's messages into threads.
fn threads_of(channel: &ChannelState) -> Vec<Thread> {
    let mut threads: Vec<Thread> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for m in &channel.messages {
        match &m.thread_ts {
            None => {
                index.insert(m.ts.as_str(), threads.len());
                threads.push(Thread {
                    parent: m.clone(),
                    replies: Vec::new(),
                });
            }
            Some(parent) => {
                if let Some(&i) = index.get(parent.as_str()) {
                    threads[i].replies.push(m.clone());
                }
            }
        }
    }
    threads
}

/// Whether a channel argument is an id (`C…`, `G…`, `D…`, upper case) rather than a
/// name: Slack channel names are lower case.
fn is_channel_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['C', 'G', 'D'])
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn normalize_name(s: &str) -> String {
    s.trim().trim_start_matches('#').to_lowercase()
}

impl StateInner {
    fn find_channel(&self, channel: &str) -> Option<&ChannelState> {
        if is_channel_id(channel) {
            self.channels.iter().find(|c| c.id == channel)
        } else {
            let name = normalize_name(channel);
            self.channels
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()))
        }
    }

    /// Resolves a channel argument to its state, creating it on first use (unless the
    /// options restrict channels). `None`: `channel_not_found`.
    fn channel_mut(
        &mut self,
        channel: &str,
        allowed: Option<&[String]>,
    ) -> Option<&mut ChannelState> {
        let (id, name) = if is_channel_id(channel) {
            (Some(channel.to_string()), None)
        } else {
            let name = normalize_name(channel);
            if name.is_empty() {
                return None;
            }
            (None, Some(name))
        };
        if let Some(allowed) = allowed {
            let ok = allowed.iter().any(|a| {
                if is_channel_id(a) {
                    id.as_deref() == Some(a.as_str())
                } else {
                    name.as_deref() == Some(normalize_name(a).as_str())
                }
            });
            if !ok {
                return None;
            }
        }
        let pos = self.channels.iter().position(|c| match (&id, &name) {
            (Some(id), _) => &c.id == id,
            (_, Some(name)) => c.name.as_ref() == Some(name),
            _ => false,
        });
        let pos = match pos {
            Some(p) => p,
            None => {
                let id = id.unwrap_or_else(|| format!("C0STANDIN{}", self.channels.len() + 1));
                self.channels.push(ChannelState {
                    id,
                    name,
                    messages: Vec::new(),
                });
                self.channels.len() - 1
            }
        };
        Some(&mut self.channels[pos])
    }

    /// A new `ts`: the wall clock in microseconds, strictly increasing.
    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let micros = now.max(self.last_ts_micros + 1);
        self.last_ts_micros = micros;
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }

    /// Takes the first fault rule matching `method`, counting it down.
    fn take_fault(&mut self, method: &str) -> Option<Fault> {
        let i = self.faults.iter().position(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && r.remaining != Some(0)
        })?;
        let rule = &mut self.faults[i];
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.faults.remove(i);
            }
        }
        Some(fault)
    }
}

/// What the API handler answers.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Answer {
    fn ok(mut body: Value) -> Answer {
        body["ok"] = Value::Bool(true);
        Answer {
            status: 200,
            body,
            retry_after: None,
        }
    }
    fn error(code: &str) -> Answer {
        Answer {
            status: 200,
            body: json!({"ok": false, "error": code}),
            retry_after: None,
        }
    }
    fn refusal(code: &str, reason: &str) -> Answer {
        Answer {
            status: 200,
            body: json!({"ok": false, "error": code, "errors": [reason]}),
            retry_after: None,
        }
    }
    fn rate_limited(secs: u64) -> Answer {
        Answer {
            status: 429,
            body: json!({"ok": false, "error": "ratelimited"}),
            retry_after: Some(secs),
        }
    }
    fn error_code(&self) -> Option<String> {
        self.body
            .get("error")
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
async fn read_params(req: Request) -> Result<Map<String, Value>, &'static str> {
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
    if req.method() == Method::GET {
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

fn str_param<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn bool_param(params: &Map<String, Value>, key: &str) -> bool {
    params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

async fn api_handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    Path(method): Path<String>,
    req: Request,
) -> Response {
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

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
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
    let (index, fault) = {
        let mut inner = shared.lock();
        let channel = str_param(&params, "channel").and_then(|c| {
            inner
                .channel_mut(c, opts.channels.as_deref())
                .map(|c| c.id.clone())
        });
        let key = (method.clone(), channel.clone().unwrap_or_default());
        let during_retry_after = inner
            .retry_until
            .get(&key)
            .is_some_and(|until| arrived < *until);
        let authorization_ok = match (&token, &inner.token) {
            (Some(t), Some(expected)) => t == expected,
            (Some(t), None) => t.starts_with("xoxb-"),
            (None, _) => false,
        };
        let fault = inner.take_fault(&method);
        let mut body = Value::Object(params.clone());
        if let Some(map) = body.as_object_mut() {
            map.remove("token");
        }
        inner.calls.push(Call {
            method: method.clone(),
            body,
            at: arrived.duration_since(shared.started),
            channel,
            status: 0,
            error: None,
            retry_after: None,
            authorization_ok,
            during_retry_after,
            fault: fault.as_ref().map(|f| format!("{f:?}")),
            ts: None,
        });
        (inner.calls.len() - 1, fault)
    };

    let answer = match fault {
        Some(Fault::Drop) => {
            conn.kill();
            let mut inner = shared.lock();
            inner.calls[index].error = Some("connection dropped".into());
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
    let answer = match answer {
        Some(a) => a,
        None => {
            let authorization_ok = inner.calls[index].authorization_ok;
            if let Some(code) = unreadable {
                Answer::error(code)
            } else if token.is_none() {
                Answer::error("not_authed")
            } else if !authorization_ok {
                Answer::error("invalid_auth")
            } else {
                dispatch(&mut inner, opts, &method, &params)
            }
        }
    };
    if let Some(secs) = answer.retry_after {
        let key = (
            method.clone(),
            inner.calls[index].channel.clone().unwrap_or_default(),
        );
        inner
            .retry_until
            .insert(key, Instant::now() + Duration::from_secs(secs));
    }
    let call = &mut inner.calls[index];
    call.status = answer.status;
    call.error = answer.error_code();
    call.retry_after = answer.retry_after;
    if answer.body.get("ok") == Some(&Value::Bool(true)) {
        call.ts = answer
            .body
            .get("ts")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    answer
}

fn dispatch(
    inner: &mut StateInner,
    opts: &StandInOptions,
    method: &str,
    params: &Map<String, Value>,
) -> Answer {
    match method {
        "auth.test" => Answer::ok(json!({
            "url": "https://standin.slack.com/",
            "team": "Slack stand-in",
            "user": "supervisor-slack",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": false,
        })),
        "chat.postMessage" => post_message(inner, opts, params),
        "chat.update" => update_message(inner, opts, params),
        "conversations.replies" => replies(inner, params),
        "conversations.history" => history(inner, params),
        _ => Answer::error("unknown_method"),
    }
}

/// Takes a rate-limit token for (method, channel), or answers 429.
fn rate_limit(
    inner: &mut StateInner,
    opts: &StandInOptions,
    method: &str,
    channel: &str,
) -> Result<(), Answer> {
    if !opts.enforce_rate_limit {
        return Ok(());
    }
    let (capacity, interval) = match method {
        "chat.postMessage" => (opts.burst.max(1), opts.post_interval),
        _ => (
            opts.updates_per_minute.max(1),
            Duration::from_secs(60) / opts.updates_per_minute.max(1),
        ),
    };
    let now = Instant::now();
    let bucket = inner
        .buckets
        .entry((method.to_string(), channel.to_string()))
        .or_insert(Bucket {
            tokens: capacity as f64,
            last: now,
        });
    bucket.take(capacity, interval, now).map_err(|wait| {
        let secs = opts.retry_after_secs.max(wait.as_secs_f64().ceil() as u64);
        Answer::rate_limited(secs)
    })
}

/// The `message` object Slack returns and lists.
fn message_json(m: &Message, channel: Option<&str>, include_metadata: bool) -> Value {
    let mut v = json!({
        "type": "message",
        "ts": m.ts,
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "text": m.text.clone().unwrap_or_default(),
    });
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = json!(t);
        v["parent_user_id"] = json!(BOT_USER_ID);
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
        v["edited"] = json!({"user": BOT_USER_ID, "ts": e});
    }
    v
}

/// Adds the thread summary Slack puts on a parent with replies.
fn with_thread_summary(mut v: Value, parent: &Message, channel: &ChannelState) -> Value {
    let replies: Vec<&Message> = channel
        .messages
        .iter()
        .filter(|m| m.thread_ts.as_deref() == Some(parent.ts.as_str()))
        .collect();
    if let Some(last) = replies.last() {
        v["thread_ts"] = json!(parent.ts);
        v["reply_count"] = json!(replies.len());
        v["reply_users_count"] = json!(1);
        v["reply_users"] = json!([BOT_USER_ID]);
        v["latest_reply"] = json!(last.ts);
        v["subscribed"] = json!(false);
    }
    v
}

/// The id of the call's channel, once the channel exists and the method's rate limit
/// for it allows the call; otherwise the answer to send.
fn channel_within_limits(
    inner: &mut StateInner,
    opts: &StandInOptions,
    params: &Map<String, Value>,
    method: &str,
) -> Result<String, Answer> {
    let channel_arg =
        str_param(params, "channel").ok_or_else(|| Answer::error("channel_not_found"))?;
    let channel = inner
        .channel_mut(channel_arg, opts.channels.as_deref())
        .ok_or_else(|| Answer::error("channel_not_found"))?;
    let channel_id = channel.id.clone();
    rate_limit(inner, opts, method, &channel_id)?;
    Ok(channel_id)
}

fn post_message(
    inner: &mut StateInner,
    opts: &StandInOptions,
    params: &Map<String, Value>,
) -> Answer {
    let channel_id = match channel_within_limits(inner, opts, params, "chat.postMessage") {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let body = Value::Object(params.clone());
    if let Err(refusal) = validate::check_message(&body, opts.blocks_text_limit) {
        return Answer::refusal(refusal.code, &refusal.reason);
    }
    let thread_ts = str_param(params, "thread_ts").map(str::to_owned);
    let ts = inner.next_ts();
    let Some(channel) = inner.channels.iter_mut().find(|c| c.id == channel_id) else {
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
    };
    let answer = Answer::ok(json!({
        "channel": channel_id,
        "ts": ts,
        "message": message_json(&message, None, true),
    }));
    channel.messages.push(message);
    answer
}

fn update_message(
    inner: &mut StateInner,
    opts: &StandInOptions,
    params: &Map<String, Value>,
) -> Answer {
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
    let edit_ts = inner.next_ts();
    let Some(channel) = inner.channels.iter_mut().find(|c| c.id == channel_id) else {
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
    let mut updated = message_json(message, None, true);
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

fn replies(inner: &mut StateInner, params: &Map<String, Value>) -> Answer {
    let (Some(channel_arg), Some(ts)) = (str_param(params, "channel"), str_param(params, "ts"))
    else {
        return Answer::error("invalid_arguments");
    };
    let Some(channel) = inner.find_channel(channel_arg) else {
        return Answer::error("channel_not_found");
    };
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
            message_json(parent, None, include_metadata),
            parent,
            channel,
        ));
    }
    messages.extend(
        channel
            .messages
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(parent_ts.as_str()))
            .map(|m| message_json(m, None, include_metadata)),
    );
    Answer::ok(
        json!({"messages": messages, "has_more": false, "response_metadata": {"next_cursor": ""}}),
    )
}

fn history(inner: &mut StateInner, params: &Map<String, Value>) -> Answer {
    let Some(channel_arg) = str_param(params, "channel") else {
        return Answer::error("channel_not_found");
    };
    let Some(channel) = inner.find_channel(channel_arg) else {
        return Answer::error("channel_not_found");
    };
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
            let v = message_json(m, None, include_metadata);
            if m.is_reply() {
                v
            } else {
                with_thread_summary(v, m, channel)
            }
        })
        .collect();
    Answer::ok(
        json!({"messages": messages, "has_more": has_more, "response_metadata": {"next_cursor": ""}}),
    )
}

async fn calls_handler(State(shared): State<Arc<Shared>>) -> Json<Vec<Call>> {
    Json(shared.lock().calls.clone())
}

async fn channel_handler(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Json<Vec<Thread>> {
    let inner = shared.lock();
    Json(
        inner
            .find_channel(&name)
            .map(threads_of)
            .unwrap_or_default(),
    )
}

async fn page_handler(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Html<String> {
    let snapshot: Vec<page::ChannelView> = {
        let inner = shared.lock();
        inner
            .channels
            .iter()
            .map(|c| page::ChannelView {
                id: c.id.clone(),
                name: c.name.clone(),
                threads: threads_of(c),
                flow: c
                    .messages
                    .iter()
                    .filter(|m| !m.is_reply() || m.reply_broadcast)
                    .cloned()
                    .collect(),
            })
            .collect()
    };
    let view = page::View {
        channel: query.get("channel").map(String::as_str),
        thread: query.get("thread").map(String::as_str),
        collapsed: query
            .get("collapsed")
            .is_some_and(|v| v == "1" || v == "true"),
    };
    Html(page::render_view(&snapshot, &view, &shared.api_url))
}
