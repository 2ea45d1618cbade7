//! `supervisor-slack check`: is everything set up? Checks the settings, the
//! templates, the token (`auth.test`), optionally a test post, actions from Slack,
//! the fleet database, the state directory and whether supervisord answers XML-RPC,
//! and reports each finding with the fix. The
//! CLI prints the [`Report`] and exits non-zero when it holds a problem.

mod actions;
mod fleet;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::card::{escape_mrkdwn, Card};
use crate::config::{self, ConfigError, Secret, Settings};
use crate::slack::{Failure, Outgoing, SlackApi};
use crate::supervisord::xmlrpc::{self, Client};

pub use actions::app_token_fix;

/// What `check` should do beyond looking.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Post one test card to every channel the routes can send to.
    pub post_test: bool,
    /// The state database path from the command line (`--state`), if given.
    pub state: Option<PathBuf>,
    /// The settings file that was read, to name it in the report.
    pub settings_file: Option<PathBuf>,
    /// Warnings from loading the settings ([`config::Loaded::warnings`]).
    pub warnings: Vec<config::Warning>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Worth knowing; the listener works.
    Note,
    /// Works, but should be fixed (e.g. a token file others can read).
    Warning,
    /// The listener will not work (or not fully) until this is fixed.
    Problem,
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What was checked and what was found.
    pub what: String,
    /// What to do about it (always set for warnings and problems).
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Self {
        Finding {
            level: Level::Ok,
            what: what.into(),
            fix: None,
        }
    }
    pub fn note(what: impl Into<String>) -> Self {
        Finding {
            level: Level::Note,
            what: what.into(),
            fix: None,
        }
    }
    pub fn warning(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            level: Level::Warning,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    pub fn problem(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            level: Level::Problem,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Everything `check` found, in the order checked. `Display` is the text the CLI
/// prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// `true` when no finding is a problem.
    pub fn is_ok(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Problem)
    }

    /// The exit status for the CLI: 0 when fine, 1 when any problem.
    pub fn exit_code(&self) -> i32 {
        if self.is_ok() {
            0
        } else {
            1
        }
    }

    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Problem)
    }

    /// The report for settings that did not load: the error names the key and line.
    pub fn from_config_error(e: &ConfigError) -> Report {
        Report {
            findings: vec![Finding::problem(
                format!("settings: {e}"),
                "correct that key (see `supervisor-slack init` for every key, documented); the listener refuses to start until then",
            )],
        }
    }

    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let tag = match finding.level {
                Level::Ok => "ok     ",
                Level::Note => "note   ",
                Level::Warning => "WARNING",
                Level::Problem => "PROBLEM",
            };
            writeln!(f, "{tag}  {}", finding.what)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "         fix: {fix}")?;
            }
        }
        let problems = self.problems().count();
        if problems == 0 {
            writeln!(f, "\nall checks passed")
        } else {
            writeln!(f, "\n{problems} problem(s) found")
        }
    }
}

/// Runs every check. Never fails: whatever goes wrong is a finding.
pub async fn run(settings: &Settings, opts: &Options) -> Report {
    let mut r = Report::default();
    check_settings(settings, opts, &mut r);
    check_templates(settings, &mut r);
    let slack_ok = check_slack(settings, opts, &mut r).await;
    let api = settings
        .token
        .clone()
        .filter(|_| slack_ok)
        .map(|t| SlackApi::new(&settings.api_url, t, settings.call_timeout));
    for f in actions::check(settings, api.as_ref()).await {
        r.push(f);
    }
    for f in fleet::check(settings).await {
        r.push(f);
    }
    let state = opts
        .state
        .clone()
        .or_else(|| settings.state.clone())
        .unwrap_or_else(|| config::default_state_path(&config::ProcessEnv));
    for f in actions::commands(settings, &state).await {
        r.push(f);
    }
    r.push(check_state_path(&state));
    if let Some(f) = check_set_aside(&state) {
        r.push(f);
    }
    r.push(
        check_supervisor(
            settings.supervisor_server_url.as_deref(),
            settings.supervisor_username.clone(),
            settings.supervisor_password.clone(),
            settings.call_timeout,
        )
        .await,
    );
    r
}

