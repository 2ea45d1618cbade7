//! `/supervisor` over Socket Mode: supervisorctl's read-only half for the people who
//! cannot log in. The command arrives as a `slash_commands` envelope on the same
//! connection as the clicks; the answer is a message only the asker sees.
//!
//! In order: what was typed is parsed ([`parse`]: `status [pattern]`,
//! `tail <process> [host] [n] [--stdout]`, `why <process> [host]`, `help`), bad input
//! answered with what was wrong and the usage; the asker must be allowed
//! ([`Asker::may`]: the subcommand switched on in `[actions] allowed`, and the asker
//! in the allow lists, or the subcommand open to the members of the listener's
//! channels and typed in one of them); the name must mean one process of the
//! [`Source`]'s rows (else the candidates, and how to pick one); then the owner host
//! is asked. Every `tail` is logged with the user id, every refusal with who and why.
//!
//! Slack wants the envelope acked within 3 s, and slack-morphism acks when the
//! callback returns, one envelope at a time per connection. So the answer is worked
//! out on a task of its own: ready within [`INLINE`], it goes in the ack; otherwise the
//! ack says "working on it" and the answer follows to the command's `response_url`,
//! bounded by `[actions] timeout`.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::prelude::*;

use super::ask::{pick, select, Answer, Pick, Question, Row, Source, Unreachable};
use super::members::Members;
use crate::actions::Ask;
use crate::card::answers::{self, StatusLine};
use crate::card::controls::refusal;
use crate::card::escape_mrkdwn;
use crate::config::ActionSettings;
use crate::slack::{Connector, SlackApi};
use crate::store::SharedState;

/// How long the ack waits for the answer: the rest of Slack's 3 s is the way there
/// and back.
pub const INLINE: Duration = Duration::from_millis(1_500);

/// What the answer may take beyond `[actions] timeout` (a user group asked of Slack).
const CHECKS: Duration = Duration::from_secs(10);

/// One `/supervisor` command, as Slack delivered it.
#[derive(Clone)]
pub struct Asked {
    /// The asker's user id (`U…`).
    pub user: String,
    pub channel_id: String,
    /// The channel's name, when Slack says (`directmessage` in a DM).
    pub channel_name: Option<String>,
    /// The command as typed (`/supervisor`, or the name the app gave it).
    pub command: String,
    /// The rest of the line.
    pub text: String,
    /// Where a later answer goes. Holds a token on Slack: never logged.
    pub response_url: String,
}

impl std::fmt::Debug for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asked")
            .field("user", &self.user)
            .field("channel_id", &self.channel_id)
            .field("command", &self.command)
            .field("text", &self.text)
            .field("response_url", &"[redacted]")
            .finish()
    }
}

