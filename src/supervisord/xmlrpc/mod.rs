//! A typed client for supervisord's XML-RPC interface (`supervisor.*` on `/RPC2`),
//! over the unix socket or TCP that `SUPERVISOR_SERVER_URL` names.
//!
//! [`Client`] has one method per supervisord call the listener uses: process info
//! (for crash context and reconciling), log reads and tails, start / stop / signal
//! (for acting from Slack), and [`Client::get_state`] to learn whether supervisord
//! answers at all. Every call is bounded by the client's time-out. Failures are an
//! [`Error`] whose `Display` names the cause and, where there is one, the fix; a
//! refusal by supervisord is [`Error::Fault`] with a typed [`Fault`] code.
//!
//! Underneath: `transport` speaks HTTP/1.1 (hyper) and knows nothing of XML; `codec`
//! turns calls and answers into XML-RPC bodies through the `dxr` crate; `error` holds
//! the typed faults and failures. Knows nothing of Slack or of what the listener does
//! with the answers.

mod codec;
mod error;
mod tail;
mod transport;

use std::time::Duration;

use dxr::{TryFromValue, Value};
use hyper::header::HeaderValue;

use crate::secret::Secret;
use crate::supervisord::event::State;
pub use error::{Error, Fault};
pub use tail::cut_tail;
use transport::Endpoint;

/// The time a call may take unless [`Client::with_timeout`] says otherwise. A local
/// supervisord answers in milliseconds; `start_process`/`stop_process` with `wait`
/// take up to `startsecs` / `stopwaitsecs` and may need more.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `supervisor.getProcessInfo` says about a process. Times are Unix seconds;
/// 0 means "never".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: String,
    pub group: String,
    pub start: i64,
    pub stop: i64,
    pub now: i64,
    pub state: i64,
    pub statename: String,
    /// "Exited too quickly (process log may have details)", "Bad exit code 3",
    /// "can't find command ..."; empty when none.
    pub spawnerr: String,
    /// The last exit status; supervisord reports 0 when it recorded none (a process
    /// that died before `startsecs` has none).
    pub exitstatus: i64,
    pub pid: i64,
    pub description: String,
    pub stdout_logfile: String,
    /// Empty when stderr is redirected into stdout (`redirect_stderr=true`) or not
    /// logged.
    pub stderr_logfile: String,
}

impl ProcessInfo {
    /// `statename` as a [`State`]; `None` for a name this version does not know.
    pub fn state(&self) -> Option<State> {
        self.statename.parse().ok()
    }

    /// When supervisord says the process entered `state` (its current one): the start
    /// time for STARTING, RUNNING and BACKOFF, else the stop time; `None` for "never".
    pub fn since(&self, state: State) -> Option<chrono::DateTime<chrono::Utc>> {
        let t = match state {
            State::Starting | State::Running | State::Backoff => self.start,
            _ => self.stop,
        };
        (t > 0)
            .then(|| chrono::TimeZone::timestamp_opt(&chrono::Utc, t, 0).single())
            .flatten()
    }

    /// `group:name`, the name supervisord's calls take.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }
}

impl TryFromValue for ProcessInfo {
    /// Members this version does not know (`logfile`, a deprecated alias, and whatever
    /// a later one adds) are ignored; missing ones stay at their default.
    fn try_from_value(value: &Value) -> Result<Self, dxr::Error> {
        let Value::Struct(members) = value else {
            return Err(dxr::Error::WrongType {
                argument: "not a struct".into(),
                expected: "struct".into(),
            });
        };
        let text = |key: &str| -> Result<String, dxr::Error> {
            members
                .get(key)
                .map_or(Ok(String::new()), String::try_from_value)
        };
        let int = |key: &str| -> Result<i64, dxr::Error> {
            members
                .get(key)
                .map_or(Ok(0), |v| i32::try_from_value(v).map(i64::from))
        };
        Ok(ProcessInfo {
            name: text("name")?,
            group: text("group")?,
            start: int("start")?,
            stop: int("stop")?,
            now: int("now")?,
            state: int("state")?,
            statename: text("statename")?,
            spawnerr: text("spawnerr")?,
            exitstatus: int("exitstatus")?,
            pid: int("pid")?,
            description: text("description")?,
            stdout_logfile: text("stdout_logfile")?,
            stderr_logfile: text("stderr_logfile")?,
        })
    }
}