/// Settings were validated when loaded; this reports what they amount to and what
/// is missing for `listen` to start.
fn check_settings(settings: &Settings, opts: &Options, r: &mut Report) {
    match &opts.settings_file {
        Some(p) => r.push(Finding::ok(format!(
            "settings file {} is valid",
            p.display()
        ))),
        None => r.push(Finding::note(format!(
            "no settings file (none given, and {} does not exist): environment and defaults only",
            config::DEFAULT_CONFIG_PATH
        ))),
    }
    for w in &opts.warnings {
        r.push(Finding::warning(w.what.clone(), w.fix.clone()));
    }
    if let Err(missing) = settings.ready_to_listen() {
        for m in missing {
            r.push(Finding::problem(
                format!("{} (`listen` refuses to start)", m.what),
                m.fix,
            ));
        }
    }
    let channels = settings.routes.channels();
    if !channels.is_empty() {
        r.push(Finding::ok(format!(
            "host label {:?}{}; channels: {}",
            settings.host,
            settings
                .environment
                .as_deref()
                .map(|e| format!(", environment {e:?}"))
                .unwrap_or_default(),
            channels.join(", ")
        )));
    }
    if !channels.is_empty() && !settings.routes.has_default_channel() {
        r.push(Finding::warning(
            "no default channel: events that match no [[route]] are not reported",
            "set SLACK_CHANNEL (e.g. #ops or C0123456789) or channel in the settings file, or add a catch-all [[route]]",
        ));
    }
    r.push(board_finding(settings));
}

/// What `board` amounts to: where the host's board goes, and what it needs.
fn board_finding(settings: &Settings) -> Finding {
    if !settings.board {
        return Finding::note(
            "board is off: set board = true for one message per host listing every process, failing ones first",
        );
    }
    match &settings.channel {
        None => Finding::problem(
            "board = true but there is no default channel: no board is posted",
            "set channel (or SLACK_CHANNEL): the board goes there",
        ),
        Some(c) => {
            let whose = match &settings.fleet {
                Some(f) => format!("the fleet {} (drawn by one host at a time)", f.name),
                None => settings.host.clone(),
            };
            let pinned = if settings.board_pin { ", pinned (the app needs the pins:write scope)" } else { "" };
            Finding::ok(format!("board: one message for {whose} in {c}{pinned}"))
        }
    }
}

fn check_templates(settings: &Settings, r: &mut Report) {
    let Some(dir) = &settings.templates_dir else {
        r.push(Finding::ok("templates: built-in"));
        return;
    };
    // Renders sample events — hostile names, every state, crash context — through
    // the user's templates: syntax errors, runtime errors and invalid Block Kit all
    // come back with the template's name and line.
    match crate::card::check_templates(dir) {
        Ok(()) => r.push(Finding::ok(format!(
            "templates in {} render valid cards",
            dir.display()
        ))),
        Err(problems) => {
            for p in problems {
                r.push(Finding::problem(
                    format!("templates in {}: {p}", dir.display()),
                    "correct the template as named above, or remove templates_dir to use the built-in cards (at run time a failing template falls back to them for that event)",
                ));
            }
        }
    }
}

