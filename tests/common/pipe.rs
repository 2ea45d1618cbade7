//! Drives the real `supervisor-slack listen` binary the way supervisord does, over
//! pipes, for tests that need exact control of the events (order, timing, kills).
//! (A listener that a real supervisord runs is configured with
//! [`super::supervisord::ListenerEntry`] instead.)

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use supervisor_slack::supervisord::protocol::frame;

use super::slack::{write_settings, TOKEN};
use super::SLACK_BIN;

/// A `supervisor-slack listen` process with its stdin and stdout in the test's hands:
/// channel `#ops`, host `web-1`, token [`TOKEN`], its state (`state.db`) and stderr
/// (`stderr.log`) in `dir`.
pub struct PipeListener {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pub dir: PathBuf,
    serial: u64,
}

impl PipeListener {
    /// Starts a listener on `api_url` with the given extra settings (TOML), its state
    /// and logs in `dir`.
    pub fn start(dir: &Path, api_url: &str, settings: &str) -> PipeListener {
        Self::start_with(dir, api_url, settings, 0)
    }

    /// Same, continuing serial numbers from `serial` (a restarted listener).
    pub fn start_with(dir: &Path, api_url: &str, settings: &str, serial: u64) -> PipeListener {
        Self::launch(dir, api_url, settings, serial, None, None)
    }

    /// A listener whose state database is at `state` (say, on a disk of its own);
    /// settings and logs stay in `dir`.
    pub fn start_with_state(
        dir: &Path,
        api_url: &str,
        settings: &str,
        state: &Path,
    ) -> PipeListener {
        Self::launch(dir, api_url, settings, 0, None, Some(state))
    }

    /// A listener labelled `host` (instead of `web-1`): one of several hosts posting
    /// into one channel.
    pub fn start_on_host(dir: &Path, api_url: &str, settings: &str, host: &str) -> PipeListener {
        Self::launch(dir, api_url, settings, 0, Some(host), None)
    }

    fn launch(
        dir: &Path,
        api_url: &str,
        settings: &str,
        serial: u64,
        host: Option<&str>,
        state: Option<&Path>,
    ) -> PipeListener {
        let config = write_settings(dir, settings);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let mut child = Command::new(SLACK_BIN)
            .arg("--config")
            .arg(&config)
            .arg("listen")
            .arg("--state")
            .arg(state.map_or_else(|| dir.join("state.db"), Path::to_path_buf))
            .env("SLACK_TOKEN", TOKEN)
            .env("SLACK_API_URL", api_url)
            .env("SUPERVISOR_SLACK_LOG", "info,supervisor_slack=debug")
            .env_remove("SLACK_CHANNEL")
            .env_remove("SUPERVISOR_SERVER_URL")
            .env_remove("SUPERVISOR_SLACK_STATE")
            .envs(host.map(|h| ("SUPERVISOR_SLACK_HOST", h)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        expect(&mut stdout, b"READY\n");
        PipeListener {
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
        let ev = event_frame(
            "supervisor",
            self.serial,
            self.serial,
            &format!("PROCESS_STATE_{to}"),
            payload.trim_end(),
        );
        self.send(&ev);
    }

    /// Writes `bytes` (one framed event) and waits for its answer, as [`Self::state`].
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        expect(&mut self.stdout, b"RESULT 2\nOK");
        expect(&mut self.stdout, b"READY\n");
    }

    /// The serial of the last event sent.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Everything the listener logged so far (every incarnation in this `dir`).
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

impl Drop for PipeListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One event as supervisord frames it for pool `slack`: the header (`ver:3.0`,
/// `server`, `serial`, `pool`, `poolserial`, `eventname`, `len`), then the payload.
pub fn event_frame(
    server: &str,
    serial: u64,
    poolserial: u64,
    eventname: &str,
    payload: &str,
) -> Vec<u8> {
    frame(
        &[
            ("ver", "3.0"),
            ("server", server),
            ("serial", &serial.to_string()),
            ("pool", "slack"),
            ("poolserial", &poolserial.to_string()),
            ("eventname", eventname),
        ],
        payload,
    )
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
