//! The outbox and the one-host shared state against a real SQLite file: rows on
//! disk, duplicates, the full-outbox fold, a corrupt file, a newer schema, a disk
//! that refuses writes for a while; the thread map (parents replaced only from the
//! parent they replace), mutes, clicks and their audit, the signing key, the budget's
//! gate across a restart.

mod common;

use chrono::{TimeZone, Utc};
use common::events::{self, EventBuilder};
use common::pipe::event_frame;
use supervisor_slack::listen::Handler;
use supervisor_slack::routing::OneChannel;
use supervisor_slack::pacing::Call;
use supervisor_slack::store::{
    AuditKeep, Appended, Budget, Outbox, Posted, SharedState, SqliteShared, WaitingView,
};
use supervisor_slack::supervisord::event::{ProcessState, State, ThreadKey};
use supervisor_slack::supervisord::protocol::{EventReader, Read};

/// `api:process` on `web-1`, pid 100, at 14:00.
fn ev(process: &str, serial: u64, from: State, to: State) -> ProcessState {
    events::ev(process, to)
        .from(from)
        .group("api")
        .server("sv")
        .serial(serial)
        .pid(100)
        .at(Utc.with_ymd_and_hms(2026, 11, 26, 14, 0, 0).unwrap())
}

fn key(process: &str) -> ThreadKey {
    ThreadKey {
        host: "web-1".into(),
        group: "api".into(),
        process: process.into(),
    }
}

#[test]
fn appended_events_come_back_in_order_per_thread_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut s = Outbox::open(&path).unwrap();
        s.append(
            "sv/1",
            "#ops",
            &ev("a", 1, State::Stopped, State::Starting),
            0,
        )
        .unwrap();
        s.append(
            "sv/1",
            "#ops",
            &ev("b", 2, State::Stopped, State::Starting),
            0,
        )
        .unwrap();
        s.append(
            "sv/1",
            "#ops",
            &ev("a", 3, State::Starting, State::Running),
            2,
        )
        .unwrap();
    }
    let s = Outbox::open(&path).unwrap();
    let keys = s.pending_keys().unwrap();
    assert_eq!(
        keys,
        vec![
            (key("a"), "#ops".to_string()),
            (key("b"), "#ops".to_string())
        ]
    );
    let a = s.pending(&key("a"), "#ops", 10).unwrap();
    assert_eq!(
        a.iter().map(|e| e.event.serial).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(a[1].dropped_before, 2);
    assert_eq!(a[1].event, ev("a", 3, State::Starting, State::Running));
    assert_eq!(
        s.pending(&key("a"), "#ops", 1).unwrap().len(),
        1,
        "limit is honoured"
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn same_instance_and_serial_is_a_duplicate_but_a_new_supervisord_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Outbox::open(&dir.path().join("state.db")).unwrap();
    let e = ev("a", 7, State::Starting, State::Running);
    assert!(matches!(
        s.append("sv/100", "#ops", &e, 0).unwrap(),
        Appended::Inserted(_)
    ));
    assert_eq!(
        s.append("sv/100", "#ops", &e, 0).unwrap(),
        Appended::Duplicate
    );
    assert!(matches!(
        s.append("sv/200", "#ops", &e, 0).unwrap(),
        Appended::Inserted(_)
    ));
    assert_eq!(s.pending_count().unwrap(), 2);
}

#[tokio::test]
async fn delivery_marks_entries_and_records_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = Outbox::open(&path).unwrap();
    let shared = shared(&path);
    s.append(
        "sv/1",
        "#ops",
        &ev("a", 1, State::Stopped, State::Starting),
        0,
    )
    .unwrap();
    s.append(
        "sv/1",
        "#ops",
        &ev("a", 2, State::Starting, State::Running),
        0,
    )
    .unwrap();
    let batch = s.pending(&key("a"), "#ops", 10).unwrap();
    let parent = posted("1.000100");
    assert!(shared.set_parent(&key("a"), "#ops", None, &parent, false).await.unwrap());
    shared
        .record_delivery(&key("a"), "#ops", &[State::Starting, State::Running], &batch[1].event)
        .await
        .unwrap();
    s.mark_delivered(&[batch[0].id, batch[1].id]).unwrap();
    assert!(s.pending_keys().unwrap().is_empty());
    let t = shared.thread(&key("a"), "#ops").await.unwrap().unwrap();
    assert_eq!(t.parent_ts.as_deref(), Some("1.000100"));
    assert_eq!(t.channel_id.as_deref(), Some("C1"));
    assert_eq!(t.history, vec![State::Starting, State::Running]);
    assert_eq!(t.latest, Some(batch[1].event.clone()));
    assert_eq!(s.prune(chrono::Duration::zero()).unwrap(), 2);
}

