//! Asking from Slack, with a real supervisord and the stand-in's Socket Mode: a user
//! types `/supervisor status`, `tail` or `why`, the listener acks the
//! `slash_commands` envelope within Slack's 3 s with the answer (or "working on it",
//! and the answer to the command's `response_url`), and only that user sees it.
//! Who may ask what follows `[actions]`; bad input gets a specific answer.
//!
//! Needs `scripts/test-env`.

mod common;

use std::path::Path;

use common::slack::{options, parent_process, slack_listener, HungSlack};
use common::supervisord::*;
use common::secs;
use supervisor_slack::standin::{SlashCommand, StandIn, StandInOptions};

const ADMIN: &str = "U0ADMIN";
const STRANGER: &str = "U0STRANGER";
const APP_TOKEN: &str = "xapp-1-A0TEST-1234-appsecretappsecret";

/// What `reports` printed before it settled: a traceback that tries to ping the
/// channel and to close the code block it is shown in.
const TRACEBACK: &str = r#"Traceback (most recent call last):
  File "reports.py", line 12, in <module>
    build(rows)
ValueError: bad row <!channel> @here & <https://evil.example|click>
```
not code any more"#;

struct Env {
    standin: StandIn,
    sv: Supervisord,
    _dir: tempfile::TempDir,
}

/// A program running the shell script `body` (written to a file of its own).
fn script(dir: &Path, name: &str, body: &str) -> Program {
    let path = dir.join(format!("{name}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    Program::new(name, &format!("/bin/sh {}", path.display()))
}

/// supervisord running `web`, `reports` (which printed [`TRACEBACK`] to stderr and
/// runs on) and `worker` (which crashes with exit status 3 after 2 s, and stays
/// down), and the listener with `[actions]` = `actions` (`extra`: more top-level
/// settings); the socket open and every card posted.
async fn start(extra: &str, actions: &str, opts: StandInOptions) -> Env {
    let standin = StandIn::start(opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("traceback.txt"), TRACEBACK).unwrap();
    let reports = script(
        dir.path(),
        "reports",
        &format!("cat {} >&2\nexec sleep 1000", dir.path().join("traceback.txt").display()),
    )
    .startsecs(1);
    let worker = script(
        dir.path(),
        "worker",
        "echo 'worker: connecting to the queue' >&2\nsleep 2\necho 'RuntimeError: lost the queue <!here>' >&2\nexit 3",
    )
    .startsecs(1)
    .autorestart("false");
    let settings = format!("{extra}\n[actions]\n{actions}");
    let listener = slack_listener(dir.path(), &standin.api_url(), &settings).env("SLACK_APP_TOKEN", APP_TOKEN);
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web"))
            .program(reports)
            .program(worker)
            .listener(listener),
    );
    sv.wait_for_state("reports", "RUNNING", secs(10));
    assert!(
        standin.wait_for_sockets(1, secs(20)).await,
        "the listener opened Socket Mode: {}",
        sv.listener_stderr()
    );
    let env = Env { standin, sv, _dir: dir };
    assert!(
        env.standin
            .wait_for(secs(30), |s| {
                let threads = s.channel("#ops");
                ["web", "reports", "worker"]
                    .iter()
                    .all(|p| threads.iter().any(|t| parent_process(t) == *p))
            })
            .await,
        "every process has its card: {:#?}\n{}",
        env.standin.channel("#ops"),
        env.sv.diagnostics()
    );
    env
}

/// `[actions]` letting [`ADMIN`] act and ask.
fn admin() -> String {
    format!("allow_users = [\"{ADMIN}\"]\n")
}

impl Env {
    /// `user` types `/supervisor TEXT` in `channel`: the envelope is acked within
    /// Slack's 3 s, and the answer is only for `user`. Returns the answer's text:
    /// the ack's, or (after "working on it") what came to the response URL.
    async fn ask_in(&self, user: &str, channel: &str, text: &str) -> String {
        let before = self.standin.command_answers().len();
        let out = self
            .standin
            .command(SlashCommand::new(user, channel, text))
            .await
            .unwrap();
        assert!(out.acked, "acked within Slack's 3 s: {out:?}\n{}", self.sv.listener_stderr());
        assert_eq!(out.refused, None, "Slack would show the answer");
        eprintln!("figure: /supervisor {text} by {user}, acked in {} ms", out.ack_ms);
        let payload = out.payload.expect("the ack carries the answer");
        let rt = payload.get("response_type").and_then(|v| v.as_str());
        assert!(rt.is_none() || rt == Some("ephemeral"), "only the asker sees it: {payload}");
        let first = payload["text"].as_str().unwrap_or_default().to_string();
        let answers = self.standin.command_answers();
        let mine = &answers[before..];
        assert!(mine.iter().all(|a| a.user == user), "answers go to the asker alone: {mine:?}");
        eprintln!("answer: {first}");
        if !first.contains("Working on it") {
            return first;
        }
        assert!(
            self.standin
                .wait_for(secs(40), |s| s.command_answers()[before..].iter().any(|a| a.via == "response_url"))
                .await,
            "the answer followed to the response URL: {}",
            self.sv.listener_stderr()
        );
        let later = self.standin.command_answers()[before..]
            .iter()
            .find(|a| a.via == "response_url")
            .unwrap()
            .clone();
        assert_eq!(later.user, user);
        later.text()
    }

    async fn ask(&self, user: &str, text: &str) -> String {
        self.ask_in(user, "#ops", text).await
    }
}

/// Every line of a status answer that names `process`.
fn line_of<'a>(answer: &'a str, process: &str) -> &'a str {
    answer
        .lines()
        .find(|l| l.contains(&format!("* {process} ·")))
        .unwrap_or_else(|| panic!("no line for {process} in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_process_failing_first_and_a_pattern_narrows_it() {
    let env = start("", &admin(), options()).await;
    env.sv.wait_for_state("worker", "EXITED", secs(15));
    let all = env.ask(ADMIN, "status").await;
    // The listener itself (an event listener, `slack`) is one of supervisord's too.
    assert!(all.starts_with("*4 processes* on web-1 · 1 failing"), "{all}");
    // The failing one first, with its state; the running ones with pid and since when.
    let lines: Vec<&str> = all.lines().skip(1).collect();
    assert!(lines[0].contains("*EXITED* worker · web-1"), "{all}");
    let web = line_of(&all, "web");
    let pid = env.sv.process_pid("web").unwrap();
    assert!(web.contains("*RUNNING*") && web.contains(&format!("pid {pid}")) && web.contains("since <!date^"), "{web}");
    assert!(line_of(&all, "reports").contains("*RUNNING*"), "{all}");
    assert!(line_of(&all, "slack").contains("*RUNNING*"), "{all}");

    let some = env.ask(ADMIN, "status rep*").await;
    assert!(some.starts_with("*1 process* matching “rep*” on web-1 · 0 failing"), "{some}");
    assert!(line_of(&some, "reports").contains("*RUNNING*"));
    assert_eq!(some.lines().count(), 2, "{some}");
    // The host is a pattern too.
    let host = env.ask(ADMIN, "status web-1").await;
    assert!(host.starts_with("*4 processes*"), "{host}");

    let none = env.ask(ADMIN, "status nothing*").await;
    assert!(none.contains("No process matches “nothing*”") && none.contains("reports"), "{none}");
    let bad = env.ask(ADMIN, "status [web").await;
    assert!(bad.contains("“[web” is not a pattern") && bad.contains("Usage:"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shows_a_traceback_escaped_in_a_code_block_and_is_logged_with_the_user() {
    let env = start("", &admin(), options()).await;
    let answer = env.ask(ADMIN, "tail reports").await;
    assert!(answer.starts_with("📄 Last 6 lines of stderr of reports on web-1\n```\n"), "{answer}");
    assert!(answer.ends_with("\n```"), "{answer}");
    let body = &answer[answer.find("```\n").unwrap() + 4..answer.len() - 4];
    assert!(body.contains("ValueError: bad row &lt;!channel&gt; @here &amp; &lt;https://evil.example|click&gt;"), "{body}");
    assert!(body.contains("File \"reports.py\", line 12"), "{body}");
    assert!(!body.contains("```"), "the log cannot close the block: {body}");
    assert!(!answer.contains("<!channel>") && !answer.contains("<https"), "nothing pings or links: {answer}");
    // n lines, at most stderr_lines (20 by default), and --stdout.
    let two = env.ask(ADMIN, "tail reports 2").await;
    assert!(two.starts_with("📄 Last 2 lines of stderr") && two.contains("not code any more"), "{two}");
    assert!(!two.contains("ValueError"), "{two}");
    let many = env.ask(ADMIN, "tail reports 500").await;
    assert!(many.contains("(at most 20: `[actions] stderr_lines`)"), "{many}");
    let stdout = env.ask(ADMIN, "tail reports --stdout").await;
    assert!(stdout.contains("stdout of reports on web-1 is empty"), "{stdout}");
    let bad = env.ask(ADMIN, "tail reports 0").await;
    assert!(bad.contains("1 or more, not 0") && bad.contains("tail &lt;process&gt; [host] [n] [--stdout]"), "{bad}");
    let missing = env.ask(ADMIN, "tail report").await;
    assert!(missing.contains("No process named “report”") && missing.contains("Did you mean reports (web-1)?"), "{missing}");
    let log = env.sv.listener_stderr();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains("tail asked from Slack")).collect();
    assert_eq!(logged.len(), 4, "every tail is logged: {log}");
    assert!(logged.iter().all(|l| l.contains(ADMIN) && l.contains("reports")), "{logged:#?}");
    assert!(!log.contains(APP_TOKEN) && !log.contains(common::slack::TOKEN), "no token in the log");
    assert!(!log.contains("response_url"), "no response URL in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_after_a_crash_shows_its_exit_status_uptime_and_stderr_at_the_time() {
    let env = start("", &admin(), options()).await;
    env.sv.wait_for_state("worker", "EXITED", secs(15));
    // Before its failure reply is delivered, nothing is recorded; then it is.
    let mut answer = String::new();
    for _ in 0..40 {
        answer = env.ask(ADMIN, "why worker").await;
        if answer.contains("Last crash") {
            break;
        }
        assert!(answer.contains("No crash of worker on web-1 is recorded"), "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(answer.starts_with("🔍 Last crash of worker on web-1: ❌ *EXITED* <!date^"), "{answer}");
    assert!(answer.contains("exit status 3"), "{answer}");
    assert!(answer.contains("• exit status 3 · ran 2s") || answer.contains("· ran 3s"), "uptime: {answer}");
    assert!(answer.contains("of stderr at the time:\n```\n"), "{answer}");
    assert!(answer.contains("RuntimeError: lost the queue &lt;!here&gt;"), "{answer}");
    assert!(!answer.contains("<!here>"), "{answer}");
    // A process that never crashed says so; a name nobody has is told apart.
    let web = env.ask(ADMIN, "why web").await;
    assert!(web.contains("No crash of web on web-1 is recorded"), "{web}");
    let nobody = env.ask(ADMIN, "why nobody web-1").await;
    assert!(nobody.contains("No process named “nobody” on web-1"), "{nobody}");
    let elsewhere = env.ask(ADMIN, "why worker web-9").await;
    assert!(elsewhere.contains("No host “web-9”") && elsewhere.contains("web-1"), "{elsewhere}");
    // Kept in the state database, as the failure reply showed it.
    let db = rusqlite::Connection::open(env._dir.path().join("state.db")).unwrap();
    let kept: String = db
        .query_row("SELECT crash FROM crashes WHERE process = 'worker'", [], |r| r.get(0))
        .unwrap();
    assert!(kept.contains("\"exit_status\":3"), "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_ask_follows_the_settings_and_a_refusal_says_why() {
    let env = start("", &admin(), options()).await;
    // status is open to the channel the listener posts to...
    let status = env.ask(STRANGER, "status").await;
    assert!(status.starts_with("*4 processes*"), "{status}");
    // ...but not elsewhere, nor tail or why, which show logs.
    let tail = env.ask(STRANGER, "tail reports").await;
    assert!(tail.starts_with(":no_entry: You may not ask `tail` on web-1"), "{tail}");
    assert!(tail.contains("can hold secrets") && tail.contains(STRANGER), "{tail}");
    assert!(!tail.contains("ValueError"), "{tail}");
    let why = env.ask(STRANGER, "why worker").await;
    assert!(why.starts_with(":no_entry: You may not ask `why`"), "{why}");
    let elsewhere = env.ask_in(STRANGER, "#random", "status").await;
    assert!(elsewhere.contains("open to the members of #ops") && elsewhere.contains(STRANGER), "{elsewhere}");
    // The allowed user may, anywhere; help says what each may ask.
    assert!(env.ask_in(ADMIN, "#random", "tail reports").await.contains("ValueError"));
    let help = env.ask(STRANGER, "help").await;
    assert!(help.contains("`/supervisor status [pattern]`") && help.contains("not for you here"), "{help}");
    assert_eq!(help.matches("not for you here").count(), 2, "tail and why: {help}");
    let unknown = env.ask(STRANGER, "restart worker").await;
    assert!(unknown.contains("“restart” is not a subcommand; there are status, tail, why and help"), "{unknown}");
    let log = env.sv.listener_stderr();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused a /supervisor command")).collect();
    assert_eq!(refused.len(), 3, "{log}");
    assert!(refused.iter().all(|l| l.contains(STRANGER)), "{refused:#?}");
    assert!(!log.lines().any(|l| l.contains("tail asked from Slack") && l.contains(STRANGER)), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_switched_off_or_closed_to_the_channel_are_refused() {
    let actions = format!("{}allowed = [\"restart\", \"why\"]\nopen_to_channel = []\n", admin());
    let env = start("", &actions, options()).await;
    let status = env.ask(ADMIN, "status").await;
    assert!(status.contains("`status` is switched off on web-1") && status.contains("[actions] allowed"), "{status}");
    let why = env.ask(STRANGER, "why worker").await;
    assert!(why.starts_with(":no_entry: You may not ask `why`"), "{why}");
    assert!(env.ask(ADMIN, "why worker").await.contains("worker on web-1"));
}

/// A supervisord that takes the question and never answers: the ack says "working
/// on it" at once, and the answer (that it did not answer) follows to the command's
/// response URL, bounded by `[actions] timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_follows_to_the_response_url() {
    let hung = HungSlack::start();
    let url = hung.api_url().trim_end_matches("/api").to_string();
    let extra = format!("supervisor_server_url = \"{url}\"\n");
    let env = start(&extra, &format!("{}timeout = \"3s\"\n", admin()), options()).await;
    let before = env.standin.command_answers().len();
    let answer = env.ask(ADMIN, "status").await;
    let answers = env.standin.command_answers();
    let mine = &answers[before..];
    assert_eq!(mine[0].via, "ack");
    assert!(mine[0].text().starts_with("⏳ Working on it"), "{mine:?}");
    assert_eq!(mine.last().unwrap().via, "response_url");
    assert!(answer.contains("Cannot list the processes") || answer.contains("No process list within"), "{answer}");
    assert!(answer.contains("3s"), "{answer}");
}

/// On the preview page, in Chromium: the allowed user types `/supervisor status`,
/// `tail reports` and `why worker` in the message box; each answer shows in the
/// channel marked "Only visible to you".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_page_in_chromium_a_typed_command_is_answered_only_for_the_user() {
    let Some(chromium) = common::cdp::chromium_or_skip("on_the_page_in_chromium_a_typed_command_is_answered_only_for_the_user") else {
        return;
    };
    let opts = StandInOptions {
        page_user: ADMIN.into(),
        users: vec![(ADMIN.into(), "admin".into())],
        ..options()
    };
    let env = start("", &admin(), opts).await;
    env.sv.wait_for_state("worker", "EXITED", secs(15));
    assert!(
        env.standin
            .wait_for(secs(20), |s| s.channel("#ops").iter().any(|t| parent_process(t) == "worker"
                && t.replies.iter().any(|r| r.visible_text().contains("EXITED"))))
            .await,
        "worker's failure reply is posted"
    );
    let url = format!("{}?channel=ops", env.standin.page_url());
    let mut page = common::cdp::Browser::open(&chromium, &url).await;
    let wait = secs(30);
    assert!(page.wait_for("document.getElementById('composer-text') !== null", wait).await, "the page has a message box");
    let answers = "Array.from(document.querySelectorAll('.msg.ephemeral')).map(function(m){return m.textContent}).join('\\n----\\n')";
    for (typed, shows) in [
        ("/supervisor status", "4 processes on web-1"),
        ("/supervisor tail reports", "ValueError: bad row <!channel> @here & <https://evil.example|click>"),
        ("/supervisor why worker", "Last crash of worker on web-1"),
    ] {
        let before = env.standin.command_answers().len();
        page.eval(&format!(
            "(function(){{var i=document.getElementById('composer-text');i.value={typed:?};document.getElementById('composer').requestSubmit();}})()"
        ))
        .await;
        assert!(
            env.standin.wait_for(wait, |s| s.command_answers().len() > before).await,
            "{typed} reached the listener and was answered"
        );
        let shown = format!("{answers}.includes({shows:?})");
        assert!(
            page.wait_for(&shown, wait).await,
            "the page shows the answer to {typed}: {}",
            page.eval(answers).await
        );
    }
    // Every answer is marked as only for the reader, and none pings or links.
    let marked = page
        .eval("Array.from(document.querySelectorAll('.msg.ephemeral')).every(function(m){return m.textContent.includes('Only visible to you')})")
        .await;
    assert_eq!(marked, serde_json::json!(true));
    let links = page.eval("document.querySelectorAll('.msg.ephemeral a, .msg.ephemeral .mention').length").await;
    assert_eq!(links, serde_json::json!(0), "no link and no mention in the answers");
    let pre = page.eval("Array.from(document.querySelectorAll('.msg.ephemeral pre')).map(function(p){return p.textContent}).join('|')").await;
    assert!(pre.as_str().unwrap_or_default().contains("not code any more"), "the whole log is inside the code block: {pre}");
    let figures: Vec<u64> = env.standin.command_answers().iter().map(|a| a.at.as_millis() as u64).collect();
    eprintln!("figure: page commands answered at {figures:?} ms since the stand-in started");
}

/// Two hosts of a fleet (two supervisords, two listeners, one PostgreSQL) on one
/// Slack app, one of them holding its connection: `status` covers both hosts from
/// either, a name both run is ambiguous and lists both, and `tail worker web-2`
/// asked of whichever host holds the connection is answered by web-2 (through the
/// fleet's action queue when it is not web-2 itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_of_two_hosts_status_covers_both_and_a_question_reaches_its_host() {
    let standin = StandIn::start(StandInOptions { random_sockets: true, ..options() }).await.unwrap();
    let url = common::postgres::database();
    let extra = format!("socket_connections = 1\n[actions]\n{}", admin());
    let hosts: Vec<common::fleet::Host> = ["web-1", "web-2"]
        .iter()
        .map(|host| {
            let worker = Program::new("worker", &format!("/bin/sh -c 'echo worker-says-{host} >&2; exec sleep 1000'"));
            common::fleet::Host::start_env(host, &standin.api_url(), &url, &[worker], &extra, &[("SLACK_APP_TOKEN", APP_TOKEN)])
        })
        .collect();
    for h in &hosts {
        h.sv.wait_for_state("worker", "RUNNING", secs(10));
    }
    assert!(standin.wait_for_sockets(1, secs(20)).await, "one listener opened Socket Mode");
    // Both hosts' heartbeats are in (status lists every host's table).
    let both = |text: &str| text.contains("worker · web-1") && text.contains("worker · web-2");
    let mut text = String::new();
    for _ in 0..40 {
        let out = standin.command(SlashCommand::new(ADMIN, "#ops", "status worker")).await.unwrap();
        text = out.payload.unwrap()["text"].as_str().unwrap().to_string();
        if both(&text) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(both(&text) && text.contains("on 2 hosts"), "{text}");
    let out = standin.command(SlashCommand::new(ADMIN, "#ops", "tail worker")).await.unwrap();
    let text = out.payload.unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.contains("“worker” means 2 processes"), "{text}");
    assert!(text.contains("`/supervisor tail worker web-1`"), "{text}");
    for host in ["web-1", "web-2"] {
        let out = standin.command(SlashCommand::new(ADMIN, "#ops", &format!("tail worker {host}"))).await.unwrap();
        assert!(out.acked);
        let said = format!("worker-says-{host}");
        let answered = |s: &StandIn| s.command_answers().iter().any(|a| a.text().contains(&said));
        assert!(
            standin.wait_for(secs(15), answered).await,
            "{host} answered its tail: {:#?}\n{}",
            standin.command_answers(),
            hosts.iter().map(|h| h.log()).collect::<Vec<_>>().join("\n")
        );
    }
}
