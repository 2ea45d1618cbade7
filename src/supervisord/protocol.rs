//! The supervisord event-listener wire format: read one header + payload, write
//! `READY` and `RESULT`.
//!
//! Parsing works on any [`BufRead`] and knows nothing about stdin, Slack or storage.
//! The traps it avoids (as supervisord 4.x really behaves):
//! - `len` counts Unicode code points, not bytes: the payload is read char by char;
//! - `len:0` is legal and the next header follows at once;
//! - the answer is exactly `RESULT 2\nOK`, with no trailing newline.
//!
//! Bad input never panics and never desynchronises for good: every problem is a
//! [`ProtocolError`] that names what was wrong and shows the offending bytes, and the
//! reader is left at a place where the next header can be found.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read as IoRead, Write};

/// The bytes that announce the listener can take an event.
pub const READY: &[u8] = b"READY\n";
/// The answer that accepts an event: 11 bytes, no trailing newline.
pub const RESULT_OK: &[u8] = b"RESULT 2\nOK";

/// Longest header line accepted. Real headers are about 120 bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest `len` accepted, in code points. supervisord's biggest payloads are log
/// events of one 128 KiB read plus a short token line.
pub const MAX_PAYLOAD_CHARS: usize = 1024 * 1024;

/// A header line: `key:value` tokens in the order they came, unknown keys kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub tokens: Vec<(String, String)>,
    /// Payload length in Unicode code points.
    pub len: usize,
}

impl Header {
    /// The value of the first token named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `eventname`, or the empty string when the header has none.
    pub fn event_name(&self) -> &str {
        self.get("eventname").unwrap_or("")
    }

    /// A numeric token such as `serial` or `poolserial`.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

/// One event exactly as supervisord framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub header: Header,
    pub payload: String,
}

/// What was wrong with the input. Each variant carries the offending bytes so the
/// log line can show them.
#[derive(Debug)]
pub enum ProtocolError {
    /// The header line is not UTF-8.
    HeaderNotUtf8 { line: Vec<u8> },
    /// The header line exceeds [`MAX_HEADER_BYTES`] without a newline.
    HeaderTooLong { start: Vec<u8> },
    /// A token without `:` — typically a line that is not a header at all.
    NotAHeader { line: Vec<u8> },
    /// A header without a `len` token.
    MissingLen { line: Vec<u8> },
    /// `len` is not a non-negative integer.
    BadLen { value: String, line: Vec<u8> },
    /// `len` is larger than [`MAX_PAYLOAD_CHARS`].
    LenTooLarge { len: u64, line: Vec<u8> },
    /// The payload is not valid UTF-8 (supervisord always sends UTF-8).
    PayloadNotUtf8 { header: Header, bytes: Vec<u8> },
    /// stdin ended inside a payload.
    Truncated {
        header: Header,
        expected: usize,
        got: usize,
        partial: Vec<u8>,
    },
}

