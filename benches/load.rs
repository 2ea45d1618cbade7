//! Load driver: plays supervisord over pipes with the exact protocol and measures,
//! per event, the time from the last payload byte written to `RESULT 2\nOK` read
//! back; the sustained events per second; and the listener's peak RSS.
//!
//! `cargo bench --bench load` (add `-- --events N` to change the count). Prints
//! figures; asserts nothing about time (a benchmark, not a test).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_slack::protocol::frame;

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_sec: f64,
    peak_rss_kb: u64,
}

fn read_exact_str(out: &mut impl Read, expect: &[u8]) {
    let mut buf = vec![0u8; expect.len()];
    out.read_exact(&mut buf).expect("listener output");
    assert_eq!(buf, expect, "protocol bytes from the listener");
}

fn peak_rss_kb(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Runs `n` events through a listener started with `cmd`, one at a time as
/// supervisord does.
pub fn drive(mut cmd: Command, n: usize, processes: usize) -> Figures {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start listener");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    read_exact_str(&mut stdout, b"READY\n");
    let states = [
        ("STARTING", "STOPPED", "tries:0"),
        ("RUNNING", "STARTING", "pid:4242"),
        ("STOPPING", "RUNNING", "pid:4242"),
        ("STOPPED", "STOPPING", "pid:4242"),
    ];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let (to, from, extra) = states[i % states.len()];
        let p = format!("web_{}", (i / states.len()) % processes);
        let payload = format!("processname:{p} groupname:web from_state:{from} {extra}");
        let ev = frame(
            &[
                ("ver", "3.0"),
                ("server", "bench"),
                ("serial", &i.to_string()),
                ("pool", "slack"),
                ("poolserial", &i.to_string()),
                ("eventname", &format!("PROCESS_STATE_{to}")),
            ],
            &payload,
        );
        stdin.write_all(&ev).unwrap();
        stdin.flush().unwrap();
        let t = Instant::now();
        read_exact_str(&mut stdout, b"RESULT 2\nOK");
        lat.push(t.elapsed());
        read_exact_str(&mut stdout, b"READY\n");
    }
    let total = start.elapsed();
    let rss = peak_rss_kb(&child);
    drop(stdin);
    let _ = child.wait();
    lat.sort();
    Figures {
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        max: *lat.last().unwrap(),
        per_sec: n as f64 / total.as_secs_f64(),
        peak_rss_kb: rss,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<44} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  {:>8.0} events/s  peak RSS {:>6.1} MB",
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.max.as_secs_f64() * 1e3,
        f.per_sec,
        f.peak_rss_kb as f64 / 1024.0
    );
}

fn listener(state: &std::path::Path, api_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supervisor-slack"));
    c.arg("listen")
        .arg("--state")
        .arg(state)
        .env("SLACK_TOKEN", "xoxb-bench")
        .env("SLACK_CHANNEL", "#bench")
        .env("SLACK_API_URL", api_url)
        .env("SUPERVISOR_SLACK_LOG", "warn");
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize);
    // `cargo test --all-targets` runs this too, without `--bench`: a quick smoke run.
    let n = if args.iter().any(|a| a == "--bench") {
        n
    } else {
        200
    };
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{n} events per run, 20 processes; machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let down = drive(
        listener(&dir.path().join("down.db"), "http://127.0.0.1:9/api"),
        n,
        20,
    );
    print("supervisor-slack, Slack down", &down);
}
