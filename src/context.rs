//! Crash context: why a process died, asked of supervisord over its XML-RPC interface.
//!
//! When a process goes BACKOFF, FATAL or EXITED unexpectedly, the event itself says
//! nothing about why (no exit code, no output). supervisord knows: `getProcessInfo`
//! has the exit status, the spawn error and the run's start/stop times, and
//! `readProcessStderrLog` has the last bytes the process wrote. [`ContextSource`]
//! fetches both and hands the dispatcher a [`CrashContext`] for the thread reply.
//! Where `getProcessInfo` has lost the exit status (a run that ended before
//! `startsecs`, a process autorestarted before the listener got the event, a signal),
//! supervisord's own log (`readLog`) still has its `exited:` line.
//!
//! Crash context is best effort and bounded: [`ContextSource::for_event`] never
//! fails and never takes longer than [`ContextOptions::timeout`]. When something is
//! missing, [`CrashContext::unavailable`] says why in words a user can act on
//! ("permission denied on /run/supervisor.sock ..."), and the card goes out anyway.
//!
//! The client underneath ([`RpcClient`]) speaks plain HTTP/1.1 (hyper) over the unix
//! socket or TCP named by `SUPERVISOR_SERVER_URL`, and parses answers with quick-xml.
//! Knows nothing of Slack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use quick_xml::events::Event as XmlEvent;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::card::CrashContext;
use crate::config::Secret;
use crate::supervisord::event::{ProcessState, State};

/// The largest XML-RPC answer read into memory. Log windows are a few KiB; anything
/// near this is not an answer to what was asked.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// supervisord's fault code for "no such process" (`BAD_NAME`).
pub const FAULT_BAD_NAME: i64 = 10;
/// supervisord's fault code for "the log file does not exist" (`NO_FILE`).
pub const FAULT_NO_FILE: i64 = 20;

/// Why a call to supervisord failed. The `Display` text is what a user reads on the
/// card, so each one names the cause and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("SUPERVISOR_SERVER_URL is not set (not running under supervisord)")]
    NoServerUrl,
    #[error("unsupported supervisord server URL {0:?} (expected unix:///path/supervisor.sock or http://host:port)")]
    BadUrl(String),
    #[error("no supervisord socket at {}", .0.display())]
    SocketMissing(PathBuf),
    #[error("permission denied on {} (the socket is mode 0700 by default: set chown= in [unix_http_server] to the listener's user)", .0.display())]
    PermissionDenied(PathBuf),
    #[error("{} is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("connection refused on {0} (is supervisord running?)")]
    Refused(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// 401: the socket has a username and the listener sent none, or the wrong one.
    #[error("authentication failed: set supervisor_username/password{}", if *.sent_credentials { " (the ones set were rejected)" } else { "" })]
    Auth { sent_credentials: bool },
    /// 500: what supervisord answers when a log window is not valid UTF-8 (it starts
    /// inside a multi-byte character, or the log holds other bytes).
    #[error("supervisord answered HTTP 500 (internal error)")]
    ServerError,
    #[error("supervisord answered HTTP {0}")]
    Http(StatusCode),
    #[error("HTTP exchange with supervisord failed: {0}")]
    Transport(String),
    /// An XML-RPC fault, such as code 10 `BAD_NAME` for an unknown process.
    #[error("supervisord refused: {string} (fault {code})")]
    Fault { code: i64, string: String },
    #[error("unreadable XML-RPC answer from supervisord: {0}")]
    BadResponse(String),
}

/// Where supervisord listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, as it goes into the `Host` header and `connect`.
    Tcp(String),
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, ContextError> {
        let bad = || ContextError::BadUrl(url.to_string());
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Endpoint::Tcp(format!("{}:{port}", authority.host())))
    }
}

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
    fn from_value(v: Value) -> Result<ProcessInfo, ContextError> {
        let Value::Struct(members) = v else {
            return Err(ContextError::BadResponse(
                "getProcessInfo did not answer a struct".into(),
            ));
        };
        let mut info = ProcessInfo::default();
        for (key, value) in members {
            match (key.as_str(), value) {
                ("name", Value::Str(s)) => info.name = s,
                ("group", Value::Str(s)) => info.group = s,
                ("statename", Value::Str(s)) => info.statename = s,
                ("spawnerr", Value::Str(s)) => info.spawnerr = s,
                ("description", Value::Str(s)) => info.description = s,
                ("stdout_logfile", Value::Str(s)) => info.stdout_logfile = s,
                ("stderr_logfile", Value::Str(s)) => info.stderr_logfile = s,
                ("start", Value::Int(n)) => info.start = n,
                ("stop", Value::Int(n)) => info.stop = n,
                ("now", Value::Int(n)) => info.now = n,
                ("state", Value::Int(n)) => info.state = n,
                ("exitstatus", Value::Int(n)) => info.exitstatus = n,
                ("pid", Value::Int(n)) => info.pid = n,
                _ => {} // `logfile` (a deprecated alias) and whatever a future version adds
            }
        }
        Ok(info)
    }
}

