//! # supervisor-slack
//!
//! A supervisord event listener that turns every process-state change into a
//! colour-coded Slack card: one parent message per process showing its current state,
//! the whole history in that message's thread, the host on every card.
//!
//! ## The flow of one event
//! ```text
//! stdin ─► supervisord::protocol ─► supervisord::event ─► routing ─► store::Outbox (commit)
//!                                                                      │   └─► stdout: RESULT 2\nOK
//!                                                                      ▼   wakeup (async side; never
//!                                                                          waited on by the reader)
//!          dispatch: worker (replies) · keeper (the parent) ─► card ─► dispatch::retry ─► slack
//!                 │                                                       │ (budget: store::SharedState)
//!                 └─ crash (details over supervisord::xmlrpc)              ▼
//!                                              store::Outbox (delivered) · store::SharedState (thread map)
//!
//! Slack ─Socket Mode─► interact (ack, check) ─► supervisord::xmlrpc ─► a note in the thread (dispatch)
//!       /supervisor  ─► interact::command (check) ─► interact::ask::Source ─► the ack, or response_url
//! ```
//! The thread that reads stdin never waits on the network: an event is answered as
//! soon as it is committed to the outbox. Everything after that runs on tokio and may
//! take as long as Slack needs. [`app`] builds the parts once and runs them with one
//! [`shutdown::Shutdown`].
//!
//! ## The rooms, one job each
//! - [`app`]: the composition root of `listen` — settings, the outbox, the shared
//!   state, one Slack client, one XML-RPC client, built once; one shutdown.
//! - [`supervisord::protocol`]: the event-listener wire format — header + payload
//!   (`len` in code points), `READY` / `RESULT`; every write answered once.
//! - [`supervisord::event`]: typed events and states, the *thread key* (host, group,
//!   process), and the one `failing` predicate every room asks.
//! - [`supervisord::xmlrpc`]: a typed client for supervisord's XML-RPC (unix socket or
//!   TCP, Basic auth, a time-out per call, log tails): no Slack, no policy.
//! - [`listen`]: the reader — the stdin loop, deduplication, gaps, the hand-off to the
//!   outbox, events held in memory while the disk refuses them.
//! - [`routing`]: which channel an event goes to, with which mentions, or none.
//! - [`store`]: the two kinds of state — the *outbox* (local, synchronous, the
//!   reader's only store) and the *shared state* (one async trait: thread map,
//!   budget and 429 gate, mutes, clicks and audit, board locations, signing key,
//!   failure episodes, each process's last crash; SQLite for one host). The only
//!   room that names a database.
//! - [`pacing`]: one listener's budget — token buckets, the 429 gate, the pace learnt
//!   from Slack's answers — as the one-host shared state keeps it.
//! - [`wakeup`]: the set of threads with new outbox entries, from the reader to the
//!   dispatcher.
//! - [`dispatch`]: the delivery policy — `worker` (order, coalescing, flapping,
//!   broadcasts, notes), `keeper` (the only task that posts or edits a parent),
//!   `board` (the host's board), over one delivery core; `episode` decides which
//!   replies the channel sees too (once per failure episode, on supervisord's
//!   clock); `retry` holds every reaction to a failed call.
//! - [`crash`]: crash context — exit status, spawn error, uptime and the stderr tail
//!   of a process that died; best effort, bounded.
//! - [`reconcile`]: every card compared with what supervisord reports now; a
//!   disagreement becomes an outbox entry. Its [`reconcile::Trigger`] is the reader's
//!   pulse (the one quiet-wait).
//! - [`interact`]: clicks over Socket Mode — acked at once, checked (owner, signature,
//!   age, who may), deduped, run against supervisord within `timeout`, audited; and
//!   the `/supervisor` command (`status`, `tail`, `why`) on the same connection,
//!   answered only to the asker, from a [`interact::ask::Source`] (this host's
//!   supervisord and shared state, or a fleet's).
//! - [`actions`]: what can be asked from a card, as values — the actions, which of
//!   them a state offers, and the signed button value; and the slash command's
//!   subcommands ([`actions::Ask`]).
//! - [`card`]: Block Kit rendering — colours, mrkdwn escaping, templates, size limits,
//!   the board, the buttons, and every card, note and `/supervisor` answer text. Pure
//!   functions over values.
//! - [`slack`]: the Slack Web API through slack-morphism, and the classification of
//!   every failure.
//! - [`bucket`]: the one token bucket (pacing, and the stand-in's limits).
//! - [`config`]: the settings schema, from the environment and an optional TOML file,
//!   and whether `listen` can start; [`secret`]: tokens that no log shows.
//! - [`shutdown`]: one handle every part stops with, and the deliveries it waits for.
//! - [`init`] and [`check`]: the operator's `init` (starter files) and `check`
//!   (is everything set up?) commands.
//! - [`standin`]: a local server speaking Slack's Web API and Socket Mode, for tests
//!   and `preview`; [`preview`]: the `preview` command.
//!
//! stdout belongs to supervisord: only the protocol writer touches it while
//! listening. Logs go to stderr through `tracing`.

pub mod actions;
pub mod app;
pub mod bucket;
pub mod card;
pub mod check;
pub mod config;
pub mod crash;
pub mod dispatch;
pub mod init;
pub mod interact;
pub mod listen;
pub mod pacing;
pub mod preview;
pub mod reconcile;
pub mod routing;
pub mod secret;
pub mod shutdown;
pub mod slack;
pub mod standin;
pub mod store;
pub mod supervisord;
pub mod wakeup;