#[test]
fn the_parents_view_of_the_outbox_is_the_newest_waiting_event_and_the_newest_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Outbox::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(
        s.waiting_view(&key("a"), "#ops", 3).unwrap(),
        WaitingView::default()
    );
    let states = [
        State::Starting,
        State::Running,
        State::Stopping,
        State::Stopped,
    ];
    let mut from = State::Stopped;
    for (i, to) in states.into_iter().enumerate() {
        s.append("sv/1", "#ops", &ev("a", i as u64 + 1, from, to), 0)
            .unwrap();
        from = to;
    }
    s.append("sv/1", "#ops", &ev("b", 9, State::Stopped, State::Fatal), 0)
        .unwrap();
    let first = s.pending(&key("a"), "#ops", 1).unwrap();
    s.mark_delivered(&[first[0].id]).unwrap();
    let view = s.waiting_view(&key("a"), "#ops", 2).unwrap();
    assert_eq!(
        view.newest,
        Some(ev("a", 4, State::Stopping, State::Stopped)),
        "the newest waiting event, whatever the limit"
    );
    assert_eq!(view.states, vec![State::Stopping, State::Stopped]);
    let all = s.waiting_view(&key("a"), "#ops", 10).unwrap();
    assert_eq!(
        all.states,
        vec![State::Running, State::Stopping, State::Stopped],
        "delivered entries and other threads left out, oldest first"
    );
}

#[test]
fn full_outbox_folds_new_events_into_the_newest_waiting_one_of_their_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Outbox::open(&dir.path().join("state.db")).unwrap();
    s.append(
        "sv/1",
        "#ops",
        &ev("a", 1, State::Stopped, State::Starting),
        0,
    )
    .unwrap();
    s.coalesce(
        "sv/1",
        "#ops",
        &ev("a", 2, State::Starting, State::Backoff),
        0,
    )
    .unwrap();
    s.coalesce("sv/1", "#ops", &ev("a", 3, State::Backoff, State::Fatal), 1)
        .unwrap();
    // A thread with nothing waiting still gets its entry.
    assert!(matches!(
        s.coalesce(
            "sv/1",
            "#ops",
            &ev("b", 4, State::Stopped, State::Starting),
            0
        )
        .unwrap(),
        Appended::Inserted(_)
    ));
    let a = s.pending(&key("a"), "#ops", 10).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].event.to,
        State::Fatal,
        "the thread ends in its real state"
    );
    assert_eq!(a[0].coalesced, 2);
    assert_eq!(a[0].dropped_before, 1);
}

#[test]
fn a_corrupt_file_is_moved_aside_and_a_fresh_store_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        b"this is not a database, it is a text file that got here somehow ".repeat(100),
    )
    .unwrap();
    let mut s = Outbox::open(&path).unwrap();
    s.append(
        "sv/1",
        "#ops",
        &ev("a", 1, State::Stopped, State::Starting),
        0,
    )
    .unwrap();
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(std::fs::read(dir.path().join(&aside[0]))
        .unwrap()
        .starts_with(b"this is not a database"));
}

#[test]
fn a_database_from_a_newer_release_is_refused_not_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Outbox::open(&path).err().expect("refused").to_string();
    assert!(err.contains("newer supervisor-slack (schema 99"), "{err}");
}

