//! Where `/supervisor`'s answers come from, and how a name typed in Slack becomes one
//! process. The seam between the command and the hosts:
//!
//! - [`Source`]: every process a listener can tell about ([`Row`]s, one per process
//!   and host, with whether the host is silent), and a [`Question`] put to one host
//!   ([`Answer`], or why that host cannot answer: [`Unreachable`]). One host answers
//!   from its own supervisord and shared state ([`super::local::LocalSource`]); a
//!   fleet answers from the fleet store and routes questions to the owner host
//!   through its action queue. Questions and answers are plain serializable values
//!   so that a queue can carry them.
//! - [`select`] and [`pick`]: pure functions over whatever rows a source returns — a
//!   pattern's matches in the order `status` lists them (failing first), and the one
//!   process a name means, or the candidates when it means several.
//!
//! # A fleet's source
//! What a fleet implements to answer for every host (the command needs no change):
//! - `processes`: every host's last process table from its heartbeat — a
//!   `Vec<Row>` as [`super::local::LocalSource::processes`] returns it on that host
//!   (rows serialize) — with `silent = Some(last_seen)` for a host whose heartbeat is
//!   older than the fleet's silence bound.
//! - `ask(host, question)`: for this host, [`super::local::LocalSource::ask`]; for
//!   another, `Err(Unreachable::Silent(..))` at once when it is silent, else a row
//!   in the action queue (the [`Question`] as JSON, owner `host`, expiring after
//!   `[actions] timeout`), woken with NOTIFY; the owner answers it with its own
//!   `LocalSource::ask` and writes the [`Answer`] as JSON; no answer in time is
//!   `Err(Unreachable::NoAnswer(timeout))`. `why` may skip the queue: the last crash
//!   is in the shared state ([`crate::store::SharedState::last_crash`]).
//! - `app::asker` passes that source instead of the local one. The slower answers
//!   reach the asker through the command's `response_url` by themselves.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::CrashRecord;
use crate::supervisord::event::{failing, State, ThreadKey};

/// One process of one host, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub host: String,
    pub group: String,
    pub process: String,
    pub state: State,
    /// supervisord's judgement of an EXITED (`None`: not known).
    pub expected: Option<bool>,
    /// When the process entered its state (`None`: never started).
    pub since: Option<DateTime<Utc>>,
    /// The pid while it runs.
    pub pid: Option<u32>,
    /// supervisord's spawn error, if any ("Exited too quickly …").
    pub spawnerr: Option<String>,
    /// `Some(last heard of)`: the host is silent, and the row is as it last reported
    /// it (a fleet's heartbeats); `None`: the host answers.
    pub silent: Option<Option<DateTime<Utc>>>,
}

impl Row {
    pub fn key(&self) -> ThreadKey {
        ThreadKey {
            host: self.host.clone(),
            group: self.group.clone(),
            process: self.process.clone(),
        }
    }

    /// `group:process`, as supervisord names it.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.group, self.process)
    }

    /// The process as cards name it (`process` alone when the group has its name).
    pub fn display_name(&self) -> String {
        self.key().display_name()
    }

    pub fn is_failing(&self) -> bool {
        failing(self.state, self.expected)
    }
}

/// A question put to one host about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// The last `lines` lines of stderr, or of stdout when `stdout`.
    Tail { key: ThreadKey, stdout: bool, lines: usize },
    /// The last crash recorded.
    Why { key: ThreadKey },
}

impl Question {
    pub fn key(&self) -> &ThreadKey {
        match self {
            Question::Tail { key, .. } | Question::Why { key } => key,
        }
    }
}

/// A host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// `log`: which log was read (`stderr`, or `stdout` with why); `lines`: its last
    /// lines (`None`: the log is empty), or why they cannot be read.
    Tail { log: String, lines: Result<Option<String>, String> },
    /// The last crash recorded (`None`: none).
    Why(Option<CrashRecord>),
}

/// Why a host gives no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unreachable {
    /// The host has not been heard from since then (`None`: never): nothing is
    /// asked of it rather than wait.
    Silent(Option<DateTime<Utc>>),
    /// Asked, and no answer within this bound.
    NoAnswer(Duration),
    /// This listener has no way to ask that host (one host, no fleet).
    NotHere { here: String },
    /// The host was reached but could not answer (its supervisord, its disk).
    Failed(String),
}

/// Where answers come from: one host's, or a fleet's.
#[async_trait]
pub trait Source: Send + Sync {
    /// Every process of every host this source knows (a silent host's as it last
    /// reported them). `Err`: none can be listed, and why.
    async fn processes(&self) -> Result<Vec<Row>, String>;

    /// Puts `question` to `host` (the owner of the process), bounded in time.
    async fn ask(&self, host: &str, question: Question) -> Result<Answer, Unreachable>;
}

/// A `status` pattern that is not a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern(pub String);

/// The rows `pattern` matches (a glob on `group:process`, the process name or the
/// host; `None`: all), failing first, then by host and name.
pub fn select<'a>(rows: &'a [Row], pattern: Option<&str>) -> Result<Vec<&'a Row>, BadPattern> {
    let glob = match pattern {
        None => None,
        Some(p) => Some(
            globset::GlobBuilder::new(p)
                .literal_separator(false)
                .build()
                .map_err(|e| BadPattern(e.kind().to_string()))?
                .compile_matcher(),
        ),
    };
    let mut out: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            glob.as_ref().is_none_or(|g| {
                g.is_match(r.full_name()) || g.is_match(&r.process) || g.is_match(&r.host)
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (!a.is_failing(), &a.host, a.full_name()).cmp(&(!b.is_failing(), &b.host, b.full_name()))
    });
    Ok(out)
}

