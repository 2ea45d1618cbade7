//! Settings: an optional TOML file, overridden by the environment. Knows nothing of
//! the rest of the program; everything else receives a [`Settings`].
//!
//! Secrets (the bot token, supervisord's password) come from the environment or from
//! files — never from a command-line argument, which any user of the machine can read
//! in `ps`.
//!
//! A bad setting stops the program before it does anything: every error names the key
//! and, for the settings file, the line (a listener that runs half-configured loses
//! events quietly, which is worse than not starting).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::routing::{RouteTable, Routes};

/// The bot token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Replaces every occurrence of the token in `text` (for error messages that might
    /// quote a request).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 8 {
            return text.to_string();
        }
        text.replace(&self.0, "xoxb-[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The settings file, as written by the operator. Unknown keys are errors. Values
/// that are checked after parsing keep their position in the file ([`Spanned`]) so an
/// error can name the line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub token_file: Option<Spanned<PathBuf>>,
    pub channel: Option<Spanned<String>>,
    pub api_url: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub environment: Option<Spanned<String>>,
    pub state: Option<Spanned<PathBuf>>,
    pub templates_dir: Option<Spanned<PathBuf>>,
    pub thread_ttl: Option<Spanned<String>>,
    pub broadcast_failures: Option<bool>,
    pub call_timeout: Option<Spanned<String>>,
    pub post_interval: Option<Spanned<String>>,
    pub post_burst: Option<Spanned<u32>>,
    pub updates_per_minute: Option<Spanned<u32>>,
    pub coalesce_max: Option<Spanned<usize>>,
    /// Waiting events beyond which new events of a thread are folded into its newest
    /// waiting one (default 100000).
    pub outbox_cap: Option<Spanned<u64>>,
    pub setup_retry: Option<Spanned<String>>,
    /// Longest wait between retries of a transient failure (default 30s).
    pub retry_max: Option<Spanned<String>>,
    /// A process with more than this many transitions within `flap_window` is
    /// flapping (default 10).
    pub flap_threshold: Option<Spanned<u32>>,
    pub flap_window: Option<Spanned<String>>,
    /// While a process flaps, its replies go out at most this often (default 60s).
    pub digest_interval: Option<Spanned<String>>,
    /// A flapping process that stays in one state this long has settled (default 60s).
    pub settle_after: Option<Spanned<String>>,
    pub supervisor_server_url: Option<Spanned<String>>,
    pub supervisor_username: Option<Spanned<String>>,
    pub supervisor_password: Option<Spanned<String>>,
    pub supervisor_password_file: Option<Spanned<PathBuf>>,
    /// States never reported when no `[[route]]` matches.
    pub skip: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"always"` or `"after_failure"`, when no `[[route]]` matches.
    pub running: Option<Spanned<String>>,
    /// Mentions for FATAL / unexpected EXITED when no `[[route]]` matches.
    pub mentions: Option<Spanned<Vec<Spanned<String>>>>,
    /// Routing rules, in order; the first that matches an event decides.
    #[serde(default)]
    pub route: Vec<RouteTable>,
}

/// A settings file: where it came from, its text, and what it says.
#[derive(Debug, Default)]
pub struct SettingsFile {
    /// `None` for settings that came from no file (tests, no file present).
    pub path: Option<PathBuf>,
    pub text: String,
    pub parsed: FileSettings,
}

impl SettingsFile {
    /// No file: every setting from the environment or its default.
    pub fn none() -> Self {
        Self::default()
    }

    /// Where a span of the file is, for error messages.
    pub fn at(&self, span: Range<usize>) -> Location {
        Location {
            path: self.path.clone(),
            line: line_of(&self.text, span.start),
        }
    }

    /// An error about a key of the file, at the line of `span`.
    pub fn invalid(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            at: Some(self.at(span)),
            message: message.into(),
        }
    }
}

/// A line of a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: Option<PathBuf>,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "settings file {}, line {}", p.display(), self.line),
            None => write!(f, "settings, line {}", self.line),
        }
    }
}

/// The 1-based line that holds byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Everything the program needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Secret>,
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
    /// FATAL and unexpected EXITED replies are also shown in the channel.
    pub broadcast_failures: bool,
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
}

pub const DEFAULT_API_URL: &str = "https://slack.com/api";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/supervisor-slack.toml";

/// A setting that cannot be used. The program must not start with one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{at}, column {column}: {key}: {message}", key = key.as_deref().unwrap_or("(syntax)"))]
    Parse {
        at: Location,
        column: usize,
        /// The key involved, as a dotted path (`route[2].channel`), when known.
        key: Option<String>,
        message: String,
    },
    /// A value that parsed but makes no sense (a bad duration, pattern, mention...).
    /// `key` is the settings key (`route[2].process`) or the environment variable.
    #[error("{}{key}: {message}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Invalid {
        key: String,
        at: Option<Location>,
        message: String,
    },
}

impl ConfigError {
    /// The key (or environment variable) the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
    /// The 1-based line in the settings file, when the error is about the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { at, .. } => Some(at.line),
            ConfigError::Invalid { at, .. } => at.as_ref().map(|a| a.line),
        }
    }
}

/// An error about an environment variable (or a value with no place in a file).
pub fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        at: None,
        message: message.into(),
    }
}

/// A source of environment variables (the real one, or a map in tests).
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

/// Parses a duration such as `24h`, `90s`, `1m 30s`.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| invalid(key, duration_message(text, &e)))
}

fn duration_message(text: &str, e: &humantime::DurationError) -> String {
    format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"24h\"")
}

/// Parses the text of a settings file. `path` is only used in error messages.
pub fn parse_str(text: &str, path: Option<&Path>) -> Result<SettingsFile, ConfigError> {
    let parsed: FileSettings = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    Ok(SettingsFile {
        path: path.map(Path::to_path_buf),
        text: text.to_string(),
        parsed,
    })
}

/// Turns toml's error into one that names the key and the line. toml gives the span
/// and a message; the key is read from the message (unknown fields) or from the line
/// the span points at, inside the table that holds it.
fn parse_error(text: &str, path: Option<&Path>, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let line = line_of(text, span.start);
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let column = text[line_start..span.start.min(text.len())].chars().count() + 1;
    let message = e.message().trim().replace('\n', "; ");
    let key = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
        .or_else(|| key_on_line(text.lines().nth(line - 1).unwrap_or("")))
        .map(|k| match table_at(text, line) {
            Some(t) => format!("{t}.{k}"),
            None => k,
        });
    ConfigError::Parse {
        at: Location {
            path: path.map(Path::to_path_buf),
            line,
        },
        column,
        key,
        message,
    }
}

/// `key` in a line such as `key = value`.
fn key_on_line(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!k.is_empty() && k.chars().all(bare)).then(|| k.to_string())
}

/// The table that line `line` belongs to: `route[N]` (1-based) for the Nth
/// `[[route]]`, the name of a `[table]`, or `None` at the top level.
fn table_at(text: &str, line: usize) -> Option<String> {
    let mut table = None;
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for l in text.lines().take(line) {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = match arrays.iter_mut().find(|(a, _)| *a == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((name.clone(), 1));
                    1
                }
            };
            table = Some(format!("{name}[{n}]"));
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = Some(name.trim().to_string());
        }
    }
    table
}

/// Reads and parses a settings file.
pub fn read_file(path: &Path) -> Result<SettingsFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, Some(path))
}

/// Something the operator should fix although the program can run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl Warning {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
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
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        let key = if api_at.is_some() {
            "api_url"
        } else {
            "SLACK_API_URL"
        };
        return Err(ConfigError::Invalid {
            key: key.into(),
            at: api_at,
            message: format!("{api_url:?} is not an http(s) URL; the default is {DEFAULT_API_URL}"),
        });
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

    let routes = Routes::from_settings(file, channel.clone())?;

    let settings = Settings {
        token,
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
        supervisor_server_url,
        supervisor_username,
        supervisor_password,
        routes,
    };
    Ok(Loaded {
        settings,
        warnings,
        file: file.path.clone(),
    })
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

/// `true` when users other than the owner may read the file (mode bits `044`).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o044 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Reads a secret (token, password) from a file: trimmed, not empty. Warns when
/// other users can read it. The error is a message; the caller names the key.
fn read_secret_file(path: &Path, warnings: &mut Vec<Warning>) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if readable_by_others(path) {
        warnings.push(Warning::new(
            format!("{} is readable by other users", path.display()),
            format!("run: chmod 600 {}", path.display()),
        ));
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(secret))
}

/// Where the state database lives when no path was given: `$STATE_DIRECTORY/state.db`
/// (systemd), else `/var/lib/supervisor-slack/state.db` when writable, else
/// `$XDG_STATE_HOME/supervisor-slack/state.db` (`~/.local/state/...`).
pub fn default_state_path(env: &dyn Env) -> PathBuf {
    if let Some(dir) = env.var("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated: the first is ours.
        let first = dir.split(':').next().unwrap_or(&dir).to_string();
        return PathBuf::from(first).join("state.db");
    }
    let system = Path::new("/var/lib/supervisor-slack");
    if dir_writable(system) {
        return system.join("state.db");
    }
    let base = env
        .var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("supervisor-slack").join("state.db")
}

/// `true` when a file can be created in `dir` (tried, then removed).
pub fn dir_writable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}
