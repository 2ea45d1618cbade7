//! # supervisor-slack
//!
//! A supervisord event listener that turns every process-state change into a
//! colour-coded Slack card: one parent message per process showing its current state,
//! the whole history in that message's thread, the host on every card.
//!
//! ## The flow of one event
//! ```text
//! stdin ─► protocol ─► event ─► store (outbox, SQLite commit) ─► stdout: RESULT 2\nOK
//!                                  │
//!                                  ▼  (async side; never waited on by the reader)
//!                               dispatch ─► card ─► slack ─► store (thread map, delivered)
//! ```
//! The thread that reads stdin never waits on the network: an event is answered as
//! soon as it is committed to the outbox. Everything after that runs on tokio and may
//! take as long as Slack needs.
//!
//! ## The rooms
//! - [`supervisord::protocol`]: the supervisord wire format — read header + payload (`len` in code
//!   points), write `READY` / `RESULT 2\nOK`. Knows nothing of Slack or storage.
//! - [`supervisord::event`]: typed events and states parsed from payload tokens; the *thread key*
//!   (host, group, process).
//! - [`card`]: Block Kit rendering — colours, mrkdwn escaping, templates, size limits.
//!   Pure functions over values.
//! - [`slack`]: the Slack Web API through slack-morphism, and the classification of
//!   every failure (retry, wait, fall back, give up).
//! - [`store`]: the *outbox* of undelivered events and the thread map, in SQLite.
//! - [`supervisord::xmlrpc`]: a typed client for supervisord's XML-RPC (unix socket or
//!   TCP, Basic auth, a time-out per call): process info, log reads and tails,
//!   start / stop / signal, faults as a typed error. Knows nothing of Slack or policy.
//! - [`crash`]: crash context — exit status, spawn error, uptime and the stderr tail
//!   of a process that died, asked through [`supervisord::xmlrpc`]; best effort, bounded.
//! - [`dispatch`]: the policy — ordering per thread key, coalescing, pacing, retries.
//! - [`listen`]: the `listen` command — the stdin reader thread and its hand-off.
//! - [`config`]: settings from the environment and an optional TOML file.
//! - [`routing`]: which channel an event goes to, with which mentions, or none.
//! - [`init`] and [`check`]: the operator's `init` (starter files) and `check`
//!   (is everything set up?) commands.
//! - [`standin`]: a local server speaking Slack's Web API, for tests and `preview`.
//! - [`preview`]: the `preview` command — the stand-in on its own, with Slack's pacing.
//!
//! stdout belongs to supervisord: only [`supervisord::protocol`]'s writer touches it while
//! listening. Logs go to stderr through `tracing`.

pub mod bucket;
pub mod card;
pub mod check;
pub mod config;
pub mod crash;
pub mod dispatch;
pub mod init;
pub mod listen;
pub mod preview;
pub mod routing;
pub mod slack;
pub mod standin;
pub mod store;
pub mod supervisord;
