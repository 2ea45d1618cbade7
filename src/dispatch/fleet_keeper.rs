//! The keeper of a program's card across the fleet (`thread_by = "program"`), one
//! per host running the program; between them:
//! - **one parent per program**, whatever the race: a host claims the right to post
//!   it in the shared state before it posts (the others wait for its `ts`), and a
//!   parent that is gone or too old is replaced the same way, from the `ts` it
//!   replaces;
//! - **one editor at a time**: the host holding the card's lease draws it from every
//!   host's part (their heartbeats' tables, this host's own newest state) and keeps
//!   looking while the program changes; a host whose change it cannot draw asks for
//!   the lease again once it may have lapsed (its holder stopped or died);
//! - the card's trail (the fleet's worst state over time), and the calm that ends
//!   the program's broadcast episode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::delivery::Delivery;
use super::thread::{Renew, ThreadState};
use crate::card::fleet_card::{self, FleetCardInput, HostPart};
use crate::actions::Action;
use crate::card::Card;
use crate::slack::{Failure, Outgoing};
use crate::store::Posted;
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// How long a claim to post a parent lasts (its holder may die while it posts).
const CLAIM: Duration = Duration::from_secs(30);
/// How long the card's lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(10);
/// How often the lease holder looks while the program changes.
const LOOK: Duration = Duration::from_secs(2);
/// How long the lease holder keeps looking after the last change it drew.
const ACTIVE: Duration = Duration::from_secs(30);

pub(super) struct FleetKeeper {
    core: Arc<Delivery>,
    /// This host's thread of the program.
    key: ThreadKey,
    /// The program's card across the fleet.
    card: ThreadKey,
    channel: String,
    state: Arc<ThreadState>,
    lease: String,
    /// Holding the lease, and the last change drawn.
    drawn: Option<Instant>,
    /// A change this host could not draw (another held the lease): ask again then.
    ask_again: Option<Instant>,
}

