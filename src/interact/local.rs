//! The one-host [`Source`]: this listener's own supervisord (XML-RPC) and shared
//! state. It knows one host, its own; a question about another host is
//! [`Unreachable::NotHere`] (a fleet's source routes it to the owner instead).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::ask::{Answer, Question, Row, Source, Unreachable};
use crate::store::SharedState;
use crate::supervisord::event::{State, ThreadKey};
use crate::supervisord::xmlrpc::{Client, LogChannel};

/// Most characters of a log tail read for an answer (a section's text is 3,000).
pub const TAIL_CHARS: usize = 2_800;

/// Answers from this host's supervisord and shared state.
pub struct LocalSource {
    host: String,
    /// `None`: supervisord's XML-RPC is out of reach by settings.
    supervisor: Option<Client>,
    shared: Arc<dyn SharedState>,
}

impl LocalSource {
    /// A source for `host`; each XML-RPC call bounded by `supervisor`'s time-out.
    pub fn new(host: String, supervisor: Option<Client>, shared: Arc<dyn SharedState>) -> LocalSource {
        LocalSource { host, supervisor, shared }
    }

    fn client(&self) -> Result<&Client, String> {
        self.supervisor.as_ref().ok_or_else(|| {
            format!(
                "the listener on {} has no XML-RPC to its supervisord (set supervisor_server_url, and supervisor_username/password if [unix_http_server] has them)",
                self.host
            )
        })
    }

    /// The last lines of stderr (or stdout); a process without a stderr log
    /// (redirect_stderr) gets its stdout's, said so.
    async fn tail(&self, key: &ThreadKey, stdout: bool, lines: usize) -> Result<Answer, Unreachable> {
        let client = self.client().map_err(Unreachable::Failed)?;
        let name = key.xmlrpc_name();
        if stdout {
            let lines = client.last_lines(LogChannel::Stdout, &name, lines, TAIL_CHARS).await;
            return Ok(Answer::Tail { log: "stdout".into(), lines });
        }
        match client.last_lines(LogChannel::Stderr, &name, lines, TAIL_CHARS).await {
            Ok(text) => Ok(Answer::Tail { log: "stderr".into(), lines: Ok(text) }),
            Err(stderr_err) => match client.last_lines(LogChannel::Stdout, &name, lines, TAIL_CHARS).await {
                Ok(text) => Ok(Answer::Tail {
                    log: "stdout (no stderr log: redirect_stderr is on, or stderr_logfile is NONE)".into(),
                    lines: Ok(text),
                }),
                Err(_) => Ok(Answer::Tail { log: "stderr".into(), lines: Err(stderr_err) }),
            },
        }
    }
}

#[async_trait]
impl Source for LocalSource {
    async fn processes(&self) -> Result<Vec<Row>, String> {
        let client = self.client()?;
        let infos = client
            .get_all_process_info()
            .await
            .map_err(|e| format!("supervisord on {} did not answer: {e}", self.host))?;
        // supervisord's judgement of an exit is in the events, not in getProcessInfo:
        // the thread's latest event has it when it is about the current state.
        let latest: HashMap<ThreadKey, (State, Option<bool>)> = self
            .shared
            .latest_states(&self.host)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(k, _, ev)| (k, (ev.to, ev.expected)))
            .collect();
        Ok(infos
            .into_iter()
            .map(|info| {
                let state = info.state().unwrap_or(State::Unknown);
                let key = ThreadKey {
                    host: self.host.clone(),
                    group: info.group.clone(),
                    process: info.name.clone(),
                };
                let expected = latest
                    .get(&key)
                    .filter(|(s, _)| *s == state)
                    .and_then(|(_, e)| *e);
                Row {
                    since: info.since(state),
                    pid: u32::try_from(info.pid).ok().filter(|p| *p > 0),
                    spawnerr: Some(info.spawnerr.clone()).filter(|s| !s.is_empty()),
                    host: key.host,
                    group: key.group,
                    process: key.process,
                    state,
                    expected,
                    silent: None,
                }
            })
            .collect())
    }

    async fn ask(&self, host: &str, question: Question) -> Result<Answer, Unreachable> {
        if host != self.host {
            return Err(Unreachable::NotHere { here: self.host.clone() });
        }
        match question {
            Question::Tail { key, stdout, lines } => self.tail(&key, stdout, lines).await,
            Question::Why { key } => self
                .shared
                .last_crash(&key)
                .await
                .map(Answer::Why)
                .map_err(|e| Unreachable::Failed(e.to_string())),
        }
    }
}
