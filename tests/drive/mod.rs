//! Drives the real `supervisor-slack listen` binary the way supervisord does, over
//! pipes, for tests that need exact control of the events (order, timing, kills).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use supervisor_slack::supervisord::protocol::frame;

/// The test token: no stderr may ever contain it.
pub const TOKEN: &str = "xoxb-1111-2222-secretsecretsecret";

/// Settings for fast tests: Slack's pace scaled down tenfold.
pub const FAST: &str = r#"
post_interval = "100ms"
post_burst = 2
setup_retry = "300ms"
retry_max = "1s"
call_timeout = "2s"
digest_interval = "2s"
settle_after = "5s"
"#;

pub struct Listener {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pub dir: PathBuf,
    serial: u64,
}

impl Listener {
    /// Starts a listener on `api_url` with the given extra settings (TOML), its state
    /// and logs in `dir`.
    pub fn start(dir: &Path, api_url: &str, settings: &str) -> Listener {
        Self::start_with(dir, api_url, settings, 0)
    }

    /// Same, continuing serial numbers from `serial` (a restarted listener).
    pub fn start_with(dir: &Path, api_url: &str, settings: &str, serial: u64) -> Listener {
        let config = dir.join("settings.toml");
        std::fs::write(
            &config,
            format!("channel = \"#ops\"\nhost = \"web-1\"\n{settings}"),
        )
        .unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_supervisor-slack"))
            .arg("--config")
            .arg(&config)
            .arg("listen")
            .arg("--state")
            .arg(dir.join("state.db"))
            .env("SLACK_TOKEN", TOKEN)
            .env("SLACK_API_URL", api_url)
            .env("SUPERVISOR_SLACK_LOG", "info,supervisor_slack=debug")
            .env_remove("SLACK_CHANNEL")
            .env_remove("SUPERVISOR_SERVER_URL")
            .env_remove("SUPERVISOR_SLACK_STATE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        expect(&mut stdout, b"READY\n");
        Listener {
            child,
            stdin,
            stdout,
            dir: dir.to_path_buf(),
            serial,
        }
    }

    /// Sends one PROCESS_STATE event and waits for its answer (`RESULT 2\nOK`, then
    /// `READY\n`), exactly as supervisord would.
    pub fn state(&mut self, process: &str, from: &str, to: &str) {
        self.serial += 1;
        let extra = match to {
            "STARTING" | "BACKOFF" => "tries:1".to_string(),
            "EXITED" => "expected:0 pid:4242".to_string(),
            "FATAL" | "UNKNOWN" => String::new(),
            _ => "pid:4242".to_string(),
        };
        let payload =
            format!("processname:{process} groupname:{process} from_state:{from} {extra}");
        let s = self.serial.to_string();
        let ev = frame(
            &[
                ("ver", "3.0"),
                ("server", "supervisor"),
                ("serial", &s),
                ("pool", "slack"),
                ("poolserial", &s),
                ("eventname", &format!("PROCESS_STATE_{to}")),
            ],
            payload.trim_end(),
        );
        self.send(&ev);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        expect(&mut self.stdout, b"RESULT 2\nOK");
        expect(&mut self.stdout, b"READY\n");
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Closes stdin (supervisord went away) and waits for a clean exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "listener exit status {status}");
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expect(out: &mut ChildStdout, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    out.read_exact(&mut got).expect("listener stdout");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "bytes on the listener's stdout"
    );
}
