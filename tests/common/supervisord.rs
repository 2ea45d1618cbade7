//! A real supervisord for integration tests.
//!
//! Each [`Supervisord`] runs `supervisord -n -c CONF` in its own temporary directory,
//! which holds the config, the unix socket (no TCP port), the pidfile and every log.
//! Dropping it stops supervisord and everything it started, so no process outlives a
//! test.
//!
//! ```ignore
//! mod common;
//! use common::secs;
//! use common::supervisord::*;
//!
//! let mut sv = Supervisord::start(
//!     SupervisordConfig::new()
//!         .program(Program::sleeper("web"))
//!         .listener(ListenerEntry::slack().env("SLACK_TOKEN", "xoxb-test")),
//! );
//! sv.wait_for_state("web", "RUNNING", secs(5));
//! sv.stop();
//! sv.assert_no_protocol_trouble();
//! ```
//!
//! The supervisord binary comes from `$SUPERVISORD`, else
//! `<CARGO_MANIFEST_DIR>/.venv/bin/supervisord` (made by `scripts/test-env`).
//! `supervisorctl` is looked up beside it. Set `HARNESS_KEEP_DIR=1` to keep each
//! temp dir (config, logs) after the test for a post-mortem.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{descendants, kill_tree, secs, signal, wait_until, SLACK_BIN};

/// In listener arguments and environment values, stands for the supervisord's temp
/// dir (known only at start): `.args(&["--state", "{dir}/state.db"])`.
pub const DIR: &str = "{dir}";

/// Lines in supervisord's own log that mean the listener broke the protocol or lost
/// events.
pub const PROTOCOL_TROUBLE: &[&str] = &["UNKNOWN state", "bad result line", "buffer overflowed"];

/// One `[program:x]` section.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub command: String,
    pub autostart: bool,
    /// `false`, `true` or `unexpected`.
    pub autorestart: String,
    pub startsecs: u32,
    pub startretries: u32,
    /// Comma-separated, as supervisord writes it: `0` or `0,2`.
    pub exitcodes: String,
    pub stopwaitsecs: u32,
    /// Raw `key=value` lines appended to the section.
    pub extra: Vec<String>,
}

impl Program {
    /// A program with test-friendly defaults: autostart, no autorestart, `startsecs=1`,
    /// `startretries=3`, `exitcodes=0`, `stopwaitsecs=2`. The command is split by
    /// supervisord (shlex), so use `/bin/sh -c '...'` for shell syntax.
    pub fn new(name: &str, command: &str) -> Self {
        Program {
            name: name.to_string(),
            command: command.to_string(),
            autostart: true,
            autorestart: "false".into(),
            startsecs: 1,
            startretries: 3,
            exitcodes: "0".into(),
            stopwaitsecs: 2,
            extra: Vec::new(),
        }
    }
    /// A program that stays RUNNING until it is stopped (`exec sleep 1000`).
    pub fn sleeper(name: &str) -> Self {
        Self::new(name, "/bin/sh -c 'exec sleep 1000'")
    }
    pub fn autostart(mut self, v: bool) -> Self {
        self.autostart = v;
        self
    }
    pub fn autorestart(mut self, v: &str) -> Self {
        self.autorestart = v.to_string();
        self
    }
    pub fn startsecs(mut self, v: u32) -> Self {
        self.startsecs = v;
        self
    }
    pub fn startretries(mut self, v: u32) -> Self {
        self.startretries = v;
        self
    }
    pub fn exitcodes(mut self, v: &str) -> Self {
        self.exitcodes = v.to_string();
        self
    }
    pub fn stopwaitsecs(mut self, v: u32) -> Self {
        self.stopwaitsecs = v;
        self
    }
    /// A raw `key=value` line for the section.
    pub fn line(mut self, raw: &str) -> Self {
        self.extra.push(raw.to_string());
        self
    }
}

/// The `[eventlistener:NAME]` section of the config: how supervisord runs a listener.
/// (Not to be confused with [`super::pipe::PipeListener`], a listener binary driven
/// over pipes by the test itself.)
#[derive(Debug, Clone)]
pub struct ListenerEntry {
    pub name: String,
    /// Program and arguments, joined with shell-style quoting into `command=`.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub events: String,
    pub buffer_size: u32,
    pub priority: u32,
    pub stopwaitsecs: u32,
    /// `startsecs=`: 1 by default; 0 makes a restarted listener RUNNING at once (so it
    /// can be killed again right away without going BACKOFF/FATAL).
    pub startsecs: u32,
    /// `startretries=`: 3 by default.
    pub startretries: u32,
    pub extra: Vec<String>,
}

