//! The template context: every value a card template can show, already escaped for
//! mrkdwn and already cut to a budget, so that any layout of them stays within Slack's
//! limits and a template cannot forget to escape. Raw text for `plain_text` (the header)
//! lives apart, under `plain`. `templates/README.md` documents every key.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::text::{
    cost, fit_escaped, fit_escaped_tail, fit_plain, sanitize_line, sanitize_log, ELLIPSIS,
};
use super::history::{compact_history, digest_summary, run_text, trail};
pub use super::history::{Run, TRAIL_RUNS_MAX};
use super::{color, emoji, CrashContext, ParentInput, ReplyInput};
use crate::supervisord::event::{ProcessState, State};

// Budgets, in cost units (see `text`). Together they keep the built-in cards under
// CARD_BUDGET whatever the input; the proptest in tests/card_limits.rs holds them to it.
const HOST_MAX: usize = 120;
const ENV_MAX: usize = 40;
const NAME_PART_MAX: usize = 200;
const HEADER_NAME_MAX: usize = 80;
const HEADER_HOST_MAX: usize = 40;
const TEXT_HOST_MAX: usize = 60;
const TEXT_NAME_MAX: usize = 100;
const TRANSITIONS_MAX: usize = 1800;
const LOG_MAX: usize = 2000;
const SPAWN_ERROR_MAX: usize = 300;
const UNAVAILABLE_MAX: usize = 300;
const LOG_NAME_MAX: usize = 20;
const NOTE_MAX: usize = 300;
const NOTES_MAX: usize = 1000;
const MENTIONS_MAX: usize = 500;

pub use super::when::When;

/// Raw (unescaped, but sanitised and cut) text, for `plain_text` objects only.
#[derive(Debug, Clone, Serialize)]
pub struct Plain {
    pub host: String,
    pub environment: Option<String>,
    pub group: String,
    pub process: String,
    pub name: String,
    /// The built-in header: `🔴 api:api_0 FATAL on web-1`, at most 150 characters.
    pub header: String,
}

/// What both cards share: the latest event of the thread.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    /// `parent` or `reply`.
    pub variant: &'static str,
    pub host: String,
    pub environment: Option<String>,
    pub group: String,
    pub process: String,
    /// `group:process`, or `process` when they are the same.
    pub name: String,
    pub pid: Option<u32>,
    pub from: &'static str,
    pub to: &'static str,
    pub tries: Option<u32>,
    pub expected: Option<bool>,
    /// `RUNNING → FATAL`
    pub transition: String,
    pub color: &'static str,
    pub emoji: &'static str,
    /// The notification text (escaped), also the card's top-level `text`.
    pub text: String,
    pub at: When,
    pub plain: Plain,
}

/// The parent card's context.
#[derive(Debug, Clone, Serialize)]
pub struct ParentContext {
    #[serde(flatten)]
    pub common: Common,
    /// `STARTING → RUNNING → (STARTING → BACKOFF) ×3 → FATAL`, most recent part only.
    pub trail: String,
    /// The runs shown in `trail`.
    pub history: Vec<Run>,
    /// Whether older runs were left out of `trail` (it then starts with `… →`).
    pub history_cut: bool,
    /// How many states the thread has seen.
    pub history_len: usize,
    pub since: When,
    pub flapping: bool,
}

/// One transition of a reply card.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    pub from: &'static str,
    pub to: &'static str,
    pub emoji: &'static str,
    pub pid: Option<u32>,
    pub tries: Option<u32>,
    pub expected: Option<bool>,
    pub at: When,
    /// The built-in line: `• 14:03:05 RUNNING → EXITED · pid 42 · unexpected`.
    pub line: String,
}

/// The crash context, escaped and cut.
#[derive(Debug, Clone, Serialize)]
pub struct Crash {
    pub exit_status: Option<i64>,
    pub spawn_error: Option<String>,
    pub uptime_secs: Option<i64>,
    /// `2m 05s`
    pub uptime: Option<String>,
    /// The END of the log, escaped, cut to fit, backtick runs defused; `None` when empty.
    pub log_tail: Option<String>,
    pub log_name: String,
    pub unavailable: Option<String>,
}

