//! The preview page in a real browser: the listener binary posts cards to the Slack
//! stand-in, headless Chromium loads the page (scripts run), and the rendered DOM must
//! hold the cards (process, state, host, colour bar) and the thread replies — and a
//! `<script>` smuggled in through a process name must stay text, never run. A button
//! clicked on the page (through the DevTools protocol, [`common::cdp`]) reaches a
//! Socket Mode app connected to the stand-in.
//!
//! Chromium is Debian's (`scripts/test` installs it through `scripts/test-env`).
//! Without it the tests skip with a message, except under CI (`CI` set), where a
//! missing browser is a failure. `CHROMIUM=/path` picks another binary.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cdp::{chromium_or_skip, Browser, HEADLESS};
use common::pipe::PipeListener;
use common::slack::{header, options, standin_and_listener, FAST, FAST_UPDATES, TOKEN};
use common::socket::{client, SocketApp, APP_TOKEN};
use serde_json::json;
use slack_morphism::prelude::*;
use supervisor_slack::card::color;
use supervisor_slack::standin::StandIn;
use supervisor_slack::supervisord::event::State;

/// The injected name: if the page ever let it become a tag, the title would change.
const EVIL: &str = r#"<script>document.title="pwned"</script>"#;

/// Loads `url` in headless Chromium and returns the DOM after the page's scripts ran.
fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("dom.html");
    let err_path = out_dir.path().join("chromium.log");
    let mut child = Command::new(chromium)
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium took over 60 s on {url}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        status.success() && dom.contains("</html>"),
        "chromium {status} gave no DOM for {url}: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    dom
}

