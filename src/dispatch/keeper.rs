//! A thread's keeper: the one task that posts the thread's parent and keeps it
//! showing the newest state known — delivered or still waiting in the outbox —
//! independently of the replies, which may be queued behind other threads' posts.
//! It posts the first parent, a new one when the old one is gone, refuses edits or
//! is older than `thread_ttl` (asked by the worker), and records each with a
//! compare-and-set on the parent it replaces, so that a stale copy never undoes a
//! newer parent. Edits are paced so that a storm never drains Slack's edit budget:
//! every parent is final moments after a storm ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::controls::mute_left;
use super::delivery::Delivery;
use super::retry::Edited;
use super::thread::{Renew, ThreadState};
use super::worker::DIGEST_MAX;
use crate::card::{Card, ParentInput, Variant};
use crate::slack::Outgoing;
use crate::store::{Posted, ThreadRecord};
use crate::supervisord::event::{ProcessState, ThreadKey};

/// A process whose events come less than this apart is still changing.
const QUIET: Duration = Duration::from_millis(2500);

pub(super) struct Keeper {
    core: Arc<Delivery>,
    key: ThreadKey,
    channel: String,
    state: Arc<ThreadState>,
    last_edit: Option<Instant>,
    /// This thread owes an edit (counted in the core's `owing`).
    owing: bool,
}

/// What the parent should show now.
struct Want {
    thread: Option<ThreadRecord>,
    card: Card,
    latest: ProcessState,
}

impl Keeper {
    pub fn new(core: Arc<Delivery>, key: ThreadKey, channel: String, state: Arc<ThreadState>) -> Keeper {
        Keeper {
            core,
            key,
            channel,
            state,
            last_edit: None,
            owing: false,
        }
    }

    pub async fn run(mut self) {
        loop {
            let renew = self.state.take_renew();
            // Owing an edit that is not due yet: wait for it to come due (or for a
            // change of pace) without reading the outbox or rendering a card. What
            // the parent will show is read when the edit goes out.
            if self.owing && renew.is_none() {
                if let Some(wait) = self.edit_not_due() {
                    let _ = tokio::time::timeout(wait, self.state.parent.notified()).await;
                    continue;
                }
            }
            let Some(want) = self.want(renew.as_ref()).await else {
                self.state.parent.notified().await;
                continue;
            };
            let parent = want
                .thread
                .as_ref()
                .and_then(|t| Some((t.parent_ts.clone()?, t.channel_id.clone()?, t.created)));
            match (parent, renew) {
                // No parent yet: post the first one at once.
                (None, _) => self.post_parent(None, false, want).await,
                // The worker cannot reply under this parent any more.
                (Some((ts, _, _)), Some(r)) if r.replaces.as_deref() == Some(ts.as_str()) => {
                    self.post_parent(Some(ts), r.start_over, want).await
                }
                (Some((ts, channel_id, at)), _) => {
                    self.edit(Posted { channel_id, ts, at }, want).await
                }
            }
        }
    }

    /// The card the parent should show, from the thread and what waits in the
    /// outbox; `None` when there is nothing to show yet.
    async fn want(&self, renew: Option<&Renew>) -> Option<Want> {
        let core = &self.core;
        let thread = core.shared.thread(&self.key, &self.channel).await.ok()?;
        let (key, channel) = (&self.key, &self.channel);
        let waiting = core.outbox(|o| o.waiting_view(key, channel, DIGEST_MAX)).ok()?;
        let latest = waiting
            .newest
            .or_else(|| thread.as_ref().and_then(|t| t.latest.clone()))?;
        let start_over = renew.is_some_and(|r| r.start_over);
        let mut history = match &thread {
            Some(t) if !start_over => t.history.clone(),
            _ => Vec::new(),
        };
        history.extend(waiting.states);
        let since = match &thread {
            Some(t) if t.parent_ts.is_some() && !start_over => t.created,
            _ => Utc::now(),
        };
        let mute = core.mute_of(&self.key).await;
        let card = core
            .renderer
            .parent(&ParentInput {
                latest: &latest,
                history: &history,
                since,
                environment: core.settings.environment.as_deref(),
                flapping: self.state.is_flapping(),
            })
            .with_controls(core.controls(&self.key, latest.to, mute.as_ref()).as_ref());
        Some(Want {
            thread,
            card,
            latest,
        })
    }

