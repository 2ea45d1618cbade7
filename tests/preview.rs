//! `supervisor-slack preview`, the real binary: it announces its addresses on stdout,
//! serves the page and the API, takes a listener's cards, and stops cleanly on SIGTERM
//! and Ctrl-C (SIGINT).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::SLACK_BIN as BIN;

struct Preview {
    child: Child,
    line: String,
    port: u16,
}

impl Preview {
    fn start(args: &[&str]) -> Preview {
        let mut child = Command::new(BIN)
            .arg("preview")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("SLACK_API_URL=http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no SLACK_API_URL in preview's first line: {line:?}"));
        Preview { child, line, port }
    }

    fn get(&self, path: &str) -> String {
        get(self.port, path)
    }

    /// `kill -SIG`, then waits (5 s at most) for it to stop; returns its status.
    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        assert!(common::signal(self.child.id(), sig), "kill -{sig}");
        common::wait_exit(&mut self.child, Duration::from_secs(5))
    }
}

impl Drop for Preview {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path`, which must answer 200; returns the body.
fn get(port: u16, path: &str) -> String {
    let (head, body) = common::http::get(port, path).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body
}

#[test]
fn preview_announces_page_and_api_and_stops_on_sigterm() {
    let mut p = Preview::start(&[]);
    assert!(
        p.line
            .contains(&format!("open http://127.0.0.1:{}/ ", p.port)),
        "{}",
        p.line
    );
    let page = p.get("/");
    assert!(page.contains("Slack stand-in"), "the page: {page}");
    assert!(page.contains(&format!("http://127.0.0.1:{}/api", p.port)));
    let status = p.signal("TERM");
    assert!(status.success(), "exit status on SIGTERM: {status}");
    assert!(
        TcpStream::connect(("127.0.0.1", p.port)).is_err(),
        "the port is closed after SIGTERM"
    );
}

#[test]
fn preview_stops_cleanly_on_ctrl_c() {
    let mut p = Preview::start(&[]);
    let status = p.signal("INT");
    assert!(status.success(), "exit status on SIGINT: {status}");
}

#[test]
fn preview_takes_the_port_it_is_given_and_says_so_when_it_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["preview", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing announced on a failed start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("in use"),
        "stderr names the port and the reason: {stderr}"
    );
    drop(taken);

    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = Preview::start(&["--port", &free.to_string()]);
    assert_eq!(p.port, free);
}

#[test]
fn a_listener_pointed_at_the_preview_shows_its_cards_on_the_page() {
    let p = Preview::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let api = format!("http://127.0.0.1:{}/api", p.port);
    let mut l = common::pipe::PipeListener::start(dir.path(), &api, "");
    l.state("web", "STOPPED", "STARTING");
    l.state("web", "STARTING", "RUNNING");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = p.get("/?channel=ops");
        // The two changes may come as two replies or as one reply holding both.
        if page.contains("web RUNNING on web-1")
            && page.contains("Last reply")
            && page.contains("STARTING")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cards never reached the page: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The page's views, through the real server's query parsing.
    let threads: serde_json::Value = serde_json::from_str(&p.get("/api/_channel/ops")).unwrap();
    let ts = threads[0]["parent"]["ts"].as_str().unwrap().to_string();
    let one = p.get(&format!("/?thread={ts}"));
    assert!(one.contains("web RUNNING on web-1") && one.contains("\" open>"));
    assert!(one.contains("<header class=\"top\">Thread"));
    let folded = p.get("/?channel=ops&collapsed=1");
    assert!(folded.contains("web RUNNING on web-1") && !folded.contains("\" open>"));
}

/// Sends raw bytes to the preview; returns the whole answer.
fn raw(port: u16, request: &str) -> String {
    common::http::raw(port, request).unwrap()
}

#[test]
fn the_preview_answers_only_loopback_hosts_and_posts_only_by_post() {
    let p = Preview::start(&[]);
    let token = "xoxb-preview";
    let post = format!("/api/chat.postMessage?channel=ops&text=planted+by+a+link&token={token}");
    // A page of another site that re-pointed its name at 127.0.0.1 (DNS rebinding).
    let evil = raw(
        p.port,
        "GET /api/_calls HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(evil.starts_with("HTTP/1.1 421"), "{evil}");
    assert!(!evil.contains("\"method\""), "no data: {evil}");
    // A state change by GET (a link, an <img>): refused, nothing posted.
    let by_get = raw(
        p.port,
        &format!(
            "GET {post} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            p.port
        ),
    );
    assert!(by_get.starts_with("HTTP/1.1 405"), "{by_get}");
    assert_eq!(
        p.get("/api/_calls"),
        "[]",
        "the refused GET changed nothing"
    );
    assert!(!p.get("/?channel=ops").contains("planted"));
    // The same call by POST from loopback is a post.
    let body = "channel=ops&text=posted";
    let by_post = raw(
        p.port,
        &format!(
            "POST /api/chat.postMessage HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            p.port,
            body.len()
        ),
    );
    assert!(
        by_post.starts_with("HTTP/1.1 200") && by_post.contains("\"ok\":true"),
        "{by_post}"
    );
    assert!(p.get("/?channel=ops").contains("posted"));
}
