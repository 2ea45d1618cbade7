//! Delivery against the Slack stand-in: threads, order, live parents, rate limits,
//! outages, fallbacks — asserting on what Slack receives. The listener is the real
//! binary, driven over pipes as supervisord drives it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pipe::PipeListener;
use common::slack::{
    assert_never_rate_limited, by_process, first_reply, options, outage_failures, reported,
    serials, standin_and_listener, thread_serials, wait, Reported, FAST, FAST_UPDATES, TOKEN,
};
use supervisor_slack::standin::{Fault, StandIn, StandInOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_and_twenty_events_make_three_threads_in_order_with_current_parents() {
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}coalesce_max = 1\n")).await;
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
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}")).await;
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
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}")).await;
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
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}thread_ttl = \"1s\"\n")).await;
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
    let (standin, dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}")).await;
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
    let (standin, _dir, mut l) = standin_and_listener(&format!("{FAST}{FAST_UPDATES}coalesce_max = 1\nflap_threshold = 100\n")).await;
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

/// Someone deletes a process's card. The next event wakes both of its tasks: the
/// keeper's edit finds `message_not_found`, the worker's reply `thread_not_found`.
/// Exactly one new card appears, showing the current state, with the new reply in
/// its thread — and no older card is left in the channel with working buttons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_card_is_replaced_exactly_once_with_the_current_state() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}{FAST_UPDATES}"),
    );
    l.state("alpha", "STOPPED", "STARTING");
    wait(&standin, 10, "the first card and its reply", |s| {
        s.channel("#ops").iter().any(|t| !t.replies.is_empty())
    })
    .await;
    let first = standin.channel("#ops")[0].parent.ts.clone();
    assert!(standin.delete_message("#ops", &first));
    assert!(standin.channel("#ops").is_empty());
    l.state("alpha", "STARTING", "RUNNING");
    let running = l.serial();
    wait(&standin, 15, "a new card with the new reply", |s| {
        s.channel("#ops")
            .iter()
            .any(|t| thread_serials(t).contains(&running))
    })
    .await;
    // Time for a second card, were one coming.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let threads = standin.channel("#ops");
    assert_eq!(threads.len(), 1, "exactly one new card: {threads:#?}");
    assert!(
        threads[0].parent.header().unwrap().contains("RUNNING"),
        "it shows the current state: {:?}",
        threads[0].parent.header()
    );
    assert_eq!(thread_serials(&threads[0]), [running]);
    let parents_posted = standin
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.error.is_none() && c.status == 200 && c.body.get("thread_ts").is_none())
        .count();
    assert_eq!(parents_posted, 2, "the first card and its one replacement");
    l.close();
}