impl Asked {
    pub fn from_event(ev: &SlackCommandEvent) -> Asked {
        Asked {
            user: ev.user_id.to_string(),
            channel_id: ev.channel_id.to_string(),
            channel_name: ev.channel_name.clone(),
            command: ev.command.to_string(),
            // should_escape: false still leaves &, < and > as entities.
            text: unescape(ev.text.as_deref().unwrap_or("")),
            response_url: ev.response_url.0.to_string(),
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// What the asker typed, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status { pattern: Option<String> },
    Tail { name: String, host: Option<String>, lines: Option<usize>, stdout: bool },
    Why { name: String, host: Option<String> },
}

impl Command {
    /// The subcommand's setting (`help` has none: always allowed).
    pub fn ask(&self) -> Option<Ask> {
        match self {
            Command::Help => None,
            Command::Status { .. } => Some(Ask::Status),
            Command::Tail { .. } => Some(Ask::Tail),
            Command::Why { .. } => Some(Ask::Why),
        }
    }
}

/// Input that is not a command: what was wrong, and the usage of the subcommand
/// (`None`: of all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub problem: String,
    pub usage: Option<Ask>,
}

fn bad(problem: impl Into<String>, usage: Option<Ask>) -> BadInput {
    BadInput { problem: problem.into(), usage }
}

/// The usage of a subcommand, with `command` as typed.
pub fn usage(command: &str, ask: Option<Ask>) -> String {
    let c = escape_mrkdwn(command);
    let text = match ask {
        Some(Ask::Status) => format!("`{c} status [pattern]`, e.g. `{c} status` or `{c} status web-*`"),
        Some(Ask::Tail) => format!("`{c} tail <process> [host] [n] [--stdout]`, e.g. `{c} tail worker web-1 50`"),
        Some(Ask::Why) => format!("`{c} why <process> [host]`, e.g. `{c} why worker`"),
        None => format!("`{c} status|tail|why|help`; `{c} help` explains each"),
    };
    // `<process>` would be a link in mrkdwn.
    text.replace('<', "&lt;").replace('>', "&gt;")
}

/// Parses the text after the command.
pub fn parse(text: &str) -> Result<Command, BadInput> {
    let mut words = text.split_whitespace();
    let Some(sub) = words.next() else {
        return Ok(Command::Help);
    };
    let rest: Vec<&str> = words.collect();
    match sub.to_lowercase().as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "status" => match rest.as_slice() {
            [] => Ok(Command::Status { pattern: None }),
            [p] => Ok(Command::Status { pattern: Some(p.to_string()) }),
            _ => Err(bad(
                format!("status takes one pattern, not {} words (a glob such as web-* or app:*)", rest.len()),
                Some(Ask::Status),
            )),
        },
        "tail" => parse_tail(&rest),
        "why" => match rest.as_slice() {
            [] => Err(bad("why needs a process name", Some(Ask::Why))),
            [name] => Ok(Command::Why { name: name.to_string(), host: None }),
            [name, host] => Ok(Command::Why { name: name.to_string(), host: Some(host.to_string()) }),
            _ => Err(bad(format!("why takes a process and a host at most, not {} words", rest.len()), Some(Ask::Why))),
        },
        other => {
            let near = ["status", "tail", "why", "help"]
                .into_iter()
                .find(|s| s.starts_with(other) || other.starts_with(s));
            let hint = near.map(|s| format!(" Did you mean {s}?")).unwrap_or_default();
            Err(bad(
                format!("{} is not a subcommand; there are status, tail, why and help.{hint}", answers::typed(other)),
                None,
            ))
        }
    }
}

