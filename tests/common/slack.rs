//! The Slack stand-in ([`supervisor_slack::standin`]) as the tests use it: Slack's
//! limits scaled down tenfold, listener settings that match them, and reading back
//! what Slack received (threads, the serials replies report, the process a parent is
//! about).

use std::path::{Path, PathBuf};
use std::time::Duration;

use supervisor_slack::standin::{Message, StandIn, StandInOptions, Thread};

use super::pipe::PipeListener;
use super::supervisord::ListenerEntry;
use super::SLACK_BIN;

/// The test token: no stderr may ever contain it.
pub const TOKEN: &str = "xoxb-1111-2222-secretsecretsecret";

/// Listener settings for fast tests: Slack's pace scaled down tenfold.
pub const FAST: &str = r#"
post_interval = "100ms"
post_burst = 2
setup_retry = "300ms"
retry_max = "1s"
call_timeout = "2s"
digest_interval = "2s"
settle_after = "5s"
"#;

/// With [`FAST`]: edits as fast as [`options`] lets them through.
pub const FAST_UPDATES: &str = "updates_per_minute = 600\n";

/// The stand-in with Slack's limits scaled down tenfold, like [`FAST`].
pub fn options() -> StandInOptions {
    StandInOptions {
        post_interval: Duration::from_millis(100),
        burst: 3,
        updates_per_minute: 600,
        ..StandInOptions::default()
    }
}

/// The stand-in with [`options`], and a [`PipeListener`] posting to it with
/// `settings`, its state and logs in a temp dir of their own (returned, to keep).
pub async fn standin_and_listener(settings: &str) -> (StandIn, tempfile::TempDir, PipeListener) {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let l = PipeListener::start(dir.path(), &standin.api_url(), settings);
    (standin, dir, l)
}

/// Writes `dir/settings.toml`: channel `#ops`, host `web-1`, then `extra` (TOML).
/// Returns its path, for `--config`.
pub fn write_settings(dir: &Path, extra: &str) -> PathBuf {
    write_settings_for("web-1", dir, extra)
}

/// [`write_settings`] for the host labelled `host`.
pub fn write_settings_for(host: &str, dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("settings.toml");
    std::fs::write(
        &path,
        format!("channel = \"#ops\"\nhost = \"{host}\"\n{extra}"),
    )
    .unwrap();
    path
}

/// Waits up to `secs` until `done` holds for what the stand-in received; panics
/// naming `what` when it does not.
pub async fn wait(standin: &StandIn, secs: u64, what: &str, done: impl Fn(&StandIn) -> bool) {
    assert!(
        standin.wait_for(Duration::from_secs(secs), done).await,
        "timed out waiting for: {what}"
    );
}