/// The reply card's context.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyContext {
    #[serde(flatten)]
    pub common: Common,
    /// The transitions shown, oldest first.
    pub events: Vec<EventLine>,
    /// How many transitions the reply stands for.
    pub events_total: usize,
    /// How many were left out of `events` (shown as `… and N more`).
    pub events_more: usize,
    /// The lines of `events` joined by newlines, plus `… and N more` when cut.
    pub transitions: String,
    /// For more than three changes: when they happened and how many were crashes
    /// (`14:03:05 – 14:05:10 · 6 crashes: 5 unexpected exits, 1 failed start`); "".
    pub digest: String,
    pub notes: Vec<String>,
    pub crash: Option<Crash>,
    /// The operator's mentions, NOT escaped, joined by spaces ("" when none).
    pub mentions: String,
}

fn esc_line(raw: &str, max: usize) -> String {
    fit_escaped(&sanitize_line(raw), max)
}

fn transition(from: State, to: State) -> String {
    format!("{from} → {to}")
}

/// `45s`, `3m 05s`, `2h 03m`, `3d 4h`.
pub fn format_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The notification text: `🔴 web-1 (prod) · api:api_0 RUNNING → FATAL`, escaped,
/// short (host and name cut), readable on a phone's lock screen.
pub fn notification_text(ev: &ProcessState, environment: Option<&str>, from: State) -> String {
    notification_text_with(ev, environment, &transition(from, ev.to))
}

/// What a reply of several changes is titled with: the whole sequence when it is
/// short (`STARTING → RUNNING → EXITED`), else its first and last state with the
/// count (`RUNNING → … → FATAL (5 changes)`) — never a transition that did not happen.
pub fn changes_title(events: &[ProcessState]) -> String {
    let Some(first) = events.first() else {
        return String::new();
    };
    if events.len() == 1 {
        return transition(first.from, first.to);
    }
    if events.len() <= 3 {
        let mut states = vec![first.from.as_str()];
        states.extend(events.iter().map(|e| e.to.as_str()));
        return states.join(" → ");
    }
    let last = events.last().expect("not empty");
    format!("{} → {ELLIPSIS} → {} ({} changes)", first.from, last.to, events.len())
}

/// [`notification_text`] with the transition part given.
pub fn notification_text_with(ev: &ProcessState, environment: Option<&str>, transition: &str) -> String {
    let env = environment
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!(" ({})", esc_line(e, 20)))
        .unwrap_or_default();
    format!(
        "{} {}{env} · {} {}",
        emoji(ev.to, ev.expected),
        esc_line(&ev.host, TEXT_HOST_MAX),
        esc_line(&ev.display_name(), TEXT_NAME_MAX),
        transition,
    )
}

fn common(
    variant: &'static str,
    ev: &ProcessState,
    environment: Option<&str>,
    shown_from: State,
) -> Common {
    let environment = environment.filter(|e| !e.trim().is_empty());
    let name_raw = sanitize_line(&ev.display_name());
    let host_raw = sanitize_line(&ev.host);
    let env_raw = environment.map(sanitize_line);
    let emoji = emoji(ev.to, ev.expected);

    let header = format!(
        "{emoji} {} {} on {}",
        fit_plain(&name_raw, HEADER_NAME_MAX),
        ev.to,
        fit_plain(&host_raw, HEADER_HOST_MAX)
    );
    let transition = transition(shown_from, ev.to);
    let text = notification_text(ev, environment, shown_from);
    Common {
        variant,
        host: fit_escaped(&host_raw, HOST_MAX),
        environment: env_raw.as_deref().map(|e| fit_escaped(e, ENV_MAX)),
        group: esc_line(&ev.group, NAME_PART_MAX),
        process: esc_line(&ev.process, NAME_PART_MAX),
        name: fit_escaped(&name_raw, 2 * NAME_PART_MAX),
        pid: ev.pid,
        from: shown_from.as_str(),
        to: ev.to.as_str(),
        tries: ev.tries,
        expected: ev.expected,
        transition,
        color: color(ev.to, ev.expected),
        emoji,
        text,
        at: When::new(ev.at),
        plain: Plain {
            host: fit_plain(&host_raw, HOST_MAX),
            environment: env_raw.as_deref().map(|e| fit_plain(e, ENV_MAX)),
            group: fit_plain(&sanitize_line(&ev.group), NAME_PART_MAX),
            process: fit_plain(&sanitize_line(&ev.process), NAME_PART_MAX),
            name: fit_plain(&name_raw, 2 * NAME_PART_MAX),
            header: fit_plain(&header, super::limits::HEADER_MAX),
        },
    }
}

