//! The page's tests: what `render` / `render_view` draw from plain channel views.

use super::*;
use serde_json::json;

fn message(ts: &str, attachments: Value) -> Message {
    Message {
        ts: ts.into(),
        thread_ts: None,
        text: Some("fallback".into()),
        blocks: None,
        attachments: Some(attachments),
        metadata: None,
        reply_broadcast: false,
        edited: None,
        edits: 0,
        pinned: false,
    }
}

#[test]
fn a_parent_with_a_reply_renders_header_fields_and_thread() {
    let parent = message(
        "1700000000.000100",
        json!([{"color": "#2EB67D", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*host*\nalpha"}]}
        ]}]),
    );
    let mut reply = message("1700000001.000100", json!([]));
    reply.thread_ts = Some(parent.ts.clone());
    reply.text = Some("went _STARTING_".into());
    let view = ChannelView {
        id: "C0STANDIN1".into(),
        name: Some("ops".into()),
        threads: vec![Thread {
            parent: parent.clone(),
            replies: vec![reply],
        }],
        flow: vec![parent],
        ephemerals: vec![],
    };
    let html = render(&[view], None, "http://127.0.0.1:1/api");
    assert!(html.contains("background:#2EB67D"));
    assert!(html.contains("<div class=\"hdr\">web RUNNING</div>"));
    assert!(html.contains("<b>host</b><br>alpha"));
    assert!(html.contains("1 reply"));
    assert!(html.contains("went <i>STARTING</i>"));
}

fn two_threads() -> ChannelView {
    let web = message(
        "1700000000.000100",
        json!([{"color": "#2EB67D", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}}
        ]}]),
    );
    let worker = message(
        "1700000002.000100",
        json!([{"color": "#E01E5A", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "worker FATAL"}}
        ]}]),
    );
    let reply = |ts: &str, parent: &Message, text: &str| {
        let mut r = message(ts, json!([]));
        r.thread_ts = Some(parent.ts.clone());
        r.text = Some(text.into());
        r
    };
    ChannelView {
        id: "C0STANDIN1".into(),
        name: Some("ops".into()),
        threads: vec![
            Thread {
                parent: web.clone(),
                replies: vec![reply("1700000001.000100", &web, "web went up")],
            },
            Thread {
                parent: worker.clone(),
                replies: vec![
                    reply("1700000003.000100", &worker, "worker BACKOFF"),
                    reply("1700000004.000100", &worker, "worker FATAL: postgres"),
                ],
            },
        ],
        flow: vec![web, worker],
        ephemerals: vec![],
    }
}

#[test]
fn thread_view_shows_that_thread_alone_unfolded() {
    let view = View {
        thread: Some("1700000002.000100"),
        ..View::default()
    };
    let html = render_view(&[two_threads()], &view, "http://x/api");
    assert!(html.contains("worker FATAL"));
    assert!(html.contains("worker BACKOFF") && html.contains("worker FATAL: postgres"));
    assert!(html.contains("id=\"t1700000002-000100\" open"));
    assert!(
        !html.contains("web RUNNING"),
        "the other thread is not shown"
    );
    assert!(!html.contains("web went up"));
    assert!(html.contains("href=\"/?channel=C0STANDIN1\"># ops</a> · 2 replies"));
}

#[test]
fn an_unknown_thread_says_so_with_the_ts_escaped() {
    let view = View {
        thread: Some("<b>1.2</b>"),
        channel: Some("ops"),
        ..View::default()
    };
    let html = render_view(&[two_threads()], &view, "http://x/api");
    assert!(html.contains("No thread starts at ts &lt;b&gt;1.2&lt;/b&gt;"));
    assert!(!html.contains("<b>1.2</b>"));
    assert!(!html.contains("web RUNNING"));
}

#[test]
fn collapsed_folds_every_thread_and_the_default_unfolds_them() {
    let folded = render_view(
        &[two_threads()],
        &View {
            collapsed: true,
            ..View::default()
        },
        "http://x/api",
    );
    assert!(folded.contains("web RUNNING") && folded.contains("worker FATAL"));
    assert!(folded.contains("2 replies"));
    assert!(!folded.contains("\" open>"), "no thread unfolded");
    let open = render(&[two_threads()], None, "http://x/api");
    assert_eq!(open.matches("\" open>").count(), 2);
}

#[test]
fn legacy_attachments_and_unknown_blocks_render_escaped() {
    let evil = "<script>x</script>";
    let m = message(
        "1700000000.000100",
        json!([
            {"color": "danger", "title": evil, "text": "*t*",
             "fields": [{"title": "a", "value": "_b_"}], "footer": "foot"},
            {"color": "#abc", "blocks": [
                {"type": evil},
                {"type": "context", "elements": [{"type": "image", "alt_text": evil}]},
                {"type": "divider"}
            ]}
        ]),
    );
    let view = ChannelView {
        id: "C1".into(),
        name: None,
        threads: vec![Thread {
            parent: m.clone(),
            replies: vec![],
        }],
        flow: vec![m],
        ephemerals: vec![],
    };
    let html = render(&[view], None, "http://x/api");
    assert!(html.contains("style=\"background:#a30200\""));
    assert!(html.contains("<div class=\"hdr\">&lt;script&gt;x&lt;/script&gt;</div>"));
    assert!(html.contains("<div class=\"section\"><b>t</b></div>"));
    assert!(html.contains("<div><b>a</b><br><i>b</i></div>"));
    assert!(html.contains("<div class=\"context\">foot</div>"));
    assert!(html.contains("[&lt;script&gt;x&lt;/script&gt; block]"));
    assert!(html.contains("<span>[&lt;script&gt;x&lt;/script&gt;]</span>"));
    assert!(html.contains("<hr>"));
    assert_eq!(html.matches("<script>").count(), 1, "only the page's own");
}

