//! Typed events, parsed from the tokens of a [`RawEvent`]. Knows nothing about wire
//! bytes or Slack.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::supervisord::protocol::RawEvent;

/// A supervisord process state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    Unknown,
    /// Not a supervisord state: the process is no longer in supervisord's
    /// configuration (its group was removed). Set by reconcile, never sent by
    /// supervisord.
    Removed,
}

impl State {
    /// The states supervisord reports (everything but [`State::Removed`]).
    pub const ALL: [State; 8] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Exited,
        State::Fatal,
        State::Unknown,
    ];

    /// The name supervisord uses: `RUNNING`, `BACKOFF`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
            State::Unknown => "UNKNOWN",
            State::Removed => "REMOVED",
        }
    }

    /// [`failing`] for a state alone, when nobody knows whether an exit was expected:
    /// EXITED counts (the process stopped without being asked). A RUNNING after one
    /// of these is a recovery.
    pub fn is_failing(self) -> bool {
        failing(self, None)
    }
}

/// The one answer to "is this process failing?", which every room asks here (crash
/// context, broadcasts and mentions, the buttons on a reply, the board's order,
/// reconcile's unseen processes, recoveries): BACKOFF, FATAL and UNKNOWN always;
/// EXITED unless the exit is known to be expected (`expected`: supervisord's own
/// judgement against `exitcodes`, `None` when nobody knows).
pub fn failing(state: State, expected: Option<bool>) -> bool {
    match state {
        State::Backoff | State::Fatal | State::Unknown => true,
        State::Exited => expected != Some(true),
        _ => false,
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, EventError> {
        State::ALL
            .into_iter()
            .chain([State::Removed])
            .find(|st| st.as_str() == s)
            .ok_or_else(|| EventError::UnknownState(s.to_string()))
    }
}

/// A `PROCESS_STATE_*` event: one transition of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// The host label (from the settings, else the machine's hostname). Not sent by
    /// supervisord; part of the thread key.
    pub host: String,
    /// supervisord's `server` identifier (its `identifier=` setting).
    pub server: String,
    pub serial: u64,
    pub pool: String,
    pub poolserial: u64,
    pub group: String,
    pub process: String,
    pub from: State,
    pub to: State,
    pub pid: Option<u32>,
    pub tries: Option<u32>,
    /// For EXITED: whether the exit code was one of `exitcodes`.
    pub expected: Option<bool>,
    /// When the listener received the event.
    pub at: DateTime<Utc>,
    /// Payload tokens this version does not know, kept as sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(String, String)>,
    /// Set on a transition that reconcile found rather than supervisord sent: the
    /// channel showed `from`, supervisord reports `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled: Option<Reconciled>,
}

/// What reconcile knew when it found that a card disagreed with supervisord.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    /// Why reconcile ran: `start`, `gap`, `supervisord started`, `timer`,
    /// `group removed`, `group added`.
    pub why: String,
    /// Since when supervisord reports `to` (its start or stop time), when it says.
    pub since: Option<DateTime<Utc>>,
    /// Events supervisord dropped (its buffer overflowed) since the last reconcile,
    /// when the serials tell: they may have been about this process.
    pub dropped: Option<u64>,
    /// supervisord's description of the process (`pid 42, uptime 0:01:02`,
    /// `Exited too quickly`).
    #[serde(default)]
    pub description: String,
    /// The channel had never shown this process: it is failing at reconcile time.
    #[serde(default)]
    pub first_seen: bool,
}

/// The group name of supervisord's own thread on a host (supervisord's group names
/// are never empty).
pub const SUPERVISORD_GROUP: &str = "";
/// The process name of supervisord's own thread on a host.
pub const SUPERVISORD_PROCESS: &str = "supervisord";

impl ProcessState {
    /// `group:process`, as supervisorctl names it (just `process` when they match,
    /// `supervisord` for supervisord's own thread).
    pub fn display_name(&self) -> String {
        if self.group == self.process || self.is_supervisord() {
            self.process.clone()
        } else {
            format!("{}:{}", self.group, self.process)
        }
    }

    /// Whether this is a change of supervisord itself (`SUPERVISOR_STATE_CHANGE_*`),
    /// kept in the host's supervisord thread.
    pub fn is_supervisord(&self) -> bool {
        self.group == SUPERVISORD_GROUP && self.process == SUPERVISORD_PROCESS
    }

    /// Whether the process is [`failing`] after this event. These are the events
    /// whose cards carry crash context (exit status, spawn error, stderr tail).
    pub fn is_failing(&self) -> bool {
        failing(self.to, self.expected)
    }

    /// A failure a person should hear about (a broadcast, the route's mentions, the
    /// buttons on a reply): the process is [`failing`] and down — FATAL, or EXITED —
    /// rather than still being retried (BACKOFF).
    pub fn is_failure(&self) -> bool {
        self.is_failing() && matches!(self.to, State::Fatal | State::Exited)
    }
}

/// Any other event, kept in a generic form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEvent {
    pub name: String,
    pub header: Vec<(String, String)>,
    /// Tokens of the payload's first line, when it is made of `key:value` tokens.
    pub tokens: Vec<(String, String)>,
    /// The payload after the first line (log data, communication data).
    pub data: String,
}

/// A `PROCESS_GROUP_ADDED` / `PROCESS_GROUP_REMOVED` event (`supervisorctl update`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub group: String,
    pub added: bool,
}