    /// Posts a new parent replacing `replaces` and records it (compare-and-set);
    /// the worker then replies under it.
    async fn post_parent(&mut self, replaces: Option<String>, start_over: bool, want: Want) {
        let core = &self.core;
        let out = Outgoing::top_level(&self.channel, want.card.clone());
        let posted = match core
            .retrier
            .post(&out, std::slice::from_ref(&want.latest), Variant::Parent)
            .await
        {
            Ok(p) => p,
            Err(f) => {
                // Final (the card and its plain text refused, an unknown error
                // tried enough): the worker sets its entries aside and asks again.
                tracing::error!(thread = %self.key, "cannot post the parent: {f}");
                self.state.parent_refused(f);
                return;
            }
        };
        self.record(replaces.as_deref(), &posted, start_over).await;
        *self.state.shown.lock().unwrap() = Some(want.card);
    }

    /// Records a new parent; a restart never posts a second one.
    async fn record(&self, replaces: Option<&str>, posted: &Posted, start_over: bool) {
        let core = &self.core;
        let (key, channel) = (&self.key, &self.channel);
        let swapped = std::sync::atomic::AtomicBool::new(false);
        core.persist(key, "the new parent", || async {
            let done = core.shared.set_parent(key, channel, replaces, posted, start_over).await?;
            swapped.store(done, Ordering::SeqCst);
            Ok(())
        })
        .await;
        let swapped = swapped.load(Ordering::SeqCst);
        if swapped {
            tracing::info!(thread = %key, ts = %posted.ts, "posted the thread's parent");
        } else {
            tracing::warn!(thread = %key, ts = %posted.ts, "the thread's parent changed while this one was posted: keeping the newer one");
        }
        self.state.parent_posted();
    }

    /// Keeps the parent at `at` showing `want`: nothing when it shows it already;
    /// otherwise an edit when it comes due.
    async fn edit(&mut self, at: Posted, want: Want) {
        if self.state.shown.lock().unwrap().as_ref() == Some(&want.card) {
            // A muted parent is drawn again when the mute ends.
            let mute = self.core.mute_of(&self.key).await;
            match mute_left(mute.as_ref()) {
                Some(left) => {
                    let _ = tokio::time::timeout(left + Duration::from_secs(1), self.state.parent.notified()).await;
                }
                None => self.state.parent.notified().await,
            }
            return;
        }
        if !self.owing {
            self.owing = true;
            self.core.owing.fetch_add(1, Ordering::SeqCst);
            if self.edit_not_due().is_some() {
                return;
            }
        }
        self.last_edit = Some(Instant::now());
        // Shown or given up on: either way, wait for the next change.
        match self
            .core
            .retrier
            .edit_or_replace(&self.channel, &at, &want.card, Some(&want.latest))
            .await
        {
            Ok(Edited::InPlace) => {}
            Ok(Edited::Replaced(posted)) => self.record(Some(&at.ts), &posted, false).await,
            Err(f) => tracing::error!(thread = %self.key, "gave up editing the parent: {f}"),
        }
        *self.state.shown.lock().unwrap() = Some(want.card);
        self.owing = false;
        self.core.owing.fetch_sub(1, Ordering::SeqCst);
    }

    /// How long an owed edit must still wait (`None`: it may go now). It goes at once
    /// if this thread has not edited for a while; otherwise when the process has been
    /// quiet for a moment, or when its share of half the edit budget (shared by every
    /// thread owing one) comes round. The other half is the reserve that lets every
    /// parent show its final state right after a storm.
    fn edit_not_due(&self) -> Option<Duration> {
        let n = self.core.owing.load(Ordering::SeqCst).max(1) as f64;
        let pace = Duration::from_secs_f64(n * 120.0 / self.core.settings.updates_per_minute as f64)
            .max(QUIET);
        let since = self.last_edit.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        let quiet = self.state.quiet();
        (since < pace && quiet < QUIET).then(|| (pace - since).min(QUIET - quiet))
    }
}
