//! The server: how it is configured ([`StandInOptions`]), started and stopped
//! ([`StandIn`]), what a test can ask of it or change in it (the handle's methods),
//! and its routes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::{any, get, post};
use axum::{middleware, Json, Router};

use super::auth::Auth;
use super::conn::{ConnHandle, KillableListener};
use super::faults::{FaultRule, Faults};
use super::limits::Limits;
use super::sockets::Sockets;
use super::handle::{Inner, Shared, StandIn, StandInOptions};
use super::state::{Call, Message, Thread, Workspace};
use super::{api, command, guard, interact, page, socket};
use crate::shutdown::Shutdown;

fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page_handler))
        .route("/api/_calls", get(calls_handler))
        .route("/api/_channel/{name}", get(channel_handler))
        .route("/api/_socket", get(socket::figures_handler))
        .route("/api/_socket/click", post(interact::click_handler))
        .route("/api/_socket/command", post(command::command_handler))
        .route("/api/_socket/response_url/{id}", post(command::response_url_handler))
        .route("/api/{method}", any(api::handler))
        .layer(middleware::from_fn(guard::loopback_only))
        .with_state(shared)
}

impl StandIn {
    /// Binds 127.0.0.1:`opts.port` (and a free port for Socket Mode's WebSockets)
    /// and serves in background tokio tasks.
    pub async fn start(opts: StandInOptions) -> std::io::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let socket_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let inner = Inner {
            calls: Vec::new(),
            faults: Faults::default(),
            auth: Auth::new(opts.app_token.clone()),
            workspace: Workspace::default(),
            limits: Limits::default(),
            ephemerals: Vec::new(),
            sockets: Sockets::new(socket_listener.local_addr()?, opts.random_sockets),
            commands: HashMap::new(),
            answers: Vec::new(),
        };
        let shared = Arc::new(Shared {
            opts,
            started: Instant::now(),
            api_url: format!("http://{addr}/api"),
            inner: Mutex::new(inner),
        });
        let shutdown = Shutdown::new();
        tokio::spawn(socket::serve(socket_listener, shared.clone(), shutdown.clone()));
        let stop = shutdown.clone();
        let server = axum::serve(
            KillableListener::new(listener),
            routes(shared.clone()).into_make_service_with_connect_info::<ConnHandle>(),
        )
        .with_graceful_shutdown(async move { stop.triggered().await });
        tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::warn!(%err, "Slack stand-in stopped with an error");
            }
        });
        tracing::debug!(%addr, "Slack stand-in listening");
        Ok(StandIn {
            addr,
            shared,
            shutdown,
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
        self.calls_where(|c| c.method == method)
    }

    /// Requests that arrived before a `Retry-After` announced for the same method and
    /// channel had elapsed. Well-behaved clients make this empty.
    pub fn calls_during_retry_after(&self) -> Vec<Call> {
        self.calls_where(|c| c.during_retry_after)
    }

    fn calls_where(&self, keep: impl Fn(&Call) -> bool) -> Vec<Call> {
        let inner = self.shared.lock();
        inner.calls.iter().filter(|c| keep(c)).cloned().collect()
    }

    /// The channel (by `#name`, `name` or id) as a reader sees it: parents in order,
    /// edits applied, each with its replies in order. Empty if never posted to.
    pub fn channel(&self, channel: &str) -> Vec<Thread> {
        let inner = self.shared.lock();
        inner
            .workspace
            .find_channel(channel)
            .map(|c| c.threads())
            .unwrap_or_default()
    }

    /// The channel's own flow: parents and broadcast replies, in order.
    pub fn channel_flow(&self, channel: &str) -> Vec<Message> {
        let inner = self.shared.lock();
        inner
            .workspace
            .find_channel(channel)
            .map(|c| c.flow().cloned().collect())
            .unwrap_or_default()
    }

    /// The id the stand-in gave a channel name (or the id itself), if it has seen it.
    pub fn channel_id(&self, channel: &str) -> Option<String> {
        let inner = self.shared.lock();
        inner.workspace.find_channel(channel).map(|c| c.id.clone())
    }

    /// Deletes the message at `ts` in `channel` with its replies, as a person deleting
    /// a card does: from then on `chat.update` on it answers `message_not_found` and a
    /// reply under it `thread_not_found`. Returns whether there was such a message.
    pub fn delete_message(&self, channel: &str, ts: &str) -> bool {
        let mut inner = self.shared.lock();
        let Some(id) = inner.workspace.find_channel(channel).map(|c| c.id.clone()) else {
            return false;
        };
        let Some(c) = inner.workspace.channel_by_id(&id) else {
            return false;
        };
        let before = c.messages.len();
        c.messages
            .retain(|m| m.ts != ts && m.thread_ts.as_deref() != Some(ts));
        c.messages.len() < before
    }

    /// Replaces all fault rules with this one; `Fault::None` clears them.
    /// Accepts a bare [`Fault`](super::Fault) (every call, until replaced) or a
    /// [`FaultRule`].
    pub fn set_fault(&self, fault: impl Into<FaultRule>) {
        self.shared.lock().faults.set(fault.into());
    }

    /// Adds a fault rule after the existing ones; the first rule that matches a call
    /// (and has calls left) applies.
    pub fn add_fault(&self, fault: impl Into<FaultRule>) {
        self.shared.lock().faults.add(fault.into());
    }

    /// Accepts only this bot token from now on (others: `invalid_auth`). By default
    /// any `xoxb-` token is accepted.
    pub fn set_token(&self, token: impl Into<String>) {
        self.shared.lock().auth.set(token.into());
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

    /// Stops accepting connections, closes idle ones and every Socket Mode socket.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        self.shutdown.trigger();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// `/api/_calls`: every call, as JSON.
async fn calls_handler(State(shared): State<Arc<Shared>>) -> Json<Vec<Call>> {
    Json(shared.lock().calls.clone())
}

/// `/api/_channel/{name}`: the channel's threads, as JSON.
async fn channel_handler(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Json<Vec<Thread>> {
    let inner = shared.lock();
    Json(
        inner
            .workspace
            .find_channel(&name)
            .map(|c| c.threads())
            .unwrap_or_default(),
    )
}

/// `/`: the page, for `?channel=`, `?thread=` and `?collapsed=`.
async fn page_handler(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Html<String> {
    let opts = &shared.opts;
    let snapshot: Vec<page::ChannelView> = {
        let inner = shared.lock();
        inner
            .workspace
            .channels
            .iter()
            .map(|c| page::ChannelView {
                id: c.id.clone(),
                name: c.name.clone(),
                threads: c.threads(),
                flow: c.flow().cloned().collect(),
                ephemerals: inner
                    .ephemerals
                    .iter()
                    .filter(|e| e.channel == c.id && e.user == opts.page_user)
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
        users: &opts.users,
        page_user: &opts.page_user,
    };
    Html(page::render_view(&snapshot, &view, &shared.api_url))
}
