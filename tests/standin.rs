//! The Slack stand-in, driven by the real slack-morphism client: what the project's
//! delivery code will see (answers, error variants) and what a reader would see (the
//! channel view, the preview page).

mod common;

use std::time::Duration;

use common::socket::{api_error_code, client};

use serde_json::{json, Value};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use supervisor_slack::standin::{Fault, StandIn, StandInOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Client = std::sync::Arc<
    SlackClient<
        SlackClientHyperConnector<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        >,
    >,
>;

const TOKEN: &str = "xoxb-test-token";

fn token() -> SlackApiToken {
    SlackApiToken::new(TOKEN.into())
}

/// A card as the project sends it: top-level text, one coloured attachment holding
/// the blocks.
fn card(header: &str, colour: &str) -> SlackMessageContent {
    let attachment: SlackMessageAttachment = serde_json::from_value(json!({
        "color": colour,
        "fallback": header,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": "*host*\nalpha"},
                {"type": "mrkdwn", "text": "*pid*\n4242"}
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "since <!date^1700000000^{time}|12:00>"}]}
        ]
    }))
    .unwrap();
    SlackMessageContent::new()
        .with_text(header.to_string())
        .with_attachments(vec![attachment])
}

fn post(channel: &str, content: SlackMessageContent) -> SlackApiChatPostMessageRequest {
    SlackApiChatPostMessageRequest::new(channel.into(), content)
}

async fn start(opts: StandInOptions) -> (StandIn, Client) {
    let standin = StandIn::start(opts).await.expect("stand-in starts");
    let client = client(&standin);
    (standin, client)
}

async fn start_unlimited() -> (StandIn, Client) {
    start(StandInOptions {
        enforce_rate_limit: false,
        ..Default::default()
    })
    .await
}

/// GETs a path from the stand-in over plain HTTP/1.0 and returns the body.
async fn http_get(standin: &StandIn, path: &str) -> String {
    http_raw(
        standin,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    .await
    .1
}

/// Sends raw bytes, returns (head, body) of the answer.
async fn http_raw(standin: &StandIn, request: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(standin.local_addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_string(), body.to_string())
}

#[tokio::test]
async fn parent_reply_and_update_give_the_channel_a_reader_sees() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);

    let auth = session.auth_test().await.expect("auth.test parses");
    assert_eq!(auth.team_id.0, "T0STANDIN");
    assert_eq!(auth.bot_id.map(|b| b.0).as_deref(), Some("B0STANDIN"));

    let parent = session
        .chat_post_message(&post("#ops", card("web STARTING", "#ECB22E")))
        .await
        .unwrap();
    let reply = session
        .chat_post_message(
            &post(
                &parent.channel.0,
                SlackMessageContent::new().with_text("went STARTING".into()),
            )
            .with_thread_ts(parent.ts.clone()),
        )
        .await
        .unwrap();
    assert_eq!(reply.message.origin.thread_ts.as_ref(), Some(&parent.ts));
    assert!(
        reply.ts.0 > parent.ts.0,
        "ts increase: {} then {}",
        parent.ts,
        reply.ts
    );

    // Edit the parent: new card, no text sent (so the old text stays).
    let new_card = card("web RUNNING", "#2EB67D");
    let update = SlackApiChatUpdateRequest::new(
        "ops".into(),
        SlackMessageContent::new().with_attachments(new_card.attachments.unwrap()),
        parent.ts.clone(),
    );
    let updated = session.chat_update(&update).await.unwrap();
    assert_eq!(updated.ts, parent.ts);
    assert!(updated.message.edited.is_some());

    let threads = standin.channel("#ops");
    assert_eq!(
        threads,
        standin.channel(&parent.channel.0),
        "name and id map to one channel"
    );
    assert_eq!(threads.len(), 1);
    let thread = &threads[0];
    assert_eq!(thread.parent.ts, parent.ts.0);
    assert_eq!(thread.parent.header().as_deref(), Some("web RUNNING"));
    assert_eq!(thread.parent.color().as_deref(), Some("#2EB67D"));
    assert_eq!(
        thread.parent.text.as_deref(),
        Some("web STARTING"),
        "text not sent keeps its value"
    );
    assert_eq!(thread.parent.edits, 1);
    assert_eq!(thread.replies.len(), 1);
    assert_eq!(thread.replies[0].text.as_deref(), Some("went STARTING"));

    // The client reads the same thread back.
    let replies = session
        .conversations_replies(&SlackApiConversationsRepliesRequest::new(
            parent.channel.clone(),
            parent.ts.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(replies.messages.len(), 2);
    assert_eq!(replies.messages[0].parent.reply_count, Some(1));
    assert_eq!(replies.messages[1].origin.ts, reply.ts);

    let calls = standin.calls();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "auth.test",
            "chat.postMessage",
            "chat.postMessage",
            "chat.update",
            "conversations.replies"
        ]
    );
    assert!(calls
        .iter()
        .all(|c| c.authorization_ok && c.status == 200 && c.error.is_none()));
    assert_eq!(
        calls[1].body["attachments"][0]["color"], "#ECB22E",
        "the body is recorded as sent"
    );
}