impl ListenerEntry {
    /// The built `supervisor-slack listen`, named `slack`, subscribed to
    /// `PROCESS_STATE`, `buffer_size=1024`, its own `priority=900`, `autorestart=true`.
    pub fn slack() -> Self {
        Self::custom(&[SLACK_BIN, "listen"])
    }

    /// Any listener command (for testing the harness itself).
    pub fn custom(argv: &[&str]) -> Self {
        ListenerEntry {
            name: "slack".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            events: "PROCESS_STATE".into(),
            buffer_size: 1024,
            priority: 900,
            stopwaitsecs: 5,
            startsecs: 1,
            startretries: 3,
            extra: Vec::new(),
        }
    }
    pub fn name(mut self, v: &str) -> Self {
        self.name = v.to_string();
        self
    }
    /// Appends arguments after the command. `{dir}` stands for the temp dir.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.argv.extend(args.iter().map(|s| s.to_string()));
        self
    }
    /// An `environment=` entry; `{dir}` in the value stands for the temp dir.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    pub fn events(mut self, v: &str) -> Self {
        self.events = v.to_string();
        self
    }
    pub fn buffer_size(mut self, v: u32) -> Self {
        self.buffer_size = v;
        self
    }
    pub fn priority(mut self, v: u32) -> Self {
        self.priority = v;
        self
    }
    pub fn stopwaitsecs(mut self, v: u32) -> Self {
        self.stopwaitsecs = v;
        self
    }
    pub fn startsecs(mut self, v: u32) -> Self {
        self.startsecs = v;
        self
    }
    pub fn startretries(mut self, v: u32) -> Self {
        self.startretries = v;
        self
    }
    /// A raw `key=value` line for the section.
    pub fn line(mut self, raw: &str) -> Self {
        self.extra.push(raw.to_string());
        self
    }
}

/// What goes into `supervisord.conf`.
#[derive(Debug, Clone, Default)]
pub struct SupervisordConfig {
    pub programs: Vec<Program>,
    pub listener: Option<ListenerEntry>,
    /// `loglevel=` of supervisord itself; `debug` by default.
    pub loglevel: Option<String>,
    /// Raw text appended to the file (extra sections).
    pub raw: String,
    /// Run supervisord as PID 1 of its own PID namespace, as in a container
    /// (`unshare --pid --fork --mount-proc`; needs root).
    pub as_pid1: bool,
}

impl SupervisordConfig {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn program(mut self, p: Program) -> Self {
        self.programs.push(p);
        self
    }
    pub fn listener(mut self, l: ListenerEntry) -> Self {
        self.listener = Some(l);
        self
    }
    pub fn loglevel(mut self, v: &str) -> Self {
        self.loglevel = Some(v.to_string());
        self
    }
    pub fn raw(mut self, text: &str) -> Self {
        self.raw.push_str(text);
        self.raw.push('\n');
        self
    }
    /// supervisord as PID 1 of its own PID namespace (see [`pid_namespaces_work`]).
    pub fn pid1(mut self) -> Self {
        self.as_pid1 = true;
        self
    }

