//! Socket Mode, Slack's side: the WebSocket server an app reaches with the URL
//! `apps.connections.open` gave it. A ticket in that URL opens one connection, once;
//! the connection is greeted with `hello`, read all the time (so pings get their
//! pongs and acks are recorded), and takes envelopes in turn with the other live
//! connections. The faults a test can cause: a `disconnect` frame
//! ([`StandIn::socket_disconnect`]), a cut TCP connection ([`StandIn::socket_drop`]),
//! a revoked app token ([`StandIn::revoke_app_token`]).



use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{header, StatusCode};
use tokio_tungstenite::tungstenite::Message;

use super::auth::APP_ID;
use super::guard::{is_loopback_host, is_loopback_origin};
use super::handle::Shared;
use super::sockets::{Ack, Order};
use super::StandIn;
use crate::shutdown::Shutdown;

/// How long a connection told to `disconnect` may stay open before the stand-in
/// closes it (Slack gives about ten seconds).
const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// A `disconnect` frame, as Slack sends it.
fn disconnect_frame(reason: &str) -> String {
    json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}).to_string()
}

/// Accepts WebSocket connections until `stop` is triggered.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: Shutdown,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), stop.clone()));
                }
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = stop.triggered() => return,
        }
    }
}

/// The handshake's check: a loopback `Host`, no foreign `Origin` (a page of another
/// site may open WebSockets anywhere), the path `/link/` and a ticket not used before.
struct Admit(Arc<Shared>);

impl Callback for Admit {
    fn on_request(self, req: &Request, ok: Response) -> Result<Response, ErrorResponse> {
        let refuse = |status: StatusCode, why: &str| {
            let mut answer = ErrorResponse::new(Some(format!("{why}\n")));
            *answer.status_mut() = status;
            answer
        };
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if !header(header::HOST).is_some_and(is_loopback_host) {
            return Err(refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "the Slack stand-in answers only requests to localhost, 127.0.0.1 or [::1]",
            ));
        }
        if header(header::ORIGIN).is_some_and(|o| !is_loopback_origin(o)) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "the Slack stand-in takes no connections from pages of other sites",
            ));
        }
        if req.uri().path().trim_end_matches('/') != "/link" {
            return Err(refuse(StatusCode::NOT_FOUND, "Socket Mode lives at /link/"));
        }
        let ticket = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .unwrap_or("");
        if !self.0.lock().sockets.tickets.remove(ticket) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unknown or already used ticket: call apps.connections.open for a new URL",
            ));
        }
        Ok(ok)
    }
}

/// One connection: the handshake, `hello`, then reading frames and carrying out
/// orders until either side closes it.
async fn connection(stream: TcpStream, shared: Arc<Shared>, stop: Shutdown) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio_tungstenite::accept_hdr_async(stream, Admit(shared.clone()));
    let Ok(Ok(mut ws)) = tokio::time::timeout(Duration::from_secs(10), handshake).await else {
        return;
    };
    let (id, mut orders, live) = {
        let mut inner = shared.lock();
        let (id, orders) = inner.sockets.register();
        (id, orders, inner.sockets.live.len())
    };
    tracing::debug!(connection = id, "Socket Mode connection opened");
    let hello = json!({
        "type": "hello",
        "num_connections": live,
        "debug_info": {"host": "applink-1", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID},
    });
    let mut retire_at: Option<tokio::time::Instant> = None;
    if ws.send(Message::text(hello.to_string())).await.is_ok() {
        loop {
            let deadline = retire_at;
            let retire = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => on_text(&shared, id, text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    // Pings: tungstenite queues the pong and sends it as it reads on.
                    Some(Ok(_)) => {}
                },
                Some(order) = orders.recv() => match order {
                    Order::Frame(text) => {
                        if ws.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Order::Disconnect(frame, written) => {
                        let sent = ws.send(Message::text(frame)).await.is_ok();
                        let _ = written.send(());
                        if !sent {
                            break;
                        }
                        retire_at = Some(tokio::time::Instant::now() + RETIRE_AFTER);
                    }
                    Order::Close(frame) => {
                        let _ = ws.send(Message::text(frame)).await;
                        let _ = ws.close(None).await;
                        break;
                    }
                    Order::Cut => {
                        // Closing a socket with zero linger sends a reset, not a FIN.
                        let _ = ws.get_ref().set_zero_linger();
                        break;
                    }
                },
                () = retire => {
                    let _ = ws.close(None).await;
                    break;
                }
                _ = stop.triggered() => break,
            }
        }
    }
    shared.lock().sockets.unregister(id);
    tracing::debug!(connection = id, "Socket Mode connection closed");
}

