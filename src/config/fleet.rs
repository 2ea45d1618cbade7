//! The fleet: many hosts sharing one PostgreSQL (`fleet_url`, from the environment
//! `SUPERVISOR_SLACK_FLEET_URL`, the file `fleet_url_file`, or the settings file),
//! which fleet of that database (`fleet_name`), and how a host's silence is told
//! (`heartbeat`, `silent_after`). Without `fleet_url` there is no fleet: the
//! embedded SQLite state stays the one-host mode.

use std::time::Duration;

use super::file::duration_message;
use super::paths::{read_secret_file, readable_by_others};
use super::{invalid, ConfigError, Env, Secret, SettingsFile, Warning};

/// The fleet this host belongs to, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// The PostgreSQL connection string (it may hold a password).
    pub url: Secret,
    /// Which fleet of the database (several may share one).
    pub name: String,
    /// How often this host says it is alive.
    pub heartbeat: Duration,
    /// A host not heard of for this long is silent.
    pub silent_after: Duration,
    /// One card per program across the fleet (`thread_by = "program"`), or one per
    /// program and host (`"host"`).
    pub by_program: bool,
    /// How many listeners of the fleet hold the app's Socket Mode connections.
    pub socket_connections: u32,
}

pub const DEFAULT_FLEET_NAME: &str = "default";
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(90);
pub const DEFAULT_SOCKET_CONNECTIONS: u32 = 2;

/// The fleet settings; `None` without `fleet_url`.
pub(super) fn resolve(
    file: &SettingsFile,
    env: &dyn Env,
    warnings: &mut Vec<Warning>,
) -> Result<Option<FleetSettings>, ConfigError> {
    let f = &file.parsed;
    let url = if let Some(u) = env.var("SUPERVISOR_SLACK_FLEET_URL") {
        Some((Secret::new(u.trim()), "SUPERVISOR_SLACK_FLEET_URL", None))
    } else if let Some(p) = &f.fleet_url_file {
        let s = read_secret_file(p.get_ref(), warnings)
            .map_err(|m| file.invalid("fleet_url_file", p.span(), m))?;
        Some((s, "fleet_url_file", Some(p.span())))
    } else if let Some(u) = &f.fleet_url {
        if let Some(path) = &file.path {
            if readable_by_others(path) {
                warnings.push(Warning::new(
                    format!("{} holds fleet_url (with its password) and is readable by other users", path.display()),
                    format!("run: chmod 600 {} (or use fleet_url_file)", path.display()),
                ));
            }
        }
        Some((Secret::new(u.get_ref().trim()), "fleet_url", Some(u.span())))
    } else {
        None
    };
    let fleet_only = |key: &str, span: Option<std::ops::Range<usize>>| match span {
        Some(span) => Err(file.invalid(key, span, "is a fleet setting: set fleet_url (or SUPERVISOR_SLACK_FLEET_URL) too, or remove it")),
        None => Ok(()),
    };
    let Some((url, key, at)) = url else {
        fleet_only("fleet_name", f.fleet_name.as_ref().map(|s| s.span()))?;
        fleet_only("heartbeat", f.heartbeat.as_ref().map(|s| s.span()))?;
        fleet_only("silent_after", f.silent_after.as_ref().map(|s| s.span()))?;
        fleet_only("socket_connections", f.socket_connections.as_ref().map(|s| s.span()))?;
        if let Some(t) = &f.thread_by {
            if t.get_ref().trim() == "program" {
                return Err(file.invalid(
                    "thread_by",
                    t.span(),
                    "\"program\" (one card per program across hosts) needs a fleet: set fleet_url too, or write \"host\"",
                ));
            }
            thread_by(file, t)?;
        }
        return Ok(None);
    };
    check_url(&url).map_err(|m| match at.clone() {
        Some(span) => file.invalid(key, span, m),
        None => invalid(key, m),
    })?;
    let name = match &f.fleet_name {
        Some(n) => {
            let s = n.get_ref().trim();
            let ok = !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(file.invalid(
                    "fleet_name",
                    n.span(),
                    format!("{s:?} is not a fleet name: 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
            s.to_string()
        }
        None => DEFAULT_FLEET_NAME.to_string(),
    };
    let dur = |key: &str, v: &Option<toml::Spanned<String>>, default: Duration| match v {
        Some(s) => match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if d < Duration::from_secs(1) => Err(file.invalid(key, s.span(), "must be at least 1s")),
            Ok(d) => Ok(d),
            Err(e) => Err(file.invalid(key, s.span(), duration_message(s.get_ref(), &e))),
        },
        None => Ok(default),
    };
    let heartbeat = dur("heartbeat", &f.heartbeat, DEFAULT_HEARTBEAT)?;
    let silent_after = dur("silent_after", &f.silent_after, DEFAULT_SILENT_AFTER)?;
    if silent_after <= heartbeat {
        let span = f.silent_after.as_ref().or(f.heartbeat.as_ref()).map(|s| s.span()).unwrap_or(0..0);
        return Err(file.invalid(
            "silent_after",
            span,
            format!(
                "must be longer than heartbeat ({}): a host that beats every {0} would be called silent between two beats; three beats is usual",
                humantime::format_duration(heartbeat)
            ),
        ));
    }
    let by_program = match &f.thread_by {
        Some(t) => thread_by(file, t)?,
        None => true,
    };
    let socket_connections = match &f.socket_connections {
        Some(n) if !(1..=10).contains(n.get_ref()) => {
            return Err(file.invalid(
                "socket_connections",
                n.span(),
                "must be 1 to 10: Slack allows 10 Socket Mode connections per app, and the fleet shares one app",
            ))
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_SOCKET_CONNECTIONS,
    };
    Ok(Some(FleetSettings {
        url,
        name,
        heartbeat,
        silent_after,
        by_program,
        socket_connections,
    }))
}

/// `thread_by`: whether cards are per program (`true`) or per host.
fn thread_by(file: &SettingsFile, t: &toml::Spanned<String>) -> Result<bool, ConfigError> {
    match t.get_ref().trim() {
        "program" => Ok(true),
        "host" => Ok(false),
        other => Err(file.invalid(
            "thread_by",
            t.span(),
            format!("{other:?}: write \"program\" (one card per program across the fleet) or \"host\" (one card per program and host)"),
        )),
    }
}

/// A PostgreSQL connection string this program can use: a `postgresql://` (or
/// `postgres://`) URL, or `key=value` pairs. The message never quotes it (it may
/// hold a password).
fn check_url(url: &Secret) -> Result<(), String> {
    let u = url.expose();
    if u.is_empty() {
        return Err("is empty; write postgresql://USER:PASSWORD@HOST:5432/DATABASE".into());
    }
    let url_form = u.starts_with("postgresql://") || u.starts_with("postgres://");
    let pairs_form = !u.contains("://") && u.contains('=');
    if !url_form && !pairs_form {
        return Err("is not a PostgreSQL connection string; write postgresql://USER:PASSWORD@HOST:5432/DATABASE (or host=… user=… dbname=…)".into());
    }
    Ok(())
}
