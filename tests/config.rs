//! Settings: the file, the environment on top, and errors that name the key and line.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use supervisor_slack::config::{self, parse_str, resolve, ConfigError, Env, Loaded, SettingsFile};

const NO_ENV: [(&str, &str); 0] = [];

fn load(text: &str, env: &dyn Env) -> Result<Loaded, ConfigError> {
    let file = parse_str(text, Some(Path::new("/etc/supervisor-slack.toml")))?;
    resolve(&file, env)
}

/// The error for `text`, with its key and line.
fn error(text: &str) -> (String, usize, String) {
    let e = load(text, &NO_ENV).expect_err("these settings must be refused");
    let shown = e.to_string();
    (
        e.key().expect("the error names a key").to_string(),
        e.line().expect("the error names a line"),
        shown,
    )
}

fn assert_error(text: &str, key: &str, line: usize) -> String {
    let (k, l, shown) = error(text);
    assert_eq!((k.as_str(), l), (key, line), "error was: {shown}");
    // The text a user sees names both too.
    assert!(shown.contains(key), "{shown}");
    assert!(shown.contains(&format!("line {line}")), "{shown}");
    shown
}

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let shown = assert_error("channel = \"#ops\"\n\nchanel = \"#ops\"\n", "chanel", 3);
    assert!(shown.contains("/etc/supervisor-slack.toml"), "{shown}");
}

#[test]
fn unknown_key_in_a_route_names_the_route() {
    assert_error(
        "channel = \"#ops\"\n[[route]]\ngroup = \"a\"\n[[route]]\nproces = \"web\"\n",
        "route[2].proces",
        5,
    );
}

#[test]
fn wrong_type_names_the_key_and_line() {
    assert_error(
        "channel = \"#ops\"\npost_burst = \"two\"\n",
        "post_burst",
        2,
    );
}

#[test]
fn wrong_type_in_a_route() {
    assert_error(
        "[[route]]\ngroup = \"a\"\nmentions = \"<!here>\"\n",
        "route[1].mentions",
        3,
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    let e = load("channel = \"#ops\"\nhost = \n", &NO_ENV).unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn bad_duration_names_the_key_and_line() {
    let shown = assert_error(
        "channel = \"#ops\"\n\nthread_ttl = \"a day\"\n",
        "thread_ttl",
        3,
    );
    assert!(
        shown.contains("\"24h\""),
        "the fix is in the message: {shown}"
    );
}

#[test]
fn zero_where_at_least_one_is_needed() {
    assert_error("updates_per_minute = 0\n", "updates_per_minute", 1);
}

#[test]
fn bad_glob_names_the_route_key_and_line() {
    assert_error(
        "channel = \"#ops\"\n[[route]]\ngroup = \"web\"\n\n[[route]]\nprocess = \"web-[\"\nchannel = \"#web\"\n",
        "route[2].process",
        6,
    );
}

#[test]
fn bad_mention_names_the_route_key_and_line() {
    let shown = assert_error(
        "channel = \"#ops\"\n[[route]]\ngroup = \"db\"\nmentions = [\n  \"<!here>\",\n  \"@oncall\",\n]\n",
        "route[1].mentions",
        6,
    );
    assert!(
        shown.contains("<!subteam^"),
        "the fix is in the message: {shown}"
    );
}

#[test]
fn bad_state_in_skip() {
    assert_error(
        "channel = \"#ops\"\nskip = [\"STARTING\", \"BOOTING\"]\n",
        "skip",
        2,
    );
}

#[test]
fn bad_running_choice() {
    assert_error(
        "[[route]]\nrunning = \"sometimes\"\n",
        "route[1].running",
        2,
    );
}

#[test]
fn drop_and_a_channel_contradict() {
    assert_error(
        "[[route]]\nchannel = \"#x\"\ndrop = true\n",
        "route[1].drop",
        3,
    );
}

#[test]
fn bad_channel_in_file() {
    assert_error("\nchannel = \"ops room\"\n", "channel", 2);
}

#[test]
fn bad_supervisor_url() {
    assert_error(
        "supervisor_server_url = \"/run/supervisor.sock\"\n",
        "supervisor_server_url",
        1,
    );
}

#[test]
fn unreadable_token_file_names_the_key_and_line() {
    let shown = assert_error(
        "channel = \"#ops\"\ntoken_file = \"/nonexistent/token\"\n",
        "token_file",
        2,
    );
    assert!(shown.contains("/nonexistent/token"), "{shown}");
}

#[test]
fn unreadable_token_file_from_the_environment_names_the_variable() {
    let e = load("", &[("SLACK_TOKEN_FILE", "/nonexistent/token")]).unwrap_err();
    assert_eq!(e.key(), Some("SLACK_TOKEN_FILE"));
    assert_eq!(e.line(), None);
}

#[test]
fn bad_duration_from_the_environment_names_the_variable() {
    let e = load("", &[("SUPERVISOR_SLACK_SETUP_RETRY", "soon")]).unwrap_err();
    assert_eq!(e.key(), Some("SUPERVISOR_SLACK_SETUP_RETRY"), "{e}");
}

#[test]
fn password_without_username_is_refused() {
    assert_error(
        "channel = \"#ops\"\nsupervisor_password = \"pw\"\n",
        "supervisor_username",
        2,
    );
}

#[test]
fn a_missing_settings_file_is_an_error_not_a_silent_default() {
    let e = config::load_checked(Some(Path::new("/nonexistent/s.toml")), &NO_ENV).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let text = "channel = \"#file\"\nhost = \"file-host\"\nenvironment = \"staging\"\nsetup_retry = \"5m\"\n";
    let s = load(text, &NO_ENV).unwrap().settings;
    assert_eq!(s.channel.as_deref(), Some("#file"));
    assert_eq!(s.host, "file-host");
    assert_eq!(s.environment.as_deref(), Some("staging"));
    assert_eq!(s.setup_retry, Duration::from_secs(300));

    let env = [
        ("SLACK_CHANNEL", "#env"),
        ("SUPERVISOR_SLACK_HOST", "env-host"),
        ("SUPERVISOR_SLACK_ENVIRONMENT", "production"),
        ("SUPERVISOR_SLACK_SETUP_RETRY", "30s"),
        ("SLACK_API_URL", "http://127.0.0.1:9/api/"),
        ("SLACK_TOKEN", " xoxb-from-env \n"),
    ];
    let s = load(text, &env).unwrap().settings;
    assert_eq!(s.channel.as_deref(), Some("#env"));
    assert_eq!(s.host, "env-host");
    assert_eq!(s.environment.as_deref(), Some("production"));
    assert_eq!(s.setup_retry, Duration::from_secs(30));
    assert_eq!(
        s.api_url, "http://127.0.0.1:9/api",
        "trailing slash removed"
    );
    assert_eq!(s.token.unwrap().expose(), "xoxb-from-env");
}

#[test]
fn the_original_tools_misspelt_channel_variable_works_with_a_warning() {
    let loaded = load("", &[("SLACK_CHANNNEL", "#legacy")]).unwrap();
    assert_eq!(loaded.settings.channel.as_deref(), Some("#legacy"));
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].fix, "rename it to SLACK_CHANNEL");
}

