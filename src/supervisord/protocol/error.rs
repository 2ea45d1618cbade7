//! What can be wrong with the input supervisord (or anything else) writes to the
//! listener, and whether supervisord waits for an answer to it.

use std::fmt;

use super::{shorten, show_bytes, Header, MAX_HEADER_BYTES, MAX_PAYLOAD_CHARS};

/// What was wrong with the input. Each variant carries the offending bytes so the
/// log line can show them.
///
/// Whether supervisord waits for an answer is [`ProtocolError::needs_answer`]: it
/// does for everything it wrote (each write is one event), however broken, and not
/// for input cut off by the end of stdin (supervisord is gone). Which answer is
/// [`ProtocolError::read_whole`]'s.
#[derive(Debug)]
pub enum ProtocolError {
    /// The header line is not UTF-8.
    HeaderNotUtf8 { line: Vec<u8> },
    /// A line longer than [`MAX_HEADER_BYTES`] that does not end in a header.
    HeaderTooLong {
        /// The first bytes of the line.
        start: Vec<u8>,
        /// The length of the whole line, in bytes.
        bytes: usize,
    },
    /// A line that is not a header at all (no `len` or `eventname` token).
    NotAHeader { line: Vec<u8> },
    /// A header with a token that is not `key:value`.
    BadToken { token: String, line: Vec<u8> },
    /// A header without a `len` token.
    MissingLen { line: Vec<u8> },
    /// `len` is not a non-negative integer that fits in 64 bits.
    BadLen { value: String, line: Vec<u8> },
    /// `len` is larger than [`MAX_PAYLOAD_CHARS`]: the payload was skipped, by code
    /// points and without being kept, when the reader returns this.
    LenTooLarge { len: u64, line: Vec<u8> },
    /// The payload is not valid UTF-8 (supervisord always sends UTF-8).
    PayloadNotUtf8 { header: Header, bytes: Vec<u8> },
    /// Input ended inside a header line. Not answered: supervisord is gone.
    HeaderCutOff { line: Vec<u8> },
    /// Input ended inside a payload. Not answered: supervisord is gone.
    Truncated {
        header: Header,
        expected: usize,
        got: usize,
        /// The payload's first bytes (all of them unless it was over the cap).
        partial: Vec<u8>,
    },
}

impl ProtocolError {
    /// Whether supervisord is waiting for an answer to this input: for everything it
    /// wrote, but not for input cut off by the end of stdin.
    pub fn needs_answer(&self) -> bool {
        !self.at_end_of_input()
    }

    /// Whether the event was read whole and cannot be used however often it is sent
    /// (a payload over the cap): it is answered OK, since a FAIL would only have
    /// supervisord send the same bytes again, and again. Everything else the reader
    /// cannot use is answered FAIL, once, so that supervisord sends the event again.
    pub fn read_whole(&self) -> bool {
        matches!(self, ProtocolError::LenTooLarge { .. })
    }

    /// Whether input ended inside this event (the next read is [`Read::Eof`]).
    pub fn at_end_of_input(&self) -> bool {
        matches!(
            self,
            ProtocolError::Truncated { .. } | ProtocolError::HeaderCutOff { .. }
        )
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            HeaderNotUtf8 { line } => {
                write!(f, "header line is not valid UTF-8: {}", show_bytes(line))
            }
            HeaderTooLong { start, bytes } => write!(
                f,
                "not an event header: a line of {bytes} bytes (headers are at most {MAX_HEADER_BYTES}) with no header at its end, starting {}",
                show_bytes(start)
            ),
            NotAHeader { line } => write!(
                f,
                "not an event header (a header has `key:value` tokens such as `ver:3.0 ... eventname:E len:N`): {}",
                show_bytes(line)
            ),
            BadToken { token, line } => write!(
                f,
                "event header has a token that is not `key:value` ({:?}): {}",
                shorten(token, 40),
                show_bytes(line)
            ),
            MissingLen { line } => {
                write!(f, "event header has no `len` token: {}", show_bytes(line))
            }
            BadLen { value, line } if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => write!(
                f,
                "event header has an absurd `len` of {} (more than 2^64 characters: no payload is that long, so none was read): {}",
                shorten(value, 40),
                show_bytes(line)
            ),
            BadLen { value, line } => write!(
                f,
                "event header has a `len` that is not a whole number ({:?}): {}",
                shorten(value, 40),
                show_bytes(line)
            ),
            LenTooLarge { len, line } => write!(
                f,
                "event header has an absurd `len` of {len} characters (at most {MAX_PAYLOAD_CHARS} are read): its payload was skipped unread: {}",
                show_bytes(line)
            ),
            PayloadNotUtf8 { header, bytes } => write!(
                f,
                "payload of {} (serial {}) is not valid UTF-8: {}",
                header.event_name(),
                header.get("serial").unwrap_or("?"),
                show_bytes(bytes)
            ),
            HeaderCutOff { line } => write!(
                f,
                "input ended inside an event header: {}",
                show_bytes(line)
            ),
            Truncated {
                header,
                expected,
                got,
                partial,
            } => write!(
                f,
                "input ended inside the payload of {} (serial {}): `len` says {expected} characters, got {got}: {}",
                header.event_name(),
                header.get("serial").unwrap_or("?"),
                show_bytes(partial)
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