/// Which of a process's logs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogChannel {
    Stdout,
    Stderr,
}

impl LogChannel {
    /// `stdout` / `stderr`, as [`CrashContext::log_name`] holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogChannel::Stdout => "stdout",
            LogChannel::Stderr => "stderr",
        }
    }
    fn method(self) -> &'static str {
        match self {
            LogChannel::Stdout => "supervisor.readProcessStdoutLog",
            LogChannel::Stderr => "supervisor.readProcessStderrLog",
        }
    }
}

/// A minimal XML-RPC client for supervisord's `/RPC2`: one HTTP/1.1 connection per
/// call (a unix-socket connect costs next to nothing), Basic auth when configured.
#[derive(Clone)]
pub struct RpcClient {
    endpoint: Endpoint,
    /// The ready `Authorization` header value, when credentials are set.
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl RpcClient {
    /// A client for `server_url` (`unix:///path/supervisor.sock` or
    /// `http://host:port`). A username without a password sends an empty password.
    pub fn new(
        server_url: &str,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Result<RpcClient, ContextError> {
        let endpoint = Endpoint::parse(server_url)?;
        let auth = match (username, password) {
            (None, None) => None,
            (user, pass) => {
                let raw = format!(
                    "{}:{}",
                    user.unwrap_or_default(),
                    pass.as_ref().map(Secret::expose).unwrap_or("")
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .expect("base64 is a valid header value");
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(RpcClient { endpoint, auth })
    }

    /// `supervisor.getProcessInfo(name)`; `name` is `group:process`.
    pub async fn process_info(&self, name: &str) -> Result<ProcessInfo, ContextError> {
        let v = self
            .call("supervisor.getProcessInfo", &[Param::Str(name)])
            .await?;
        ProcessInfo::from_value(v)
    }

    /// `supervisor.readProcessStderrLog` / `readProcessStdoutLog(name, offset, length)`.
    /// A negative `offset` with `length` 0 reads the last `-offset` bytes. Answers
    /// [`ContextError::ServerError`] when those bytes are not valid UTF-8.
    pub async fn read_log(
        &self,
        channel: LogChannel,
        name: &str,
        offset: i64,
        length: i64,
    ) -> Result<String, ContextError> {
        let params = [Param::Str(name), Param::Int(offset), Param::Int(length)];
        match self.call(channel.method(), &params).await? {
            Value::Str(s) => Ok(s),
            other => Err(ContextError::BadResponse(format!(
                "{} answered {other:?}, not a string",
                channel.method()
            ))),
        }
    }

    /// `supervisor.readLog(offset, length)`: supervisord's own log (`logfile=`), read
    /// like a process log.
    pub async fn read_main_log(&self, offset: i64, length: i64) -> Result<String, ContextError> {
        match self
            .call(
                "supervisor.readLog",
                &[Param::Int(offset), Param::Int(length)],
            )
            .await?
        {
            Value::Str(s) => Ok(s),
            other => Err(ContextError::BadResponse(format!(
                "supervisor.readLog answered {other:?}, not a string"
            ))),
        }
    }

    /// One XML-RPC call: POST /RPC2, then the answer's value or its fault.
    pub(crate) async fn call(
        &self,
        method: &str,
        params: &[Param<'_>],
    ) -> Result<Value, ContextError> {
        let body = encode_call(method, params);
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(a) => a.clone(),
        };
        let mut req = Request::post("/RPC2")
            .header(HOST, host)
            .header(CONTENT_TYPE, "text/xml")
            .header(CONTENT_LENGTH, body.len());
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ContextError::Transport(e.to_string()))?;

        let (status, bytes) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| unix_connect_error(path, e))?;
                exchange(stream, req).await?
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => {
                            ContextError::Refused(addr.clone())
                        }
                        _ => ContextError::Connect {
                            target: addr.clone(),
                            source: e,
                        },
                    })?;
                exchange(stream, req).await?
            }
        };
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => {
                return Err(ContextError::Auth {
                    sent_credentials: self.auth.is_some(),
                })
            }
            StatusCode::INTERNAL_SERVER_ERROR => return Err(ContextError::ServerError),
            other => return Err(ContextError::Http(other)),
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ContextError::BadResponse("the answer is not UTF-8".into()))?;
        parse_response(text)
    }
}