fn raw(
    serial: u64,
    process: &str,
    to: &str,
    from: &str,
) -> supervisor_slack::supervisord::protocol::RawEvent {
    let bytes = event_frame(
        "sv",
        serial,
        serial,
        &format!("PROCESS_STATE_{to}"),
        &format!("processname:{process} groupname:api from_state:{from} pid:5"),
    );
    match EventReader::new(&bytes[..]).next_event().unwrap() {
        Read::Event(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn events_are_held_in_memory_while_the_disk_refuses_and_written_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the state directory should be: nothing can be created
    // under it, not even by root.
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("state.db");
    let mut h = Handler::new(
        "web-1".into(),
        None,
        path.clone(),
        Box::new(OneChannel("#ops".into())),
        None,
    );
    h.handle(&raw(1, "a", "STARTING", "STOPPED"));
    h.handle(&raw(2, "a", "RUNNING", "STARTING"));
    assert_eq!(h.held_count(), 2, "both events are held, none lost");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // reopen is tried at most once a second
    h.retry_held();
    assert_eq!(h.held_count(), 0);
    let s = Outbox::open(&path).unwrap();
    let rows = s.pending(&key("a"), "#ops", 10).unwrap();
    assert_eq!(
        rows.iter().map(|e| e.event.serial).collect::<Vec<_>>(),
        vec![1, 2],
        "in order"
    );
}

#[test]
fn a_full_outbox_folds_the_listeners_new_events_and_the_card_can_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Outbox::for_reader(&path).unwrap();
    let mut h = Handler::new(
        "web-1".into(),
        Some(store),
        path.clone(),
        Box::new(OneChannel("#ops".into())),
        None,
    );
    h.outbox_cap = 2;
    for (serial, to, from) in [
        (1, "STARTING", "STOPPED"),
        (2, "BACKOFF", "STARTING"),
        (3, "STARTING", "BACKOFF"),
        (4, "FATAL", "STARTING"),
    ] {
        h.handle(&raw(serial, "a", to, from));
        h.after_answer();
    }
    let rows = Outbox::open(&path)
        .unwrap()
        .pending(&key("a"), "#ops", 10)
        .unwrap();
    assert_eq!(rows.len(), 2, "the cap holds");
    assert_eq!(rows[0].event.serial, 1);
    assert_eq!(
        (rows[1].event.to, rows[1].coalesced),
        (State::Fatal, 2),
        "ends in the real state, counts what it folded"
    );
}

fn shared(path: &std::path::Path) -> SqliteShared {
    SqliteShared::open(
        path,
        Budget {
            post_burst: 2,
            post_interval: std::time::Duration::from_secs(1),
            updates_per_minute: 50,
        },
    )
    .unwrap()
}

fn posted(ts: &str) -> Posted {
    Posted {
        channel_id: "C1".into(),
        ts: ts.into(),
        at: Utc::now(),
    }
}

#[tokio::test]
async fn the_signing_key_mutes_and_the_click_audit_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let k = key("worker");
    let s = shared(&path);
    let signing = s.signing_key().await.unwrap();
    assert_eq!(signing.len(), 32);
    // A second connection reads the same key.
    assert_eq!(shared(&path).signing_key().await.unwrap(), signing);

    let until = Utc::now() + chrono::Duration::hours(1);
    s.mute(&k, "U0ADMIN", until).await.unwrap();
    let mute = s.mute_of(&k).await.unwrap().expect("muted");
    assert_eq!(mute.by, "U0ADMIN");
    assert_eq!(mute.until.timestamp(), until.timestamp());
    assert_eq!(s.mute_of(&key("other")).await.unwrap(), None);
    // An expired mute is none.
    s.mute(&key("old"), "U0ADMIN", Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(s.mute_of(&key("old")).await.unwrap(), None);

    let id = s.record_click("U0ADMIN", "1700000000.000100", &k, "restart").await.unwrap();
    assert!(id.is_some());
    // The same click again (Slack redelivered it): not recorded, not run.
    assert_eq!(
        s.record_click("U0ADMIN", "1700000000.000100", &k, "restart").await.unwrap(),
        None
    );
    // Another user's click at the same instant is another click.
    assert!(s
        .record_click("U0OTHER", "1700000000.000100", &k, "restart")
        .await
        .unwrap()
        .is_some());
    s.click_outcome(id.unwrap(), "RUNNING, pid 42").await.unwrap();
    drop(s);

    let s = shared(&path);
    assert_eq!(s.signing_key().await.unwrap(), signing, "the key outlives a restart");
    assert!(s.mute_of(&k).await.unwrap().is_some(), "so does the mute");
    assert!(s.unmute(&k).await.unwrap());
    assert!(!s.unmute(&k).await.unwrap(), "nothing left to unmute");
    let audit = s.audit(10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].user, "U0ADMIN");
    assert_eq!(audit[1].outcome.as_deref(), Some("RUNNING, pid 42"));
    assert_eq!(audit[0].outcome, None);
}

