//! A thread's worker: posts its replies strictly in order, forever. What piled up
//! goes out as one reply (at most `coalesce_max` events); while the process flaps,
//! replies become digests (at most one per `digest_interval`, FATAL at once) and a
//! "settled" reply ends the episode. Which replies the channel sees too is the
//! thread's failure [`episode`](super::episode)'s call, kept in the shared state with
//! each reply that changes it. Notes (an action's audit) go out in their turn.
//! It never posts a parent: when there is none, or it is gone or too old, it asks
//! the thread's [`keeper`](super::keeper) for one and waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::delivery::Delivery;
use super::episode;
use super::retry::Backoff;
use super::thread::{FlapRule, Renew, ThreadState};
use crate::card::notes::{self, NoteCounts};
use crate::card::{ReplyInput, Variant};
use crate::slack::{Failure, Identity, Outgoing};
use crate::store::{CrashRecord, Episode, OutboxEntry, ThreadRecord};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// A flapping process's digest takes up to this many waiting events (the card
/// compacts them into a run-length sequence).
pub(super) const DIGEST_MAX: usize = 500;

/// How long the worker waits for the keeper's new parent before it looks again.
const PARENT_WAIT: Duration = Duration::from_secs(10);

/// Where the worker stands with the thread's parent.
enum Parent {
    Ready(ThreadRecord),
    /// Asked the keeper for one: look at the outbox again first.
    Wait,
    /// Slack will not take the new parent.
    Refused(Failure),
}

/// What a delivery attempt concluded.
enum Outcome {
    Done,
    /// Try the same entries again (the parent vanished: the keeper posts a new one).
    Again,
}

pub(super) struct Worker {
    core: Arc<Delivery>,
    key: ThreadKey,
    channel: String,
    state: Arc<ThreadState>,
    backoff: Backoff,
    rule: FlapRule,
    /// The failure episode under way, as the last delivered reply left it (read
    /// from the shared state when the worker starts).
    episode: Option<Episode>,
}

impl Worker {
    pub fn new(core: Arc<Delivery>, key: ThreadKey, channel: String, state: Arc<ThreadState>) -> Worker {
        let s = &core.settings;
        let rule = FlapRule {
            threshold: s.flap_threshold,
            window: s.flap_window,
        };
        let backoff = Backoff::new(s.retry_max);
        Worker {
            core,
            key,
            channel,
            state,
            backoff,
            rule,
            episode: None,
        }
    }

