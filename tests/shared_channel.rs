//! Several hosts posting into one channel share its budget without sharing state:
//! each listener learns from its own 429s (multiplicative decrease) and probes back
//! slowly (additive increase), so a storm's 429s come at its start, nothing is lost,
//! and a host's pace recovers when the others go quiet. Three real listeners over
//! pipes, one stand-in channel with Slack's limits scaled down tenfold.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pipe::PipeListener;
use common::slack::{header, options, reported, thread_serials, FAST, FAST_UPDATES};
use supervisor_slack::standin::StandIn;

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];
const PROCESSES: usize = 6;

/// The interval this host's listener has learnt for #ops, from its state database.
fn learnt_interval_ms(dir: &Path) -> Option<f64> {
    let conn = rusqlite::Connection::open(dir.join("state.pacing.db")).ok()?;
    let text: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pacing.post.#ops'",
            [],
            |r| r.get(0),
        )
        .ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["interval_ms"].as_f64()
}

/// Sends `count` events for this host, round robin over its processes, one every
/// `every`; returns how many it sent.
fn churn(l: &mut PipeListener, count: usize, every: Duration) -> usize {
    let states = [("STARTING", "RUNNING"), ("RUNNING", "STOPPING"), ("STOPPING", "STOPPED"), ("STOPPED", "STARTING")];
    for i in 0..count {
        let (from, to) = states[(i / PROCESSES) % states.len()];
        l.state(&format!("p{}", i % PROCESSES), from, to);
        std::thread::sleep(every);
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_in_one_channel_see_429s_only_at_a_storms_start_and_lose_nothing() {
    let standin = StandIn::start(options()).await.unwrap();
    let settings = format!("{FAST}{FAST_UPDATES}flap_threshold = 10000\n");
    let dirs: Vec<tempfile::TempDir> = HOSTS.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let url = standin.api_url();
    let started = Instant::now();
    // The storm: 8 s, each host 20 events a second (the channel takes 10 posts a second).
    let sent: Vec<(PipeListener, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = HOSTS
            .iter()
            .zip(&dirs)
            .map(|(host, dir)| {
                let url = url.clone();
                let settings = settings.clone();
                s.spawn(move || {
                    let mut l = PipeListener::start_on_host(dir.path(), &url, &settings, host);
                    let n = churn(&mut l, 160, Duration::from_millis(50));
                    (l, n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let storm = started.elapsed();
    let mut listeners: Vec<PipeListener> = sent.into_iter().map(|(l, _)| l).collect();

    // Every event of every host reaches its thread.
    let per_host = |standin: &StandIn| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in standin.channel("#ops") {
            let h = HOSTS.iter().find(|h| header(&t).ends_with(&format!("on {h}"))).unwrap();
            *m.entry(h.to_string()).or_default() += thread_serials(&t).len();
        }
        m
    };
    let all = |standin: &StandIn| {
        let m = per_host(standin);
        HOSTS.iter().all(|h| m.get(*h) == Some(&160))
    };
    assert!(
        standin.wait_for(Duration::from_secs(120), all).await,
        "delivered per host: {:?}",
        per_host(&standin)
    );
    let at_storm_end: Vec<Option<f64>> = dirs.iter().map(|d| learnt_interval_ms(d.path())).collect();
    // Every reply names, in its metadata, the host whose card it is in.
    for t in standin.channel("#ops") {
        let h = HOSTS.iter().find(|h| header(&t).ends_with(&format!("on {h}"))).unwrap();
        for r in t.replies.iter().filter(|r| r.metadata.is_some()) {
            let said = reported(r).unwrap();
            assert_eq!((said.host.as_str(), said.server.as_str()), (*h, "supervisor"), "{:?}", r.metadata);
        }
    }

    // 429s: some, at the storm's start, a few per host.
    let limited: Vec<_> = standin
        .calls()
        .into_iter()
        .filter(|c| c.status == 429)
        .collect();
    // Per host, the 429s it ran into: several of its calls already on their way
    // together (its threads post concurrently; within 100 ms of the one before) meet
    // one 429 of Slack's, and count once.
    let mut by_host: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last_of: BTreeMap<&str, Duration> = BTreeMap::new();
    for c in &limited {
        let text = c.body["text"].as_str().unwrap_or_default();
        let h = HOSTS.iter().find(|h| text.contains(*h)).copied().unwrap_or("?");
        let together = last_of.get(h).is_some_and(|t| c.at.saturating_sub(*t) <= Duration::from_millis(100));
        last_of.insert(h, c.at);
        if !together {
            *by_host.entry(h).or_default() += 1;
        }
    }
    let late: Vec<_> = limited
        .iter()
        .filter(|c| c.at > storm.mul_f64(0.4))
        .map(|c| c.at)
        .collect();
    eprintln!(
        "storm {storm:?}; {} posts; 429s: {} ({by_host:?}), after 40% of the storm: {late:?}; learnt intervals at the end (ms): {at_storm_end:?}",
        standin.calls_to("chat.postMessage").len(),
        limited.len()
    );
    assert!(!limited.is_empty(), "the storm was over the channel's budget");
    assert!(by_host.values().all(|n| *n <= 6), "a few per host: {by_host:?}");
    // A probe for more now and then may still meet one (at most one per host per
    // RAISE_EVERY): a handful, where hosts that learn nothing keep meeting them.
    assert!(late.len() <= 4, "429s after the storm's start: {late:?}");
    let posts = standin.calls_to("chat.postMessage").len();
    assert!(limited.len() * 100 <= posts * 15, "{} of {posts} posts were 429s", limited.len());
    // No host calls inside a Retry-After it was given — beyond calls already on
    // their way when the 429 was answered (its threads post concurrently; 100 ms of
    // grace). Another host's calls may: it was not told; that is the price of sharing
    // no state.
    let host_of = |c: &supervisor_slack::standin::Call| {
        let text = c.body["text"].as_str().unwrap_or_default().to_string();
        HOSTS.iter().find(|h| text.contains(*h)).copied()
    };
    let calls = standin.calls();
    for c in &limited {
        let until = c.at + Duration::from_secs(c.retry_after.unwrap_or(0));
        let inside: Vec<_> = calls
            .iter()
            .filter(|d| {
                d.at > c.at + Duration::from_millis(100) && d.at < until && host_of(d) == host_of(c)
            })
            .map(|d| d.at)
            .collect();
        assert!(
            inside.is_empty(),
            "{:?} told at {:?} to wait {:?}s, called at {inside:?}",
            host_of(c),
            c.at,
            c.retry_after
        );
    }
    assert!(
        at_storm_end.iter().all(|i| i.is_some_and(|ms| ms > 100.0)),
        "each host learnt a slower pace: {at_storm_end:?}"
    );

    // The others go quiet; host-a goes on and takes its pace back, slowly.
    let before = at_storm_end[0].unwrap();
    let mut a = listeners.remove(0);
    let extra = churn(&mut a, 240, Duration::from_millis(50));
    let want = 160 + extra;
    assert!(
        standin
            .wait_for(Duration::from_secs(120), |s| per_host(s).get("host-a") == Some(&want))
            .await,
        "{:?}",
        per_host(&standin)
    );
    let after = learnt_interval_ms(dirs[0].path()).unwrap();
    assert!(after < before, "host-a's pace recovers: {before} ms → {after} ms");
    a.close();
    for l in listeners {
        l.close();
    }
}
