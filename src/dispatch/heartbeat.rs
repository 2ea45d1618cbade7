//! This host in its fleet: a heartbeat every `heartbeat`, carrying the host's
//! processes as supervisord reports them (or as the events showed them), and one
//! more soon after a change (once the reader has been quiet for a moment), so that
//! the fleet's board and questions about the fleet see it. A host whose heartbeats
//! stop is named silent by the fleet's board.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::board::{process_table, BOARD_MAX_WAIT, BOARD_QUIET};
use super::delivery::Delivery;
use crate::reconcile::Trigger;
use crate::supervisord::xmlrpc::Client;

/// Beats for the life of the process (nothing without a fleet).
pub async fn run(core: Arc<Delivery>, source: Option<Client>, trigger: Arc<Trigger>) {
    let Some(every) = core.settings.fleet.as_ref().map(|f| f.heartbeat) else {
        return;
    };
    if core.shared.fleet().is_none() {
        return;
    }
    let host = core.settings.host.clone();
    let mut beat_at_seen = u64::MAX;
    let mut beat = Instant::now() - every;
    let mut failing = false;
    loop {
        let seen = trigger.seen();
        if seen == beat_at_seen && beat.elapsed() < every {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        if seen != beat_at_seen {
            trigger.wait_quiet(BOARD_QUIET, BOARD_MAX_WAIT).await;
        }
        beat_at_seen = trigger.seen();
        beat = Instant::now();
        let (table, from_supervisord) = process_table(&core, source.as_ref(), &host).await;
        match core.shared.heartbeat(&host, &table, from_supervisord).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeats reach the fleet again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cannot send this host's heartbeat to the fleet ({e}); the fleet will call it silent until it can");
            }
            Err(_) => {}
        }
    }
}