    /// The config file text for a supervisord living in `dir`.
    pub fn render(&self, dir: &Path) -> String {
        let d = conf_path(dir);
        let mut s = String::new();
        let _ = write!(
            s,
            "[supervisord]\n\
             nodaemon=true\n\
             identifier=supervisor-slack-test\n\
             logfile={d}/supervisord.log\n\
             logfile_backups=0\n\
             loglevel={level}\n\
             pidfile={d}/supervisord.pid\n\
             childlogdir={d}\n\
             \n\
             [unix_http_server]\n\
             file={d}/supervisor.sock\n\
             \n\
             [supervisorctl]\n\
             serverurl=unix://{d}/supervisor.sock\n\
             \n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface\n",
            level = self.loglevel.as_deref().unwrap_or("debug"),
        );
        for p in &self.programs {
            check_name(&p.name);
            let _ = write!(
                s,
                "\n[program:{name}]\n\
                 command={command}\n\
                 autostart={autostart}\n\
                 autorestart={autorestart}\n\
                 startsecs={startsecs}\n\
                 startretries={startretries}\n\
                 exitcodes={exitcodes}\n\
                 stopwaitsecs={stopwaitsecs}\n\
                 stopasgroup=true\n\
                 killasgroup=true\n\
                 stdout_logfile={d}/{name}.stdout.log\n\
                 stderr_logfile={d}/{name}.stderr.log\n",
                name = p.name,
                command = conf_value(&p.command),
                autostart = p.autostart,
                autorestart = p.autorestart,
                startsecs = p.startsecs,
                startretries = p.startretries,
                exitcodes = p.exitcodes,
                stopwaitsecs = p.stopwaitsecs,
            );
            for line in &p.extra {
                s.push_str(line);
                s.push('\n');
            }
        }
        if let Some(l) = &self.listener {
            check_name(&l.name);
            let here = dir.to_str().expect("harness: temp dir path is not UTF-8");
            let command: Vec<String> = l
                .argv
                .iter()
                .map(|a| shell_word(&a.replace(DIR, here)))
                .collect();
            let env: Vec<String> = l
                .env
                .iter()
                .map(|(k, v)| format!("{}={}", env_key(k), env_value(&v.replace(DIR, here))))
                .collect();
            // stdout of an event listener is the protocol channel: supervisord logs
            // what the listener wrote there (READY / RESULT) to stdout_logfile.
            let _ = write!(
                s,
                "\n[eventlistener:{name}]\n\
                 command={command}\n\
                 events={events}\n\
                 buffer_size={buffer_size}\n\
                 priority={priority}\n\
                 autostart=true\n\
                 autorestart=true\n\
                 startsecs={startsecs}\n\
                 startretries={startretries}\n\
                 stopwaitsecs={stopwaitsecs}\n\
                 stdout_logfile={d}/listener.stdout.log\n\
                 stderr_logfile={d}/listener.stderr.log\n",
                name = l.name,
                command = conf_value(&command.join(" ")),
                events = l.events,
                buffer_size = l.buffer_size,
                priority = l.priority,
                stopwaitsecs = l.stopwaitsecs,
                startsecs = l.startsecs,
                startretries = l.startretries,
            );
            if !env.is_empty() {
                let _ = writeln!(s, "environment={}", env.join(","));
            }
            for line in &l.extra {
                s.push_str(line);
                s.push('\n');
            }
        }
        if !self.raw.is_empty() {
            s.push('\n');
            s.push_str(&self.raw);
        }
        s
    }
}

fn check_name(name: &str) {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'),
        "harness: program/listener name {name:?} must be [A-Za-z0-9_.-]+"
    );
}

/// A path as it may appear in the config: supervisord expands `%(...)s`.
fn conf_path(dir: &Path) -> String {
    let s = dir.to_str().expect("harness: temp dir path is not UTF-8");
    assert!(
        !s.contains(|c: char| c.is_whitespace() || c == ';' || c == '#' || c == '"' || c == '\''),
        "harness: temp dir path {s:?} has characters supervisord's config cannot hold"
    );
    s.replace('%', "%%")
}

/// A single-line config value: `%` doubled (supervisord expands `%(name)s`), and no
/// ` ;` / ` #`, which configparser would cut off as an inline comment.
fn conf_value(v: &str) -> String {
    assert!(
        !v.contains(['\n', '\r']),
        "harness: config value {v:?} has a line break"
    );
    for bad in [" ;", " #", "\t;", "\t#"] {
        assert!(
            !v.contains(bad),
            "harness: config value {v:?} contains {bad:?}, which supervisord reads as a comment"
        );
    }
    v.replace('%', "%%")
}

/// Quotes a word for supervisord's `command=` (split with Python's `shlex.split`).
pub fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

fn env_key(k: &str) -> &str {
    assert!(
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "harness: environment name {k:?} must be [A-Za-z0-9_]+"
    );
    k
}

