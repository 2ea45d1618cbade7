//! Settings: an optional TOML file, overridden by the environment. This room owns the
//! schema and its checking ([`file`]: the file and its errors; [`routes`]: the
//! `[[route]]` tables, checked into [`crate::routing`]'s rules; [`paths`]: secrets
//! from files, the default state path); everything else receives a [`Settings`].
//!
//! Secrets (the bot token, supervisord's password) come from the environment or from
//! files — never from a command-line argument, which any user of the machine can read
//! in `ps`.
//!
//! A bad setting stops the program before it does anything: every error names the key
//! and, for the settings file, the line (a listener that runs half-configured loses
//! events quietly, which is worse than not starting).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::routing::Routes;
pub use crate::secret::Secret;

pub mod actions;
pub mod file;
pub mod fleet;
pub mod paths;
pub mod routes;
pub mod schema;

pub use file::{
    invalid, line_of, parse_duration, parse_str, read_file, ConfigError, Env, FileSettings,
    Location, ProcessEnv, SettingsFile,
};
pub use paths::{default_state_path, dir_writable, readable_by_others};
pub use actions::ActionSettings;
pub use fleet::FleetSettings;
pub use schema::{ActionsTable, RouteTable};
use file::duration_message;
use paths::read_secret_file;

/// Everything the program needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Secret>,
    /// The app-level token (`xapp-…`) that opens Socket Mode, for actions from Slack.
    pub app_token: Option<Secret>,
    /// Who may act from Slack, and what (`[actions]`).
    pub actions: ActionSettings,
    /// The default channel: where events go when no `[[route]]` matches.
    pub channel: Option<String>,
    pub api_url: String,
    /// The host label on every card: `host`, else this machine's hostname.
    pub host: String,
    /// An optional tag such as `production`, shown on every card.
    pub environment: Option<String>,
    /// Explicit state database path (`--state`, `SUPERVISOR_SLACK_STATE`, `state`).
    pub state: Option<PathBuf>,
    pub templates_dir: Option<PathBuf>,
    /// A thread older than this gets a new parent.
    pub thread_ttl: Duration,
    /// Failures are also shown in the channel: once per failure episode, and its
    /// FATAL (`dispatch::episode`).
    pub broadcast_failures: bool,
    /// Cards for the listener's own process (supervisord names it in
    /// `SUPERVISOR_PROCESS_NAME`); off by default: nobody needs `slack RUNNING`.
    pub own_card: bool,
    /// A board per host in the default channel: every process, its state and since
    /// when, failing ones first, edited in place.
    pub board: bool,
    /// Pin the board when it is posted (scope `pins:write`).
    pub board_pin: bool,
    /// Time-out on every Slack call.
    pub call_timeout: Duration,
    /// `chat.postMessage` pace per channel, and the burst allowed.
    pub post_interval: Duration,
    pub post_burst: u32,
    /// `chat.update` budget (Slack's Tier 3 is 50+ per minute).
    pub updates_per_minute: u32,
    /// At most this many piled-up events of one thread go out as one reply.
    pub coalesce_max: usize,
    /// Waiting events beyond which new events of a thread are folded into its newest
    /// waiting one.
    pub outbox_cap: u64,
    /// How long to wait before retrying after a setup error (bad token, channel...).
    pub setup_retry: Duration,
    /// Longest wait between retries of a transient failure (backoff doubles up to it).
    pub retry_max: Duration,
    /// Flapping: more than `flap_threshold` transitions within `flap_window`.
    pub flap_threshold: u32,
    pub flap_window: Duration,
    /// While flapping, at most one reply (a digest) per `digest_interval`.
    pub digest_interval: Duration,
    /// No transition for this long ends flapping with a "settled" reply.
    pub settle_after: Duration,
    /// Reconcile compares every card with supervisord at least this often.
    pub reconcile_interval: Duration,
    /// supervisord's XML-RPC endpoint (`unix:///run/supervisor.sock` or
    /// `http://host:port`): the `supervisor_server_url` setting, else the
    /// `SUPERVISOR_SERVER_URL` supervisord gives its listeners.
    pub supervisor_server_url: Option<String>,
    /// Basic-auth credentials for supervisord's XML-RPC (`[unix_http_server]`
    /// `username`/`password`); supervisord does not pass them to its listeners.
    pub supervisor_username: Option<String>,
    pub supervisor_password: Option<Secret>,
    /// Which channel each event goes to, with which mentions, or whether it is dropped.
    pub routes: Routes,
    /// The fleet this host shares its state with (`None`: one host, SQLite only).
    pub fleet: Option<FleetSettings>,
}

