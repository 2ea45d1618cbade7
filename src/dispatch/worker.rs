//! A thread's worker: posts its replies strictly in order, forever. What piled up
//! goes out as one reply (at most `coalesce_max` events); while the process flaps,
//! replies become digests (at most one per `digest_interval`, FATAL at once) and a
//! "settled" reply ends the episode. The parent is kept current meanwhile by the
//! thread's [`keeper`](super::keeper).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::retry::Backoff;
use super::thread::{FlapRule, ThreadState};
use super::Dispatcher;
use crate::card::notes::{self, NoteCounts};
use crate::card::{ParentInput, ReplyInput, Variant};
use crate::slack::{Failure, Identity, Outgoing};
use crate::store::{OutboxEntry, StoreError, ThreadRecord};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// A flapping process's digest takes up to this many waiting events (the card
/// compacts them into a run-length sequence).
pub(super) const DIGEST_MAX: usize = 500;

/// What a delivery attempt concluded.
enum Outcome {
    Done,
    /// Try the same entries again (e.g. the parent vanished: a new one is needed).
    Again,
}

impl Dispatcher {
    pub(super) async fn worker(
        self: Arc<Self>,
        key: ThreadKey,
        channel: String,
        state: Arc<ThreadState>,
    ) {
        let mut backoff = Backoff::new(self.settings.retry_max);
        let rule = FlapRule {
            threshold: self.settings.flap_threshold,
            window: self.settings.flap_window,
        };
        loop {
            let limit = if state.is_flapping() {
                DIGEST_MAX
            } else {
                self.settings.coalesce_max
            };
            let batch = match self.with_store(|s| s.pending(&key, &channel, limit)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(thread = %key, error = %e, "cannot read the outbox; retrying");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            if let Some(transitions) = state.observe(&batch, rule) {
                tracing::info!(
                    thread = %key, transitions,
                    "process is flapping: its replies become digests every {}s",
                    self.settings.digest_interval.as_secs()
                );
            }
            if let Some(wait) = self.not_due(&key, &channel, &batch, &state).await {
                if let Some(wait) = wait {
                    if batch.len() == limit {
                        // New entries queue behind a full batch and cannot change
                        // it: re-reading it on every event would only churn (one
                        // folded into its last entry at a full outbox waits for
                        // the digest).
                        tokio::time::sleep(wait).await;
                    } else {
                        let _ = tokio::time::timeout(wait, state.work.notified()).await;
                    }
                } else {
                    state.work.notified().await;
                }
                continue;
            }
            let Some(flight) = self.in_flight.enter() else {
                // Stopping: what is waiting stays in the outbox for the next start.
                std::future::pending::<()>().await;
                continue;
            };
            // From here on nothing is folded into these entries: what is marked
            // delivered is what is sent.
            let upto = batch.last().map_or(0, |e| e.id);
            let batch = match self.with_store(|s| s.claim(&key, &channel, upto)) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => continue,
                Err(e) => {
                    drop(flight);
                    tracing::error!(thread = %key, error = %e, "cannot claim outbox entries; retrying");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            let outcome = self.deliver(&key, &channel, &batch, &state).await;
            drop(flight);
            match outcome {
                Ok(Outcome::Done) => {
                    backoff.reset();
                    state.replied();
                }
                Ok(Outcome::Again) => {}
                Err(e) => {
                    tracing::error!(thread = %key, error = %e, "cannot record a delivery; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// `None` when `batch` is to go out now; otherwise how long to wait for more
    /// (`Some(None)`: until new entries arrive). A flapping process that has been
    /// quiet long enough settles here.
    async fn not_due(
        &self,
        key: &ThreadKey,
        channel: &str,
        batch: &[OutboxEntry],
        state: &ThreadState,
    ) -> Option<Option<Duration>> {
        if !state.is_flapping() {
            return batch.is_empty().then_some(None);
        }
        let since_reply = state.since_reply();
        let fatal = batch.iter().any(|e| e.event.to == State::Fatal);
        if !batch.is_empty() && (fatal || since_reply >= self.settings.digest_interval) {
            return None;
        }
        if !batch.is_empty() {
            return Some(Some(
                self.settings.digest_interval.saturating_sub(since_reply),
            ));
        }
        let quiet = state.quiet();
        if quiet >= self.settings.settle_after {
            self.settle(key, channel, state).await;
            return Some(Some(Duration::ZERO));
        }
        Some(Some(self.settings.settle_after - quiet))
    }

    /// A flapping process stayed in one state for `settle_after`: say so in its
    /// thread; the keeper then clears the flapping mark on its parent.
    async fn settle(&self, key: &ThreadKey, channel: &str, state: &ThreadState) {
        state.settle();
        let Ok(Some(thread)) = self.with_store(|s| s.thread(key, channel)) else {
            return;
        };
        let Some(latest) = thread.latest.clone() else {
            return;
        };
        tracing::info!(thread = %key, state = %latest.to, "process settled");
        let out = Outgoing {
            channel: channel.to_string(),
            card: notes::settled(&latest, self.settings.settle_after.as_secs()),
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        if let Err(f) = self
            .retrier
            .post(&out, std::slice::from_ref(&latest), Variant::Reply)
            .await
        {
            tracing::warn!(thread = %key, "could not post the settled note: {f}");
        }
    }

    async fn deliver(
        &self,
        key: &ThreadKey,
        channel: &str,
        batch: &[OutboxEntry],
        state: &ThreadState,
    ) -> Result<Outcome, StoreError> {
        let events: Vec<ProcessState> = batch.iter().map(|e| e.event.clone()).collect();
        let latest = events.last().expect("non-empty batch").clone();
        let now = Utc::now();
        let mut thread = self
            .with_store(|s| s.thread(key, channel))?
            .unwrap_or_else(|| ThreadRecord::new(key.clone(), channel));
        let ttl =
            chrono::Duration::from_std(self.settings.thread_ttl).unwrap_or(chrono::Duration::MAX);
        if thread.parent_ts.is_some() && now - thread.created > ttl {
            tracing::info!(thread = %key, "thread is older than thread_ttl: starting a new parent");
            thread.parent_ts = None;
            thread.history.clear();
        }
        let identity = Identity {
            host: key.host.clone(),
            server: latest.server.clone(),
            serials: events.iter().map(|e| e.serial).collect(),
        };
        let mut history = thread.history.clone();
        history.extend(events.iter().map(|e| e.to));
        // A muted thread: replies stay in it, without mentions.
        let mute = self.mute_of(key);

        // A new parent first when there is none; otherwise the keeper edits it.
        if thread.parent_ts.is_none() {
            let card = self
                .renderer
                .parent(&ParentInput {
                    latest: &latest,
                    history: &history,
                    since: now,
                    environment: self.settings.environment.as_deref(),
                    flapping: state.is_flapping(),
                })
                .with_controls(self.controls(key, latest.to, mute.as_ref()).as_ref());
            let out = Outgoing::top_level(channel, card.clone());
            match self.retrier.post(&out, &events, Variant::Parent).await {
                Ok(posted) => {
                    thread.parent_ts = Some(posted.ts);
                    thread.channel_id = Some(posted.channel_id);
                    thread.created = now;
                    // Saved at once: a restart never posts a second parent.
                    self.persist(key, "the new parent", |s| s.save_thread(&thread))
                        .await;
                    *state.shown.lock().unwrap() = Some(card);
                }
                Err(f) => return Ok(self.give_up(key, batch, &thread, f).await),
            }
        }

        let counts = NoteCounts {
            dropped: batch.iter().map(|e| e.dropped_before).sum(),
            coalesced: batch.iter().map(|e| e.coalesced).sum(),
        };
        let notes = notes::reply_notes(&events, counts, &thread.history);
        // Why it failed: asked of supervisord for the last failure of the batch, on
        // this side only, bounded by the context time-out.
        let crash = match (
            &self.context,
            events.iter().rev().find(|e| e.is_crash()),
        ) {
            (Some(source), Some(failed)) => source.for_event(failed).await,
            _ => None,
        };
        let mentions = match &mute {
            Some(_) => Vec::new(),
            None => self.settings.routes.mentions_for_all(&events),
        };
        let mut reply = self
            .renderer
            .reply(&ReplyInput {
                events: &events,
                environment: self.settings.environment.as_deref(),
                notes: &notes,
                context: crash.as_ref(),
                mentions: &mentions,
            })
            .with_controls(self.reply_controls(key, &events, mute.as_ref()).as_ref());
        if !mentions.is_empty() {
            // In the top-level text too: that is what notifies (mentions inside a
            // legacy attachment may not).
            reply.text = format!("{} {}", reply.text, mentions.join(" "));
        }
        let out = Outgoing {
            channel: channel.to_string(),
            card: reply,
            thread_ts: thread.parent_ts.clone(),
            broadcast: self.settings.broadcast_failures
                && state.broadcast(&events, self.settings.settle_after)
                && mute.is_none(),
            identity: Some(identity),
        };
        match self.retrier.post(&out, &events, Variant::Reply).await {
            Ok(_) => {}
            Err(Failure::ThreadGone(code)) => {
                tracing::warn!(thread = %key, code, "the parent message is gone: posting a new parent");
                thread.parent_ts = None;
                self.persist(key, "the lost parent", |s| s.save_parent(&thread))
                    .await;
                return Ok(Outcome::Again);
            }
            Err(f) => return Ok(self.give_up(key, batch, &thread, f).await),
        }
        thread.history = history;
        thread.truncate_history();
        thread.latest = Some(latest);
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        self.persist(key, "the delivered reply", |s| s.commit_delivery(&thread, &ids))
            .await;
        Ok(Outcome::Done)
    }

    /// A batch Slack will not take in any form: set aside (kept on disk with the
    /// reason, counted, listed by `check`) so that it never blocks its thread, and said
    /// in the thread and the log.
    async fn give_up(
        &self,
        key: &ThreadKey,
        batch: &[OutboxEntry],
        thread: &ThreadRecord,
        f: Failure,
    ) -> Outcome {
        let serials: Vec<u64> = batch.iter().map(|e| e.event.serial).collect();
        tracing::error!(thread = %key, ?serials, "set aside these events: {f}");
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let reason = f.to_string();
        self.persist(key, "the entries set aside", |s| s.set_aside(&ids, &reason))
            .await;
        if let Some(ts) = &thread.parent_ts {
            let out = Outgoing {
                channel: thread.channel.clone(),
                card: notes::set_aside(batch.len(), &reason),
                thread_ts: Some(ts.clone()),
                broadcast: false,
                identity: None,
            };
            // Best effort, once: the note must not block the thread either.
            if let Err(e) = self.retrier.api.post(&out).await {
                tracing::warn!(thread = %key, "could not post the set-aside note: {e}");
            }
        }
        Outcome::Done
    }
}
