//! The settings file's schema, as the operator writes it: the top-level keys,
//! `[[route]]` and `[actions]`. Values checked after parsing keep their position in
//! the file ([`Spanned`]) so that an error can name the line. No logic: reading is
//! [`super::file`], checking is [`super::routes`], [`super::actions`] and
//! [`super::resolve`].

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The settings file, as written by the operator. Unknown keys are errors. Values
/// that are checked after parsing keep their position in the file ([`Spanned`]) so an
/// error can name the line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub token_file: Option<Spanned<PathBuf>>,
    /// The app-level token (`xapp-…`) for Socket Mode, in a file.
    pub app_token_file: Option<Spanned<PathBuf>>,
    pub channel: Option<Spanned<String>>,
    pub api_url: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub environment: Option<Spanned<String>>,
    pub state: Option<Spanned<PathBuf>>,
    pub templates_dir: Option<Spanned<PathBuf>>,
    pub thread_ttl: Option<Spanned<String>>,
    pub broadcast_failures: Option<bool>,
    /// Cards for the listener's own process too (default false).
    pub own_card: Option<bool>,
    /// One board message per host in the default channel (default false).
    pub board: Option<bool>,
    /// Pin the board to the channel (needs the pins:write scope; default false).
    pub board_pin: Option<bool>,
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
    /// Reconcile compares every card with supervisord at least this often (default
    /// 60s).
    pub reconcile_interval: Option<Spanned<String>>,
    pub supervisor_server_url: Option<Spanned<String>>,
    pub supervisor_username: Option<Spanned<String>>,
    pub supervisor_password: Option<Spanned<String>>,
    pub supervisor_password_file: Option<Spanned<PathBuf>>,
    /// The fleet's PostgreSQL (`postgresql://user:password@host/db`); a secret.
    pub fleet_url: Option<Spanned<String>>,
    /// The fleet's PostgreSQL connection string, in a file.
    pub fleet_url_file: Option<Spanned<PathBuf>>,
    /// Which fleet of that database this host belongs to (default `default`).
    pub fleet_name: Option<Spanned<String>>,
    /// How often a host tells the fleet it is alive (default 30s).
    pub heartbeat: Option<Spanned<String>>,
    /// A host not heard of for this long is silent (default 90s).
    pub silent_after: Option<Spanned<String>>,
    /// `"program"`: one card per program across the fleet (the default in a fleet);
    /// `"host"`: one card per program and host.
    pub thread_by: Option<Spanned<String>>,
    /// In a fleet: how many listeners hold the app's Socket Mode connections (1–10,
    /// default 2); the others open none, and clicks reach them through the fleet.
    pub socket_connections: Option<Spanned<u32>>,
    /// States never reported when no `[[route]]` matches.
    pub skip: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"always"` or `"after_failure"`, when no `[[route]]` matches.
    pub running: Option<Spanned<String>>,
    /// Mentions for FATAL / unexpected EXITED when no `[[route]]` matches.
    pub mentions: Option<Spanned<Vec<Spanned<String>>>>,
    /// Acting from Slack: who may, and what.
    pub actions: Option<ActionsTable>,
    /// Routing rules, in order; the first that matches an event decides.
    #[serde(default)]
    pub route: Vec<RouteTable>,
}

/// One `[[route]]` table as written in the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Glob on the group name (`*`, `?`, `[abc]`, `{a,b}`); default `*`.
    pub group: Option<Spanned<String>>,
    /// Glob on the process name; default `*`.
    pub process: Option<Spanned<String>>,
    /// Where matching events go; default: the default channel; `""` drops them.
    pub channel: Option<Spanned<String>>,
    /// `true`: matching events are not reported.
    pub drop: Option<Spanned<bool>>,
    /// States not reported, e.g. `["STARTING", "STOPPING"]`.
    pub skip: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"always"` (default) or `"after_failure"`: RUNNING only when the process was
    /// failing before this start (BACKOFF, EXITED, FATAL, UNKNOWN).
    pub running: Option<Spanned<String>>,
    /// Added to FATAL and unexpected EXITED cards: `<!subteam^S…>`, `<@U…>`,
    /// `<!here>`, `<!channel>`.
    pub mentions: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[actions]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsTable {
    /// Slack user ids (`U…`, `W…`) that may act.
    pub allow_users: Option<Spanned<Vec<Spanned<String>>>>,
    /// User groups (`S…`) whose members may act (`usergroups.users.list`).
    pub allow_groups: Option<Spanned<Vec<Spanned<String>>>>,
    /// Which actions, and which `/supervisor` subcommands (`status`, `tail`,
    /// `why`), exist at all (default: every one).
    pub allowed: Option<Spanned<Vec<Spanned<String>>>>,
    /// `/supervisor` subcommands anyone may ask in a channel the listener posts to
    /// (default `["status"]`); the others only the allow lists.
    pub open_to_channel: Option<Spanned<Vec<Spanned<String>>>>,
    /// Socket Mode connections this listener opens (1–10, default 1).
    pub connections: Option<Spanned<u32>>,
    /// Longest an action may take with supervisord (default 30s).
    pub timeout: Option<Spanned<String>>,
    /// How long Mute silences a process (default 1h).
    pub mute_for: Option<Spanned<String>>,
    /// Lines Show stderr posts and `/supervisor tail` shows at most (1–100, default
    /// 20).
    pub stderr_lines: Option<Spanned<usize>>,
}
