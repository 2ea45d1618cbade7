//! # supervisor-slack
//!
//! A supervisord event listener that turns every process-state change into a
//! colour-coded Slack card: one parent message per process showing its current state,
//! the whole history in that message's thread, the host on every card.
//!
//! ## The flow of one event
//! ```text
//! stdin ─► supervisord::protocol ─► supervisord::event ─► routing ─► store (outbox, commit)
//!                                                                      │   └─► stdout: RESULT 2\nOK
//!                                                                      ▼   wakeup (async side; never
//!                                                                          waited on by the reader)
//!          dispatch::worker / keeper ─► card ─► dispatch::retry + pacing ─► slack
//!                 │                                                         │
//!                 └─ crash (details over supervisord::xmlrpc)                 ▼
//!                                                          store (thread map, delivered)
//!
//! Slack ─Socket Mode─► interact (ack) ─► actions (signature) ─► supervisord::xmlrpc
//!                          └─► audit: dispatch (paced post in the thread), store
//! ```
//! The thread that reads stdin never waits on the network: an event is answered as
//! soon as it is committed to the outbox. Everything after that runs on tokio and may
//! take as long as Slack needs.
//!
//! ## The rooms, one job each
//! - [`supervisord::protocol`]: the event-listener wire format — header + payload
//!   (`len` in code points), `READY` / `RESULT 2\nOK`. Knows nothing of Slack or storage.
//! - [`supervisord::event`]: typed events and states, the *thread key* (host, group,
//!   process), and the one set of state predicates (failing, failure, crash).
//! - [`listen`]: the `listen` command — the stdin loop, deduplication, gaps, the
//!   hand-off to the outbox; the signal watcher.
//! - [`routing`]: which channel an event goes to, with which mentions, or none.
//! - [`store`]: the *outbox* of undelivered events, the thread map, mutes, the audit of
//!   actions and the key that signs buttons, in SQLite.
//! - [`wakeup`]: the set of threads with new outbox entries, from the reader to the
//!   dispatcher.
//! - [`dispatch`]: the delivery policy — `worker` (order, coalescing, flapping,
//!   broadcasts), `keeper` (parent edits), `board` (the host's board), `pacing` (the
//!   429 gate and the buckets), `retry` (every reaction to a failed call).
//! - [`supervisord::xmlrpc`]: a typed client for supervisord's XML-RPC (unix socket or
//!   TCP, Basic auth, a time-out per call): process info, log reads and tails,
//!   start / stop / signal, faults as a typed error. Knows nothing of Slack or policy.
//! - [`crash`]: crash context — exit status, spawn error, uptime and the stderr tail
//!   of a process that died, asked through [`supervisord::xmlrpc`]; best effort, bounded.
//! - [`reconcile`]: every card compared with what supervisord reports now
//!   (`getAllProcessInfo`: at start, after a gap, after supervisord starts or changes
//!   its groups, every minute); a disagreement becomes an outbox entry.
//! - [`actions`]: what can be asked from a card, as values — the actions, which of
//!   them a state offers, and the signed button value (host, group, process, action).
//! - [`interact`]: clicks from Slack over Socket Mode (slack-morphism's listener, on
//!   the async side): acked at once, then checked (owner host, signature, who may),
//!   deduped, run against supervisord over [`supervisord::xmlrpc`] with a bounded
//!   time, and audited in the thread, the log and the store.
//! - [`card`]: Block Kit rendering — colours, mrkdwn escaping, templates, size limits,
//!   the board, the buttons, and every card and note text. Pure functions over values.
//! - [`slack`]: the Slack Web API through slack-morphism, and the classification of
//!   every failure.
//! - [`bucket`]: the one token bucket (pacing, and the stand-in's limits).
//! - [`config`]: the settings schema, from the environment and an optional TOML file,
//!   and whether `listen` can start.
//! - [`init`] and [`check`]: the operator's `init` (starter files) and `check`
//!   (is everything set up?) commands.
//! - [`standin`]: a local server speaking Slack's Web API and Socket Mode, for tests
//!   and `preview`.
//! - [`preview`]: the `preview` command — the stand-in on its own, with Slack's pacing.
//!
//! stdout belongs to supervisord: only the protocol writer touches it while
//! listening. Logs go to stderr through `tracing`.

pub mod actions;
pub mod bucket;
pub mod card;
pub mod check;
pub mod config;
pub mod crash;
pub mod dispatch;
pub mod init;
pub mod interact;
pub mod listen;
pub mod preview;
pub mod reconcile;
pub mod routing;
pub mod slack;
pub mod standin;
pub mod store;
pub mod supervisord;
pub mod wakeup;