#[tokio::test]
async fn a_burst_beyond_the_bucket_gets_429_with_retry_after() {
    let (standin, client) = start(StandInOptions {
        burst: 3,
        ..Default::default()
    })
    .await;
    let token = token();
    let session = client.open_session(&token);
    let text = || SlackMessageContent::new().with_text("x".into());

    for _ in 0..3 {
        session
            .chat_post_message(&post("ops", text()))
            .await
            .expect("the burst fits");
    }
    let err = session
        .chat_post_message(&post("ops", text()))
        .await
        .unwrap_err();
    let retry_after = match err {
        SlackClientError::RateLimitError(e) => {
            assert_eq!(e.code.as_deref(), Some("ratelimited"));
            e.retry_after.expect("Retry-After is announced")
        }
        other => panic!("expected RateLimitError, got {other:?}"),
    };
    assert_eq!(retry_after, Duration::from_secs(1));
    // Another channel has its own bucket.
    session
        .chat_post_message(&post("dev", text()))
        .await
        .expect("other channel unaffected");

    tokio::time::sleep(retry_after).await;
    session
        .chat_post_message(&post("ops", text()))
        .await
        .expect("after Retry-After a token is back");

    let limited: Vec<_> = standin
        .calls()
        .into_iter()
        .filter(|c| c.status == 429)
        .collect();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].retry_after, Some(1));
    assert_eq!(limited[0].error.as_deref(), Some("ratelimited"));
    assert!(
        standin.calls_during_retry_after().is_empty(),
        "{:?}",
        standin.calls_during_retry_after()
    );
    assert_eq!(standin.channel("ops").len(), 4);
}

#[tokio::test]
async fn a_request_before_retry_after_elapsed_is_recorded() {
    let (standin, client) = start(StandInOptions {
        burst: 1,
        ..Default::default()
    })
    .await;
    let token = token();
    let session = client.open_session(&token);
    let text = || SlackMessageContent::new().with_text("x".into());
    session
        .chat_post_message(&post("ops", text()))
        .await
        .unwrap();
    assert!(matches!(
        session.chat_post_message(&post("ops", text())).await,
        Err(SlackClientError::RateLimitError(_))
    ));
    let _ = session.chat_post_message(&post("ops", text())).await;
    let early = standin.calls_during_retry_after();
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].method, "chat.postMessage");
}

#[tokio::test]
async fn a_legacy_field_beside_blocks_is_invalid_attachments() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let mut content = card("web RUNNING", "#2EB67D");
    content.attachments.as_mut().unwrap()[0].text = Some("legacy text".into());
    let err = client
        .open_session(&token)
        .chat_post_message(&post("ops", content))
        .await
        .unwrap_err();
    assert_eq!(api_error_code(err), "invalid_attachments");
    assert!(
        standin.channel("ops").is_empty(),
        "a refused message is not stored"
    );
    assert_eq!(
        standin.calls()[0].error.as_deref(),
        Some("invalid_attachments")
    );
}

