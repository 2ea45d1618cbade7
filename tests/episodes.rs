//! Failure episodes with a real supervisord (README, promise 3): of a crash loop the
//! channel is shown one reply, however long it loops and however often its digests
//! go out, and its FATAL one more; a listener killed in the middle of the loop tells
//! the channel nothing more; a process that recovers, stays up past `settle_after`
//! and fails again is a new episode. Asserted on what the stand-in received (which
//! replies were `reply_broadcast`, the channel's own flow) and the rows on disk.
//!
//! The listener's intervals are scaled down from a minute each to [`INTERVAL`]
//! (`digest_interval` and `settle_after`, equal as their defaults are: a digest
//! comes no sooner than an episode could calm), so a 20 s loop spans five digest
//! intervals and five `settle_after`s, as a loop of five minutes does at the defaults.
//!
//! Needs `scripts/test-env`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::outbox::outbox;
use common::slack::{options, parent_process, serials, slack_listener_with, wait, FAST, FAST_UPDATES};
use common::supervisord::*;
use common::{secs, signal, wait_until};
use supervisor_slack::standin::{Message, StandIn};

/// The listener's `digest_interval` and `settle_after`.
const INTERVAL: Duration = Duration::from_secs(4);
/// How long the loops run: five [`INTERVAL`]s.
const LOOP: Duration = Duration::from_secs(20);

/// The listener's settings: [`FAST`] with `digest_interval` and `settle_after` of
/// [`INTERVAL`]; a loop is flapping (its replies become digests) after two cycles.
fn settings() -> String {
    let s = INTERVAL.as_secs();
    let fast = FAST
        .replace("digest_interval = \"2s\"", &format!("digest_interval = \"{s}s\""))
        .replace("settle_after = \"5s\"", &format!("settle_after = \"{s}s\""));
    assert_eq!(fast.matches(&format!("\"{s}s\"")).count(), 2, "{fast}");
    format!("{fast}{FAST_UPDATES}flap_threshold = 5\n")
}

/// A program that crash-loops while its mode file says nothing: RUNNING after a
/// second (`startsecs=1`), an unexpected exit a second later, restarted at once. Mode
/// `up`: the next start stays up. Mode `fast`: it exits at once, so supervisord gives
/// up on it (BACKOFF twice, then FATAL).
fn looping(name: &str, mode: &Path) -> Program {
    let m = mode.to_str().unwrap();
    Program::new(
        name,
        &format!(
            "/bin/sh -c 'm=$(cat {m} 2>/dev/null); [ \"$m\" = up ] && exec sleep 1000; \
             [ \"$m\" = fast ] && exit 1; sleep 2; exit 1'"
        ),
    )
    .autorestart("true")
    .startsecs(1)
    .startretries(2)
}

/// The test's state: the stand-in, the listener's state dir, and each program's mode
/// file.
struct Env {
    standin: StandIn,
    state: tempfile::TempDir,
    sv: Supervisord,
}

impl Env {
    /// supervisord running `programs` (each [`looping`]) and the listener.
    async fn start(programs: &[&str], listener: impl Fn(ListenerEntry) -> ListenerEntry) -> Env {
        let standin = StandIn::start(options()).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut config = SupervisordConfig::new();
        for p in programs {
            config = config.program(looping(p, &state.path().join(format!("{p}.mode"))));
        }
        let config = config.listener(listener(slack_listener_with(state.path(), &standin.api_url(), &settings())));
        let sv = Supervisord::start(config);
        Env { standin, state, sv }
    }

    fn db(&self) -> PathBuf {
        self.state.path().join("state.db")
    }

    fn set_mode(&self, program: &str, mode: &str) {
        std::fs::write(self.state.path().join(format!("{program}.mode")), mode).unwrap();
    }

    /// The replies about `process` that the channel was shown too.
    fn broadcasts(&self, process: &str) -> Vec<Message> {
        self.replies(process).into_iter().filter(|r| r.reply_broadcast).collect()
    }

    /// Every reply about `process`, in order (every thread of it).
    fn replies(&self, process: &str) -> Vec<Message> {
        self.standin
            .channel("#ops")
            .into_iter()
            .filter(|t| parent_process(t) == process)
            .flat_map(|t| t.replies)
            .collect()
    }

