//! One card per program across the fleet (`thread_by = "program"`, the default in a
//! fleet), with real hosts — real supervisords, each with its own listener — a real
//! PostgreSQL and the Slack stand-in: a bad deploy to every host is one card that
//! counts and names the hosts, at most one broadcast, each host's failure and its
//! stderr in the thread; a fix deployed on one host shows; hosts racing on a first
//! failure make one card; the card's editor moves when it dies; `thread_by = "host"`
//! keeps a card per host.
//!
//! Needs `scripts/test-env` (supervisord, PostgreSQL).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fleet::Host;
use common::postgres;
use common::secs;
use common::slack::{assert_never_rate_limited, options, reported};
use common::supervisord::Program;
use supervisor_slack::standin::{StandIn, Thread};

/// `api`: fails at once with a line on stderr, unless its host's flag file exists.
fn api(flag: &std::path::Path) -> Program {
    Program::new(
        "api",
        &format!(
            "/bin/sh -c 'test -f {} && exec sleep 1000; echo \"api: cannot bind :8080 (address in use)\" >&2; sleep 0.3; exit 1'",
            flag.display()
        ),
    )
    // Long enough that a supervisord busy at its start (its loop ticks about once a
    // second) cannot call the 0.3 s life RUNNING: it reaps the exit first.
    .startsecs(5)
    .startretries(1)
}

fn header(t: &Thread) -> String {
    t.parent.header().unwrap_or_default()
}

/// The program cards (parents) in the channel, by their first word.
fn cards(standin: &StandIn) -> BTreeMap<String, Vec<Thread>> {
    let mut out: BTreeMap<String, Vec<Thread>> = BTreeMap::new();
    for t in standin.channel("#ops") {
        let h = header(&t);
        if let Some(name) = h.split_whitespace().nth(1) {
            out.entry(name.to_string()).or_default().push(t);
        }
    }
    out
}

fn card(standin: &StandIn, name: &str) -> Option<Thread> {
    cards(standin).get(name).and_then(|v| v.first().cloned())
}

struct Fleet {
    standin: StandIn,
    hosts: Vec<Host>,
    flags: tempfile::TempDir,
    url: String,
}

fn flag(flags: &tempfile::TempDir, host: &str) -> std::path::PathBuf {
    flags.path().join(format!("{host}.fixed"))
}

async fn fleet(names: &[&str], extra: &str) -> Fleet {
    let standin = StandIn::start(options()).await.unwrap();
    let url = postgres::database();
    let flags = tempfile::tempdir().unwrap();
    // Started together: the first failures race for the card.
    let api_url = standin.api_url();
    let hosts = common::fleet::start_together(names, |h| {
        Host::start(h, &api_url, &url, &[Program::sleeper("web"), api(&flag(&flags, h))], extra)
    });
    Fleet {
        standin,
        hosts,
        flags,
        url,
    }
}