/// The click audit keeps a bounded history: the newest rows, none too old.
#[tokio::test]
async fn the_click_audit_keeps_a_bounded_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = shared(&path);
    for i in 0..12 {
        s.record_click("U0ADMIN", &format!("1700000000.{i:06}"), &key("a"), "restart")
            .await
            .unwrap();
    }
    // One row from long ago.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE actions SET at = '2020-01-01T00:00:00+00:00' WHERE id = 1", [])
        .unwrap();
    let gone = s.prune_audit(AuditKeep { days: 90, rows: 10 }).await.unwrap();
    assert_eq!(gone, 2, "the old row, and one over the ten kept");
    let audit = s.audit(100).await.unwrap();
    assert_eq!(audit.len(), 10);
    assert_eq!(audit.last().unwrap().id, 3, "the oldest kept is the third");
}

/// A thread's parent is replaced only from the parent it replaces: a task holding a
/// stale copy of the thread cannot undo a newer parent.
#[tokio::test]
async fn a_parent_is_replaced_only_from_the_one_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = shared(&path);
    let k = key("a");
    assert!(s.set_parent(&k, "#ops", None, &posted("1.1"), false).await.unwrap());
    assert!(
        !s.set_parent(&k, "#ops", None, &posted("1.2"), false).await.unwrap(),
        "it has a parent now"
    );
    s.record_delivery(&k, "#ops", &[State::Starting, State::Running], &ev("a", 2, State::Starting, State::Running))
        .await
        .unwrap();
    assert!(s.set_parent(&k, "#ops", Some("1.1"), &posted("2.1"), false).await.unwrap());
    assert!(
        !s.set_parent(&k, "#ops", Some("1.1"), &posted("2.2"), false).await.unwrap(),
        "from a stale copy: refused"
    );
    let t = s.thread(&k, "#ops").await.unwrap().unwrap();
    assert_eq!(t.parent_ts.as_deref(), Some("2.1"));
    assert_eq!(t.history, vec![State::Starting, State::Running], "history kept");
    // A thread older than thread_ttl starts over.
    assert!(s.set_parent(&k, "#ops", Some("2.1"), &posted("3.1"), true).await.unwrap());
    let t = s.thread(&k, "#ops").await.unwrap().unwrap();
    assert!(t.history.is_empty());
    assert_eq!(t.latest.map(|e| e.serial), Some(2), "the latest event stays known");
    let threads = s.threads_of(&k).await.unwrap();
    assert_eq!(threads.len(), 1);
    let latest = s.latest_states("web-1").await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].1, "#ops");
}

/// A 429 closes the budget's gate, and a listener started right after the one that
/// was told honours it too.
#[tokio::test]
async fn the_gate_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = shared(&path);
        s.acquire(Call::Post("#ops")).await;
        s.rate_limited(Call::Post("#ops"), std::time::Duration::from_secs(2))
            .await;
    }
    let s = shared(&path);
    let started = std::time::Instant::now();
    s.acquire(Call::Update).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "waited for the gate an earlier run was told about: {:?}",
        started.elapsed()
    );
}

/// A thread's failure episode is kept per thread and channel, survives reopening,
/// and is gone once it ends; a row this version cannot read is no episode.
#[tokio::test]
async fn a_threads_episode_survives_reopening_and_is_gone_when_it_ends() {
    use supervisor_slack::store::Episode;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = shared(&path);
    let k = key("a");
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), None, "never recorded");
    let at = Utc.with_ymd_and_hms(2026, 11, 26, 14, 0, 0).unwrap();
    let ep = Episode {
        started: at,
        told: true,
        fatal_told: false,
        calm_since: Some(at + chrono::Duration::seconds(3)),
    };
    s.save_episode(&k, "#ops", Some(&ep)).await.unwrap();
    let told_fatal = Episode { fatal_told: true, calm_since: None, ..ep.clone() };
    s.save_episode(&k, "#ops", Some(&told_fatal)).await.unwrap();
    s.save_episode(&k, "#alerts", Some(&ep)).await.unwrap();
    drop(s);

    let s = shared(&path);
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), Some(told_fatal), "the latest, after a restart");
    assert_eq!(s.episode(&k, "#alerts").await.unwrap(), Some(ep), "per channel");
    assert_eq!(s.episode(&key("b"), "#ops").await.unwrap(), None, "per thread");
    s.save_episode(&k, "#ops", None).await.unwrap();
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), None, "ended");
    let rows: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM episodes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "an ended episode leaves no row");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE episodes SET episode = 'not json'", [])
        .unwrap();
    assert_eq!(s.episode(&k, "#alerts").await.unwrap(), None, "unreadable: none, and the thread goes on");
}