    /// The serials of `process`'s rows on disk: every change the listener took.
    fn rows(&self, process: &str) -> Vec<u64> {
        outbox(&self.db())
            .into_iter()
            .filter(|r| r.process == process)
            .map(|r| r.serial)
            .collect()
    }

    /// Waits until every row of `process` is delivered and its serial reported in
    /// its thread.
    fn wait_all_reported(&self, process: &str) {
        let ok = wait_until(secs(30), || {
            let rows = outbox(&self.db());
            let reported: BTreeSet<u64> = self.replies(process).iter().flat_map(serials).collect();
            rows.iter()
                .filter(|r| r.process == process)
                .all(|r| r.delivered && reported.contains(&r.serial))
        });
        assert!(ok, "{process}: rows {:?}\n{}", self.rows(process), self.sv.diagnostics());
    }

    /// Stops `programs` (the loop ends; STOPPED ends any episode) and waits until
    /// everything they did is in Slack.
    fn stop_and_deliver(&self, programs: &[&str]) {
        let mut args = vec!["stop"];
        args.extend(programs);
        self.sv.ctl(&args);
        for p in programs {
            self.sv.wait_for_state(p, "STOPPED", secs(10));
            self.wait_all_reported(p);
        }
    }

    /// Every change of `process` is reported exactly once, in order, and every reply
    /// of several counts them all in its title.
    fn assert_every_change_counted_once(&self, process: &str) {
        let replies = self.replies(process);
        let reported: Vec<u64> = replies.iter().flat_map(serials).collect();
        assert_eq!(reported, self.rows(process), "{process}: each change once, in order");
        for r in &replies {
            let n = serials(r).len();
            if n > 3 {
                let text = r.text.clone().unwrap_or_default();
                assert!(text.contains(&format!("({n} changes)")), "{text}");
            }
        }
    }

    /// Replies of several changes: the digests of a flapping process.
    fn digests(&self, process: &str) -> usize {
        self.replies(process).iter().filter(|r| serials(r).len() > 1).count()
    }

    /// Broadcasts in the channel's own flow, where people see them, for `process`
    /// (the flow names the process in every message's text).
    fn in_channel_flow(&self, process: &str) -> usize {
        self.standin
            .channel_flow("#ops")
            .iter()
            .filter(|m| m.reply_broadcast && m.text.as_deref().unwrap_or_default().contains(process))
            .count()
    }
}

fn texts(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| m.text.clone().unwrap_or_default()).collect()
}

/// A crash loop that never calms, twenty seconds of it (five digest intervals): the
/// channel is shown its first failure and nothing more, though its digests go on;
/// when supervisord gives up on it, its FATAL is shown once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_broadcast_once_and_its_fatal_once_more() {
    let env = Env::start(&["churn"], |l| l).await;
    wait(&env.standin, 15, "the first failure", |_| !env.broadcasts("churn").is_empty()).await;
    tokio::time::sleep(LOOP).await;
    let during = env.broadcasts("churn");
    assert_eq!(during.len(), 1, "{:#?}", texts(&during));
    assert!(during[0].text.as_deref().unwrap_or_default().contains("EXITED"), "{:#?}", texts(&during));
    assert!(env.digests("churn") >= 3, "the loop went on in digests: {:#?}", texts(&env.replies("churn")));

    env.set_mode("churn", "fast");
    env.sv.wait_for_state("churn", "FATAL", secs(30));
    env.wait_all_reported("churn");
    let all = env.broadcasts("churn");
    assert_eq!(all.len(), 2, "{:#?}", texts(&all));
    assert_eq!(all[0], during[0]);
    assert!(all[1].text.as_deref().unwrap_or_default().contains("FATAL"), "{:#?}", texts(&all));
    assert_eq!(env.in_channel_flow("churn"), 2);
    env.assert_every_change_counted_once("churn");
    let mut sv = env.sv;
    sv.stop();
    sv.assert_no_protocol_trouble();
}

