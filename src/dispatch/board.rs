//! The board: one message in the default channel, edited in place — a host's, or the
//! fleet's when hosts share a fleet database. It replaces nothing: threads stay as
//! they are.
//! - **A host's board** lists every process supervisord reports (or, without
//!   XML-RPC, every process the events showed) with its state and since when,
//!   failing ones first. It follows the reader: when events arrive it waits for a
//!   second of quiet (at most [`BOARD_MAX_WAIT`] in a storm), then edits the message
//!   if what it shows changed, within the edit budget the parents share; it also
//!   looks every [`BOARD_REFRESH`].
//! - **The fleet's board** is one message for every host: one host at a time draws
//!   it (a lease, taken over when that host stops or goes silent), from the process
//!   tables the hosts' heartbeats carry; it names silent hosts, and says in its
//!   thread, once, when a host goes silent and when it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::delivery::Delivery;
use super::retry::Edited;
use crate::card::board::{board, BoardLine};
use crate::card::fleet_board::{self, FleetHost};
use crate::card::Card;
use crate::reconcile::Trigger;
use crate::slack::Outgoing;
use crate::store::{HostProcess, Posted};
use crate::supervisord::event::State;
use crate::supervisord::xmlrpc::Client;

/// The longest a board waits for quiet before it shows a storm as it stands.
pub const BOARD_MAX_WAIT: Duration = Duration::from_secs(3);
/// How quiet the reader must be before the board is redrawn.
pub const BOARD_QUIET: Duration = Duration::from_secs(1);
/// Redrawn at least this often (what it shows changes without events: since when).
pub const BOARD_REFRESH: Duration = Duration::from_secs(60);
/// How often the fleet board's holder looks at the hosts' tables.
const FLEET_LOOK: Duration = Duration::from_secs(2);