#[test]
fn the_correct_spelling_wins_over_the_misspelt_one_without_a_warning() {
    let loaded = load(
        "",
        &[("SLACK_CHANNEL", "#new"), ("SLACK_CHANNNEL", "#legacy")],
    )
    .unwrap();
    assert_eq!(loaded.settings.channel.as_deref(), Some("#new"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn host_defaults_to_the_hostname() {
    let s = load("", &NO_ENV).unwrap().settings;
    let expected = hostname::get().unwrap().to_string_lossy().into_owned();
    assert_eq!(s.host, expected);
    assert_eq!(s.environment, None);
}

fn token_file(mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "xoxb-from-file").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    f
}

#[cfg(unix)]
#[test]
fn a_token_file_others_can_read_gives_a_warning() {
    let f = token_file(0o644);
    let text = format!("token_file = {:?}\n", f.path().display().to_string());
    let loaded = load(&text, &NO_ENV).unwrap();
    assert_eq!(loaded.settings.token.unwrap().expose(), "xoxb-from-file");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert_eq!(
        w.what,
        format!("{} is readable by other users", f.path().display())
    );
    assert_eq!(w.fix, format!("run: chmod 600 {}", f.path().display()));
}

#[cfg(unix)]
#[test]
fn a_private_token_file_gives_no_warning() {
    let f = token_file(0o600);
    let env = [("SLACK_TOKEN_FILE", f.path().to_str().unwrap())];
    let loaded = load("", &env).unwrap();
    assert_eq!(loaded.settings.token.unwrap().expose(), "xoxb-from-file");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn slack_token_wins_over_token_files() {
    let env = [
        ("SLACK_TOKEN", "xoxb-env"),
        ("SLACK_TOKEN_FILE", "/nonexistent"),
    ];
    let s = load("token_file = \"/nonexistent\"\n", &env)
        .unwrap()
        .settings;
    assert_eq!(s.token.unwrap().expose(), "xoxb-env");
}

#[test]
fn an_empty_token_file_is_refused() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let text = format!("\ntoken_file = {:?}\n", f.path().display().to_string());
    let e = load(&text, &NO_ENV).unwrap_err();
    assert_eq!((e.key(), e.line()), (Some("token_file"), Some(2)), "{e}");
}

#[test]
fn supervisord_url_setting_wins_over_the_variable_supervisord_sets() {
    let env = [("SUPERVISOR_SERVER_URL", "unix:///run/from-env.sock")];
    let s = load("", &env).unwrap().settings;
    assert_eq!(
        s.supervisor_server_url.as_deref(),
        Some("unix:///run/from-env.sock")
    );
    let s = load("supervisor_server_url = \"http://127.0.0.1:9001\"\n", &env)
        .unwrap()
        .settings;
    assert_eq!(
        s.supervisor_server_url.as_deref(),
        Some("http://127.0.0.1:9001")
    );
}

#[cfg(unix)]
#[test]
fn supervisord_credentials_from_a_password_file() {
    let f = token_file(0o600);
    let text = format!(
        "supervisor_username = \"slack\"\nsupervisor_password_file = {:?}\n",
        f.path().display().to_string()
    );
    let s = load(&text, &NO_ENV).unwrap().settings;
    assert_eq!(s.supervisor_username.as_deref(), Some("slack"));
    assert_eq!(s.supervisor_password.unwrap().expose(), "xoxb-from-file");
}

#[test]
fn the_password_is_never_shown() {
    let s = load(
        "supervisor_username = \"u\"\nsupervisor_password = \"hunter2\"\n",
        &NO_ENV,
    )
    .unwrap()
    .settings;
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn no_file_means_defaults() {
    let loaded = resolve(&SettingsFile::none(), &NO_ENV).unwrap();
    let s = loaded.settings;
    assert_eq!(s.api_url, config::DEFAULT_API_URL);
    assert_eq!(s.thread_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(s.channel, None);
    assert!(s.broadcast_failures);
}

#[test]
fn config_path_prefers_the_flag_then_the_variable() {
    let env = [("SUPERVISOR_SLACK_CONFIG", "/from/env.toml")];
    assert_eq!(
        config::config_path(Some(Path::new("/flag.toml")), &env).unwrap(),
        Path::new("/flag.toml")
    );
    assert_eq!(
        config::config_path(None, &env).unwrap(),
        Path::new("/from/env.toml")
    );
}

/// The listener refuses to start on bad settings: non-zero exit, the key and line on
/// stderr, and not one byte on stdout (supervisord's protocol channel).
#[test]
fn listen_refuses_to_start_on_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "channel = \"#ops\"\n[[route]]\ngroup = \"web-{\"\n").unwrap();
    let out = std::process::Command::new(common::SLACK_BIN)
        .arg("--config")
        .arg(&path)
        .arg("listen")
        .env("SLACK_TOKEN", "xoxb-test")
        .env("SUPERVISOR_SLACK_STATE", dir.path().join("s.db"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3: route[1].group"), "{stderr}");
    assert!(!dir.path().join("s.db").exists(), "nothing was started");
}

/// With `[[route]]` channels but no default channel, `listen` starts (events that
/// match no route are not reported) and `check` agrees: a warning, not a problem.
/// Both ask `Settings::ready_to_listen`.
#[tokio::test]
async fn routes_without_a_default_channel_listen_and_check_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    let text = "[[route]]\ngroup = \"web\"\nchannel = \"#web\"\n";
    std::fs::write(&path, text).unwrap();
    let state = dir.path().join("s.db");

    let settings = config::resolve(
        &config::parse_str(text, Some(&path)).unwrap(),
        &[
            ("SLACK_TOKEN", "xoxb-test"),
            ("SLACK_API_URL", common::pipe::NO_SLACK),
            ("SUPERVISOR_SLACK_STATE", state.to_str().unwrap()),
        ],
    )
    .unwrap()
    .settings;
    assert_eq!(settings.ready_to_listen(), Ok(()));
    let report = supervisor_slack::check::run(
        &settings,
        &supervisor_slack::check::Options::default(),
    )
    .await;
    let problems: Vec<String> = report.problems().map(|p| p.what.clone()).collect();
    assert!(
        !problems.iter().any(|p| p.contains("channel") || p.contains("refuses")),
        "{report}"
    );
    let shown = report.to_string();
    assert!(
        shown.contains("no default channel: events that match no [[route]] are not reported"),
        "{shown}"
    );

    // listen starts: READY on stdout, exit 0 when stdin closes.
    let out = std::process::Command::new(common::SLACK_BIN)
        .arg("--config")
        .arg(&path)
        .arg("listen")
        .env("SLACK_TOKEN", "xoxb-test")
        .env_remove("SLACK_CHANNEL")
        .env("SLACK_API_URL", common::pipe::NO_SLACK)
        .env("SUPERVISOR_SLACK_STATE", &state)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"READY\n");

    // Without any channel both refuse, with the same words.
    let none = config::resolve(&config::parse_str("", None).unwrap(), &[("SLACK_TOKEN", "x")])
        .unwrap()
        .settings;
    let missing = none.ready_to_listen().unwrap_err();
    assert_eq!(missing.len(), 1);
    assert!(missing[0].what.contains("no default channel and no [[route]] channel"));
}

/// The token travels in every request: plain http only to this machine.
#[test]
fn api_url_over_plain_http_only_to_a_loopback_address() {
    let env_with = |url: &str| {
        resolve(
            &parse_str(&format!("api_url = {url:?}\n"), Some(Path::new("s.toml"))).unwrap(),
            &[("SLACK_TOKEN", "xoxb-test")],
        )
    };
    for ok in [
        "http://127.0.0.1:8089/api",
        "http://localhost:9/api",
        "http://127.3.4.5/api",
        "http://[::1]:8089/api",
        "https://slack.example.com/api",
    ] {
        assert_eq!(env_with(ok).unwrap().settings.api_url, ok, "{ok}");
    }
    for bad in [
        "http://slack.com/api",
        "http://10.0.0.5:8089/api",
        "http://127.0.0.1@evil.example/api",
        "http://127.0.0.1.evil.example/api",
        "http://[::2]/api",
    ] {
        let e = env_with(bad).unwrap_err();
        assert_eq!(e.key(), Some("api_url"), "{bad}");
        assert_eq!(e.line(), Some(1), "{bad}");
        let m = e.to_string();
        assert!(m.contains("clear text") && m.contains("use https://"), "{m}");
    }
    // The variable too, named in the error.
    let e = resolve(
        &parse_str("", None).unwrap(),
        &[("SLACK_TOKEN", "xoxb-test"), ("SLACK_API_URL", "http://203.0.113.7/api")],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("SLACK_API_URL"));
}

#[test]
fn actions_settings_are_checked_with_the_key_and_line() {
    let s = assert_error("channel = \"#ops\"\n[actions]\nallow_users = [\"@alice\"]\n", "actions.allow_users", 3);
    assert!(s.contains("member id") || s.contains("Copy member ID"), "{s}");
    assert_error("[actions]\nallow_users = [\"U1AAA\"]\nallow_groups = [\"U123\"]\n", "actions.allow_groups", 3);
    let s = assert_error("[actions]\nallowed = [\"restart\", \"reboot\"]\n", "actions.allowed", 2);
    assert!(s.contains("restart, start, stop, stderr and mute"), "{s}");
    assert_error("[actions]\nallowed = [\"unmute\"]\n", "actions.allowed", 2);
    assert_error("[actions]\nconnections = 11\n", "actions.connections", 2);
    assert_error("[actions]\nmute_for = \"forever\"\n", "actions.mute_for", 2);
    assert_error("[actions]\nallow_user = [\"U1AAA\"]\n", "actions.allow_user", 2);
}

#[test]
fn actions_default_to_every_action_and_nobody_allowed() {
    let l = load("[actions]\nallow_users = [\"U0ADMIN\"]\nallowed = [\"stderr\", \"mute\"]\n", &NO_ENV).unwrap();
    let a = &l.settings.actions;
    assert_eq!(a.allow_users, ["U0ADMIN"]);
    assert_eq!(a.allowed.iter().map(|x| x.name()).collect::<Vec<_>>(), ["stderr", "mute"]);
    assert_eq!((a.connections, a.mute_for, a.stderr_lines), (1, Duration::from_secs(3600), 20));
    assert!(a.anyone_allowed());
    let none = load("", &NO_ENV).unwrap();
    assert!(!none.settings.actions.anyone_allowed());
    assert_eq!(none.settings.actions.allowed.len(), 5);
}

#[test]
fn a_bot_token_as_the_app_token_is_refused_and_never_shown() {
    let e = load("", &[("SLACK_APP_TOKEN", "xoxb-1-2-botsecretbotsecret")]).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("SLACK_APP_TOKEN") && shown.contains("xapp-"), "{shown}");
    assert!(!shown.contains("botsecret"), "{shown}");
    let ok = load("", &[("SLACK_APP_TOKEN", " xapp-1-A-2-appsecret \n")]).unwrap();
    assert_eq!(ok.settings.app_token.unwrap().expose(), "xapp-1-A-2-appsecret");
}

#[test]
fn fleet_settings_are_checked_and_the_url_never_quoted() {
    let msg = assert_error("fleet_url = \"mysql://root:hunter2@db/x\"\n", "fleet_url", 1);
    assert!(msg.contains("not a PostgreSQL connection string"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = assert_error(
        "fleet_url = \"postgresql://u:p@db/x\"\nfleet_name = \"prod fleet\"\n",
        "fleet_name",
        2,
    );
    assert!(msg.contains("1 to 64 letters"), "{msg}");
    let msg = assert_error(
        "fleet_url = \"postgresql://u:p@db/x\"\nheartbeat = \"30s\"\nsilent_after = \"20s\"\n",
        "silent_after",
        3,
    );
    assert!(msg.contains("longer than heartbeat"), "{msg}");
    let msg = assert_error("heartbeat = \"10s\"\n", "heartbeat", 1);
    assert!(msg.contains("set fleet_url"), "{msg}");
    let loaded = load(
        "fleet_url = \"postgresql://u:p@db/x\"\n",
        &[("SLACK_TOKEN", "xoxb-t")],
    )
    .unwrap();
    let fleet = loaded.settings.fleet.expect("a fleet");
    assert_eq!(fleet.name, "default");
    assert_eq!(fleet.heartbeat, std::time::Duration::from_secs(30));
    assert_eq!(fleet.silent_after, std::time::Duration::from_secs(90));
    assert!(!format!("{fleet:?}").contains("u:p"), "never shown: {fleet:?}");
    // The environment wins, and no fleet setting means no fleet.
    let env = [("SUPERVISOR_SLACK_FLEET_URL", "host=db user=u dbname=x")];
    let loaded = load("", &env).unwrap();
    assert_eq!(loaded.settings.fleet.unwrap().url.expose(), "host=db user=u dbname=x");
    assert!(load("", &[("SLACK_TOKEN", "x")]).unwrap().settings.fleet.is_none());
    // How many hosts hold the app's connections: 1 to 10, default 2, a fleet setting.
    let msg = assert_error("fleet_url = \"postgresql://u:p@db/x\"\nsocket_connections = 11\n", "socket_connections", 2);
    assert!(msg.contains("1 to 10") && msg.contains("10 Socket Mode connections per app"), "{msg}");
    assert_error("fleet_url = \"postgresql://u:p@db/x\"\nsocket_connections = 0\n", "socket_connections", 2);
    let msg = assert_error("socket_connections = 3\n", "socket_connections", 1);
    assert!(msg.contains("set fleet_url"), "{msg}");
    let loaded = load("fleet_url = \"postgresql://u:p@db/x\"\nsocket_connections = 3\n", &[("SLACK_TOKEN", "x")]).unwrap();
    assert_eq!(loaded.settings.fleet.unwrap().socket_connections, 3);
    let loaded = load("fleet_url = \"postgresql://u:p@db/x\"\n", &[("SLACK_TOKEN", "x")]).unwrap();
    assert_eq!(loaded.settings.fleet.unwrap().socket_connections, 2);
}

#[test]
fn the_slash_commands_are_switched_on_by_allowed_and_status_is_open_to_the_channel() {
    use supervisor_slack::actions::Ask;
    let all = load("[actions]\nallow_users = [\"U0ADMIN\"]\n", &NO_ENV).unwrap().settings.actions;
    assert_eq!(all.asks, [Ask::Status, Ask::Tail, Ask::Why]);
    assert_eq!(all.open_to_channel, [Ask::Status]);
    assert!(all.anyone_may_ask());
    // Without an allow list status is still open; an allowed list without them
    // switches them off.
    assert!(load("", &NO_ENV).unwrap().settings.actions.anyone_may_ask());
    let some = load("[actions]\nallowed = [\"restart\", \"tail\"]\nopen_to_channel = []\n", &NO_ENV)
        .unwrap()
        .settings
        .actions;
    assert_eq!(some.asks, [Ask::Tail]);
    assert_eq!(some.allowed.len(), 1);
    assert!(!some.anyone_may_ask(), "tail for nobody: no allow list and nothing open");
    let s = assert_error("[actions]\nallowed = [\"statuz\"]\n", "actions.allowed", 2);
    assert!(s.contains("status, tail and why"), "{s}");
    let s = assert_error("[actions]\nopen_to_channel = [\"restart\"]\n", "actions.open_to_channel", 2);
    assert!(s.contains("not a /supervisor command"), "{s}");
}