/// What `supervisor.getState` says about supervisord itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorState {
    /// 2 FATAL, 1 RUNNING, 0 RESTARTING, -1 SHUTDOWN.
    pub code: i32,
    /// `RUNNING`, `RESTARTING`, `SHUTDOWN`, `FATAL`.
    pub name: String,
}

/// Which of a process's logs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogChannel {
    Stdout,
    Stderr,
}

impl LogChannel {
    /// `stdout` / `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogChannel::Stdout => "stdout",
            LogChannel::Stderr => "stderr",
        }
    }
}

/// One answer of `tailProcessStdoutLog` / `tailProcessStderrLog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// The bytes read, as text.
    pub text: String,
    /// Where to continue reading: the log's size when it was read.
    pub offset: i32,
    /// The log had more than was asked for: `text` does not start where asked (nor,
    /// when asked from 0, at the start of the file).
    pub overflow: bool,
}

/// A client for one supervisord. Cheap to clone; one connection per call.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// The ready `Authorization` header value, when credentials are set.
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for `server_url` (`unix:///path/supervisor.sock` or `http://host:port`)
    /// with the credentials of `[unix_http_server]` / `[inet_http_server]`, if any
    /// (supervisord does not pass them to its children). A username without a
    /// password sends an empty password.
    pub fn new(
        server_url: &str,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Result<Client, Error> {
        Ok(Client {
            endpoint: Endpoint::parse(server_url)?,
            auth: transport::basic_auth(username, password),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A client for the supervisord that started this process, from
    /// `SUPERVISOR_SERVER_URL` (which supervisord sets for every child).
    pub fn from_env(username: Option<String>, password: Option<Secret>) -> Result<Client, Error> {
        let url = std::env::var("SUPERVISOR_SERVER_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or(Error::NoServerUrl)?;
        Client::new(&url, username, password)
    }

    /// The same client with every call bounded by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The bound of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server URL, normalised (`unix:///path`, `http://host:port`).
    pub fn url(&self) -> String {
        self.endpoint.to_string()
    }

    /// `supervisor.getState`: whether supervisord answers, and in which state.
    pub async fn get_state(&self) -> Result<SupervisorState, Error> {
        let method = "supervisor.getState";
        let value = self.call(method, vec![]).await?;
        let Value::Struct(members) = &value else {
            return Err(Error::BadResponse(format!(
                "{method} did not answer a struct"
            )));
        };
        let member = |key: &str| {
            members
                .get(key)
                .ok_or_else(|| Error::BadResponse(format!("{method} answered no {key}")))
        };
        Ok(SupervisorState {
            code: codec::typed(method, member("statecode")?)?,
            name: codec::typed(method, member("statename")?)?,
        })
    }

    /// `supervisor.getAllProcessInfo`: every process supervisord manages.
    pub async fn get_all_process_info(&self) -> Result<Vec<ProcessInfo>, Error> {
        self.typed("supervisor.getAllProcessInfo", vec![]).await
    }

    /// `supervisor.getProcessInfo(name)`; `name` is `group:process` (or a process
    /// whose group has its name). An unknown name is [`Fault::BadName`].
    pub async fn get_process_info(&self, name: &str) -> Result<ProcessInfo, Error> {
        self.typed("supervisor.getProcessInfo", vec![text(name)])
            .await
    }

    /// `supervisor.readProcessStdoutLog` / `readProcessStderrLog(name, offset,
    /// length)`. A negative `offset` with `length` 0 reads the last `-offset` bytes.
    /// Answers [`Error::ServerError`] when those bytes are not valid UTF-8.
    pub async fn read_process_log(
        &self,
        channel: LogChannel,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<String, Error> {
        let method = match channel {
            LogChannel::Stdout => "supervisor.readProcessStdoutLog",
            LogChannel::Stderr => "supervisor.readProcessStderrLog",
        };
        self.typed(method, vec![text(name), int(offset), int(length)])
            .await
    }

    /// [`Client::read_process_log`] of stdout.
    pub async fn read_process_stdout_log(
        &self,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<String, Error> {
        self.read_process_log(LogChannel::Stdout, name, offset, length)
            .await
    }

    /// [`Client::read_process_log`] of stderr.
    pub async fn read_process_stderr_log(
        &self,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<String, Error> {
        self.read_process_log(LogChannel::Stderr, name, offset, length)
            .await
    }

    /// `supervisor.tailProcessStdoutLog` / `tailProcessStderrLog(name, offset,
    /// length)`: up to `length` bytes from `offset`, or the last `length` bytes when
    /// the log has grown past `offset + length` (then [`LogTail::overflow`]). Pass the
    /// returned offset back to read what came since.
    pub async fn tail_process_log(
        &self,
        channel: LogChannel,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<LogTail, Error> {
        let method = match channel {
            LogChannel::Stdout => "supervisor.tailProcessStdoutLog",
            LogChannel::Stderr => "supervisor.tailProcessStderrLog",
        };
        let (text, offset, overflow) = self
            .typed(method, vec![self::text(name), int(offset), int(length)])
            .await?;
        Ok(LogTail {
            text,
            offset,
            overflow,
        })
    }

    /// [`Client::tail_process_log`] of stdout.
    pub async fn tail_process_stdout_log(
        &self,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<LogTail, Error> {
        self.tail_process_log(LogChannel::Stdout, name, offset, length)
            .await
    }

    /// [`Client::tail_process_log`] of stderr.
    pub async fn tail_process_stderr_log(
        &self,
        name: &str,
        offset: i32,
        length: i32,
    ) -> Result<LogTail, Error> {
        self.tail_process_log(LogChannel::Stderr, name, offset, length)
            .await
    }

    /// `supervisor.readLog(offset, length)`: supervisord's own log (`logfile=`), read
    /// like a process log.
    pub async fn read_main_log(&self, offset: i32, length: i32) -> Result<String, Error> {
        self.typed("supervisor.readLog", vec![int(offset), int(length)])
            .await
    }

    /// `supervisor.startProcess(name, wait)`. With `wait`, answers once the process
    /// is RUNNING (after `startsecs`). A running process is [`Fault::AlreadyStarted`];
    /// one that could not start is [`Fault::SpawnError`] or
    /// [`Fault::AbnormalTermination`].
    pub async fn start_process(&self, name: &str, wait: bool) -> Result<(), Error> {
        let _: bool = self
            .typed(
                "supervisor.startProcess",
                vec![text(name), Value::Boolean(wait)],
            )
            .await?;
        Ok(())
    }

    /// `supervisor.stopProcess(name, wait)`. A process that is not running is
    /// [`Fault::NotRunning`].
    pub async fn stop_process(&self, name: &str, wait: bool) -> Result<(), Error> {
        let _: bool = self
            .typed(
                "supervisor.stopProcess",
                vec![text(name), Value::Boolean(wait)],
            )
            .await?;
        Ok(())
    }

    /// `supervisor.signalProcess(name, signal)`; `signal` is a name (`HUP`, `USR1`)
    /// or a number. An unknown signal is [`Fault::BadSignal`]; a process that is not
    /// running is [`Fault::NotRunning`].
    pub async fn signal_process(&self, name: &str, signal: &str) -> Result<(), Error> {
        let _: bool = self
            .typed("supervisor.signalProcess", vec![text(name), text(signal)])
            .await?;
        Ok(())
    }

    /// One call whose answer is read as a `T`.
    async fn typed<T: TryFromValue>(&self, method: &str, params: Vec<Value>) -> Result<T, Error> {
        let value = self.call(method, params).await?;
        codec::typed(method, &value)
    }

    /// One XML-RPC call within the time-out: POST /RPC2, then the answer's value or
    /// its fault.
    async fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, Error> {
        let body = codec::encode_call(method, params)?;
        let exchange = async {
            let answer = transport::post(&self.endpoint, self.auth.as_ref(), body).await?;
            codec::decode_response(&answer)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

fn int(n: i32) -> Value {
    Value::Integer(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_hides_the_credentials() {
        let c = Client::new(
            "unix:///run/supervisor.sock",
            Some("user".into()),
            Some(Secret::new("s3cret-password")),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("dXNlcj"),
            "{shown}"
        );
        assert_eq!(c.url(), "unix:///run/supervisor.sock");
    }
}