impl ProtocolError {
    /// Whether supervisord is waiting for an answer to this input: every problem with
    /// a header or payload is, so the listener answers OK (never FAIL, which would
    /// make supervisord resend the same bytes in a hot loop).
    pub fn needs_answer(&self) -> bool {
        !matches!(self, ProtocolError::Truncated { .. })
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            HeaderNotUtf8 { line } => {
                write!(f, "header line is not valid UTF-8: {}", show_bytes(line))
            }
            HeaderTooLong { start } => write!(
                f,
                "header line is longer than {MAX_HEADER_BYTES} bytes without a newline: {}",
                show_bytes(start)
            ),
            NotAHeader { line } => write!(
                f,
                "not an event header (expected `key:value` tokens such as `ver:3.0 ... len:N`): {}",
                show_bytes(line)
            ),
            MissingLen { line } => {
                write!(f, "event header has no `len` token: {}", show_bytes(line))
            }
            BadLen { value, line } => write!(
                f,
                "event header has a `len` that is not a whole number ({:?}): {}",
                shorten(value, 40),
                show_bytes(line)
            ),
            LenTooLarge { len, line } => write!(
                f,
                "event header has an absurd `len` of {len} (at most {MAX_PAYLOAD_CHARS} accepted): {}",
                show_bytes(line)
            ),
            PayloadNotUtf8 { header, bytes } => write!(
                f,
                "payload of {} (serial {}) is not valid UTF-8: {}",
                header.event_name(),
                header.get("serial").unwrap_or("?"),
                show_bytes(bytes)
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

/// The outcome of one read.
#[derive(Debug)]
pub enum Read {
    Event(RawEvent),
    /// Bad input, consumed; the reader is ready for the next header.
    Bad(ProtocolError),
    /// Clean end of input between events.
    Eof,
}

/// Reads events from a byte stream (stdin in production, a slice in tests).
pub struct EventReader<R> {
    inner: BufReader<R>,
}

impl<R: IoRead> EventReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, inner),
        }
    }

    /// Blocks until input is available; `false` at end of input. Lets the caller tell
    /// "idle, waiting for supervisord" from "an event is in hand".
    pub fn wait_for_input(&mut self) -> io::Result<bool> {
        loop {
            match self.inner.fill_buf() {
                Ok(b) => return Ok(!b.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one event. I/O errors are returned as `Err`; protocol problems as
    /// [`Read::Bad`], after which reading may simply go on.
    pub fn next_event(&mut self) -> io::Result<Read> {
        read_event(&mut self.inner)
    }
}

fn read_event<R: IoRead>(r: &mut BufReader<R>) -> io::Result<Read> {
    let line = match read_header_line(r)? {
        HeaderLine::Eof => return Ok(Read::Eof),
        HeaderLine::TooLong(start) => {
            resync(r);
            return Ok(Read::Bad(ProtocolError::HeaderTooLong { start }));
        }
        HeaderLine::Line(line) => line,
    };
    // Leftover bytes of an earlier bad event may sit in front of a real header on the
    // same line (payloads have no terminator): start at the last `ver:` token.
    let start = find_header_start(&line);
    let header = match parse_header(&line[start..]) {
        Ok(h) => h,
        Err(e) => {
            resync(r);
            return Ok(Read::Bad(e));
        }
    };
    if start > 0 {
        tracing::warn!(
            discarded = %show_bytes(&line[..start]),
            "discarded bytes in front of an event header"
        );
    }
    let expected = header.len;
    let (bytes, got) = read_chars(r, expected)?;
    if got < expected {
        return Ok(Read::Bad(ProtocolError::Truncated {
            header,
            expected,
            got,
            partial: bytes,
        }));
    }
    match String::from_utf8(bytes) {
        Ok(payload) => Ok(Read::Event(RawEvent { header, payload })),
        Err(e) => Ok(Read::Bad(ProtocolError::PayloadNotUtf8 {
            header,
            bytes: e.into_bytes(),
        })),
    }
}

enum HeaderLine {
    Line(Vec<u8>),
    TooLong(Vec<u8>),
    Eof,
}

/// Reads bytes up to and including `\n` (returned without it), at most
/// [`MAX_HEADER_BYTES`]. An unterminated last line at EOF counts as a line.
fn read_header_line<R: BufRead>(r: &mut R) -> io::Result<HeaderLine> {
    let mut line = Vec::with_capacity(160);
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                HeaderLine::Eof
            } else {
                HeaderLine::Line(line)
            });
        }
        let room = MAX_HEADER_BYTES - line.len();
        match buf.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                return Ok(HeaderLine::Line(line));
            }
            None => {
                let n = buf.len().min(room);
                line.extend_from_slice(&buf[..n]);
                r.consume(n);
                if line.len() >= MAX_HEADER_BYTES {
                    return Ok(HeaderLine::TooLong(line[..64].to_vec()));
                }
            }
        }
    }
}

