//! Talking to Slack's Web API through slack-morphism, and classifying every failure
//! into what the dispatcher should do about it. Knows nothing of supervisord.
//!
//! The classification is the one place where "retry, wait, fall back, give up" is
//! decided from an error (as alertmanager's notifiers do); the dispatcher only acts
//! on the [`Failure`] it gets.

use std::collections::HashMap;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::card::Card;
use crate::secret::Secret;

pub type Connector = SlackClientHyperConnector<hyper_rustls::HttpsConnector<HttpConnector>>;

/// What to do about a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429: send nothing to Slack until this has elapsed.
    RateLimited(Duration),
    /// 5xx, network errors, time-outs: retry with backoff; the event is kept.
    Transient(String),
    /// The operator must fix something (token, scopes, channel): log the hint, retry
    /// slowly, keep the event.
    Setup { code: String, hint: String },
    /// Slack refused the message itself: never resend it unchanged.
    BadPayload(String),
    /// The parent can no longer be edited: start a new parent.
    EditRefused(String),
    /// The thread's parent is gone: start a new parent.
    ThreadGone(String),
    /// An error code this version does not know: retried a few times, then the entry
    /// is set aside (kept on disk) so that it never blocks its thread.
    Unknown(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::RateLimited(d) => write!(f, "rate limited by Slack for {}s", d.as_secs_f32()),
            Failure::Transient(m) => write!(f, "temporary failure: {m}"),
            Failure::Setup { code, hint } => write!(f, "{code}: {hint}"),
            Failure::BadPayload(c) => write!(f, "Slack refused the message: {c}"),
            Failure::EditRefused(c) => write!(f, "Slack refused to edit the parent: {c}"),
            Failure::ThreadGone(c) => write!(f, "the thread's parent is gone: {c}"),
            Failure::Unknown(c) => write!(f, "Slack answered {c:?}, an error this version does not know"),
        }
    }
}

impl Failure {
    /// The error code Slack answered, when it answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Setup { code, .. }
            | Failure::BadPayload(code)
            | Failure::EditRefused(code)
            | Failure::ThreadGone(code)
            | Failure::Unknown(code) => Some(code),
            Failure::RateLimited(_) | Failure::Transient(_) => None,
        }
    }
}

/// What to tell the operator for each setup error.
pub fn setup_hint(code: &str, channel: &str) -> Option<String> {
    let hint = match code {
        "invalid_auth" | "not_authed" => "the token is not valid: check SLACK_TOKEN (a bot token, xoxb-...)".to_string(),
        "token_revoked" | "token_expired" => "the token was revoked or expired: reinstall the Slack app and set the new bot token".to_string(),
        "account_inactive" => "the bot's account is deactivated: reinstall the Slack app".to_string(),
        "missing_scope" => "the token lacks a scope: add chat:write (and chat:write.public for channels the bot is not in) to the app, then reinstall it".to_string(),
        "no_permission" | "restricted_action" => format!("the bot may not post to {channel}: check the channel's posting permissions"),
        "not_in_channel" => format!("invite the bot to {channel} (/invite @your-bot in the channel), or add the chat:write.public scope"),
        "channel_not_found" => format!("channel {channel} does not exist or the bot cannot see it: check SLACK_CHANNEL (a private channel needs the bot invited)"),
        "is_archived" | "channel_is_archived" => format!("{channel} is archived: unarchive it or set another channel"),
        "team_access_not_granted" | "ekm_access_denied" => "the workspace has not granted this app access".to_string(),
        _ => return None,
    };
    Some(hint)
}

