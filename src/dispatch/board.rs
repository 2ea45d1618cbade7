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

use super::pacing::Call;
use super::Dispatcher;
use crate::card::board::{board, BoardLine};
use crate::card::Card;
use crate::reconcile::Trigger;
use crate::slack::{Failure, Outgoing};
use crate::supervisord::event::State;
use crate::supervisord::xmlrpc::Client;

/// The longest a board waits for quiet before it shows a storm as it stands.
pub const BOARD_MAX_WAIT: Duration = Duration::from_secs(3);
/// How quiet the reader must be before the board is redrawn.
pub const BOARD_QUIET: Duration = Duration::from_secs(1);
/// Redrawn at least this often (what it shows changes without events: since when).
pub const BOARD_REFRESH: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    ts: String,
    channel_id: String,
}

impl Dispatcher {
    /// Keeps the host's board current, for the life of the process.
    pub async fn board(self: Arc<Self>, source: Option<Client>, trigger: Arc<Trigger>) {
        let Some(channel) = self.settings.channel.clone() else {
            tracing::warn!("board = true needs a default channel: no board");
            return;
        };
        let host = self.settings.host.clone();
        let meta_key = format!("board {host} {channel}");
        let mut saved: Option<Saved> = self
            .with_store(|s| s.meta(&meta_key))
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str(&j).ok());
        let mut shown: Option<Card> = None;
        let mut drawn_at_seen = u64::MAX;
        let mut drawn = Instant::now() - BOARD_REFRESH;
        loop {
            // Something new, or time for a refresh?
            let seen = trigger.seen();
            if seen == drawn_at_seen && drawn.elapsed() < BOARD_REFRESH {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            let first_change = Instant::now();
            while trigger.quiet_for() < BOARD_QUIET && first_change.elapsed() < BOARD_MAX_WAIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drawn_at_seen = trigger.seen();
            drawn = Instant::now();
            let (lines, from_supervisord) = self.board_lines(source.as_ref(), &host).await;
            let card = board(&host, &lines, from_supervisord, Utc::now());
            // "updated …" alone is no reason to edit.
            if shown.as_ref().is_some_and(|s| same_but_time(s, &card)) {
                continue;
            }
            if let Some(s) = &saved {
                let r = self
                    .retrier
                    .run(Call::Update, &channel, || {
                        self.retrier.api.update(&s.channel_id, &s.ts, &card)
                    })
                    .await;
                match r {
                    Ok(()) => {
                        shown = Some(card);
                        continue;
                    }
                    Err(Failure::EditRefused(code)) | Err(Failure::ThreadGone(code)) => {
                        tracing::info!(
                            code,
                            "the board can no longer be edited: posting a new one"
                        );
                    }
                    Err(f) => {
                        tracing::warn!("cannot edit the board: {f}");
                        continue;
                    }
                }
            }
            let out = Outgoing::top_level(&channel, card.clone());
            match self
                .retrier
                .run(Call::Post(&channel), &channel, || {
                    self.retrier.api.post(&out)
                })
                .await
            {
                Ok(posted) => {
                    let s = Saved {
                        ts: posted.ts,
                        channel_id: posted.channel_id,
                    };
                    let json = serde_json::to_string(&s).expect("serializes");
                    if let Err(e) = self.with_store(|st| st.set_meta(&meta_key, &json)) {
                        tracing::warn!("cannot save where the board is: {e}");
                    }
                    if self.settings.board_pin {
                        self.pin_board(&channel, &s).await;
                    }
                    saved = Some(s);
                    shown = Some(out.card);
                }
                Err(f) => tracing::warn!("cannot post the board: {f}"),
            }
        }
    }

    /// Pins a newly posted board: once, best effort, paced like an edit.
    async fn pin_board(&self, channel: &str, s: &Saved) {
        self.retrier.pacing.acquire(Call::Update).await;
        match self.retrier.api.pin(&s.channel_id, &s.ts).await {
            Ok(()) => tracing::info!(channel, "pinned the board"),
            Err(Failure::RateLimited(d)) => {
                self.retrier.pacing.close_for(d);
                tracing::warn!(channel, "could not pin the board: rate limited");
            }
            Err(f) => tracing::warn!(
                channel,
                "could not pin the board: {f} (pinning needs the pins:write scope; board_pin = false turns it off)"
            ),
        }
    }

    /// Every process supervisord reports; without its XML-RPC, every process of this
    /// host the events showed.
    async fn board_lines(&self, source: Option<&Client>, host: &str) -> (Vec<BoardLine>, bool) {
        if let Some(client) = source {
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
        let known = self
            .with_store(|s| s.known_states(host))
            .unwrap_or_default();
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
