//! Acting from Slack, with a real supervisord and the stand-in's Socket Mode: a click
//! on a card's button reaches the listener over a WebSocket, is acked, and — for the
//! people `[actions]` allows — restarts, stops or starts the process, shows its
//! stderr or mutes its thread; every action is audited in the thread, the log and
//! the state database. Everyone else is refused and told why (ephemeral).
//!
//! Needs `scripts/test-env`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::slack::{options, parent_process, slack_listener};
use common::supervisord::*;
use common::{secs, wait_until};
use supervisor_slack::standin::{Click, StandIn, StandInOptions, Thread};

const ADMIN: &str = "U0ADMIN";
const STRANGER: &str = "U0STRANGER";
const APP_TOKEN: &str = "xapp-1-A0TEST-1234-appsecretappsecret";

struct Env {
    standin: StandIn,
    sv: Supervisord,
    dir: tempfile::TempDir,
}

fn worker() -> Program {
    Program::new(
        "worker",
        "/bin/sh -c 'for i in 1 2 3; do echo \"worker stderr line $i <!channel>\" >&2; done; exec sleep 1000'",
    )
    .startsecs(1)
    .autorestart("true")
}

/// supervisord running `worker` and the listener with actions on for [`ADMIN`]
/// (`extra`: more settings, at the top level), the socket open and worker's card
/// posted with its buttons.
async fn start(extra: &str, opts: StandInOptions) -> Env {
    start_with(extra, &format!("allow_users = [\"{ADMIN}\"]\nmute_for = \"1h\"\n"), opts).await
}

/// [`start`] with `actions` as the `[actions]` table.
async fn start_with(extra: &str, actions: &str, opts: StandInOptions) -> Env {
    start_program(worker(), extra, actions, opts).await
}

