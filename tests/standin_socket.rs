//! The Slack stand-in's Socket Mode and the Web API methods that go with buttons
//! (`apps.connections.open`, `chat.postEphemeral`, `usergroups.users.list`), driven
//! by slack-morphism's own Socket Mode listener — what the project's listener runs —
//! and, where the wire itself is the point, by a bare WebSocket client.

mod common;

use std::time::Duration;

use common::slack::TOKEN as BOT_TOKEN;
use common::socket::{
    api_error_code,
    client, http, next_json, open, post_card, restart_button, SocketApp, APP_TOKEN,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use supervisor_slack::standin::{Click, Fault, StandIn, StandInOptions};
use tokio_tungstenite::tungstenite::Message as Frame;

const WAIT: Duration = Duration::from_secs(10);

async fn start(opts: StandInOptions) -> StandIn {
    StandIn::start(StandInOptions {
        enforce_rate_limit: false,
        ..opts
    })
    .await
    .expect("stand-in starts")
}

fn bot() -> SlackApiToken {
    SlackApiToken::new(BOT_TOKEN.into())
}

#[tokio::test]
async fn a_click_reaches_the_listener_with_every_payload_field_and_is_acked() {
    let standin = start(StandInOptions::default()).await;
    let (channel, ts) = post_card(&standin).await;
    assert_eq!(
        standin.buttons("ops", &ts),
        [
            ("restart".into(), "Restart".into(), "web-1|web".into()),
            ("logs".into(), "Tail log".into(), "web-1|web|tail".into())
        ]
    );
    let app = SocketApp::start(&standin, APP_TOKEN, 2).await;
    assert!(
        standin.wait_for_sockets(2, WAIT).await,
        "both connections open"
    );
    assert_eq!(standin.sockets_opened(), 2);
    let hellos = app.hellos();
    assert_eq!(hellos.len(), 2, "a hello on each connection");
    assert_eq!(hellos[0]["connection_info"]["app_id"], "A0STANDIN");

    let outcome = standin
        .click(Click::new("U0DEMO", "#ops", &ts, "restart"))
        .await
        .unwrap();
    assert_eq!(outcome.acked, [true], "{outcome:?}");
    assert!(outcome.ack_ms[0] < 3000);
    let clicks = app.wait_for_clicks(1, WAIT).await;
    assert_eq!(clicks.len(), 1);
    let click = &clicks[0];
    let user = click.user.as_ref().unwrap();
    assert_eq!(user.id.0, "U0DEMO");
    assert_eq!(user.username.as_deref(), Some("demo"));
    assert_eq!(user.name.as_deref(), Some("demo"));
    assert_eq!(user.team_id.as_ref().unwrap().0, "T0STANDIN");
    assert_eq!(click.team.id.0, "T0STANDIN");
    assert_eq!(click.api_app_id.0, "A0STANDIN");
    match &click.container {
        SlackInteractionActionContainer::MessageAttachment(c) => {
            assert_eq!(c.message_ts.0, ts);
            assert_eq!(c.attachment_id.value(), &1);
            assert_eq!(c.channel_id.as_ref().unwrap().0, channel);
            assert_eq!(c.is_ephemeral, Some(false));
        }
        other => panic!("a button in an attachment: {other:?}"),
    }
    let ch = click.channel.as_ref().unwrap();
    assert_eq!(
        (ch.id.0.as_str(), ch.name.as_deref()),
        (channel.as_str(), Some("ops"))
    );
    let message = click.message.as_ref().unwrap();
    assert_eq!(message.origin.ts.0, ts);
    assert_eq!(message.content.text.as_deref(), Some("web RUNNING"));
    assert!(message.content.attachments.as_ref().unwrap()[0]
        .blocks
        .is_some());
    let action = &click.actions.as_ref().unwrap()[0];
    assert_eq!(action.action_type.0, "button");
    assert_eq!(action.action_id.0, "restart");
    assert_eq!(action.block_id.as_ref().unwrap().0, "card-actions");
    assert_eq!(action.value.as_deref(), Some("web-1|web"));
    assert!(action.action_ts.is_some());
    assert!(action.text.is_some());
    assert!(click.response_url.is_some());
    assert!(!click.trigger_id.0.is_empty());
    assert!(click.state.is_some());

    let acks = standin.acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].envelope_id, outcome.envelope_ids[0]);
    assert_eq!(acks[0].payload, None, "a bare ack");

    // A value given with the click replaces the button's; top-level blocks give the
    // `message` container.
    let top = client(&standin)
        .open_session(&bot())
        .chat_post_message(&SlackApiChatPostMessageRequest::new(
            "#ops".into(),
            serde_json::from_value(json!({"text": "t", "blocks": [
                {"type": "actions", "elements": [restart_button()]}
            ]}))
            .unwrap(),
        ))
        .await
        .unwrap();
    let mut click = Click::new("U0OTHER", "ops", &top.ts.0, "restart");
    click.value = Some("given".into());
    standin.click(click).await.unwrap();
    let clicks = app.wait_for_clicks(2, WAIT).await;
    assert!(matches!(
        clicks[1].container,
        SlackInteractionActionContainer::Message(_)
    ));
    let action = &clicks[1].actions.as_ref().unwrap()[0];
    assert_eq!(action.value.as_deref(), Some("given"));
    assert!(
        action.block_id.is_some(),
        "a block_id even when the block has none"
    );
    assert_eq!(
        clicks[1].user.as_ref().unwrap().username.as_deref(),
        Some("U0OTHER"),
        "an unknown user is named by id"
    );
    app.stop().await;
}

