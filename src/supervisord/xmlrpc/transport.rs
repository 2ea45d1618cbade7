//! HTTP/1.1 to supervisord's `/RPC2`, over its unix socket or TCP: one fresh
//! connection per call (a unix-socket connect costs next to nothing, and supervisord's
//! medusa server closes idle connections anyway), Basic auth when configured, the
//! answer read whole into memory within a size limit. Knows nothing of XML.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Error;
use crate::secret::Secret;

/// The largest answer read into memory. A log window is what the caller asks for
/// (a few KiB for crash context); `getAllProcessInfo` is about 1 KiB per process.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Where supervisord listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, as it goes into the `Host` header and `connect`.
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path/supervisor.sock` or `http://host[:port]` (port 80 when absent),
    /// the two forms of `SUPERVISOR_SERVER_URL`.
    pub(super) fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = || Error::BadUrl(url.to_string());
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

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
        }
    }
}

/// The ready `Authorization` header for `[unix_http_server]` / `[inet_http_server]`
/// credentials; none when neither is set. A username without a password sends an
/// empty password.
pub(super) fn basic_auth(
    username: Option<String>,
    password: Option<Secret>,
) -> Option<HeaderValue> {
    if username.is_none() && password.is_none() {
        return None;
    }
    let raw = format!(
        "{}:{}",
        username.unwrap_or_default(),
        password.as_ref().map(Secret::expose).unwrap_or("")
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    Some(value)
}

/// POSTs `body` to `/RPC2` and returns the answer's body when supervisord answered
/// 200; every other outcome is the [`Error`] a user can act on.
pub(super) async fn post(
    endpoint: &Endpoint,
    auth: Option<&HeaderValue>,
    body: String,
) -> Result<Bytes, Error> {
    let host = match endpoint {
        Endpoint::Unix(_) => "localhost".to_string(),
        Endpoint::Tcp(addr) => addr.clone(),
    };
    let mut req = Request::post("/RPC2")
        .header(HOST, host)
        .header(CONTENT_TYPE, "text/xml")
        .header(CONTENT_LENGTH, body.len());
    if let Some(auth) = auth {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Transport(e.to_string()))?;

    let (status, bytes) = match endpoint {
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
                    std::io::ErrorKind::ConnectionRefused => Error::Refused(addr.clone()),
                    _ => Error::Connect {
                        target: addr.clone(),
                        source: e,
                    },
                })?;
            exchange(stream, req).await?
        }
    };
    match status {
        StatusCode::OK => Ok(bytes),
        StatusCode::UNAUTHORIZED => Err(Error::Auth {
            sent_credentials: auth.is_some(),
        }),
        StatusCode::INTERNAL_SERVER_ERROR => Err(Error::ServerError),
        other => Err(Error::Http(other)),
    }
}

/// Turns a failed `connect` on the unix socket into the reason a user can act on.
fn unix_connect_error(path: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    match e.kind() {
        ErrorKind::NotFound => Error::SocketMissing(path.to_path_buf()),
        ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_path_buf()),
        // Linux answers ECONNREFUSED both for a stale socket and for a path that is
        // not a socket at all; they need different fixes.
        ErrorKind::ConnectionRefused => match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_socket() => Error::NotASocket(path.to_path_buf()),
            _ => Error::Refused(path.display().to_string()),
        },
        _ => Error::Connect {
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
async fn exchange<S>(stream: S, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transport = |e: hyper::Error| Error::Transport(e.to_string());
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
        .map_err(|e| Error::Transport(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                matches!(Endpoint::parse(bad), Err(Error::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_become_one_sensitive_basic_header() {
        assert_eq!(basic_auth(None, None), None);
        let h = basic_auth(Some("user".into()), Some(Secret::new("s3cret"))).unwrap();
        // base64("user:s3cret")
        assert_eq!(h.to_str().unwrap(), "Basic dXNlcjpzM2NyZXQ=");
        assert!(h.is_sensitive());
        let h = basic_auth(Some("user".into()), None).unwrap();
        assert_eq!(h.to_str().unwrap(), "Basic dXNlcjo=");
    }
}