impl OtherEvent {
    fn token(&self, key: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `SUPERVISOR_STATE_CHANGE_RUNNING` / `_STOPPING`: supervisord's new state.
    pub fn supervisor_state(&self) -> Option<State> {
        match self.name.as_str() {
            "SUPERVISOR_STATE_CHANGE_RUNNING" => Some(State::Running),
            "SUPERVISOR_STATE_CHANGE_STOPPING" => Some(State::Stopping),
            _ => None,
        }
    }

    /// `PROCESS_GROUP_ADDED` / `_REMOVED` with its `groupname`.
    pub fn group_change(&self) -> Option<GroupChange> {
        let added = match self.name.as_str() {
            "PROCESS_GROUP_ADDED" => true,
            "PROCESS_GROUP_REMOVED" => false,
            _ => return None,
        };
        let group = self.token("groupname")?.to_string();
        Some(GroupChange { group, added })
    }

    /// The serial supervisord gave this event (0 when missing).
    pub fn serial(&self) -> u64 {
        self.header
            .iter()
            .find(|(k, _)| k == "serial")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ProcessState(ProcessState),
    Other(OtherEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("unknown process state {0:?}")]
    UnknownState(String),
    #[error("{event} payload lacks the `{token}` token")]
    MissingToken { event: String, token: &'static str },
    #[error("{event} payload has a bad `{token}` value {value:?}")]
    BadToken {
        event: String,
        token: &'static str,
        value: String,
    },
}

/// Splits `k:v k:v` into tokens; `None` when any token lacks a colon.
pub fn tokens(line: &str) -> Option<Vec<(String, String)>> {
    line.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

const PROCESS_STATE_PREFIX: &str = "PROCESS_STATE_";

/// Types a raw event. `host` is the host label; `at` the time it was received.
pub fn parse(raw: &RawEvent, host: &str, at: DateTime<Utc>) -> Result<Event, EventError> {
    let name = raw.header.event_name().to_string();
    let Some(state_name) = name.strip_prefix(PROCESS_STATE_PREFIX) else {
        let (first, data) = match raw.payload.split_once('\n') {
            Some((f, d)) => (f, d),
            None => (raw.payload.as_str(), ""),
        };
        let (toks, data) = match tokens(first) {
            Some(t) => (t, data.to_string()),
            None => (Vec::new(), raw.payload.clone()),
        };
        return Ok(Event::Other(OtherEvent {
            name,
            header: raw.header.tokens.clone(),
            tokens: toks,
            data,
        }));
    };
    let to: State = state_name.parse()?;
    let payload_line = raw.payload.lines().next().unwrap_or("");
    let toks = tokens(payload_line).unwrap_or_default();
    let get = |key: &'static str| -> Option<&str> {
        toks.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    };
    let need = |key: &'static str| -> Result<String, EventError> {
        get(key)
            .map(str::to_string)
            .ok_or_else(|| EventError::MissingToken {
                event: name.clone(),
                token: key,
            })
    };
    fn num<T: FromStr>(
        event: &str,
        key: &'static str,
        v: Option<&str>,
    ) -> Result<Option<T>, EventError> {
        v.map(|v| {
            v.parse().map_err(|_| EventError::BadToken {
                event: event.to_string(),
                token: key,
                value: v.to_string(),
            })
        })
        .transpose()
    }
    let header_num = |key: &'static str| -> Result<u64, EventError> {
        Ok(num(&name, key, raw.header.get(key))?.unwrap_or(0))
    };
    let expected = match get("expected") {
        None => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(v) => {
            return Err(EventError::BadToken {
                event: name.clone(),
                token: "expected",
                value: v.to_string(),
            })
        }
    };
    const KNOWN: [&str; 6] = [
        "processname",
        "groupname",
        "from_state",
        "pid",
        "tries",
        "expected",
    ];
    Ok(Event::ProcessState(ProcessState {
        host: host.to_string(),
        server: raw.header.get("server").unwrap_or("").to_string(),
        serial: header_num("serial")?,
        pool: raw.header.get("pool").unwrap_or("").to_string(),
        poolserial: header_num("poolserial")?,
        process: need("processname")?,
        group: need("groupname")?,
        from: need("from_state")?.parse()?,
        to,
        pid: num(&name, "pid", get("pid"))?,
        tries: num(&name, "tries", get("tries"))?,
        expected,
        at,
        extra: toks
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .cloned()
            .collect(),
        reconciled: None,
    }))
}

/// The identity of a thread: one parent message per (host, group, process).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ThreadKey {
    pub host: String,
    pub group: String,
    pub process: String,
}

impl ThreadKey {
    /// The process as cards name it: `process` alone when the group has its name
    /// (or for supervisord itself), else `group:process`.
    pub fn display_name(&self) -> String {
        if self.group == self.process || self.group.is_empty() {
            self.process.clone()
        } else {
            format!("{}:{}", self.group, self.process)
        }
    }

    /// The key of a program's card across a fleet: no host (`""`).
    pub fn fleet(group: &str, process: &str) -> ThreadKey {
        ThreadKey {
            host: String::new(),
            group: group.to_string(),
            process: process.to_string(),
        }
    }

    /// Whether this is a program's card across a fleet ([`ThreadKey::fleet`]).
    pub fn is_fleet(&self) -> bool {
        self.host.is_empty()
    }

    /// Whether this is the host's supervisord thread (its own start and stop).
    pub fn is_supervisord(&self) -> bool {
        self.group == SUPERVISORD_GROUP && self.process == SUPERVISORD_PROCESS
    }

    /// The process as supervisord's XML-RPC names it: `group:process`.
    pub fn xmlrpc_name(&self) -> String {
        format!("{}:{}", self.group, self.process)
    }
}

impl ProcessState {
    pub fn thread_key(&self) -> ThreadKey {
        ThreadKey {
            host: self.host.clone(),
            group: self.group.clone(),
            process: self.process.clone(),
        }
    }
}

impl fmt::Display for ThreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.host, self.group, self.process)
    }
}