#[tokio::test]
async fn the_last_crash_of_a_process_is_kept_across_a_restart_and_replaced_by_the_next() {
    use supervisor_slack::card::CrashContext;
    use supervisor_slack::store::CrashRecord;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key = ThreadKey { host: "web-1".into(), group: "app".into(), process: "worker".into() };
    let other = ThreadKey { process: "web".into(), ..key.clone() };
    let crash = |status: i64| CrashRecord {
        at: Utc.timestamp_opt(1_800_000_000 + status, 0).unwrap(),
        state: State::Exited,
        expected: Some(false),
        context: CrashContext {
            exit_status: Some(status),
            uptime_secs: Some(2),
            log_tail: Some("RuntimeError: <!here>".into()),
            log_name: Some("stderr".into()),
            ..CrashContext::default()
        },
    };
    {
        let s = shared(&path);
        assert_eq!(s.last_crash(&key).await.unwrap(), None);
        s.record_crash(&key, &crash(3)).await.unwrap();
        s.record_crash(&key, &crash(4)).await.unwrap();
        assert_eq!(s.last_command().await.unwrap(), None);
        s.command_seen("U0ADMIN").await.unwrap();
    }
    let s = shared(&path);
    assert_eq!(s.last_crash(&key).await.unwrap(), Some(crash(4)), "the newest, after a restart");
    assert_eq!(s.last_crash(&other).await.unwrap(), None, "per process");
    assert_eq!(s.last_command().await.unwrap().map(|c| c.user), Some("U0ADMIN".into()));
}

/// The state directory a stopped listener leaves: every event in `state.db`, and a WAL
/// that is empty (or gone), whether supervisord closed its stdin or stopped it with
/// SIGTERM. (While it runs, the delivery side's reads keep the reader's checkpoints
/// from emptying the WAL: a listener stopped after a flood would otherwise leave
/// megabytes of it.)
#[test]
fn a_stopped_listener_leaves_its_events_in_the_database_and_an_empty_wal() {
    use common::outbox::outbox;
    use common::pipe::PipeListener;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let wal = dir.path().join("state.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // Slack out of reach: every event stays waiting in the outbox.
    let unreachable = "http://127.0.0.1:9/api";
    let mut l = PipeListener::start(dir.path(), unreachable, "");
    for i in 0..300 {
        let (from, to) = if i % 2 == 0 { ("STARTING", "RUNNING") } else { ("RUNNING", "STARTING") };
        l.state(&format!("p{}", i % 7), from, to);
    }
    assert!(wal_len() > 0, "a running listener writes through the WAL");
    let serial = l.serial();
    l.close();
    assert_eq!(wal_len(), 0, "stdin closed: the WAL is folded in and emptied");
    assert_eq!(outbox(&db).len(), 300, "every event is in the database");

    let mut l = PipeListener::start_with(dir.path(), unreachable, "", serial);
    for i in 0..300 {
        let (from, to) = if i % 2 == 0 { ("STARTING", "RUNNING") } else { ("RUNNING", "STARTING") };
        l.state(&format!("q{}", i % 7), from, to);
    }
    let status = l.terminate();
    assert!(status.success(), "SIGTERM: clean exit, got {status}");
    assert_eq!(wal_len(), 0, "SIGTERM: the WAL is folded in and emptied");
    let rows = outbox(&db);
    assert_eq!(rows.len(), 600, "every event of both runs is in the database");
    assert!(rows.iter().all(|r| !r.delivered), "nothing reached the unreachable Slack");
}
