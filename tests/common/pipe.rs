//! Drives the real `supervisor-slack listen` binary the way supervisord does, over
//! pipes, for tests that need exact control of the events (order, timing, kills).
//! (A listener that a real supervisord runs is configured with
//! [`super::supervisord::ListenerEntry`] instead.)
//!
//! Every read of the listener's stdout is bounded by [`HANG`]: a listener that stops
//! answering fails its test instead of hanging it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use supervisor_slack::supervisord::protocol::{frame, EventReader, Read as Reading};

use super::slack::{write_settings, TOKEN};
use super::{signal, wait_exit, SLACK_BIN};

/// How long an answer on the listener's stdout may take before the test fails. An
/// answer takes a millisecond or two (README, promise 1); only a hang reaches this.
/// Not a speed figure: speed belongs to the benchmarks.
pub const HANG: Duration = Duration::from_secs(10);

/// What a Slack URL is where nothing listens (delivery fails at once, which must not
/// matter to stdout).
pub const NO_SLACK: &str = "http://127.0.0.1:9/api";

/// A `supervisor-slack listen` process with its stdin and stdout in the test's hands:
/// channel `#ops`, host `web-1`, token [`TOKEN`], its state (`state.db`) and stderr
/// (`stderr.log`) in `dir`.
pub struct PipeListener {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Stdout,
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
        let stdout = Stdout::drain(&mut child);
        let mut l = PipeListener {
            child,
            stdin,
            stdout,
            dir: dir.to_path_buf(),
            serial,
        };
        l.expect(b"READY\n");
        l
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
    /// Fails the test when the answer has not come within [`HANG`].
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        self.expect(b"RESULT 2\nOK");
        self.expect(b"READY\n");
    }

    /// The next bytes on stdout must be `want`, within [`HANG`].
    fn expect(&mut self, want: &[u8]) {
        let got = match self.stdout.take(want.len(), HANG) {
            Ok(got) => got,
            Err(partial) => panic!(
                "the listener did not write {:?} within {HANG:?} (a hang): got {:?}\n--- its stderr ---\n{}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&partial),
                self.stderr()
            ),
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "bytes on the listener's stdout"
        );
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

    /// Closes stdin (supervisord went away) and waits (bounded) for a clean exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child, secs_30());
        assert!(status.success(), "listener exit status {status}");
    }

    /// SIGTERM (supervisord stopping it) and waits (bounded) for it to exit; returns
    /// its exit status.
    pub fn terminate(mut self) -> ExitStatus {
        assert!(signal(self.child.id(), "TERM"), "kill -TERM {}", self.child.id());
        wait_exit(&mut self.child, secs_30())
    }
}

fn secs_30() -> Duration {
    Duration::from_secs(30)
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

/// What the protocol reader makes of `bytes`, up to the end of input (panics on an
/// error that ends reading).
pub fn read_all(bytes: &[u8]) -> Vec<Reading> {
    let mut r = EventReader::new(bytes);
    let mut out = Vec::new();
    loop {
        match r.next_event().unwrap() {
            Reading::Eof => return out,
            other => out.push(other),
        }
    }
}

/// A tick (`TICK_5`) from server `sv`: an event that is answered and not stored.
pub fn tick(serial: u64) -> Vec<u8> {
    event_frame("sv", serial, serial, "TICK_5", "when:1")
}

/// `supervisor-slack listen` for tests that speak the protocol byte by byte: no
/// settings file, channel `#ops`, host `web-1`, token [`TOKEN`], Slack at
/// [`NO_SLACK`], its state in `dir/state.db`, stdin and stdout piped (stderr is the
/// caller's).
pub fn listen_command(dir: &Path) -> Command {
    let mut cmd = Command::new(SLACK_BIN);
    cmd.arg("listen")
        .arg("--state")
        .arg(dir.join("state.db"))
        .env("SLACK_TOKEN", TOKEN)
        .env("SLACK_CHANNEL", "#ops")
        .env("SLACK_API_URL", NO_SLACK)
        .env("SUPERVISOR_SLACK_HOST", "web-1")
        .env_remove("SUPERVISOR_SLACK_STATE")
        .env_remove("SUPERVISOR_SLACK_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    cmd
}

/// [`listen_command`] started, its stderr in `dir/stderr.log`.
pub fn spawn_listener(dir: &Path) -> Child {
    listen_command(dir)
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap()
}

/// A child's stdout, drained on a thread so that every read has a bound and a
/// listener writing more than expected fails the test instead of blocking it.
pub struct Stdout {
    rx: mpsc::Receiver<Vec<u8>>,
    /// Every byte that arrived so far.
    seen: Vec<u8>,
    /// How many of them [`Stdout::take`] handed out.
    taken: usize,
}

impl Stdout {
    /// Takes the child's stdout and drains it.
    pub fn drain(child: &mut Child) -> Self {
        let out = child.stdout.take().expect("stdout piped");
        Self::of(out)
    }

    pub fn of(mut out: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            taken: 0,
        }
    }

    /// Waits until at least `n` bytes arrived in all, or `within` passed, or stdout
    /// closed.
    fn fill(&mut self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(b) => self.seen.extend(b),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The next `n` bytes, once they arrived within `within`; `Err` with what did
    /// arrive when they did not.
    pub fn take(&mut self, n: usize, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
        self.fill(self.taken + n, within);
        let end = (self.taken + n).min(self.seen.len());
        let got = self.seen[self.taken..end].to_vec();
        self.taken = end;
        if got.len() == n {
            Ok(got)
        } else {
            Err(got)
        }
    }

    /// Everything written so far must be exactly `want`: waits until as many bytes
    /// arrived (up to 20 s), then a little longer for any more on their way.
    pub fn expect_all(&mut self, want: &str) {
        self.fill(want.len(), Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(300));
        while let Ok(b) = self.rx.try_recv() {
            self.seen.extend(b);
        }
        assert!(
            self.seen == want.as_bytes(),
            "stdout: {:?}… ({} bytes), expected {want:?}",
            String::from_utf8_lossy(&self.seen[..self.seen.len().min(200)]),
            self.seen.len()
        );
    }
}
