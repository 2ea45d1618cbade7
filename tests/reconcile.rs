//! Reconcile, with a real supervisord: after any gap the parents in the channel match
//! `supervisorctl status`, and each corrected thread says that changes were missed.
//! - the listener stopped while programs change and its buffer overflows, then
//!   started again;
//! - supervisord restarted with a changed configuration (a program gone, one failing
//!   from the start), subscribed to supervisord's own events;
//! - `supervisorctl update` removing one group and adding another;
//! - no XML-RPC access: the listener works as before and says what reconcile needs.
//!
//! Needs `scripts/test-env`.

mod common;

use std::time::Instant;

use common::slack::{header, options, parent_process, parent_state, slack_listener};
use common::supervisord::*;
use common::{secs, wait_until};
use supervisor_slack::standin::{StandIn, Thread};

/// The process names and states `supervisorctl status` reports (name without group
/// when they match, as the cards' headers do), without the listener's own process
/// (it has no card).
fn status(sv: &Supervisord) -> Vec<(String, String)> {
    let out = sv.ctl(&["status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let state = w.next()?;
            let name = name.rsplit(':').next().unwrap().to_string();
            (name != "slack").then(|| (name, state.to_string()))
        })
        .collect()
}

fn thread<'a>(threads: &'a [Thread], process: &str) -> Option<&'a Thread> {
    threads.iter().find(|t| parent_process(t) == process)
}

/// Which processes' parents disagree with `supervisorctl status` (a process with no
/// card counts only when `all` is set).
/// A parent of a process supervisord no longer has must show REMOVED.
fn disagreeing(standin: &StandIn, sv: &Supervisord, all: bool) -> Vec<String> {
    let threads = standin.channel("#ops");
    let status = status(sv);
    let mut wrong: Vec<String> = status
        .iter()
        .filter_map(|(name, state)| match thread(&threads, name) {
            Some(t) if parent_state(t) == *state => None,
            Some(t) => Some(format!("{name}: card {} / supervisord {state}", header(t))),
            None if all => Some(format!("{name}: no card / supervisord {state}")),
            None => None,
        })
        .collect();
    for t in &threads {
        let name = parent_process(t);
        if name != "supervisord"
            && !status.iter().any(|(n, _)| *n == name)
            && parent_state(t) != "REMOVED"
        {
            wrong.push(format!("{name}: card {} / not in supervisord", header(t)));
        }
    }
    wrong
}

/// Every reply's visible text in `process`'s thread.
fn replies(standin: &StandIn, process: &str) -> Vec<String> {
    let threads = standin.channel("#ops");
    thread(&threads, process)
        .map(|t| t.replies.iter().map(|m| m.visible_text()).collect())
        .unwrap_or_default()
}

fn wait_matching(standin: &StandIn, sv: &Supervisord, within: u64, what: &str) -> f64 {
    let start = Instant::now();
    let mut last = Vec::new();
    let ok = wait_until(secs(within), || {
        last = disagreeing(standin, sv, true);
        last.is_empty()
    });
    assert!(
        ok,
        "{what}: parents disagree with supervisorctl status after {within} s: {last:?}\n{}",
        sv.diagnostics()
    );
    start.elapsed().as_secs_f64()
}