fn parse_tail(rest: &[&str]) -> Result<Command, BadInput> {
    let usage = Some(Ask::Tail);
    let Some((name, args)) = rest.split_first() else {
        return Err(bad("tail needs a process name", usage));
    };
    if name.starts_with('-') {
        return Err(bad("tail needs a process name before its options", usage));
    }
    let (mut host, mut lines, mut stdout) = (None, None, false);
    for a in args {
        match *a {
            "--stdout" => stdout = true,
            "--stderr" => stdout = false,
            a if a.parse::<i64>().is_ok() => {
                let n: i64 = a.parse().unwrap();
                if n < 1 {
                    return Err(bad(format!("n must be a number of lines, 1 or more, not {n}"), usage));
                }
                if lines.is_some() {
                    return Err(bad("n is given twice", usage));
                }
                lines = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            a if a.starts_with('-') => {
                return Err(bad(format!("{} is not an option of tail; it has --stdout", answers::typed(a)), usage))
            }
            a if host.is_none() => host = Some(a.to_string()),
            a => {
                return Err(bad(
                    format!("{} is one word too many: tail takes a process, a host and n", answers::typed(a)),
                    usage,
                ))
            }
        }
    }
    Ok(Command::Tail { name: name.to_string(), host, lines, stdout })
}

/// What an asker is built from.
pub struct AskerParts {
    /// This listener's host.
    pub host: String,
    pub settings: ActionSettings,
    /// The channels this listener posts to (names or ids, as configured): where
    /// `open_to_channel` subcommands are open to everyone.
    pub channels: Vec<String>,
    /// For user groups and the answers that come later.
    pub api: Arc<SlackApi>,
    /// Notes that commands arrive (for `check`).
    pub shared: Arc<dyn SharedState>,
    /// Where the answers come from: this host, or a fleet.
    pub source: Arc<dyn Source>,
}

/// Answers `/supervisor` for one listener.
pub struct Asker {
    parts: AskerParts,
    members: Members,
}

impl Asker {
    pub fn new(parts: AskerParts) -> Asker {
        Asker { parts, members: Members::default() }
    }

    /// The answer for the ack, within [`INLINE`]; a slower one follows to the
    /// command's `response_url` (and the ack says it will).
    pub async fn respond(self: &Arc<Self>, asked: Asked) -> String {
        let (me, a) = (self.clone(), asked.clone());
        let mut task = tokio::spawn(async move { me.answer(&a).await });
        match tokio::time::timeout(INLINE, &mut task).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                tracing::error!(user = %asked.user, "a /supervisor answer failed: {e}");
                refusal("Something went wrong while answering; the listener's log says what.")
            }
            Err(_) => {
                let me = self.clone();
                tokio::spawn(async move {
                    let limit = me.parts.settings.timeout + CHECKS;
                    let text = match tokio::time::timeout(limit, task).await {
                        Ok(Ok(text)) => text,
                        _ => refusal(&format!("No answer within {}.", humantime::format_duration(limit))),
                    };
                    if let Err(f) = me.parts.api.respond(&asked.response_url, &text).await {
                        tracing::warn!(user = %asked.user, "could not send a /supervisor answer to its response URL: {f}");
                    }
                });
                answers::working()
            }
        }
    }

    /// The whole answer to one command.
    pub async fn answer(&self, asked: &Asked) -> String {
        if let Err(e) = self.parts.shared.command_seen(&asked.user).await {
            tracing::debug!(error = %e, "cannot note the command for check");
        }
        let command = match parse(&asked.text) {
            Ok(c) => c,
            Err(b) => return answers::bad_input(&b.problem, &usage(&asked.command, b.usage)),
        };
        if let Some(ask) = command.ask() {
            if let Err(why) = self.may(ask, asked).await {
                tracing::warn!(user = %asked.user, command = %ask, channel = %asked.channel_id, "refused a /supervisor command: {}", why.1);
                return refusal(&why.0);
            }
        }
        match command {
            Command::Help => self.help(asked).await,
            Command::Status { pattern } => self.status(pattern.as_deref()).await,
            Command::Tail { name, host, lines, stdout } => {
                let max = self.parts.settings.stderr_lines;
                let want = lines.unwrap_or(max);
                let capped = (want > max).then_some(max);
                let row = match self.one(asked, Ask::Tail, &name, host.as_deref()).await {
                    Ok(row) => row,
                    Err(text) => return text,
                };
                tracing::info!(
                    user = %asked.user, host = %row.host, process = %row.full_name(),
                    log = if stdout { "stdout" } else { "stderr" }, lines = want.min(max),
                    "tail asked from Slack"
                );
                let q = Question::Tail { key: row.key(), stdout, lines: want.min(max) };
                match self.ask(&row, q).await {
                    Ok(Answer::Tail { log, lines }) => answers::tail(&row.display_name(), &row.host, &log, &lines, capped),
                    Ok(other) => unexpected(&other),
                    Err(text) => text,
                }
            }
            Command::Why { name, host } => {
                let row = match self.one(asked, Ask::Why, &name, host.as_deref()).await {
                    Ok(row) => row,
                    Err(text) => return text,
                };
                match self.ask(&row, Question::Why { key: row.key() }).await {
                    Ok(Answer::Why(crash)) => answers::why(
                        &row.display_name(),
                        &row.host,
                        crash.as_ref().map(|c| (c.at, c.state, c.expected, &c.context)),
                    ),
                    Ok(other) => unexpected(&other),
                    Err(text) => text,
                }
            }
        }
    }

    /// Whether `asked.user` may ask `ask`: `Err((what they are told, what the log
    /// says))`.
    pub async fn may(&self, ask: Ask, asked: &Asked) -> Result<(), (String, String)> {
        let p = &self.parts;
        let s = &p.settings;
        let host = escape_mrkdwn(&p.host);
        if !s.asks.contains(&ask) {
            return Err((
                format!("`{ask}` is switched off on {host}: `[actions] allowed` of its listener does not list it."),
                format!("{ask} not in [actions] allowed"),
            ));
        }
        if s.allow_users.contains(&asked.user) || self.members.any_has(&p.api, &s.allow_groups, &asked.user).await {
            return Ok(());
        }
        let user = escape_mrkdwn(&asked.user);
        if s.open_to_channel.contains(&ask) {
            if self.in_listener_channel(asked) {
                return Ok(());
            }
            let channels: Vec<String> = p.channels.iter().map(|c| format!("#{}", escape_mrkdwn(c.trim_start_matches('#')))).collect();
            return Err((
                format!(
                    "`{ask}` is open to the members of {}, where the listener on {host} posts; typed here, it is only for the people in `[actions] allow_users` / `allow_groups`. Type it there, or ask whoever runs the listener to add your member id {user}.",
                    if channels.is_empty() { "its channels".to_string() } else { channels.join(", ") }
                ),
                "not in the listener's channels nor the allow lists".into(),
            ));
        }
        let secrets = match ask {
            Ask::Tail | Ask::Why => " it shows log lines, which can hold secrets, so",
            Ask::Status => "",
        };
        Err((
            format!(
                "You may not ask `{ask}` on {host}:{secrets} only the people and groups in `[actions] allow_users` / `allow_groups` of its listener may. Ask whoever runs it to add your member id {user}."
            ),
            "user not in allow_users or allow_groups".into(),
        ))
    }

    /// Whether the command was typed in a channel this listener posts to.
    fn in_listener_channel(&self, asked: &Asked) -> bool {
        self.parts.channels.iter().any(|c| {
            let c = c.trim_start_matches('#');
            !c.is_empty() && (c == asked.channel_id || asked.channel_name.as_deref() == Some(c))
        })
    }

    async fn help(&self, asked: &Asked) -> String {
        let c = escape_mrkdwn(&asked.command);
        let mut lines = vec![format!("*{c}* asks supervisord, and only you see the answer:")];
        for ask in Ask::ALL {
            let what = match ask {
                Ask::Status => "every process (or those a glob on `group:process`, the name or the host matches): host, state, since when, pid; failing first",
                Ask::Tail => "the last lines of a process's stderr (`--stdout` for stdout), n at most `[actions] stderr_lines`",
                Ask::Why => "the last crash of a process: exit status, spawn error, uptime and its stderr at the time",
            };
            let mark = match self.may(ask, asked).await {
                Ok(()) => String::new(),
                Err((why, _)) => format!("\n    ⛔ not for you here: {why}"),
            };
            lines.push(format!("• {} — {what}{mark}", usage(&asked.command, Some(ask))));
        }
        lines.push(format!("• `{c} help` — this"));
        lines.join("\n")
    }

    async fn rows(&self) -> Result<Vec<Row>, String> {
        let limit = self.parts.settings.timeout;
        match tokio::time::timeout(limit, self.parts.source.processes()).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(why)) => Err(refusal(&format!("Cannot list the processes: {}", escape_mrkdwn(&why)))),
            Err(_) => Err(refusal(&format!("No process list within {}.", humantime::format_duration(limit)))),
        }
    }

    async fn status(&self, pattern: Option<&str>) -> String {
        let rows = match self.rows().await {
            Ok(r) => r,
            Err(text) => return text,
        };
        let chosen = match select(&rows, pattern) {
            Ok(c) => c,
            Err(b) => {
                return answers::bad_input(
                    &format!("{} is not a pattern: {}", answers::typed(pattern.unwrap_or("")), escape_mrkdwn(&b.0)),
                    &usage("/supervisor", Some(Ask::Status)),
                )
            }
        };
        if chosen.is_empty() {
            let names: Vec<String> = select(&rows, None)
                .unwrap_or_default()
                .iter()
                .map(|r| format!("{} ({})", r.display_name(), r.host))
                .collect();
            return answers::no_match(pattern.unwrap_or("*"), &names);
        }
        let lines: Vec<StatusLine> = chosen
            .into_iter()
            .map(|r| StatusLine {
                host: r.host.clone(),
                name: r.display_name(),
                state: r.state,
                expected: r.expected,
                since: r.since,
                pid: r.pid,
                spawnerr: r.spawnerr.clone(),
                silent: r.silent,
            })
            .collect();
        answers::status(&lines, pattern)
    }

    /// The one process `name` (on `host`) means, or the answer saying why not.
    async fn one(&self, asked: &Asked, ask: Ask, name: &str, host: Option<&str>) -> Result<Row, String> {
        let rows = self.rows().await?;
        match pick(&rows, name, host) {
            Pick::One(row) => Ok(row.clone()),
            Pick::Several(c) => {
                let c: Vec<(String, String)> = c.iter().map(|r| (r.host.clone(), r.full_name())).collect();
                Err(answers::several(&asked.command, ask, name, &c))
            }
            Pick::NoProcess { similar } => {
                let similar: Vec<String> = similar.iter().map(|r| format!("{} ({})", r.display_name(), r.host)).collect();
                Err(answers::no_process(name, host, &similar))
            }
            Pick::NoHost { hosts } => Err(answers::no_host(host.unwrap_or(""), &hosts)),
        }
    }

    /// Asks the row's host, unless it is silent; bounded by `[actions] timeout`.
    async fn ask(&self, row: &Row, q: Question) -> Result<Answer, String> {
        let limit = self.parts.settings.timeout;
        let out = match row.silent {
            Some(at) => Err(Unreachable::Silent(at)),
            None => match tokio::time::timeout(limit, self.parts.source.ask(&row.host, q)).await {
                Ok(r) => r,
                Err(_) => Err(Unreachable::NoAnswer(limit)),
            },
        };
        out.map_err(|u| match u {
            Unreachable::Silent(at) => answers::silent(&row.host, at),
            Unreachable::NoAnswer(d) => answers::no_answer(&row.host, d),
            Unreachable::NotHere { here } => answers::not_here(&row.host, &here),
            Unreachable::Failed(why) => answers::failed(&row.host, &why),
        })
    }
}