#[tokio::test]
async fn an_overlong_header_is_invalid_blocks() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    let err = session
        .chat_post_message(&post("ops", card(&"x".repeat(151), "#E01E5A")))
        .await
        .unwrap_err();
    match err {
        SlackClientError::ApiError(e) => {
            assert_eq!(e.code, "invalid_blocks");
            assert!(e.errors.unwrap()[0].contains("/attachments/0/blocks/0/text/text"));
        }
        other => panic!("expected ApiError, got {other:?}"),
    }
    session
        .chat_post_message(&post("ops", card(&"x".repeat(150), "#E01E5A")))
        .await
        .expect("150 fits");
    assert_eq!(standin.channel("ops").len(), 1);
}

#[tokio::test]
async fn replies_to_unknown_threads_and_edits_of_unknown_messages_are_refused() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    let text = |t: &str| SlackMessageContent::new().with_text(t.into());

    let orphan = post("ops", text("orphan")).with_thread_ts("1.000001".into());
    assert_eq!(
        api_error_code(session.chat_post_message(&orphan).await.unwrap_err()),
        "thread_not_found"
    );

    let parent = session
        .chat_post_message(&post("ops", text("parent")))
        .await
        .unwrap();
    let reply = session
        .chat_post_message(&post("ops", text("reply")).with_thread_ts(parent.ts.clone()))
        .await
        .unwrap();
    let reply_to_reply = post("ops", text("nested")).with_thread_ts(reply.ts.clone());
    assert_eq!(
        api_error_code(
            session
                .chat_post_message(&reply_to_reply)
                .await
                .unwrap_err()
        ),
        "thread_not_found"
    );

    let edit = SlackApiChatUpdateRequest::new("ops".into(), text("edit"), "1.000001".into());
    assert_eq!(
        api_error_code(session.chat_update(&edit).await.unwrap_err()),
        "message_not_found"
    );

    let empty = post("ops", SlackMessageContent::new());
    assert_eq!(
        api_error_code(session.chat_post_message(&empty).await.unwrap_err()),
        "no_text"
    );
    assert_eq!(standin.channel("ops")[0].replies.len(), 1);
}

#[tokio::test]
async fn tokens_are_checked() {
    let (standin, client) = start_unlimited().await;
    let wrong = SlackApiToken::new("xoxp-user-token".into());
    let err = client.open_session(&wrong).auth_test().await.unwrap_err();
    assert_eq!(api_error_code(err), "invalid_auth");

    standin.set_token("xoxb-right");
    let err = client.open_session(&token()).auth_test().await.unwrap_err();
    assert_eq!(api_error_code(err), "invalid_auth");
    let right = SlackApiToken::new("xoxb-right".into());
    client
        .open_session(&right)
        .auth_test()
        .await
        .expect("the expected token passes");
    let flags: Vec<bool> = standin.calls().iter().map(|c| c.authorization_ok).collect();
    assert_eq!(flags, [false, false, true]);
}