/// Classifies a slack-morphism error. `channel` is only used in hints.
pub fn classify(err: &SlackClientError, channel: &str) -> Failure {
    match err {
        SlackClientError::RateLimitError(e) => {
            // Without a Retry-After, wait a conservative while rather than guess low.
            Failure::RateLimited(e.retry_after.unwrap_or(Duration::from_secs(30)))
        }
        SlackClientError::ApiError(e) => classify_code(&e.code, channel),
        SlackClientError::HttpError(e) => {
            let status = e.status_code.as_u16();
            if status == 429 {
                Failure::RateLimited(Duration::from_secs(30))
            } else if status >= 500 || status == 408 {
                Failure::Transient(format!("HTTP {status}"))
            } else if status == 404 {
                Failure::Setup {
                    code: format!("HTTP {status}"),
                    hint: "the API answered 404: check SLACK_API_URL (it ends in /api, no trailing slash)".into(),
                }
            } else {
                Failure::Setup {
                    code: format!("HTTP {status}"),
                    hint: "Slack answered with an unexpected HTTP status; check SLACK_API_URL and the network path".into(),
                }
            }
        }
        SlackClientError::HttpProtocolError(e) => Failure::Transient(format!(
            "network error: {}",
            e.cause
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "connection failed".into())
        )),
        SlackClientError::ProtocolError(e) => {
            Failure::Transient(format!("unreadable answer from Slack: {}", e.json_error))
        }
        SlackClientError::EndOfStream(_) => Failure::Transient("connection closed by Slack".into()),
        SlackClientError::SystemError(e) => Failure::Transient(format!(
            "system error: {}",
            e.message.clone().unwrap_or_default()
        )),
        SlackClientError::SocketModeProtocolError(e) => Failure::Transient(e.message.clone()),
    }
}

/// Classifies an API error code (`"error"` in a 200 answer).
pub fn classify_code(code: &str, channel: &str) -> Failure {
    match code {
        "ratelimited" | "rate_limited" => Failure::RateLimited(Duration::from_secs(30)),
        "internal_error" | "service_unavailable" | "request_timeout" | "fatal_error" => Failure::Transient(code.to_string()),
        "msg_too_long" | "msg_blocks_too_long" | "invalid_blocks" | "invalid_blocks_format" | "invalid_attachments"
        | "too_many_attachments" | "no_text" | "invalid_arguments" | "invalid_metadata_format"
        | "invalid_metadata_schema" | "metadata_too_large" | "markdown_text_conflict" | "invalid_json" => {
            Failure::BadPayload(code.to_string())
        }
        "message_not_found" | "cant_update_message" | "edit_window_closed" => Failure::EditRefused(code.to_string()),
        "thread_not_found" => Failure::ThreadGone(code.to_string()),
        _ => match setup_hint(code, channel) {
            Some(hint) => Failure::Setup {
                code: code.to_string(),
                hint,
            },
            None => Failure::Unknown(code.to_string()),
        },
    }
}

/// One message to post.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: String,
    pub card: Card,
    /// The parent's ts, for a reply.
    pub thread_ts: Option<String>,
    /// Also show this reply in the channel.
    pub broadcast: bool,
    /// The events this message reports, for Slack message metadata
    /// (`supervisor_slack_event`): lets anyone reading the channel deduplicate.
    pub identity: Option<Identity>,
}

impl Outgoing {
    /// A message at the top of `channel` (a parent, the board): no thread, no
    /// broadcast, no event metadata.
    pub fn top_level(channel: &str, card: Card) -> Outgoing {
        Outgoing {
            channel: channel.to_string(),
            card,
            thread_ts: None,
            broadcast: false,
            identity: None,
        }
    }
}

/// The identity of the events a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub server: String,
    pub serials: Vec<u64>,
}

/// Metadata event type attached to every message this program posts.
pub const METADATA_EVENT_TYPE: &str = "supervisor_slack_event";

