//! Production faults (issue 14): what Slack, the disk and restarts can do to the
//! listener, and what Slack receives then. The listener is the real binary, driven
//! over pipes as supervisord drives it; Slack is the stand-in.

mod common;

use common::disk::Tmpfs;
use common::outbox::outbox;
use common::pipe::PipeListener as Listener;
use common::slack::{first_reply, options, standin_and_listener, wait, HungSlack, FAST};
use supervisor_slack::standin::{Fault, StandIn};

/// How many times the listener tries an error it does not know (`dispatch::retry`).
const UNKNOWN_TRIES: u32 = 5;

/// A FATAL whose card Slack refuses still pages the route's people: the plain-text
/// fallback keeps the mentions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_text_fallback_keeps_the_mentions() {
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}updates_per_minute = 600\nmentions = [\"<!subteam^S0123ABC>\"]\n")).await;
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the first reply", |s| {
        s.channel("#ops").iter().any(|t| t.replies.len() == 1)
    })
    .await;
    standin.set_fault(
        Fault::api_error("invalid_blocks")
            .on("chat.postMessage")
            .times(1),
    );
    l.state("alpha", "RUNNING", "FATAL");
    wait(&standin, 10, "the FATAL reply", |s| {
        s.channel("#ops").iter().any(|t| t.replies.len() == 2)
    })
    .await;
    let posts = standin.calls_to("chat.postMessage");
    let refused = posts
        .iter()
        .position(|c| c.error.as_deref() == Some("invalid_blocks"))
        .expect("the refused card");
    assert!(
        posts[refused].body["text"]
            .as_str()
            .unwrap()
            .contains("<!subteam^S0123ABC>"),
        "the card itself carried the mention"
    );
    let plain = &posts[refused + 1];
    assert!(plain.body.get("attachments").is_none(), "{}", plain.body);
    let text = plain.body["text"].as_str().unwrap();
    assert!(text.contains("FATAL"), "{text}");
    assert!(text.contains("<!subteam^S0123ABC>"), "the fallback pages too: {text}");
    l.close();
}

/// Promise 1: supervisord is never slowed down, whatever Slack does. Here Slack
/// accepts every connection and never answers: each event is still answered before
/// the next one is sent (the listener's reads are bounded: a listener that waited for
/// Slack would fail the test, not hang it), and each is on disk, waiting.
#[test]
fn a_slack_that_never_answers_never_holds_up_an_answer() {
    let slack = HungSlack::start();
    let dir = tempfile::tempdir().unwrap();
    let mut l = Listener::start(dir.path(), &slack.api_url(), FAST);
    l.state("alpha", "STOPPED", "STARTING");
    assert!(
        common::wait_until(common::secs(10), || !slack.requests().is_empty()),
        "the listener is waiting on Slack: {} connections\n{}",
        slack.connections(),
        l.stderr()
    );
    // Failures, recoveries, several threads: none waits for Slack.
    let script = [
        ("alpha", "STARTING", "RUNNING"),
        ("bravo", "STOPPED", "STARTING"),
        ("bravo", "STARTING", "BACKOFF"),
        ("bravo", "BACKOFF", "STARTING"),
        ("bravo", "STARTING", "BACKOFF"),
        ("bravo", "BACKOFF", "FATAL"),
        ("alpha", "RUNNING", "EXITED"),
        ("alpha", "EXITED", "STARTING"),
        ("alpha", "STARTING", "RUNNING"),
    ];
    for round in 0..5 {
        for (p, from, to) in script {
            l.state(&format!("{p}{round}"), from, to);
        }
    }
    let sent = l.serial();
    assert_eq!(sent, 46);
    let rows = outbox(&l.dir.join("state.db"));
    assert_eq!(
        rows.iter().map(|r| r.serial).collect::<Vec<_>>(),
        (1..=sent).collect::<Vec<_>>(),
        "every event answered is on disk, in order"
    );
    assert!(rows.iter().all(|r| !r.delivered), "Slack never answered: {rows:?}");
    assert!(
        !slack.requests().is_empty() && slack.requests().iter().all(|r| r.starts_with("POST /api/")),
        "{:?}",
        slack.requests()
    );
    // The end of stdin still ends it (bounded: deliveries under way get their last
    // chance, then it goes).
    l.close();
}

