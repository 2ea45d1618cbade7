//! Restarts of either side, with a real supervisord: every deployment must tell a new
//! supervisord (whose serials start again at 0) from a resend of the one before.
//! - supervisord as PID 1 of its own PID namespace, as in a container, restarted: the
//!   same `server` name and the same parent pid (1) as before;
//! - supervisord restarted by init: a new pid;
//! - a reload (`supervisorctl reload`): the same process, serials go on;
//! - the listener restarted by supervisord: the same instance, so that a resend of the
//!   event it held is still recognised.
//!
//! The state database lives outside supervisord's temp dir (the container's volume).
//!
//! Needs `scripts/test-env`; the container case needs root (`unshare`): elsewhere it
//! fails, or with `SUPERVISOR_SLACK_TEST_SKIP=1` skips visibly (see `common`) — never
//! under CI.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::outbox::{outbox, Row};
use common::slack::{options, parent_process, slack_listener, thread_serials};
use common::supervisord::*;
use common::{secs, wait_until};
use supervisor_slack::standin::{StandIn, Thread};

fn config(state: &Path, api_url: &str, as_pid1: bool) -> SupervisordConfig {
    let c = SupervisordConfig::new()
        .program(Program::sleeper("web").startsecs(0))
        .listener(slack_listener(state, api_url, ""));
    if as_pid1 {
        c.pid1()
    } else {
        c
    }
}

fn web_thread(standin: &StandIn) -> Option<Thread> {
    standin
        .channel("#ops")
        .into_iter()
        .find(|t| parent_process(t) == "web")
}

fn web_rows(db: &Path) -> Vec<Row> {
    outbox(db).into_iter().filter(|r| r.process == "web").collect()
}

/// Waits until every `web` row on disk is delivered and Slack's `web` thread reports
/// as many events as there are rows (serials repeat across supervisords, so count).
fn wait_web_delivered(standin: &StandIn, db: &Path, rows_at_least: usize) {
    let ok = wait_until(secs(30), || {
        let rows = web_rows(db);
        rows.len() >= rows_at_least
            && rows.iter().all(|r| r.delivered)
            && web_thread(standin).is_some_and(|t| thread_serials(&t).len() == rows.len())
    });
    assert!(
        ok,
        "web rows {:?}\nthread serials {:?}",
        web_rows(db),
        web_thread(standin).map(|t| thread_serials(&t))
    );
}

fn instances(rows: &[Row]) -> Vec<String> {
    let mut seen = Vec::new();
    for r in rows {
        if !seen.contains(&r.instance) {
            seen.push(r.instance.clone());
        }
    }
    seen
}

/// A supervisord (not PID 1) running `web`, whose first events are in Slack; the
/// state database lives in the returned temp dir.
async fn web_running() -> (StandIn, tempfile::TempDir, std::path::PathBuf, Supervisord) {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db");
    let sv = Supervisord::start(config(state.path(), &standin.api_url(), false));
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_web_delivered(&standin, &db, 2);
    (standin, state, db, sv)
}