/// Quotes a value for `environment=`. supervisord splits that line with a non-POSIX
/// `shlex` (quotes kept, no escapes) and then strips quote characters from both ends
/// of each value, so a value is wrapped in whichever quote it does not contain, and
/// values that cannot survive (both quotes, a quote at either end) are refused.
pub fn env_value(v: &str) -> String {
    assert!(
        !v.starts_with(['"', '\'']) && !v.ends_with(['"', '\'']),
        "harness: environment value {v:?} starts or ends with a quote, which supervisord strips"
    );
    let q = if !v.contains('"') {
        '"'
    } else if !v.contains('\'') {
        '\''
    } else {
        panic!("harness: environment value {v:?} holds both quote characters; supervisord cannot take it")
    };
    conf_value(&format!("{q}{v}{q}"))
}

/// A running supervisord in its own temporary directory.
pub struct Supervisord {
    dir: tempfile::TempDir,
    child: Option<Child>,
    supervisord: PathBuf,
    supervisorctl: PathBuf,
    /// PID 1 of its own namespace: `child` is `unshare`, which does not pass signals on.
    as_pid1: bool,
}

/// Whether this machine lets us run supervisord as PID 1 of a new PID namespace
/// (root, and `unshare` allowed here).
pub fn pid_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where the supervisord binary is: `$SUPERVISORD`, else `.venv/bin/supervisord`.
pub fn supervisord_path() -> PathBuf {
    let path = match std::env::var_os("SUPERVISORD") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/supervisord"),
    };
    assert!(
        path.is_file(),
        "no supervisord at {}: run `scripts/test-env` (it installs one into .venv/), \
         or set SUPERVISORD to a supervisord binary",
        path.display()
    );
    path
}

