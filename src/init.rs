//! `supervisor-slack init`: the text an operator pastes to install the listener — a
//! ready `[eventlistener:slack]` block for supervisord and a commented starter
//! settings file in which every key is documented. Pure text; the CLI prints it.

use std::path::Path;

/// The `[eventlistener:slack]` block for supervisord's configuration.
///
/// `binary` is the real path of this program (`std::env::current_exe()`), so the
/// block works as pasted; `config` is the settings file to pass, if any.
///
/// Why each line: `events=PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP` are
/// the process changes the cards show, supervisord's own start and stop (its thread
/// on the host, and a reconcile after a start), and `supervisorctl update` adding or
/// removing groups (said in their threads); `events=PROCESS_STATE` alone works too;
/// `buffer_size=1024` because supervisord's default of 10 overflows on a normal boot
/// and overflowing silently discards the oldest events; its own `priority` so a
/// rejected event is never re-queued into another pool; stdout is the protocol
/// channel, so there is no stdout log, and the listener's own logs go to stderr.
pub fn supervisord_block(binary: &Path, config: Option<&Path>) -> String {
    let mut command = format!("{} listen", quote_arg(&binary.display().to_string()));
    if let Some(c) = config {
        command = format!(
            "{} --config {} listen",
            quote_arg(&binary.display().to_string()),
            quote_arg(&c.display().to_string())
        );
    }
    format!(
        r##"; supervisor-slack: posts every process-state change to Slack.
; Paste into supervisord's configuration (e.g. /etc/supervisor/conf.d/slack.conf),
; replace the two placeholders, then run: supervisorctl reread && supervisorctl update
[eventlistener:slack]
command={command}
; Process changes, supervisord's own start/stop, groups added/removed by update.
events=PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP
; supervisord's default buffer of 10 overflows on a normal boot and then silently
; discards the oldest events.
buffer_size=1024
; A priority of its own: a re-queued event never lands in another listener's pool.
priority=-100
autorestart=true
startsecs=1
; Time to answer the event in hand and close the state database on shutdown.
stopwaitsecs=10
; stdout is the protocol channel between supervisord and the listener: never log it.
stdout_logfile=NONE
stderr_logfile=/var/log/supervisor/supervisor-slack.err.log
stderr_logfile_maxbytes=10MB
stderr_logfile_backups=3
; The token file: one line, the bot token (xoxb-...); chmod 600, owned by the user
; the listener runs as. SLACK_CHANNEL: #name or a channel ID.
environment=SLACK_TOKEN_FILE="/etc/supervisor-slack/token",SLACK_CHANNEL="#CHANGE-ME"
"##
    )
}

