//! The `[actions]` table: who may act on a process from Slack, which actions (and
//! which `/supervisor` subcommands) exist at all, which subcommands are open to the
//! members of the listener's channels, and the app-level token (`SLACK_APP_TOKEN`, `SLACK_APP_TOKEN_FILE` or
//! `app_token_file`) that opens the Socket Mode connection the clicks arrive on.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::file::duration_message;
use super::paths::read_secret_file;
use super::schema::ActionsTable;
use super::{invalid, ConfigError, Env, Secret, SettingsFile, Warning};
use crate::actions::{Action, Ask};


/// What may be done from Slack, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSettings {
    pub allow_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub allowed: Vec<Action>,
    /// The `/supervisor` subcommands that exist (from the same `allowed` list;
    /// default: every one).
    pub asks: Vec<Ask>,
    /// Subcommands anyone may ask in a channel the listener posts to (default:
    /// `status`); the others only `allow_users` / `allow_groups`.
    pub open_to_channel: Vec<Ask>,
    pub connections: u32,
    pub timeout: Duration,
    pub mute_for: Duration,
    pub stderr_lines: usize,
}

impl Default for ActionSettings {
    fn default() -> Self {
        ActionSettings {
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
            allowed: vec![Action::Restart, Action::Start, Action::Stop, Action::Stderr, Action::Mute],
            asks: Ask::ALL.to_vec(),
            open_to_channel: Ask::ALL.into_iter().filter(|a| a.open_by_default()).collect(),
            connections: 1,
            timeout: Duration::from_secs(30),
            mute_for: Duration::from_secs(3600),
            stderr_lines: 20,
        }
    }
}

impl ActionSettings {
    /// Someone may act at all: an allow list and at least one action. Without that,
    /// cards carry no buttons.
    pub fn anyone_allowed(&self) -> bool {
        let nobody = self.allow_users.is_empty() && self.allow_groups.is_empty();
        !self.allowed.is_empty() && !nobody
    }

    /// Someone may ask something with `/supervisor`: a subcommand exists and either
    /// an allow list is set or one of them is open to the channel.
    pub fn anyone_may_ask(&self) -> bool {
        let listed = !self.allow_users.is_empty() || !self.allow_groups.is_empty();
        let open = self.open_to_channel.iter().any(|a| self.asks.contains(a));
        !self.asks.is_empty() && (listed || open)
    }
}

/// An `allowed` name that is neither an action nor a subcommand.
fn unknown_name(name: &str) -> String {
    format!(
        "{name:?} is neither an action nor a command; the actions are restart, start, stop, stderr and mute, the /supervisor commands status, tail and why"
    )
}