/// Three programs crash-looping, the listener killed (`kill -9`) four times in the
/// middle of their loops and started again by supervisord each time: each program
/// is shown in the channel once, and every change still reaches its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_killed_in_the_middle_of_crash_loops_tells_the_channel_nothing_more() {
    const PROGRAMS: [&str; 3] = ["churn1", "churn2", "churn3"];
    let env = Env::start(&PROGRAMS, |l| l.startsecs(0)).await;
    wait(&env.standin, 15, "each program's first failure", |_| {
        PROGRAMS.iter().all(|p| !env.broadcasts(p).is_empty())
    })
    .await;
    let mut pids = vec![env.sv.process_pid("slack").expect("the listener runs")];
    for _ in 0..4 {
        tokio::time::sleep(LOOP / 5).await;
        let pid = *pids.last().unwrap();
        assert!(signal(pid, "KILL"), "kill -9 {pid}");
        let mut next = None;
        assert!(
            wait_until(secs(15), || {
                next = env.sv.process_pid("slack").filter(|p| *p != pid);
                next.is_some() && env.sv.state("slack").as_deref() == Some("RUNNING")
            }),
            "supervisord started the listener again\n{}",
            env.sv.diagnostics()
        );
        pids.push(next.unwrap());
    }
    // The loops go on past the last restart, in digests.
    let digests: Vec<usize> = PROGRAMS.iter().map(|p| env.digests(p)).collect();
    tokio::time::sleep(LOOP / 5).await;
    env.stop_and_deliver(&PROGRAMS);
    for (p, before) in PROGRAMS.iter().zip(digests) {
        let shown = env.broadcasts(p);
        assert_eq!(shown.len(), 1, "{p}: {:#?}", texts(&shown));
        assert!(env.digests(p) > before, "{p}: replies after the last restart");
        // Delivery is at least once: a kill between Slack's answer and recording it
        // may repeat a reply, never lose one.
        let reported: BTreeSet<u64> = env.replies(p).iter().flat_map(serials).collect();
        let rows: BTreeSet<u64> = env.rows(p).into_iter().collect();
        assert_eq!(reported, rows, "{p}: every change reported");
    }
    assert_eq!(
        env.standin.channel_flow("#ops").iter().filter(|m| m.reply_broadcast).count(),
        3,
        "one broadcast per program in the channel"
    );
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 5, "five listeners in turn: {pids:?}");
    let mut sv = env.sv;
    sv.stop();
}

/// A program loops, recovers and stays up past `settle_after` (by supervisord's
/// events), then fails and loops again: two episodes, two broadcasts, the second
/// being the first failure after the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_recovers_for_settle_after_and_fails_again_is_broadcast_twice() {
    let env = Env::start(&["churn"], |l| l).await;
    wait(&env.standin, 15, "the first failure", |_| !env.broadcasts("churn").is_empty()).await;
    tokio::time::sleep(LOOP / 2).await;
    env.set_mode("churn", "up");
    let mut up = None;
    assert!(
        wait_until(secs(15), || {
            up = env.sv.process_pid("churn").filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with("sleep\0"))
            });
            up.is_some() && env.sv.state("churn").as_deref() == Some("RUNNING")
        }),
        "churn stays up\n{}",
        env.sv.diagnostics()
    );
    // The RUNNING that lasts, as the listener took it.
    assert!(
        wait_until(secs(10), || outbox(&env.db()).iter().rev().find(|r| r.process == "churn").is_some_and(|r| r.to == "RUNNING")),
        "{}",
        env.sv.diagnostics()
    );
    let recovered = env.rows("churn").len() - 1;
    tokio::time::sleep(INTERVAL + Duration::from_secs(2)).await;
    assert_eq!(env.broadcasts("churn").len(), 1);
    env.set_mode("churn", "");
    assert!(signal(up.unwrap(), "KILL"));
    tokio::time::sleep(LOOP / 4).await;
    env.stop_and_deliver(&["churn"]);
    let shown = env.broadcasts("churn");
    assert_eq!(shown.len(), 2, "{:#?}", texts(&shown));
    // Where each broadcast's changes are among every change (commit order).
    let rows = env.rows("churn");
    let at = |m: &Message| -> Vec<usize> {
        serials(m).iter().map(|s| rows.iter().position(|r| r == s).unwrap()).collect()
    };
    assert!(at(&shown[0]).iter().all(|i| *i < recovered), "{:?} before {recovered}", at(&shown[0]));
    assert!(at(&shown[1]).iter().all(|i| *i > recovered), "{:?} after {recovered}", at(&shown[1]));
    assert!(shown[1].text.as_deref().unwrap_or_default().contains("EXITED"), "{:#?}", texts(&shown));
    env.assert_every_change_counted_once("churn");
    let mut sv = env.sv;
    sv.stop();
    sv.assert_no_protocol_trouble();
}