fn content(card: &Card, identity: Option<&Identity>) -> SlackMessageContent {
    let mut c = SlackMessageContent::new().with_text(card.text.clone());
    if !card.blocks.is_null() {
        let blocks: Vec<SlackBlock> =
            serde_json::from_value(card.blocks.clone()).unwrap_or_default();
        c = c.with_attachments(vec![SlackMessageAttachment::new()
            .with_color(card.color.clone())
            .with_fallback(card.fallback.clone())
            .with_blocks(blocks)]);
    }
    if let Some(id) = identity {
        let mut payload = HashMap::new();
        payload.insert("host".to_string(), id.host.clone());
        payload.insert("server".to_string(), id.server.clone());
        payload.insert(
            "serials".to_string(),
            id.serials
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        c = c.with_metadata(SlackMessageMetadata {
            event_type: METADATA_EVENT_TYPE.to_string(),
            event_payload: Some(payload),
        });
    }
    c
}

/// The `chat.postMessage` request for a message: the exact body Slack receives
/// (`serde_json::to_value` of it). Mentions in untrusted text stay inert:
/// `link_names` is off and unfurling is off.
pub fn post_request(out: &Outgoing) -> SlackApiChatPostMessageRequest {
    let mut req = SlackApiChatPostMessageRequest::new(
        out.channel.clone().into(),
        content(&out.card, out.identity.as_ref()),
    )
    .with_link_names(false)
    .with_unfurl_links(false)
    .with_unfurl_media(false);
    if let Some(ts) = &out.thread_ts {
        req = req.with_thread_ts(ts.clone().into());
        if out.broadcast {
            req = req.with_reply_broadcast(true);
        }
    }
    req
}

/// The `chat.update` request that makes a parent show `card`.
pub fn update_request(channel_id: &str, ts: &str, card: &Card) -> SlackApiChatUpdateRequest {
    let mut c = content(card, None);
    if card.blocks.is_null() {
        // A plain-text parent must not keep the old coloured attachment.
        c = c.with_attachments(vec![]);
    }
    SlackApiChatUpdateRequest::new(channel_id.to_string().into(), c, ts.to_string().into())
        .with_link_names(false)
}

/// Where a posted message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel_id: String,
    pub ts: String,
}

/// Who the token belongs to (`auth.test`).
#[derive(Debug, Clone)]
pub struct Whoami {
    pub team: String,
    pub user: Option<String>,
    pub bot_id: Option<String>,
    pub url: String,
}

/// A Slack Web API client with a time-out on every call.
pub struct SlackApi {
    client: std::sync::Arc<SlackClient<Connector>>,
    token: SlackApiToken,
    secret: Secret,
    timeout: Duration,
}

