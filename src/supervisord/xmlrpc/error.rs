//! What can go wrong in a call: supervisord's typed [`Fault`]s and every transport
//! failure, each worded for the user who reads it.

use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;

/// supervisord's fault codes (`supervisor.xmlrpc.Faults`), as [`Error::Fault`]
/// carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    UnknownMethod,
    IncorrectParameters,
    BadArguments,
    SignatureUnsupported,
    ShutdownState,
    /// No such process or group.
    BadName,
    BadSignal,
    /// The log file does not exist (yet).
    NoFile,
    NotExecutable,
    Failed,
    AbnormalTermination,
    SpawnError,
    /// `startProcess` of a process that is already running.
    AlreadyStarted,
    /// `stopProcess` / `signalProcess` of a process that is not running.
    NotRunning,
    Success,
    AlreadyAdded,
    StillRunning,
    CantReread,
    /// A code this client does not know (a later supervisord, or another server).
    Other(i32),
}

impl Fault {
    const KNOWN: [(Fault, i32, &'static str); 18] = [
        (Fault::UnknownMethod, 1, "UNKNOWN_METHOD"),
        (Fault::IncorrectParameters, 2, "INCORRECT_PARAMETERS"),
        (Fault::BadArguments, 3, "BAD_ARGUMENTS"),
        (Fault::SignatureUnsupported, 4, "SIGNATURE_UNSUPPORTED"),
        (Fault::ShutdownState, 6, "SHUTDOWN_STATE"),
        (Fault::BadName, 10, "BAD_NAME"),
        (Fault::BadSignal, 11, "BAD_SIGNAL"),
        (Fault::NoFile, 20, "NO_FILE"),
        (Fault::NotExecutable, 21, "NOT_EXECUTABLE"),
        (Fault::Failed, 30, "FAILED"),
        (Fault::AbnormalTermination, 40, "ABNORMAL_TERMINATION"),
        (Fault::SpawnError, 50, "SPAWN_ERROR"),
        (Fault::AlreadyStarted, 60, "ALREADY_STARTED"),
        (Fault::NotRunning, 70, "NOT_RUNNING"),
        (Fault::Success, 80, "SUCCESS"),
        (Fault::AlreadyAdded, 90, "ALREADY_ADDED"),
        (Fault::StillRunning, 91, "STILL_RUNNING"),
        (Fault::CantReread, 92, "CANT_REREAD"),
    ];

    /// The fault for a `faultCode`.
    pub fn from_code(code: i32) -> Fault {
        Self::KNOWN
            .iter()
            .find(|(_, c, _)| *c == code)
            .map_or(Fault::Other(code), |(f, _, _)| *f)
    }

    /// The `faultCode` on the wire.
    pub fn code(self) -> i32 {
        match self {
            Fault::Other(code) => code,
            known => Self::KNOWN
                .iter()
                .find(|(f, _, _)| *f == known)
                .map_or(0, |(_, c, _)| *c),
        }
    }

    /// supervisord's name for it (`BAD_NAME`), `UNKNOWN` for [`Fault::Other`].
    pub fn name(self) -> &'static str {
        Self::KNOWN
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("UNKNOWN", |(_, _, n)| n)
    }
}

/// Why a call to supervisord failed. The `Display` text is what a user reads (on a
/// card, in `check`), so each one names the cause and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// 401: the server has a username and the client sent none, or the wrong one.
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
    /// The call's time-out ([`Client::with_timeout`]) passed without an answer.
    #[error("supervisord did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// supervisord refused the call, such as [`Fault::BadName`] for an unknown process.
    #[error("supervisord refused: {string} (fault {})", .fault.code())]
    Fault { fault: Fault, string: String },
    #[error("unreadable XML-RPC answer from supervisord: {0}")]
    BadResponse(String),
}

impl Error {
    /// The fault, when supervisord refused the call.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            Error::Fault { fault, .. } => Some(*fault),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_codes_are_supervisords() {
        // supervisor/xmlrpc.py, class Faults
        for (fault, code, name) in [
            (Fault::UnknownMethod, 1, "UNKNOWN_METHOD"),
            (Fault::BadArguments, 3, "BAD_ARGUMENTS"),
            (Fault::BadName, 10, "BAD_NAME"),
            (Fault::BadSignal, 11, "BAD_SIGNAL"),
            (Fault::NoFile, 20, "NO_FILE"),
            (Fault::AlreadyStarted, 60, "ALREADY_STARTED"),
            (Fault::NotRunning, 70, "NOT_RUNNING"),
            (Fault::CantReread, 92, "CANT_REREAD"),
        ] {
            assert_eq!(Fault::from_code(code), fault);
            assert_eq!(fault.code(), code);
            assert_eq!(fault.name(), name);
        }
        assert_eq!(Fault::from_code(12345), Fault::Other(12345));
        assert_eq!(Fault::Other(12345).code(), 12345);
        assert_eq!(Fault::Other(12345).name(), "UNKNOWN");
    }

    #[test]
    fn a_fault_reads_as_supervisords_words_and_code() {
        let e = Error::Fault {
            fault: Fault::BadName,
            string: "BAD_NAME: ghost:ghost".into(),
        };
        assert_eq!(
            e.to_string(),
            "supervisord refused: BAD_NAME: ghost:ghost (fault 10)"
        );
        assert_eq!(e.fault(), Some(Fault::BadName));
        assert_eq!(Error::ServerError.fault(), None);
        assert_eq!(
            Error::Timeout(Duration::from_millis(300)).to_string(),
            "supervisord did not answer within 300ms"
        );
    }
}