/// A text frame from the app: an ack (`{"envelope_id":…,"payload"?:…}`) is recorded
/// and ends its envelope's wait; anything else is only logged.
fn on_text(shared: &Shared, connection: u64, text: &str) {
    let frame: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let Some(envelope_id) = frame.get("envelope_id").and_then(Value::as_str) else {
        tracing::debug!(connection, %text, "Socket Mode frame that is no ack");
        return;
    };
    let now = Instant::now();
    let mut inner = shared.lock();
    let sockets = &mut inner.sockets;
    if let Some(waiter) = sockets.waiting.remove(envelope_id) {
        let _ = waiter.send(now);
    }
    sockets.acks.push(Ack {
        envelope_id: envelope_id.to_string(),
        payload: frame.get("payload").cloned(),
        connection,
        at: now.duration_since(shared.started),
    });
}

/// The figures `GET /api/_socket` answers.
#[derive(Serialize)]
pub(super) struct Figures {
    connections: usize,
    opened: usize,
    acks: Vec<Ack>,
}

/// `GET /api/_socket`: live connections, handshakes so far, the acks received.
pub(super) async fn figures_handler(State(shared): State<Arc<Shared>>) -> Json<Figures> {
    let inner = shared.lock();
    Json(Figures {
        connections: inner.sockets.live.len(),
        opened: inner.sockets.opened,
        acks: inner.sockets.acks.clone(),
    })
}

impl StandIn {
    /// Sends `{"type":"disconnect","reason":REASON,"debug_info":{"host":"standin"}}`
    /// to every live connection and returns once the frames are written (at most a
    /// second). Those connections take no more envelopes; slack-morphism closes them
    /// and opens new ones by itself (the stand-in closes them 10 s later otherwise).
    pub async fn socket_disconnect(&self, reason: &str) {
        let frame = disconnect_frame(reason);
        let mut written = Vec::new();
        self.shared.lock().sockets.order_all(|| {
            let (tx, rx) = oneshot::channel();
            written.push(rx);
            Order::Disconnect(frame.clone(), tx)
        });
        let all = futures_util::future::join_all(written);
        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
    }

    /// Cuts every live connection's TCP connection at once: no close frame, a reset
    /// (as a crashed proxy or a lost network does).
    pub fn socket_drop(&self) {
        self.shared.lock().sockets.order_all(|| Order::Cut);
    }

    /// From now on `apps.connections.open` answers `token_revoked` for the app token,
    /// and every live connection is sent `disconnect` (`link_disabled`) and closed.
    pub fn revoke_app_token(&self) {
        let mut inner = self.shared.lock();
        inner.auth.revoke_app_token();
        let frame = disconnect_frame("link_disabled");
        inner.sockets.order_all(|| Order::Close(frame.clone()));
    }

    /// Connections that take envelopes now (one sent `disconnect` no longer does).
    pub fn socket_connections(&self) -> usize {
        self.shared.lock().sockets.live.len()
    }

    /// Successful Socket Mode handshakes so far.
    pub fn sockets_opened(&self) -> usize {
        self.shared.lock().sockets.opened
    }

    /// Polls until at least `n` connections take envelopes or `timeout` passes;
    /// returns whether they did.
    pub async fn wait_for_sockets(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.socket_connections() >= n)
            .await
    }

    /// Every ack received over Socket Mode, in arrival order.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().sockets.acks.clone()
    }
}
