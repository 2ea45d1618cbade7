//! An event builder: one [`ProcessState`] with sensible defaults, changed only where a
//! test cares.
//!
//! ```ignore
//! use common::events::{ev, EventBuilder};
//!
//! let e = ev("web", State::Running).from(State::Starting).pid(42).serial(7);
//! ```
//!
//! Defaults: host `web-1`, server `supervisor`, pool `slack`, serial and poolserial 1,
//! group = the process name, `from` a plausible previous state
//! ([`samples::from_state`]), no pid, tries or exit expectation, no extra tokens, and
//! the fixed time [`samples::fixed_time`] (so that cards are the same on every run).

use chrono::{DateTime, Utc};
use supervisor_slack::card::samples;
use supervisor_slack::supervisord::event::{ProcessState, State};

/// `process` moving to `to`, with the defaults above.
pub fn ev(process: &str, to: State) -> ProcessState {
    ProcessState {
        host: "web-1".into(),
        server: "supervisor".into(),
        serial: 1,
        pool: "slack".into(),
        poolserial: 1,
        group: process.into(),
        process: process.into(),
        from: samples::from_state(to),
        to,
        pid: None,
        tries: None,
        expected: None,
        at: samples::fixed_time(),
        extra: Vec::new(),
        reconciled: None,
    }
}

/// Chainable setters on [`ProcessState`], for [`ev`] and for events made elsewhere
/// (such as [`samples::event`]). `pid`, `tries` and `expected` take a value or an
/// `Option`.
pub trait EventBuilder: Sized {
    fn from(self, state: State) -> Self;
    fn host(self, host: &str) -> Self;
    fn server(self, server: &str) -> Self;
    fn pool(self, pool: &str) -> Self;
    fn group(self, group: &str) -> Self;
    /// Sets the serial and the poolserial (they move together unless a test says
    /// otherwise with [`EventBuilder::poolserial`] afterwards).
    fn serial(self, serial: u64) -> Self;
    fn poolserial(self, poolserial: u64) -> Self;
    fn pid(self, pid: impl Into<Option<u32>>) -> Self;
    fn tries(self, tries: impl Into<Option<u32>>) -> Self;
    /// For EXITED: whether the exit code was one of `exitcodes`.
    fn expected(self, expected: impl Into<Option<bool>>) -> Self;
    fn at(self, at: DateTime<Utc>) -> Self;
}

impl EventBuilder for ProcessState {
    fn from(mut self, state: State) -> Self {
        self.from = state;
        self
    }
    fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }
    fn server(mut self, server: &str) -> Self {
        self.server = server.into();
        self
    }
    fn pool(mut self, pool: &str) -> Self {
        self.pool = pool.into();
        self
    }
    fn group(mut self, group: &str) -> Self {
        self.group = group.into();
        self
    }
    fn serial(mut self, serial: u64) -> Self {
        self.serial = serial;
        self.poolserial = serial;
        self
    }
    fn poolserial(mut self, poolserial: u64) -> Self {
        self.poolserial = poolserial;
        self
    }
    fn pid(mut self, pid: impl Into<Option<u32>>) -> Self {
        self.pid = pid.into();
        self
    }
    fn tries(mut self, tries: impl Into<Option<u32>>) -> Self {
        self.tries = tries.into();
        self
    }
    fn expected(mut self, expected: impl Into<Option<bool>>) -> Self {
        self.expected = expected.into();
        self
    }
    fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }
}