#[tokio::test]
async fn faults_surface_as_the_matching_client_errors() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    let text = || SlackMessageContent::new().with_text("x".into());

    standin.set_fault(Fault::Status(503));
    match session.chat_post_message(&post("ops", text())).await {
        Err(SlackClientError::HttpError(e)) => assert_eq!(e.status_code.as_u16(), 503),
        other => panic!("expected HttpError, got {other:?}"),
    }
    assert!(
        matches!(
            session.auth_test().await,
            Err(SlackClientError::HttpError(_))
        ),
        "every method"
    );

    standin.set_fault(Fault::Status(429).times(1));
    match session.chat_post_message(&post("ops", text())).await {
        Err(SlackClientError::RateLimitError(e)) => {
            assert_eq!(e.retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("expected RateLimitError, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    standin.set_fault(Fault::api_error("internal_error").times(1));
    assert_eq!(
        api_error_code(
            session
                .chat_post_message(&post("ops", text()))
                .await
                .unwrap_err()
        ),
        "internal_error"
    );
    session
        .chat_post_message(&post("ops", text()))
        .await
        .expect("times(1) hits one call only");

    standin.set_fault(Fault::Drop.times(1));
    match session.chat_post_message(&post("ops", text())).await {
        Err(SlackClientError::HttpProtocolError(_)) => {}
        other => panic!("expected HttpProtocolError, got {other:?}"),
    }
    assert_eq!(
        standin.channel("ops").len(),
        1,
        "a dropped call has no effect"
    );

    // Slow: the client gives up, the message is posted anyway (as on a slow Slack).
    standin.set_fault(Fault::Slow(Duration::from_millis(800)).times(1));
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        session.chat_post_message(&post("ops", text())),
    )
    .await;
    assert!(waited.is_err(), "the call outlasts the client's time-out");
    assert!(
        standin
            .wait_for(Duration::from_secs(3), |s| s.channel("ops").len() == 2)
            .await
    );

    let faults: Vec<Option<String>> = standin.calls().iter().map(|c| c.fault.clone()).collect();
    assert_eq!(faults.iter().filter(|f| f.is_some()).count(), 6);
    assert!(standin.calls_during_retry_after().is_empty());
}

#[tokio::test]
async fn a_fault_can_target_one_method() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    standin.set_fault(Fault::api_error("message_not_found").on("chat.update"));
    let parent = session
        .chat_post_message(&post("ops", card("web RUNNING", "#2EB67D")))
        .await
        .unwrap();
    let edit =
        SlackApiChatUpdateRequest::new(parent.channel, card("web EXITED", "#E01E5A"), parent.ts);
    assert_eq!(
        api_error_code(session.chat_update(&edit).await.unwrap_err()),
        "message_not_found"
    );
    assert_eq!(
        api_error_code(session.chat_update(&edit).await.unwrap_err()),
        "message_not_found",
        "until cleared"
    );
    standin.set_fault(Fault::None);
    session.chat_update(&edit).await.expect("cleared");
    assert_eq!(
        standin.channel("ops")[0].parent.header().as_deref(),
        Some("web EXITED")
    );
}

#[tokio::test]
async fn fault_rules_stack_and_the_first_match_applies() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    standin.set_fault(Fault::Status(500).on("auth.test"));
    standin.add_fault(
        Fault::api_error("invalid_blocks")
            .on("chat.postMessage")
            .times(1),
    );
    let text = || SlackMessageContent::new().with_text("x".into());
    assert!(matches!(
        session.auth_test().await,
        Err(SlackClientError::HttpError(_))
    ));
    assert_eq!(
        api_error_code(
            session
                .chat_post_message(&post("ops", text()))
                .await
                .unwrap_err()
        ),
        "invalid_blocks"
    );
    session
        .chat_post_message(&post("ops", text()))
        .await
        .expect("the counted rule is used up");
    assert!(
        matches!(
            session.auth_test().await,
            Err(SlackClientError::HttpError(_))
        ),
        "the other rule stays"
    );
}