impl Supervisord {
    /// Writes the config, starts `supervisord -n -c CONF` and waits (up to 10 s) until
    /// it answers on its socket. Panics, with supervisord's log, when it does not.
    pub fn start(config: SupervisordConfig) -> Supervisord {
        let supervisord = supervisord_path();
        let supervisorctl = supervisord.with_file_name("supervisorctl");
        assert!(
            supervisorctl.is_file(),
            "no supervisorctl beside {}: run `scripts/test-env`",
            supervisord.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("sv-")
            .tempdir()
            .expect("harness: cannot create a temp dir");
        let conf = dir.path().join("supervisord.conf");
        fs::write(&conf, config.render(dir.path())).expect("harness: cannot write config");
        let mut command = if config.as_pid1 {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
                .arg(&supervisord);
            c
        } else {
            Command::new(&supervisord)
        };
        let child = command
            .arg("-n")
            .arg("-c")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("supervisord.console.log")).unwrap())
            // its own process group, so that cleanup can never hit the test runner
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("harness: cannot run {}: {e}", supervisord.display()));
        let mut sv = Supervisord {
            dir,
            child: Some(child),
            supervisord,
            supervisorctl,
            as_pid1: config.as_pid1,
        };
        let up = wait_until(secs(10), || {
            if let Some(status) = sv.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "supervisord exited at startup with {status}\n--- console ---\n{}\n--- log ---\n{}",
                    sv.read("supervisord.console.log"),
                    sv.main_log()
                );
            }
            sv.socket().exists() && sv.ctl(&["pid"]).status.success()
        });
        assert!(
            up,
            "supervisord did not answer on {} within 10 s\n--- log ---\n{}",
            sv.socket().display(),
            sv.main_log()
        );
        sv
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn conf(&self) -> PathBuf {
        self.dir().join("supervisord.conf")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("supervisor.sock")
    }
    /// `unix:///.../supervisor.sock`, as `SUPERVISOR_SERVER_URL` reads.
    pub fn server_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `supervisorctl -c CONF ARGS...` and returns its output, whatever its status.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&self.supervisorctl)
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("harness: cannot run supervisorctl")
    }

    /// `supervisorctl ARGS...` that must succeed; returns its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "supervisorctl {args:?} failed with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The state name of `name` (`group:name` or `name`) per `supervisorctl status`,
    /// e.g. `RUNNING`, `FATAL`; `None` when supervisorctl does not know it.
    pub fn state(&self, name: &str) -> Option<String> {
        let out = self.ctl(&["status", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next()?;
        let mut words = line.split_whitespace();
        let _ = words.next()?;
        let state = words.next()?;
        if state.chars().all(|c| c.is_ascii_uppercase()) {
            Some(state.to_string())
        } else {
            None
        }
    }

    /// Waits until `name` is in `state`; panics with the logs when it is not in time.
    pub fn wait_for_state(&self, name: &str, state: &str, timeout: Duration) {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.state(name);
            last.as_deref() == Some(state)
        });
        assert!(
            ok,
            "{name} did not reach {state} within {timeout:?} (last: {last:?})\n{}",
            self.diagnostics()
        );
    }

    /// The pid of a running process (`supervisorctl pid NAME`); `None` when it has
    /// none (not running) or supervisorctl does not know it.
    pub fn process_pid(&self, name: &str) -> Option<u32> {
        let out = self.ctl(&["pid", name]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&p| p > 0)
    }

    /// supervisord's own log (`logfile=`).
    pub fn main_log(&self) -> String {
        self.read("supervisord.log")
    }
    /// What the event listener wrote to stderr: its logs.
    pub fn listener_stderr(&self) -> String {
        self.read("listener.stderr.log")
    }
    /// What the event listener wrote to stdout, as supervisord logged it: the protocol.
    pub fn listener_stdout(&self) -> String {
        self.read("listener.stdout.log")
    }
    /// A program's stderr log.
    pub fn program_stderr(&self, name: &str) -> String {
        self.read(&format!("{name}.stderr.log"))
    }

    /// A file in the temp dir as text, empty when it does not exist.
    pub fn read(&self, file: &str) -> String {
        fs::read(self.dir().join(file))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The logs worth reading when a test fails.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- supervisord.log ---\n{}\n--- listener stderr ---\n{}\n--- listener stdout (protocol) ---\n{:?}",
            tail(&self.main_log(), 80),
            tail(&self.listener_stderr(), 80),
            tail(&self.listener_stdout(), 20),
        )
    }

    /// Panics when supervisord's log shows a protocol violation or lost events.
    pub fn assert_no_protocol_trouble(&self) {
        let log = self.main_log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| PROTOCOL_TROUBLE.iter().any(|t| l.contains(t)))
            .collect();
        assert!(
            bad.is_empty(),
            "supervisord reports protocol trouble:\n{}\n{}",
            bad.join("\n"),
            self.diagnostics()
        );
    }

    /// SIGTERM, then waits (up to 30 s) for supervisord to stop its programs and the
    /// listener and exit; kills whatever is left after that. Idempotent. Returns
    /// whether supervisord exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id();
        if self.as_pid1 {
            // `unshare` does not pass SIGTERM on: ask supervisord itself.
            let _ = self.ctl(&["shutdown"]);
        } else {
            signal(pid, "TERM");
        }
        let mut exited = false;
        let _ = wait_until(secs(30), || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited
        });
        if !exited {
            kill_tree(pid);
            let _ = child.kill();
            let _ = child.wait();
        }
        exited
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if std::env::var_os("HARNESS_KEEP_DIR").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("harness: kept {}", kept.display());
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // A test that failed or forgot stop(): be quick but leave nothing behind.
        let pid = child.id();
        let descendants = descendants(pid);
        signal(pid, "TERM");
        let exited = wait_until(secs(5), || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        for p in descendants {
            signal(p, "KILL");
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One event the listener logged as received, parsed from a line such as
/// `received event serial=12 eventname=PROCESS_STATE_RUNNING group=web process=web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub serial: u64,
    pub eventname: String,
    pub group: String,
    pub process: String,
}

/// Every `received event` line in a listener's stderr, in order. Tolerates tracing's
/// prefixes (timestamp, level, target) and quoted values.
pub fn received_events(stderr: &str) -> Vec<Received> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Some(i) = line.find("received event") else {
            continue;
        };
        let mut serial = None;
        let mut eventname = None;
        let mut group = String::new();
        let mut process = String::new();
        for tok in line[i..].split_whitespace() {
            let Some((k, v)) = tok.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"').to_string();
            match k {
                "serial" => serial = v.parse().ok(),
                "eventname" | "event" => eventname = Some(v),
                "group" | "groupname" => group = v,
                "process" | "processname" => process = v,
                _ => {}
            }
        }
        if let (Some(serial), Some(eventname)) = (serial, eventname) {
            out.push(Received {
                serial,
                eventname,
                group,
                process,
            });
        }
    }
    out
}