/// The app-level token: `SLACK_APP_TOKEN`, else the file `SLACK_APP_TOKEN_FILE`, else
/// `app_token_file`. It must be an `xapp-` token (a bot token cannot open Socket
/// Mode).
pub(super) fn app_token(
    file: &SettingsFile,
    path: Option<&Spanned<PathBuf>>,
    env: &dyn Env,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Secret>, ConfigError> {
    let (token, key, at) = if let Some(t) = env.var("SLACK_APP_TOKEN") {
        (Secret::new(t.trim()), "SLACK_APP_TOKEN", None)
    } else if let Some(p) = env.var("SLACK_APP_TOKEN_FILE") {
        let t = read_secret_file(&PathBuf::from(p), warnings)
            .map_err(|m| invalid("SLACK_APP_TOKEN_FILE", m))?;
        (t, "SLACK_APP_TOKEN_FILE", None)
    } else if let Some(p) = path {
        let t = read_secret_file(p.get_ref(), warnings)
            .map_err(|m| file.invalid("app_token_file", p.span(), m))?;
        (t, "app_token_file", Some(p.span()))
    } else {
        return Ok(None);
    };
    if token.expose().is_empty() {
        return Ok(None);
    }
    if !token.expose().starts_with("xapp-") {
        let kind = token.expose().split('-').next().unwrap_or("");
        let message = format!(
            "the app-level token starts with {kind:?}, not \"xapp-\": make one under Basic Information → App-Level Tokens with the scope connections:write (the bot token xoxb-… cannot open Socket Mode)"
        );
        return Err(match at {
            Some(span) => file.invalid(key, span, message),
            None => invalid(key, message),
        });
    }
    Ok(Some(token))
}

/// Checks `[actions]`.
pub(super) fn resolve(file: &SettingsFile, t: Option<&ActionsTable>) -> Result<ActionSettings, ConfigError> {
    let mut out = ActionSettings::default();
    let Some(t) = t else {
        return Ok(out);
    };
    let ids = |key: &str, list: &Option<Spanned<Vec<Spanned<String>>>>, prefixes: &[char], what: &str| {
        let mut ids = Vec::new();
        for id in list.iter().flat_map(|l| l.get_ref()) {
            let s = id.get_ref().trim();
            let ok = s.len() >= 3
                && s.starts_with(prefixes)
                && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            if !ok {
                return Err(file.invalid(
                    key,
                    id.span(),
                    format!("{s:?} is not {what}; copy it from the profile (⋮ → Copy member ID) — names and @handles change, ids do not"),
                ));
            }
            ids.push(s.to_string());
        }
        Ok(ids)
    };
    out.allow_users = ids("actions.allow_users", &t.allow_users, &['U', 'W'], "a Slack user id such as U0123ABCD")?;
    out.allow_groups = ids("actions.allow_groups", &t.allow_groups, &['S'], "a user group id such as S0123ABCD")?;
    if let Some(list) = &t.allowed {
        let mut allowed = Vec::new();
        let mut asks = Vec::new();
        for name in list.get_ref() {
            let text = name.get_ref().trim();
            if let Ok(ask) = text.parse::<Ask>() {
                if !asks.contains(&ask) {
                    asks.push(ask);
                }
                continue;
            }
            let a: Action = text
                .parse()
                .map_err(|_| file.invalid("actions.allowed", name.span(), unknown_name(text)))?;
            if a == Action::Unmute {
                return Err(file.invalid("actions.allowed", name.span(), "\"unmute\" comes with \"mute\"; write \"mute\""));
            }
            if !allowed.contains(&a) {
                allowed.push(a);
            }
        }
        out.allowed = allowed;
        out.asks = asks;
    }
    if let Some(list) = &t.open_to_channel {
        let mut open = Vec::new();
        for name in list.get_ref() {
            let text = name.get_ref().trim();
            let ask: Ask = text.parse().map_err(|_| {
                file.invalid(
                    "actions.open_to_channel",
                    name.span(),
                    format!("{text:?} is not a /supervisor command; they are status, tail and why"),
                )
            })?;
            if !open.contains(&ask) {
                open.push(ask);
            }
        }
        out.open_to_channel = open;
    }
    if let Some(n) = &t.connections {
        if !(1..=10).contains(n.get_ref()) {
            return Err(file.invalid("actions.connections", n.span(), "must be 1 to 10 (Slack allows 10 Socket Mode connections per app, shared by every host using it)"));
        }
        out.connections = *n.get_ref();
    }
    if let Some(n) = &t.stderr_lines {
        if !(1..=100).contains(n.get_ref()) {
            return Err(file.invalid("actions.stderr_lines", n.span(), "must be 1 to 100"));
        }
        out.stderr_lines = *n.get_ref();
    }
    let dur = |key: &str, v: &Option<Spanned<String>>, default: Duration| match v {
        Some(s) => match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if d.is_zero() => Err(file.invalid(key, s.span(), "must be more than 0s")),
            Ok(d) => Ok(d),
            Err(e) => Err(file.invalid(key, s.span(), duration_message(s.get_ref(), &e))),
        },
        None => Ok(default),
    };
    out.timeout = dur("actions.timeout", &t.timeout, out.timeout)?;
    out.mute_for = dur("actions.mute_for", &t.mute_for, out.mute_for)?;
    Ok(out)
}
