//! One Slack app for a whole fleet: Slack allows an app 10 Socket Mode connections,
//! and hands each click to any of them, so a few hosts hold them for everyone. The
//! fleet has `socket_connections` slots, each a lease in the shared state; a host
//! that takes a slot opens one connection and keeps it while it renews the lease.
//! A host that stops gives its slot back at once; one that dies keeps it no longer
//! than the lease. One that loses the database keeps its connection (clicks are
//! refused, and the clicker told, until it is back) and closes it as soon as a
//! renewal finds the slot taken by another host.
//! The other hosts open no socket: their clicks reach them through the fleet
//! ([`super::route`]). The log says who holds what.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::Asker;
use super::run::Runner;
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::slack::SlackApi;
use crate::store::SharedState;

/// The lease of slot `i` (from 0).
fn slot_name(i: u32) -> String {
    format!("socket {}", i + 1)
}

/// The prefix of every slot's lease.
pub const SLOT_PREFIX: &str = "socket ";

/// How long a slot's lease lasts unless renewed: at most 30 s, at least 3 s, and no
/// longer than the fleet takes to call a host silent.
pub fn lease_for(silent_after: Duration) -> Duration {
    silent_after.clamp(Duration::from_secs(3), Duration::from_secs(30))
}

/// What holding a connection needs.
pub struct HolderParts {
    pub host: String,
    /// How many hosts of the fleet hold a connection.
    pub slots: u32,
    pub lease: Duration,
    pub shared: Arc<dyn SharedState>,
    pub app_token: Secret,
    pub api: Arc<SlackApi>,
    pub runner: Option<Arc<Runner>>,
    pub asker: Option<Arc<Asker>>,
}

/// Takes a free slot when there is one and holds a Socket Mode connection while the
/// slot is this host's; until shutdown (then the slot is given back).
pub async fn hold(p: HolderParts, shutdown: Shutdown) {
    let renew_every = p.lease / 3;
    let mut said_held_by_others = false;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let mut slot = None;
        for i in 0..p.slots {
            match p.shared.lease(&slot_name(i), &p.host, p.lease).await {
                Ok(true) => {
                    slot = Some(i);
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!("cannot ask the fleet for a Socket Mode slot now: {e}");
                    break;
                }
            }
        }
        let Some(i) = slot else {
            if !said_held_by_others {
                if let Ok(holders) = p.shared.lease_holders(SLOT_PREFIX).await {
                    said_held_by_others = true;
                    let by: Vec<String> = holders
                        .iter()
                        .map(|(slot, h)| format!("{slot}: {h}"))
                        .collect();
                    tracing::info!(
                        held_by = %by.join(", "),
                        "the fleet's Socket Mode connections are held by other hosts: this host opens none (clicks and commands reach it through the fleet)"
                    );
                }
            }
            // A little apart, so that hosts waiting for a slot do not all ask at once.
            let wait = renew_every + Duration::from_millis(fastrand::u64(0..500));
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = shutdown.triggered() => return,
            }
        };
        said_held_by_others = false;
        let name = slot_name(i);
        tracing::info!(slot = %name, of = p.slots, "this host holds one of the fleet's Socket Mode connections");
        let session = Shutdown::new();
        let serving = tokio::spawn(super::serve(
            p.app_token.clone(),
            1,
            p.api.clone(),
            p.runner.clone(),
            p.asker.clone(),
            session.clone(),
        ));
        let mut renewed = Instant::now();
        let mut said_unrenewed = false;
        let stop = loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = shutdown.triggered() => break true,
            }
            match p.shared.lease(&name, &p.host, p.lease).await {
                Ok(true) => {
                    renewed = Instant::now();
                    said_unrenewed = false;
                }
                Ok(false) => {
                    tracing::warn!(slot = %name, "another host took this host's Socket Mode slot (its lease had run out): closing this host's connection");
                    break false;
                }
                // Kept: clicks still reach someone who tells the clicker that nothing
                // can be done while the database is away (no other host can take the
                // slot meanwhile, unless only this one lost the database: then the
                // next renewal says so and the connection closes).
                Err(e) => {
                    if !said_unrenewed && renewed.elapsed() + renew_every >= p.lease {
                        said_unrenewed = true;
                        tracing::warn!(slot = %name, "cannot renew this host's Socket Mode slot ({e}): keeping the connection until the fleet database answers; clicks are refused meanwhile");
                    }
                }
            }
        };
        session.trigger();
        let _ = serving.await;
        if stop {
            let _ = p.shared.release(&name, &p.host).await;
            tracing::info!(slot = %name, "gave this host's Socket Mode slot back");
            return;
        }
    }
}
