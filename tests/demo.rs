//! `scripts/demo`, the README's first command, end to end (with the test build of the
//! binary instead of a release build): it starts a real supervisord and the preview,
//! the cards of its sample programs reach the page (the crash loop's thread names the
//! postgres error from stderr), running it again restarts cleanly, and
//! `scripts/demo stop` leaves nothing running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{alive, SLACK_BIN as BIN};

fn demo(dir: &Path, args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(root.join("scripts/demo"))
        .args(args)
        .env("DEMO_DIR", dir)
        .env("SUPERVISOR_SLACK_BIN", BIN)
        .env("CI", "true")
        .env("SUPERVISOR_SLACK_HOST", "demo-host")
        .env_remove("SLACK_TOKEN")
        .env_remove("SLACK_TOKEN_FILE")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_CHANNEL")
        .env_remove("SLACK_API_URL")
        .env_remove("SUPERVISOR_SLACK_CONFIG")
        .env_remove("DEMO_PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Stops the demo even when an assertion fails.
struct Guard(PathBuf);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = demo(&self.0, &["stop"]);
    }
}

fn pid(dir: &Path, file: &str) -> u32 {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

fn get(port: u16, path: &str) -> Option<String> {
    common::http::get(port, path).ok().map(|(_, body)| body)
}

fn post(port: u16, path: &str, json: &str) -> Option<String> {
    common::http::post_json(port, path, json).ok().map(|(_, body)| body)
}

fn started(dir: &Path) -> (u16, String) {
    let out = demo(dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "scripts/demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("scripts/demo stop"),
        "says how to stop: {stdout}"
    );
    let port = stdout
        .split("Open http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no page address in: {stdout}"));
    (port, stdout)
}

#[test]
fn the_demo_shows_its_programs_restarts_cleanly_and_stops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let _guard = Guard(dir.clone());

    let (first_port, _) = started(&dir);
    let (first_sv, first_preview) = (pid(&dir, "supervisord.pid"), pid(&dir, "preview.pid"));
    assert!(alive(first_sv) && alive(first_preview));
    let conf = std::fs::read_to_string(dir.join("supervisord.conf")).unwrap();
    for line in [
        "events=PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP",
        "buffer_size=1024",
        "priority=-100",
        "stdout_logfile=NONE",
        &format!("SLACK_API_URL=\"http://127.0.0.1:{first_port}/api\""),
        "SLACK_TOKEN=\"xoxb-demo\"",
        "SLACK_CHANNEL=\"#ops\"",
    ] {
        assert!(
            conf.contains(line),
            "supervisord.conf has {line:?}:\n{conf}"
        );
    }

    // Again: the first supervisord and preview are stopped, new ones run.
    let (port, _) = started(&dir);
    assert!(!alive(first_sv), "the first supervisord was stopped");
    assert!(!alive(first_preview), "the first preview was stopped");
    let (sv, preview) = (pid(&dir, "supervisord.pid"), pid(&dir, "preview.pid"));
    assert!(alive(sv) && alive(preview));

    // The cards arrive: web RUNNING, worker FATAL with the postgres error, migrate done.
    let deadline = Instant::now() + Duration::from_secs(90);
    let threads = loop {
        let body = get(port, "/api/_channel/ops").unwrap_or_default();
        let all = body.contains("web RUNNING on demo-host")
            && body.contains("worker FATAL on demo-host")
            && body.contains("migrate EXITED on demo-host")
            && body.contains("reports EXITED on demo-host")
            && body.contains("cannot connect to postgres at 10.0.0.5:5432")
            // Parents go final before their replies: wait for the crash reply too.
            && body.contains("KeyError");
        if all {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's cards did not all arrive in 90 s: {body}\nlistener log:\n{}",
            std::fs::read_to_string(dir.join("listener.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        threads.contains("KeyError"),
        "the reports crash shows its traceback"
    );

    // Restart pressed on web's card, as the page sends it (the page's user U0DEMO is
    // the demo's allowed user): supervisord restarts web, its thread says who asked.
    let web_pid = || {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join(".venv/bin/supervisorctl"))
            .args(["-c", dir.join("supervisord.conf").to_str().unwrap(), "pid", "web"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = web_pid();
    let parsed: serde_json::Value = serde_json::from_str(&threads).unwrap();
    let web = parsed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["parent"].to_string().contains("web RUNNING on demo-host"))
        .expect("web's thread");
    let ts = web["parent"]["ts"].as_str().unwrap();
    let body = serde_json::json!({"user": "U0DEMO", "channel": "#ops", "message_ts": ts, "action_id": "restart"});
    let answer = post(port, "/api/_socket/click", &body.to_string()).expect("the click is answered");
    assert!(answer.contains("\"acked\":[true]"), "the listener acked the click: {answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get(port, "/api/_channel/ops").unwrap_or_default();
        if body.contains("requested by <@U0DEMO>") && body.contains("RUNNING* again") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restart is not audited in web's thread: {body}\nlistener log:\n{}",
            std::fs::read_to_string(dir.join("listener.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(web_pid(), before, "supervisord restarted web");

    let out = demo(&dir, &["stop"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(sv) || alive(preview)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(sv), "supervisord stopped");
    assert!(!alive(preview), "the preview stopped");
    assert!(get(port, "/").is_none(), "the page is gone");
    assert!(
        !dir.join("supervisor.sock").exists(),
        "supervisord cleaned up its socket"
    );
    // Stopping twice is fine.
    assert!(demo(&dir, &["stop"]).status.success());
}