/// Turns a failed `connect` on the unix socket into the reason a user can act on.
fn unix_connect_error(path: &Path, e: std::io::Error) -> ContextError {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    match e.kind() {
        ErrorKind::NotFound => ContextError::SocketMissing(path.to_path_buf()),
        ErrorKind::PermissionDenied => ContextError::PermissionDenied(path.to_path_buf()),
        // Linux answers ECONNREFUSED both for a stale socket and for a path that is
        // not a socket at all; they need different fixes.
        ErrorKind::ConnectionRefused => match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_socket() => ContextError::NotASocket(path.to_path_buf()),
            _ => ContextError::Refused(path.display().to_string()),
        },
        _ => ContextError::Connect {
            target: path.display().to_string(),
            source: e,
        },
    }
}

/// Aborts the spawned connection task when the call is done or dropped (time-out), so
/// that a server that never answers cannot keep a task and a socket alive.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one request over a fresh connection and reads the whole answer.
async fn exchange<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), ContextError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transport = |e: hyper::Error| ContextError::Transport(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(transport)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "supervisord connection ended with an error");
        }
    }));
    let resp = sender.send_request(req).await.map_err(transport)?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| ContextError::Transport(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------
// XML-RPC encoding and decoding (pure; tested on captured bodies)

/// A call parameter. supervisord's methods used here take strings and ints only.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Str(&'a str),
    Int(i64),
}

/// An XML-RPC value as supervisord sends it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    Str(String),
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Nil,
    /// `dateTime.iso8601` / `base64`, kept as text (not used here).
    Other(String),
}

/// The `methodCall` document for `method(params)`.
pub(crate) fn encode_call(method: &str, params: &[Param<'_>]) -> String {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    s.push_str(&quick_xml::escape::escape(method));
    s.push_str("</methodName><params>");
    for p in params {
        s.push_str("<param><value>");
        match p {
            Param::Str(v) => {
                s.push_str("<string>");
                s.push_str(&quick_xml::escape::escape(*v));
                s.push_str("</string>");
            }
            Param::Int(n) => {
                s.push_str("<int>");
                s.push_str(&n.to_string());
                s.push_str("</int>");
            }
        }
        s.push_str("</value></param>");
    }
    s.push_str("</params></methodCall>\n");
    s
}

/// One element of the answer document: its name, child elements and text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Reads the whole document into a tree of [`Element`]s (answers are small).
fn parse_tree(xml: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let new = |e: &quick_xml::events::BytesStart<'_>| Element {
        name: e.local_name().as_ref().to_string(),
        ..Element::default()
    };
    let mut close = |el: Element, stack: &mut Vec<Element>| match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => root = Some(el),
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} at byte {}", reader.error_position()))?;
        match event {
            XmlEvent::Start(e) => stack.push(new(&e)),
            XmlEvent::Empty(e) => close(new(&e), &mut stack),
            XmlEvent::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                close(el, &mut stack);
            }
            XmlEvent::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            XmlEvent::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            XmlEvent::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::unescape(&format!("&{};", &*r))
                        .map_err(|e| e.to_string())?
                        .into_owned(),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            XmlEvent::Eof => break,
            XmlEvent::Decl(_) | XmlEvent::Comment(_) | XmlEvent::PI(_) | XmlEvent::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "empty document".to_string())
}

/// The value inside a `<value>` element.
fn value_of(el: &Element) -> Result<Value, String> {
    // `<value>text</value>` without a type element is a string.
    let Some(typed) = el.children.first() else {
        return Ok(Value::Str(el.text.clone()));
    };
    let int = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("bad <{}> {s:?}", typed.name))
    };
    Ok(match typed.name.as_str() {
        "int" | "i4" | "i8" => Value::Int(int(&typed.text)?),
        "boolean" => Value::Bool(int(&typed.text)? != 0),
        "double" => Value::Double(
            typed
                .text
                .trim()
                .parse()
                .map_err(|_| format!("bad <double> {:?}", typed.text))?,
        ),
        "string" => Value::Str(typed.text.clone()),
        "nil" => Value::Nil,
        "array" => {
            let data = typed.child("data").ok_or("<array> without <data>")?;
            Value::Array(
                data.children
                    .iter()
                    .map(value_of)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut members = Vec::new();
            for m in typed.children.iter().filter(|m| m.name == "member") {
                let name = m.child("name").ok_or("<member> without <name>")?;
                let value = m.child("value").ok_or("<member> without <value>")?;
                members.push((name.text.clone(), value_of(value)?));
            }
            Value::Struct(members)
        }
        _ => Value::Other(typed.text.clone()),
    })
}

