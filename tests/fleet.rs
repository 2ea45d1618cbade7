//! Fleet mode with real hosts: several real supervisords on this machine, each with
//! its own listener and host label, sharing one Slack stand-in and one real
//! PostgreSQL (a private cluster). One budget per channel for the whole fleet, one
//! board, silent hosts named, and the database's faults: stopped in a storm,
//! restarted, down when a listener starts.
//!
//! Needs `scripts/test-env` (supervisord, PostgreSQL).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::fleet::{churner, Host};
use common::postgres::{self, Cluster};
use common::slack::{assert_never_rate_limited, options, reported};
use common::supervisord::Program;
use common::{secs, wait_until};
use supervisor_slack::standin::{StandIn, Thread};

/// Settings that make a storm a storm: every change its own reply (no digests).
const STORM: &str = "flap_threshold = 1000\ncoalesce_max = 5\n";

fn churners(n: usize) -> Vec<Program> {
    (1..=n).map(|i| churner(&format!("churn{i}"))).collect()
}

fn stop_churners(h: &Host, n: usize) {
    let names: Vec<String> = (1..=n).map(|i| format!("churn{i}")).collect();
    let mut args = vec!["stop"];
    args.extend(names.iter().map(String::as_str));
    h.sv.ctl_ok(&args);
}

/// Per host, the serials of the process-state events its replies report (with
/// repeats, if any).
fn replied(standin: &StandIn) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for t in standin.channel("#ops") {
        for r in &t.replies {
            if let Some(rep) = reported(r) {
                out.entry(rep.host).or_default().extend(rep.serials);
            }
        }
    }
    out
}

/// The serials a host's listener received of its churners' changes.
fn received(h: &Host) -> BTreeSet<u64> {
    h.received()
        .into_iter()
        .filter(|(_, p)| p.starts_with("churn"))
        .map(|(s, _)| s)
        .collect()
}

/// Whether every change each host received is in its replies.
fn complete(standin: &StandIn, hosts: &[Host]) -> bool {
    let got = replied(standin);
    hosts.iter().all(|h| {
        let mine: BTreeSet<u64> = got.get(&h.name).into_iter().flatten().copied().collect();
        received(h).is_subset(&mine)
    })
}

/// `(process, host)` of every card (parent) in the channel, with how many times;
/// the host is `""` for a program's card across the fleet.
fn cards(standin: &StandIn) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for t in standin.channel("#ops") {
        let header = t.parent.header().unwrap_or_default();
        let words: Vec<&str> = header.split_whitespace().collect();
        if words.get(2) == Some(&"—") {
            *out.entry((words[1].to_string(), String::new())).or_insert(0) += 1;
        } else if words.len() >= 5 && words[words.len() - 2] == "on" && !header.contains("fleet:") {
            *out.entry((words[1].to_string(), words[words.len() - 1].to_string())).or_insert(0) += 1;
        }
    }
    out
}

fn boards(standin: &StandIn) -> Vec<Thread> {
    standin
        .channel("#ops")
        .into_iter()
        .filter(|t| t.parent.header().is_some_and(|h| h.contains("fleet:") || h.starts_with("🖥")))
        .collect()
}

/// Posts per second the stand-in accepted while a backlog waited, from the first
/// post to the last.
fn pace(standin: &StandIn) -> f64 {
    let posts: Vec<Duration> = standin
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.status == 200)
        .map(|c| c.at)
        .collect();
    match (posts.first(), posts.last()) {
        (Some(a), Some(b)) if b > a => posts.len() as f64 / (*b - *a).as_secs_f64(),
        _ => 0.0,
    }
}