#[test]
fn an_empty_stand_in_says_nothing_was_posted() {
    let html = render(&[], None, "http://127.0.0.1:9/api");
    assert!(html.contains("<title>Slack stand-in</title>"));
    assert!(html.contains("Nothing has been posted to the stand-in yet."));
    assert!(html.contains("API: http://127.0.0.1:9/api"));
}

#[test]
fn buttons_render_with_style_confirm_and_every_string_escaped() {
    let evil = "\"><script>x</script>";
    let m = message(
        "1700000000.000100",
        json!([{"color": "#2EB67D", "blocks": [
            {"type": "actions", "elements": [
                {"type": "button", "action_id": "restart", "value": evil, "style": "danger",
                 "text": {"type": "plain_text", "text": evil},
                 "confirm": {"title": {"type": "plain_text", "text": evil},
                             "text": {"type": "plain_text", "text": "Restart web?"},
                             "confirm": {"type": "plain_text", "text": "Restart"},
                             "deny": {"type": "plain_text", "text": "No"}}},
                {"type": "button", "action_id": "logs", "style": "primary; color:red",
                 "text": {"type": "plain_text", "text": "Logs"}},
                {"type": "static_select", "action_id": "pick"}
            ]}
        ]}]),
    );
    let view = ChannelView {
        id: "C1".into(),
        name: Some("ops".into()),
        threads: vec![Thread {
            parent: m.clone(),
            replies: vec![],
        }],
        flow: vec![m],
        ephemerals: vec![],
    };
    let html = render_view(
        &[view],
        &View {
            page_user: "U0DEMO",
            ..View::default()
        },
        "http://x/api",
    );
    let escaped = "&quot;&gt;&lt;script&gt;x&lt;/script&gt;";
    assert!(html.contains(&format!(
        "<button type=\"button\" class=\"btn danger\" data-action-id=\"restart\" \
         data-value=\"{escaped}\" data-confirm-title=\"{escaped}\" \
         data-confirm-text=\"Restart web?\" data-confirm-yes=\"Restart\" data-confirm-no=\"No\">{escaped}</button>"
    )), "{html}");
    assert!(
        html.contains(
            "<button type=\"button\" class=\"btn\" data-action-id=\"logs\">Logs</button>"
        ),
        "no value, no confirm, an unknown style is the default look"
    );
    assert!(html.contains("<span class=\"context\">[static_select]</span>"));
    assert!(html.contains("<body data-user=\"U0DEMO\">"));
    assert!(html.contains("<div id=\"flow\" data-channel=\"C1\">"));
    assert_eq!(html.matches("<script>").count(), 1, "only the page's own");
}

#[test]
fn the_page_users_ephemerals_show_in_the_flow_and_in_their_thread() {
    let mut view = two_threads();
    let ephemeral = |ts: &str, thread_ts: Option<&str>, text: &str| Ephemeral {
        channel: "C0STANDIN1".into(),
        user: "U0DEMO".into(),
        text: Some(text.into()),
        thread_ts: thread_ts.map(str::to_owned),
        blocks: None,
        attachments: None,
        ts: ts.into(),
    };
    view.ephemerals = vec![
        ephemeral("1700000001.500000", None, "only <@U0DEMO> sees this"),
        ephemeral(
            "1700000003.500000",
            Some("1700000002.000100"),
            "restarting worker",
        ),
    ];
    let users = [("U0DEMO".to_string(), "demo".to_string())];
    let html = render_view(
        &[view],
        &View {
            users: &users,
            ..View::default()
        },
        "http://x/api",
    );
    assert_eq!(html.matches("Only visible to you").count(), 2);
    assert!(html.contains("only <span class=\"mention\">@demo</span> sees this"));
    let web = html.find("web RUNNING").unwrap();
    let flow_note = html.find("only <span").unwrap();
    let worker = html.find("worker FATAL<").unwrap();
    assert!(
        web < flow_note && flow_note < worker,
        "in ts order in the flow"
    );
    let backoff = html.find("worker BACKOFF").unwrap();
    let thread_note = html.find("restarting worker").unwrap();
    let postgres = html.find("worker FATAL: postgres").unwrap();
    assert!(
        backoff < thread_note && thread_note < postgres,
        "in ts order in its thread"
    );
    assert!(
        html.contains("3 replies"),
        "the thread counts what the reader sees"
    );
}

#[test]
fn a_channel_has_a_message_box_for_slash_commands_and_an_empty_page_none() {
    let html = render(&[two_threads()], Some("ops"), "http://127.0.0.1:1/api");
    assert!(html.contains("<form id=\"composer\""), "{html}");
    assert!(html.contains("placeholder=\"Message #ops — /supervisor status"));
    assert!(html.contains("fetch('/api/_socket/command'"), "the box sends commands over the stand-in");
    let empty = render(&[], None, "http://127.0.0.1:1/api");
    assert!(!empty.contains("<form id=\"composer\""));
}