/// Two listeners on one state file would deliver everything twice: the second one
/// refuses to start, naming the file and the first one's pid, with nothing on stdout.
/// The lock goes with the process, even after `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_listener_on_the_same_state_file_refuses_to_start() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = Listener::start(dir.path(), &standin.api_url(), FAST);
    let state = dir.path().join("state.db");
    let second = std::process::Command::new(common::SLACK_BIN)
        .args(["--config"])
        .arg(dir.path().join("settings.toml"))
        .args(["listen", "--state"])
        .arg(&state)
        .env("SLACK_TOKEN", common::slack::TOKEN)
        .env("SLACK_API_URL", standin.api_url())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(second.stdout.is_empty(), "nothing for supervisord to misread");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!("another listener (pid {})", first.pid())),
        "{stderr}"
    );
    assert!(stderr.contains(&state.display().to_string()), "{stderr}");

    first.kill9();
    let again = Listener::start(dir.path(), &standin.api_url(), FAST);
    again.close();
}

/// Starts a listener whose state database cannot be opened (a directory stands where
/// the file should be), so that its events are held in memory; sends two events.
fn listener_with_a_refusing_disk(dir: &std::path::Path) -> Listener {
    std::fs::create_dir(dir.join("state.db")).unwrap();
    let mut l = Listener::start(dir, common::pipe::NO_SLACK, FAST);
    l.state("alpha", "STOPPED", "STARTING");
    l.state("alpha", "STARTING", "RUNNING");
    assert!(
        common::wait_until(common::secs(5), || l
            .stderr()
            .contains("holding events in memory")),
        "{}",
        l.stderr()
    );
    l
}

fn waiting_serials(dir: &std::path::Path) -> Vec<u64> {
    let store = supervisor_slack::store::Outbox::open(&dir.join("state.db")).unwrap();
    let key = supervisor_slack::supervisord::event::ThreadKey {
        host: "web-1".into(),
        group: "alpha".into(),
        process: "alpha".into(),
    };
    store
        .pending(&key, "#ops", 100)
        .unwrap()
        .iter()
        .map(|e| e.event.serial)
        .collect()
}

/// SIGTERM while events are held in memory and the disk is back: they are written
/// before the process exits, in order.
#[test]
fn sigterm_writes_held_events_when_the_disk_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener_with_a_refusing_disk(dir.path());
    std::fs::remove_dir(dir.path().join("state.db")).unwrap();
    assert!(common::signal(l.pid(), "TERM"));
    let stderr_of = dir.path().join("stderr.log");
    l.close();
    assert_eq!(waiting_serials(dir.path()), vec![1, 2]);
    let stderr = std::fs::read_to_string(stderr_of).unwrap();
    assert!(stderr.contains("wrote the events held in memory before exiting"), "{stderr}");
}

/// SIGTERM while the disk still refuses: nothing vanishes without a word — the log
/// says how many events and which serials are lost.
#[test]
fn sigterm_with_the_disk_still_refusing_names_the_lost_serials() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener_with_a_refusing_disk(dir.path());
    assert!(common::signal(l.pid(), "TERM"));
    let stderr_of = dir.path().join("stderr.log");
    l.close();
    let stderr = std::fs::read_to_string(stderr_of).unwrap();
    assert!(
        stderr.contains("exiting with events the state database never took"),
        "{stderr}"
    );
    assert!(stderr.contains("lost=2"), "{stderr}");
    assert!(stderr.contains("serials=[1, 2]"), "{stderr}");
}

/// stdin closed (supervisord gone) with the disk back: the same last chance.
#[test]
fn eof_writes_held_events_when_the_disk_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let l = listener_with_a_refusing_disk(dir.path());
    std::fs::remove_dir(dir.path().join("state.db")).unwrap();
    l.close();
    assert_eq!(waiting_serials(dir.path()), vec![1, 2]);
}