/// The board of the default channel.
pub struct Board {
    core: Arc<Delivery>,
    /// supervisord's XML-RPC; `None`: a host's board shows what the events showed.
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
    /// The board in the default channel; `None` without one.
    pub fn new(core: Arc<Delivery>, source: Option<Client>, trigger: Arc<Trigger>) -> Option<Board> {
        let Some(channel) = core.settings.channel.clone() else {
            tracing::warn!("board = true needs a default channel: no board");
            return None;
        };
        let host = core.settings.host.clone();
        let name = match core.shared.fleet() {
            Some(_) => format!("fleet {channel}"),
            None => format!("{host} {channel}"),
        };
        Some(Board {
            name,
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
        if self.core.shared.fleet().is_some() {
            return self.run_fleet().await;
        }
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
            let (table, from_supervisord) = process_table(&self.core, self.source.as_ref(), &self.host).await;
            let lines: Vec<BoardLine> = table.iter().map(board_line).collect();
            let card = board(&self.host, &lines, from_supervisord, Utc::now());
            // "updated …" alone is no reason to edit.
            if self.shown.as_ref().is_some_and(|s| same_but_time(s, &card)) {
                continue;
            }
            self.show(card).await;
        }
    }

    /// The fleet's board: drawn by the host that holds its lease.
    async fn run_fleet(mut self) {
        let silent_after = self
            .core
            .settings
            .fleet
            .as_ref()
            .map_or(crate::config::fleet::DEFAULT_SILENT_AFTER, |f| f.silent_after);
        let fleet = self.core.shared.fleet().unwrap_or_default().to_string();
        let lease = format!("board {}", self.channel);
        // Held as long as a host may be quiet before it is called silent: a holder
        // that dies hands the board over about when the fleet calls it silent (one
        // that stops gives it up at once). The others ask again now and then.
        let ttl = silent_after;
        let retry = (ttl / 3).min(Duration::from_secs(30));
        let mut holding = false;
        let mut drawn = Instant::now() - BOARD_REFRESH;
        loop {
            let held = self.core.shared.lease(&lease, &self.host, ttl).await.unwrap_or(false);
            if held != holding {
                holding = held;
                if held {
                    tracing::info!(channel = %self.channel, "this host draws the fleet's board");
                    // Another host may have moved it meanwhile.
                    self.at = self.core.shared.board(&self.name).await.ok().flatten();
                    self.shown = None;
                } else {
                    tracing::info!(channel = %self.channel, "another host draws the fleet's board now");
                }
            }
            if !holding {
                tokio::select! {
                    _ = tokio::time::sleep(retry) => continue,
                    _ = self.core.shutdown.triggered() => return,
                }
            }
            self.say_silences(silent_after).await;
            if let Ok(hosts) = self.core.shared.hosts().await {
                let hosts: Vec<FleetHost> = hosts
                    .into_iter()
                    .map(|h| FleetHost {
                        silent_since: (h.quiet_for > silent_after).then(|| h.silent_since.unwrap_or(h.last_seen)),
                        lines: h.processes.iter().map(board_line).collect(),
                        host: h.host,
                    })
                    .collect();
                let card = fleet_board::fleet_board(&fleet, &hosts, Utc::now());
                let stale = drawn.elapsed() >= BOARD_REFRESH;
                if stale || !self.shown.as_ref().is_some_and(|s| same_but_time(s, &card)) {
                    drawn = Instant::now();
                    self.show(card).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FLEET_LOOK) => {}
                _ = self.core.shutdown.triggered() => {
                    // Stopping: another host takes the board over at once.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.core.shared.release(&lease, &self.host)).await;
                    return;
                }
            }
        }
    }

    /// Says in the board's thread, once across the fleet, which hosts went silent and
    /// which are back.
    async fn say_silences(&mut self, silent_after: Duration) {
        let shared = &self.core.shared;
        let silent = shared.newly_silent(silent_after).await.unwrap_or_default();
        let back = shared.back_again(silent_after).await.unwrap_or_default();
        let notes = silent
            .iter()
            .map(|(h, t)| {
                tracing::warn!(host = %h, last_seen = %t, "a host of the fleet went silent");
                fleet_board::went_silent(h, *t)
            })
            .chain(back.iter().map(|(h, t)| {
                tracing::info!(host = %h, "a silent host of the fleet is back");
                fleet_board::back_again(h, *t)
            }));
        for card in notes {
            let Some(at) = &self.at else { continue };
            let out = Outgoing {
                channel: self.channel.clone(),
                card,
                thread_ts: Some(at.ts.clone()),
                broadcast: false,
                identity: None,
            };
            if let Err(f) = self.core.retrier.post_note(&out).await {
                tracing::warn!("could not say a host's silence in the board's thread: {f}");
            }
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
}

fn board_line(p: &HostProcess) -> BoardLine {
    BoardLine {
        name: p.name(),
        state: p.state,
        expected: p.expected,
        since: p.since,
    }
}

/// This host's processes: every one supervisord reports, else (without its
/// XML-RPC) every one the events showed; and whether they came from supervisord.
pub(super) async fn process_table(core: &Delivery, source: Option<&Client>, host: &str) -> (Vec<HostProcess>, bool) {
    if let Some(client) = source {
        match client.get_all_process_info().await {
            Ok(infos) => {
                let table = infos
                    .iter()
                    .filter_map(|i| {
                        let state = i.state()?;
                        Some(HostProcess {
                            group: i.group.clone(),
                            process: i.name.clone(),
                            state,
                            since: i.since(state),
                            pid: u32::try_from(i.pid).ok().filter(|p| *p > 0),
                            expected: (state == State::Exited).then_some(i.exitstatus == 0),
                        })
                    })
                    .collect();
                return (table, true);
            }
            Err(e) => tracing::debug!("supervisord's XML-RPC did not answer: {e}"),
        }
    }
    let known = super::known_states(core, host).await.unwrap_or_default();
    let table = known
        .into_iter()
        .filter(|k| !k.event.is_supervisord() && k.event.to != State::Removed)
        .map(|k| HostProcess {
            group: k.event.group.clone(),
            process: k.event.process.clone(),
            state: k.event.to,
            since: Some(k.event.at),
            pid: k.event.pid,
            expected: k.event.expected,
        })
        .collect();
    (table, false)
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
