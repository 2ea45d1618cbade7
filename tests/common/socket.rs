//! A Socket Mode app pointed at the Slack stand-in: slack-morphism's own
//! `SlackClientSocketModeListener` (what the listener uses), its callbacks plain `fn`s
//! that record what arrives in the state given through `with_user_state`. Also the
//! Web API client it runs on, for tests that call the stand-in as the listener does, a
//! card with buttons, and the bare wire (raw HTTP, a raw WebSocket's next frame) for
//! tests about the protocol itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use supervisor_slack::standin::StandIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as Frame;

use super::slack::TOKEN;

/// slack-morphism's hyper connector, HTTP allowed (the stand-in is plain HTTP).
pub type Connector = SlackClientHyperConnector<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

/// The app-level token the test app connects with.
pub const APP_TOKEN: &str = "xapp-1-A0STANDIN-1-secretappsecret";

/// The Slack error code of a failed call (panics on any other failure).
pub fn api_error_code(err: slack_morphism::errors::SlackClientError) -> String {
    match err {
        slack_morphism::errors::SlackClientError::ApiError(e) => e.code,
        other => panic!("expected an ApiError, got {other:?}"),
    }
}

/// A Web API client whose base URL is the stand-in's.
pub fn client(standin: &StandIn) -> Arc<SlackClient<Connector>> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Arc::new(SlackClient::new(
        SlackClientHyperConnector::with_connector(https).with_slack_api_url(&standin.api_url()),
    ))
}

/// What the app received, in arrival order.
#[derive(Debug, Default)]
pub struct Received {
    /// `hello` frames as slack-morphism read them, one per connection opened.
    pub hellos: Vec<Value>,
    /// `block_actions` payloads (button clicks).
    pub clicks: Vec<SlackInteractionBlockActionsEvent>,
}

type Shared = Arc<Mutex<Received>>;

/// Generic over the event because slack-morphism does not export the `hello` type's
/// name (`SlackSocketModeHelloEvent`); it is read back as JSON.
async fn on_hello<E: serde::Serialize>(
    event: E,
    _client: Arc<SlackClient<Connector>>,
    states: SlackClientEventsUserState,
) {
    let hello = serde_json::to_value(&event).unwrap_or_default();
    if let Some(received) = states.read().await.get_user_state::<Shared>() {
        received.lock().unwrap().hellos.push(hello);
    }
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackClient<Connector>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    if let SlackInteractionEvent::BlockActions(click) = event {
        if let Some(received) = states.read().await.get_user_state::<Shared>() {
            received.lock().unwrap().clicks.push(click);
        }
    }
    Ok(())
}

/// The running app. [`SocketApp::stop`] shuts it down.
pub struct SocketApp {
    listener: SlackClientSocketModeListener<Connector>,
    received: Shared,
}

impl SocketApp {
    /// Connects `connections` sockets with `token`, all at once (no backoff between
    /// them), reconnecting 1 s after a failed `apps.connections.open`.
    pub async fn start(standin: &StandIn, token: &str, connections: u32) -> SocketApp {
        let received = Shared::default();
        let env = Arc::new(
            SlackClientEventsListenerEnvironment::new(client(standin))
                .with_user_state(received.clone()),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_hello_events(on_hello)
            .with_interaction_events(on_interaction);
        let config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(connections)
            .with_initial_backoff_in_seconds(0)
            .with_reconnect_timeout_in_seconds(1);
        let listener = SlackClientSocketModeListener::new(&config, env, callbacks);
        listener
            .listen_for(&SlackApiToken::new(token.into()))
            .await
            .expect("the token registers");
        listener.start().await;
        SocketApp { listener, received }
    }

    /// The clicks received so far.
    pub fn clicks(&self) -> Vec<SlackInteractionBlockActionsEvent> {
        self.received.lock().unwrap().clicks.clone()
    }

    /// The `hello` frames received so far.
    pub fn hellos(&self) -> Vec<Value> {
        self.received.lock().unwrap().hellos.clone()
    }

    /// Waits up to `timeout` until at least `n` clicks arrived; returns them all.
    pub async fn wait_for_clicks(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<SlackInteractionBlockActionsEvent> {
        let deadline = Instant::now() + timeout;
        while self.clicks().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.clicks()
    }

    /// Closes every connection; no reconnecting.
    pub async fn stop(self) {
        self.listener.shutdown().await;
    }
}

/// The restart button the project's cards carry, with a `confirm` dialog.
pub fn restart_button() -> Value {
    json!({"type": "button", "action_id": "restart", "value": "web-1|web", "style": "danger",
           "text": {"type": "plain_text", "text": "Restart"},
           "confirm": {"title": {"type": "plain_text", "text": "Restart web?"},
                       "text": {"type": "plain_text", "text": "It is RUNNING."},
                       "confirm": {"type": "plain_text", "text": "Restart"},
                       "deny": {"type": "plain_text", "text": "Cancel"}}})
}

/// A card as the project sends it, its buttons inside the attachment's blocks.
pub fn card() -> SlackMessageContent {
    let attachment: SlackMessageAttachment = serde_json::from_value(json!({
        "color": "#2EB67D", "fallback": "web RUNNING",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}},
            {"type": "actions", "block_id": "card-actions", "elements": [
                restart_button(),
                {"type": "button", "action_id": "logs", "value": "web-1|web|tail",
                 "text": {"type": "plain_text", "text": "Tail log"}}
            ]}
        ]
    }))
    .unwrap();
    SlackMessageContent::new()
        .with_text("web RUNNING".into())
        .with_attachments(vec![attachment])
}

/// Posts the card to `#ops`; returns (channel id, ts).
pub async fn post_card(standin: &StandIn) -> (String, String) {
    let posted = client(standin)
        .open_session(&SlackApiToken::new(TOKEN.into()))
        .chat_post_message(&SlackApiChatPostMessageRequest::new("#ops".into(), card()))
        .await
        .unwrap();
    (posted.channel.0, posted.ts.0)
}

/// A raw HTTP/1.0 request; returns the JSON answer.
pub async fn http(standin: &StandIn, head: &str, body: &str) -> Value {
    let mut stream = tokio::net::TcpStream::connect(standin.local_addr())
        .await
        .unwrap();
    let request = format!(
        "{head}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {raw}"))
}

/// `apps.connections.open` over raw HTTP with this `Authorization` line (or none).
pub async fn open(standin: &StandIn, token: Option<&str>) -> Value {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    http(
        standin,
        &format!("POST /api/apps.connections.open HTTP/1.0{auth}"),
        "{}",
    )
    .await
}

/// The next text frame of a bare WebSocket client, as JSON (10 s at most).
pub async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a readable frame");
        if let Frame::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}