#[tokio::test]
async fn metadata_and_broadcast_replies_are_kept() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    let metadata = SlackMessageMetadata::new("supervisor_process".into())
        .with_event_payload([("key".to_string(), "alpha/web/nginx".to_string())].into());
    let parent = session
        .chat_post_message(&post(
            "ops",
            card("nginx RUNNING", "#2EB67D").with_metadata(metadata.clone()),
        ))
        .await
        .unwrap();
    session
        .chat_post_message(
            &post(
                "ops",
                SlackMessageContent::new().with_text("nginx FATAL".into()),
            )
            .with_thread_ts(parent.ts.clone())
            .with_reply_broadcast(true),
        )
        .await
        .unwrap();

    let thread = &standin.channel("ops")[0];
    assert_eq!(
        thread.parent.metadata.as_ref().unwrap()["event_type"],
        "supervisor_process"
    );
    assert!(thread.replies[0].reply_broadcast);
    let flow = standin.channel_flow("ops");
    assert_eq!(flow.len(), 2, "the broadcast reply is also in the channel");

    let history = session
        .conversations_history(
            &SlackApiConversationsHistoryRequest::new()
                .with_channel(parent.channel.clone())
                .with_include_all_metadata(true),
        )
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 2);
    assert_eq!(
        history.messages[1].content.metadata.as_ref(),
        Some(&metadata),
        "newest first; parent last"
    );
    assert_eq!(
        history.messages[0].subtype,
        Some(SlackMessageEventType::ThreadBroadcast)
    );
}

#[tokio::test]
async fn the_page_shows_the_card_colour_and_escapes_everything() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let session = client.open_session(&token);
    let attachment: SlackMessageAttachment = serde_json::from_value(json!({
        "color": "#E01E5A",
        "fallback": "evil",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "<script>alert('pwned')</script> EXITED"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*exit* _status_ `1` &lt;img src=x onerror=alert(2)&gt;\n```\nTraceback &lt;module&gt;\n```"}}
        ]
    }))
    .unwrap();
    let parent = session
        .chat_post_message(&post(
            "ops",
            SlackMessageContent::new()
                .with_text("evil".into())
                .with_attachments(vec![attachment]),
        ))
        .await
        .unwrap();
    session
        .chat_post_message(
            &post(
                "ops",
                SlackMessageContent::new().with_text("restarted".into()),
            )
            .with_thread_ts(parent.ts.clone())
            .with_reply_broadcast(true),
        )
        .await
        .unwrap();
    session
        .chat_update(&SlackApiChatUpdateRequest::new(
            "ops".into(),
            SlackMessageContent::new().with_text("evil!".into()),
            parent.ts,
        ))
        .await
        .unwrap();

    let html = http_get(&standin, "/").await;
    assert!(html.contains("background:#E01E5A"), "colour bar");
    assert!(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; EXITED"));
    assert!(!html.contains("<script>alert"), "no injected script");
    assert!(!html.contains("<img"), "no injected element");
    assert!(html.contains("<b>exit</b> <i>status</i> <code>1</code>"));
    assert!(html.contains("<pre>Traceback &lt;module&gt;\n</pre>"));
    assert!(html.contains("(edited)"));
    assert!(html.contains("also sent to the channel"));
    assert!(html.contains("1 reply"));
    assert!(html.contains("# ops"));
}

#[tokio::test]
async fn debug_endpoints_and_form_posts_work() {
    let (standin, _client) = start_unlimited().await;
    let form = "channel=%23ops&text=hello+form&attachments=%5B%7B%22color%22%3A%22%23000000%22%2C%22blocks%22%3A%5B%7B%22type%22%3A%22divider%22%7D%5D%7D%5D";
    let request = format!(
        "POST /api/chat.postMessage HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let (head, body) = http_raw(&standin, &request).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        standin.channel("ops")[0].parent.color().as_deref(),
        Some("#000000")
    );

    let calls: Value = serde_json::from_str(&http_get(&standin, "/api/_calls").await).unwrap();
    assert_eq!(calls[0]["method"], "chat.postMessage");
    assert_eq!(calls[0]["body"]["text"], "hello form");
    let channel: Value =
        serde_json::from_str(&http_get(&standin, "/api/_channel/ops").await).unwrap();
    assert_eq!(channel[0]["parent"]["text"], "hello form");
}

