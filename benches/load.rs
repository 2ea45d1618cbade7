//! Load driver: plays supervisord over pipes with the exact protocol and measures,
//! per event, the time from the last payload byte written to `RESULT 2\nOK` read
//! back; the sustained events per second; the listener's peak RSS; and its cost per
//! event (CPU time of all its threads, bytes of state on disk).
//!
//! Scenarios, each with a fresh state directory, against the Slack stand-in
//! (`supervisor_slack::standin`) running in this process:
//! - supervisor-slack with Slack healthy, slow (1 s per call), down (connection
//!   refused) and dropping connections;
//! - supervisor-slack with Slack healthy and with Slack down over 100,000 events
//!   (peak RSS);
//! - supervisor-slack with Socket Mode off and on (actions from Slack, a click every
//!   50 ms while it answers events), alternated;
//! - the baseline, `benches/baseline_listener.py` (supervisor.childutils, posts
//!   synchronously before answering, as the usual Python listeners do), with Slack
//!   healthy and slow, through the same driver; then the ratios.
//!
//! `cargo bench --bench load` (options after `--`: `--events N` per run, default
//! 20,000; `--rss-events N`, default 100,000; `--baseline-events N`, default 2,000;
//! `--baseline-slow-events N`, default 20; `--only-rss`: the two 100,000-event runs
//! alone, without the other scenarios and the baseline; `--only-actions`: Socket Mode
//! off against on, with clicks arriving during the run, alternated; `--only-fleet`:
//! fleet off against on (a private PostgreSQL), alternated, and 100,000 events with
//! the fleet on for its RSS; `--before BIN`: another build of the listener against
//! this one, alternated, for before/after figures from the same run). Prints figures; asserts nothing about
//! time (a benchmark, not a test). Under `cargo test --all-targets` (no `--bench`
//! argument) every scenario runs with a handful of events, as a smoke run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_slack::supervisord::protocol::frame;

#[path = "load/ab.rs"]
mod ab;
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;
use supervisor_slack::standin::{Fault, StandIn, StandInOptions};

struct Figures {
    events: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_sec: f64,
    peak_rss_kb: u64,
    /// CPU time (user + system, all threads) of the listener from its first READY to
    /// the last answer.
    cpu: Duration,
    /// Size of the state directory after the run (database, WAL), if any.
    disk_bytes: Option<u64>,
    /// (events answered so far, VmRSS in kB) at tenths of the run.
    rss_trace: Vec<(usize, u64)>,
    /// Answers that took more than 2 ms.
    over_2ms: usize,
    /// `chat.postMessage` calls the stand-in answered OK during the run.
    posts_ok: Option<usize>,
}

impl Figures {
    fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events as f64
    }
}

fn read_expect(out: &mut impl Read, expect: &[u8], log: &Path) {
    let mut buf = vec![0u8; expect.len()];
    if let Err(e) = out.read_exact(&mut buf) {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        panic!("listener output ended ({e}); its stderr, last lines reversed:\n{tail}");
    }
    assert_eq!(
        String::from_utf8_lossy(&buf),
        String::from_utf8_lossy(expect),
        "protocol bytes from the listener"
    );
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the whole process (every thread), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The events, framed as supervisord frames them: `processes` processes cycling
/// STARTING → RUNNING → STOPPING → STOPPED.
fn events(n: usize, processes: usize) -> Vec<Vec<u8>> {
    let states = [
        ("STARTING", "STOPPED", "tries:0"),
        ("RUNNING", "STARTING", "pid:4242"),
        ("STOPPING", "RUNNING", "pid:4242"),
        ("STOPPED", "STOPPING", "pid:4242"),
    ];
    (0..n)
        .map(|i| {
            let (to, from, extra) = states[(i / processes) % states.len()];
            let p = format!("web_{}", i % processes);
            let payload = format!("processname:{p} groupname:web from_state:{from} {extra}");
            frame(
                &[
                    ("ver", "3.0"),
                    ("server", "bench"),
                    ("serial", &(i + 1).to_string()),
                    ("pool", "slack"),
                    ("poolserial", &(i + 1).to_string()),
                    ("eventname", &format!("PROCESS_STATE_{to}")),
                ],
                &payload,
            )
        })
        .collect()
}

/// A listener to drive: its command and the directory holding its state and log.
struct Subject {
    cmd: Command,
    dir: tempfile::TempDir,
}

/// Runs `n` events through the listener, one at a time as supervisord does (write
/// the event, wait for the answer, wait for READY).
fn drive(mut subject: Subject, n: usize, processes: usize) -> Figures {
    let log = subject.dir.path().join("stderr.log");
    let mut child: Child = subject
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start listener");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let evs = events(n, processes);
    read_expect(&mut stdout, b"READY\n", &log);
    // Start-up (an interpreter's imports, opening the database) is not per-event cost.
    let cpu_at_ready = cpu_time(pid);
    let mut lat = Vec::with_capacity(n);
    let mut rss_trace = Vec::new();
    let tenth = (n / 10).max(1);
    let start = Instant::now();
    for (i, ev) in evs.iter().enumerate() {
        stdin.write_all(ev).unwrap();
        stdin.flush().unwrap();
        let t = Instant::now();
        read_expect(&mut stdout, b"RESULT 2\nOK", &log);
        lat.push(t.elapsed());
        read_expect(&mut stdout, b"READY\n", &log);
        if (i + 1) % tenth == 0 {
            rss_trace.push((i + 1, proc_status_kb(pid, "VmRSS:")));
        }
    }
    let total = start.elapsed();
    let peak_rss_kb = proc_status_kb(pid, "VmHWM:");
    let cpu = cpu_time(pid).saturating_sub(cpu_at_ready);
    drop(stdin);
    let _ = child.wait();
    let disk = dir_size(subject.dir.path()) - std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    lat.sort();
    let over_2ms = lat.len() - lat.partition_point(|d| *d <= Duration::from_millis(2));
    Figures {
        events: n,
        p50: lat[lat.len() / 2],
        p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
        max: *lat.last().unwrap(),
        per_sec: n as f64 / total.as_secs_f64(),
        peak_rss_kb,
        cpu,
        disk_bytes: (disk > 0).then_some(disk),
        rss_trace,
        over_2ms,
        posts_ok: None,
    }
}

/// `chat.postMessage` calls answered 200 so far.
fn posts_ok(slack: &StandIn) -> usize {
    slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.status == 200)
        .count()
}

