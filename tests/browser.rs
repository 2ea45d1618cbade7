//! The preview page in a real browser: the listener binary posts cards to the Slack
//! stand-in, headless Chromium loads the page (scripts run), and the rendered DOM must
//! hold the cards (process, state, host, colour bar) and the thread replies — and a
//! `<script>` smuggled in through a process name must stay text, never run.
//!
//! Chromium is Debian's (`scripts/test` installs it through `scripts/test-env`).
//! Without it the tests skip with a message, except under CI (`CI` set), where a
//! missing browser is a failure. `CHROMIUM=/path` picks another binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pipe::PipeListener;
use common::slack::{header, options, FAST, FAST_UPDATES};
use supervisor_slack::card::color;
use supervisor_slack::standin::StandIn;
use supervisor_slack::supervisord::event::State;

/// The injected name: if the page ever let it become a tag, the title would change.
const EVIL: &str = r#"<script>document.title="pwned"</script>"#;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// The browser, or `None` (with a message) when the test should skip.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match find_chromium() {
        Some(p) => Some(p),
        None if under_ci() => panic!(
            "chromium is not installed, and CI is set: the browser tests must run in CI \
             (scripts/test installs it with TEST_ENV_CHROMIUM=1 scripts/test-env)"
        ),
        None => {
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: chromium is not installed (TEST_ENV_CHROMIUM=1 scripts/test-env \
                 installs it; under CI this is a failure)"
            );
            None
        }
    }
}

/// Loads `url` in headless Chromium and returns the DOM after the page's scripts ran.
fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("dom.html");
    let err_path = out_dir.path().join("chromium.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ])
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
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}board = true\n"),
    );
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