/// A database write that fails after Slack accepted a post (here: another process
/// holds the database's write lock for 12 s, longer than SQLite's 5 s busy wait)
/// keeps Slack's answer and retries the write: one parent, one reply, nothing posted
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_after_an_accepted_post_posts_nothing_twice() {
    let (standin, dir, mut l) = standin_and_listener(FAST).await;
    // The parent's post is slow: the lock is taken while Slack holds it.
    standin.set_fault(
        Fault::Slow(std::time::Duration::from_millis(1500))
            .on("chat.postMessage")
            .times(1),
    );
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the parent's post", |s| {
        !s.calls_to("chat.postMessage").is_empty()
    })
    .await;
    let lock = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let held_from = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    lock.execute_batch("ROLLBACK").unwrap();
    let held = held_from.elapsed();
    wait(&standin, 20, "the reply", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1, "one parent: {threads:?}");
    assert_eq!(threads[0].replies.len(), 1, "one reply");
    assert_eq!(
        standin.calls_to("chat.postMessage").len(),
        2,
        "a parent and a reply, each posted once (the lock was held {held:?})"
    );
    let stderr = l.stderr();
    assert!(
        stderr.contains("cannot record what Slack accepted") && stderr.contains("recorded after all"),
        "{stderr}"
    );
    l.close();
}

/// An error code Slack gives that this version does not know is tried a few times,
/// then the entry is set aside — kept on disk with the reason, noted in its thread,
/// listed by `check` — and the thread goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_slack_error_sets_the_entry_aside_and_the_thread_goes_on() {
    let (standin, dir, mut l) = standin_and_listener(FAST).await;
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the first reply", |s| {
        s.channel("#ops").iter().any(|t| t.replies.len() == 1)
    })
    .await;
    standin.set_fault(
        Fault::api_error("brand_new_error")
            .on("chat.postMessage")
            .times(UNKNOWN_TRIES),
    );
    l.state("alpha", "RUNNING", "STOPPING");
    wait(&standin, 30, "the set-aside note", |s| {
        s.channel("#ops").iter().any(|t| {
            t.replies.iter().any(|r| r.visible_text().contains("set aside"))
        })
    })
    .await;
    l.state("alpha", "STOPPING", "STOPPED");
    wait(&standin, 30, "the next reply", |s| {
        s.channel("#ops").iter().any(|t| {
            t.replies.iter().any(|r| common::slack::serials(r) == vec![3])
        })
    })
    .await;
    let refused = standin
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.error.as_deref() == Some("brand_new_error"))
        .count();
    assert_eq!(refused as u32, UNKNOWN_TRIES, "bounded tries");
    let store = supervisor_slack::store::Outbox::open(&dir.path().join("state.db")).unwrap();
    let (count, aside) = store.set_aside_entries(10).unwrap();
    assert_eq!(count, 1, "{aside:?}");
    assert_eq!(aside[0].serial, 2);
    assert!(aside[0].reason.contains("brand_new_error"), "{aside:?}");
    let finding = supervisor_slack::check::check_set_aside(&dir.path().join("state.db")).unwrap();
    assert!(finding.what.contains("1 event(s) set aside"), "{finding:?}");
    assert!(finding.what.contains("serial 2 of"), "{finding:?}");
    l.close();
}

/// One outbox row that cannot be read back (damaged on disk) is set aside alone: the
/// rows before and after it in the same thread are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_row_is_set_aside_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Slack unreachable: the rows wait.
    let mut l = Listener::start(dir.path(), common::pipe::NO_SLACK, FAST);
    l.state("alpha", "STOPPED", "STARTING");
    l.state("alpha", "STARTING", "RUNNING");
    l.state("alpha", "RUNNING", "STOPPING");
    let serial = l.serial();
    l.close();
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let changed = db
        .execute("UPDATE outbox SET event = '{\"not\": \"an event\"' WHERE serial = 2", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let standin = StandIn::start(options()).await.unwrap();
    let l = Listener::start_with(dir.path(), &standin.api_url(), FAST, serial);
    wait(&standin, 20, "the readable rows", |s| {
        s.channel("#ops").iter().any(|t| {
            let serials = common::slack::thread_serials(t);
            serials.contains(&1) && serials.contains(&3)
        })
    })
    .await;
    let threads = standin.channel("#ops");
    assert!(!common::slack::thread_serials(&threads[0]).contains(&2));
    let store = supervisor_slack::store::Outbox::open(&dir.path().join("state.db")).unwrap();
    let (count, aside) = store.set_aside_entries(10).unwrap();
    assert_eq!(count, 1);
    assert_eq!(aside[0].serial, 2);
    assert!(aside[0].reason.contains("cannot be read back"), "{aside:?}");
    l.close();
}

