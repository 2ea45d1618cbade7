//! "Nothing is lost", proved with real processes: a real supervisord runs the built
//! listener as `[eventlistener:slack]`, real programs change state, the Slack stand-in
//! receives the messages. Assertions read what users and operators see: the messages
//! Slack received (reply metadata carries the serials of the events it reports), the
//! outbox rows on disk (kept 24 h after delivery, so they list every event committed),
//! the listener's stderr (`received event serial=N` per event supervisord sent) and
//! supervisord's own log.
//!
//! Repeats are allowed only where the design cannot avoid them: a message whose
//! `chat.postMessage` reached Slack while the listener was being killed (the answer
//! never came back, so the next incarnation posts it again). For a reply that is a
//! repeated reply; for a thread's first message it is a second parent (an orphan card
//! stuck in an old state). The tests check that every repeat is such a one and report
//! how many there were. Seeds: `DURABILITY_SEED=N` replays a kill schedule.
//!
//! Needs `scripts/test-env` (a supervisord in `.venv/`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::outbox::{outbox, Row};
use common::slack::{
    assert_never_rate_limited, options, outage_failures, parent_process, parent_state, reported,
    serials, slack_listener, thread_serials,
};
use common::supervisord::*;
use common::{secs, signal, wait_until};
use supervisor_slack::standin::{Fault, StandIn, Thread};

/// Every serial Slack received, over all threads.
fn delivered_serials(threads: &[Thread]) -> BTreeSet<u64> {
    threads.iter().flat_map(thread_serials).collect()
}

/// Serials of PROCESS_STATE events any listener incarnation logged as received
/// (but those of the listener's own process, which get no card by default).
fn received_serials(sv: &Supervisord) -> BTreeSet<u64> {
    received_events(&sv.listener_stderr())
        .into_iter()
        .filter(|r| r.eventname.starts_with("PROCESS_STATE") && r.process != "slack")
        .map(|r| r.serial)
        .collect()
}

/// Waits until every event the listener received is in the outbox, nothing waits in
/// it, and Slack shows every committed serial. Panics with the logs otherwise.
fn wait_all_delivered(sv: &Supervisord, standin: &StandIn, db: &Path, timeout: Duration) {
    let mut why = String::new();
    let ok = wait_until(timeout, || {
        let rows = outbox(db);
        let stored: BTreeSet<u64> = rows.iter().map(|r| r.serial).collect();
        let pending = rows.iter().filter(|r| !r.delivered).count();
        let missing_rows = received_serials(sv).difference(&stored).count();
        let missing_slack = stored
            .difference(&delivered_serials(&standin.channel("#ops")))
            .count();
        why = format!(
            "{} rows, {pending} undelivered, {missing_rows} received but not stored, {missing_slack} stored but not in Slack",
            rows.len()
        );
        pending == 0 && missing_rows == 0 && missing_slack == 0
    });
    assert!(
        ok,
        "not everything was delivered: {why}\n{}",
        sv.diagnostics()
    );
}

/// What the stand-in was asked, kept for attributing repeats to kills.
struct Posts {
    /// `ts` of each successful `chat.postMessage` → when it reached the stand-in,
    /// measured from `t0` (taken just before the stand-in started, so these times are
    /// at most a few milliseconds early).
    arrived: BTreeMap<String, Duration>,
}

impl Posts {
    fn of(standin: &StandIn) -> Posts {
        Posts {
            arrived: standin
                .calls_to("chat.postMessage")
                .into_iter()
                .filter_map(|c| Some((c.ts?, c.at)))
                .collect(),
        }
    }

    /// Whether the message `ts` reached Slack shortly (within the slow stand-in's
    /// answer time plus a wide margin) before one of the kills: its answer may never
    /// have reached the listener, so the next incarnation cannot know it was posted.
    fn in_flight_at_a_kill(&self, ts: &str, kills: &[Duration]) -> bool {
        let at = self.arrived[ts];
        kills
            .iter()
            .any(|&k| at <= k && k <= at + Duration::from_secs(1))
    }
}

/// Waits until the outbox holds `process`'s latest event and it moved to `state`
/// (the listener may get events a moment after supervisorctl reports the state).
fn wait_committed(sv: &Supervisord, db: &Path, process: &str, state: &str) {
    let ok = wait_until(secs(10), || {
        outbox(db)
            .iter()
            .rev()
            .find(|r| r.process == process)
            .is_some_and(|r| r.to == state)
    });
    assert!(
        ok,
        "{process}'s {state} was not committed\n{}",
        sv.diagnostics()
    );
}