/// Waits (10 s at most) until `#ops` holds a thread with a reply.
pub async fn first_reply(standin: &StandIn) {
    wait(standin, 10, "the first reply", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
}

/// Never over Slack's limits: no 429 answered, no call made while a `Retry-After`
/// was running.
pub fn assert_never_rate_limited(standin: &StandIn) {
    let limited: Vec<_> = standin
        .calls()
        .into_iter()
        .filter(|c| c.status == 429)
        .collect();
    assert!(limited.is_empty(), "429s: {limited:?}");
    assert!(standin.calls_during_retry_after().is_empty());
}

/// How many calls failed as an outage makes them fail: a 503, or no answer at all.
pub fn outage_failures(standin: &StandIn) -> usize {
    standin
        .calls()
        .iter()
        .filter(|c| c.status == 503 || c.status == 0)
        .count()
}

/// The serials a message reports in its metadata (none for a message that reports no
/// event).
pub fn serials(m: &Message) -> Vec<u64> {
    m.metadata
        .as_ref()
        .and_then(|md| md.pointer("/event_payload/serials"))
        .and_then(|v| v.as_str())
        .map(|s| s.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default()
}

/// The events' identity a reply carries in its Slack message metadata (event type
/// `supervisor_slack_event`): which host, which supervisord (`server`), which serials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub host: String,
    pub server: String,
    pub serials: Vec<u64>,
}

/// The identity in a message's metadata; `None` when it has none or of another type.
pub fn reported(m: &Message) -> Option<Reported> {
    let md = m.metadata.as_ref()?;
    if md["event_type"] != supervisor_slack::slack::METADATA_EVENT_TYPE {
        return None;
    }
    let text = |key: &str| md["event_payload"][key].as_str().map(str::to_owned);
    Some(Reported {
        host: text("host")?,
        server: text("server")?,
        serials: serials(m),
    })
}

/// The serials of a thread's replies, in reply order.
pub fn thread_serials(t: &Thread) -> Vec<u64> {
    t.replies.iter().flat_map(serials).collect()
}

/// A parent card's header, `🟢 name STATE on host`; empty when it has none.
pub fn header(t: &Thread) -> String {
    t.parent.header().unwrap_or_default()
}

/// The process a parent card is about: the name in its header (`name` or
/// `group:name`).
pub fn parent_process(t: &Thread) -> String {
    let header = header(t);
    let word = header.split_whitespace().nth(1).unwrap_or_default();
    word.rsplit(':').next().unwrap().to_string()
}

/// The state a parent card shows.
pub fn parent_state(t: &Thread) -> String {
    header(t)
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

/// Threads keyed by the process their parent is about (the last thread, when a
/// process has several).
pub fn by_process(threads: &[Thread]) -> std::collections::BTreeMap<String, Thread> {
    threads
        .iter()
        .map(|t| (parent_process(t), t.clone()))
        .collect()
}

/// Writes the listener's settings file (fast pacing, the stand-in as Slack) and
/// returns the `[eventlistener:slack]` section running the built binary with it.
pub fn slack_listener(dir: &Path, api_url: &str, extra: &str) -> ListenerEntry {
    slack_listener_for("web-1", dir, api_url, extra)
}

/// [`slack_listener`] for the host labelled `host`.
pub fn slack_listener_for(host: &str, dir: &Path, api_url: &str, extra: &str) -> ListenerEntry {
    listener_entry(host, dir, api_url, &format!("{FAST}{FAST_UPDATES}{extra}"))
}

/// [`slack_listener`] with the whole of its `settings` given (say, [`FAST`] with some
/// of its values changed).
pub fn slack_listener_with(dir: &Path, api_url: &str, settings: &str) -> ListenerEntry {
    listener_entry("web-1", dir, api_url, settings)
}

fn listener_entry(host: &str, dir: &Path, api_url: &str, settings: &str) -> ListenerEntry {
    let settings = write_settings_for(host, dir, &format!("api_url = \"{api_url}\"\n{settings}"));
    ListenerEntry::custom(&[
        SLACK_BIN,
        "--config",
        settings.to_str().unwrap(),
        "listen",
        "--state",
        dir.join("state.db").to_str().unwrap(),
    ])
    .env("SLACK_TOKEN", TOKEN)
    .env("SUPERVISOR_SLACK_LOG", "info")
}

/// A Slack that accepts connections and never answers: every socket is read and held
/// open until the value is dropped, and nothing is ever written back. (The stand-in
/// always answers in the end; this one hangs, as a Slack behind a black-holing proxy
/// does.)
pub struct HungSlack {
    addr: std::net::SocketAddr,
    shared: std::sync::Arc<HungShared>,
}

#[derive(Default)]
struct HungShared {
    /// What each connection sent, in accept order.
    received: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Every socket, to close them when dropped.
    sockets: std::sync::Mutex<Vec<std::net::TcpStream>>,
    closed: std::sync::atomic::AtomicBool,
}

impl HungSlack {
    pub fn start() -> HungSlack {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = std::sync::Arc::new(HungShared::default());
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                accepting
                    .sockets
                    .lock()
                    .unwrap()
                    .push(stream.try_clone().unwrap());
                let i = {
                    let mut r = accepting.received.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                let reading = accepting.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        reading.received.lock().unwrap()[i].extend_from_slice(&buf[..n]);
                    }
                    // The peer gave up: keep the socket until the end all the same.
                });
            }
        });
        HungSlack { addr, shared }
    }

    /// `http://127.0.0.1:PORT/api`, for `SLACK_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// The request lines received (`POST /api/chat.postMessage HTTP/1.1`), one per
    /// connection that sent one.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| {
                let text = String::from_utf8_lossy(b);
                text.lines()
                    .next()
                    .filter(|l| l.contains(" HTTP/"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Drop for HungSlack {
    fn drop(&mut self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Wakes the accepting thread so that it sees `closed`.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}