/// Three real hosts storm one channel (four programs each, crash-looping, every
/// change its own reply) through one fleet: the channel's budget is shared, so Slack
/// never answers 429 and no call lands inside a Retry-After; every change of every
/// host reaches its thread; the fleet posts near the channel's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_storming_one_channel_share_its_budget_and_get_no_429() {
    let standin = StandIn::start(options()).await.unwrap();
    let url = postgres::database();
    let hosts: Vec<Host> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|h| Host::start(h, &standin.api_url(), &url, &churners(4), STORM))
        .collect();
    tokio::time::sleep(secs(10)).await;
    let storm_end = Instant::now();
    for h in &hosts {
        stop_churners(h, 4);
    }
    assert!(
        standin.wait_for(secs(150), |s| complete(s, &hosts)).await,
        "every change in its thread: received {:?}\nreplied {:?}\n{}",
        hosts.iter().map(|h| (h.name.clone(), received(h).len())).collect::<Vec<_>>(),
        replied(&standin).iter().map(|(h, s)| (h.clone(), s.len())).collect::<Vec<_>>(),
        hosts[0].log()
    );
    eprintln!(
        "figure: history complete {:.1} s after the storm; {} posts at {:.1} posts/s (the channel allows 10/s, a burst of 3)",
        storm_end.elapsed().as_secs_f64(),
        standin.calls_to("chat.postMessage").len(),
        pace(&standin)
    );
    assert_never_rate_limited(&standin);
    let got = replied(&standin);
    for h in &hosts {
        let mine = &got[&h.name];
        let unique: BTreeSet<u64> = mine.iter().copied().collect();
        assert_eq!(unique.len(), mine.len(), "{}: nothing posted twice", h.name);
        h.sv.assert_no_protocol_trouble();
    }
    assert!(cards(&standin).values().all(|n| *n == 1), "one card per program: {:?}", cards(&standin));
    assert_eq!(cards(&standin).len(), 4, "cards per program across the fleet: {:?}", cards(&standin));
}

/// One board for the fleet: drawn by one host at a time; a host that dies is named
/// silent on it (within silent_after and a heartbeat), said once in its thread; the
/// board moves to another host when its holder dies; a host that comes back is said
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_board_for_the_fleet_names_a_killed_host_silent_and_moves_when_its_holder_dies() {
    let standin = StandIn::start(options()).await.unwrap();
    let url = postgres::database();
    let api = standin.api_url();
    let programs = vec![Program::sleeper("api"), Program::new("broken", "/bin/sh -c 'exit 3'").startretries(0)];
    let mut hosts: Vec<Host> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|h| Host::start(h, &api, &url, &programs, "board = true\n"))
        .collect();
    let board_shows = |s: &StandIn, needle: &str| {
        boards(s)
            .first()
            .and_then(|b| b.parent.header())
            .is_some_and(|h| h.contains(needle))
    };
    assert!(
        // Each host runs api and its listener; broken is FATAL everywhere.
        standin.wait_for(secs(30), |s| board_shows(s, "fleet: 3 hosts, 6 running, 3 FATAL")).await,
        "the fleet board counts every host: {:?}",
        boards(&standin).iter().map(|b| b.parent.header()).collect::<Vec<_>>()
    );
    assert_eq!(boards(&standin).len(), 1, "one board for the fleet, no host boards");
    let body = boards(&standin)[0].parent.visible_text();
    assert_eq!(body.matches("broken* FATAL on").count(), 3, "failing processes first, each with its host: {body}");
    // Which host draws it?
    let holder = postgres::shared().psql(url.rsplit('/').next().unwrap(), "SELECT holder FROM leases WHERE name = 'board #ops'");
    let victim = hosts.iter().position(|h| h.name == holder).expect("a host holds the board");
    let killed = hosts[victim].name.clone();
    let t = Instant::now();
    hosts[victim].kill9();
    assert!(
        standin.wait_for(secs(40), |s| board_shows(s, "1 silent")).await,
        "another host took the board over and names {killed} silent: {:?}",
        boards(&standin).iter().map(|b| b.parent.header()).collect::<Vec<_>>()
    );
    eprintln!("figure: {killed} (the board's holder) named silent {:.1} s after kill -9 (silent_after 3 s, heartbeat 1 s; the lease lasts silent_after)", t.elapsed().as_secs_f64());
    let body = boards(&standin)[0].parent.visible_text();
    assert!(body.contains(&format!("{killed}* silent since")), "{body}");
    assert_eq!(boards(&standin).len(), 1, "still one board");
    let said = |s: &StandIn, needle: &str| {
        boards(s)
            .first()
            .map(|b| b.replies.iter().filter(|r| r.visible_text().contains(needle)).count())
            .unwrap_or(0)
    };
    assert!(standin.wait_for(secs(10), |s| said(s, "is silent since") == 1).await);
    // The host comes back (a new supervisord and listener with the same label).
    let dir = std::mem::replace(&mut hosts[victim].dir, tempfile::tempdir().unwrap());
    drop(dir);
    hosts[victim] = Host::start(&killed, &api, &url, &programs, "board = true\n");
    assert!(
        standin.wait_for(secs(30), |s| said(s, "is back") == 1 && board_shows(s, "fleet: 3 hosts")).await,
        "the return is said once and the board counts it again"
    );
    tokio::time::sleep(secs(3)).await;
    assert_eq!(said(&standin, "is back"), 1, "said once");
    assert_eq!(said(&standin, "is silent since"), 1, "said once");
    assert!(!boards(&standin)[0].parent.header().unwrap().contains("silent"));
    assert_never_rate_limited(&standin);
}