impl SlackApi {
    /// Builds the client. Plain `http://` is allowed (for a local stand-in). System
    /// CA certificates are used when the machine has them, else the bundled
    /// webpki roots, so it starts on a bare container too.
    pub fn new(api_url: &str, token: Secret, timeout: Duration) -> SlackApi {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "no system CA certificates; using the bundled webpki roots");
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let connector =
            SlackClientHyperConnector::with_connector(https).with_slack_api_url(api_url);
        SlackApi {
            client: std::sync::Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(token.expose().to_string().into()),
            secret: token,
            timeout,
        }
    }

    async fn timed<T>(
        &self,
        channel: &str,
        fut: impl std::future::Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(Failure::Transient(format!(
                "no answer within {}s",
                self.timeout.as_secs_f32()
            ))),
            Ok(Err(e)) => Err(self.redacted(classify(&e, channel))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Makes sure no error text ever carries the token.
    fn redacted(&self, f: Failure) -> Failure {
        match f {
            Failure::Transient(m) => Failure::Transient(self.secret.redact(&m)),
            Failure::Setup { code, hint } => Failure::Setup {
                code: self.secret.redact(&code),
                hint: self.secret.redact(&hint),
            },
            other => other,
        }
    }

    pub async fn post(&self, out: &Outgoing) -> Result<Posted, Failure> {
        let req = post_request(out);
        let session = self.client.open_session(&self.token);
        let resp = self
            .timed(&out.channel, session.chat_post_message(&req))
            .await?;
        Ok(Posted {
            channel_id: resp.channel.to_string(),
            ts: resp.ts.to_string(),
        })
    }

    /// Pins a message to its channel (`pins.add`, scope `pins:write`); a message
    /// already pinned is fine.
    pub async fn pin(&self, channel_id: &str, ts: &str) -> Result<(), Failure> {
        let req = SlackApiPinsAddRequest::new(channel_id.to_string().into(), ts.to_string().into());
        let session = self.client.open_session(&self.token);
        match self.timed(channel_id, session.pins_add(&req)).await {
            Ok(_) => Ok(()),
            Err(Failure::Unknown(code)) if code == "already_pinned" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn update(&self, channel_id: &str, ts: &str, card: &Card) -> Result<(), Failure> {
        let req = update_request(channel_id, ts, card);
        let session = self.client.open_session(&self.token);
        self.timed(channel_id, session.chat_update(&req))
            .await
            .map(|_| ())
    }

    pub async fn auth_test(&self) -> Result<Whoami, Failure> {
        let session = self.client.open_session(&self.token);
        let r = self.timed("", session.auth_test()).await?;
        Ok(Whoami {
            team: r.team,
            user: r.user,
            bot_id: r.bot_id.map(|b| b.to_string()),
            url: r.url.0.to_string(),
        })
    }

    /// The slack-morphism client (no token in it), for the Socket Mode listener.
    pub fn client(&self) -> std::sync::Arc<SlackClient<Connector>> {
        self.client.clone()
    }

    /// A message only `user` sees (`chat.postEphemeral`, scope `chat:write`), in
    /// `thread_ts`'s thread when given. Unpaced: Tier 4, and one per refused click.
    pub async fn post_ephemeral(
        &self,
        channel_id: &str,
        user: &str,
        thread_ts: Option<&str>,
        text: &str,
    ) -> Result<(), Failure> {
        let mut req = SlackApiChatPostEphemeralRequest::new(
            channel_id.to_string().into(),
            user.to_string().into(),
            SlackMessageContent::new().with_text(text.to_string()),
        )
        .with_link_names(false);
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.to_string().into());
        }
        let session = self.client.open_session(&self.token);
        self.timed(channel_id, session.chat_post_ephemeral(&req))
            .await
            .map(|_| ())
    }

    /// The members of a user group (`usergroups.users.list`, scope
    /// `usergroups:read`; not on free plans).
    pub async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, Failure> {
        let req = SlackApiUserGroupsUsersListRequest::new(group.to_string().into());
        let session = self.client.open_session(&self.token);
        let r = self.timed("", session.usergroups_users_list(&req)).await?;
        Ok(r.users.into_iter().map(|u| u.to_string()).collect())
    }

    /// Sends a message only the asker sees to a slash command's `response_url`
    /// (ephemeral unless it says otherwise; up to 5 times within 30 minutes). The
    /// URL carries a token of its own: it is never part of an error.
    pub async fn respond(&self, response_url: &str, text: &str) -> Result<(), Failure> {
        let url = url::Url::parse(response_url)
            .map_err(|e| Failure::Transient(format!("the response URL is not a URL ({e})")))?;
        let req = SlackApiPostWebhookMessageRequest::new(SlackMessageContent::new().with_text(text.to_string()));
        let hide = |f: Failure| match f {
            Failure::Transient(m) => Failure::Transient(m.replace(response_url, "[response_url]")),
            other => other,
        };
        self.timed("", self.client.post_webhook_message(&url, &req))
            .await
            .map(|_| ())
            .map_err(hide)
    }

    /// Asks for a Socket Mode URL with the app-level token (`apps.connections.open`):
    /// what slack-morphism's listener does, but with the error returned (the listener
    /// only logs it and retries every 30 s).
    pub async fn open_socket_url(&self, app_token: &Secret) -> Result<String, Failure> {
        let token = SlackApiToken::new(app_token.expose().to_string().into());
        let session = self.client.open_session(&token);
        let r = match tokio::time::timeout(
            self.timeout,
            session.apps_connections_open(&SlackApiAppsConnectionOpenRequest::new()),
        )
        .await
        {
            Err(_) => return Err(Failure::Transient(format!("no answer within {}s", self.timeout.as_secs_f32()))),
            Ok(Err(e)) => {
                let f = classify(&e, "");
                return Err(match f {
                    Failure::Transient(m) => Failure::Transient(app_token.redact(&m)),
                    other => other,
                });
            }
            Ok(Ok(r)) => r,
        };
        Ok(r.url.value().to_string())
    }
}