/// With the outbox full, a new event is never folded into an entry that is being
/// delivered (it would be marked delivered without being sent): the FATAL that comes
/// while the RUNNING is in flight reaches Slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_never_folds_into_an_entry_in_flight() {
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}outbox_cap = 1\n")).await;
    l.state("alpha", "STOPPED", "STARTING");
    wait(&standin, 10, "the card and its first reply", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
    // The next reply is in flight for a while.
    standin.set_fault(
        Fault::Slow(std::time::Duration::from_millis(1500))
            .on("chat.postMessage")
            .times(1),
    );
    let posts = standin.calls_to("chat.postMessage").len();
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the RUNNING reply's post", |s| {
        s.calls_to("chat.postMessage").len() > posts
    })
    .await;
    l.state("alpha", "RUNNING", "FATAL");
    wait(&standin, 20, "the FATAL reply", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| common::slack::thread_serials(t).contains(&3))
    })
    .await;
    let threads = standin.channel("#ops");
    assert_eq!(common::slack::thread_serials(&threads[0]), vec![1, 2, 3]);
    l.close();
}

/// `kill -9` right after a 429: the next listener sends nothing before the
/// Retry-After an earlier one was given has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_right_after_a_429_waits_out_its_retry_after() {
    let standin = StandIn::start(supervisor_slack::standin::StandInOptions {
        retry_after_secs: 4,
        ..options()
    })
    .await
    .unwrap();
    standin.set_fault(Fault::Status(429).on("chat.postMessage").times(1));
    let dir = tempfile::tempdir().unwrap();
    let mut l = Listener::start(dir.path(), &standin.api_url(), FAST);
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the 429", |s| {
        s.calls().iter().any(|c| c.status == 429)
    })
    .await;
    let serial = l.serial();
    l.kill9();
    let mut again = Listener::start_with(dir.path(), &standin.api_url(), FAST, serial);
    again.state("bravo", "STARTING", "RUNNING");
    wait(&standin, 20, "both threads", |s| {
        s.channel("#ops").iter().filter(|t| !t.replies.is_empty()).count() == 2
    })
    .await;
    assert!(
        standin.calls_during_retry_after().is_empty(),
        "calls inside the announced wait: {:?}",
        standin.calls_during_retry_after()
    );
    assert!(again.stderr().contains("an earlier run was told to wait by Slack"));
    again.close();
}

/// `kill -9` right after a burst: the next listener takes no burst it has not
/// earned, so Slack (one a second, with a margin of one over the listener's burst of
/// two) never says 429. A listener that started with a full bucket would burst two
/// posts into a channel budget its predecessor had just spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_right_after_a_burst_takes_no_new_burst() {
    let standin = StandIn::start(supervisor_slack::standin::StandInOptions {
        post_interval: std::time::Duration::from_secs(1),
        burst: 3,
        ..options()
    })
    .await
    .unwrap();
    let settings = FAST.replace("post_interval = \"100ms\"", "post_interval = \"1s\"");
    let dir = tempfile::tempdir().unwrap();
    let mut l = Listener::start(dir.path(), &standin.api_url(), &settings);
    for p in ["alpha", "bravo", "charlie"] {
        l.state(p, "STARTING", "RUNNING");
    }
    wait(&standin, 10, "the burst", |s| s.calls_to("chat.postMessage").len() >= 3).await;
    let serial = l.serial();
    l.kill9();
    let mut again = Listener::start_with(dir.path(), &standin.api_url(), &settings, serial);
    for p in ["delta", "echo"] {
        again.state(p, "STARTING", "RUNNING");
    }
    wait(&standin, 30, "every thread", |s| {
        s.channel("#ops").iter().filter(|t| !t.replies.is_empty()).count() == 5
    })
    .await;
    common::slack::assert_never_rate_limited(&standin);
    again.close();
}

/// `running = "after_failure"` after a restart: the state a process was in before it
/// started again comes from the store, so a recovery right after a `kill -9` of the
/// listener is still reported (and a routine start still is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_right_after_a_restart_is_still_told_from_a_routine_start() {
    let settings = format!("{FAST}running = \"after_failure\"\n");
    let (standin, dir, mut l) = standin_and_listener(&settings).await;
    l.state("alpha", "STARTING", "FATAL");
    l.state("bravo", "RUNNING", "STOPPED");
    wait(&standin, 10, "both threads", |s| {
        s.channel("#ops").iter().filter(|t| !t.replies.is_empty()).count() == 2
    })
    .await;
    let serial = l.serial();
    l.kill9();
    let mut again = Listener::start_with(dir.path(), &standin.api_url(), &settings, serial);
    again.state("alpha", "STARTING", "RUNNING"); // serial 3: a recovery
    again.state("bravo", "STARTING", "RUNNING"); // serial 4: a routine start
    wait(&standin, 10, "the recovery", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| common::slack::thread_serials(t).contains(&3))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let all: Vec<u64> = standin
        .channel("#ops")
        .iter()
        .flat_map(common::slack::thread_serials)
        .collect();
    assert!(!all.contains(&4), "bravo's routine start is not reported: {all:?}");
    again.close();
}