/// Returns whether the bot token works.
async fn check_slack(settings: &Settings, opts: &Options, r: &mut Report) -> bool {
    let Some(token) = settings.token.clone() else {
        return false;
    };
    let api = SlackApi::new(&settings.api_url, token, settings.call_timeout);
    match api.auth_test().await {
        Ok(who) => r.push(Finding::ok(format!(
            "token works: workspace {:?} ({}), bot user {} ({})",
            who.team,
            who.url,
            who.user.as_deref().unwrap_or("?"),
            who.bot_id
                .as_deref()
                .unwrap_or("no bot id: is this a bot token?")
        ))),
        Err(f) => {
            r.push(slack_problem("auth.test", &f, &settings.api_url));
            return false;
        }
    }
    if !opts.post_test {
        r.push(Finding::note(
            "no test message posted (add --post-test to post one to each channel)",
        ));
        return true;
    }
    for channel in settings.routes.channels() {
        let out = Outgoing {
            channel: channel.clone(),
            card: test_card(&settings.host),
            thread_ts: None,
            broadcast: false,
            identity: None,
        };
        match api.post(&out).await {
            Ok(p) => r.push(Finding::ok(format!(
                "posted a test message to {channel} (channel ID {}, ts {})",
                p.channel_id, p.ts
            ))),
            Err(f) => r.push(slack_problem(
                &format!("posting to {channel}"),
                &f,
                &settings.api_url,
            )),
        }
    }
    true
}

/// A Slack failure as a finding, with the fix from [`crate::slack::setup_hint`]
/// (carried in [`Failure::Setup`]).
fn slack_problem(what: &str, f: &Failure, api_url: &str) -> Finding {
    let fix = match f {
        Failure::Setup { hint, .. } => hint.clone(),
        Failure::Transient(_) => format!(
            "Slack could not be reached at {api_url}: check the network path (proxy, firewall, DNS) and api_url / SLACK_API_URL"
        ),
        Failure::RateLimited(_) => "Slack is rate-limiting this workspace: run check again in a minute".into(),
        Failure::BadPayload(_)
        | Failure::EditRefused(_)
        | Failure::ThreadGone(_)
        | Failure::Unknown(_) => {
            "unexpected answer from Slack: see https://api.slack.com/methods/chat.postMessage#errors, run with SUPERVISOR_SLACK_LOG=debug and report it".into()
        }
    };
    let found = match f {
        // The hint is the fix: do not say it twice.
        Failure::Setup { code, .. } => format!("{what}: Slack answered {code}"),
        other => format!("{what}: {other}"),
    };
    Finding::problem(found, fix)
}

/// The card `--post-test` sends: plain, independent of the templates.
pub fn test_card(host: &str) -> Card {
    // The top-level text is mrkdwn too: the host label is escaped everywhere.
    let text = format!(
        "supervisor-slack check: test message from {}",
        escape_mrkdwn(host)
    );
    Card {
        text: text.clone(),
        color: "#2EB67D".into(),
        fallback: text,
        blocks: serde_json::json!([{
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                "*supervisor-slack* can post here. Test message from `{}`; process-state cards will look like this one, with a colour per state.",
                escape_mrkdwn(host)
            )}
        }]),
    }
}

/// Can the state database be written? Creates nothing: an existing database must
/// open for writing; otherwise its directory (or the nearest existing parent, which
/// `listen` would create it in) must take a new file.
/// Entries Slack would not take, set aside in the state database: counted, with the
/// newest few named. `None` when there is no database or nothing set aside.
pub fn check_set_aside(path: &Path) -> Option<Finding> {
    if !path.is_file() {
        return None;
    }
    let store = crate::store::Outbox::open(path).ok()?;
    let (count, newest) = store.set_aside_entries(5).ok()?;
    if count == 0 {
        return None;
    }
    let listed: Vec<String> = newest
        .iter()
        .map(|e| format!("serial {} of {} ({})", e.serial, e.key, e.reason))
        .collect();
    Some(Finding::warning(
        format!(
            "{count} event(s) set aside in {}: Slack would not take them; newest: {}",
            path.display(),
            listed.join("; ")
        ),
        "they stay in the state database (outbox rows with set_aside); their threads went on without them, with a note. Fix what the reason says; nothing is retried by itself",
    ))
}