/// Checks, per thread: serials in increasing order once repeats are removed, each
/// serial in the thread of its own process, every repeated reply (all of whose
/// serials the thread had already shown) a repeat of a reply that was in flight when
/// the listener was killed. Returns the number of repeated replies.
fn check_threads(threads: &[Thread], rows: &[Row], posts: &Posts, kills: &[Duration]) -> usize {
    let process_of: BTreeMap<u64, &str> = rows
        .iter()
        .map(|r| (r.serial, r.process.as_str()))
        .collect();
    let mut duplicates = 0;
    for t in threads {
        let p = parent_process(t);
        // serial → the ts of the first reply that showed it
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        let mut order = Vec::new();
        for reply in &t.replies {
            let s = serials(reply);
            if s.is_empty() {
                // The one reply that reports no event: a flapping process settled.
                assert!(
                    reply.visible_text().contains("Settled"),
                    "a reply without serials in {p}'s thread"
                );
                continue;
            }
            if s.iter().all(|n| first.contains_key(n)) {
                duplicates += 1;
                let original = &first[&s[0]];
                assert!(
                    posts.in_flight_at_a_kill(original, kills),
                    "{p}'s thread repeats serials {s:?} first shown by a reply that was not in flight at any kill (posted at {:?}; kills at {kills:?})",
                    posts.arrived[original]
                );
                continue;
            }
            for n in s {
                assert_eq!(
                    process_of.get(&n).copied(),
                    Some(p.as_str()),
                    "serial {n} is in {p}'s thread"
                );
                if let std::collections::btree_map::Entry::Vacant(e) = first.entry(n) {
                    e.insert(reply.ts.clone());
                    order.push(n);
                }
            }
        }
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{p}'s thread is out of order: {order:?}"
        );
    }
    duplicates
}

/// One parent per process — except that a parent whose post was in flight when the
/// listener was killed gets a second one (see the module notes: the listener cannot
/// know the first one exists). Returns the number of such extra parents.
fn check_parents(threads: &[Thread], posts: &Posts, kills: &[Duration]) -> usize {
    let mut parents: BTreeMap<String, Vec<&Thread>> = BTreeMap::new();
    for t in threads {
        parents.entry(parent_process(t)).or_default().push(t);
    }
    let mut extra = 0;
    for (p, ts) in &parents {
        // The thread the listener knows is the one its replies went to (the last);
        // any other parent must be an orphan of a kill.
        for orphan in &ts[..ts.len() - 1] {
            extra += 1;
            assert!(
                orphan.replies.is_empty()
                    && posts.in_flight_at_a_kill(&orphan.parent.ts, kills),
                "{p} has {} parents; an extra one was not in flight at a kill (posted at {:?}, {} replies; kills at {kills:?})",
                ts.len(),
                posts.arrived[&orphan.parent.ts],
                orphan.replies.len()
            );
        }
    }
    extra
}

/// Exactly one parent per process.
fn assert_one_parent_each(threads: &[Thread]) {
    let mut parents: BTreeMap<String, usize> = BTreeMap::new();
    for t in threads {
        *parents.entry(parent_process(t)).or_default() += 1;
    }
    assert!(
        parents.values().all(|&n| n == 1),
        "parents per process: {parents:?}"
    );
}

fn kill9(pid: u32) {
    assert!(signal(pid, "KILL"), "kill -9 {pid}");
}

