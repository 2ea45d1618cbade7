//! Scale benchmark of the fleet store: many simulated hosts in one process, each
//! with its own connection and the same fleet store code the listener runs
//! (`PostgresShared`), against one private PostgreSQL. For 25 to 200 hosts:
//! - **at rest**: every host beats (with a 20-process table) and asks for the
//!   board's lease; the holder draws the board (hosts, silence) every 2 s. The
//!   cadence is sped up (heartbeat 5 s, lease asked every 5 s) and the figure is
//!   also given at the defaults (heartbeat 30 s, lease asked every 30 s);
//! - **in a storm**: every host also wants to post to one channel as fast as the
//!   fleet's budget lets it (10 posts/s, a burst of 2): the posts per second the
//!   fleet got against the pace, and the statements per second it cost;
//! - statements per second as the server counts them (`xact_commit`), the server's
//!   CPU, and the heartbeat's latency.
//! Then the growth with hosts, extrapolated to 500.
//!
//! `cargo bench --bench fleet` (after `--`: `--hosts 25,50,100,200`, `--secs 10`).
//! Under `cargo test --all-targets` (no `--bench`): 4 hosts, 2 s, as a smoke run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use supervisor_slack::config::FleetSettings;
use supervisor_slack::pacing::Call;
use supervisor_slack::secret::Secret;
use supervisor_slack::store::{Budget, HostProcess, PostgresShared, SharedState};
use supervisor_slack::supervisord::event::State;

#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

const PACE: Duration = Duration::from_millis(100);

struct Row {
    hosts: usize,
    rest_qps: f64,
    rest_qps_defaults: f64,
    storm_qps: f64,
    posts_per_sec: f64,
    server_cpu_rest: f64,
    server_cpu_storm: f64,
    beat_p50_ms: f64,
    beat_p99_ms: f64,
}

fn table() -> Vec<HostProcess> {
    (0..20)
        .map(|i| HostProcess {
            group: format!("app{i}"),
            process: format!("app{i}"),
            state: if i == 7 { State::Fatal } else { State::Running },
            since: Some(Utc::now()),
            pid: Some(1000 + i),
            expected: None,
        })
        .collect()
}

/// Transactions the server committed in `db` so far.
fn commits(cluster: &postgres::Cluster, db: &str) -> u64 {
    cluster
        .psql("postgres", &format!("SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"))
        .parse()
        .unwrap_or(0)
}

/// CPU seconds (user + system) of every server process of the cluster so far.
fn server_cpu(cluster: &postgres::Cluster) -> f64 {
    let data = cluster.dir().join("data");
    let Ok(pid) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return 0.0;
    };
    let Some(pm) = pid.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
        return 0.0;
    };
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if p == pm || ppid == pm {
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            total += (ut + st) / ticks;
        }
    }
    total
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