/// Each host's part of a program in `channel`, this host's own from `mine` when it
/// knows newer (an event still waiting in its outbox).
pub(super) async fn parts(
    core: &Delivery,
    key: &ThreadKey,
    channel: &str,
    mine: Option<&ProcessState>,
) -> Vec<(String, HostPart)> {
    let silent_after = core.silent_after();
    let rows = core
        .shared
        .program_hosts(&key.group, &key.process, channel)
        .await
        .unwrap_or_default();
    let from_event = |e: &ProcessState| match e.to {
        State::Removed => HostPart::Removed,
        s => HostPart::State {
            state: s,
            expected: e.expected,
            since: Some(e.reconciled.as_ref().and_then(|r| r.since).unwrap_or(e.at)),
        },
    };
    let mut out: Vec<(String, HostPart)> = rows
        .into_iter()
        .filter_map(|r| {
            let part = if r.host == key.host && mine.is_some() {
                from_event(mine.unwrap())
            } else if r.quiet_for.is_some_and(|q| q > silent_after) {
                HostPart::Silent
            } else if let Some(p) = &r.reported {
                HostPart::State {
                    state: p.state,
                    expected: p.expected,
                    since: p.since,
                }
            } else {
                from_event(r.latest.as_ref()?)
            };
            Some((r.host, part))
        })
        .collect();
    if let Some(m) = mine {
        if !out.iter().any(|(h, _)| *h == key.host) {
            out.push((key.host.clone(), from_event(m)));
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
    out
}

impl FleetKeeper {
    pub fn new(core: Arc<Delivery>, key: ThreadKey, channel: String, state: Arc<ThreadState>) -> FleetKeeper {
        let card = core.card_key(&key);
        FleetKeeper {
            lease: format!("card {} {channel}", card.display_name()),
            core,
            key,
            card,
            channel,
            state,
            drawn: None,
            ask_again: None,
        }
    }

    pub async fn run(mut self) {
        loop {
            let renew = self.state.take_renew();
            match self.look(renew).await {
                Ok(()) => {}
                Err(e) => tracing::debug!(thread = %self.key, "the fleet's card cannot be looked at now: {e}"),
            }
            let wait = match (self.drawn, self.ask_again) {
                (Some(t), _) if t.elapsed() < ACTIVE => Some(LOOK),
                (_, Some(at)) => Some(at.saturating_duration_since(Instant::now())),
                _ => None,
            };
            match wait {
                Some(w) => {
                    let _ = tokio::time::timeout(w, self.state.parent.notified()).await;
                }
                None => {
                    self.drawn = None;
                    self.state.parent.notified().await;
                }
            }
        }
    }

    /// One look at the card: its parent posted (or replaced) when it must be, else
    /// drawn when this host holds the lease.
    async fn look(&mut self, renew: Option<Renew>) -> Result<(), crate::store::StoreError> {
        let core = self.core.clone();
        let thread = core.shared.thread(&self.card, &self.channel).await?;
        let (key, channel) = (&self.key, &self.channel);
        let mine = core
            .outbox(|o| o.waiting_view(key, channel, 1))
            .ok()
            .and_then(|w| w.newest);
        let mine = match mine {
            Some(m) => Some(m),
            None => core.shared.thread(key, channel).await?.and_then(|t| t.latest),
        };
        let parts = parts(&core, key, channel, mine.as_ref()).await;
        if parts.is_empty() {
            return Ok(());
        }
        let trail = thread.as_ref().map(|t| t.history.clone()).unwrap_or_default();
        let card = self.render(&parts, &trail);
        let parent = thread
            .as_ref()
            .and_then(|t| Some((t.parent_ts.clone()?, t.channel_id.clone()?, t.created)));
        match (parent, renew) {
            (None, _) => self.post_parent(None, false, card, &parts).await,
            (Some((ts, _, _)), Some(r)) if r.replaces.as_deref() == Some(ts.as_str()) => {
                self.post_parent(Some(ts), r.start_over, card, &parts).await
            }
            (Some((ts, channel_id, at)), _) => {
                self.draw(Posted { channel_id, ts, at }, card, &parts, &trail).await;
            }
        }
        Ok(())
    }

    fn render(&self, parts: &[(String, HostPart)], trail: &[State]) -> Card {
        let name = self.card.display_name();
        let mut trail = trail.to_vec();
        if let Some((worst, _)) = fleet_card::worst(parts) {
            if trail.last() != Some(&worst) {
                trail.push(worst);
            }
        }
        let card = fleet_card::fleet_card(&FleetCardInput {
            name: &name,
            hosts: parts,
            trail: &trail,
            environment: self.core.settings.environment.as_deref(),
        });
        // Down on several hosts: one Start for all of them (each host's own reply
        // carries its own buttons).
        let down: Vec<String> = parts
            .iter()
            .filter(|(_, p)| matches!(p, HostPart::State { state: State::Fatal, .. } | HostPart::State { state: State::Exited, expected: Some(false), .. }))
            .map(|(h, _)| h.clone())
            .collect();
        match &self.core.offer {
            Some(offer) if down.len() >= 2 && offer.allowed.contains(&Action::Start) && !self.card.is_supervisord() => {
                card.with_fleet_start(&offer.signer.value(&self.card, Action::Start), &name, &down)
            }
            _ => card,
        }
    }

    /// Posts the program's parent replacing `replaces` — if this host wins the claim;
    /// otherwise another host posts it, and the workers find it.
    async fn post_parent(&mut self, replaces: Option<String>, start_over: bool, card: Card, parts: &[(String, HostPart)]) {
        let core = self.core.clone();
        let host = core.settings.host.clone();
        let claimed = core
            .shared
            .claim_parent(&self.card, &self.channel, replaces.as_deref(), &host, CLAIM)
            .await
            .unwrap_or(false);
        if !claimed {
            // Another host posts it: look again shortly.
            self.ask_again = Some(Instant::now() + Duration::from_millis(500));
            return;
        }
        let out = Outgoing::top_level(&self.channel, card.clone());
        let posted = match core.retrier.post_note(&out).await {
            Ok(p) => p,
            Err(f) => {
                tracing::error!(thread = %self.card, "cannot post the program's card: {f}");
                self.state.parent_refused(f);
                return;
            }
        };
        let (fleet_key, channel) = (&self.card, &self.channel);
        let swapped = std::sync::atomic::AtomicBool::new(false);
        core.persist(&self.key, "the program's new card", || async {
            let done = core.shared.set_parent(fleet_key, channel, replaces.as_deref(), &posted, start_over).await?;
            swapped.store(done, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await;
        if swapped.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(thread = %self.card, ts = %posted.ts, "posted the program's card across the fleet");
            if let Some((worst, _)) = fleet_card::worst(parts) {
                let _ = core.shared.record_trail(&self.card, &self.channel, worst).await;
            }
        }
        *self.state.shown.lock().unwrap() = Some(card);
        self.drawn = Some(Instant::now());
        self.state.parent_posted();
    }

    /// Draws the card at `at` when this host holds its lease and it shows something
    /// else; a card that can no longer be edited is replaced (claimed first).
    async fn draw(&mut self, at: Posted, card: Card, parts: &[(String, HostPart)], trail: &[State]) {
        let core = self.core.clone();
        let host = core.settings.host.clone();
        if !core.shared.lease(&self.lease, &host, LEASE).await.unwrap_or(false) {
            // The holder draws it; if it stopped or died, this host takes over.
            self.ask_again = Some(Instant::now() + LEASE);
            return;
        }
        self.ask_again = None;
        let worst = fleet_card::worst(parts);
        if !parts.iter().any(|(_, p)| matches!(p, HostPart::State { state, expected, .. } if crate::supervisord::event::failing(*state, *expected))) {
            let _ = core.shared.fleet_calm(&self.card, &self.channel).await;
        }
        if self.state.shown.lock().unwrap().as_ref() == Some(&card) {
            return;
        }
        self.drawn = Some(Instant::now());
        match core.retrier.edit(&self.channel, &at, &card, None).await {
            Ok(()) => {
                if let Some((w, _)) = worst {
                    if trail.last() != Some(&w) {
                        let _ = core.shared.record_trail(&self.card, &self.channel, w).await;
                    }
                }
                *self.state.shown.lock().unwrap() = Some(card);
            }
            Err(Failure::EditRefused(code)) | Err(Failure::ThreadGone(code)) => {
                tracing::info!(thread = %self.card, code, "the program's card can no longer be edited: replacing it");
                self.post_parent(Some(at.ts), false, card, parts).await;
            }
            Err(f) => tracing::error!(thread = %self.card, "gave up editing the program's card: {f}"),
        }
    }
}