pub fn parent_context(input: &ParentInput) -> ParentContext {
    let ev = input.latest;
    let runs = compact_history(input.history);
    let history_cut = runs.len() > TRAIL_RUNS_MAX;
    let history = runs[runs.len().saturating_sub(TRAIL_RUNS_MAX)..].to_vec();
    let trail = if input.history.is_empty() {
        ev.to.as_str().to_string()
    } else {
        trail(input.history)
    };
    ParentContext {
        common: common("parent", ev, input.environment, ev.from),
        trail,
        history,
        history_cut,
        history_len: input.history.len(),
        since: When::new(input.since),
        flapping: input.flapping,
    }
}

fn event_line(ev: &ProcessState, latest_name: &str) -> EventLine {
    let at = When::new(ev.at);
    let mut line = format!(
        "• {} {} {}",
        at.slack_time,
        emoji(ev.to, ev.expected),
        transition(ev.from, ev.to)
    );
    let name = ev.display_name();
    if name != latest_name {
        line.push_str(&format!(" · {}", esc_line(&name, 100)));
    }
    if let Some(pid) = ev.pid {
        line.push_str(&format!(" · pid {pid}"));
    }
    if matches!(ev.to, State::Starting | State::Backoff) {
        if let Some(t) = ev.tries {
            line.push_str(&format!(" · tries {t}"));
        }
    }
    if ev.to == State::Exited {
        match ev.expected {
            Some(true) => line.push_str(" · expected"),
            Some(false) => line.push_str(" · *unexpected*"),
            None => {}
        }
    }
    EventLine {
        from: ev.from.as_str(),
        to: ev.to.as_str(),
        emoji: emoji(ev.to, ev.expected),
        pid: ev.pid,
        tries: ev.tries,
        expected: ev.expected,
        at,
        line,
    }
}

fn more(n: usize) -> String {
    format!("{ELLIPSIS} and {n} more")
}

/// Keeps whole items, in order, while they fit in `max` (leaving room for the
/// `… and N more` line); returns the kept ones and how many were left out.
fn take_fitting<T>(items: Vec<T>, max: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, usize) {
    let total = items.len();
    let all: usize = items.iter().map(|i| size(i) + 2).sum();
    if all <= max {
        return (items, 0);
    }
    let room = max.saturating_sub(cost(&more(total)) + 2);
    let mut used = 0;
    let mut kept = Vec::new();
    for item in items {
        let n = size(&item) + 2;
        if used + n > room {
            break;
        }
        used += n;
        kept.push(item);
    }
    let left = total - kept.len();
    (kept, left)
}