#[tokio::test]
async fn apps_connections_open_checks_the_app_token_and_a_ticket_opens_one_socket() {
    let standin = start(StandInOptions {
        app_token: Some(APP_TOKEN.into()),
        ..StandInOptions::default()
    })
    .await;
    assert_eq!(open(&standin, None).await["error"], "not_authed");
    assert_eq!(
        open(&standin, Some(BOT_TOKEN)).await["error"],
        "not_allowed_token_type"
    );
    assert_eq!(
        open(&standin, Some("xoxp-user")).await["error"],
        "not_allowed_token_type"
    );
    assert_eq!(
        open(&standin, Some("xapp-1-other")).await["error"],
        "invalid_auth"
    );
    let api = client(&standin);
    let (bot, app) = (bot(), SlackApiToken::new(APP_TOKEN.into()));
    let err = api
        .open_session(&bot)
        .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
        .await
        .unwrap_err();
    assert_eq!(
        api_error_code(err),
        "not_allowed_token_type",
        "as slack-morphism sees it"
    );
    // The app token opens no Web API method but this one.
    let app_session = api.open_session(&app);
    let err = app_session.auth_test().await.unwrap_err();
    assert_eq!(api_error_code(err), "not_allowed_token_type");

    let opened = app_session
        .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
        .await
        .expect("the app token opens a connection");
    let url = opened.url.0.to_string();
    assert!(
        url.starts_with("ws://127.0.0.1:")
            && url.contains("/link/?ticket=")
            && url.ends_with("&app_id=A0STANDIN"),
        "{url}"
    );
    let calls = standin.calls_to("apps.connections.open");
    assert_eq!(calls.last().unwrap().status, 200);
    let record = serde_json::to_string(&standin.calls()).unwrap();
    assert!(
        !record.contains("secretappsecret"),
        "the app token is never recorded"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(
        hello,
        json!({"type": "hello", "num_connections": 1,
               "debug_info": {"host": "applink-1", "build_number": 1, "approximate_connection_time": 18060},
               "connection_info": {"app_id": "A0STANDIN"}})
    );
    assert!(standin.wait_for_sockets(1, WAIT).await);
    let refused = |url: String| async move {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => answer.status().as_u16(),
            other => panic!("the handshake should fail: {:?}", other.map(|r| r.1)),
        }
    };
    assert_eq!(refused(url.clone()).await, 401, "a ticket is single use");
    let forged = format!(
        "{}deadbeef&app_id=A0STANDIN",
        &url[..url.find("ticket=").unwrap() + 7]
    );
    assert_eq!(refused(forged).await, 401, "an unknown ticket");
    assert_eq!(standin.sockets_opened(), 1);

    // A page of another site may open WebSockets anywhere: its Origin is refused
    // before the ticket is looked at, so the ticket still works afterwards.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = open(&standin, Some(APP_TOKEN)).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let mut foreign = url.as_str().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status().as_u16(), 403)
        }
        other => panic!("a foreign Origin is refused: {:?}", other.map(|r| r.1)),
    }
    let elsewhere = url.replace("/link/", "/other/");
    assert_eq!(refused(elsewhere).await, 404, "Socket Mode lives at /link/");
    let (_ws2, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert!(standin.wait_for_sockets(2, WAIT).await);

    // Faults match the method by name, as for every other method.
    standin.set_fault(Fault::Status(503).on("apps.connections.open").times(1));
    assert_eq!(
        open(&standin, Some(APP_TOKEN)).await["error"],
        "stand_in_http_503"
    );
    assert_eq!(open(&standin, Some(APP_TOKEN)).await["ok"], true);
}