/// supervisord stopped and started again on the same state: the second one's events
/// all reach Slack although their serials repeat the first one's.
async fn a_new_supervisord_is_a_new_instance(as_pid1: bool) {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db");

    let mut first = Supervisord::start(config(state.path(), &standin.api_url(), as_pid1));
    first.wait_for_state("web", "RUNNING", secs(10));
    wait_web_delivered(&standin, &db, 2);
    let before = web_rows(&db);
    assert!(first.stop(), "the first supervisord stopped");
    let before_stop = web_rows(&db).len();

    let mut second = Supervisord::start(config(state.path(), &standin.api_url(), as_pid1));
    second.wait_for_state("web", "RUNNING", secs(10));
    second.ctl_ok(&["stop", "web"]);
    second.ctl_ok(&["start", "web"]);
    second.wait_for_state("web", "RUNNING", secs(10));
    // STARTING, RUNNING, STOPPING, STOPPED, STARTING, RUNNING from the second one.
    wait_web_delivered(&standin, &db, before_stop + 6);

    let rows = web_rows(&db);
    let ids = instances(&rows);
    assert_eq!(ids.len(), 2, "two supervisords, two instances: {ids:?}");
    let serials = |id: &str| -> BTreeSet<u64> {
        rows.iter().filter(|r| r.instance == id).map(|r| r.serial).collect()
    };
    assert!(
        !serials(&ids[0]).is_disjoint(&serials(&ids[1])),
        "the second supervisord's serials repeat the first one's (that is the trap): {rows:?}"
    );
    assert!(before.iter().all(|r| r.instance == ids[0]));
    let stderr = second.listener_stderr();
    assert!(!stderr.contains("dropped a duplicate"), "{stderr}");
    assert!(
        wait_until(secs(10), || web_thread(&standin)
            .is_some_and(|t| t.parent.header().unwrap_or_default().contains("RUNNING"))),
        "the parent shows the current state"
    );
    second.stop();
    second.assert_no_protocol_trouble();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisord_as_pid1_of_a_restarted_container_is_a_new_instance() {
    if !pid_namespaces_work() {
        common::cannot_run_here(
            "this machine does not let us make a PID namespace: unshare --pid --fork \
             --mount-proc fails (needs root)",
        );
        return;
    }
    a_new_supervisord_is_a_new_instance(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisord_restarted_by_init_is_a_new_instance() {
    a_new_supervisord_is_a_new_instance(false).await;
}

/// `supervisorctl reload`: the same supervisord process re-reads its configuration
/// and restarts every program and the listener; one instance, nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_the_same_instance_and_loses_nothing() {
    let (standin, _state, db, mut sv) = web_running().await;
    let before = web_rows(&db).len();
    sv.ctl_ok(&["reload"]);
    assert!(wait_until(secs(15), || sv.state("web").as_deref() == Some("RUNNING")
        && web_rows(&db).len() >= before + 2));
    sv.ctl_ok(&["stop", "web"]);
    sv.ctl_ok(&["start", "web"]);
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_web_delivered(&standin, &db, before + 6);
    let rows = web_rows(&db);
    assert_eq!(instances(&rows).len(), 1, "{rows:?}");
    let stderr = sv.listener_stderr();
    assert!(!stderr.contains("dropped a duplicate"), "{stderr}");
    sv.stop();
    sv.assert_no_protocol_trouble();
}

/// Wraps a listener's command so that the listener can be killed between committing
/// an event and answering it, as a `kill -9` or an OOM kill may: a relay (a child of
/// the listener, which keeps supervisord as its parent) passes its stdout on to
/// supervisord, and once `trigger` exists it holds back the next answer, kills the
/// listener and removes `trigger`. supervisord then resends the event it was never
/// answered, with its serial, to the listener it starts next.
fn killed_before_answering(entry: ListenerEntry, trigger: &Path) -> ListenerEntry {
    const RELAY: &str = r#"
import os, signal, sys
trigger = sys.argv[1]
buf = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    while buf:
        if buf.startswith(b"READY\n"):
            token, buf = buf[:6], buf[6:]
        elif buf.startswith(b"RESULT "):
            nl = buf.find(b"\n")
            if nl < 0 or len(buf) < nl + 1 + int(buf[7:nl]):
                break
            end = nl + 1 + int(buf[7:nl])
            token, buf = buf[:end], buf[end:]
            if os.path.exists(trigger):
                os.unlink(trigger)
                sys.stderr.write("relay: held back %r and killed the listener\n" % token)
                sys.stderr.flush()
                os.kill(os.getppid(), signal.SIGKILL)
                sys.exit(0)
        elif len(buf) < 7:
            break
        else:
            token, buf = buf, b""
        os.write(1, token)
"#;
    // bash forks the relay for the process substitution, then becomes the listener.
    const WRAP: &str = "trigger=$1 python=$2 relay=$3; shift 3\n\
                        exec > >(exec \"$python\" -u \"$relay\" \"$trigger\")\n\
                        exec \"$@\"\n";
    let dir = trigger.parent().unwrap();
    let (relay, wrap) = (dir.join("relay.py"), dir.join("listen.sh"));
    std::fs::write(&relay, RELAY).unwrap();
    std::fs::write(&wrap, WRAP).unwrap();
    let python = supervisord_path().with_file_name("python3");
    let mut argv: Vec<String> = ["/bin/bash", path_str(&wrap), path_str(trigger), path_str(&python), path_str(&relay)]
        .map(String::from)
        .to_vec();
    argv.extend(entry.argv.iter().cloned());
    ListenerEntry { argv, ..entry }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The listener restarted by supervisord (`supervisorctl restart`, then a `kill -9`
/// between committing an event and answering it): the new one sees the same
/// instance, so supervisord's resend of the event the dead one held collides with
/// its row (`UNIQUE (instance, serial)`) and is dropped, and the thread goes on with
/// that event reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_listener_is_the_same_instance_and_drops_the_resend() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db");
    let trigger = state.path().join("hold-the-next-answer");
    let listener = killed_before_answering(slack_listener(state.path(), &standin.api_url(), ""), &trigger);
    let mut sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .listener(listener),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_web_delivered(&standin, &db, 2);
    let before = web_rows(&db).len();
    let seen = received_events(&sv.listener_stderr()).len();
    sv.ctl_ok(&["restart", "slack"]);
    sv.wait_for_state("slack", "RUNNING", secs(10));
    // The new listener has taken its own RUNNING (the last event of the restart), and
    // its answer has had time to pass: the next answer is STOPPING's, held back.
    assert!(
        wait_until(secs(10), || received_events(&sv.listener_stderr())[seen..]
            .iter()
            .any(|r| r.process == "slack" && r.eventname == "PROCESS_STATE_RUNNING")),
        "{}",
        sv.diagnostics()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&trigger, "").unwrap();
    sv.ctl_ok(&["stop", "web"]);
    sv.ctl_ok(&["start", "web"]);
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_web_delivered(&standin, &db, before + 4);
    assert!(!trigger.exists(), "the relay held an answer back\n{}", sv.diagnostics());
    let rows = web_rows(&db);
    assert_eq!(instances(&rows).len(), 1, "{rows:?}");
    let threads = standin.channel("#ops");
    assert_eq!(
        threads.iter().filter(|t| parent_process(t) == "web").count(),
        1,
        "one thread for web, continued"
    );
    // supervisord sent STOPPING twice, with one serial: once to the listener it
    // killed, again to the next one.
    let log = sv.listener_stderr();
    let stopping: Vec<u64> = received_events(&log)
        .into_iter()
        .filter(|r| r.process == "web" && r.eventname == "PROCESS_STATE_STOPPING")
        .map(|r| r.serial)
        .collect();
    assert_eq!(stopping.len(), 2, "received twice: {stopping:?}\n{log}");
    assert_eq!(stopping[0], stopping[1], "a resend keeps its serial");
    let resent = stopping[0];
    assert!(
        log.lines().any(|l| l.contains("dropped a duplicate") && l.contains(&format!("serial={resent}"))),
        "the resend is dropped as a duplicate:\n{log}"
    );
    assert_eq!(rows.iter().filter(|r| r.serial == resent).count(), 1, "stored once: {rows:?}");
    let reported = thread_serials(&web_thread(&standin).unwrap());
    assert_eq!(
        reported.iter().filter(|&&s| s == resent).count(),
        1,
        "reported once: {reported:?}"
    );
    assert_eq!(sv.state("slack").as_deref(), Some("RUNNING"));
    sv.stop();
    sv.assert_no_protocol_trouble();
}