#[tokio::test]
async fn updates_have_their_own_generous_limit() {
    let (standin, client) = start(StandInOptions {
        burst: 1,
        updates_per_minute: 5,
        ..Default::default()
    })
    .await;
    let token = token();
    let session = client.open_session(&token);
    let parent = session
        .chat_post_message(&post("ops", card("a", "#2EB67D")))
        .await
        .unwrap();
    let edit = SlackApiChatUpdateRequest::new(parent.channel, card("b", "#2EB67D"), parent.ts);
    for _ in 0..5 {
        session
            .chat_update(&edit)
            .await
            .expect("updates are not bound by the post bucket");
    }
    assert!(matches!(
        session.chat_update(&edit).await,
        Err(SlackClientError::RateLimitError(_))
    ));
    assert_eq!(standin.channel("ops")[0].parent.edits, 5);
}

/// The status code of an answer's head (`HTTP/1.x NNN …`).
fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Posts a message whose text a test can look for.
async fn post_secret(client: &Client) {
    let token = token();
    client
        .open_session(&token)
        .chat_post_message(&post(
            "ops",
            SlackMessageContent::new().with_text("secret stderr tail".into()),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_naming_another_host_is_refused_and_shows_no_data() {
    let (standin, client) = start_unlimited().await;
    post_secret(&client).await;
    for path in ["/api/_calls", "/api/_channel/ops", "/", "/?channel=ops"] {
        let (head, body) = http_raw(
            &standin,
            &format!("GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&head), 421, "GET {path}: {head}");
        assert!(!body.contains("secret"), "GET {path} showed data: {body}");
        assert!(body.contains("localhost"), "a short reason: {body}");
    }
    // Nor does such a request post anything.
    let form = "channel=ops&text=planted";
    let (head, _) = http_raw(
        &standin,
        &format!(
            "POST /api/chat.postMessage HTTP/1.1\r\nHost: evil.example:80\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(status_of(&head), 421, "{head}");
    assert_eq!(standin.calls().len(), 1, "only the first post was recorded");
    assert_eq!(standin.channel("ops").len(), 1);
}

#[tokio::test]
async fn a_post_from_a_page_of_another_site_is_refused() {
    let (standin, _client) = start_unlimited().await;
    let form = "channel=ops&text=planted";
    let (head, _) = http_raw(
        &standin,
        &format!(
            "POST /api/chat.postMessage HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert!(standin.calls().is_empty());
    assert!(standin.channel("ops").is_empty());
}

#[tokio::test]
async fn loopback_hosts_with_any_port_are_answered() {
    let (standin, client) = start_unlimited().await;
    post_secret(&client).await;
    let port = standin.local_addr().port();
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.3.2.1:1".to_string(),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (head, body) = http_raw(
            &standin,
            &format!("GET /api/_calls HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&head), 200, "Host: {host}: {head}");
        assert!(body.contains("secret stderr tail"), "Host: {host}: {body}");
    }
}

#[tokio::test]
async fn a_get_to_a_method_that_changes_state_is_refused_and_changes_nothing() {
    let (standin, client) = start_unlimited().await;
    let token = token();
    let parent = client
        .open_session(&token)
        .chat_post_message(&post("ops", card("a", "#2EB67D")))
        .await
        .unwrap();
    let before = standin.calls().len();
    for path in [
        format!("/api/chat.postMessage?channel=ops&text=planted&token={TOKEN}"),
        format!(
            "/api/chat.update?channel=ops&ts={}&text=planted&token={TOKEN}",
            parent.ts
        ),
    ] {
        let (head, _) = http_raw(
            &standin,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&head), 405, "GET {path}: {head}");
        assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    }
    assert_eq!(
        standin.calls().len(),
        before,
        "refused calls are not recorded"
    );
    let threads = standin.channel("ops");
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].parent.edits, 0);
    assert!(!threads[0].parent.visible_text().contains("planted"));

    // The debug views are reads: GET only.
    let (head, _) = http_raw(
        &standin,
        "POST /api/_calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&head), 405, "{head}");

    // Reads still come by GET, as slack-morphism sends them.
    let (head, body) = http_raw(
        &standin,
        &format!(
            "GET /api/conversations.history?channel=ops&token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(body.contains("\"ok\":true"), "{body}");
}
