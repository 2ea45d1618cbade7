//! The supervisord event-listener wire format: read one header + payload, write
//! `READY` and `RESULT`.
//!
//! Parsing works on any [`BufRead`] and knows nothing about stdin, Slack or storage.
//! The traps it avoids (as supervisord 4.x really behaves):
//! - `len` counts Unicode code points, not bytes: the payload is read char by char;
//! - `len:0` is legal and the next header follows at once;
//! - the answer is exactly `RESULT 2\nOK`, with no trailing newline.
//!
//! - every event supervisord writes is answered exactly once: whatever supervisord
//!   writes is part of an event it waits for an answer to. Input the reader cannot
//!   use (a line that is not a header, a broken header, a payload that is not UTF-8)
//!   is answered `RESULT 4\nFAIL`, once, so that supervisord keeps the event and sends
//!   it again; the rest of that write is dropped with it, so that it gets no second
//!   answer (an answer supervisord does not wait for puts the listener in its UNKNOWN
//!   state for good). A payload over [`MAX_PAYLOAD_CHARS`] is skipped by code points
//!   (streamed, never kept) and answered OK: sent again, it would be just as long.
//!
//! Bad input never panics and never desynchronises for good: every problem is a
//! [`ProtocolError`] that names what was wrong and shows the offending bytes, and the
//! reader is left at a place where the next header can be found.

use std::io::{self, BufRead, BufReader, Read as IoRead, Write};

mod error;

pub use error::ProtocolError;

/// The bytes that announce the listener can take an event.
pub const READY: &[u8] = b"READY\n";
/// The answer that accepts an event: 11 bytes, no trailing newline.
pub const RESULT_OK: &[u8] = b"RESULT 2\nOK";
/// The answer that rejects an event: supervisord keeps it and sends it again.
pub const RESULT_FAIL: &[u8] = b"RESULT 4\nFAIL";

/// Longest header line accepted. Real headers are about 120 bytes; of a longer line
/// only its last `MAX_HEADER_BYTES` are kept (a header may follow leftover bytes).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest payload read into memory, in code points. supervisord's biggest payloads
/// are log events of one 128 KiB read plus a short token line; a longer one is skipped
/// (by code points, without keeping it) and answered once.
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