/// Quotes a path for supervisord's `command=` (shell-like splitting) when needed.
fn quote_arg(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// A starter settings file (TOML) with every key documented. Only `channel` is set;
/// everything else is commented out at its default, so the file parses as is and
/// changes nothing until edited.
pub fn starter_settings() -> String {
    STARTER.to_string()
}

const STARTER: &str = r##"# supervisor-slack settings (TOML). Usually /etc/supervisor-slack.toml; another
# path with --config FILE or SUPERVISOR_SLACK_CONFIG. Environment variables override
# this file (named next to each key). Unknown keys are errors.
# Check it with: supervisor-slack check

# The default channel: #name or a channel ID (C0123456789). Env: SLACK_CHANNEL
# (SLACK_CHANNNEL, the original tool's spelling, still works).
channel = "#ops"

# The bot token (xoxb-...) is read from a file holding just the token; chmod 600.
# Env: SLACK_TOKEN (the token itself) or SLACK_TOKEN_FILE. Never a command-line argument.
# token_file = "/etc/supervisor-slack/token"
# The app-level token (xapp-...) for buttons on cards, over Socket Mode ([actions]
# at the end of this file). Default: SLACK_APP_TOKEN_FILE or SLACK_APP_TOKEN.
# app_token_file = "/etc/supervisor-slack/app-token"

# The host label on every card. Default: this machine's hostname.
# Env: SUPERVISOR_SLACK_HOST
# host = "web-1"

# A tag shown on every card, e.g. "production". Env: SUPERVISOR_SLACK_ENVIRONMENT
# environment = "production"

# The state database (outbox and thread map). Env: SUPERVISOR_SLACK_STATE.
# Default: $STATE_DIRECTORY/state.db, /var/lib/supervisor-slack/state.db when
# writable, else ~/.local/state/supervisor-slack/state.db.
# state = "/var/lib/supervisor-slack/state.db"

# A directory of card templates overriding the built-in ones (missing files fall
# back to the built-in ones).
# templates_dir = "/etc/supervisor-slack/templates"

# Slack's Web API. Env: SLACK_API_URL
# api_url = "https://slack.com/api"

# A process's thread older than this gets a new parent message.
# thread_ttl = "24h"

# Also show failures in the channel, not only the thread: once per failure episode
# (from a failure until the process is stopped on purpose or stays up for
# settle_after), and its FATAL once more. A crash loop is one message however long
# it loops, and a restart of this listener does not start a new episode.
# broadcast_failures = true

# Cards for this listener's own process too (supervisord tells it its name); off by
# default, since a card saying the listener runs tells nobody anything.
# own_card = false

# A board: one message per host in the default channel, edited in place, listing
# every process supervisord reports with its state and since when, failing ones
# first, under a one-line summary ("web-1: 12 running, 1 FATAL"). Threads stay as
# they are. Without supervisord's XML-RPC it lists the processes the events showed.
# board = false
# Pin the board to the channel when it is posted (the app needs the pins:write scope).
# board_pin = false

# Time-out on every Slack call.
# call_timeout = "10s"

# chat.postMessage pace per channel, and the burst allowed (Slack allows about one
# message per second per channel).
# post_interval = "1s"
# post_burst = 2

# chat.update budget per minute (Slack's Tier 3 is 50+).
# updates_per_minute = 50

# At most this many piled-up events of one process go out as one reply.
# coalesce_max = 20

# Waiting events beyond which (Slack unreachable for a long while) new events of a
# process replace its newest waiting one; its card says how many were folded.
# outbox_cap = 100000

# Wait before retrying after a setup error (bad token, unknown channel...).
# Env: SUPERVISOR_SLACK_SETUP_RETRY
# setup_retry = "60s"

# Longest wait between retries after a temporary failure (5xx, network, time-out):
# the wait doubles from half a second up to this.
# retry_max = "30s"

# Flood control. A process with more than flap_threshold transitions within
# flap_window is flapping: its parent card says so and stays current, and its
# transitions go into its thread as one digest reply per digest_interval (FATAL
# always at once). When it stays in one state for settle_after, a "settled" reply
# says so. A failing process that stays up (RUNNING, or exited as expected) for
# settle_after ends its failure episode: its next failure is shown in the channel.
# flap_threshold = 10
# flap_window = "5m"
# digest_interval = "60s"
# settle_after = "60s"

# Reconcile: every card is compared with what supervisord reports (one XML-RPC
# call) at start, after events were dropped, after supervisord starts or changes
# its groups, and at least this often; a card that disagrees gets a reply saying
# what was missed and its parent is corrected.
# reconcile_interval = "60s"

# supervisord's XML-RPC, for crash context (exit status, spawn error, stderr tail)
# and reconcile.
# Default: SUPERVISOR_SERVER_URL, which supervisord gives its listeners; this
# setting wins over it.
# supervisor_server_url = "unix:///var/run/supervisor.sock"
# The username/password of [unix_http_server] (or [inet_http_server]), when set there:
# supervisord does not pass them to its listeners. Prefer the password file (chmod 600).
# supervisor_username = "slack"
# supervisor_password_file = "/etc/supervisor-slack/supervisor-password"
# supervisor_password = "..."

# A fleet (optional): many hosts sharing one PostgreSQL database, so that they share
# the channel's rate budget (no host trips a 429 another one earned), one board for
# the fleet (silent hosts named), the thread map, mutes and the click audit. Each
# host keeps its own outbox here: supervisord is answered whether the database is up
# or not. The connection string holds a password: prefer the file (chmod 600).
# Env: SUPERVISOR_SLACK_FLEET_URL. Never a command-line argument.
# fleet_url_file = "/etc/supervisor-slack/fleet-url"
# fleet_url = "postgresql://slack:PASSWORD@db.internal:5432/supervisor_slack"
# Several fleets may share one database: each its own name.
# fleet_name = "default"
# How often a host tells the fleet it is alive (with its process table), and how long
# it may be quiet before the fleet's board calls it silent.
# heartbeat = "30s"
# silent_after = "90s"
# "program" (the default in a fleet): one card per program across the fleet, which
# counts and names the hosts it fails on, each host's changes in its thread, the
# first failure told to the channel once for the whole fleet. "host": a card per
# program and host, as without a fleet.
# thread_by = "program"
# How many hosts of the fleet hold the Slack app's Socket Mode connections (1 to 10:
# Slack allows an app 10); the others open none, and clicks and /supervisor reach
# them through the fleet's database.
# socket_connections = 2

# For events that match no [[route]] below:
# States not reported at all.
# skip = ["STARTING"]
# "always", or "after_failure": RUNNING only when the process was failing before
# this start (BACKOFF, EXITED, FATAL, UNKNOWN) — a recovery.
# running = "always"
# Mentions added to FATAL and unexpected EXITED cards: <@U012AB3CD> (a person),
# <!subteam^S012AB3CD> (a user group), <!here>, <!channel>.
# mentions = ["<!here>"]

# Routing rules, in order: the first whose group AND process patterns match an event
# decides where it goes. Patterns are globs: * ? [abc] {a,b}; a missing pattern
# matches everything. Keys: group, process, channel (default: the default channel;
# an empty "" drops the events), drop (true drops them), skip, running and mentions
# (as above).
#
# [[route]]
# group = "worker-*"
# channel = "#ops-workers"
# skip = ["STARTING", "STOPPING"]
# running = "after_failure"
# mentions = ["<!subteam^S012AB3CD>"]
#
# [[route]]
# process = "{cron,backup}-*"
# drop = true

# Acting from the card (optional): Restart, Start, Stop, Show stderr and Mute
# buttons, clicked in Slack and received over Socket Mode (an outgoing WebSocket: no
# public URL). Needs an app-level token (xapp-..., scope connections:write, Socket
# Mode and Interactivity on), from SLACK_APP_TOKEN_FILE, SLACK_APP_TOKEN or
# app_token_file (at the top of this file).
# Nobody allowed, no buttons. Hosts sharing one Slack app need a fleet (fleet_url,
# above): Slack hands a click to any connection of the app, and the fleet routes it
# to the host that owns the process (without a fleet, a host runs only its own
# cards' buttons).
#
# The same connection answers the slash command /supervisor (add it to the app with
# the scope commands): status [pattern], tail <process> [host] [n] [--stdout],
# why <process> [host], help. Only the asker sees the answer. "status", "tail" and
# "why" in `allowed` switch them on (an `allowed` list without them switches them
# off). open_to_channel: the ones anyone may ask in a channel this listener posts
# to; the others only allow_users / allow_groups (tail and why show log lines,
# which can hold secrets). Every tail is logged with the user id.
#
# [actions]
# allow_users = ["U012AB3CD"]        # member ids
# allow_groups = ["S012AB3CD"]       # user groups (scope usergroups:read)
# allowed = ["restart", "start", "stop", "stderr", "mute", "status", "tail", "why"]
# open_to_channel = ["status"]
# mute_for = "1h"
# stderr_lines = 20                  # Show stderr, and tail's n at most
# timeout = "30s"                    # longest an action may take with supervisord
# connections = 1                    # Socket Mode connections (10 per app in all)
"##;