/// What a typed name (and host) means among the rows.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Exactly one process.
    One(&'a Row),
    /// Several: the candidates, to pick one from by host or full name.
    Several(Vec<&'a Row>),
    /// No process of that name (on that host); `similar`: names that contain it.
    NoProcess { similar: Vec<&'a Row> },
    /// No such host among the rows; `hosts`: those there are.
    NoHost { hosts: Vec<String> },
}

/// Whether `name` names `row`: `group:process`, or the process name.
fn names(row: &Row, name: &str) -> bool {
    row.full_name() == name || row.process == name
}

/// The process `name` (on `host`, when given) means among `rows`.
pub fn pick<'a>(rows: &'a [Row], name: &str, host: Option<&str>) -> Pick<'a> {
    let on_host: Vec<&Row> = match host {
        Some(h) => {
            let on: Vec<&Row> = rows.iter().filter(|r| r.host == h).collect();
            if on.is_empty() {
                let mut hosts: Vec<String> = rows.iter().map(|r| r.host.clone()).collect();
                hosts.sort();
                hosts.dedup();
                return Pick::NoHost { hosts };
            }
            on
        }
        None => rows.iter().collect(),
    };
    let mut found: Vec<&Row> = on_host.iter().copied().filter(|r| names(r, name)).collect();
    found.sort_by(|a, b| (&a.host, a.full_name()).cmp(&(&b.host, b.full_name())));
    match found.len() {
        1 => Pick::One(found[0]),
        0 => {
            let lower = name.to_lowercase();
            let similar = on_host
                .into_iter()
                .filter(|r| !lower.is_empty() && r.full_name().to_lowercase().contains(&lower))
                .take(5)
                .collect();
            Pick::NoProcess { similar }
        }
        _ => Pick::Several(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, group: &str, process: &str, state: State) -> Row {
        Row {
            host: host.into(),
            group: group.into(),
            process: process.into(),
            state,
            expected: None,
            since: None,
            pid: None,
            spawnerr: None,
            silent: None,
        }
    }

    /// Two hosts' rows, as a fleet's source returns them.
    fn fleet() -> Vec<Row> {
        vec![
            row("web-1", "web", "web", State::Running),
            row("web-1", "app", "worker", State::Running),
            row("web-2", "app", "worker", State::Fatal),
            row("web-2", "api", "api", State::Backoff),
            row("web-2", "reports", "reports", State::Exited),
        ]
    }

    fn names_of(rows: &[&Row]) -> Vec<String> {
        rows.iter().map(|r| format!("{} {}", r.host, r.full_name())).collect()
    }

    #[test]
    fn status_lists_failing_first_then_by_host_and_name() {
        let rows = fleet();
        let all = select(&rows, None).unwrap();
        assert_eq!(
            names_of(&all),
            [
                "web-2 api:api",
                "web-2 app:worker",
                "web-2 reports:reports",
                "web-1 app:worker",
                "web-1 web:web"
            ]
        );
    }

    #[test]
    fn a_pattern_is_a_glob_on_the_full_name_the_process_or_the_host() {
        let rows = fleet();
        assert_eq!(names_of(&select(&rows, Some("app:*")).unwrap()), ["web-2 app:worker", "web-1 app:worker"]);
        assert_eq!(names_of(&select(&rows, Some("work*")).unwrap()), ["web-2 app:worker", "web-1 app:worker"]);
        assert_eq!(select(&rows, Some("web-1")).unwrap().len(), 2);
        assert!(select(&rows, Some("nothing")).unwrap().is_empty());
        let bad = select(&rows, Some("[web")).unwrap_err();
        assert!(bad.0.contains("unclosed"), "{bad:?}");
    }

    #[test]
    fn a_name_on_two_hosts_is_ambiguous_until_a_host_is_given() {
        let rows = fleet();
        match pick(&rows, "worker", None) {
            Pick::Several(c) => assert_eq!(names_of(&c), ["web-1 app:worker", "web-2 app:worker"]),
            other => panic!("{other:?}"),
        }
        match pick(&rows, "worker", Some("web-2")) {
            Pick::One(r) => assert_eq!((r.host.as_str(), r.state), ("web-2", State::Fatal)),
            other => panic!("{other:?}"),
        }
        // The full name works too, and a name on one host only needs no host.
        assert!(matches!(pick(&rows, "app:worker", Some("web-1")), Pick::One(_)));
        assert!(matches!(pick(&rows, "reports", None), Pick::One(r) if r.host == "web-2"));
    }

    #[test]
    fn an_unknown_name_or_host_says_what_there_is() {
        let rows = fleet();
        match pick(&rows, "work", None) {
            Pick::NoProcess { similar } => assert_eq!(similar.len(), 2),
            other => panic!("{other:?}"),
        }
        match pick(&rows, "worker", Some("web-9")) {
            Pick::NoHost { hosts } => assert_eq!(hosts, ["web-1", "web-2"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pick(&rows, "api", Some("web-1")), Pick::NoProcess { .. }));
    }

    #[test]
    fn questions_and_answers_survive_a_queue() {
        let q = Question::Tail {
            key: row("web-2", "app", "worker", State::Fatal).key(),
            stdout: false,
            lines: 20,
        };
        let back: Question = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
        assert_eq!(back, q);
        let a = Answer::Tail { log: "stderr".into(), lines: Err("no file".into()) };
        let back: Answer = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