/// After a bad header the rest of that event (if any) is usually already buffered —
/// supervisord writes header and payload together. Drop buffered bytes up to the next
/// plausible header so they are not answered as events of their own; never block.
fn resync<R: IoRead>(r: &mut BufReader<R>) {
    let buf = r.buffer();
    if buf.is_empty() {
        return;
    }
    let skip = find_subslice(buf, b"ver:").unwrap_or(buf.len());
    if skip > 0 {
        tracing::debug!(discarded = %show_bytes(&buf[..skip]), "discarded the rest of a bad event");
    }
    r.consume(skip);
}

fn find_header_start(line: &[u8]) -> usize {
    if line.starts_with(b"ver:") {
        return 0;
    }
    // Only trust an embedded `ver:` when a real header follows it.
    let mut best = 0;
    let mut from = 0;
    while let Some(i) = find_subslice(&line[from..], b"ver:") {
        let at = from + i;
        if parse_header(&line[at..]).is_ok() {
            best = at;
        }
        from = at + 4;
    }
    best
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a header line (without its `\n`).
pub fn parse_header(line: &[u8]) -> Result<Header, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::HeaderNotUtf8 {
        line: line.to_vec(),
    })?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut tokens = Vec::new();
    for token in text.split(' ').filter(|t| !t.is_empty()) {
        match token.split_once(':') {
            Some((k, v)) if !k.is_empty() => tokens.push((k.to_string(), v.to_string())),
            _ => {
                return Err(ProtocolError::NotAHeader {
                    line: line.to_vec(),
                })
            }
        }
    }
    if tokens.is_empty() {
        return Err(ProtocolError::NotAHeader {
            line: line.to_vec(),
        });
    }
    let value = match tokens.iter().find(|(k, _)| k == "len") {
        Some((_, v)) => v.clone(),
        None => {
            return Err(ProtocolError::MissingLen {
                line: line.to_vec(),
            })
        }
    };
    let len: u64 = value.parse().map_err(|_| ProtocolError::BadLen {
        value: value.clone(),
        line: line.to_vec(),
    })?;
    if len > MAX_PAYLOAD_CHARS as u64 {
        return Err(ProtocolError::LenTooLarge {
            len,
            line: line.to_vec(),
        });
    }
    Ok(Header {
        tokens,
        len: len as usize,
    })
}

/// Reads `n` Unicode code points. Returns the bytes and how many code points were
/// read (fewer than `n` only at EOF). Invalid UTF-8 is counted one unit per byte
/// that cannot start or continue a character, so a bad payload still has an end.
fn read_chars<R: BufRead>(r: &mut R, n: usize) -> io::Result<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(n + n / 8);
    let mut count = 0usize;
    // Continuation bytes still owed by the character most recently started.
    let mut owed = 0usize;
    while count < n || owed > 0 {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            let is_cont = b & 0xC0 == 0x80;
            if owed > 0 {
                if is_cont {
                    owed -= 1;
                    i += 1;
                    continue;
                }
                // A character cut short: what follows starts a new unit.
                owed = 0;
            }
            if count == n {
                break;
            }
            owed = match b {
                0x00..=0x7F => 0,
                0xC2..=0xDF => 1,
                0xE0..=0xEF => 2,
                0xF0..=0xF4 => 3,
                _ => 0, // stray continuation or invalid lead: one unit by itself
            };
            count += 1;
            i += 1;
        }
        out.extend_from_slice(&buf[..i]);
        r.consume(i);
        if count == n && owed == 0 {
            break;
        }
    }
    Ok((out, count))
}

/// Writes `READY\n` and flushes.
pub fn write_ready<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(READY)?;
    w.flush()
}

/// Writes `RESULT 2\nOK` (no newline) and flushes.
pub fn write_ok<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(RESULT_OK)?;
    w.flush()
}

/// Frames a payload the way supervisord does, `len` in code points. Used by tests,
/// benchmarks and the load driver.
pub fn frame(tokens: &[(&str, &str)], payload: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in tokens {
        out.extend_from_slice(k.as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(format!("len:{}\n", payload.chars().count()).as_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

/// Bytes shown escaped and shortened for a log line.
pub fn show_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let shown: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        format!("\"{shown}\" … ({} bytes in all)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