/// Posts three processes' cards through the real listener and waits until the
/// stand-in holds them all: `web` RUNNING, `worker` crash-looping into FATAL, and a
/// process whose name is a `<script>` tag.
async fn post_cards(standin: &StandIn, dir: &Path) -> PipeListener {
    let mut l = PipeListener::start(dir, &standin.api_url(), &format!("{FAST}{FAST_UPDATES}"));
    l.state("web", "STOPPED", "STARTING");
    l.state("web", "STARTING", "RUNNING");
    l.state("worker", "STOPPED", "STARTING");
    l.state("worker", "STARTING", "BACKOFF");
    l.state("worker", "BACKOFF", "STARTING");
    l.state("worker", "STARTING", "BACKOFF");
    l.state("worker", "BACKOFF", "FATAL");
    l.state(EVIL, "STOPPED", "STARTING");
    let done = standin
        .wait_for(Duration::from_secs(30), |s| {
            let threads = s.channel("#ops");
            let heads: Vec<String> = threads.iter().map(header).collect();
            let replies: usize = threads.iter().map(|t| t.replies.len()).sum();
            threads.len() == 3
                && heads.iter().any(|h| h.contains("web RUNNING"))
                && heads.iter().any(|h| h.contains("worker FATAL"))
                && heads
                    .iter()
                    .any(|h| h.contains("&lt;script&gt;") || h.contains(EVIL))
                && replies >= 3
        })
        .await;
    let heads: Vec<String> = standin.channel("#ops").iter().map(header).collect();
    assert!(done, "the cards never all arrived: {heads:?}");
    // Replies may still be on their way after the parents show their last state:
    // wait until the stand-in has had no call for a second, so that a snapshot taken
    // now is what the page shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = standin.calls().len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if standin.calls().len() == before || Instant::now() > deadline {
            break;
        }
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_shows_cards_threads_and_never_runs_an_injected_script() {
    let Some(chromium) = chromium_or_skip(
        "the_page_in_chromium_shows_cards_threads_and_never_runs_an_injected_script",
    ) else {
        return;
    };
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _listener = post_cards(&standin, dir.path()).await;

    let url = format!("{}?channel=ops", standin.page_url());
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url))
        .await
        .unwrap();

    // The injected name is text on the page, and nothing ran.
    assert!(
        dom.contains("<title>#ops · Slack stand-in</title>"),
        "the page's title is untouched (a script that ran would have changed it): {}",
        &dom[..dom.len().min(400)]
    );
    assert!(!dom.contains("pwned</title>"));
    assert!(
        !dom.contains(EVIL),
        "the process name became a <script> element"
    );
    assert!(
        dom.contains("&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;"),
        "the process name is shown as text"
    );
    assert_eq!(
        dom.matches("<script>").count(),
        1,
        "only the page's own script"
    );

    // Every card: process, state, host, colour bar.
    for want in ["web RUNNING on web-1", "worker FATAL on web-1"] {
        assert!(dom.contains(want), "{want:?} is on the page");
    }
    assert!(dom.contains("<b>Host</b><br>web-1") || dom.contains("web-1"));
    assert!(
        dom.contains(&format!(
            "style=\"background:{}\"",
            color(State::Fatal, None)
        )),
        "worker's parent carries FATAL's colour bar"
    );
    assert!(dom.contains(&format!(
        "style=\"background:{}\"",
        color(State::Running, None)
    )));

    // The threads, unfolded, with their replies.
    assert!(dom.contains("class=\"thread\""), "threads on the page");
    assert!(dom.contains("BACKOFF"), "worker's crash loop in its thread");
    assert!(dom.contains("Last reply"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_in_chromium_holds_its_parent_and_every_reply_in_order() {
    let Some(chromium) =
        chromium_or_skip("one_thread_in_chromium_holds_its_parent_and_every_reply_in_order")
    else {
        return;
    };
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _listener = post_cards(&standin, dir.path()).await;
    let worker = standin
        .channel("#ops")
        .into_iter()
        .find(|t| header(t).contains("worker"))
        .unwrap();

    let url = format!("{}?thread={}", standin.page_url(), worker.parent.ts);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url))
        .await
        .unwrap();
    assert!(dom.contains("worker FATAL on web-1"));
    assert!(!dom.contains("web RUNNING on web-1"), "only this thread");
    assert!(!dom.contains("&lt;script&gt;"), "only this thread");
    let n = worker.replies.len();
    assert!(
        dom.contains(&format!("{n} {}", if n == 1 { "reply" } else { "replies" })),
        "the reply count"
    );
    // Each reply is on the page, in the thread's order.
    let positions: Vec<usize> = worker
        .replies
        .iter()
        .map(|r| {
            let id = format!("id=\"m{}\"", r.ts.replace('.', "-"));
            dom.find(&id)
                .unwrap_or_else(|| panic!("reply {} is on the page", r.ts))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "replies in order"
    );
    assert!(dom.contains("STARTING") && dom.contains("BACKOFF") && dom.contains("FATAL"));
}

/// The board on the page: its summary, failing process first, and the compact
/// one-line reply of a routine change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_and_compact_replies_in_chromium() {
    let Some(chromium) = chromium_or_skip("the_board_and_compact_replies_in_chromium") else {
        return;
    };
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}board = true\n")).await;
    l.state("web", "STARTING", "RUNNING");
    l.state("worker", "BACKOFF", "FATAL");
    let done = standin
        .wait_for(Duration::from_secs(30), |s| {
            s.channel("#ops")
                .iter()
                .any(|t| header(t) == "🖥 web-1: 1 FATAL, 1 running")
        })
        .await;
    assert!(done, "{:?}", standin.channel("#ops").iter().map(header).collect::<Vec<_>>());
    let url = format!("{}?channel=ops", standin.page_url());
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url))
        .await
        .unwrap();
    assert!(dom.contains("🖥 web-1: 1 FATAL, 1 running"), "the board's summary");
    let fatal = dom.find("<b>worker</b> FATAL").expect("worker on the board");
    let running = dom.find("<b>web</b> RUNNING").expect("web on the board");
    assert!(fatal < running, "failing first");
    assert!(dom.contains("from the events seen"));
    // The routine reply is one line: its change, process and host together.
    assert!(dom.contains("<b>STARTING → RUNNING</b> · web on <b>web-1</b>"), "compact reply");
    l.close();
}