/// A bad deploy on three hosts: one api card counting the three hosts and naming
/// them, one web card, at most one broadcast, and every host's failure in the
/// thread, naming its host, with its stderr line. Then the fix on one host shows on
/// the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_deploy_on_three_hosts_is_one_card_broadcast_at_most_once_with_every_hosts_failure() {
    let f = fleet(&["web-1", "web-2", "web-3"], "").await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    let s = &f.standin;
    assert!(
        s.wait_for(secs(30), |s| card(s, "api").is_some_and(|t| header(&t).contains("FATAL on 3 hosts"))).await,
        "the api card counts the three hosts: {:?}",
        cards(s).keys().collect::<Vec<_>>()
    );
    assert!(
        s.wait_for(secs(30), |s| card(s, "web").is_some_and(|t| header(&t).contains("RUNNING on 3 hosts"))).await,
        "{:?}",
        s.channel("#ops").iter().map(header).collect::<Vec<_>>()
    );
    let all = cards(s);
    assert_eq!(all.len(), 2, "one card per program: {:?}", all.keys().collect::<Vec<_>>());
    assert!(all.values().all(|v| v.len() == 1), "no program has two cards");
    // Every host's failure is in the thread, naming its host, with its stderr line.
    let fatal_of = |t: &Thread, host: &str| {
        t.replies.iter().any(|r| {
            let text = r.visible_text();
            reported(r).is_some_and(|rep| rep.host == host) && text.contains("FATAL") && text.contains("cannot bind :8080")
        })
    };
    assert!(
        s.wait_for(secs(30), |s| card(s, "api").is_some_and(|t| ["web-1", "web-2", "web-3"].iter().all(|h| fatal_of(&t, h)))).await,
        "each host's FATAL with its stderr: {:#?}",
        card(s, "api").map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>())
    );
    let api = card(s, "api").unwrap();
    let body = api.parent.visible_text();
    assert!(body.contains("*web-1*") && body.contains("*web-2*") && body.contains("*web-3*"), "names the hosts: {body}");
    let broadcast = api.replies.iter().filter(|r| r.reply_broadcast).count();
    assert!(broadcast <= 1, "broadcast at most once: {broadcast}");
    assert_eq!(s.channel_flow("#ops").iter().filter(|m| m.reply_broadcast).count(), broadcast);
    // The fix, deployed on one host.
    std::fs::write(flag(&f.flags, "web-2"), b"").unwrap();
    f.hosts[1].sv.ctl_ok(&["start", "api"]);
    assert!(
        s.wait_for(secs(30), |s| card(s, "api").is_some_and(|t| header(&t).contains("FATAL on 2 of 3 hosts · 1 RUNNING"))).await,
        "the card shows the fix on one host: {:?}",
        card(s, "api").map(|t| header(&t))
    );
    assert_never_rate_limited(s);
    for h in &f.hosts {
        h.sv.assert_no_protocol_trouble();
    }
}

/// The host that draws a program's card dies: another host takes the card over
/// within the lease's time and draws the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cards_editor_dies_and_another_host_takes_over() {
    let mut f = fleet(&["web-1", "web-2", "web-3"], "").await;
    let s = &f.standin;
    assert!(
        s.wait_for(secs(40), |s| card(s, "api").is_some_and(|t| header(&t).contains("FATAL on 3 hosts"))).await,
        "{:?}\n{}",
        s.channel("#ops").iter().map(header).collect::<Vec<_>>(),
        f.hosts.iter().map(|h| format!("{}: {}\n{}", h.name, String::from_utf8_lossy(&h.sv.ctl(&["status"]).stdout), h.log())).collect::<Vec<_>>().join("\n")
    );
    let db = f.url.rsplit('/').next().unwrap().to_string();
    let holder = postgres::shared().psql(&db, "SELECT holder FROM leases WHERE name = 'card api #ops'");
    let victim = f.hosts.iter().position(|h| h.name == holder).unwrap_or_else(|| panic!("a holder: {holder:?}"));
    f.hosts[victim].kill9();
    let other = (victim + 1) % 3;
    std::fs::write(flag(&f.flags, &f.hosts[other].name), b"").unwrap();
    f.hosts[other].sv.ctl_ok(&["start", "api"]);
    let started = std::time::Instant::now();
    assert!(
        s.wait_for(secs(40), |s| card(s, "api").is_some_and(|t| header(&t).contains("1 RUNNING"))).await,
        "another host draws the card: {:?}",
        card(s, "api").map(|t| header(&t))
    );
    eprintln!(
        "figure: the card drew the change {:.1} s after its editor was killed (lease 10 s)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(cards(s)["api"].len(), 1, "still one card");
}

/// `thread_by = "host"` in a fleet keeps a card per program and host, as without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_by_host_keeps_a_card_per_host() {
    let f = fleet(&["web-1", "web-2"], "thread_by = \"host\"\n").await;
    let s = &f.standin;
    let per_host = |s: &StandIn| {
        s.channel("#ops")
            .iter()
            .filter(|t| header(t).starts_with("🔴 api FATAL on web-") || header(t).contains("api FATAL on web-"))
            .count()
    };
    assert!(
        s.wait_for(secs(40), |s| per_host(s) == 2).await,
        "{:?}",
        s.channel("#ops").iter().map(header).collect::<Vec<_>>()
    );
    assert!(s.channel("#ops").iter().all(|t| !header(t).contains(" — ")), "no card across the fleet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(per_host(s), 2);
}
