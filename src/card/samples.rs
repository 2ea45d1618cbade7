//! Sample events for checking templates (`check`) and previewing cards: every state,
//! a crash with context, and hostile or huge text that a template must escape and fit.

use chrono::{DateTime, TimeZone, Utc};

use super::{CrashContext, ParentInput, ReplyInput};
use crate::supervisord::event::{ProcessState, State};

/// Untrusted strings put into the hostile sample; none may appear unescaped in mrkdwn.
pub const HOSTILE: [&str; 4] = [
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<http://evil.example|click>",
];

/// One sample thread: its events and everything the two cards need.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What this sample exercises, for reports.
    pub label: String,
    pub events: Vec<ProcessState>,
    pub history: Vec<State>,
    pub since: DateTime<Utc>,
    pub environment: Option<String>,
    pub flapping: bool,
    pub notes: Vec<String>,
    pub context: Option<CrashContext>,
    pub mentions: Vec<String>,
}

impl Sample {
    /// The parent card's input (the latest event).
    pub fn parent(&self) -> ParentInput<'_> {
        ParentInput {
            latest: self.events.last().expect("samples have events"),
            history: &self.history,
            since: self.since,
            environment: self.environment.as_deref(),
            flapping: self.flapping,
        }
    }

    /// The reply card's input (all events, coalesced).
    pub fn reply(&self) -> ReplyInput<'_> {
        ReplyInput {
            events: &self.events,
            environment: self.environment.as_deref(),
            notes: &self.notes,
            context: self.context.as_ref(),
            mentions: &self.mentions,
        }
    }
}

/// A fixed time, so that sample cards are the same on every run.
pub fn fixed_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 14, 3, 5).unwrap()
}

/// One event of `group:process` on `host`, `secs` after [`fixed_time`].
pub fn event(
    host: &str,
    group: &str,
    process: &str,
    from: State,
    to: State,
    secs: i64,
) -> ProcessState {
    ProcessState {
        host: host.to_string(),
        server: "supervisor".to_string(),
        serial: secs.max(0) as u64,
        pool: "slack".to_string(),
        poolserial: secs.max(0) as u64,
        group: group.to_string(),
        process: process.to_string(),
        from,
        to,
        pid: matches!(to, State::Running | State::Stopping | State::Exited).then_some(4242),
        tries: matches!(to, State::Starting | State::Backoff).then_some(2),
        expected: (to == State::Exited).then_some(false),
        at: fixed_time() + chrono::Duration::seconds(secs),
        extra: Vec::new(),
        reconciled: None,
    }
}

/// A plausible previous state for each state.
pub fn from_state(to: State) -> State {
    match to {
        State::Starting => State::Stopped,
        State::Running => State::Starting,
        State::Backoff => State::Starting,
        State::Stopping => State::Running,
        State::Stopped => State::Stopping,
        State::Exited => State::Running,
        State::Fatal => State::Backoff,
        State::Unknown => State::Running,
        State::Removed => State::Stopped,
    }
}

fn simple(label: &str, to: State) -> Sample {
    let from = from_state(to);
    Sample {
        label: label.to_string(),
        events: vec![event("web-1", "api", "api_0", from, to, 0)],
        history: vec![State::Starting, State::Running, from, to],
        since: fixed_time() - chrono::Duration::hours(2),
        environment: Some("prod".into()),
        flapping: false,
        notes: Vec::new(),
        context: None,
        mentions: Vec::new(),
    }
}

/// Every sample: one per state, a crash loop with context, and a hostile, huge one.
pub fn all() -> Vec<Sample> {
    let mut out: Vec<Sample> = State::ALL
        .iter()
        .map(|s| simple(&format!("{s}"), *s))
        .collect();

    let mut crash = simple("crash loop with context", State::Fatal);
    crash.events = vec![
        event("web-1", "api", "api_0", State::Running, State::Exited, 0),
        event("web-1", "api", "api_0", State::Exited, State::Starting, 1),
        event("web-1", "api", "api_0", State::Starting, State::Backoff, 2),
        event("web-1", "api", "api_0", State::Backoff, State::Starting, 3),
        event("web-1", "api", "api_0", State::Starting, State::Fatal, 4),
    ];
    crash.flapping = true;
    crash.notes = vec!["3 events dropped by supervisord".into()];
    crash.mentions = vec!["<!subteam^S0123>".into()];
    crash.context = Some(CrashContext {
        exit_status: Some(1),
        spawn_error: Some("can't find command 'gunicorn'".into()),
        uptime_secs: Some(125),
        log_tail: Some(
            "Traceback (most recent call last):\n  File \"app.py\", line 3\nValueError: bad config"
                .into(),
        ),
        log_name: Some("stderr".into()),
        unavailable: None,
    });
    out.push(crash);

    let hostile = HOSTILE.join(" ");
    let mut evil = simple("hostile and huge text", State::Exited);
    let long = format!("{hostile} &amp; *bold* 🔥 שלום {}", "x".repeat(1000));
    evil.events = vec![
        event(
            &long,
            &format!("g{hostile}"),
            &long,
            State::Running,
            State::Exited,
            0
        );
        40
    ];
    evil.history = [State::Starting, State::Backoff].repeat(200);
    evil.environment = Some(hostile.clone());
    evil.notes = vec![format!("note {hostile}"); 30];
    evil.context = Some(CrashContext {
        exit_status: Some(-11),
        spawn_error: Some(hostile.clone()),
        uptime_secs: Some(1),
        log_tail: Some(format!("{hostile}\n```\n").repeat(500)),
        log_name: Some(hostile.clone()),
        unavailable: Some(hostile),
    });
    out.push(evil);
    out
}
