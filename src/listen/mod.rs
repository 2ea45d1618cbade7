//! The reader: the loop supervisord talks to, on a plain thread. For each event it
//! commits the event to the outbox, answers `RESULT 2\nOK`, and wakes the delivery
//! side — it never waits on the network, so supervisord is never slowed down by
//! Slack. [`crate::app`] builds it with everything else.
//! - [`instance`]: which supervisord sent an event, resends, gaps in the serials;
//! - [`handler`]: one event, from bytes to a committed outbox row (or held in memory);
//! - [`serve`]: the protocol loop, every event answered once;
//! - [`lock`]: one writer per state file.

mod handler;
mod instance;
pub mod lock;
mod serve;

pub use handler::{Handler, HeldEvents, HELD_MAX};
pub use instance::{instance_id, parent_identity, GapTracker, RecentSerials};
pub use serve::{serve, InHand};

/// How long a stopping listener lets deliveries under way finish (supervisord waits
/// `stopwaitsecs`, 10 s by default, before SIGKILL).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);
