//! The Slack stand-in: a local HTTP server that speaks the part of Slack's Web API this
//! project uses, so tests (and `supervisor-slack preview`) can run the real client
//! against something that behaves like Slack where the project can trip.
//!
//! The rooms, one job each:
//! - `handle`: the options ([`StandInOptions`]), the state behind the one lock, and
//!   the handle tests drive ([`StandIn`]) — what every other room reads;
//! - `server`: start and stop, what a test can ask of the handle, the routes;
//! - `guard`: only requests addressed to a loopback `Host` are answered (no DNS
//!   rebinding), and no foreign `Origin`;
//! - `api`: the Web API methods (`auth.test`, `chat.postMessage`, `chat.update`,
//!   `pins.add`, `conversations.replies`, `conversations.history`,
//!   `apps.connections.open`, `chat.postEphemeral`, `usergroups.users.list`); those
//!   that change state take POST only;
//! - `wire`: Slack's shapes — parameters in (JSON, form, query), answers out, the
//!   `message` object;
//! - `state`: channels, messages, threads, the `ts` clock, the record of [`Call`]s;
//! - `auth`: the bearer token (a bot token for the Web API, an app-level `xapp-`
//!   token for `apps.connections.open`) and the [`Identity`] `auth.test` reports;
//! - `sockets`: Socket Mode's registry — single-use tickets, the live connections
//!   and whose turn is next, the acks ([`Ack`]);
//! - `socket`: the WebSocket server on a second port — `hello`, round-robin
//!   delivery, and the socket faults (`disconnect` frames, cut connections, a
//!   revoked app token);
//! - `interact`: clicks ([`Click`], [`ClickOutcome`]) turned into `block_actions`
//!   envelopes, and the buttons a message offers;
//! - `command`: slash commands ([`SlashCommand`], [`CommandOutcome`]) turned into
//!   `slash_commands` envelopes; their answers ([`CommandAnswer`]: the ack's payload,
//!   or a POST to the command's `response_url`) shown to the user alone;
//! - `people`: users' names, user groups, and the [`Ephemeral`] messages
//!   `chat.postEphemeral` shows one user (never in the channel's history);
//! - [`Fault`], [`FaultRule`] (`faults`): failures injected on demand — HTTP statuses,
//!   slowness, dropped connections, API errors;
//! - `limits`: `chat.postMessage` per channel and `chat.update` rate limits, on the
//!   project's one token bucket ([`crate::bucket::Bucket`]), with 429, `Retry-After`, and
//!   a note on every call that arrives before an announced `Retry-After` elapsed;
//! - [`validate`]: the payloads Slack refuses (Block Kit limits, legacy attachment
//!   fields beside `blocks`, `no_text`), kept apart from `card::limits` on purpose: the
//!   stand-in is an independent oracle;
//! - [`page`] (with `page.html`), `blocks` and [`mrkdwn`]: the channel drawn as Slack
//!   draws it, with buttons that click through Socket Mode;
//! - `conn`: connections a [`Fault::Drop`] can cut.
//!
//! Routes: `/api/{method}`, `/` (the page; `?channel=NAME`, `?thread=TS` for one thread,
//! `?collapsed=1` for folded threads), `/api/_calls` and `/api/_channel/{name}` (JSON,
//! for debugging), `GET /api/_socket` (live connections, handshakes, acks) and
//! `POST /api/_socket/click` (JSON [`Click`]; the page's buttons use it),
//! `POST /api/_socket/command` (JSON [`SlashCommand`]; the page's message box uses
//! it) and `POST /api/_socket/response_url/{id}` (a command's later answer). Socket Mode
//! itself is `ws://127.0.0.1:WSPORT/link/?ticket=…` on its own port, the URL
//! `apps.connections.open` answers.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use supervisor_slack::standin::{Fault, StandIn, StandInOptions};
//! let slack = StandIn::start(StandInOptions::default()).await?;
//! // point the client at slack.api_url(), then:
//! slack.set_fault(Fault::api_error("message_not_found").on("chat.update").times(1));
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod blocks;
mod command;
mod conn;
mod faults;
mod guard;
mod interact;
mod limits;
pub mod mrkdwn;
pub mod page;
mod people;
mod handle;
mod server;
mod socket;
mod sockets;
mod state;
pub mod validate;
mod wire;

pub use auth::{Identity, BOT_ID, BOT_USER_ID, TEAM_ID};
pub use command::{CommandAnswer, CommandOutcome, SlashCommand};
pub use faults::{Fault, FaultRule};
pub use guard::is_loopback_host;
pub use interact::{Click, ClickOutcome};
pub use state::Ephemeral;
pub use handle::{StandIn, StandInOptions};
pub use sockets::Ack;
pub use state::{Call, Message, Thread};
