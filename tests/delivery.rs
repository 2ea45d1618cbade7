//! Delivery against the Slack stand-in: threads, order, live parents, rate limits,
//! outages, fallbacks — asserting on what Slack receives. The listener is the real
//! binary, driven over pipes as supervisord drives it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pipe::PipeListener;
use common::slack::{
    assert_never_rate_limited, by_process, first_reply, options, outage_failures, reported,
    serials, thread_serials, wait, Reported, FAST, FAST_UPDATES, TOKEN,
};
use supervisor_slack::standin::{Fault, StandIn, StandInOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_and_twenty_events_make_three_threads_in_order_with_current_parents() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}coalesce_max = 1\n"),
    );
    let script: &[(&str, &str, &str)] = &[
        ("alpha", "STOPPED", "STARTING"),
        ("bravo", "STOPPED", "STARTING"),
        ("charlie", "STOPPED", "STARTING"),
        ("alpha", "STARTING", "RUNNING"),
        ("bravo", "STARTING", "BACKOFF"),
        ("charlie", "STARTING", "RUNNING"),
        ("bravo", "BACKOFF", "STARTING"),
        ("charlie", "RUNNING", "EXITED"),
        ("bravo", "STARTING", "BACKOFF"),
        ("charlie", "EXITED", "STARTING"),
        ("alpha", "RUNNING", "STOPPING"),
        ("bravo", "BACKOFF", "STARTING"),
        ("charlie", "STARTING", "RUNNING"),
        ("alpha", "STOPPING", "STOPPED"),
        ("bravo", "STARTING", "BACKOFF"),
        ("alpha", "STOPPED", "STARTING"),
        ("bravo", "BACKOFF", "FATAL"),
        ("charlie", "RUNNING", "STOPPING"),
        ("alpha", "STARTING", "RUNNING"),
        ("charlie", "STOPPING", "STOPPED"),
    ];
    let mut sent: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (p, from, to) in script {
        l.state(p, from, to);
        sent.entry(p).or_default().push(l.serial());
    }
    wait(
        &standin,
        30,
        "3 threads with 20 replies and current parents",
        |s| {
            let threads = s.channel("#ops");
            let replies: usize = threads.iter().map(|t| t.replies.len()).sum();
            let current = by_process(&threads);
            replies == 20
                && ["alpha RUNNING", "bravo FATAL", "charlie STOPPED"]
                    .iter()
                    .all(|want| {
                        let (p, state) = want.split_once(' ').unwrap();
                        current
                            .get(p)
                            .and_then(|t| t.parent.header())
                            .is_some_and(|h| h.contains(state))
                    })
        },
    )
    .await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 3, "one parent per process");
    let threads = by_process(&threads);
    for (p, t) in &threads {
        assert_eq!(
            thread_serials(t),
            sent[p.as_str()],
            "replies of {p} in event order"
        );
        assert!(
            t.parent.text.as_deref().unwrap().contains("web-1"),
            "host on the card"
        );
        // Each reply says in its metadata which host, which supervisord, which events.
        for (r, serial) in t.replies.iter().zip(&sent[p.as_str()]) {
            assert_eq!(
                reported(r),
                Some(Reported {
                    host: "web-1".into(),
                    server: "supervisor".into(),
                    serials: vec![*serial],
                }),
                "{:?}",
                r.metadata
            );
        }
    }
    assert_eq!(
        threads["bravo"].parent.color().as_deref(),
        Some(supervisor_slack::card::color(
            supervisor_slack::supervisord::event::State::Fatal,
            None
        ))
    );
    // FATAL is also shown in the channel; ordinary transitions are not.
    let broadcast: Vec<String> = threads
        .values()
        .flat_map(|t| &t.replies)
        .filter(|r| r.reply_broadcast)
        .map(|r| r.text.clone().unwrap_or_default())
        .collect();
    assert!(
        broadcast.iter().any(|t| t.contains("FATAL")),
        "{broadcast:?}"
    );
    assert!(
        broadcast
            .iter()
            .all(|t| t.contains("FATAL") || t.contains("EXITED")),
        "{broadcast:?}"
    );
    // charlie went RUNNING → EXITED (unexpected) → ... → RUNNING: the recovery is said.
    assert!(threads["charlie"]
        .replies
        .iter()
        .any(|r| r.visible_text().contains("Recovered")));
    // Never over Slack's limits.
    assert_never_rate_limited(&standin);
    // link_names stays off on every post.
    for c in standin.calls_to("chat.postMessage") {
        assert_eq!(c.body["link_names"], false, "{}", c.body);
    }
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_no_request_arrives_before_retry_after_has_elapsed() {
    let standin = StandIn::start(StandInOptions {
        retry_after_secs: 2,
        ..options()
    })
    .await
    .unwrap();
    standin.set_fault(Fault::Status(429).on("chat.postMessage").times(1));
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 20, "both transitions delivered", |s| {
        s.channel("#ops")
            .iter()
            .map(|t| t.replies.len())
            .sum::<usize>()
            >= 1
            && s.channel("#ops")
                .iter()
                .flat_map(|t| t.replies.iter())
                .flat_map(serials)
                .count()
                == 2
    })
    .await;
    let calls = standin.calls();
    let i = calls
        .iter()
        .position(|c| c.status == 429)
        .expect("the 429 happened");
    let next = &calls[i + 1];
    assert!(
        next.at >= calls[i].at + Duration::from_secs(2),
        "next call {:?} after the 429 at {:?}",
        next.at,
        calls[i].at
    );
    assert!(standin.calls_during_retry_after().is_empty());
    assert!(l.stderr().contains("rate limit"), "the wait is logged");
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_outage_loses_nothing_and_keeps_order() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    first_reply(&standin).await;
    // Half the outage answers 503, half drops connections.
    standin.set_fault(Fault::Status(503));
    let mut sent = vec![l.serial()];
    for i in 0..30 {
        let (p, from, to) = if i % 2 == 0 {
            ("alpha", "STARTING", "BACKOFF")
        } else {
            ("bravo", "BACKOFF", "STARTING")
        };
        l.state(p, from, to);
        if p == "alpha" {
            sent.push(l.serial());
        }
        if i == 15 {
            standin.set_fault(Fault::Drop);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    standin.set_fault(Fault::None);
    wait(&standin, 30, "everything delivered after the outage", |s| {
        s.channel("#ops")
            .iter()
            .map(thread_serials)
            .map(|v| v.len())
            .sum::<usize>()
            == 31
    })
    .await;
    let threads = by_process(&standin.channel("#ops"));
    assert_eq!(
        thread_serials(&threads["alpha"]),
        sent,
        "alpha's transitions all there, in order"
    );
    assert_eq!(thread_serials(&threads["bravo"]).len(), 15);
    assert!(outage_failures(&standin) > 0, "the outage was felt");
    assert!(l.stderr().contains("retrying"));
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_card_is_sent_once_as_plain_text() {
    let standin = StandIn::start(options()).await.unwrap();
    standin.set_fault(
        Fault::api_error("invalid_blocks")
            .on("chat.postMessage")
            .times(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STARTING", "FATAL");
    wait(&standin, 10, "the thread", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
    let posts = standin.calls_to("chat.postMessage");
    assert_eq!(posts[0].error.as_deref(), Some("invalid_blocks"));
    assert!(posts[0].body.get("attachments").is_some());
    assert!(
        posts[1].body.get("attachments").is_none(),
        "the fallback is plain text: {}",
        posts[1].body
    );
    assert!(posts[1].body["text"].as_str().unwrap().contains("FATAL"));
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1);
    assert_eq!(
        threads[0].replies.len(),
        1,
        "the reply still carries the rich card"
    );
    assert!(threads[0].replies[0].attachments.is_some());
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_cannot_be_edited_is_replaced_by_a_new_one() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    first_reply(&standin).await;
    standin.set_fault(Fault::api_error("edit_window_closed").on("chat.update"));
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "a second parent", |s| {
        s.channel("#ops").len() == 2
    })
    .await;
    let threads = standin.channel("#ops");
    assert!(
        threads[1].parent.header().unwrap().contains("RUNNING"),
        "the new parent is current"
    );
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_thread_gets_a_new_parent_after_thread_ttl() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}thread_ttl = \"1s\"\n"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    first_reply(&standin).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "a second thread", |s| {
        s.channel("#ops")
            .iter()
            .filter(|t| !t.replies.is_empty())
            .count()
            == 2
    })
    .await;
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_listener_continues_the_same_threads() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    first_reply(&standin).await;
    let serial = l.serial();
    l.close();
    let mut l = PipeListener::start_with(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
        serial,
    );
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "second reply", |s| {
        s.channel("#ops")
            .iter()
            .map(|t| t.replies.len())
            .sum::<usize>()
            == 2
    })
    .await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1, "no second parent after a restart");
    wait(&standin, 10, "parent current", |s| {
        s.channel("#ops")[0]
            .parent
            .header()
            .unwrap()
            .contains("RUNNING")
    })
    .await;
    l.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_say_how_to_fix_them_keep_events_and_never_show_the_token() {
    let standin = StandIn::start(options()).await.unwrap();
    standin.set_fault(Fault::api_error("not_in_channel").on("chat.postMessage"));
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    tokio::time::sleep(Duration::from_secs(1)).await;
    standin.set_fault(Fault::api_error("invalid_auth"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    standin.set_fault(Fault::Drop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    standin.set_fault(Fault::Status(500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    standin.set_fault(Fault::None);
    wait(&standin, 10, "delivered once the operator fixed it", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
    let stderr = l.stderr();
    assert!(stderr.contains("invite the bot to #ops"), "{stderr}");
    assert!(stderr.contains("the token is not valid"), "{stderr}");
    assert_eq!(
        stderr.matches("invite the bot").count(),
        1,
        "a setup error is logged once, not on every retry"
    );
    assert!(!stderr.contains(TOKEN), "the token leaked into stderr");
    assert!(
        !stderr.contains("secretsecret"),
        "part of the token leaked into stderr"
    );
    l.close();
}

/// A churning process (five crashes, each followed by a restart, then FATAL) shows
/// in the channel only the first failure of its episode and the FATAL; never a
/// recovery, never the repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churning_process_broadcasts_its_first_failure_and_fatal_only() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}coalesce_max = 1\nflap_threshold = 100\n"),
    );
    l.state("worker", "STARTING", "RUNNING");
    for _ in 0..5 {
        l.state("worker", "RUNNING", "EXITED");
        l.state("worker", "EXITED", "STARTING");
        l.state("worker", "STARTING", "RUNNING");
    }
    l.state("worker", "RUNNING", "EXITED");
    l.state("worker", "EXITED", "STARTING");
    l.state("worker", "STARTING", "BACKOFF");
    l.state("worker", "BACKOFF", "FATAL");
    wait(&standin, 40, "every reply of worker", |s| {
        s.channel("#ops")
            .first()
            .is_some_and(|t| thread_serials(t).len() == 20)
    })
    .await;
    let threads = standin.channel("#ops");
    let broadcast: Vec<String> = threads[0]
        .replies
        .iter()
        .filter(|r| r.reply_broadcast)
        .map(|r| r.text.clone().unwrap_or_default())
        .collect();
    assert_eq!(broadcast.len(), 2, "{broadcast:#?}");
    assert!(broadcast[0].contains("RUNNING → EXITED"), "{broadcast:#?}");
    assert!(broadcast[1].contains("FATAL"), "{broadcast:#?}");
    l.close();
}