/// A button on the page, clicked in Chromium: its `confirm` dialog first (deny sends
/// nothing), then the click reaches the Socket Mode app with the button's `action_id`
/// and `value`, as the page's user — after a refresh has redrawn the buttons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_clicked_in_chromium_reaches_the_socket_mode_app_after_its_confirm() {
    let Some(chromium) =
        chromium_or_skip("a_button_clicked_in_chromium_reaches_the_socket_mode_app_after_its_confirm")
    else {
        return;
    };
    let standin = StandIn::start(options()).await.unwrap();
    let app = SocketApp::start(&standin, APP_TOKEN, 2).await;
    assert!(standin.wait_for_sockets(2, Duration::from_secs(10)).await);
    let (api, token) = (client(&standin), SlackApiToken::new(TOKEN.into()));
    let session = api.open_session(&token);
    // A value a page could garble: quotes, angle brackets, an ampersand.
    let value = r#"web-1|web "<b>"&'"#;
    let card: SlackMessageContent = serde_json::from_value(json!({
        "text": "web RUNNING",
        "attachments": [{"color": "#2EB67D", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}},
            {"type": "actions", "block_id": "card", "elements": [
                {"type": "button", "action_id": "restart", "value": value, "style": "danger",
                 "text": {"type": "plain_text", "text": "Restart"},
                 "confirm": {"title": {"type": "plain_text", "text": "Restart web?"},
                             "text": {"type": "plain_text", "text": "web is RUNNING on web-1."},
                             "confirm": {"type": "plain_text", "text": "Restart"},
                             "deny": {"type": "plain_text", "text": "Keep it"}}},
                {"type": "button", "action_id": "logs", "value": "tail",
                 "text": {"type": "plain_text", "text": "Tail log"}}
            ]}
        ]}]
    }))
    .unwrap();
    let post = |content: SlackMessageContent| {
        SlackApiChatPostMessageRequest::new("#ops".into(), content)
    };
    let posted = session.chat_post_message(&post(card)).await.unwrap();

    let url = format!("{}?channel=ops", standin.page_url());
    let mut page = Browser::open(&chromium, &url).await;
    let restart = r#"document.querySelector('button[data-action-id="restart"]')"#;
    let wait = Duration::from_secs(30);
    assert!(page.wait_for(restart, wait).await, "the button is drawn");
    // The next refresh replaces the flow: the buttons clicked below are the redrawn ones.
    session
        .chat_post_message(&post(SlackMessageContent::new().with_text("later news".into())))
        .await
        .unwrap();
    let flow_has = |text: &str| format!("document.getElementById('flow').textContent.includes({text:?})");
    assert!(page.wait_for(&flow_has("later news"), wait).await, "the page refreshed");

    let dialog_open = "document.getElementById('confirm').open";
    page.eval(&format!("{restart}.click()")).await;
    assert!(page.wait_for(dialog_open, wait).await, "the confirm dialog opens");
    let shown = page
        .eval("['confirm-title','confirm-text','confirm-yes','confirm-no'].map(id => document.getElementById(id).textContent)")
        .await;
    assert_eq!(shown, json!(["Restart web?", "web is RUNNING on web-1.", "Restart", "Keep it"]));
    page.eval("document.getElementById('confirm-no').click()").await;
    assert!(page.wait_for(&format!("!{dialog_open}"), wait).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.clicks().is_empty(), "deny sends nothing");

    page.eval(&format!("{restart}.click()")).await;
    assert!(page.wait_for(dialog_open, wait).await);
    page.eval("document.getElementById('confirm-yes').click()").await;
    let clicks = app.wait_for_clicks(1, Duration::from_secs(10)).await;
    assert_eq!(clicks.len(), 1, "one click reached the app");
    let click = &clicks[0];
    let action = &click.actions.as_ref().unwrap()[0];
    assert_eq!(action.action_id.0, "restart");
    assert_eq!(action.value.as_deref(), Some(value));
    assert_eq!(click.user.as_ref().unwrap().id.0, "U0DEMO", "the page's user");
    assert_eq!(click.message.as_ref().unwrap().origin.ts, posted.ts);
    let status = "document.getElementById('status').textContent";
    assert!(
        page.wait_for(&format!("{status} === 'sent to the listener'"), wait).await,
        "the page says so: {}",
        page.eval(status).await
    );

    // A button without a dialog sends at once.
    page.eval(r#"document.querySelector('button[data-action-id="logs"]').click()"#)
        .await;
    let clicks = app.wait_for_clicks(2, Duration::from_secs(10)).await;
    let action = &clicks[1].actions.as_ref().unwrap()[0];
    assert_eq!((action.action_id.0.as_str(), action.value.as_deref()), ("logs", Some("tail")));
    app.stop().await;
}