    pub async fn run(mut self) {
        let (key, channel) = (self.key.clone(), self.channel.clone());
        self.load_episode().await;
        loop {
            let note = self.state.next_note();
            let limit = if self.state.is_flapping() {
                DIGEST_MAX
            } else {
                self.core.settings.coalesce_max
            };
            let mut batch = match self.core.outbox(|o| o.pending(&key, &channel, limit)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(thread = %self.key, error = %e, "cannot read the outbox; retrying");
                    tokio::time::sleep(self.backoff.next()).await;
                    continue;
                }
            };
            // A note follows the entries written before it, and only those (a
            // flapping process's digest does not hold it up).
            if let Some(note) = &note {
                let after = note.after.unwrap_or(0);
                if self.state.is_flapping() || batch.first().is_none_or(|e| e.id > after) {
                    self.post_note(note.card.clone()).await;
                    continue;
                }
                batch.retain(|e| e.id <= after);
            }
            if let Some(transitions) = self.state.observe(&batch, self.rule) {
                tracing::info!(
                    thread = %self.key, transitions,
                    "process is flapping: its replies become digests every {}s",
                    self.core.settings.digest_interval.as_secs()
                );
            }
            if let Some(wait) = self.not_due(&batch).await {
                // Read again after the wait: not held through it (a flapping
                // process's batch is up to DIGEST_MAX entries, for each process).
                let full = batch.len() == limit;
                drop(batch);
                match wait {
                    // New entries queue behind a full batch and cannot change it:
                    // re-reading it on every event would only churn (one folded into
                    // its last entry at a full outbox waits for the digest).
                    Some(wait) if full => tokio::time::sleep(wait).await,
                    Some(wait) => {
                        let _ = tokio::time::timeout(wait, self.state.work.notified()).await;
                    }
                    None => self.state.work.notified().await,
                }
                continue;
            }
            // Only its last id is needed from here (the claim reads the entries
            // again): not held through the waits for a parent, a slot or Slack.
            let upto = batch.last().map_or(0, |e| e.id);
            drop(batch);
            let thread = match self.parent().await {
                Parent::Ready(t) => t,
                Parent::Wait => continue,
                Parent::Refused(f) => {
                    if let Ok(batch) = self.core.outbox(|o| o.claim(&key, &channel, upto)) {
                        let thread = ThreadRecord::new(key.clone(), &channel);
                        self.give_up(&batch, &thread, f).await;
                    }
                    continue;
                }
            };
            let Some(flight) = self.core.shutdown.flight() else {
                // Stopping: what is waiting stays in the outbox for the next start.
                self.core.shutdown.triggered().await;
                std::future::pending::<()>().await;
                continue;
            };
            // From here on nothing is folded into these entries: what is marked
            // delivered is what is sent.
            let claimed = self.core.outbox(|o| o.claim(&key, &channel, upto));
            let batch = match claimed {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => continue,
                Err(e) => {
                    drop(flight);
                    tracing::error!(thread = %self.key, error = %e, "cannot claim outbox entries; retrying");
                    tokio::time::sleep(self.backoff.next()).await;
                    continue;
                }
            };
            let outcome = self.deliver(&batch, &thread).await;
            drop(flight);
            match outcome {
                Outcome::Done => {
                    self.backoff.reset();
                    self.state.replied();
                }
                Outcome::Again => {}
            }
        }
    }

    /// Takes up the episode an earlier run (or this worker before a panic) left,
    /// so that a restart in the middle of a crash loop tells the channel nothing new.
    async fn load_episode(&mut self) {
        loop {
            match self.core.shared.episode(&self.key, &self.channel).await {
                Ok(ep) => {
                    self.episode = ep;
                    self.backoff.reset();
                    return;
                }
                Err(e) => {
                    tracing::error!(thread = %self.key, error = %e, "cannot read the thread's failure episode; retrying");
                    tokio::time::sleep(self.backoff.next()).await;
                }
            }
        }
    }

    /// The thread with a parent to reply under: when it has none, or its parent is
    /// gone or older than `thread_ttl`, the keeper is asked for a new one and this
    /// waits for it.
    async fn parent(&mut self) -> Parent {
        if let Some(f) = self.state.take_refusal() {
            return Parent::Refused(f);
        }
        // The card replies go under: the program's across the fleet, or this host's.
        let card = self.core.card_key(&self.key);
        let thread = match self.core.shared.thread(&card, &self.channel).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(thread = %self.key, error = %e, "cannot read the thread map; retrying");
                tokio::time::sleep(self.backoff.next()).await;
                return Parent::Wait;
            }
        };
        let ttl = chrono::Duration::from_std(self.core.settings.thread_ttl)
            .unwrap_or(chrono::Duration::MAX);
        let renew = match thread {
            Some(mut t) if t.parent_ts.is_some() && Utc::now() - t.created <= ttl => {
                if card != self.key {
                    // The notes of a reply follow this host's own history.
                    let own = self.core.shared.thread(&self.key, &self.channel).await;
                    t.history = own.ok().flatten().map(|o| o.history).unwrap_or_default();
                }
                return Parent::Ready(t);
            }
            Some(t) if t.parent_ts.is_some() => {
                tracing::info!(thread = %self.key, "thread is older than thread_ttl: asking for a new parent");
                Renew {
                    replaces: t.parent_ts,
                    start_over: true,
                }
            }
            _ => Renew {
                replaces: None,
                start_over: false,
            },
        };
        self.state.ask_renew(renew);
        // Until the keeper has posted it (or Slack refused it); another host may post
        // the program's card: look again soon.
        let wait = if card.is_fleet() { Duration::from_millis(500) } else { PARENT_WAIT };
        let _ = tokio::time::timeout(wait, self.state.parent_ready.notified()).await;
        Parent::Wait
    }

    /// `None` when `batch` is to go out now; otherwise how long to wait for more
    /// (`Some(None)`: until new entries arrive). A flapping process that has been
    /// quiet long enough settles here.
    async fn not_due(&self, batch: &[OutboxEntry]) -> Option<Option<Duration>> {
        let s = &self.core.settings;
        if !self.state.is_flapping() {
            return batch.is_empty().then_some(None);
        }
        let since_reply = self.state.since_reply();
        let fatal = batch.iter().any(|e| e.event.to == State::Fatal);
        if !batch.is_empty() && (fatal || since_reply >= s.digest_interval) {
            return None;
        }
        if !batch.is_empty() {
            return Some(Some(s.digest_interval.saturating_sub(since_reply)));
        }
        let quiet = self.state.quiet();
        if quiet >= s.settle_after {
            self.settle().await;
            return Some(Some(Duration::ZERO));
        }
        Some(Some(s.settle_after - quiet))
    }

    /// A flapping process stayed in one state for `settle_after`: say so in its
    /// thread; the keeper then clears the flapping mark on its parent.
    async fn settle(&self) {
        self.state.settle();
        let Ok(Some(thread)) = self.core.shared.thread(&self.key, &self.channel).await else {
            return;
        };
        let Some(latest) = thread.latest.clone() else {
            return;
        };
        tracing::info!(thread = %self.key, state = %latest.to, "process settled");
        let out = Outgoing {
            channel: self.channel.clone(),
            card: notes::settled(&latest, self.core.settings.settle_after.as_secs()),
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        if let Err(f) = self
            .core
            .retrier
            .post(&out, std::slice::from_ref(&latest), Variant::Reply)
            .await
        {
            tracing::warn!(thread = %self.key, "could not post the settled note: {f}");
        }
    }

    /// Posts a note under the parent (never broadcast, never a mention).
    async fn post_note(&mut self, card: crate::card::Card) {
        let thread = match self.parent().await {
            Parent::Ready(t) => t,
            Parent::Wait => return,
            Parent::Refused(f) => {
                tracing::warn!(thread = %self.key, "could not post a note in the thread: no parent ({f})");
                self.state.pop_note();
                return;
            }
        };
        let out = Outgoing {
            channel: self.channel.clone(),
            card,
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        match self.core.retrier.post_note(&out).await {
            Ok(_) => {}
            Err(Failure::ThreadGone(_)) => {
                self.state.ask_renew(Renew {
                    replaces: thread.parent_ts,
                    start_over: false,
                });
                return;
            }
            // A note Slack refuses is logged; the thread goes on without it.
            Err(f) => tracing::warn!(thread = %self.key, "could not post a note in the thread: {f}"),
        }
        self.state.pop_note();
    }

    async fn deliver(&mut self, batch: &[OutboxEntry], thread: &ThreadRecord) -> Outcome {
        let core = &self.core;
        let key = &self.key;
        let events: Vec<ProcessState> = batch.iter().map(|e| e.event.clone()).collect();
        let latest = events.last().expect("non-empty batch").clone();
        let identity = Identity {
            host: key.host.clone(),
            server: latest.server.clone(),
            serials: events.iter().map(|e| e.serial).collect(),
        };
        // A muted thread: replies stay in it, without mentions.
        let mute = core.mute_of(key).await;
        let counts = NoteCounts {
            dropped: batch.iter().map(|e| e.dropped_before).sum(),
            coalesced: batch.iter().map(|e| e.coalesced).sum(),
        };
        let notes = notes::reply_notes(&events, counts, &thread.history);
        // Why it failed: asked of supervisord for the last failure of the batch, on
        // this side only, bounded by the context time-out.
        let failed = events.iter().rev().find(|e| e.is_failing());
        let crash = match (&core.context, failed) {
            (Some(source), Some(failed)) => source.for_event(failed).await,
            _ => None,
        };
        let mentions = match &mute {
            Some(_) => Vec::new(),
            None => core.settings.routes.mentions_for_all(&events),
        };
        let mut reply = core
            .renderer
            .reply(&ReplyInput {
                events: &events,
                environment: core.settings.environment.as_deref(),
                notes: &notes,
                context: crash.as_ref(),
                mentions: &mentions,
            })
            .with_controls(core.reply_controls(key, &events, mute.as_ref()).as_ref());
        if !mentions.is_empty() {
            // In the top-level text too: that is what notifies (mentions inside a
            // legacy attachment may not).
            reply.text = format!("{} {}", reply.text, mentions.join(" "));
        }
        // A mute keeps the reply out of the channel; the episode counts as told.
        let decision = episode::decide(self.episode.as_ref(), &events, core.settings.settle_after);
        // With a card per program, this host's episode is one part of the program's:
        // only the first failure across the fleet is told (and once more as it grows).
        let fleet_says = !decision.broadcast || !core.card_key(key).is_fleet() || self.fleet_broadcast(&events).await;
        let out = Outgoing {
            channel: self.channel.clone(),
            card: reply,
            thread_ts: thread.parent_ts.clone(),
            broadcast: core.settings.broadcast_failures && decision.broadcast && fleet_says && mute.is_none(),
            identity: Some(identity),
        };
        match core.retrier.post(&out, &events, Variant::Reply).await {
            Ok(_) => {}
            Err(Failure::ThreadGone(code)) => {
                tracing::warn!(thread = %key, code, "the parent message is gone: asking for a new parent");
                self.state.ask_renew(Renew {
                    replaces: thread.parent_ts.clone(),
                    start_over: false,
                });
                return Outcome::Again;
            }
            Err(f) => return self.give_up(batch, thread, f).await,
        }
        let states: Vec<State> = events.iter().map(|e| e.to).collect();
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let channel = &self.channel;
        // The local outbox first: once it says delivered, nothing posts these again,
        // whatever becomes of the shared state (a fleet database may be out of reach).
        core.persist(key, "the delivered entries", || async {
            core.outbox(|o| o.mark_delivered(&ids))
        })
        .await;
        if decision.episode != self.episode {
            let ep = decision.episode.as_ref();
            core.persist(key, "the failure episode", || core.shared.save_episode(key, channel, ep))
                .await;
        }
        core.persist(key, "the delivered reply", || {
            core.shared.record_delivery(key, channel, &states, &latest)
        })
        .await;
        self.episode = decision.episode;
        // --- the last crash, kept for `/supervisor why` (best effort: a reply
        // without it is still delivered).
        if let (Some(failed), Some(context)) = (failed, crash) {
            let record = CrashRecord {
                at: failed.at,
                state: failed.to,
                expected: failed.expected,
                context,
            };
            if let Err(e) = core.shared.record_crash(key, &record).await {
                tracing::warn!(thread = %key, error = %e, "cannot keep the crash context for /supervisor why");
            }
        }
        Outcome::Done
    }

    /// Whether a reply of this host goes to the channel too, when cards are per
    /// program: only a failure (never a recovery), and only as the program's fleet
    /// episode allows — its first failure, and once more if it grows to half the
    /// hosts later on.
    async fn fleet_broadcast(&self, events: &[ProcessState]) -> bool {
        let recovered = events.last().is_some_and(|e| e.to == State::Running);
        if recovered || !events.iter().any(ProcessState::is_failure) {
            return false;
        }
        let core = &self.core;
        let parts = super::fleet_keeper::parts(core, &self.key, &self.channel, events.last()).await;
        let failing = parts
            .iter()
            .filter(|(_, p)| matches!(p, crate::card::fleet_card::HostPart::State { state, expected, .. } if crate::supervisord::event::failing(*state, *expected)))
            .count()
            .max(1);
        let card = core.card_key(&self.key);
        core.shared
            .fleet_broadcast(&card, &self.channel, failing, parts.len().max(1), core.settings.settle_after)
            .await
            .unwrap_or(false)
    }

    /// A batch Slack will not take in any form: set aside (kept on disk with the
    /// reason, counted, listed by `check`) so that it never blocks its thread, and said
    /// in the thread and the log.
    async fn give_up(&self, batch: &[OutboxEntry], thread: &ThreadRecord, f: Failure) -> Outcome {
        let key = &self.key;
        let serials: Vec<u64> = batch.iter().map(|e| e.event.serial).collect();
        tracing::error!(thread = %key, ?serials, "set aside these events: {f}");
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let reason = f.to_string();
        self.core
            .persist(key, "the entries set aside", || async {
                self.core.outbox(|o| o.set_aside(&ids, &reason))
            })
            .await;
        let out = Outgoing {
            channel: thread.channel.clone(),
            card: notes::set_aside(batch.len(), &reason),
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        // Once: the note must not block the thread either.
        if let Err(e) = self.core.retrier.post_once(&out).await {
            tracing::warn!(thread = %key, "could not post the set-aside note: {e}");
        }
        Outcome::Done
    }
}