/// A seed from `DURABILITY_SEED`, else a fresh one; printed so a failure can be
/// replayed.
fn seed() -> u64 {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("durability: seed {seed} (replay with DURABILITY_SEED={seed})");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_and_keeps_one_ordered_thread_per_process() {
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed());
    let t0 = Instant::now();
    let standin = StandIn::start(options()).await.unwrap();
    standin.set_fault(Fault::Slow(Duration::from_millis(200)));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let names: Vec<String> = (0..10).map(|i| format!("flap{i}")).collect();
    let mut config = SupervisordConfig::new().loglevel("info").listener(
        slack_listener(dir.path(), &standin.api_url(), "")
            .startsecs(0)
            .startretries(100)
            .buffer_size(4096)
            .priority(999),
    );
    for n in &names {
        config = config.program(
            Program::new(n, "/bin/sh -c 'sleep 0.4; exit 1'")
                .autorestart("true")
                .startsecs(0),
        );
    }
    let mut sv = Supervisord::start(config);

    let kills = rng.u32(5..=8);
    let mut killed = 0;
    let mut kills_at = Vec::new();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.u64(300..=2000)));
        let mut pid = None;
        assert!(
            wait_until(secs(10), || {
                pid = sv.process_pid("slack");
                pid.is_some()
            }),
            "the listener did not come back\n{}",
            sv.diagnostics()
        );
        kill9(pid.unwrap());
        kills_at.push(t0.elapsed());
        killed += 1;
    }
    // Keep the load on until 500 process-state events were committed.
    assert!(
        wait_until(secs(30), || outbox(&db).len() >= 500),
        "fewer than 500 events committed\n{}",
        sv.diagnostics()
    );
    // Stop the flapping (a program caught between EXITED and its restart is not
    // stoppable at that instant: ask again until all are STOPPED).
    let mut stop = vec!["stop"];
    stop.extend(names.iter().map(String::as_str));
    let stopped = wait_until(secs(20), || {
        sv.ctl(&stop);
        names
            .iter()
            .all(|n| sv.state(n).as_deref() == Some("STOPPED"))
    });
    assert!(stopped, "the programs did not stop\n{}", sv.diagnostics());
    sv.wait_for_state("slack", "RUNNING", secs(10));
    for n in &names {
        wait_committed(&sv, &db, n, "STOPPED");
    }
    wait_all_delivered(&sv, &standin, &db, secs(120));

    let rows = outbox(&db);
    let threads = standin.channel("#ops");
    // Nothing lost: every committed event is in Slack, and every event any listener
    // incarnation received was committed.
    let stored: BTreeSet<u64> = rows.iter().map(|r| r.serial).collect();
    let in_slack = delivered_serials(&threads);
    let lost: Vec<_> = stored.difference(&in_slack).collect();
    assert!(lost.is_empty(), "committed but not in Slack: {lost:?}");
    let received = received_serials(&sv);
    let unstored: Vec<_> = received.difference(&stored).collect();
    assert!(
        unstored.is_empty(),
        "received but not committed: {unstored:?}"
    );
    assert!(
        rows.len() >= 500,
        "only {} events: not under load",
        rows.len()
    );
    // Order, right threads; repeats only of what was in flight at a kill.
    let posts = Posts::of(&standin);
    let duplicates = check_threads(&threads, &rows, &posts, &kills_at);
    let extra_parents = check_parents(&threads, &posts, &kills_at);
    for n in &names {
        assert!(
            threads.iter().any(|t| parent_process(t) == *n),
            "no thread for {n}"
        );
    }
    // The kills were real: supervisord saw the listener die and restarted it.
    let log = sv.main_log();
    assert!(
        log.matches("exited: slack (terminated by SIGKILL").count() >= killed as usize,
        "supervisord did not log {killed} kills\n{}",
        sv.diagnostics()
    );
    sv.assert_no_protocol_trouble();
    eprintln!(
        "durability: {} events committed, {} received lines, {killed} kills, {duplicates} repeated replies, {extra_parents} extra parents, {} threads, {:.1}s",
        rows.len(),
        received.len(),
        threads.len(),
        started.elapsed().as_secs_f64()
    );
    sv.stop();
}

/// Where no listener was killed: one parent per process, and each thread shows
/// exactly the process's committed events, each once, in commit order.
fn assert_threads_exact(threads: &[Thread], rows: &[Row]) {
    assert_one_parent_each(threads);
    let mut want: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in rows {
        want.entry(r.process.as_str()).or_default().push(r.serial);
    }
    for t in threads {
        let p = parent_process(t);
        assert_eq!(
            thread_serials(t),
            want.get(p.as_str()).cloned().unwrap_or_default(),
            "{p}'s thread shows its events once each, in order"
        );
    }
    let with_threads: BTreeSet<String> = threads.iter().map(parent_process).collect();
    for p in want.keys() {
        assert!(with_threads.contains(*p), "no thread for {p}");
    }
}