/// Something missing for `listen` to start, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub what: String,
    pub fix: String,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.fix)
    }
}

impl Settings {
    /// Whether `listen` can start with these settings: the one answer that both
    /// `listen` (which refuses to start otherwise) and `check` (which reports it) use.
    /// It needs a token and at least one channel, the default one or a route's.
    pub fn ready_to_listen(&self) -> Result<(), Vec<NotReady>> {
        let mut missing = Vec::new();
        if self.token.is_none() {
            missing.push(NotReady {
                what: "no Slack token".into(),
                fix: "set SLACK_TOKEN_FILE (a file holding the bot token xoxb-..., chmod 600) or SLACK_TOKEN in the [eventlistener] environment, or token_file in the settings file".into(),
            });
        }
        if self.routes.channels().is_empty() {
            missing.push(NotReady {
                what: "no default channel and no [[route]] channel".into(),
                fix: "set SLACK_CHANNEL (e.g. #ops or C0123456789), or channel (or [[route]] channels) in the settings file".into(),
            });
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

pub const DEFAULT_API_URL: &str = "https://slack.com/api";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/supervisor-slack.toml";

/// Something the operator should fix although the program can run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl Warning {
    pub(crate) fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Warning {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.what, self.fix)
    }
}

/// Settings plus what the operator should hear about them (a token file others can
/// read, a misspelt variable that still works...). The program runs with warnings.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<Warning>,
    /// The settings file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Which settings file to read: `--config`, else `SUPERVISOR_SLACK_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`] when it exists, else none.
pub fn config_path(config: Option<&Path>, env: &dyn Env) -> Option<PathBuf> {
    config
        .map(Path::to_path_buf)
        .or_else(|| env.var("SUPERVISOR_SLACK_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        })
}

/// Loads settings (see [`load_checked`]) and logs the warnings on stderr.
pub fn load(config: Option<&Path>, env: &dyn Env) -> Result<Settings, ConfigError> {
    let loaded = load_checked(config, env)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.settings)
}

/// Loads settings: the file given (else `SUPERVISOR_SLACK_CONFIG`, else the default
/// file when present), then the environment on top. Returns the warnings instead of
/// logging them.
pub fn load_checked(config: Option<&Path>, env: &dyn Env) -> Result<Loaded, ConfigError> {
    let file = match config_path(config, env) {
        Some(p) => read_file(&p)?,
        None => SettingsFile::none(),
    };
    resolve(&file, env)
}

/// Merges a settings file with the environment and checks every value.
///
/// The environment wins over the file, except `supervisor_server_url`, which wins
/// over `SUPERVISOR_SERVER_URL` (that variable is set by supervisord, not by the
/// operator).
pub fn resolve(file: &SettingsFile, env: &dyn Env) -> Result<Loaded, ConfigError> {
    let f = &file.parsed;
    let mut warnings = Vec::new();

    let token = if let Some(t) = env.var("SLACK_TOKEN") {
        Some(Secret::new(t.trim()))
    } else if let Some(path) = env.var("SLACK_TOKEN_FILE") {
        let path = PathBuf::from(path);
        Some(read_secret_file(&path, &mut warnings).map_err(|m| invalid("SLACK_TOKEN_FILE", m))?)
    } else if let Some(p) = &f.token_file {
        Some(
            read_secret_file(p.get_ref(), &mut warnings)
                .map_err(|m| file.invalid("token_file", p.span(), m))?,
        )
    } else {
        None
    };

    let channel = match (env.var("SLACK_CHANNEL"), env.var("SLACK_CHANNNEL")) {
        (Some(c), _) => Some(check_channel("SLACK_CHANNEL", None, &c)?),
        (None, Some(c)) => {
            warnings.push(Warning::new(
                "SLACK_CHANNNEL (three Ns) is read for compatibility with the original tool",
                "rename it to SLACK_CHANNEL",
            ));
            Some(check_channel("SLACK_CHANNNEL", None, &c)?)
        }
        (None, None) => match &f.channel {
            Some(c) => Some(check_channel(
                "channel",
                Some(file.at(c.span())),
                c.get_ref(),
            )?),
            None => None,
        },
    };

    let (api_url, api_at) = match env.var("SLACK_API_URL") {
        Some(u) => (u, None),
        None => match &f.api_url {
            Some(u) => (u.get_ref().clone(), Some(file.at(u.span()))),
            None => (DEFAULT_API_URL.to_string(), None),
        },
    };
    let api_url = api_url.trim_end_matches('/').to_string();
    let api_key = if api_at.is_some() {
        "api_url"
    } else {
        "SLACK_API_URL"
    };
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            key: api_key.into(),
            at: api_at,
            message: format!("{api_url:?} is not an http(s) URL; the default is {DEFAULT_API_URL}"),
        });
    }
    if let Some(rest) = api_url.strip_prefix("http://") {
        // The token goes in every request: in clear text only to this machine.
        if !is_loopback_authority(rest) {
            return Err(ConfigError::Invalid {
                key: api_key.into(),
                at: api_at,
                message: format!(
                    "{api_url:?} would send the bot token in clear text over the network; use https:// (the default is {DEFAULT_API_URL}), or plain http only to this machine (127.0.0.1, localhost, [::1])"
                ),
            });
        }
    }

    let host = match env
        .var("SUPERVISOR_SLACK_HOST")
        .or(f.host.as_ref().map(|h| h.get_ref().clone()))
    {
        Some(h) => h,
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".to_string()),
    };
    if host.trim().is_empty() {
        let at = f.host.as_ref().map(|h| file.at(h.span()));
        return Err(ConfigError::Invalid {
            key: "host".into(),
            at,
            message: "the host label is empty; remove the setting to use this machine's hostname"
                .into(),
        });
    }

    let dur = |key: &str, env_var: Option<&str>, v: &Option<Spanned<String>>, default: Duration| {
        if let Some(t) = env_var.and_then(|n| env.var(n)) {
            return parse_duration(env_var.unwrap(), &t);
        }
        match v {
            Some(s) => humantime::parse_duration(s.get_ref().trim())
                .map_err(|e| file.invalid(key, s.span(), duration_message(s.get_ref(), &e))),
            None => Ok(default),
        }
    };
    let at_least_one = |key: &str, v: &Option<Spanned<u32>>, default: u32| match v {
        Some(n) if *n.get_ref() == 0 => Err(file.invalid(key, n.span(), "must be at least 1")),
        Some(n) => Ok(*n.get_ref()),
        None => Ok(default),
    };
    let post_burst = at_least_one("post_burst", &f.post_burst, 2)?;
    let updates_per_minute = at_least_one("updates_per_minute", &f.updates_per_minute, 50)?;
    let coalesce_max = match &f.coalesce_max {
        Some(n) if *n.get_ref() == 0 => {
            return Err(file.invalid("coalesce_max", n.span(), "must be at least 1"))
        }
        Some(n) => *n.get_ref(),
        None => 20,
    };
    let outbox_cap = match &f.outbox_cap {
        Some(n) if *n.get_ref() == 0 => {
            return Err(file.invalid("outbox_cap", n.span(), "must be at least 1"))
        }
        Some(n) => *n.get_ref(),
        None => 100_000,
    };

    let supervisor_server_url = match &f.supervisor_server_url {
        Some(u) => Some(check_server_url(
            "supervisor_server_url",
            Some(file.at(u.span())),
            u.get_ref(),
        )?),
        None => match env.var("SUPERVISOR_SERVER_URL") {
            Some(u) => Some(check_server_url("SUPERVISOR_SERVER_URL", None, &u)?),
            None => None,
        },
    };
    let supervisor_password = match (&f.supervisor_password, &f.supervisor_password_file) {
        (Some(p), Some(_)) => {
            return Err(file.invalid(
                "supervisor_password",
                p.span(),
                "set either supervisor_password or supervisor_password_file, not both",
            ))
        }
        (Some(p), None) => {
            if let Some(path) = &file.path {
                if readable_by_others(path) {
                    warnings.push(Warning::new(
                        format!(
                            "{} holds supervisor_password and is readable by other users",
                            path.display()
                        ),
                        format!(
                            "run: chmod 600 {} (or use supervisor_password_file)",
                            path.display()
                        ),
                    ));
                }
            }
            Some(Secret::new(p.get_ref().clone()))
        }
        (None, Some(p)) => Some(
            read_secret_file(p.get_ref(), &mut warnings)
                .map_err(|m| file.invalid("supervisor_password_file", p.span(), m))?,
        ),
        (None, None) => None,
    };
    let supervisor_username = f.supervisor_username.as_ref().map(|u| u.get_ref().clone());
    if supervisor_password.is_some() && supervisor_username.is_none() {
        let span = f
            .supervisor_password
            .as_ref()
            .map(|p| p.span())
            .or(f.supervisor_password_file.as_ref().map(|p| p.span()))
            .unwrap_or(0..0);
        return Err(file.invalid(
            "supervisor_username",
            span,
            "a supervisord password needs supervisor_username too (the username of [unix_http_server])",
        ));
    }

    let routes = routes::routes(file, channel.clone())?;
    let app_token = actions::app_token(file, f.app_token_file.as_ref(), env, &mut warnings)?;
    let action_settings = actions::resolve(file, f.actions.as_ref())?;
    let fleet = fleet::resolve(file, env, &mut warnings)?;

    let settings = Settings {
        token,
        app_token,
        actions: action_settings,
        channel,
        api_url,
        host,
        environment: env
            .var("SUPERVISOR_SLACK_ENVIRONMENT")
            .or(f.environment.as_ref().map(|e| e.get_ref().clone())),
        state: env
            .var("SUPERVISOR_SLACK_STATE")
            .map(PathBuf::from)
            .or(f.state.as_ref().map(|s| s.get_ref().clone())),
        templates_dir: f.templates_dir.as_ref().map(|t| t.get_ref().clone()),
        thread_ttl: dur(
            "thread_ttl",
            None,
            &f.thread_ttl,
            Duration::from_secs(24 * 3600),
        )?,
        broadcast_failures: f.broadcast_failures.unwrap_or(true),
        own_card: f.own_card.unwrap_or(false),
        board: f.board.unwrap_or(false),
        board_pin: f.board_pin.unwrap_or(false),
        call_timeout: dur(
            "call_timeout",
            None,
            &f.call_timeout,
            Duration::from_secs(10),
        )?,
        post_interval: dur(
            "post_interval",
            None,
            &f.post_interval,
            Duration::from_secs(1),
        )?,
        post_burst,
        updates_per_minute,
        coalesce_max,
        outbox_cap,
        setup_retry: dur(
            "setup_retry",
            Some("SUPERVISOR_SLACK_SETUP_RETRY"),
            &f.setup_retry,
            Duration::from_secs(60),
        )?,
        retry_max: dur("retry_max", None, &f.retry_max, Duration::from_secs(30))?,
        flap_threshold: at_least_one("flap_threshold", &f.flap_threshold, 10)?,
        flap_window: dur(
            "flap_window",
            None,
            &f.flap_window,
            Duration::from_secs(300),
        )?,
        digest_interval: dur(
            "digest_interval",
            None,
            &f.digest_interval,
            Duration::from_secs(60),
        )?,
        settle_after: dur(
            "settle_after",
            None,
            &f.settle_after,
            Duration::from_secs(60),
        )?,
        reconcile_interval: dur(
            "reconcile_interval",
            None,
            &f.reconcile_interval,
            Duration::from_secs(60),
        )?,
        supervisor_server_url,
        supervisor_username,
        supervisor_password,
        routes,
        fleet,
    };
    Ok(Loaded {
        settings,
        warnings,
        file: file.path.clone(),
    })
}

/// `true` when the host of `authority[/path]` (what follows `http://`) is this
/// machine: `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // No userinfo: `http://127.0.0.1@evil.example/` names evil.example.
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => return h == "::1",
            None => return false,
        }
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A channel is `#name` or an ID such as `C0123456789`; no spaces.
pub fn check_channel(key: &str, at: Option<Location>, c: &str) -> Result<String, ConfigError> {
    let c = c.trim();
    if c.is_empty() || c.chars().any(char::is_whitespace) || c == "#" {
        return Err(ConfigError::Invalid {
            key: key.into(),
            at,
            message: format!(
                "{c:?} is not a channel; write #name or a channel ID such as C0123456789"
            ),
        });
    }
    Ok(c.to_string())
}

fn check_server_url(key: &str, at: Option<Location>, u: &str) -> Result<String, ConfigError> {
    if u.starts_with("unix://") || u.starts_with("http://") || u.starts_with("https://") {
        Ok(u.to_string())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            at,
            message: format!(
                "{u:?} is not a supervisord URL; write unix:///run/supervisor.sock or http://127.0.0.1:9001"
            ),
        })
    }
}

