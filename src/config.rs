//! Settings: an optional TOML file, overridden by the environment. Knows nothing of
//! the rest of the program; everything else receives a [`Settings`].
//!
//! Secrets (the bot token) come from `SLACK_TOKEN`, `SLACK_TOKEN_FILE` or the
//! `token_file` setting — never from a command-line argument, which any user of the
//! machine can read in `ps`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

/// The settings file, as written by the operator. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub token_file: Option<PathBuf>,
    pub channel: Option<String>,
    pub api_url: Option<String>,
    pub host: Option<String>,
    pub environment: Option<String>,
    pub state: Option<PathBuf>,
    pub templates_dir: Option<PathBuf>,
    pub thread_ttl: Option<String>,
    pub broadcast_failures: Option<bool>,
    pub call_timeout: Option<String>,
    pub post_interval: Option<String>,
    pub post_burst: Option<u32>,
    pub updates_per_minute: Option<u32>,
    pub coalesce_max: Option<usize>,
    pub setup_retry: Option<String>,
    pub outbox_cap: Option<u64>,
}

/// Everything the program needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Secret>,
    pub channel: Option<String>,
    pub api_url: String,
    pub host: String,
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
    /// How long to wait before retrying after a setup error (bad token, channel...).
    pub setup_retry: Duration,
    /// Waiting events beyond which new events of a thread are folded into its newest
    /// waiting one.
    pub outbox_cap: u64,
}

pub const DEFAULT_API_URL: &str = "https://slack.com/api";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/supervisor-slack.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
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
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"24h\""),
        )
    })
}

/// Reads and parses a settings file.
pub fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads settings: the file given (else the default file when present), then the
/// environment on top.
pub fn load(config: Option<&Path>, env: &dyn Env) -> Result<Settings, ConfigError> {
    let file = match config {
        Some(p) => read_file(p)?,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            read_file(Path::new(DEFAULT_CONFIG_PATH))?
        }
        None => FileSettings::default(),
    };
    resolve(file, env)
}

/// Merges file settings with the environment.
pub fn resolve(file: FileSettings, env: &dyn Env) -> Result<Settings, ConfigError> {
    let token = if let Some(t) = env.var("SLACK_TOKEN") {
        Some(Secret::new(t.trim()))
    } else if let Some(path) = env
        .var("SLACK_TOKEN_FILE")
        .map(PathBuf::from)
        .or(file.token_file.clone())
    {
        Some(read_token_file(&path)?)
    } else {
        None
    };
    let channel = match (env.var("SLACK_CHANNEL"), env.var("SLACK_CHANNNEL")) {
        (Some(c), _) => Some(c),
        (None, Some(c)) => {
            tracing::warn!("SLACK_CHANNNEL (three Ns) is read for compatibility with the original tool; rename it to SLACK_CHANNEL");
            Some(c)
        }
        (None, None) => file.channel,
    };
    let api_url = env
        .var("SLACK_API_URL")
        .or(file.api_url)
        .unwrap_or_else(|| DEFAULT_API_URL.to_string())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(invalid(
            "api_url",
            format!("{api_url:?} is not an http(s) URL"),
        ));
    }
    let host = match env.var("SUPERVISOR_SLACK_HOST").or(file.host) {
        Some(h) => h,
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown-host".to_string()),
    };
    let dur = |key: &str, v: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
        v.map(|t| parse_duration(key, &t))
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    let post_burst = file.post_burst.unwrap_or(2);
    if post_burst == 0 {
        return Err(invalid("post_burst", "must be at least 1"));
    }
    let updates_per_minute = file.updates_per_minute.unwrap_or(50);
    if updates_per_minute == 0 {
        return Err(invalid("updates_per_minute", "must be at least 1"));
    }
    let coalesce_max = file.coalesce_max.unwrap_or(20);
    if coalesce_max == 0 {
        return Err(invalid("coalesce_max", "must be at least 1"));
    }
    Ok(Settings {
        token,
        channel,
        api_url,
        host,
        environment: env.var("SUPERVISOR_SLACK_ENVIRONMENT").or(file.environment),
        state: env
            .var("SUPERVISOR_SLACK_STATE")
            .map(PathBuf::from)
            .or(file.state),
        templates_dir: file.templates_dir,
        thread_ttl: dur(
            "thread_ttl",
            file.thread_ttl,
            Duration::from_secs(24 * 3600),
        )?,
        broadcast_failures: file.broadcast_failures.unwrap_or(true),
        call_timeout: dur("call_timeout", file.call_timeout, Duration::from_secs(10))?,
        post_interval: dur("post_interval", file.post_interval, Duration::from_secs(1))?,
        post_burst,
        updates_per_minute,
        coalesce_max,
        setup_retry: dur(
            "setup_retry",
            env.var("SUPERVISOR_SLACK_SETUP_RETRY").or(file.setup_retry),
            Duration::from_secs(60),
        )?,
        outbox_cap: match file.outbox_cap {
            Some(0) => return Err(invalid("outbox_cap", "must be at least 1")),
            Some(n) => n,
            None => 100_000,
        },
    })
}

fn read_token_file(path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("token_file", format!("cannot read {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o044 != 0 {
                tracing::warn!(path = %path.display(), "the token file is readable by other users; run: chmod 600 {}", path.display());
            }
        }
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid(
            "token_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(token))
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

fn dir_writable(dir: &Path) -> bool {
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
