//! Flood scenario driver (a benchmark, not a test): 20 processes flap for 60 seconds
//! (about 1,000 events) through the real listener into the Slack stand-in, which
//! enforces Slack's limits (1 post per second per channel with small bursts, 50
//! edits per minute). Prints: events in, Slack calls made, 429 answers, seconds from
//! the last event until every parent shows its final state, and transitions missing
//! from the threads.
//!
//! `cargo bench --bench flood` (`-- --seconds N --processes N` to change the storm).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_slack::supervisord::protocol::frame;
use supervisor_slack::standin::{StandIn, StandInOptions};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn expect(out: &mut impl Read, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    out.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    // Under `cargo test --all-targets` (no --bench): a few seconds of smoke.
    let seconds = arg(&args, "--seconds", if bench { 60 } else { 3 });
    let processes = arg(&args, "--processes", if bench { 20 } else { 3 }) as usize;
    let standin = StandIn::start(StandInOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.toml"),
        "channel = \"#ops\"\nhost = \"web-1\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_supervisor-slack"))
        .arg("--config")
        .arg(dir.path().join("settings.toml"))
        .arg("listen")
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .env("SLACK_TOKEN", "xoxb-flood")
        .env("SLACK_API_URL", standin.api_url())
        .env("SUPERVISOR_SLACK_LOG", "warn")
        .env_remove("SUPERVISOR_SERVER_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    expect(&mut stdout, b"READY\n");

    // Each process loops STARTING → BACKOFF; at the end half recover to RUNNING and
    // half give up with FATAL. ~1,000 events over 60 s for 20 processes.
    let names: Vec<String> = (0..processes).map(|i| format!("p{i:02}")).collect();
    let per_sec = 1000.0 / 60.0 * processes as f64 / 20.0;
    let total = (per_sec * seconds as f64) as usize;
    let mut state: Vec<&str> = vec!["STOPPED"; processes];
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut serial = 0u64;
    let start = Instant::now();
    let mut send = |serial: u64, name: &str, from: &str, to: &str| {
        let extra = match to {
            "STARTING" | "BACKOFF" => "tries:1",
            "RUNNING" => "pid:77",
            _ => "",
        };
        let s = serial.to_string();
        let payload = format!("processname:{name} groupname:{name} from_state:{from} {extra}");
        let ev = frame(
            &[
                ("ver", "3.0"),
                ("server", "flood"),
                ("serial", &s),
                ("pool", "slack"),
                ("poolserial", &s),
                ("eventname", &format!("PROCESS_STATE_{to}")),
            ],
            payload.trim_end(),
        );
        stdin.write_all(&ev).unwrap();
        stdin.flush().unwrap();
        expect(&mut stdout, b"RESULT 2\nOK");
        expect(&mut stdout, b"READY\n");
    };
    for i in 0..total {
        let p = i % processes;
        let to = if state[p] == "STARTING" {
            "BACKOFF"
        } else {
            "STARTING"
        };
        serial += 1;
        send(serial, &names[p], state[p], to);
        sent.entry(names[p].clone()).or_default().push(serial);
        state[p] = to;
        let due = start + Duration::from_secs_f64((i + 1) as f64 / per_sec);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let mut finals = BTreeMap::new();
    for (p, name) in names.iter().enumerate() {
        let to = if p % 2 == 0 { "RUNNING" } else { "FATAL" };
        let from = if to == "RUNNING" {
            "STARTING"
        } else {
            "BACKOFF"
        };
        if state[p] != from {
            serial += 1;
            send(serial, name, state[p], from);
            sent.get_mut(name).unwrap().push(serial);
        }
        serial += 1;
        send(serial, name, from, to);
        sent.get_mut(name).unwrap().push(serial);
        finals.insert(name.clone(), to);
    }
    let storm_end = Instant::now();
    let events = serial;

    // Every parent shows its process's final state.
    let final_ok = |s: &StandIn| {
        let threads = s.channel("#ops");
        finals.iter().all(|(name, st)| {
            threads.iter().any(|t| {
                t.parent
                    .header()
                    .is_some_and(|h| h.contains(&format!("{name} {st}")))
            })
        })
    };
    if std::env::var("FLOOD_TRACE").is_ok() {
        for _ in 0..60 {
            let threads = standin.channel("#ops");
            let not_final: Vec<String> = finals
                .iter()
                .filter(|(name, st)| {
                    !threads.iter().any(|t| {
                        t.parent
                            .header()
                            .is_some_and(|h| h.contains(&format!("{name} {st}")))
                    })
                })
                .map(|(n, _)| n.clone())
                .collect();
            let edits = standin
                .calls()
                .iter()
                .filter(|c| c.method == "chat.update")
                .count();
            eprintln!(
                "{:>5.1}s not final: {not_final:?} edits so far {edits}",
                storm_end.elapsed().as_secs_f64()
            );
            if not_final.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
    let parents_final = if standin.wait_for(Duration::from_secs(120), final_ok).await {
        Some(storm_end.elapsed())
    } else {
        None
    };
    let calls_at_final = standin.calls().len();

    // Every transition in some reply (metadata serials).
    let delivered = |s: &StandIn| -> BTreeSet<u64> {
        s.channel("#ops")
            .iter()
            .flat_map(|t| t.replies.iter())
            .filter_map(|m| {
                m.metadata
                    .as_ref()?
                    .pointer("/event_payload/serials")?
                    .as_str()
                    .map(str::to_owned)
            })
            .flat_map(|s| {
                s.split(',')
                    .map(|n| n.parse::<u64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let all: BTreeSet<u64> = sent.values().flatten().copied().collect();
    standin
        .wait_for(Duration::from_secs(120), |s| delivered(s).is_superset(&all))
        .await;
    let complete = storm_end.elapsed();
    let missing = all.difference(&delivered(&standin)).count();
    let calls = standin.calls();
    let limited = calls.iter().filter(|c| c.status == 429).count();
    let posts = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .count();
    let updates = calls.iter().filter(|c| c.method == "chat.update").count();
    let threads = standin.channel("#ops");
    let replies: usize = threads.iter().map(|t| t.replies.len()).sum();

    println!("flood: {processes} processes flapping for {seconds} s through the listener into the stand-in (Slack's limits)");
    println!("  events in                               {events}");
    println!(
        "  Slack calls made (until all delivered)  {} ({posts} posts, {updates} edits)",
        calls.len()
    );
    println!("  Slack calls when every parent was final {calls_at_final}");
    println!("  429 answers received                    {limited}");
    match parents_final {
        Some(d) => println!(
            "  last event → every parent final         {:.1} s",
            d.as_secs_f64()
        ),
        None => println!("  last event → every parent final         NOT within 120 s"),
    }
    println!(
        "  last event → every transition in a reply {:.1} s",
        complete.as_secs_f64()
    );
    println!(
        "  parents / replies                       {} / {replies}",
        threads.len()
    );
    println!("  transitions missing from the threads    {missing}");
    println!("  targets: ≤ 150 calls, 0 × 429, parents final ≤ 5 s, 0 missing");
    drop(stdin);
    let _ = child.wait();
}