/// PostgreSQL stopped for 20 s in the middle of a storm, then started again: every
/// host goes on answering supervisord, nothing is lost, nothing is posted twice, no
/// card gets a second parent, and the listeners reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_in_a_storm_loses_nothing_posts_nothing_twice_and_makes_no_second_parent() {
    let standin = StandIn::start(options()).await.unwrap();
    let cluster = Cluster::start();
    let url = cluster.database();
    let hosts: Vec<Host> = ["web-1", "web-2"]
        .iter()
        .map(|h| Host::start(h, &standin.api_url(), &url, &churners(3), STORM))
        .collect();
    assert!(standin.wait_for(secs(20), |s| cards(s).len() == 3).await, "every card: {:?}", cards(&standin));
    cluster.stop_server();
    let down = Instant::now();
    tokio::time::sleep(secs(20)).await;
    let during: BTreeMap<String, usize> = hosts.iter().map(|h| (h.name.clone(), received(h).len())).collect();
    cluster.start_server();
    eprintln!("figure: the database was down {:.1} s; the hosts received {during:?} changes by its end", down.elapsed().as_secs_f64());
    tokio::time::sleep(secs(5)).await;
    for h in &hosts {
        stop_churners(h, 3);
    }
    assert!(
        standin.wait_for(secs(150), |s| complete(s, &hosts)).await,
        "every change in its thread after the outage\n{}",
        hosts[0].log()
    );
    let got = replied(&standin);
    for h in &hosts {
        let mine = &got[&h.name];
        let unique: BTreeSet<u64> = mine.iter().copied().collect();
        assert_eq!(unique.len(), mine.len(), "{}: nothing posted twice", h.name);
        h.sv.assert_no_protocol_trouble();
        let log = h.log();
        assert!(log.contains("lost the fleet database"), "{log}");
        assert!(log.matches("connected to the fleet database").count() >= 2, "reconnected by itself: {log}");
        assert!(!log.contains(common::slack::TOKEN));
    }
    assert!(cards(&standin).values().all(|n| *n == 1), "no second parent: {:?}", cards(&standin));
    assert_eq!(cards(&standin).len(), 3, "one card per program: {:?}", cards(&standin));
    assert_never_rate_limited(&standin);
}

/// A listener started while PostgreSQL is down starts and answers supervisord (the
/// events wait in its outbox), and joins the fleet when the database comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_started_while_the_database_is_down_answers_and_joins_when_it_is_back() {
    let standin = StandIn::start(options()).await.unwrap();
    let cluster = Cluster::start();
    let url = cluster.database();
    cluster.stop_server();
    let host = Host::start("web-1", &standin.api_url(), &url, &[Program::sleeper("api")], "");
    host.sv.wait_for_state("api", "RUNNING", secs(10));
    assert!(
        wait_until(secs(10), || common::outbox::outbox(&host.dir.path().join("state.db")).iter().any(|r| r.process == "api")),
        "the events are on disk"
    );
    tokio::time::sleep(secs(2)).await;
    assert!(standin.channel("#ops").is_empty(), "nothing posted without the fleet's thread map");
    let log = host.log();
    assert!(log.contains("cannot reach the fleet database"), "{log}");
    assert!(!log.contains("postgres@"), "the URL is not in the log: {log}");
    cluster.start_server();
    assert!(
        standin.wait_for(secs(30), |s| cards(s).contains_key(&("api".to_string(), String::new()))).await,
        "the card, once the database is back: {:?}\n{}",
        cards(&standin),
        host.log()
    );
    let db = url.rsplit('/').next().unwrap();
    assert!(
        wait_until(secs(10), || cluster.psql(db, "SELECT host FROM hosts") == "web-1"),
        "the host joined the fleet"
    );
    host.sv.assert_no_protocol_trouble();
}