/// The outcome of one read.
#[derive(Debug)]
pub enum Read {
    Event(RawEvent),
    /// Bad input, consumed; the reader is ready for the next header. Answer it when
    /// [`ProtocolError::needs_answer`] says so, and only then.
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

/// Payload bytes kept for the log line of a payload that is skipped, not read.
const SHOWN_BYTES: usize = 128;

fn read_event<R: IoRead>(r: &mut BufReader<R>) -> io::Result<Read> {
    let Some(line) = read_header_line(r)? else {
        return Ok(Read::Eof);
    };
    // Leftover bytes of an earlier bad event may sit in front of a real header on the
    // same line (payloads have no terminator): start where a header parses.
    let start = find_header_start(&line.bytes);
    let text = &line.bytes[start..];
    if !line.terminated {
        // Input ended inside this line: supervisord is gone, nothing to answer.
        return Ok(Read::Bad(ProtocolError::HeaderCutOff {
            line: line.bytes,
        }));
    }
    if !looks_like_header(text) {
        // Not a header, yet supervisord wrote it as part of an event it waits for an
        // answer to: no length is known, so what is already buffered of that write is
        // dropped with it (it gets its one answer with this line).
        resync(r);
        return Ok(Read::Bad(if line.dropped > 0 {
            ProtocolError::HeaderTooLong {
                start: line.head,
                bytes: line.dropped + line.bytes.len(),
            }
        } else {
            ProtocolError::NotAHeader { line: line.bytes }
        }));
    }
    if start > 0 || line.dropped > 0 {
        let discarded = if line.dropped > 0 {
            &line.head[..]
        } else {
            &line.bytes[..start]
        };
        tracing::warn!(
            discarded = %show_bytes(discarded),
            bytes = line.dropped + start,
            "discarded bytes in front of an event header"
        );
    }
    let (tokens, len) = match parse_line(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            // A broken header is still answered once. When its `len` can be read, the
            // payload is skipped exactly; otherwise what is already buffered of it is
            // dropped, up to the next plausible header.
            match salvage_len(text) {
                Some(n) => {
                    let (got, partial) = skip_chars(r, n)?;
                    if got < n {
                        return Ok(Read::Bad(ProtocolError::Truncated {
                            header: lossy_header(text, n),
                            expected: saturate(n),
                            got: saturate(got),
                            partial,
                        }));
                    }
                }
                None => resync(r),
            }
            return Ok(Read::Bad(e));
        }
    };
    let header = Header {
        tokens,
        len: saturate(len),
    };
    if len > MAX_PAYLOAD_CHARS as u64 {
        // supervisord sends exactly `len` characters and waits for the answer: skip
        // them without keeping them, then answer once.
        let (got, partial) = skip_chars(r, len)?;
        if got < len {
            return Ok(Read::Bad(ProtocolError::Truncated {
                header,
                expected: saturate(len),
                got: saturate(got),
                partial,
            }));
        }
        return Ok(Read::Bad(ProtocolError::LenTooLarge {
            len,
            line: text.to_vec(),
        }));
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

fn saturate(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One line as read: its last [`MAX_HEADER_BYTES`] bytes at most.
struct Line {
    /// The line without its `\n` (the tail of it when it was longer than the cap).
    bytes: Vec<u8>,
    /// Bytes dropped from the front of a line longer than [`MAX_HEADER_BYTES`].
    dropped: usize,
    /// The first bytes of a line that was longer than the cap, for the log.
    head: Vec<u8>,
    /// Whether the line ended with `\n` (else input ended).
    terminated: bool,
}

/// Reads bytes up to and including `\n` (returned without it). Memory stays bounded:
/// of a line longer than [`MAX_HEADER_BYTES`] only the end is kept, which is where a
/// header follows leftover bytes. `None` at end of input.
fn read_header_line<R: BufRead>(r: &mut R) -> io::Result<Option<Line>> {
    let mut bytes = Vec::with_capacity(160);
    let mut dropped = 0usize;
    let mut head = Vec::new();
    let terminated = loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if bytes.is_empty() && dropped == 0 {
                return Ok(None);
            }
            break false;
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let end = newline.unwrap_or(buf.len());
        bytes.extend_from_slice(&buf[..end]);
        r.consume(newline.map_or(end, |i| i + 1));
        if bytes.len() > 2 * MAX_HEADER_BYTES {
            keep_tail(&mut bytes, &mut dropped, &mut head);
        }
        if newline.is_some() {
            break true;
        }
    };
    if bytes.len() > MAX_HEADER_BYTES {
        keep_tail(&mut bytes, &mut dropped, &mut head);
    }
    Ok(Some(Line {
        bytes,
        dropped,
        head,
        terminated,
    }))
}

fn keep_tail(bytes: &mut Vec<u8>, dropped: &mut usize, head: &mut Vec<u8>) {
    if *dropped == 0 {
        *head = bytes[..64].to_vec();
    }
    let cut = bytes.len() - MAX_HEADER_BYTES;
    bytes.drain(..cut);
    *dropped += cut;
}

/// Whether a line is one supervisord sent as a header (and so waits for an answer to):
/// it has a `len` or an `eventname` token. Payload lines (`processname:a groupname:a
/// ...`, `when:1`, log text) have neither.
fn looks_like_header(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.split(|&b| b == b' ')
        .any(|t| t.starts_with(b"len:") || t.starts_with(b"eventname:"))
}

/// The first `len:` token of a broken header, when it is a number.
fn salvage_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let value = line
        .split(|&b| b == b' ')
        .find_map(|t| t.strip_prefix(b"len:"))?;
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A header made of a broken line's tokens, for the error of a payload cut off.
fn lossy_header(line: &[u8], len: u64) -> Header {
    let text = String::from_utf8_lossy(line);
    let tokens = text
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (t.to_string(), String::new()),
        })
        .collect();
    Header {
        tokens,
        len: saturate(len),
    }
}

/// After a broken header whose `len` cannot be read, the rest of that event (if any)
/// is usually already buffered — supervisord writes header and payload together. Drop
/// buffered bytes up to the next plausible header so they are not taken for events of
/// their own; never block. (Lines that are still read from it are not headers and are
/// not answered.)
fn resync<R: IoRead>(r: &mut BufReader<R>) {
    let buf = r.buffer();
    if buf.is_empty() {
        return;
    }
    let skip = match ver_positions(buf).next() {
        Some(i) => i,
        // Keep a `v`, `ve` or `ver` at the very end: it may start the next header.
        None => buf.len() - (1..=3).rev().find(|&k| buf.ends_with(&b"ver:"[..k])).unwrap_or(0),
    };
    if skip > 0 {
        tracing::debug!(discarded = %show_bytes(&buf[..skip]), bytes = skip, "discarded the rest of a bad event");
    }
    r.consume(skip);
}