/// Waits until the parent of each `(process, state)` shows that state.
fn wait_parents(sv: &Supervisord, standin: &StandIn, want: &[(&str, &str)]) {
    let mut shown = BTreeMap::new();
    let ok = wait_until(secs(30), || {
        shown = standin
            .channel("#ops")
            .iter()
            .map(|t| (parent_process(t), parent_state(t)))
            .collect::<BTreeMap<_, _>>();
        want.iter()
            .all(|(p, s)| shown.get(*p).map(String::as_str) == Some(*s))
    });
    assert!(
        ok,
        "parents should show {want:?}, they show {shown:?}\n{}",
        sv.diagnostics()
    );
}

/// Serials of one process's events as the listener logged them on receipt, in order,
/// each once (a resend is logged again).
fn received_for(sv: &Supervisord, process: &str) -> Vec<(u64, String)> {
    let mut seen = HashSet::new();
    received_events(&sv.listener_stderr())
        .into_iter()
        .filter(|r| r.process == process && seen.insert(r.serial))
        .map(|r| {
            (
                r.serial,
                r.eventname.trim_start_matches("PROCESS_STATE_").to_string(),
            )
        })
        .collect()
}

/// Issue 4: three real programs — healthy, crashing at once (BACKOFF … FATAL), exiting
/// 0 after 2 s — and `coalesce_max = 1`: every state change supervisord reported is its
/// own reply in its process's thread, in order; the parents end in the final states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_of_three_real_programs_lands_in_its_thread_in_order() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("healthy"))
            .program(Program::new("crasher", "/bin/sh -c 'exit 1'").startretries(2))
            .program(Program::new("quitter", "/bin/sh -c 'sleep 2; exit 0'"))
            .listener(slack_listener(
                dir.path(),
                &standin.api_url(),
                "coalesce_max = 1\n",
            )),
    );
    sv.wait_for_state("healthy", "RUNNING", secs(10));
    sv.wait_for_state("crasher", "FATAL", secs(20));
    sv.wait_for_state("quitter", "EXITED", secs(10));
    for (p, state) in [
        ("healthy", "RUNNING"),
        ("crasher", "FATAL"),
        ("quitter", "EXITED"),
    ] {
        wait_committed(&sv, &db, p, state);
    }
    wait_all_delivered(&sv, &standin, &db, secs(30));
    wait_parents(
        &sv,
        &standin,
        &[
            ("healthy", "RUNNING"),
            ("crasher", "FATAL"),
            ("quitter", "EXITED"),
        ],
    );
    let rows = outbox(&db);
    let threads = standin.channel("#ops");
    assert_threads_exact(&threads, &rows);
    let programs: Vec<&Thread> = threads
        .iter()
        .filter(|t| parent_process(t) != "slack")
        .collect();
    assert_eq!(programs.len(), 3, "one parent per program");
    for t in programs {
        let p = parent_process(t);
        // What supervisord sent is what was stored, and each reply says its state.
        let received = received_for(&sv, &p);
        let stored: Vec<(u64, String)> = rows
            .iter()
            .filter(|r| r.process == p)
            .map(|r| (r.serial, r.to.clone()))
            .collect();
        assert_eq!(received, stored, "{p}: received = committed, in order");
        assert_eq!(t.replies.len(), stored.len(), "{p}: one reply per event");
        for (reply, (serial, state)) in t.replies.iter().zip(&stored) {
            assert_eq!(serials(reply), vec![*serial]);
            // The supervisord is named as it names itself (`identifier`), with the host.
            let said = reported(reply).expect("the event's identity in the metadata");
            assert_eq!(
                (said.host.as_str(), said.server.as_str()),
                ("web-1", "supervisor-slack-test"),
                "{:?}",
                reply.metadata
            );
            assert!(
                reply.visible_text().contains(state.as_str()),
                "{p}: the reply for serial {serial} says {state}: {}",
                reply.visible_text()
            );
        }
        let states: Vec<&str> = stored.iter().map(|(_, s)| s.as_str()).collect();
        match p.as_str() {
            "healthy" => assert_eq!(states, ["STARTING", "RUNNING"]),
            "quitter" => assert_eq!(states, ["STARTING", "RUNNING", "EXITED"]),
            "crasher" => {
                assert!(
                    states.len() >= 5
                        && states.ends_with(&["BACKOFF", "FATAL"])
                        && states[..states.len() - 1]
                            .chunks(2)
                            .all(|c| c == ["STARTING", "BACKOFF"]),
                    "crasher: {states:?}"
                );
            }
            other => panic!("unexpected thread {other}"),
        }
    }
    assert_never_rate_limited(&standin);
    sv.assert_no_protocol_trouble();
    sv.stop();
}

