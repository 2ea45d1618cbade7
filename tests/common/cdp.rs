//! Headless Chromium for tests: finding Debian's browser (skipping with a message
//! when it is missing, failing under CI), and driving a page through the DevTools
//! protocol — `--remote-debugging-port=0`, the port read from `DevToolsActivePort` in
//! the profile, one WebSocket to the browser, the page attached in flat mode, then
//! `Runtime.evaluate` for everything (reading the DOM, clicking).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{say_skipped, under_ci};

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// The browser (`CHROMIUM=/path` or `chromium` on `PATH`), or `None` (with a message)
/// when the test should skip. Under CI a missing browser is a failure.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match find_chromium() {
        Some(p) => Some(p),
        None if under_ci() => panic!(
            "chromium is not installed, and CI is set: {test} must run in CI \
             (scripts/test installs it with TEST_ENV_CHROMIUM=1 scripts/test-env)"
        ),
        None => {
            say_skipped(
                "chromium is not installed (TEST_ENV_CHROMIUM=1 scripts/test-env installs it; \
                 under CI this is a failure)",
            );
            None
        }
    }
}

/// The flags every headless run takes: no sandbox (tests may run as root), nothing
/// fetched in the background.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// A headless Chromium showing one page, driven over the DevTools protocol. Dropping
/// it kills the browser.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts `chromium` on `url` and attaches to the page.
    pub async fn open(chromium: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let child = Command::new(chromium)
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        // Two lines: the port, then the browser's WebSocket path.
        let endpoint = loop {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            if let Some((port, path)) = text.split_once('\n') {
                if !path.trim().is_empty() {
                    break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                }
            }
            let log = std::fs::read_to_string(profile.path().join("chromium.log"));
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort in 60 s: {}",
                log.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("the DevTools endpoint takes a connection");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
        };
        let page = loop {
            let targets = browser.call("Target.getTargets", json!({})).await;
            let page = targets["targetInfos"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["targetId"].as_str().map(str::to_owned));
            if let Some(page) = page {
                break page;
            }
            assert!(Instant::now() < deadline, "no page target: {targets}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// Sends a command (to the page once attached) and returns its `result`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("DevTools takes the command");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} in 30 s"))
                .expect("the DevTools connection is open")
                .expect("a readable frame");
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            // Events have no id; answers to other commands cannot be pending.
            if answer["id"] != id {
                continue;
            }
            assert!(answer["error"].is_null(), "{method} failed: {answer}");
            return answer["result"].clone();
        }
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value;
    /// panics if it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until it is truthy or `timeout` passes;
    /// returns whether it became truthy.
    pub async fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(&format!("!!({expression})")).await;
            if v == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser and its renderer, GPU and zygote processes.
        super::kill_tree(self.child.id());
        let _ = self.child.wait();
    }
}
