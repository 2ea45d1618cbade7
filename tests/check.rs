//! `check` without Slack: findings come with fixes, problems make a non-zero exit.
//! `auth.test` and `--post-test` run against the Slack stand-in.

mod common;

use std::time::Duration;

use supervisor_slack::check::{self, check_state_path, check_supervisor, Level, Options, Report};
use supervisor_slack::config::{parse_str, resolve, Settings};
use supervisor_slack::standin::{Identity, StandIn, StandInOptions};

fn settings(text: &str, env: &dyn supervisor_slack::config::Env) -> Settings {
    resolve(&parse_str(text, None).unwrap(), env)
        .unwrap()
        .settings
}

#[tokio::test]
async fn missing_token_and_channel_are_problems_with_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        "",
        &[(
            "SUPERVISOR_SLACK_STATE",
            dir.path().join("s.db").to_str().unwrap(),
        )],
    );
    let report = check::run(&s, &Options::default()).await;
    let problems: Vec<_> = report.problems().collect();
    assert_eq!(problems.len(), 2, "{report}");
    assert!(problems.iter().all(|p| p.fix.is_some()));
    assert!(problems[0].what.contains("no Slack token"));
    assert!(problems[1].what.contains("no default channel"));
    assert_eq!(report.exit_code(), 1);
    let shown = report.to_string();
    assert!(shown.contains("fix: set SLACK_TOKEN_FILE"), "{shown}");
    assert!(shown.contains("2 problem(s) found"), "{shown}");
}

#[tokio::test]
async fn unreachable_slack_is_a_problem_naming_the_url() {
    // Port 9 on localhost: nothing listens; the connection is refused at once.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let env = [
        ("SLACK_TOKEN", "xoxb-test"),
        ("SLACK_CHANNEL", "#ops"),
        ("SLACK_API_URL", "http://127.0.0.1:9/api"),
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
    ];
    let s = settings("call_timeout = \"2s\"\n", &env);
    let report = check::run(&s, &Options::default()).await;
    let p: Vec<_> = report.problems().collect();
    assert_eq!(p.len(), 1, "{report}");
    assert!(p[0].what.starts_with("auth.test"), "{report}");
    assert!(
        p[0].fix
            .as_ref()
            .unwrap()
            .contains("http://127.0.0.1:9/api"),
        "{report}"
    );
}

#[test]
fn a_settings_error_is_a_report_with_one_problem() {
    let e = parse_str("chanel = \"#ops\"\n", None).unwrap_err();
    let report = Report::from_config_error(&e);
    assert_eq!(report.exit_code(), 1);
    assert!(report.to_string().contains("chanel"), "{report}");
}

#[test]
fn warnings_do_not_fail_the_check() {
    let report = Report {
        findings: vec![check::Finding::warning("token file readable", "chmod 600")],
    };
    assert_eq!(report.exit_code(), 0);
    assert!(report.to_string().contains("WARNING"));
}

#[test]
fn state_path_in_a_writable_directory_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let f = check_state_path(&dir.path().join("deeper/state.db"));
    assert_eq!(f.level, Level::Ok, "{f:?}");
    assert!(!dir.path().join("deeper").exists(), "check creates nothing");
}

/// A directory the listener cannot write to. Its mode (0500) stops other users;
/// root writes through any mode, so as root the directory is a read-only tmpfs,
/// which refuses root too: the check runs either way.
#[cfg(unix)]
#[test]
fn state_path_in_a_read_only_directory_is_a_problem() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    let _read_only = if supervisor_slack::config::dir_writable(&ro) {
        let Some(disk) = common::disk::Tmpfs::mount(&ro, "ro,size=64k") else {
            return;
        };
        assert!(
            !supervisor_slack::config::dir_writable(&ro),
            "a read-only tmpfs refuses writes"
        );
        Some(disk)
    } else {
        None
    };
    let f = check_state_path(&ro.join("state.db"));
    assert_eq!(f.level, Level::Problem, "{f:?}");
    assert!(f.fix.unwrap().contains("SUPERVISOR_SLACK_STATE"));
}

#[test]
fn state_path_under_a_file_is_a_problem() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let f = check_state_path(&file.path().join("state.db"));
    assert_eq!(f.level, Level::Problem, "{f:?}");
    assert!(f.what.contains("is not a directory"), "{f:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn supervisord_socket_reachable_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("supervisor.sock");
    let url = format!("unix://{}", sock.display());
    let f = check_supervisor(Some(&url), None, None, Duration::from_secs(2)).await;
    assert_eq!(f.level, Level::Problem, "{f:?}");
    assert!(f.fix.unwrap().contains("supervisor_server_url"));

    // A socket that accepts but never answers XML-RPC is not supervisord answering
    // (an OK for it was the connect-only check before `check` asked getState).
    let _listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let f = check_supervisor(Some(&url), None, None, Duration::from_millis(300)).await;
    assert_eq!(f.level, Level::Problem, "{f:?}");
    assert!(f.what.contains("did not answer within 300ms"), "{f:?}");

    let f = check_supervisor(None, None, None, Duration::from_secs(2)).await;
    assert_eq!(f.level, Level::Note, "not under supervisord is no problem");
}