/// The texts a post's card shows (every section and context of its attachment).
fn card_texts(body: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for b in body["attachments"][0]["blocks"].as_array().into_iter().flatten() {
        if let Some(t) = b["text"]["text"].as_str() {
            out.push(t.to_string());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            if let Some(t) = e["text"].as_str() {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// The serials a post reports in its metadata.
fn posted_serials(body: &serde_json::Value) -> Vec<u64> {
    body.pointer("/metadata/event_payload/serials")
        .and_then(|v| v.as_str())
        .map(|s| s.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default()
}

/// A flapping process (README, promise 3): once it flaps, its replies become digests,
/// at most one per `digest_interval`, each counting every change it holds — the
/// run-length sequence `(STARTING → RUNNING → EXITED) ×N`, how many changes, when and
/// how many crashes — and FATAL goes out at once. Checked on the JSON the stand-in
/// received and when it received it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_process_gets_a_digest_per_interval_that_counts_every_change_and_fatal_at_once() {
    const INTERVAL: Duration = Duration::from_secs(5);
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = FAST
        .replace("digest_interval = \"2s\"", "digest_interval = \"5s\"")
        .replace("settle_after = \"5s\"", "settle_after = \"60s\"");
    assert!(settings.contains("\"5s\"") && settings.contains("\"60s\""), "{settings}");
    let mut l = PipeListener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{settings}{FAST_UPDATES}coalesce_max = 1\nflap_threshold = 5\n"),
    );
    // The state each serial moved to, and from (serial 0: before the first).
    let mut to = vec!["STOPPED"];
    let mut send = |l: &mut PipeListener, from: &'static str, next: &'static str| {
        assert_eq!(*to.last().unwrap(), from);
        l.state("worker", from, next);
        to.push(next);
        assert_eq!(l.serial() as usize, to.len() - 1);
    };
    let cycle = [("STARTING", "RUNNING"), ("RUNNING", "EXITED"), ("EXITED", "STARTING")];
    let replies = |s: &StandIn| -> Vec<supervisor_slack::standin::Call> {
        s.calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.status == 200 && c.body.get("thread_ts").is_some() && !posted_serials(&c.body).is_empty())
            .collect()
    };
    let digests = |s: &StandIn| replies(s).into_iter().filter(|c| posted_serials(&c.body).len() > 1).count();

    send(&mut l, "STOPPED", "STARTING");
    wait(&standin, 10, "the first reply", |s| replies(s).len() == 1).await;
    // Three waves, each sent at once after the digest before it arrived (well
    // inside the interval, so each digest holds what came since the last).
    for wave in 0..3 {
        let started = std::time::Instant::now();
        for &(from, next) in cycle.iter().cycle().take(if wave < 2 { 180 } else { 15 }) {
            send(&mut l, from, next);
        }
        if wave == 2 {
            send(&mut l, "STARTING", "BACKOFF");
            send(&mut l, "BACKOFF", "FATAL");
        }
        assert!(
            started.elapsed() < INTERVAL / 2,
            "sending a wave took {:?}: too slow a machine for this test's plan",
            started.elapsed()
        );
        if wave < 2 {
            wait(&standin, 30, "the next digest", |s| digests(s) == wave + 1).await;
        }
    }
    let total = l.serial();
    wait(&standin, 30, "every event reported", |s| {
        replies(s).iter().map(|c| posted_serials(&c.body).len() as u64).sum::<u64>() == total
    })
    .await;
    let posts = replies(&standin);
    let reported: Vec<u64> = posts.iter().flat_map(|c| posted_serials(&c.body)).collect();
    assert_eq!(reported, (1..=total).collect::<Vec<_>>(), "every change once, in order");
    assert!(l.stderr().contains("process is flapping"), "{}", l.stderr());

    let first_digest = posts.iter().position(|c| posted_serials(&c.body).len() > 1).unwrap();
    let flapping = &posts[first_digest..];
    assert_eq!(flapping.len(), 3, "two digests, then FATAL's: {:#?}", flapping.iter().map(|c| posted_serials(&c.body)).collect::<Vec<_>>());
    // The pace: each digest at least an interval after the reply before it; FATAL's
    // at once after the second digest (long before another interval).
    for pair in posts[first_digest - 1..first_digest + 2].windows(2) {
        assert!(pair[1].at >= pair[0].at + INTERVAL, "digests {:?} then {:?}", pair[0].at, pair[1].at);
    }
    assert!(flapping[2].at < flapping[1].at + INTERVAL, "FATAL waited for the interval: {:?} after {:?}", flapping[2].at, flapping[1].at);

    for (i, post) in flapping.iter().enumerate() {
        let serials = posted_serials(&post.body);
        let (a, b) = (serials[0] as usize, *serials.last().unwrap() as usize);
        let n = serials.len();
        let texts = card_texts(&post.body);
        let all = texts.join("\n");
        // Its title: from the state before it to the last, and how many changes.
        let title = format!("{} → … → {} ({n} changes)", to[a - 1], to[b]);
        assert!(post.body["text"].as_str().unwrap().contains(&title), "{title:?} in {}", post.body["text"]);
        assert!(all.contains(&format!("*{n} changes, oldest first*")), "{all}");
        // When, and how many crashes: each EXITED was unexpected (`expected:0`).
        let exits = to[a..=b].iter().filter(|s| **s == "EXITED").count();
        let plural = |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        let crashes = if i < 2 {
            format!("{}: {}", plural(exits, "crash", "crashes"), plural(exits, "unexpected exit", "unexpected exits"))
        } else {
            format!(
                "{}: {}, 1 failed start, FATAL",
                plural(exits + 1, "crash", "crashes"),
                plural(exits, "unexpected exit", "unexpected exits")
            )
        };
        let summary = texts.iter().find(|t| t.contains(" – ")).unwrap_or_else(|| panic!("no summary in {texts:#?}"));
        assert!(summary.starts_with("<!date^") && summary.ends_with(&format!(" · {crashes}")), "{summary:?} ends with {crashes:?}");
        if i < 2 {
            // The run-length sequence of every state, none left out: the state before
            // the digest, then its own, repeating every three.
            let states = &to[a - 1..=b];
            let reps = states.len() / 3;
            let mut seq = format!("({}) ×{reps}", states[..3].join(" → "));
            for s in &states[3 * reps..] {
                seq.push_str(&format!(" → {s}"));
            }
            assert!(all.contains(&format!("*{n} changes, oldest first*\n{seq}")), "{seq:?} in {all}");
            assert!(n >= 150, "a digest holds what came in its interval: {n}");
        } else {
            // Few enough to list one per line, oldest first, ending in the FATAL.
            let listed: Vec<&str> = all.lines().filter(|l| l.starts_with("• ")).collect();
            assert_eq!(listed.len(), n, "{all}");
            assert!(listed[n - 2].contains("STARTING → BACKOFF"), "{all}");
            assert!(listed[n - 1].contains("BACKOFF → FATAL"), "{all}");
            assert_eq!(b as u64, total, "FATAL's reply holds everything left");
        }
    }
    l.close();
}