#[tokio::test]
async fn a_revoked_app_token_disconnects_every_socket_and_cannot_reopen() {
    let standin = start(StandInOptions::default()).await;
    let url = open(&standin, Some(APP_TOKEN)).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let app = SocketApp::start(&standin, APP_TOKEN, 1).await;
    assert!(standin.wait_for_sockets(2, WAIT).await);

    standin.revoke_app_token();
    assert_eq!(standin.socket_connections(), 0, "no socket takes envelopes");
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "disconnect", "reason": "link_disabled", "debug_info": {"host": "standin"}})
    );
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "and the socket is closed");
    // slack-morphism tries to reopen, and is told why it cannot.
    let refused = standin
        .wait_for(WAIT, |s| {
            s.calls_to("apps.connections.open")
                .iter()
                .any(|c| c.error.as_deref() == Some("token_revoked"))
        })
        .await;
    assert!(refused, "{:?}", standin.calls_to("apps.connections.open"));
    assert_eq!(
        open(&standin, Some("xapp-1-any")).await["error"],
        "token_revoked"
    );
    assert_eq!(standin.socket_connections(), 0);
    let (_, ts) = post_card(&standin).await;
    let err = standin
        .click(Click::new("U0DEMO", "ops", &ts, "restart"))
        .await
        .unwrap_err();
    assert!(err.starts_with("no_socket"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn repeat_sends_the_same_payload_in_envelopes_of_their_own_round_robin() {
    let standin = start(StandInOptions::default()).await;
    let (_, ts) = post_card(&standin).await;
    let app = SocketApp::start(&standin, APP_TOKEN, 2).await;
    assert!(standin.wait_for_sockets(2, WAIT).await);
    let mut click = Click::new("U0DEMO", "ops", &ts, "restart");
    click.repeat = 2;
    let outcome = standin.click(click).await.unwrap();
    assert_eq!(outcome.envelope_ids.len(), 2);
    assert_ne!(outcome.envelope_ids[0], outcome.envelope_ids[1]);
    assert_eq!(outcome.acked, [true, true]);
    let clicks = app.wait_for_clicks(2, WAIT).await;
    let action_ts = |i: usize| clicks[i].actions.as_ref().unwrap()[0].action_ts.clone();
    assert!(action_ts(0).is_some());
    assert_eq!(action_ts(0), action_ts(1), "the same click twice");
    assert_eq!(clicks[0].trigger_id, clicks[1].trigger_id);
    let mut connections: Vec<u64> = standin.acks().iter().map(|a| a.connection).collect();
    connections.sort();
    assert_eq!(connections, [1, 2], "one envelope on each connection");

    // A given action_ts is kept.
    let mut click = Click::new("U0DEMO", "ops", &ts, "logs");
    click.action_ts = Some("1700000000.123456".into());
    standin.click(click).await.unwrap();
    let clicks = app.wait_for_clicks(3, WAIT).await;
    let action = &clicks[2].actions.as_ref().unwrap()[0];
    assert_eq!(action.action_ts.as_ref().unwrap().0, "1700000000.123456");
    assert_eq!(action.value.as_deref(), Some("web-1|web|tail"));
    app.stop().await;
}

#[tokio::test]
async fn after_a_disconnect_frame_or_a_cut_connection_the_listener_reconnects() {
    let standin = start(StandInOptions::default()).await;
    let (_, ts) = post_card(&standin).await;
    let app = SocketApp::start(&standin, APP_TOKEN, 2).await;
    assert!(standin.wait_for_sockets(2, WAIT).await);
    assert_eq!(standin.sockets_opened(), 2);

    standin.socket_disconnect("refresh_requested").await;
    assert_eq!(standin.socket_connections(), 0);
    let back = standin
        .wait_for(WAIT, |s| {
            s.sockets_opened() >= 4 && s.socket_connections() == 2
        })
        .await;
    assert!(back, "reconnected: opened {}", standin.sockets_opened());
    let outcome = standin
        .click(Click::new("U0DEMO", "ops", &ts, "restart"))
        .await
        .unwrap();
    assert_eq!(outcome.acked, [true]);
    assert_eq!(app.wait_for_clicks(1, WAIT).await.len(), 1);

    standin.socket_drop();
    assert_eq!(standin.socket_connections(), 0);
    let back = standin
        .wait_for(WAIT, |s| {
            s.sockets_opened() >= 6 && s.socket_connections() == 2
        })
        .await;
    assert!(
        back,
        "reconnected after the cut: opened {}",
        standin.sockets_opened()
    );
    let outcome = standin
        .click(Click::new("U0DEMO", "ops", &ts, "restart"))
        .await
        .unwrap();
    assert_eq!(outcome.acked, [true]);
    assert_eq!(app.wait_for_clicks(2, WAIT).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn clicks_that_cannot_be_delivered_say_why_and_the_routes_answer_json() {
    let standin = start(StandInOptions::default()).await;
    let (_, ts) = post_card(&standin).await;
    let err = standin
        .click(Click::new("U0DEMO", "ops", &ts, "restart"))
        .await
        .unwrap_err();
    assert_eq!(err, "no_socket: no listener connected over Socket Mode");
    let body =
        json!({"user": "U0DEMO", "channel": "ops", "message_ts": ts, "action_id": "restart"});
    let answer = http(
        &standin,
        "POST /api/_socket/click HTTP/1.0",
        &body.to_string(),
    )
    .await;
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"], "no_socket");
    assert_eq!(answer["message"], "no listener connected over Socket Mode");

    let app = SocketApp::start(&standin, APP_TOKEN, 2).await;
    assert!(standin.wait_for_sockets(2, WAIT).await);
    let err = standin
        .click(Click::new("U0DEMO", "ops", "1.000001", "restart"))
        .await
        .unwrap_err();
    assert!(err.starts_with("message_not_found:"), "{err}");
    let err = standin
        .click(Click::new("U0DEMO", "ops", &ts, "delete"))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("no_button:") && err.contains("delete"),
        "{err}"
    );
    let err = standin
        .click(Click::new("U0DEMO", "nowhere", &ts, "restart"))
        .await
        .unwrap_err();
    assert!(err.starts_with("channel_not_found:"), "{err}");

    let answer = http(
        &standin,
        "POST /api/_socket/click HTTP/1.0",
        &body.to_string(),
    )
    .await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["acked"], json!([true]));
    assert_eq!(app.wait_for_clicks(1, WAIT).await.len(), 1);
    let figures = http(&standin, "GET /api/_socket HTTP/1.0", "").await;
    assert_eq!(figures["connections"], 2);
    assert_eq!(figures["opened"], 2);
    assert_eq!(figures["acks"][0]["envelope_id"], answer["envelope_ids"][0]);
    app.stop().await;
}

#[tokio::test]
async fn ephemerals_are_recorded_for_one_user_and_never_in_the_history() {
    let standin = start(StandInOptions::default()).await;
    let (channel, ts) = post_card(&standin).await;
    let (api, token) = (client(&standin), bot());
    let session = api.open_session(&token);
    session
        .chat_post_ephemeral(
            &SlackApiChatPostEphemeralRequest::new(
                channel.clone().into(),
                "U0DEMO".into(),
                SlackMessageContent::new().with_text("Restarting web…".into()),
            )
            .with_thread_ts(ts.clone().into()),
        )
        .await
        .expect("chat.postEphemeral parses");
    let ephemerals = standin.ephemerals();
    assert_eq!(ephemerals.len(), 1);
    let e = &ephemerals[0];
    assert_eq!(
        (
            e.channel.as_str(),
            e.user.as_str(),
            e.text.as_deref(),
            e.thread_ts.as_deref()
        ),
        (
            channel.as_str(),
            "U0DEMO",
            Some("Restarting web…"),
            Some(ts.as_str())
        )
    );
    assert!(e.ts > ts);
    let calls = standin.calls_to("chat.postEphemeral");
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].ts.as_deref(), Some(e.ts.as_str()));

    let history = session
        .conversations_history(
            &SlackApiConversationsHistoryRequest::new().with_channel(channel.clone().into()),
        )
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 1, "only the card");
    let replies = session
        .conversations_replies(&SlackApiConversationsRepliesRequest::new(
            channel.clone().into(),
            ts.clone().into(),
        ))
        .await
        .unwrap();
    assert_eq!(replies.messages.len(), 1, "the thread holds no ephemeral");
    assert!(standin.channel("ops")[0].replies.is_empty());

    let auth = format!("\r\nAuthorization: Bearer {BOT_TOKEN}");
    let post = |body: Value| {
        let standin = &standin;
        let head = format!("POST /api/chat.postEphemeral HTTP/1.0{auth}");
        async move { http(standin, &head, &body.to_string()).await }
    };
    let answer = post(json!({"channel": channel, "user": "U0DEMO", "text": "hi"})).await;
    assert_eq!(answer["ok"], true);
    assert!(answer["message_ts"]
        .as_str()
        .is_some_and(|t| t > ts.as_str()));
    assert_eq!(
        post(json!({"channel": channel, "text": "hi"})).await["error"],
        "invalid_arguments"
    );
    assert_eq!(
        post(json!({"channel": channel, "user": "U0DEMO"})).await["error"],
        "no_text"
    );
    let long_button = json!({"type": "button", "action_id": "a",
                             "text": {"type": "plain_text", "text": "x".repeat(76)}});
    let answer = post(json!({"channel": channel, "user": "U0DEMO", "text": "t",
                             "blocks": [{"type": "actions", "elements": [long_button]}]}))
    .await;
    assert_eq!(answer["error"], "invalid_blocks");
    assert_eq!(standin.ephemerals().len(), 2, "refused ones are not kept");

    let restricted = start(StandInOptions {
        channels: Some(vec!["ops".into()]),
        ..StandInOptions::default()
    })
    .await;
    let err = client(&restricted)
        .open_session(&bot())
        .chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
            "#elsewhere".into(),
            "U0DEMO".into(),
            SlackMessageContent::new().with_text("x".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(api_error_code(err), "channel_not_found");
}

