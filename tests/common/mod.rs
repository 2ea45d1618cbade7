//! The one test harness. A test file that needs any of it says `mod common;`; there
//! is no other way in.
//!
//! - [`supervisord`]: a real supervisord in a temp dir — its config ([`Program`]s and
//!   the `[eventlistener:x]` [`ListenerEntry`]), waiting for states, `supervisorctl`,
//!   the logs, and the `received event` lines the listener wrote.
//! - [`pipe`]: the built `supervisor-slack listen` driven over pipes exactly as
//!   supervisord drives it ([`PipeListener`]), for tests that need exact control of
//!   the events (order, timing, kills).
//! - [`slack`]: the Slack stand-in as the tests use it — Slack's limits scaled down,
//!   the listener settings that match them, and reading threads back (serials,
//!   which process a parent is about, waiting for a channel to hold something).
//! - [`outbox`]: the outbox rows on disk, read with the test's own connection.
//! - [`cdp`]: headless Chromium found (or the test skipped) and driven through the
//!   DevTools protocol: evaluate, wait for, click.
//! - [`socket`]: a Socket Mode app on slack-morphism's own listener, pointed at the
//!   stand-in, recording the clicks it receives.
//! - [`http`]: plain HTTP/1.1 requests written byte for byte (the preview, the demo).
//! - [`events`]: an event builder, `ev("web", State::Running).from(State::Starting)
//!   .pid(42)`, for every test that needs a [`ProcessState`] value.
//! - Here: processes and time (`secs`, `wait_until`, signals, `/proc`).
//!
//! - [`disk`]: a tmpfs of a test's own (small, or read-only), unmounted when dropped.
//!
//! Each test crate uses its own part of the harness, so unused items are allowed.
//!
//! # When a test cannot run here
//!
//! Some tests need what only root gets: a PID namespace (`unshare`), a mount (a small
//! or read-only tmpfs). Where the machine refuses, the test calls [`cannot_run_here`],
//! and that is never a silent pass:
//!
//! - **Under CI** (`CI` set, and not `false` or `0`) the test **fails**: CI runs as
//!   root, so a refusal there means the CI machine is broken.
//! - **Elsewhere** the test **fails** as well, naming what it needs, unless the
//!   operator opts out with **`SUPERVISOR_SLACK_TEST_SKIP=1`**. Then it passes without
//!   running, and says so on the terminal: `SKIPPED name: why` is written straight to
//!   stderr, past the test harness's capture, so it shows with or without
//!   `--nocapture`. The opt-out is ignored under CI.
//!
//! The browser tests (`cdp::chromium_or_skip`) follow `scripts/test` instead: without
//! chromium they skip with the same visible line, and fail under CI.
//!
//! [`Program`]: supervisord::Program
//! [`ListenerEntry`]: supervisord::ListenerEntry
//! [`PipeListener`]: pipe::PipeListener
//! [`ProcessState`]: supervisor_slack::supervisord::event::ProcessState

#![allow(dead_code)]

pub mod cdp;
pub mod disk;
pub mod events;
pub mod fleet;
pub mod http;
pub mod outbox;
pub mod pipe;
pub mod postgres;
pub mod slack;
pub mod socket;
pub mod supervisord;

use std::fs;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The built `supervisor-slack` binary.
pub const SLACK_BIN: &str = env!("CARGO_BIN_EXE_supervisor-slack");

/// The opt-out that lets a test that cannot run on this machine pass without running
/// (outside CI only); see the module documentation.
pub const SKIP_VAR: &str = "SUPERVISOR_SLACK_TEST_SKIP";

/// Whether this is a CI run: `CI` set, and not `false` or `0`.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Writes `SKIPPED test: why` straight to the process's stderr (not through
/// `eprintln!`, which the test harness captures), so that a skip shows on the
/// terminal with or without `--nocapture`.
pub fn say_skipped(why: &str) {
    use std::io::Write;
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {why}");
}

/// The machine refuses what this test needs (`why`, with how to get it). Fails the
/// test under CI, and elsewhere unless `SUPERVISOR_SLACK_TEST_SKIP=1`; with the
/// opt-out, says `SKIPPED` on the terminal and returns, and the caller returns too.
pub fn cannot_run_here(why: &str) {
    if under_ci() {
        panic!("{why}; CI is set, so this test must run here (CI runs as root)");
    }
    if std::env::var_os(SKIP_VAR).is_none_or(|v| v.is_empty() || v == "0") {
        panic!(
            "{why}. Run the tests as root, or set {SKIP_VAR}=1 to skip the tests this machine \
             cannot run (never under CI)"
        );
    }
    say_skipped(why);
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Polls `cond` every 50 ms until it is true or `timeout` has passed. Returns whether
/// it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `within` for `child` to exit and returns its status; past that it is
/// killed and the test fails (a hang).
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} did not exit within {within:?}", child.id());
        }
    }
}

/// `kill -SIG PID`; returns whether `kill` succeeded (the process existed).
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// SIGKILLs `pid` and all its descendants, children first seen first.
pub fn kill_tree(pid: u32) {
    let all = descendants(pid);
    signal(pid, "KILL");
    for p in all {
        signal(p, "KILL");
    }
}

/// Every live descendant of `pid`, read from /proc (supervisord puts its children in
/// process groups of their own, so a group kill would miss them).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may hold spaces and parens
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}