/// A process that was flapping when the listener restarted is still flapping after:
/// the transitions of the window come from the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_is_remembered_across_a_restart() {
    let settings = format!("{FAST}flap_threshold = 6\n");
    let (standin, dir, mut l) = standin_and_listener(&settings).await;
    for (from, to) in [("STARTING", "RUNNING"), ("RUNNING", "EXITED"), ("EXITED", "STARTING")]
        .iter()
        .cycle()
        .take(5)
    {
        l.state("alpha", from, to);
    }
    wait(&standin, 10, "five transitions", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| common::slack::thread_serials(t).len() == 5)
    })
    .await;
    assert!(!l.stderr().contains("process is flapping"), "not yet: 5 of 6");
    let serial = l.serial();
    l.kill9();
    let mut again = Listener::start_with(dir.path(), &standin.api_url(), &settings, serial);
    again.state("alpha", "STARTING", "RUNNING");
    again.state("alpha", "RUNNING", "EXITED");
    assert!(
        common::wait_until(common::secs(10), || again.stderr().contains("process is flapping")),
        "{}",
        again.stderr()
    );
    again.close();
}

/// A full disk: events are answered and held in memory while the state database
/// cannot grow; when space comes back they are written and delivered, in order, each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_and_posts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "size=4m") else {
        return;
    };
    let standin = StandIn::start(options()).await.unwrap();
    let state = disk.path().join("state.db");
    let mut l = Listener::start_with_state(dir.path(), &standin.api_url(), FAST, &state);
    l.state("alpha", "STARTING", "RUNNING");
    first_reply(&standin).await;
    disk.fill();
    l.state("alpha", "RUNNING", "STOPPING");
    l.state("alpha", "STOPPING", "STOPPED");
    assert!(
        common::wait_until(common::secs(5), || l.stderr().contains("holding events in memory")),
        "{}",
        l.stderr()
    );
    disk.free();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // reopen is tried once a second
    l.state("alpha", "STOPPED", "STARTING");
    wait(&standin, 20, "every transition", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| common::slack::thread_serials(t).len() >= 4)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1);
    assert_eq!(common::slack::thread_serials(&threads[0]), vec![1, 2, 3, 4], "in order, each once");
    l.close();
}

/// "A clean stop lets deliveries under way finish" (README, promise 2): SIGTERM while
/// a reply is at a slow Slack. The listener waits for Slack's answer and records it
/// before it exits, so the next start does not post that reply again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_post_under_way_finish_and_the_next_start_posts_it_not_again() {
    let (standin, dir, mut l) = standin_and_listener(FAST).await;
    l.state("alpha", "STOPPED", "STARTING");
    first_reply(&standin).await;
    // Slack takes 1.5 s over the next post (call_timeout is 2 s), and keeps it even
    // if the caller went away.
    standin.set_fault(
        Fault::Slow(std::time::Duration::from_millis(1500))
            .on("chat.postMessage")
            .times(1),
    );
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the reply at Slack, unanswered", |s| {
        s.calls_to("chat.postMessage")
            .iter()
            .any(|c| c.fault.is_some() && c.status == 0)
    })
    .await;
    let status = l.terminate();
    assert!(status.success(), "{status}");
    let rows = outbox(&dir.path().join("state.db"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.delivered), "Slack's answer is on disk: {rows:?}");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!log.contains("exiting with deliveries under way"), "{log}");

    // The next start: one more event, delivered after anything still owed.
    let mut again = Listener::start_with(dir.path(), &standin.api_url(), FAST, 2);
    again.state("alpha", "RUNNING", "STOPPING");
    wait(&standin, 10, "serial 3", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| common::slack::thread_serials(t).contains(&3))
    })
    .await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1, "one parent");
    assert_eq!(
        common::slack::thread_serials(&threads[0]),
        vec![1, 2, 3],
        "serial 2 posted once"
    );
    again.close();
}
