//! The board: one message per host in the default channel, edited in place, listing
//! every process supervisord reports (or, without XML-RPC, every process the events
//! showed) with its state and since when, failing ones first. It replaces nothing:
//! threads stay as they are.
//!
//! It follows the reader: when events arrive it waits for a second of quiet (at
//! most [`BOARD_MAX_WAIT`] in a storm), then asks supervisord and edits the message if
//! what it shows changed — one edit, within the edit budget the parents share. It
//! also looks every [`BOARD_REFRESH`] (a change the events did not tell).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::delivery::Delivery;
use super::retry::Edited;
use crate::card::board::{board, BoardLine};
use crate::card::Card;
use crate::reconcile::Trigger;
use crate::slack::Outgoing;
use crate::store::Posted;
use crate::supervisord::event::State;
use crate::supervisord::xmlrpc::Client;

/// The longest a board waits for quiet before it shows a storm as it stands.
pub const BOARD_MAX_WAIT: Duration = Duration::from_secs(3);
/// How quiet the reader must be before the board is redrawn.
pub const BOARD_QUIET: Duration = Duration::from_secs(1);
/// Redrawn at least this often (what it shows changes without events: since when).
pub const BOARD_REFRESH: Duration = Duration::from_secs(60);

/// The host's board.
pub struct Board {
    core: Arc<Delivery>,
    /// supervisord's XML-RPC; `None`: the board shows what the events showed.
    source: Option<Client>,
    trigger: Arc<Trigger>,
    channel: String,
    host: String,
    /// Where it is, as the shared state keeps it under this name.
    name: String,
    at: Option<Posted>,
    shown: Option<Card>,
}

impl Board {
    /// The host's board in the default channel; `None` without one.
    pub fn new(core: Arc<Delivery>, source: Option<Client>, trigger: Arc<Trigger>) -> Option<Board> {
        let Some(channel) = core.settings.channel.clone() else {
            tracing::warn!("board = true needs a default channel: no board");
            return None;
        };
        let host = core.settings.host.clone();
        Some(Board {
            name: format!("{host} {channel}"),
            core,
            source,
            trigger,
            channel,
            host,
            at: None,
            shown: None,
        })
    }

    /// Keeps the board current, for the life of the process.
    pub async fn run(mut self) {
        self.at = self.core.shared.board(&self.name).await.ok().flatten();
        let mut drawn_at_seen = u64::MAX;
        let mut drawn = Instant::now() - BOARD_REFRESH;
        loop {
            // Something new, or time for a refresh?
            let seen = self.trigger.seen();
            if seen == drawn_at_seen && drawn.elapsed() < BOARD_REFRESH {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            self.trigger.wait_quiet(BOARD_QUIET, BOARD_MAX_WAIT).await;
            drawn_at_seen = self.trigger.seen();
            drawn = Instant::now();
            let (lines, from_supervisord) = self.lines().await;
            let card = board(&self.host, &lines, from_supervisord, Utc::now());
            // "updated …" alone is no reason to edit.
            if self.shown.as_ref().is_some_and(|s| same_but_time(s, &card)) {
                continue;
            }
            self.show(card).await;
        }
    }

    /// Edits the board to show `card` (posting it anew when it cannot be edited), or
    /// posts it the first time.
    async fn show(&mut self, card: Card) {
        let retrier = &self.core.retrier;
        let posted = match &self.at {
            Some(at) => match retrier.edit_or_replace(&self.channel, at, &card, None).await {
                Ok(Edited::InPlace) => {
                    self.shown = Some(card);
                    return;
                }
                Ok(Edited::Replaced(posted)) => posted,
                Err(f) => {
                    tracing::warn!("cannot edit the board: {f}");
                    return;
                }
            },
            None => {
                let out = Outgoing::top_level(&self.channel, card.clone());
                match retrier.post_note(&out).await {
                    Ok(posted) => posted,
                    Err(f) => {
                        tracing::warn!("cannot post the board: {f}");
                        return;
                    }
                }
            }
        };
        if let Err(e) = self.core.shared.save_board(&self.name, &posted).await {
            tracing::warn!("cannot save where the board is: {e}");
        }
        if self.core.settings.board_pin {
            self.pin(&posted).await;
        }
        self.at = Some(posted);
        self.shown = Some(card);
    }

    /// Pins a newly posted board: once, best effort, paced like an edit.
    async fn pin(&self, at: &Posted) {
        match self.core.retrier.pin(&self.channel, at).await {
            Ok(()) => tracing::info!(channel = %self.channel, "pinned the board"),
            Err(f) => tracing::warn!(
                channel = %self.channel,
                "could not pin the board: {f} (pinning needs the pins:write scope; board_pin = false turns it off)"
            ),
        }
    }

    /// Every process supervisord reports; without its XML-RPC, every process of this
    /// host the events showed.
    async fn lines(&self) -> (Vec<BoardLine>, bool) {
        if let Some(client) = &self.source {
            match client.get_all_process_info().await {
                Ok(infos) => {
                    let lines = infos
                        .iter()
                        .filter_map(|i| {
                            let state = i.state()?;
                            Some(BoardLine {
                                name: if i.group == i.name {
                                    i.name.clone()
                                } else {
                                    i.full_name()
                                },
                                state,
                                expected: (state == State::Exited).then_some(i.exitstatus == 0),
                                since: i.since(state),
                            })
                        })
                        .collect();
                    return (lines, true);
                }
                Err(e) => tracing::debug!("board: supervisord's XML-RPC did not answer: {e}"),
            }
        }
        let known = super::known_states(&self.core, &self.host).await.unwrap_or_default();
        let lines = known
            .into_iter()
            .filter(|k| !k.event.is_supervisord() && k.event.to != State::Removed)
            .map(|k| BoardLine {
                name: k.event.display_name(),
                state: k.event.to,
                expected: k.event.expected,
                since: Some(k.event.at),
            })
            .collect();
        (lines, false)
    }
}

/// Whether two boards differ only in their "updated" time.
fn same_but_time(a: &Card, b: &Card) -> bool {
    let strip = |c: &Card| {
        let mut blocks = c.blocks.clone();
        if let Some(arr) = blocks.as_array_mut() {
            arr.pop();
        }
        (c.text.clone(), c.color.clone(), blocks)
    };
    strip(a) == strip(b)
}