/// The value of a `methodResponse`, or its fault as [`ContextError::Fault`].
pub(crate) fn parse_response(xml: &str) -> Result<Value, ContextError> {
    let bad = ContextError::BadResponse;
    let root = parse_tree(xml).map_err(bad)?;
    if root.name != "methodResponse" {
        return Err(bad(format!("<{}> instead of <methodResponse>", root.name)));
    }
    if let Some(fault) = root.child("fault") {
        let value = fault
            .child("value")
            .ok_or_else(|| bad("<fault> without <value>".into()))?;
        let Value::Struct(members) = value_of(value).map_err(bad)? else {
            return Err(bad("<fault> value is not a struct".into()));
        };
        let mut code = 0;
        let mut string = String::new();
        for (k, v) in members {
            match (k.as_str(), v) {
                ("faultCode", Value::Int(n)) => code = n,
                ("faultString", Value::Str(s)) => string = s,
                _ => {}
            }
        }
        return Err(ContextError::Fault { code, string });
    }
    let value = root
        .child("params")
        .and_then(|p| p.child("param"))
        .and_then(|p| p.child("value"))
        .ok_or_else(|| bad("no <params><param><value>".into()))?;
    value_of(value).map_err(bad)
}

// ---------------------------------------------------------------------------------
// Crash context for the dispatcher

/// Limits of one crash-context fetch.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// The whole fetch (info + log tail, retries included). The card goes out
    /// without context rather than wait longer.
    pub timeout: Duration,
    /// Lines of the log tail kept.
    pub tail_lines: usize,
    /// Characters of the log tail kept (the window read is four times as many bytes,
    /// since a character takes up to four).
    pub tail_chars: usize,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            timeout: Duration::from_secs(2),
            tail_lines: 20,
            tail_chars: 2000,
        }
    }
}

/// Fetches [`CrashContext`] for failure events. Built once from the settings.
#[derive(Debug, Clone)]
pub struct ContextSource {
    client: RpcClient,
    opts: ContextOptions,
}

impl ContextSource {
    /// A source for supervisord at `server_url` (`unix:///path/supervisor.sock` or
    /// `http://host:port`). Credentials are those of `[unix_http_server]` /
    /// `[inet_http_server]`: supervisord does not pass them to listeners.
    pub fn new(
        server_url: &str,
        username: Option<String>,
        password: Option<Secret>,
        opts: ContextOptions,
    ) -> Result<Self, ContextError> {
        Ok(ContextSource {
            client: RpcClient::new(server_url, username, password)?,
            opts,
        })
    }