#[test]
fn the_test_card_escapes_the_host() {
    let card = check::test_card("<!channel>");
    assert!(!card.blocks.to_string().contains("<!channel>"));
    assert!(!card.text.contains("<!channel>"), "{}", card.text);
    assert!(!card.fallback.contains("<!channel>"));
}

/// The Slack stand-in as the workspace "Acme", whose bot was never invited to #nobot.
async fn acme_slack() -> StandIn {
    StandIn::start(StandInOptions {
        identity: Identity {
            team: "Acme".into(),
            url: "https://acme.slack.com/".into(),
            team_id: "T1".into(),
            user: "supervisor-bot".into(),
            user_id: "U1".into(),
            bot_id: "B1".into(),
        },
        uninvited_channels: vec!["#nobot".into()],
        ..StandInOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_working_token_names_the_workspace_and_bot_and_post_test_posts_to_each_channel() {
    let slack = acme_slack().await;
    let url = slack.api_url();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let env = [
        ("SLACK_TOKEN", "xoxb-test"),
        ("SLACK_API_URL", url.as_str()),
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
    ];
    let s = settings(
        "channel = \"#ops\"\n[[route]]\ngroup = \"x\"\nchannel = \"#nobot\"\n",
        &env,
    );
    let report = check::run(
        &s,
        &Options {
            post_test: true,
            ..Options::default()
        },
    )
    .await;
    let shown = report.to_string();
    assert!(
        shown.contains("token works: workspace \"Acme\" (https://acme.slack.com/), bot user supervisor-bot (B1)"),
        "{shown}"
    );
    assert!(shown.contains("posted a test message to #ops"), "{shown}");
    let p: Vec<_> = report.problems().collect();
    assert_eq!(p.len(), 1, "{shown}");
    assert!(p[0].what.starts_with("posting to #nobot"), "{shown}");
    assert!(
        p[0].fix
            .as_ref()
            .unwrap()
            .contains("invite the bot to #nobot"),
        "{shown}"
    );
    let channels: Vec<_> = slack
        .calls_to("chat.postMessage")
        .iter()
        .map(|c| c.body["channel"].clone())
        .collect();
    assert_eq!(channels, vec!["#ops", "#nobot"]);
    assert_eq!(
        slack.channel("#ops").len(),
        1,
        "the test message is in #ops"
    );
    assert!(slack.channel("#nobot").is_empty());
}

#[tokio::test]
async fn a_template_that_makes_invalid_block_kit_is_a_problem_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    // Valid JSON, valid template syntax — but a header block must be plain_text.
    std::fs::write(
        templates.join("reply.json.j2"),
        "[{\"type\": \"header\", \"text\": {\"type\": \"mrkdwn\", \"text\": {{ text }}}}]\n",
    )
    .unwrap();
    let state = dir.path().join("s.db");
    let env = [
        ("SLACK_CHANNEL", "#ops"),
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
    ];
    let s = settings(
        &format!("templates_dir = {:?}\n", templates.to_str().unwrap()),
        &env,
    );
    let report = check::run(&s, &Options::default()).await;
    let shown = report.to_string();
    let template_problems: Vec<_> = report
        .problems()
        .filter(|p| p.what.contains("templates in"))
        .collect();
    assert!(!template_problems.is_empty(), "{shown}");
    assert!(
        template_problems.iter().any(|p| p.what.contains("reply")),
        "{shown}"
    );
    assert!(shown.contains("remove templates_dir"), "{shown}");
}

#[tokio::test]
async fn check_says_where_the_board_goes_and_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let env = [
        ("SLACK_TOKEN", "xoxb-test"),
        ("SLACK_API_URL", "http://127.0.0.1:9/api"),
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
    ];
    let routes_only = "board = true\ncall_timeout = \"1s\"\n[[route]]\ngroup = \"*\"\nchannel = \"#web\"\n";
    let report = check::run(&settings(routes_only, &env), &Options::default()).await;
    assert!(
        report.problems().any(|p| p.what.contains("board = true but there is no default channel")),
        "{report}"
    );
    let pinned = "board = true\nboard_pin = true\nchannel = \"#ops\"\nhost = \"web-1\"\ncall_timeout = \"1s\"\n";
    let shown = check::run(&settings(pinned, &env), &Options::default()).await.to_string();
    assert!(shown.contains("board: one message for web-1 in #ops, pinned (the app needs the pins:write scope)"), "{shown}");
}

/// `check` with an app-level token: it opens one Socket Mode connection and reads
/// the hello; a revoked, mistyped or bot token is a problem with the fix, and the
/// token itself is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_opens_socket_mode_once_and_reports_a_bad_app_token_with_the_fix() {
    let good = "xapp-1-A0TEST-1-goodgoodgoodgood";
    let slack = StandIn::start(StandInOptions {
        app_token: Some(good.into()),
        ..StandInOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let api = slack.api_url();
    let run = |app: &str| {
        let env = [
            ("SLACK_TOKEN", "xoxb-test-token"),
            ("SLACK_CHANNEL", "#ops"),
            ("SLACK_API_URL", api.as_str()),
            ("SLACK_APP_TOKEN", app),
            ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
        ];
        let s = settings("[actions]\nallow_users = [\"U0ADMIN\"]\n", &env);
        async move { check::run(&s, &Options::default()).await }
    };
    let ok = run(good).await;
    let shown = ok.to_string();
    assert!(shown.contains("Socket Mode: connected and greeted by Slack"), "{shown}");
    assert!(shown.contains("actions from Slack: restart, start, stop, stderr, mute for 1 user(s)"), "{shown}");
    assert!(slack.sockets_opened() >= 1, "a real connection was opened");
    let socket_findings = |r: &Report| r.problems().filter(|p| p.what.contains("Socket Mode")).count();
    assert_eq!(socket_findings(&ok), 0, "{shown}");

    let bad = "xapp-1-A0TEST-1-revokedrevokedrevoked";
    let report = run(bad).await;
    let shown = report.to_string();
    assert_eq!(report.exit_code(), 1, "{shown}");
    let p = report.problems().find(|p| p.what.contains("apps.connections.open")).expect("a Socket Mode problem");
    assert!(p.what.contains("invalid_auth"), "{shown}");
    assert!(p.fix.as_deref().unwrap().contains("App-Level Tokens"), "{shown}");
    assert!(!shown.contains(bad) && !shown.contains("revokedrevoked"), "the token is not printed: {shown}");

    slack.revoke_app_token();
    let shown = run(good).await.to_string();
    assert!(shown.contains("token_revoked") && shown.contains("was revoked"), "{shown}");
}

#[tokio::test]
async fn actions_without_an_app_token_or_without_anyone_allowed_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let env = [("SUPERVISOR_SLACK_STATE", state.to_str().unwrap())];
    let s = settings("[actions]\nallow_users = [\"U0ADMIN\"]\n", &env);
    let r = check::run(&s, &Options::default()).await;
    assert!(
        r.findings.iter().any(|f| f.level == Level::Warning && f.what.contains("no app-level token")),
        "{r}"
    );
    let env = [
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
        ("SLACK_APP_TOKEN", "xapp-1-A-1-x"),
    ];
    let s = settings("", &env);
    let r = check::run(&s, &Options::default()).await;
    assert!(
        r.findings.iter().any(|f| f.level == Level::Warning && f.what.contains("allows nobody")),
        "{r}"
    );
}

#[tokio::test]
async fn check_says_whether_a_slash_command_has_reached_the_listener() {
    use supervisor_slack::store::{Budget, SharedState, SqliteShared};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let env = [
        ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
        ("SLACK_APP_TOKEN", "xapp-1-A-1-x"),
    ];
    let s = settings("channel = \"#ops\"\n[actions]\nallow_users = [\"U0ADMIN\"]\n", &env);
    let r = check::run(&s, &Options::default()).await;
    let shown = r.to_string();
    assert!(shown.contains("/supervisor: status for anyone in #ops; tail, why for 1 user(s)"), "{shown}");
    let none = r.findings.iter().find(|f| f.what.contains("no /supervisor command has reached")).expect(&shown);
    assert_eq!(none.level, Level::Warning);
    assert!(none.fix.as_deref().unwrap_or("").contains("scope commands"), "{shown}");
    let budget = Budget { post_burst: 2, post_interval: Duration::from_secs(1), updates_per_minute: 50 };
    SqliteShared::open(&state, budget).unwrap().command_seen("U0ALICE").await.unwrap();
    let shown = check::run(&s, &Options::default()).await.to_string();
    assert!(shown.contains("Socket Mode delivers /supervisor") && shown.contains("U0ALICE"), "{shown}");
    // Switched off: said, and nothing asked of the state.
    let s = settings("channel = \"#ops\"\n[actions]\nallowed = [\"restart\"]\n", &env);
    let shown = check::run(&s, &Options::default()).await.to_string();
    assert!(shown.contains("/supervisor: off ([actions] allowed lists none"), "{shown}");
}