/// A listener restarted through supervisorctl between events continues the same
/// threads: no second parent, the parent edited to the new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_restarted_between_events_continues_the_same_threads() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("svc").startsecs(0))
            .listener(slack_listener(dir.path(), &standin.api_url(), "")),
    );
    sv.wait_for_state("svc", "RUNNING", secs(10));
    wait_committed(&sv, &db, "svc", "RUNNING");
    wait_all_delivered(&sv, &standin, &db, secs(20));
    let before = standin.channel("#ops");
    let first_pid = sv.process_pid("slack");
    sv.ctl_ok(&["restart", "slack"]);
    sv.wait_for_state("slack", "RUNNING", secs(10));
    assert_ne!(sv.process_pid("slack"), first_pid, "a new listener process");
    sv.ctl_ok(&["stop", "svc"]);
    sv.ctl_ok(&["start", "svc"]);
    wait_committed(&sv, &db, "svc", "RUNNING");
    wait_all_delivered(&sv, &standin, &db, secs(20));
    wait_parents(&sv, &standin, &[("svc", "RUNNING")]);
    let rows = outbox(&db);
    let threads = standin.channel("#ops");
    assert_threads_exact(&threads, &rows);
    let svc = |ts: &[Thread]| {
        ts.iter()
            .find(|t| parent_process(t) == "svc")
            .unwrap()
            .clone()
    };
    assert_eq!(
        svc(&threads).parent.ts,
        svc(&before).parent.ts,
        "the same parent continues"
    );
    let states: Vec<&str> = rows
        .iter()
        .filter(|r| r.process == "svc")
        .map(|r| r.to.as_str())
        .collect();
    assert_eq!(
        states,
        ["STARTING", "RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING"]
    );
    sv.assert_no_protocol_trouble();
    sv.stop();
}

/// Slack unreachable for 20 s (503s, then dropped connections) while real programs
/// change state: afterwards every event is delivered, once, in order. (The 60 s
/// version over pipes is in tests/delivery.rs; this one has supervisord in the loop.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_outage_with_real_supervisord_loses_nothing_and_keeps_order() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .program(Program::sleeper("worker").startsecs(0))
            .listener(slack_listener(dir.path(), &standin.api_url(), "")),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    sv.wait_for_state("worker", "RUNNING", secs(10));
    wait_committed(&sv, &db, "worker", "RUNNING");
    wait_all_delivered(&sv, &standin, &db, secs(20));

    standin.set_fault(Fault::Status(503));
    for step in [
        ["stop", "web"],
        ["start", "web"],
        ["stop", "worker"],
        ["start", "worker"],
    ] {
        sv.ctl_ok(&step);
        std::thread::sleep(Duration::from_millis(2500));
    }
    standin.set_fault(Fault::Drop);
    for step in [
        ["restart", "web"],
        ["restart", "worker"],
        ["restart", "web"],
    ] {
        sv.ctl_ok(&step);
        std::thread::sleep(Duration::from_millis(3300));
    }
    let during = outbox(&db);
    assert!(
        during.iter().filter(|r| !r.delivered).count() >= 20,
        "the outage held events back: {} undelivered",
        during.iter().filter(|r| !r.delivered).count()
    );
    standin.set_fault(Fault::None);

    wait_committed(&sv, &db, "worker", "RUNNING");
    wait_all_delivered(&sv, &standin, &db, secs(60));
    wait_parents(&sv, &standin, &[("web", "RUNNING"), ("worker", "RUNNING")]);
    let rows = outbox(&db);
    let threads = standin.channel("#ops");
    assert_threads_exact(&threads, &rows);
    let states = |p: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.process == p)
            .map(|r| r.to.clone())
            .collect()
    };
    let cycle = |n: usize| -> Vec<String> {
        let mut v = vec!["STARTING".to_string(), "RUNNING".to_string()];
        for _ in 0..n {
            v.extend(["STOPPING", "STOPPED", "STARTING", "RUNNING"].map(String::from));
        }
        v
    };
    assert_eq!(
        states("web"),
        cycle(3),
        "web: start, stop/start, 2 restarts"
    );
    assert_eq!(
        states("worker"),
        cycle(2),
        "worker: start, stop/start, restart"
    );
    assert!(outage_failures(&standin) > 0, "the outage was felt");
    sv.assert_no_protocol_trouble();
    sv.stop();
}
