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
//! Each test crate uses its own part of the harness, so unused items are allowed.
//!
//! [`Program`]: supervisord::Program
//! [`ListenerEntry`]: supervisord::ListenerEntry
//! [`PipeListener`]: pipe::PipeListener
//! [`ProcessState`]: supervisor_slack::supervisord::event::ProcessState

#![allow(dead_code)]

pub mod cdp;
pub mod events;
pub mod http;
pub mod outbox;
pub mod pipe;
pub mod slack;
pub mod socket;
pub mod supervisord;

use std::fs;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The built `supervisor-slack` binary.
pub const SLACK_BIN: &str = env!("CARGO_BIN_EXE_supervisor-slack");

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