/// The listener stopped while `healthy` is stopped and three others change; its
/// buffer of 3 overflows. Started again, it reconciles: every parent matches
/// supervisorctl status, and the corrected threads say changes were missed (with the
/// count supervisord dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_listener_was_down_and_its_buffer_overflowed_every_parent_matches_supervisord() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    // Started one by one once the listener runs: a buffer of 3 would overflow at boot.
    let mut c = SupervisordConfig::new();
    for p in ["healthy", "a", "b", "c"] {
        c = c.program(Program::sleeper(p).startsecs(0).autostart(false));
    }
    let sv = Supervisord::start(
        c.listener(slack_listener(state.path(), &standin.api_url(), "").buffer_size(3)),
    );
    sv.wait_for_state("slack", "RUNNING", secs(10));
    for p in ["healthy", "a", "b", "c"] {
        sv.ctl_ok(&["start", p]);
        sv.wait_for_state(p, "RUNNING", secs(10));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    wait_matching(&standin, &sv, 30, "before the gap");

    sv.ctl_ok(&["stop", "slack"]);
    sv.ctl_ok(&["stop", "healthy"]);
    sv.ctl_ok(&["stop", "a"]);
    sv.ctl_ok(&["restart", "b"]);
    sv.ctl_ok(&["stop", "c"]);
    assert!(
        sv.main_log().contains("buffer overflowed"),
        "{}",
        sv.main_log()
    );
    let started = Instant::now();
    sv.ctl_ok(&["start", "slack"]);
    let took = wait_matching(&standin, &sv, 70, "after the gap");
    eprintln!(
        "figure: parents matched supervisorctl status {:.1} s after the listener started",
        started.elapsed().as_secs_f64().max(took)
    );

    let said = replies(&standin, "healthy");
    let note = said
        .iter()
        .find(|t| t.contains("Reconciled with supervisord"))
        .unwrap_or_else(|| panic!("healthy's thread says it was reconciled: {said:#?}"));
    assert!(
        note.contains("STOPPED") && note.contains("RUNNING"),
        "{note}"
    );
    assert!(note.contains("Changes in between were missed"), "{note}");
    assert!(
        note.contains("supervisord dropped"),
        "the count of dropped events is known: {note}"
    );
    // a's changes were dropped too (the oldest go first); c's last ones were still in
    // the buffer, so its card was right without help.
    let said = replies(&standin, "a");
    assert!(
        said.iter()
            .any(|t| t.contains("Reconciled with supervisord")),
        "a: {said:#?}"
    );
    // Nothing disagrees any more: the next passes add nothing.
    let before: usize = ["healthy", "a", "b", "c"]
        .iter()
        .map(|p| replies(&standin, p).len())
        .sum();
    std::thread::sleep(secs(6));
    let after: usize = ["healthy", "a", "b", "c"]
        .iter()
        .map(|p| replies(&standin, p).len())
        .sum();
    assert_eq!(before, after, "no reply when nothing disagrees");
    // (supervisord's log shows the overflow: that is the scenario.)
}

/// supervisord restarted (stopped, its configuration changed, started): the removed
/// program's parent says it is no longer configured, a program failing from the
/// start gets a card, supervisord's own thread says it started, and every parent
/// matches supervisorctl status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_supervisord_restart_every_parent_matches_and_removed_programs_say_so() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = || {
        slack_listener(state.path(), &standin.api_url(), "")
            .events("PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP")
    };
    let mut first = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .program(Program::sleeper("old").startsecs(0))
            .listener(listener()),
    );
    first.wait_for_state("old", "RUNNING", secs(10));
    wait_matching(&standin, &first, 30, "first supervisord");
    assert!(first.stop());

    // The second one no longer has `old`, and has `broken`, which never starts (and
    // whose events are over before the listener is up: priority 999 starts first).
    let second = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .program(
                Program::new("broken", "/nonexistent/command")
                    .startretries(0)
                    .line("priority=1"),
            )
            .listener(listener()),
    );
    second.wait_for_state("web", "RUNNING", secs(10));
    second.wait_for_state("broken", "FATAL", secs(10));
    let took = wait_matching(&standin, &second, 70, "second supervisord");
    eprintln!("figure: parents matched {took:.1} s after the second supervisord answered");

    let threads = standin.channel("#ops");
    let old = thread(&threads, "old").expect("old's thread");
    assert!(
        header(old).contains("REMOVED"),
        "old's parent: {}",
        header(old)
    );
    let said = replies(&standin, "old");
    assert!(
        said.iter().any(|t| t.contains("No longer configured")),
        "{said:#?}"
    );
    let broken = thread(&threads, "broken").expect("broken has a card");
    assert!(header(broken).contains("FATAL"), "{}", header(broken));
    let sup = thread(&threads, "supervisord").expect("supervisord's own thread");
    assert_eq!(parent_state(sup), "RUNNING", "{}", header(sup));
    // (The stop may reach Slack only through the next listener: it is in the outbox.)
    let said = replies(&standin, "supervisord");
    assert!(
        said.iter()
            .any(|t| t.contains("supervisord on web-1 is stopping")),
        "supervisord's thread says it stopped: {said:#?}"
    );
    assert!(
        said.iter()
            .filter(|t| t.contains("supervisord on web-1 started"))
            .count()
            >= 2,
        "{said:#?}"
    );
    second.assert_no_protocol_trouble();
}