#[tokio::test]
async fn usergroups_users_list_answers_members_unknown_groups_and_a_set_error() {
    let standin = start(StandInOptions {
        usergroups: vec![("S0OPS".into(), vec!["U0DEMO".into(), "U0ALICE".into()])],
        ..StandInOptions::default()
    })
    .await;
    let (api, token) = (client(&standin), bot());
    let session = api.open_session(&token);
    let list = |group: &str| SlackApiUserGroupsUsersListRequest::new(group.to_string().into());
    let members = session.usergroups_users_list(&list("S0OPS")).await.unwrap();
    let ids: Vec<&str> = members.users.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(ids, ["U0DEMO", "U0ALICE"]);
    let err = session
        .usergroups_users_list(&list("S0NONE"))
        .await
        .unwrap_err();
    assert_eq!(api_error_code(err), "no_such_subteam");
    assert!(standin
        .calls_to("usergroups.users.list")
        .iter()
        .all(|c| c.authorization_ok));

    for code in ["plan_upgrade_required", "missing_scope"] {
        let failing = start(StandInOptions {
            usergroups: vec![("S0OPS".into(), vec!["U0DEMO".into()])],
            usergroups_error: Some(code.into()),
            ..StandInOptions::default()
        })
        .await;
        let err = client(&failing)
            .open_session(&bot())
            .usergroups_users_list(&list("S0OPS"))
            .await
            .unwrap_err();
        assert_eq!(api_error_code(err), code);
    }
}

#[tokio::test]
async fn an_overlong_button_is_refused_as_invalid_blocks() {
    let standin = start(StandInOptions::default()).await;
    let mut button = restart_button();
    button["value"] = json!("v".repeat(2001));
    let content: SlackMessageContent = serde_json::from_value(json!({"text": "t", "attachments": [
        {"color": "#2EB67D", "blocks": [{"type": "actions", "elements": [button]}]}
    ]}))
    .unwrap();
    let err = client(&standin)
        .open_session(&bot())
        .chat_post_message(&SlackApiChatPostMessageRequest::new("#ops".into(), content))
        .await
        .unwrap_err();
    assert_eq!(api_error_code(err), "invalid_blocks");
    let call = &standin.calls_to("chat.postMessage")[0];
    assert!(standin.channel("ops").is_empty());
    assert_eq!(call.error.as_deref(), Some("invalid_blocks"));
}