async fn run(cluster: &postgres::Cluster, hosts: usize, secs: u64) -> Row {
    let url = cluster.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let settings = FleetSettings {
        url: Secret::new(url.clone()),
        name: "default".into(),
        heartbeat: Duration::from_secs(5),
        silent_after: Duration::from_secs(15),
        by_program: true,
        socket_connections: 2,
    };
    let budget = Budget {
        post_burst: 2,
        post_interval: PACE,
        updates_per_minute: 600,
    };
    let fleet: Vec<Arc<PostgresShared>> = (0..hosts)
        .map(|_| PostgresShared::start(&settings, budget).unwrap())
        .collect();
    for s in &fleet {
        tokio::time::timeout(Duration::from_secs(60), s.until_connected()).await.expect("connected");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let beats: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    // At rest: beats and leases, spread over the interval.
    for (i, s) in fleet.iter().enumerate() {
        let (s, stop, beats) = (s.clone(), stop.clone(), beats.clone());
        let name = format!("host-{i:04}");
        let offset = settings.heartbeat.mul_f64(i as f64 / hosts as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let t = table();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                if s.heartbeat(&name, &t, true).await.is_ok() {
                    beats.lock().unwrap().push(started.elapsed());
                }
                let held = s.lease("board #ops", &name, Duration::from_secs(15)).await.unwrap_or(false);
                if held {
                    // The holder's board: every 2 s, the hosts and their silence.
                    for _ in 0..2 {
                        let _ = s.hosts().await;
                        let _ = s.newly_silent(Duration::from_secs(15)).await;
                        let _ = s.back_again(Duration::from_secs(15)).await;
                        let _ = s.lease("board #ops", &name, Duration::from_secs(15)).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, cpu0, t0) = (commits(cluster, &db), server_cpu(cluster), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let rest_s = t0.elapsed().as_secs_f64();
    let rest_qps = (commits(cluster, &db) - c0) as f64 / rest_s;
    let server_cpu_rest = (server_cpu(cluster) - cpu0) / rest_s * 100.0;
    // The storm: every host posts as fast as the budget lets it.
    let posts = Arc::new(AtomicUsize::new(0));
    let storming = Arc::new(AtomicBool::new(true));
    for s in &fleet {
        let (s, posts, storming) = (s.clone(), posts.clone(), storming.clone());
        tasks.push(tokio::spawn(async move {
            while storming.load(Ordering::SeqCst) {
                s.acquire(Call::Post("#ops")).await;
                if storming.load(Ordering::SeqCst) {
                    posts.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c1, cpu1, p1, t1) = (commits(cluster, &db), server_cpu(cluster), posts.load(Ordering::SeqCst), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let storm_s = t1.elapsed().as_secs_f64();
    let storm_qps = (commits(cluster, &db) - c1) as f64 / storm_s;
    let posts_per_sec = (posts.load(Ordering::SeqCst) - p1) as f64 / storm_s;
    let server_cpu_storm = (server_cpu(cluster) - cpu1) / storm_s * 100.0;
    storming.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.abort();
    }
    let mut b = beats.lock().unwrap().clone();
    // At the defaults: a beat every 30 s and a lease asked every 30 s per host, the
    // holder's 4 statements every 2 s.
    let rest_qps_defaults = hosts as f64 * (1.0 / 30.0 + 1.0 / 30.0) + 2.0;
    Row {
        hosts,
        rest_qps,
        rest_qps_defaults,
        storm_qps,
        posts_per_sec,
        server_cpu_rest,
        server_cpu_storm,
        beat_p50_ms: pct(&mut b, 0.5),
        beat_p99_ms: pct(&mut b, 0.99),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let hosts: Vec<usize> = if full {
        opt("--hosts")
            .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|| vec![25, 50, 100, 200])
    } else {
        vec![4]
    };
    let secs: u64 = if full { opt("--secs").and_then(|v| v.parse().ok()).unwrap_or(10) } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = postgres::Cluster::start();
    println!("fleet store scale: simulated hosts in one process, one connection each, one private PostgreSQL; {secs} s per phase");
    println!("budget: one channel, {} ms per post, a burst of 2 (pace {:.1} posts/s)", PACE.as_millis(), 1.0 / PACE.as_secs_f64());
    println!(
        "{:>6} {:>12} {:>14} {:>11} {:>10} {:>9} {:>10} {:>10} {:>11} {:>11}",
        "hosts", "rest stmt/s", "at defaults", "storm st/s", "posts/s", "of pace", "cpu rest", "cpu storm", "beat p50", "beat p99"
    );
    let mut rows = Vec::new();
    for n in hosts {
        let r = rt.block_on(run(&cluster, n, secs));
        println!(
            "{:>6} {:>12.1} {:>14.1} {:>11.1} {:>10.2} {:>8.0}% {:>9.0}% {:>9.0}% {:>8.2} ms {:>8.2} ms",
            r.hosts,
            r.rest_qps,
            r.rest_qps_defaults,
            r.storm_qps,
            r.posts_per_sec,
            r.posts_per_sec * PACE.as_secs_f64() * 100.0,
            r.server_cpu_rest,
            r.server_cpu_storm,
            r.beat_p50_ms,
            r.beat_p99_ms
        );
        rows.push(r);
    }
    if rows.len() >= 2 {
        let (a, b) = (&rows[0], &rows[rows.len() - 1]);
        let per_host = |f: fn(&Row) -> f64| (f(b) - f(a)) / (b.hosts - a.hosts) as f64;
        let at = |f: fn(&Row) -> f64, n: f64| f(b) + per_host(f) * (n - b.hosts as f64);
        println!(
            "growth per host: {:.3} stmt/s at rest (test cadence), {:.3} in a storm, {:.2}% server CPU at rest",
            per_host(|r| r.rest_qps),
            per_host(|r| r.storm_qps),
            per_host(|r| r.server_cpu_rest)
        );
        println!(
            "500 hosts, by extrapolation: {:.0} stmt/s at rest at the test cadence ({:.0} at the defaults), {:.0} stmt/s in a storm, ~{:.0}% of one server core at rest, ~{:.0}% in a storm; 500 connections",
            at(|r| r.rest_qps, 500.0),
            500.0 * (2.0 / 30.0) + 2.0,
            at(|r| r.storm_qps, 500.0),
            at(|r| r.server_cpu_rest, 500.0),
            at(|r| r.server_cpu_storm, 500.0),
        );
    }
}