    /// A source for the supervisord that started this listener, from
    /// `SUPERVISOR_SERVER_URL` (which supervisord sets for every child).
    pub fn from_env(
        username: Option<String>,
        password: Option<Secret>,
        opts: ContextOptions,
    ) -> Result<Self, ContextError> {
        let url = std::env::var("SUPERVISOR_SERVER_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or(ContextError::NoServerUrl)?;
        Self::new(&url, username, password, opts)
    }

    /// The client underneath, for other callers (a `check` command).
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    /// Whether `event` is a death worth explaining: BACKOFF, FATAL, or EXITED when
    /// the exit was not expected.
    pub fn wants(event: &ProcessState) -> bool {
        match event.to {
            State::Backoff | State::Fatal => true,
            State::Exited => event.expected != Some(true),
            _ => false,
        }
    }

    /// For EXITED when unexpected, BACKOFF and FATAL: everything supervisord can tell
    /// about why the process died; for other transitions `None`.
    ///
    /// Never fails and never takes longer than [`ContextOptions::timeout`]: whatever
    /// could not be had is explained in [`CrashContext::unavailable`], alongside
    /// whatever was fetched before the problem.
    pub async fn for_event(&self, event: &ProcessState) -> Option<CrashContext> {
        if !Self::wants(event) {
            return None;
        }
        let mut ctx = CrashContext::default();
        let fetched = tokio::time::timeout(self.opts.timeout, self.fill(event, &mut ctx)).await;
        if fetched.is_err() {
            add_reason(
                &mut ctx,
                format!(
                    "supervisord did not answer within {}",
                    humantime::format_duration(self.opts.timeout)
                ),
            );
        }
        if let Some(reason) = &ctx.unavailable {
            tracing::warn!(
                process = %event.display_name(),
                serial = event.serial,
                reason = %reason,
                "crash context incomplete"
            );
        }
        Some(ctx)
    }

    /// Fills `ctx` step by step, so that a time-out keeps what came before it.
    async fn fill(&self, event: &ProcessState, ctx: &mut CrashContext) {
        let name = format!("{}:{}", event.group, event.process);
        let info = match self.client.process_info(&name).await {
            Ok(info) => info,
            Err(e) => {
                add_reason(ctx, e.to_string());
                return;
            }
        };
        // supervisord keeps only the latest run, and a new spawn clears the exit status
        // and spawn error. A process restarted since this event (BACKOFF retries,
        // autorestart, a delivery delayed by an outage) is in another state now, or
        // started after the event: its details would describe the wrong run.
        let restarted_since =
            info.statename != event.to.as_str() || info.start > event.at.timestamp();
        if !restarted_since {
            apply_info(event, &info, ctx);
        }
        // getProcessInfo has no exit status for a run that ended before startsecs
        // (BACKOFF/FATAL), none once the process was restarted (autorestart restarts
        // it before the listener even receives the EXITED event), and only -1 for a
        // signal. supervisord's own log has the line `exited: NAME (exit status 3; not
        // expected)` for every one of them.
        if ctx.exit_status.is_none_or(|s| s < 0) {
            if let Some(exit) = self.exit_from_main_log(event).await {
                ctx.exit_status = exit.status;
                if let Some(signal) = exit.signal {
                    // more telling than getProcessInfo's "Bad exit code -1"
                    ctx.spawn_error = Some(signal);
                }
                if restarted_since {
                    ctx.uptime_secs = exit.uptime_secs;
                }
            } else if restarted_since {
                add_reason(
                    ctx,
                    format!(
                        "the process was restarted before supervisord was asked (now {}): exit details are gone",
                        info.statename
                    ),
                );
            }
        }

        let channel = if !info.stderr_logfile.is_empty() {
            LogChannel::Stderr
        } else if !info.stdout_logfile.is_empty() {
            // redirect_stderr=true: stderr went into the stdout log.
            LogChannel::Stdout
        } else {
            add_reason(
                ctx,
                "the process's output is not logged (stderr_logfile and stdout_logfile are NONE)"
                    .into(),
            );
            return;
        };
        ctx.log_name = Some(channel.as_str().to_string());
        match self.log_tail(channel, &name).await {
            Ok(Some(tail)) => ctx.log_tail = Some(tail),
            Ok(None) => add_reason(ctx, format!("the {} log is empty", channel.as_str())),
            Err(reason) => add_reason(ctx, reason),
        }
    }

    /// The last lines of a log, or why not.
    async fn log_tail(&self, channel: LogChannel, name: &str) -> Result<Option<String>, String> {
        let window = (self.opts.tail_chars.max(1) * 4) as i64;
        match self.read_window(Some((channel, name)), window).await {
            Ok((text, starts_mid_file)) => {
                let tail = cut_tail(
                    &text,
                    starts_mid_file,
                    self.opts.tail_lines,
                    self.opts.tail_chars,
                );
                Ok((!tail.is_empty()).then_some(tail))
            }
            Err(ContextError::Fault {
                code: FAULT_NO_FILE,
                ..
            }) => Err(format!(
                "the {} log file does not exist (yet)",
                channel.as_str()
            )),
            Err(ContextError::ServerError) => Err(format!(
                "{} log tail unreadable (not UTF-8 at the window start, or the log holds non-UTF-8 bytes)",
                channel.as_str()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The last `window` bytes of a process log (`Some`) or of supervisord's own log
    /// (`None`), and whether they start mid-file. A window supervisord cannot decode
    /// (HTTP 500: it starts inside a multi-byte character, or the log holds non-UTF-8
    /// bytes) is retried starting 1, 2 and 3 bytes later — one of those starts on a
    /// character boundary, since a character is at most 4 bytes — then given up on
    /// with [`ContextError::ServerError`].
    async fn read_window(
        &self,
        log: Option<(LogChannel, &str)>,
        window: i64,
    ) -> Result<(String, bool), ContextError> {
        for shift in 0..=3 {
            let bytes = window - shift;
            let read = match log {
                Some((channel, name)) => self.client.read_log(channel, name, -bytes, 0).await,
                None => self.client.read_main_log(-bytes, 0).await,
            };
            match read {
                // Fewer bytes than asked: the window began at the start of the file.
                Ok(text) => {
                    let starts_mid_file = text.len() as i64 >= bytes;
                    return Ok((text, starts_mid_file));
                }
                Err(ContextError::ServerError) => {
                    tracing::debug!(shift, "log window not UTF-8, shifting it");
                }
                Err(e) => return Err(e),
            }
        }
        Err(ContextError::ServerError)
    }

    /// The death of `event`'s process as supervisord logged it, if its line is in the
    /// last 16 KiB of supervisord's log.
    async fn exit_from_main_log(&self, event: &ProcessState) -> Option<LoggedExit> {
        match self.read_window(None, 16 * 1024).await {
            Ok((log, _)) => {
                let not_after = event.at.with_timezone(&chrono::Local).naive_local()
                    + chrono::Duration::seconds(1);
                find_logged_exit(&log, &event.process, not_after)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read supervisord's log for the exit status");
                None
            }
        }
    }
}

/// A process's death as supervisord's own log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedExit {
    /// The exit status; `None` when a signal ended the process.
    pub status: Option<i64>,
    /// "terminated by SIGSEGV (core dumped)" when a signal ended the process.
    pub signal: Option<String>,
    /// From the `spawned:` line before it to the `exited:` line, when both are there.
    pub uptime_secs: Option<i64>,
}

/// Finds the last `exited: NAME (...)` line of supervisord's log at or before
/// `not_after` (local time, as the log writes it) and reads the exit from it:
///
/// ```text
/// 2026-11-26 15:04:08,556 INFO spawned: 'quick' with pid 24213
/// 2026-11-26 15:04:08,592 WARN exited: quick (exit status 1; not expected)
/// 2026-11-26 15:04:09,101 WARN exited: web (terminated by SIGSEGV (core dumped); not expected)
/// ```
pub fn find_logged_exit(
    log: &str,
    process: &str,
    not_after: chrono::NaiveDateTime,
) -> Option<LoggedExit> {
    let exited = format!("exited: {process} (");
    let spawned = format!("spawned: '{process}' with pid ");
    let mut last_spawn: Option<chrono::NaiveDateTime> = None;
    let mut found = None;
    for line in log.lines() {
        // `2026-11-26 15:04:08,556 LEVL message`
        let Some(at) = line
            .get(..23)
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S,%3f").ok())
        else {
            continue;
        };
        if at > not_after {
            break;
        }
        let Some(message) = line[23..].trim_start().split_once(' ').map(|(_, m)| m) else {
            continue;
        };
        if message.starts_with(&spawned) {
            last_spawn = Some(at);
        } else if let Some(rest) = message.strip_prefix(&exited) {
            let how = rest
                .strip_suffix("; not expected)")
                .or_else(|| rest.strip_suffix("; expected)"))
                .unwrap_or(rest);
            let (status, signal) = match how.strip_prefix("exit status ") {
                Some(n) => (n.trim().parse().ok(), None),
                None => (None, Some(how.to_string())),
            };
            found = Some(LoggedExit {
                status,
                signal,
                uptime_secs: last_spawn.map(|s| (at - s).num_seconds()),
            });
        }
    }
    found
}

/// Exit status, spawn error and uptime from `getProcessInfo`.
fn apply_info(event: &ProcessState, info: &ProcessInfo, ctx: &mut CrashContext) {
    if !info.spawnerr.is_empty() {
        ctx.spawn_error = Some(info.spawnerr.clone());
    }
    // supervisord records no exit status for a process that died before startsecs
    // (BACKOFF/FATAL) and reports 0 then: only an EXITED status is real.
    if event.to == State::Exited {
        ctx.exit_status = Some(info.exitstatus);
    }
    ctx.uptime_secs = if info.start <= 0 {
        None
    } else if info.stop >= info.start {
        Some(info.stop - info.start)
    } else if matches!(info.statename.as_str(), "STARTING" | "RUNNING" | "STOPPING") {
        Some(info.now - info.start)
    } else {
        None // a spawn that failed before a process existed: no run to measure
    };
}

fn add_reason(ctx: &mut CrashContext, reason: String) {
    ctx.unavailable = Some(match ctx.unavailable.take() {
        Some(prev) => format!("{prev}; {reason}"),
        None => reason,
    });
}

/// The end of a log window, cut for a card: at most `max_lines` lines and at most
/// `max_chars` characters, cut at a character boundary. When the window does not
/// begin at the start of the file (`starts_mid_file`) its first line is partial and is
/// dropped, unless it is the only line. Trailing blank lines are dropped.
pub fn cut_tail(text: &str, starts_mid_file: bool, max_lines: usize, max_chars: usize) -> String {
    let mut s = text.trim_end_matches(['\n', '\r']);
    if starts_mid_file {
        if let Some(i) = s.find('\n') {
            s = &s[i + 1..];
        }
    }
    // The last `max_lines` lines.
    if max_lines == 0 {
        return String::new();
    }
    if let Some((i, _)) = s.rmatch_indices('\n').nth(max_lines - 1) {
        s = &s[i + 1..];
    }
    // The last `max_chars` characters, starting on a line when one fits whole.
    let count = s.chars().count();
    if count > max_chars {
        let skip = count - max_chars;
        let start = s.char_indices().nth(skip).map_or(s.len(), |(i, _)| i);
        let cut = &s[start..];
        s = match cut.find('\n') {
            Some(i) if i + 1 < cut.len() && !s[..start].ends_with('\n') => &cut[i + 1..],
            _ => cut,
        };
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from supervisord 4.3.0: getProcessInfo of a program that exited 3
    /// (`startsecs=0`, `exitcodes=0`).
    const INFO_EXITED: &str = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n<member>\n<name>name</name>\n<value><string>crash</string></value>\n</member>\n<member>\n<name>group</name>\n<value><string>crash</string></value>\n</member>\n<member>\n<name>start</name>\n<value><int>1795705433</int></value>\n</member>\n<member>\n<name>stop</name>\n<value><int>1795705433</int></value>\n</member>\n<member>\n<name>now</name>\n<value><int>1795705436</int></value>\n</member>\n<member>\n<name>state</name>\n<value><int>100</int></value>\n</member>\n<member>\n<name>statename</name>\n<value><string>EXITED</string></value>\n</member>\n<member>\n<name>spawnerr</name>\n<value><string>Bad exit code 3</string></value>\n</member>\n<member>\n<name>exitstatus</name>\n<value><int>3</int></value>\n</member>\n<member>\n<name>logfile</name>\n<value><string>/tmp/svcap/crash.out</string></value>\n</member>\n<member>\n<name>stdout_logfile</name>\n<value><string>/tmp/svcap/crash.out</string></value>\n</member>\n<member>\n<name>stderr_logfile</name>\n<value><string>/tmp/svcap/crash.err</string></value>\n</member>\n<member>\n<name>pid</name>\n<value><int>0</int></value>\n</member>\n<member>\n<name>description</name>\n<value><string>Nov 26 03:03 PM</string></value>\n</member>\n</struct></value>\n</param>\n</params>\n</methodResponse>\n";

    /// Captured: an unknown process name.
    const FAULT_BAD_NAME_BODY: &str = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>10</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>BAD_NAME: nope</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";

    /// Captured: readProcessStdoutLog of a `redirect_stderr=true` program.
    const LOG_SNOWMAN: &str = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><string>quick death \u{2603} snowman\n</string></value>\n</param>\n</params>\n</methodResponse>\n";

    #[test]
    fn process_info_is_read_from_a_real_answer() {
        let info = ProcessInfo::from_value(parse_response(INFO_EXITED).unwrap()).unwrap();
        assert_eq!(
            info,
            ProcessInfo {
                name: "crash".into(),
                group: "crash".into(),
                start: 1795705433,
                stop: 1795705433,
                now: 1795705436,
                state: 100,
                statename: "EXITED".into(),
                spawnerr: "Bad exit code 3".into(),
                exitstatus: 3,
                pid: 0,
                description: "Nov 26 03:03 PM".into(),
                stdout_logfile: "/tmp/svcap/crash.out".into(),
                stderr_logfile: "/tmp/svcap/crash.err".into(),
            }
        );
    }

    #[test]
    fn a_fault_becomes_a_typed_error() {
        match parse_response(FAULT_BAD_NAME_BODY) {
            Err(ContextError::Fault { code, string }) => {
                assert_eq!(code, FAULT_BAD_NAME);
                assert_eq!(string, "BAD_NAME: nope");
            }
            other => panic!("expected a fault, got {other:?}"),
        }
    }

    #[test]
    fn log_text_keeps_multibyte_characters_and_newlines() {
        assert_eq!(
            parse_response(LOG_SNOWMAN).unwrap(),
            Value::Str("quick death ☃ snowman\n".into())
        );
    }

    #[test]
    fn escaped_log_text_is_unescaped() {
        // Python's xmlrpc escapes &, < and >; character references are legal too.
        let body = "<?xml version='1.0'?><methodResponse><params><param><value><string>a &lt;b&gt; &amp;&amp; c&#33; &#x263A;</string></value></param></params></methodResponse>";
        assert_eq!(
            parse_response(body).unwrap(),
            Value::Str("a <b> && c! ☺".into())
        );
    }

    #[test]
    fn an_untyped_value_is_a_string_and_an_empty_string_is_empty() {
        let untyped =
            "<methodResponse><params><param><value>plain</value></param></params></methodResponse>";
        assert_eq!(parse_response(untyped).unwrap(), Value::Str("plain".into()));
        let empty = "<methodResponse><params><param><value><string></string></value></param></params></methodResponse>";
        assert_eq!(parse_response(empty).unwrap(), Value::Str(String::new()));
    }

    #[test]
    fn arrays_and_booleans_parse() {
        let body = "<methodResponse><params><param><value><array><data><value><string>x</string></value><value><int>7</int></value><value><boolean>1</boolean></value></data></array></value></param></params></methodResponse>";
        assert_eq!(
            parse_response(body).unwrap(),
            Value::Array(vec![
                Value::Str("x".into()),
                Value::Int(7),
                Value::Bool(true)
            ])
        );
    }

    #[test]
    fn broken_answers_are_bad_responses_not_panics() {
        for body in [
            "",
            "<html>500</html>",
            "<methodResponse><params>",
            "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
        ] {
            assert!(
                matches!(parse_response(body), Err(ContextError::BadResponse(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn the_call_escapes_its_string_parameters() {
        let xml = encode_call(
            "supervisor.readProcessStderrLog",
            &[Param::Str("g:<a&b>"), Param::Int(-8000), Param::Int(0)],
        );
        assert!(xml.contains("<methodName>supervisor.readProcessStderrLog</methodName>"));
        assert!(xml.contains("<string>g:&lt;a&amp;b&gt;</string>"));
        assert!(xml.contains("<int>-8000</int>"));
        // and it is well-formed XML-RPC that our own parser reads back
        let root = parse_tree(&xml).unwrap();
        assert_eq!(root.name, "methodCall");
    }

    #[test]
    fn server_urls_parse() {
        assert_eq!(
            Endpoint::parse("unix:///run/supervisor.sock").unwrap(),
            Endpoint::Unix("/run/supervisor.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9001").unwrap(),
            Endpoint::Tcp("127.0.0.1:9001".into())
        );
        assert_eq!(
            Endpoint::parse("http://localhost").unwrap(),
            Endpoint::Tcp("localhost:80".into())
        );
        for bad in ["https://x:1", "unix://relative.sock", "ftp://x", ""] {
            assert!(
                matches!(Endpoint::parse(bad), Err(ContextError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn tail_drops_the_partial_first_line_of_a_mid_file_window() {
        assert_eq!(
            cut_tail("ial line\nfull one\nlast\n", true, 20, 2000),
            "full one\nlast"
        );
        assert_eq!(
            cut_tail("first\nsecond\n", false, 20, 2000),
            "first\nsecond"
        );
        // a single long line is kept even when it began mid-file
        assert_eq!(
            cut_tail("only part of a line", true, 20, 2000),
            "only part of a line"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = cut_tail(&text, false, 3, 2000);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }

    #[test]
    fn tail_keeps_the_last_characters_at_a_boundary_and_whole_lines_when_possible() {
        // 10 characters, multibyte: the cut never splits a character
        assert_eq!(cut_tail("☃☃☃☃☃☃☃☃☃☃☃☃", false, 20, 10), "☃".repeat(10));
        // a cut inside a line drops that partial line when a whole one remains
        assert_eq!(cut_tail("aaaaaaaaaa\nbbb\n", false, 20, 6), "bbb");
        // a cut right after a newline keeps the whole next line
        assert_eq!(cut_tail("aaaa\nbbb\ncc", false, 20, 6), "bbb\ncc");
    }

    const MAIN_LOG: &str = "\
2026-11-26 15:04:07,488 INFO spawned: 'quick' with pid 24201
2026-11-26 15:04:07,524 WARN exited: quick (exit status 1; not expected)
2026-11-26 15:04:08,556 INFO spawned: 'quick' with pid 24213
2026-11-26 15:04:09,592 WARN exited: quick (exit status 2; not expected)
2026-11-26 15:04:09,581 INFO gave up: quick entered FATAL state, too many start retries too quickly
2026-11-26 15:04:10,000 INFO spawned: 'web' with pid 300
2026-11-26 15:05:12,100 WARN exited: web (terminated by SIGSEGV (core dumped); not expected)
2026-11-26 15:05:12,200 INFO spawned: 'web' with pid 301
2026-11-26 15:09:00,000 WARN exited: quick (exit status 9; not expected)
";

    fn local(s: &str) -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn the_logged_exit_is_the_last_one_before_the_event() {
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:05:00")),
            Some(LoggedExit {
                status: Some(2),
                signal: None,
                uptime_secs: Some(1),
            })
        );
        // a later crash is not this event's
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:04:08"))
                .unwrap()
                .status,
            Some(1)
        );
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:04:00")),
            None
        );
    }

    #[test]
    fn a_signal_death_is_told_in_words() {
        assert_eq!(
            find_logged_exit(MAIN_LOG, "web", local("2026-11-26 16:00:00")),
            Some(LoggedExit {
                status: None,
                signal: Some("terminated by SIGSEGV (core dumped)".into()),
                uptime_secs: Some(62),
            })
        );
        // a name that is a prefix of another is not confused with it
        assert_eq!(
            find_logged_exit(MAIN_LOG, "we", local("2026-11-26 16:00:00")),
            None
        );
    }

    #[test]
    fn only_failures_get_context() {
        let mut ev = ProcessState {
            host: "h".into(),
            server: "s".into(),
            serial: 1,
            pool: "p".into(),
            poolserial: 1,
            group: "g".into(),
            process: "p".into(),
            from: State::Running,
            to: State::Exited,
            pid: Some(1),
            tries: None,
            expected: Some(true),
            at: chrono::Utc::now(),
            extra: Vec::new(),
        };
        assert!(!ContextSource::wants(&ev));
        ev.expected = Some(false);
        assert!(ContextSource::wants(&ev));
        for (to, want) in [
            (State::Backoff, true),
            (State::Fatal, true),
            (State::Running, false),
            (State::Stopped, false),
            (State::Starting, false),
        ] {
            ev.to = to;
            assert_eq!(ContextSource::wants(&ev), want, "{to}");
        }
    }
}