fn crash(ctx: &CrashContext) -> Crash {
    let log_tail = ctx
        .log_tail
        .as_deref()
        .map(|l| sanitize_log(l.trim_end()))
        .filter(|l| !l.trim().is_empty())
        .map(|l| fit_escaped_tail(&l, LOG_MAX));
    Crash {
        exit_status: ctx.exit_status,
        spawn_error: ctx
            .spawn_error
            .as_deref()
            .map(|s| esc_line(s, SPAWN_ERROR_MAX)),
        uptime_secs: ctx.uptime_secs,
        uptime: ctx.uptime_secs.map(format_duration),
        log_tail,
        log_name: ctx
            .log_name
            .as_deref()
            .map(|s| esc_line(s, LOG_NAME_MAX))
            .unwrap_or_else(|| "the log".to_string()),
        unavailable: ctx
            .unavailable
            .as_deref()
            .map(|s| esc_line(s, UNAVAILABLE_MAX)),
    }
}

pub fn reply_context(input: &ReplyInput) -> ReplyContext {
    // The contract says never empty; an empty slice still must not panic.
    let latest = input
        .events
        .last()
        .cloned()
        .unwrap_or_else(placeholder_event);
    let first_from = input.events.first().map_or(latest.from, |e| e.from);
    let latest_name = latest.display_name();

    let lines: Vec<EventLine> = input
        .events
        .iter()
        .map(|e| event_line(e, &latest_name))
        .collect();
    let events_total = lines.len();
    let (events, events_more) = take_fitting(lines, TRANSITIONS_MAX, |l| cost(&l.line));
    let mut transitions = events
        .iter()
        .map(|l| l.line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if events_more > 0 {
        // Too many to list one per line (a digest of a crash loop): the run-length
        // sequence of every state still drops nothing, e.g.
        // `STARTING → (BACKOFF → STARTING) ×25 → RUNNING`.
        let mut states = vec![first_from];
        states.extend(input.events.iter().map(|e| e.to));
        let all = compact_history(&states)
            .iter()
            .map(run_text)
            .collect::<Vec<_>>()
            .join(" → ");
        if cost(&all) <= TRANSITIONS_MAX {
            transitions = all;
        } else {
            transitions.push('\n');
            transitions.push_str(&more(events_more));
        }
    }

    let digest = if events_total > 3 {
        digest_summary(input.events)
    } else {
        String::new()
    };

    let notes: Vec<String> = input.notes.iter().map(|n| esc_line(n, NOTE_MAX)).collect();
    let (mut notes, notes_more) = take_fitting(notes, NOTES_MAX, |n| cost(n));
    if notes_more > 0 {
        notes.push(more(notes_more));
    }

    // Mentions are the operator's own: never escaped, never cut in the middle (a cut
    // mention would show as garbage); whole ones beyond the budget are left out.
    let (mentions, _) = take_fitting(input.mentions.to_vec(), MENTIONS_MAX, |m| cost(m));

    let mut common = common("reply", &latest, input.environment, first_from);
    if events_total > 1 {
        let title = changes_title(input.events);
        common.text = notification_text_with(&latest, input.environment, &title);
        common.transition = title;
    }
    ReplyContext {
        common,
        events,
        events_total,
        events_more,
        transitions,
        digest,
        notes,
        crash: input.context.map(crash),
        mentions: mentions.join(" "),
    }
}

/// Stands in for the latest event of an (invalid) empty reply.
fn placeholder_event() -> ProcessState {
    ProcessState {
        host: String::new(),
        server: String::new(),
        serial: 0,
        pool: String::new(),
        poolserial: 0,
        group: "?".into(),
        process: "?".into(),
        from: State::Unknown,
        to: State::Unknown,
        pid: None,
        tries: None,
        expected: None,
        at: DateTime::<Utc>::UNIX_EPOCH,
        extra: Vec::new(),
        reconciled: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(125), "2m 05s");
        assert_eq!(format_duration(7385), "2h 03m");
        assert_eq!(format_duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(format_duration(-5), "0s");
    }

    #[test]
    fn slack_date_token_has_a_utc_fallback() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T14:03:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = When::new(at);
        assert_eq!(
            w.slack,
            format!(
                "<!date^{}^{{date_short_pretty}} {{time}}|2026-11-26 14:03:05 UTC>",
                at.timestamp()
            )
        );
    }
}