fn unexpected(a: &Answer) -> String {
    tracing::error!(?a, "a host answered another question than the one asked");
    refusal("The host answered another question than the one asked.")
}

/// The Socket Mode callback for slash commands: the answer (or "working on it")
/// goes back in the ack, only to the asker.
pub(super) async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<SlackClient<Connector>>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let asker = states.read().await.get_user_state::<Arc<Asker>>().cloned();
    let text = match asker {
        Some(asker) => asker.respond(Asked::from_event(&event)).await,
        None => refusal("This listener does not answer commands ([actions] allowed lists none of status, tail and why)."),
    };
    Ok(SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
        .with_response_type(SlackMessageResponseType::Ephemeral))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_parse_with_their_arguments() {
        assert_eq!(parse(""), Ok(Command::Help));
        assert_eq!(parse("  help "), Ok(Command::Help));
        assert_eq!(parse("status"), Ok(Command::Status { pattern: None }));
        assert_eq!(parse("STATUS web-*"), Ok(Command::Status { pattern: Some("web-*".into()) }));
        assert_eq!(
            parse("tail reports"),
            Ok(Command::Tail { name: "reports".into(), host: None, lines: None, stdout: false })
        );
        assert_eq!(
            parse("tail worker web-2 50 --stdout"),
            Ok(Command::Tail { name: "worker".into(), host: Some("web-2".into()), lines: Some(50), stdout: true })
        );
        assert_eq!(
            parse("tail worker 5"),
            Ok(Command::Tail { name: "worker".into(), host: None, lines: Some(5), stdout: false })
        );
        assert_eq!(parse("why worker web-1"), Ok(Command::Why { name: "worker".into(), host: Some("web-1".into()) }));
    }

    #[test]
    fn bad_input_says_what_was_wrong_and_for_which_subcommand() {
        let e = parse("restart worker").unwrap_err();
        assert!(e.problem.contains("“restart” is not a subcommand"), "{e:?}");
        assert_eq!(e.usage, None);
        assert!(parse("stat").unwrap_err().problem.contains("Did you mean status?"));
        let e = parse("tail worker 0").unwrap_err();
        assert!(e.problem.contains("1 or more, not 0"), "{e:?}");
        assert_eq!(e.usage, Some(Ask::Tail));
        assert!(parse("tail worker -3").unwrap_err().problem.contains("not -3"));
        assert!(parse("tail").unwrap_err().problem.contains("needs a process"));
        assert!(parse("tail worker --follow").unwrap_err().problem.contains("not an option"));
        assert!(parse("tail worker web-1 5 extra").unwrap_err().problem.contains("one word too many"));
        assert!(parse("why").unwrap_err().problem.contains("needs a process"));
        assert!(parse("status a b").unwrap_err().problem.contains("one pattern"));
        // Whatever was typed is quoted back escaped.
        assert!(parse("<!channel>").unwrap_err().problem.contains("&lt;!channel&gt;"));
    }

    #[test]
    fn typed_entities_are_read_as_the_characters() {
        assert_eq!(unescape("a &lt;b&gt; &amp;lt;"), "a <b> &lt;");
    }
}