/// Where `ver:` occurs, except inside `server:`.
fn ver_positions(hay: &[u8]) -> impl Iterator<Item = usize> + '_ {
    hay.windows(4)
        .enumerate()
        .filter(move |&(i, w)| w == b"ver:" && !(i >= 3 && &hay[i - 3..i] == b"ser"))
        .map(|(i, _)| i)
}

fn find_header_start(line: &[u8]) -> usize {
    if line.starts_with(b"ver:") && parse_line(line).is_ok() {
        return 0;
    }
    // Only trust an embedded `ver:` when a header parses from it; take the last one,
    // which is the header that ends the line. Failing that, a broken header is shown
    // from its `ver:` on.
    ver_positions(line)
        .filter(|&at| parse_line(&line[at..]).is_ok())
        .last()
        .or_else(|| {
            ver_positions(line)
                .filter(|&at| looks_like_header(&line[at..]))
                .last()
        })
        .unwrap_or(0)
}

/// Parses a header line (without its `\n`). A `len` over [`MAX_PAYLOAD_CHARS`] is an
/// error here; the reader skips such a payload instead.
pub fn parse_header(line: &[u8]) -> Result<Header, ProtocolError> {
    let (tokens, len) = parse_line(line)?;
    if len > MAX_PAYLOAD_CHARS as u64 {
        return Err(ProtocolError::LenTooLarge {
            len,
            line: line.to_vec(),
        });
    }
    Ok(Header {
        tokens,
        len: saturate(len),
    })
}

type Tokens = Vec<(String, String)>;

/// The tokens and `len` of a header line, whatever the size of `len`.
fn parse_line(line: &[u8]) -> Result<(Tokens, u64), ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::HeaderNotUtf8 {
        line: line.to_vec(),
    })?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut tokens = Vec::new();
    for token in text.split(' ').filter(|t| !t.is_empty()) {
        match token.split_once(':') {
            Some((k, v)) if !k.is_empty() => tokens.push((k.to_string(), v.to_string())),
            _ => {
                return Err(ProtocolError::BadToken {
                    token: token.to_string(),
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
    // Digits only: `u64::from_str` would also take a leading `+`.
    let len = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u64>().ok()
    } else {
        None
    };
    let Some(len) = len else {
        return Err(ProtocolError::BadLen {
            value,
            line: line.to_vec(),
        });
    };
    Ok((tokens, len))
}

/// Reads `n` Unicode code points. Returns the bytes and how many code points were
/// read (fewer than `n` only at EOF).
fn read_chars<R: BufRead>(r: &mut R, n: usize) -> io::Result<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(n + n / 8);
    let got = consume_chars(r, n as u64, |b| out.extend_from_slice(b))?;
    Ok((out, saturate(got)))
}

/// Skips `n` code points without keeping them (but the first few bytes, for the log).
fn skip_chars<R: BufRead>(r: &mut R, n: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut shown = Vec::new();
    let got = consume_chars(r, n, |b| {
        let room = SHOWN_BYTES.saturating_sub(shown.len());
        shown.extend_from_slice(&b[..b.len().min(room)]);
    })?;
    Ok((got, shown))
}

/// Consumes `n` Unicode code points, handing the consumed bytes to `sink`. Returns how
/// many code points were consumed (fewer than `n` only at EOF). Invalid UTF-8 is
/// counted one unit per byte that cannot start or continue a character, so a bad
/// payload still has an end.
fn consume_chars<R: BufRead>(
    r: &mut R,
    n: u64,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut count = 0u64;
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
        sink(&buf[..i]);
        r.consume(i);
        if count == n && owed == 0 {
            break;
        }
    }
    Ok(count)
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

/// Writes `RESULT 4\nFAIL` and `READY\n` together and flushes: supervisord keeps the
/// event it sent and sends it again.
pub fn write_fail_ready<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(RESULT_FAIL)?;
    w.write_all(READY)?;
    w.flush()
}

/// Writes `RESULT 2\nOK` and `READY\n` together and flushes: through a buffered
/// writer, one write, so supervisord is woken once for both.
pub fn write_ok_ready<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(RESULT_OK)?;
    w.write_all(READY)?;
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
