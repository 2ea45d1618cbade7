//! What the channel shows, per thread, as reconcile and the board compare it with
//! supervisord: the newest event the listener holds for each thread — the outbox's
//! newest row (waiting, delivered or set aside), else the thread map's latest
//! delivered event.

use std::collections::HashMap;

use super::NewestRow;
use crate::supervisord::event::{ProcessState, ThreadKey};

/// The newest event the listener holds for one thread of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub key: ThreadKey,
    pub channel: String,
    /// The newest event: what the parent shows once the outbox is delivered.
    pub event: ProcessState,
}

/// Merges the outbox's newest rows of a host with the thread map's latest events:
/// one per thread key, the outbox winning (its rows are newer than any delivery
/// recorded), sorted by key.
pub fn known(rows: Vec<NewestRow>, latest: Vec<(ThreadKey, String, ProcessState)>) -> Vec<Known> {
    let mut out: HashMap<ThreadKey, Known> = HashMap::new();
    for (key, channel, event) in latest {
        out.insert(key.clone(), Known { key, channel, event });
    }
    for row in rows {
        let key = row.event.thread_key();
        out.insert(
            key.clone(),
            Known {
                key,
                channel: row.channel,
                event: row.event,
            },
        );
    }
    let mut known: Vec<Known> = out.into_values().collect();
    known.sort_by(|a, b| a.key.cmp(&b.key));
    known
}