/// [`drive`] against a stand-in, counting the posts it took during the run.
fn drive_with(slack: &StandIn, subject: Subject, n: usize, processes: usize) -> Figures {
    let before = posts_ok(slack);
    let mut f = drive(subject, n, processes);
    f.posts_ok = Some(posts_ok(slack) - before);
    f
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_header() {
    println!(
        "{:<48} {:>7} {:>9} {:>9} {:>9} {:>6} {:>9} {:>8} {:>9} {:>9} {:>6}",
        "scenario",
        "events",
        "p50 ms",
        "p99 ms",
        "max ms",
        ">2 ms",
        "events/s",
        "RSS MB",
        "CPU µs/ev",
        "disk B/ev",
        "posts"
    );
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<48} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>6} {:>9.0} {:>8.1} {:>9.1} {:>9} {:>6}",
        f.events,
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        f.over_2ms,
        f.per_sec,
        f.peak_rss_kb as f64 / 1024.0,
        f.cpu_us_per_event(),
        f.disk_bytes
            .map(|b| format!("{:.0}", b as f64 / f.events as f64))
            .unwrap_or_else(|| "-".into()),
        f.posts_ok
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
    );
}

/// VmRSS over the long runs, at tenths of each.
fn print_rss_traces(n_rss: usize, runs: &[(&str, &Figures)]) {
    println!("\nRSS of supervisor-slack over the {n_rss}-event runs (events answered: VmRSS MB):");
    for (what, f) in runs {
        println!(
            "  {what}: {}",
            f.rss_trace
                .iter()
                .map(|(i, kb)| format!("{i}: {:.1}", *kb as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn supervisor_slack(api_url: &str) -> Subject {
    listener_from(Path::new(env!("CARGO_BIN_EXE_supervisor-slack")), api_url)
}

/// The listener built at `bin` (another build of it, for a before/after run).
fn listener_from(bin: &Path, api_url: &str) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin);
    c.arg("listen")
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .env_remove("SUPERVISOR_SERVER_URL")
        .env_remove("SUPERVISOR_SLACK_STATE")
        .env("SLACK_TOKEN", "xoxb-bench")
        .env("SLACK_CHANNEL", "#bench")
        .env("SLACK_API_URL", api_url)
        .env("SUPERVISOR_SLACK_LOG", "warn");
    Subject { cmd: c, dir }
}

/// The listener with actions from Slack on: an app-level token, `[actions]` allowing
/// [`BENCH_USER`], Socket Mode open to the stand-in.
fn supervisor_slack_with_actions(api_url: &str) -> Subject {
    let mut s = supervisor_slack(api_url);
    let settings = s.dir.path().join("settings.toml");
    std::fs::write(&settings, format!("[actions]\nallow_users = [\"{BENCH_USER}\"]\n")).unwrap();
    s.cmd = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_supervisor-slack"));
        c.arg("--config")
            .arg(&settings)
            .arg("listen")
            .arg("--state")
            .arg(s.dir.path().join("state.db"))
            .env_remove("SUPERVISOR_SERVER_URL")
            .env_remove("SUPERVISOR_SLACK_STATE")
            .env("SLACK_TOKEN", "xoxb-bench")
            .env("SLACK_APP_TOKEN", "xapp-bench")
            .env("SLACK_CHANNEL", "#bench")
            .env("SLACK_API_URL", api_url)
            .env("SUPERVISOR_SLACK_LOG", "warn");
        c
    };
    s
}

const BENCH_USER: &str = "U0BENCH";

/// Clicks Mute / Unmute on the cards in `#bench` every 50 ms until `stop`, as the
/// allowed user; returns how many clicks were acked.
async fn keep_clicking(slack: std::sync::Arc<StandIn>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    use std::sync::atomic::Ordering;
    let mut acked = 0;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for t in slack.channel("#bench").iter().take(3) {
            let Some((id, _, _)) = slack
                .buttons("#bench", &t.parent.ts)
                .into_iter()
                .find(|(id, _, _)| id == "mute" || id == "unmute")
            else {
                continue;
            };
            let click = supervisor_slack::standin::Click::new(BENCH_USER, "#bench", t.parent.ts.clone(), id);
            if let Ok(out) = slack.click(click).await {
                acked += out.acked.iter().filter(|a| **a).count();
            }
        }
    }
    acked
}

/// Socket Mode off, then on with clicks arriving all along, twice (off, on, off,
/// on), each with a fresh state and stand-in; returns the better-of-two figures of
/// each and the clicks acked.
fn actions_ab(rt: &tokio::runtime::Runtime, n: usize, processes: usize) -> (Figures, Figures, usize) {
    let fresh = || {
        std::sync::Arc::new(
            rt.block_on(StandIn::start(StandInOptions {
                enforce_rate_limit: false,
                ..StandInOptions::default()
            }))
            .expect("start the Slack stand-in"),
        )
    };
    let mut off: Option<Figures> = None;
    let mut on: Option<Figures> = None;
    let mut clicks = 0;
    let better = |a: Option<Figures>, b: Figures| match a {
        Some(a) if a.p99 <= b.p99 => a,
        _ => b,
    };
    for _ in 0..2 {
        let slack = fresh();
        off = Some(better(off, drive_with(&slack, supervisor_slack(&slack.api_url()), n, processes)));
        let slack = fresh();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clicker = rt.spawn(keep_clicking(slack.clone(), stop.clone()));
        let f = drive_with(&slack, supervisor_slack_with_actions(&slack.api_url()), n, processes);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        clicks += rt.block_on(clicker).unwrap_or(0);
        on = Some(better(on, f));
    }
    (off.unwrap(), on.unwrap(), clicks)
}

fn baseline_python() -> Option<PathBuf> {
    let p = std::env::var_os("BASELINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import supervisor.childutils"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

fn baseline(python: &Path, api_url: &str) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(python);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline_listener.py"))
        .env("PYTHONIOENCODING", "utf-8")
        .env("SLACK_TOKEN", "xoxb-bench")
        .env("SLACK_CHANNEL", "#bench")
        .env("SLACK_API_URL", api_url);
    Subject { cmd: c, dir }
}

/// A URL where nothing listens: connection refused.
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/api")
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this too, without `--bench`: a quick smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let (n, n_rss, n_base, n_base_slow) = if full {
        (
            arg(&args, "--events", 20_000),
            arg(&args, "--rss-events", 100_000),
            arg(&args, "--baseline-events", 2_000),
            arg(&args, "--baseline-slow-events", 20),
        )
    } else {
        (100, 200, 20, 2)
    };
    let processes = 20;
    let only_rss = full && args.iter().any(|a| a == "--only-rss");
    let only_actions = full && args.iter().any(|a| a == "--only-actions");
    let only_fleet = full && args.iter().any(|a| a == "--only-fleet");
    let before = args
        .iter()
        .position(|a| a == "--before")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let standin = |fault: Fault| {
        let s = rt
            .block_on(StandIn::start(StandInOptions {
                // Healthy means every call is answered OK at once, so that the
                // baseline's posts all succeed too. supervisor-slack paces itself
                // (1 post per second per channel) and never meets the limit anyway.
                enforce_rate_limit: false,
                ..StandInOptions::default()
            }))
            .expect("start the Slack stand-in");
        s.set_fault(fault);
        s
    };

    let bin = Path::new(env!("CARGO_BIN_EXE_supervisor-slack"));
    println!(
        "load: {n} events per run ({n_rss} for the RSS run), {processes} processes, one channel; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "binary under test: {} ({:.1} MB, {})",
        bin.display(),
        std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        if full {
            "as built for cargo bench; see scripts/bench for the cargo build --release size"
        } else {
            "smoke run: the test build"
        }
    );
    println!("answer time = last payload byte written → `RESULT 2\\nOK` read back; load average at start: {}", loadavg());
    println!("posts = chat.postMessage calls the stand-in answered OK during the run; disk = state directory after the run\n");
    print_header();

    // The long runs, for peak RSS: Slack healthy, then Slack down (connection
    // refused; the scenario: everything waits in the outbox).
    let big_runs = || {
        let big_standin = standin(Fault::None);
        let big = drive_with(
            &big_standin,
            supervisor_slack(&big_standin.api_url()),
            n_rss,
            processes,
        );
        print(
            &format!("supervisor-slack, Slack healthy, {n_rss} events"),
            &big,
        );
        let big_down = drive(supervisor_slack(&refused_url()), n_rss, processes);
        print(
            &format!("supervisor-slack, Slack down, {n_rss} events"),
            &big_down,
        );
        (big_standin, big, big_down)
    };
    let socket_mode = || {
        let (off, on, clicks) = actions_ab(&rt, n, processes);
        print("supervisor-slack, Socket Mode off", &off);
        print("supervisor-slack, Socket Mode on, clicking", &on);
        println!(
            "Socket Mode on ÷ off (better of two runs each, alternated): p50 {:.2}×, p99 {:.2}×, events/s {:.2}×; {clicks} clicks acked during the on runs",
            on.p50.as_secs_f64() / off.p50.as_secs_f64(),
            on.p99.as_secs_f64() / off.p99.as_secs_f64(),
            on.per_sec / off.per_sec,
        );
    };
    if only_actions {
        socket_mode();
        return;
    }
    if let Some(before) = before {
        ab::before_after(&rt, &before, n, processes);
        return;
    }
    if only_fleet {
        ab::fleet_off_on(&rt, n, n_rss, processes);
        return;
    }
    if only_rss {
        let (big_standin, big, big_down) = big_runs();
        println!("load average at end: {}", loadavg());
        print_rss_traces(n_rss, &[("Slack healthy", &big), ("Slack down", &big_down)]);
        big_standin.stop();
        return;
    }

    let healthy = standin(Fault::None);
    let ours_healthy = drive_with(&healthy, supervisor_slack(&healthy.api_url()), n, processes);
    print("supervisor-slack, Slack healthy", &ours_healthy);

    let slow = standin(Fault::Slow(Duration::from_secs(1)));
    let ours_slow = drive_with(&slow, supervisor_slack(&slow.api_url()), n, processes);
    print("supervisor-slack, Slack slow (1 s per call)", &ours_slow);

    let ours_down = drive(supervisor_slack(&refused_url()), n, processes);
    print("supervisor-slack, Slack down (conn. refused)", &ours_down);

    let dropping = standin(Fault::Drop);
    let ours_drop = drive_with(
        &dropping,
        supervisor_slack(&dropping.api_url()),
        n,
        processes,
    );
    print("supervisor-slack, Slack drops connections", &ours_drop);

    socket_mode();
    ab::fleet_off_on(&rt, n, n, processes);

    let (big_standin, big, big_down) = big_runs();

    let Some(python) = baseline_python() else {
        println!("\nbaseline skipped: no python with supervisor.childutils (run scripts/test-env, or set BASELINE_PYTHON)");
        return;
    };
    // Fresh stand-ins: calls of earlier runs still in flight (slow) must not count.
    let healthy = standin(Fault::None);
    let base_healthy = drive_with(
        &healthy,
        baseline(&python, &healthy.api_url()),
        n_base,
        processes,
    );
    print(
        "baseline (childutils + urllib), Slack healthy",
        &base_healthy,
    );
    let slow = standin(Fault::Slow(Duration::from_secs(1)));
    let base_slow = drive_with(
        &slow,
        baseline(&python, &slow.api_url()),
        n_base_slow,
        processes,
    );
    print("baseline (childutils + urllib), Slack slow", &base_slow);

    println!("load average at end: {}", loadavg());
    print_rss_traces(n_rss, &[("Slack healthy", &big), ("Slack down", &big_down)]);

    println!("\nsupervisor-slack vs baseline (same machine, same run, same driver):");
    for (what, ours, base) in [
        ("Slack healthy", &ours_healthy, &base_healthy),
        ("Slack slow", &ours_slow, &base_slow),
    ] {
        println!(
            "  {what:<14} p99 {:.3} ms vs {:.3} ms (baseline ÷ ours: {:.1}×);  {:.0} vs {:.0} events/s (ours ÷ baseline: {:.1}×);  CPU {:.0} vs {:.0} µs/event",
            ms(ours.p99),
            ms(base.p99),
            base.p99.as_secs_f64() / ours.p99.as_secs_f64(),
            ours.per_sec,
            base.per_sec,
            ours.per_sec / base.per_sec,
            ours.cpu_us_per_event(),
            base.cpu_us_per_event(),
        );
    }
    healthy.stop();
    slow.stop();
    dropping.stop();
    big_standin.stop();
}