/// `supervisorctl update`: a removed group's threads say so and their parents show
/// REMOVED; an added group's programs get their cards from their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_removing_and_adding_groups_is_said_in_their_threads() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = slack_listener(state.path(), &standin.api_url(), "")
        .events("PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP");
    let config = |with_extra: bool, with_new: bool| {
        let mut c = SupervisordConfig::new().program(Program::sleeper("web").startsecs(0));
        if with_extra {
            c = c.program(Program::sleeper("extra").startsecs(0));
        }
        if with_new {
            c = c.program(Program::sleeper("newcomer").startsecs(0));
        }
        c.listener(listener.clone())
    };
    let sv = Supervisord::start(config(true, false));
    sv.wait_for_state("extra", "RUNNING", secs(10));
    wait_matching(&standin, &sv, 30, "before update");

    std::fs::write(sv.conf(), config(false, true).render(sv.dir())).unwrap();
    sv.ctl_ok(&["update"]);
    sv.wait_for_state("newcomer", "RUNNING", secs(10));
    let started = Instant::now();
    let ok = wait_until(secs(30), || {
        let threads = standin.channel("#ops");
        thread(&threads, "extra").is_some_and(|t| header(t).contains("REMOVED"))
            && thread(&threads, "newcomer").is_some_and(|t| parent_state(t) == "RUNNING")
    });
    assert!(
        ok,
        "extra REMOVED, newcomer RUNNING: {:?}",
        standin
            .channel("#ops")
            .iter()
            .map(header)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "figure: update shown {:.1} s after it finished",
        started.elapsed().as_secs_f64()
    );
    // The parent may show REMOVED a moment before its reply is posted.
    let removed_said = |said: &[String]| {
        said.iter()
            .any(|t| t.contains("No longer configured") && t.contains("group extra removed"))
    };
    wait_until(secs(10), || removed_said(&replies(&standin, "extra")));
    let said = replies(&standin, "extra");
    assert!(removed_said(&said), "{said:#?}\n{}", sv.listener_stderr());
    assert!(disagreeing(&standin, &sv, false).is_empty());
    sv.assert_no_protocol_trouble();
}

/// Without XML-RPC access (a wrong socket), the listener delivers events as before
/// and its log says once what reconcile needs; `check` says so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_xmlrpc_access_events_still_flow_and_the_log_says_what_reconcile_needs() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let nowhere = state.path().join("no.sock");
    let extra = format!("supervisor_server_url = \"unix://{}\"\n", nowhere.display());
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .listener(slack_listener(state.path(), &standin.api_url(), &extra)),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_matching(&standin, &sv, 30, "events alone");
    let log = sv.listener_stderr();
    assert_eq!(log.matches("reconcile is off").count(), 1, "{log}");
    assert!(log.contains("no supervisord socket at"), "{log}");

    let out = std::process::Command::new(common::SLACK_BIN)
        .args([
            "--config",
            state.path().join("settings.toml").to_str().unwrap(),
            "check",
        ])
        .env("SLACK_TOKEN", common::slack::TOKEN)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("reconcile cannot correct cards"), "{text}");
    assert!(!text.contains(common::slack::TOKEN));
    sv.assert_no_protocol_trouble();
}

/// A change no event tells (the listener hears only RUNNING events): the regular
/// pass (`reconcile_interval`) finds it and corrects the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regular_pass_finds_a_change_no_event_told() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sv = Supervisord::start(
        SupervisordConfig::new().program(Program::sleeper("web").startsecs(0)).listener(
            slack_listener(state.path(), &standin.api_url(), "reconcile_interval = \"5s\"\n")
                .events("PROCESS_STATE_RUNNING"),
        ),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    wait_matching(&standin, &sv, 30, "before");
    sv.ctl_ok(&["stop", "web"]);
    let took = wait_matching(&standin, &sv, 30, "after a stop no event told");
    eprintln!("figure: the regular pass corrected the card {took:.1} s after the stop");
    let said = replies(&standin, "web");
    assert!(
        said.iter().any(|t| t.contains("Reconciled with supervisord (regular check)")),
        "{said:#?}"
    );
}