/// [`start_with`] running `worker` as the program named worker.
async fn start_program(worker: Program, extra: &str, actions: &str, opts: StandInOptions) -> Env {
    let standin = StandIn::start(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{extra}\n[actions]\n{actions}");
    let listener = slack_listener(dir.path(), &standin.api_url(), &settings).env("SLACK_APP_TOKEN", APP_TOKEN);
    let sv = Supervisord::start(SupervisordConfig::new().program(worker).listener(listener));
    sv.wait_for_state("worker", "RUNNING", secs(10));
    assert!(
        standin.wait_for_sockets(1, secs(20)).await,
        "the listener opened Socket Mode: {}",
        sv.listener_stderr()
    );
    let env = Env { standin, sv, dir };
    env.wait_parent("worker's parent with its buttons", |t| {
        parent_state_is(t, "RUNNING") && has_button(&env, t, "restart")
    })
    .await;
    env
}

fn parent_state_is(t: &Thread, state: &str) -> bool {
    common::slack::parent_state(t) == state
}

fn has_button(env: &Env, t: &Thread, action: &str) -> bool {
    env.standin
        .buttons("#ops", &t.parent.ts)
        .iter()
        .any(|(id, _, _)| id == action)
}

impl Env {
    fn thread(&self) -> Option<Thread> {
        self.standin
            .channel("#ops")
            .into_iter()
            .find(|t| parent_process(t) == "worker")
    }

    async fn wait_parent(&self, what: &str, done: impl Fn(&Thread) -> bool) -> Thread {
        let mut last = None;
        for _ in 0..400 {
            last = self.thread();
            if last.as_ref().is_some_and(&done) {
                return last.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: {last:#?}\n{}", self.sv.diagnostics());
    }

    /// Every reply's visible text in worker's thread.
    fn replies(&self) -> Vec<String> {
        self.thread()
            .map(|t| t.replies.iter().map(|m| m.visible_text()).collect())
            .unwrap_or_default()
    }

    async fn wait_reply(&self, what: &str, needle: &str) -> String {
        for _ in 0..600 {
            if let Some(r) = self.replies().into_iter().find(|r| r.contains(needle)) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: no reply with {needle:?} in {:#?}\n{}", self.replies(), self.sv.diagnostics());
    }

    /// `user` clicks `action` on worker's parent; the envelope is acked.
    async fn click(&self, user: &str, action: &str) {
        let ts = self.thread().expect("worker's thread").parent.ts;
        let out = self.standin.click(Click::new(user, "#ops", ts, action)).await.unwrap();
        assert_eq!(out.acked, [true], "acked within Slack's 3 s: {out:?}");
        eprintln!("figure: {action} clicked by {user}, acked in {} ms", out.ack_ms[0]);
    }

    fn audit(&self) -> Vec<(String, String, Option<String>)> {
        audit(&self.dir.path().join("state.db"))
    }
}

/// The audit on disk: (user, action, outcome), oldest first.
fn audit(db: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn.prepare("SELECT user, action, outcome FROM actions ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_user_restarts_a_process_and_the_thread_says_who() {
    let env = start("", options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    env.click(ADMIN, "restart").await;
    let asked = env.wait_reply("the request is audited", "requested by").await;
    assert!(asked.contains("Restart") && asked.contains(&format!("<@{ADMIN}>")), "{asked}");
    let done = env.wait_reply("the outcome is audited", "RUNNING* again").await;
    let after = env.sv.process_pid("worker").unwrap();
    assert_ne!(before, after, "supervisord restarted worker");
    assert!(done.contains(&format!("pid {after}")), "the outcome names the new pid {after}: {done}");
    assert_eq!(env.sv.state("worker").as_deref(), Some("RUNNING"));
    // In the order it happened: the request, the changes it caused, then the outcome.
    let replies = env.replies();
    let asked_at = replies.iter().position(|r| r.contains("requested by")).unwrap();
    let stopping_at = replies.iter().position(|r| r.contains("→ STOPPING")).expect("the stop's event");
    let running_at = replies.iter().rposition(|r| r.contains("→ RUNNING")).unwrap();
    let done_at = replies.iter().position(|r| r.contains("RUNNING* again")).unwrap();
    assert!(asked_at < stopping_at && running_at < done_at, "{replies:#?}");
    // On disk and in the log, with the user id.
    let rows = env.audit();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), (ADMIN, "restart"));
    assert_eq!(rows[0].2.as_deref(), Some(format!("RUNNING, pid {after}").as_str()));
    let log = env.sv.listener_stderr();
    assert!(log.contains("action done") && log.contains(ADMIN), "{log}");
    assert!(!log.contains(APP_TOKEN) && !log.contains(common::slack::TOKEN), "no token in the log");
    // The parent shows the process's state again, with its buttons.
    env.wait_parent("the parent is RUNNING with Restart", |t| parent_state_is(t, "RUNNING") && has_button(&env, t, "restart")).await;
    env.sv.assert_no_protocol_trouble();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_not_allowed_changes_nothing_and_is_told_why() {
    let env = start("", options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    let replies = env.replies().len();
    env.click(STRANGER, "restart").await;
    assert!(
        wait_until(secs(10), || env.standin.ephemerals().iter().any(|e| e.user == STRANGER)),
        "the stranger is told: {:?}",
        env.standin.ephemerals()
    );
    let told = env.standin.ephemerals().into_iter().find(|e| e.user == STRANGER).unwrap();
    let text = told.text.unwrap_or_default();
    assert!(text.contains("not allowed") && text.contains(STRANGER), "{text}");
    std::thread::sleep(secs(2));
    assert_eq!(env.sv.process_pid("worker"), Some(before), "worker was not restarted");
    assert_eq!(env.replies().len(), replies, "nothing in the thread: {:?}", env.replies());
    assert!(env.standin.ephemerals().iter().all(|e| e.user == STRANGER), "only the stranger was told");
    let log = env.sv.listener_stderr();
    assert!(log.contains("refused") && log.contains(STRANGER), "{log}");
    let rows = env.audit();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].2.as_deref().unwrap_or_default().starts_with("refused"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_value_or_another_hosts_card_is_refused_and_nothing_runs() {
    let env = start("", options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    let ts = env.thread().unwrap().parent.ts;
    let (_, _, value) = env
        .standin
        .buttons("#ops", &ts)
        .into_iter()
        .find(|(id, _, _)| id == "restart")
        .unwrap();
    let send = |value: String, action: &str| {
        let mut c = Click::new(ADMIN, "#ops", ts.clone(), action);
        c.value = Some(value);
        env.standin.click(c)
    };
    // Another process of the same host, with worker's signature.
    send(value.replace("\"worker\"", "\"slack\""), "restart").await.unwrap();
    // Restart's value on the Stop button.
    send(value.clone(), "stop").await.unwrap();
    // Not a value this program writes.
    send("restart everything".into(), "restart").await.unwrap();
    // Another host's card (its own key): the answer names the owner.
    send(value.replace("\"web-1\"", "\"web-2\""), "restart").await.unwrap();
    assert!(
        wait_until(secs(10), || env.standin.ephemerals().len() == 4),
        "each click was answered: {:#?}",
        env.standin.ephemerals()
    );
    let told: Vec<String> = env.standin.ephemerals().into_iter().map(|e| e.text.unwrap_or_default()).collect();
    assert_eq!(told.iter().filter(|t| t.contains("not signed by this listener")).count(), 2, "{told:#?}");
    assert!(told.iter().any(|t| t.contains("not one supervisor-slack made")), "{told:#?}");
    let owner = told.iter().find(|t| t.contains("belongs to the host")).expect("the owner is named");
    assert!(owner.contains("*web-2*") && owner.contains("*web-1*") && owner.contains("need a fleet (fleet_url)"), "{owner}");
    std::thread::sleep(secs(2));
    assert_eq!(env.sv.process_pid("worker"), Some(before), "nothing was restarted");
    assert_eq!(env.sv.state("slack").as_deref(), Some("RUNNING"), "nor the listener");
    assert!(env.replies().iter().all(|r| !r.contains("requested by")), "{:?}", env.replies());
    assert!(env.audit().is_empty(), "refused before anything is recorded: {:?}", env.audit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_delivered_twice_runs_once() {
    let env = start("", options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    let ts = env.thread().unwrap().parent.ts;
    let mut c = Click::new(ADMIN, "#ops", ts, "restart");
    c.repeat = 2;
    let out = env.standin.click(c).await.unwrap();
    assert_eq!(out.acked, [true, true], "both envelopes acked: {out:?}");
    env.wait_reply("the restart is done", "RUNNING* again").await;
    std::thread::sleep(secs(3));
    let asked = env.replies().iter().filter(|r| r.contains("requested by")).count();
    assert_eq!(asked, 1, "one request in the thread: {:#?}", env.replies());
    assert_eq!(env.audit().len(), 1, "{:?}", env.audit());
    let stops = env.sv.main_log().matches("stopped: worker").count();
    assert_eq!(stops, 1, "supervisord stopped worker once:\n{}", env.sv.main_log());
    assert_ne!(env.sv.process_pid("worker"), Some(before));
    assert!(env.sv.listener_stderr().contains("delivered again"), "{}", env.sv.listener_stderr());
}

/// One action at a time per process: a click on a process while an action on it runs
/// is refused — its user is told, nothing runs, the refusal is audited — and once the
/// first one's outcome is in the thread, the next click runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_action_on_a_process_while_one_runs_is_refused_and_runs_nothing() {
    // worker counts as started 5 s after it starts: a restart runs that long.
    let actions = format!("allow_users = [\"{ADMIN}\"]\n");
    let env = start_program(worker().startsecs(5), "", &actions, options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    env.click(ADMIN, "restart").await;
    // Under way: stopped, started again, not yet counted as started; the card says
    // STARTING and offers Stop.
    env.wait_parent("the parent shows STARTING with Stop", |t| {
        parent_state_is(t, "STARTING") && has_button(&env, t, "stop")
    })
    .await;
    assert_eq!(env.sv.state("worker").as_deref(), Some("STARTING"), "the restart is under way");
    env.click(ADMIN, "stop").await;
    assert!(
        wait_until(secs(10), || env.standin.ephemerals().iter().any(|e| e.user == ADMIN)),
        "the second click is answered: {:?}",
        env.standin.ephemerals()
    );
    let told = env.standin.ephemerals().into_iter().find(|e| e.user == ADMIN).unwrap();
    let text = told.text.unwrap_or_default();
    assert!(text.contains("Another action on worker is under way"), "{text}");
    let done = env.wait_reply("the restart's outcome", "RUNNING* again").await;
    let after = env.sv.process_pid("worker").unwrap();
    assert_ne!(before, after, "supervisord restarted worker");
    assert!(done.contains(&format!("pid {after}")), "{done}");
    std::thread::sleep(secs(1));
    assert_eq!(env.sv.state("worker").as_deref(), Some("RUNNING"), "the refused stop ran nothing");
    assert_eq!(env.sv.main_log().matches("stopped: worker").count(), 1, "{}", env.sv.main_log());
    let asked = env.replies().iter().filter(|r| r.contains("requested by")).count();
    assert_eq!(asked, 1, "only the restart is said in the thread: {:#?}", env.replies());
    let rows = env.audit();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |action: &str| rows.iter().find(|r| r.1 == action).unwrap_or_else(|| panic!("{action} in {rows:?}"));
    assert_eq!(row("restart").2.as_deref(), Some(format!("RUNNING, pid {after}").as_str()));
    let refused = row("stop").2.clone().unwrap_or_default();
    assert!(refused.starts_with("refused") && refused.contains("under way"), "{refused}");
    assert!(rows.iter().all(|r| r.0 == ADMIN));
    // The first one's outcome is in: the next click runs.
    env.click(ADMIN, "stop").await;
    env.wait_reply("the stop is audited", "is *STOPPED*").await;
    assert_eq!(env.sv.state("worker").as_deref(), Some("STOPPED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_start_from_the_card() {
    let env = start("", options()).await;
    env.click(ADMIN, "stop").await;
    env.wait_reply("the stop is audited", "is *STOPPED*").await;
    assert_eq!(env.sv.state("worker").as_deref(), Some("STOPPED"));
    // The parent now offers Start (and no longer Restart or Stop).
    let t = env
        .wait_parent("the parent is STOPPED with Start", |t| parent_state_is(t, "STOPPED") && has_button(&env, t, "start"))
        .await;
    assert!(!has_button(&env, &t, "restart") && !has_button(&env, &t, "stop"));
    env.click(ADMIN, "start").await;
    let done = env.wait_reply("the start is audited", "is *RUNNING*").await;
    let pid = env.sv.process_pid("worker").unwrap();
    assert!(done.contains(&format!("pid {pid}")), "{done}");
    env.wait_parent("the parent is RUNNING again, with Restart", |t| parent_state_is(t, "RUNNING") && has_button(&env, t, "restart")).await;
    let rows = env.audit();
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(actions, ["stop", "start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stderr_posts_its_last_lines_escaped_in_a_code_block() {
    let env = start("", options()).await;
    env.click(ADMIN, "stderr").await;
    let shown = env.wait_reply("stderr is shown", "worker stderr line 3").await;
    assert!(shown.contains("Last 3 lines of stderr"), "{shown}");
    assert!(shown.contains("```"), "in a code block: {shown}");
    let t = env.thread().unwrap();
    let raw = serde_json::to_string(&t.replies.last().unwrap()).unwrap();
    assert!(!raw.contains("<!channel>"), "the log cannot ping the channel: {raw}");
    assert!(raw.contains("&lt;!channel&gt;"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_then_unmute_silences_and_restores_broadcasts_and_mentions() {
    let env = start("mentions = [\"<!here>\"]", options()).await;
    env.click(ADMIN, "mute").await;
    env.wait_reply("the mute is audited", "muted by").await;
    env.wait_parent("the parent says who muted it and offers Unmute", |t| {
        t.parent.visible_text().contains(&format!("Muted by <@{ADMIN}>")) && has_button(&env, t, "unmute")
    })
    .await;
    // A crash while muted: in the thread, not broadcast, no mention.
    let crash = |env: &Env| {
        let pid = env.sv.process_pid("worker").unwrap();
        common::signal(pid, "KILL");
        pid
    };
    let pid = crash(&env);
    let reply = env.wait_reply("the muted crash is in the thread", "EXITED").await;
    let posted = |needle: &str| {
        env.standin
            .calls_to("chat.postMessage")
            .into_iter()
            .filter(|c| c.body["text"].as_str().unwrap_or_default().contains(needle))
            .collect::<Vec<_>>()
    };
    let muted_posts = posted("→ EXITED");
    assert_eq!(muted_posts.len(), 1, "{reply}");
    assert_ne!(muted_posts[0].body["reply_broadcast"], serde_json::json!(true), "not broadcast while muted");
    assert!(!muted_posts[0].body.to_string().contains("<!here>"), "no mention while muted");
    env.sv.wait_for_state("worker", "RUNNING", secs(10));
    assert_ne!(env.sv.process_pid("worker"), Some(pid));

    env.click(ADMIN, "unmute").await;
    env.wait_reply("the unmute is audited", "unmuted by").await;
    env.wait_parent("the parent lost the mute line", |t| {
        !t.parent.visible_text().contains("Muted by") && has_button(&env, t, "mute")
    })
    .await;
    // A new episode (settle_after, 5 s, without a failure): its first failure is shown.
    std::thread::sleep(secs(6));
    crash(&env);
    assert!(
        wait_until(secs(15), || posted("→ EXITED").len() == 2),
        "{:#?}",
        env.replies()
    );
    let loud = &posted("→ EXITED")[1];
    assert!(loud.body.to_string().contains("<!here>"), "mentions are back: {}", loud.body);
    assert_eq!(loud.body["reply_broadcast"], serde_json::json!(true), "broadcast again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_still_arrive_after_the_socket_is_dropped_or_refreshed() {
    let env = start("", options()).await;
    let opened = env.standin.sockets_opened();
    env.standin.socket_drop();
    assert!(
        wait_until(secs(30), || env.standin.sockets_opened() > opened && env.standin.socket_connections() >= 1),
        "reconnected after a drop: {}",
        env.sv.listener_stderr()
    );
    env.click(ADMIN, "stderr").await;
    env.wait_reply("a click after the drop runs", "worker stderr line 3").await;
    let opened = env.standin.sockets_opened();
    env.standin.socket_disconnect("refresh_requested").await;
    assert!(
        wait_until(secs(30), || env.standin.sockets_opened() > opened && env.standin.socket_connections() >= 1),
        "reconnected after a refresh"
    );
    let before = env.sv.process_pid("worker").unwrap();
    env.click(ADMIN, "restart").await;
    env.wait_reply("a click after the refresh runs", "RUNNING* again").await;
    assert_ne!(env.sv.process_pid("worker"), Some(before));
    let log = env.sv.listener_stderr();
    assert!(!log.contains(APP_TOKEN), "no app token in the log");
    env.sv.assert_no_protocol_trouble();
}

/// The preview page in Chromium, as a newcomer uses it: Restart on worker's card, the
/// confirmation, and supervisord restarts worker; the page (acting as an allowed
/// user) shows who asked and the outcome in the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_page_in_chromium_an_allowed_user_restarts_a_process() {
    let Some(chromium) = common::cdp::chromium_or_skip("from_the_page_in_chromium_an_allowed_user_restarts_a_process") else {
        return;
    };
    let env = start(
        "",
        StandInOptions {
            page_user: ADMIN.into(),
            users: vec![(ADMIN.into(), "admin".into())],
            ..options()
        },
    )
    .await;
    let before = env.sv.process_pid("worker").unwrap();
    let ts = env.thread().unwrap().parent.ts;
    let url = format!("{}?channel=ops&thread={ts}", env.standin.page_url());
    let mut page = common::cdp::Browser::open(&chromium, &url).await;
    let wait = secs(30);
    let restart = r#"document.querySelector('button[data-action-id="restart"]')"#;
    assert!(page.wait_for(restart, wait).await, "worker's card has a Restart button");
    page.eval(&format!("{restart}.click()")).await;
    assert!(page.wait_for("document.getElementById('confirm').open", wait).await, "Restart asks first");
    let title = page.eval("document.getElementById('confirm-title').textContent").await;
    assert_eq!(title, serde_json::json!("Restart worker?"));
    page.eval("document.getElementById('confirm-yes').click()").await;
    let flow_has = |text: &str| format!("document.getElementById('flow').textContent.includes({text:?})");
    assert!(
        page.wait_for(&flow_has("requested by @admin"), wait).await,
        "the page shows who asked: {}",
        page.eval("document.getElementById('flow').textContent").await
    );
    assert!(page.wait_for(&flow_has("again, pid"), wait).await, "and the outcome");
    let after = env.sv.process_pid("worker").unwrap();
    assert_ne!(before, after, "supervisord restarted worker");
    assert!(
        page.wait_for(&flow_has(&format!("pid {after}")), wait).await,
        "the outcome names the new pid"
    );
}

/// `allow_groups`: a member of the group may act (its members asked once and
/// cached); when the group cannot be read (no scope, a free plan), nobody is let in
/// through it and the clicker is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_an_allowed_group_may_act_and_an_unreadable_group_lets_nobody_in() {
    let opts = StandInOptions {
        usergroups: vec![("S0OPS".into(), vec!["U0GROUPIE".into()])],
        ..options()
    };
    let env = start_with("", "allow_groups = [\"S0OPS\"]\n", opts).await;
    env.click("U0GROUPIE", "stderr").await;
    env.wait_reply("a member's click runs", "worker stderr line 3").await;
    env.click("U0GROUPIE", "stderr").await;
    assert!(
        wait_until(secs(10), || env.replies().iter().filter(|r| r.contains("worker stderr line 3")).count() == 2),
        "{:#?}",
        env.replies()
    );
    assert_eq!(env.standin.calls_to("usergroups.users.list").len(), 1, "the members are cached");
    env.click(STRANGER, "stderr").await;
    assert!(wait_until(secs(10), || env.standin.ephemerals().iter().any(|e| e.user == STRANGER)));

    let opts = StandInOptions {
        usergroups_error: Some("plan_upgrade_required".into()),
        ..options()
    };
    let env = start_with("", "allow_groups = [\"S0OPS\"]\n", opts).await;
    env.click("U0GROUPIE", "stderr").await;
    assert!(
        wait_until(secs(10), || env.standin.ephemerals().iter().any(|e| e.user == "U0GROUPIE")),
        "told: {:?}",
        env.standin.ephemerals()
    );
    assert!(env.replies().iter().all(|r| !r.contains("stderr line")), "{:#?}", env.replies());
    let log = env.sv.listener_stderr();
    assert!(log.contains("cannot read the members of an allowed user group") && log.contains("usergroups:read"), "{log}");
}

/// Two hosts share one Slack app (two listeners, each with its own state and key,
/// both connected to the same app): Slack gives a click to either connection. The
/// click that reaches the owner runs; the one that reaches the other host runs
/// nothing there and tells the user which host owns the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_that_reaches_another_hosts_listener_names_the_owner_and_runs_once() {
    let standin = StandIn::start(options()).await.unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let actions = format!("[actions]\nallow_users = [\"{ADMIN}\"]\n");
    let one = slack_listener(d1.path(), &standin.api_url(), &actions).env("SLACK_APP_TOKEN", APP_TOKEN);
    let two = slack_listener(d2.path(), &standin.api_url(), &actions)
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .env("SUPERVISOR_SLACK_HOST", "web-2");
    // Two servers, each with its supervisord, its worker and its listener.
    let sv = Supervisord::start(SupervisordConfig::new().program(worker()).listener(one));
    let other = Supervisord::start(SupervisordConfig::new().program(worker()).listener(two));
    sv.wait_for_state("worker", "RUNNING", secs(10));
    other.wait_for_state("worker", "RUNNING", secs(10));
    assert!(standin.wait_for_sockets(2, secs(20)).await, "both listeners connected: {}", other.diagnostics());
    let other_before = other.process_pid("worker").unwrap();
    let mut ts = None;
    assert!(
        wait_until(secs(30), || {
            ts = standin
                .channel("#ops")
                .into_iter()
                .find(|t| common::slack::header(t).contains("worker RUNNING on web-1") && !standin.buttons("#ops", &t.parent.ts).is_empty())
                .map(|t| t.parent.ts);
            ts.is_some()
        }),
        "web-1's card with its buttons: {:#?}",
        standin.channel("#ops")
    );
    let before = sv.process_pid("worker").unwrap();
    // The same click twice, round-robin: one envelope to each listener.
    let mut c = Click::new(ADMIN, "#ops", ts.unwrap(), "restart");
    c.repeat = 2;
    let out = standin.click(c).await.unwrap();
    assert_eq!(out.acked, [true, true], "{out:?}");
    assert!(
        wait_until(secs(20), || standin.ephemerals().iter().any(|e| e.text.as_deref().unwrap_or_default().contains("belongs to the host *web-1*"))),
        "web-2 named the owner: {:#?}",
        standin.ephemerals()
    );
    let told = standin.ephemerals().into_iter().next().unwrap().text.unwrap();
    assert!(told.contains("listener on *web-2*") && told.contains("need a fleet (fleet_url)"), "{told}");
    assert!(wait_until(secs(20), || sv.process_pid("worker").is_some_and(|p| p != before)), "web-1 restarted worker");
    std::thread::sleep(secs(2));
    assert_eq!(sv.main_log().matches("stopped: worker").count(), 1, "once:\n{}", sv.main_log());
    assert_eq!(audit(&d1.path().join("state.db")).len(), 1, "audited by the owner");
    assert!(audit(&d2.path().join("state.db")).is_empty(), "nothing run by the other host");
    assert_eq!(other.process_pid("worker"), Some(other_before), "web-2's worker was not touched");
}

/// A process that cannot start: its FATAL reply carries Start, and Start answers
/// with supervisord's SPAWN_ERROR, in the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_of_a_process_that_cannot_spawn_says_supervisords_fault() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let actions = format!("[actions]\nallow_users = [\"{ADMIN}\"]\n");
    let listener = slack_listener(dir.path(), &standin.api_url(), &actions).env("SLACK_APP_TOKEN", APP_TOKEN);
    // Dies 2.5 s into every start (before startsecs): supervisord gives up (FATAL),
    // and a Start, which waits for the outcome over 5 s, is supervisord's SPAWN_ERROR
    // (longer than any one call's default time-out: the action's own applies).
    let broken = Program::new("broken", "/bin/sh -c 'echo database down >&2; sleep 2.5; exit 1'")
        .startsecs(5)
        .startretries(1);
    let sv = Supervisord::start(SupervisordConfig::new().program(broken).listener(listener));
    sv.wait_for_state("broken", "FATAL", secs(30));
    let mut fatal = None;
    assert!(
        wait_until(secs(30), || {
            fatal = standin.channel("#ops").into_iter().find(|t| parent_process(t) == "broken").and_then(|t| {
                t.replies
                    .iter()
                    .rev()
                    .find(|r| r.visible_text().contains("FATAL") && !standin.buttons("#ops", &r.ts).is_empty())
                    .map(|r| r.ts.clone())
            });
            fatal.is_some()
        }),
        "the FATAL reply with its buttons: {:#?}",
        standin.channel("#ops")
    );
    let ts = fatal.unwrap();
    let offered: Vec<String> = standin.buttons("#ops", &ts).into_iter().map(|b| b.0).collect();
    assert_eq!(offered, ["start", "stderr", "mute"], "what a FATAL reply offers");
    let out = standin.click(Click::new(ADMIN, "#ops", ts, "start")).await.unwrap();
    assert_eq!(out.acked, [true]);
    let mut said = String::new();
    assert!(
        wait_until(secs(30), || {
            said = standin
                .channel("#ops")
                .into_iter()
                .find(|t| parent_process(t) == "broken")
                .map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            said.contains("failed: SPAWN_ERROR")
        }),
        "{said}\n{}",
        sv.diagnostics()
    );
    assert!(said.contains(&format!("({ADMIN} asked)")) || said.contains(&format!("(<@{ADMIN}> asked)")), "{said}");
}

/// An action never waits for Slack. With Slack answering 429 (Retry-After 20 s) and
/// then `not_in_channel` to every post — the audit lines cannot go out — a Restart
/// still runs at once, bounded by `timeout`, is recorded on disk, releases its mark
/// (a second action runs too), and its audit lines reach the thread once Slack
/// takes posts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_runs_within_its_timeout_while_slack_refuses_its_audit_lines() {
    let env = start_with(
        "",
        &format!("allow_users = [\"{ADMIN}\"]\ntimeout = \"5s\"\n"),
        StandInOptions {
            retry_after_secs: 20,
            ..options()
        },
    )
    .await;
    let before = env.sv.process_pid("worker").unwrap();
    env.standin
        .set_fault(supervisor_slack::standin::Fault::Status(429).on("chat.postMessage").times(1));
    env.standin.add_fault(
        supervisor_slack::standin::Fault::api_error("not_in_channel").on("chat.postMessage"),
    );
    env.click(ADMIN, "restart").await;
    // Within the action's timeout (5 s) and a margin no wait on Slack could meet.
    let mut after = before;
    assert!(
        wait_until(secs(8), || {
            after = env.sv.process_pid("worker").unwrap_or(before);
            after != before && env.audit().first().is_some_and(|r| r.2.is_some())
        }),
        "the restart ran and its outcome is on disk while Slack refuses posts: {:?}\n{}",
        env.audit(),
        env.sv.diagnostics()
    );
    assert_eq!(env.audit()[0].2.as_deref(), Some(format!("RUNNING, pid {after}").as_str()));
    // The mark is released: a second action on the process runs as well (Show
    // stderr: the card may show a passing state while edits wait out the 429).
    env.click(ADMIN, "stderr").await;
    assert!(
        wait_until(secs(8), || env.audit().len() == 2 && env.audit()[1].2.as_deref() == Some("stderr shown")),
        "the second action ran: {:?}",
        env.audit()
    );
    assert!(env.standin.ephemerals().is_empty(), "nobody was told another action is under way");
    // Slack takes posts again: the audit lines follow, in the thread.
    env.standin.set_fault(supervisor_slack::standin::Fault::None);
    let asked = env.wait_reply("the first request, once Slack takes posts", "requested by").await;
    assert!(asked.contains("Restart"), "{asked}");
    env.wait_reply("an outcome", "RUNNING* again").await;
    assert!(env.standin.calls_during_retry_after().is_empty(), "the 429's Retry-After was honoured");
}

/// A click whose turn comes long after it was made is refused rather than run at a
/// moment nobody expects any more; the clicker is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_that_arrives_too_late_is_refused_and_nothing_runs() {
    let env = start("", options()).await;
    let before = env.sv.process_pid("worker").unwrap();
    let ts = env.thread().unwrap().parent.ts;
    let mut c = Click::new(ADMIN, "#ops", ts, "restart");
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 120;
    c.action_ts = Some(format!("{long_ago}.000100"));
    let out = env.standin.click(c).await.unwrap();
    assert_eq!(out.acked, [true]);
    assert!(
        wait_until(secs(10), || env.standin.ephemerals().iter().any(|e| e.user == ADMIN)),
        "the clicker is told: {:?}",
        env.standin.ephemerals()
    );
    let told = env.standin.ephemerals()[0].text.clone().unwrap_or_default();
    assert!(told.contains("late") && told.contains("nothing was done"), "{told}");
    std::thread::sleep(secs(2));
    assert_eq!(env.sv.process_pid("worker"), Some(before), "nothing was restarted");
    let rows = env.audit();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].2.as_deref().unwrap_or_default().starts_with("refused: 1"), "{rows:?}");
}