pub fn check_state_path(path: &Path) -> Finding {
    let fix_for = |dir: &Path| {
        format!(
            "make {} writable by the user the listener runs as (e.g. mkdir -p {0} && chown THAT-USER {0}), or set state / SUPERVISOR_SLACK_STATE to a writable path",
            dir.display()
        )
    };
    if path.exists() {
        return match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(_) => Finding::ok(format!("state database {} is writable", path.display())),
            Err(e) => Finding::problem(
                format!("state database {}: {e}", path.display()),
                fix_for(path.parent().unwrap_or(Path::new("."))),
            ),
        };
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Finding::problem(
            format!(
                "state database {}: {} is not a directory",
                path.display(),
                existing.display()
            ),
            fix_for(dir),
        );
    }
    if config::dir_writable(existing) {
        let how = if existing == dir {
            ""
        } else {
            " (its directory will be created)"
        };
        Finding::ok(format!(
            "state database {} can be created{how}",
            path.display()
        ))
    } else {
        Finding::problem(
            format!(
                "state database {}: cannot create files in {}",
                path.display(),
                existing.display()
            ),
            fix_for(dir),
        )
    }
}

/// Does supervisord answer XML-RPC at `url`? One `supervisor.getState` call with the
/// credentials the listener would use, bounded by `timeout`: a socket that accepts
/// connections but never answers, or answers 401, is a problem too.
pub async fn check_supervisor(
    url: Option<&str>,
    username: Option<String>,
    password: Option<Secret>,
    timeout: Duration,
) -> Finding {
    let Some(url) = url else {
        return Finding::note(
            "SUPERVISOR_SERVER_URL is not set (normal outside supervisord); crash context and reconcile (correcting cards after events supervisord dropped or sent while the listener was down) use supervisord's XML-RPC when the listener runs under it or supervisor_server_url is set",
        );
    };
    let answer = match Client::new(url, username, password) {
        Ok(client) => client.with_timeout(timeout).get_state().await,
        Err(e) => Err(e),
    };
    let e = match answer {
        Ok(state) if state.name == "RUNNING" => {
            return Finding::ok(format!(
                "supervisord answers XML-RPC at {url} (state RUNNING)"
            ))
        }
        Ok(state) => {
            return Finding::warning(
                format!("supervisord answers XML-RPC at {url} but is {}", state.name),
                "crash context and reconcile work once supervisord is RUNNING again",
            )
        }
        Err(e) => e,
    };
    let fix = match &e {
        xmlrpc::Error::PermissionDenied(_) => "the socket is mode 0700 by default: add chown=USER:GROUP (the listener's user) to [unix_http_server], or run the listener as that user".to_string(),
        xmlrpc::Error::SocketMissing(_) | xmlrpc::Error::Refused(_) => format!(
            "supervisord is not listening at {url}: is it running? Otherwise set supervisor_server_url to its [unix_http_server] file / [inet_http_server] port"
        ),
        xmlrpc::Error::NotASocket(_) => format!(
            "{url} is not supervisord's socket: set supervisor_server_url to the file= of [unix_http_server]"
        ),
        xmlrpc::Error::Auth { .. } => "set supervisor_username and supervisor_password (or supervisor_password_file) to the username/password of [unix_http_server] / [inet_http_server]".to_string(),
        xmlrpc::Error::Timeout(_) => format!(
            "something accepts connections at {url} but does not answer: check that it is supervisord and that supervisord is not stuck"
        ),
        xmlrpc::Error::Fault {
            fault: xmlrpc::Fault::UnknownMethod,
            ..
        } => "add [rpcinterface:supervisor] (supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface) to supervisord's configuration".to_string(),
        xmlrpc::Error::BadUrl(_) => "use unix:///path/supervisor.sock or http://host:port".to_string(),
        _ => format!(
            "check that supervisor_server_url / SUPERVISOR_SERVER_URL ({url}) is supervisord's [unix_http_server] / [inet_http_server]"
        ),
    };
    Finding::problem(
        format!("supervisord's XML-RPC at {url}: {e}; until it answers, crash context is off and reconcile cannot correct cards after events supervisord dropped or sent while the listener was down"),
        fix,
    )
}
