//! A thread's keeper: keeps the parent showing the newest state known — delivered or
//! still waiting in the outbox — independently of the replies, which may be queued
//! behind other threads' posts. Paced so that a storm never drains Slack's edit
//! budget: every parent is final moments after a storm ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::thread::ThreadState;
use super::worker::DIGEST_MAX;
use super::Dispatcher;
use crate::card::{self, ParentInput, Variant};
use crate::slack::{Failure, Outgoing};
use crate::store::ThreadRecord;
use crate::supervisord::event::{ProcessState, ThreadKey};

/// A process whose events come less than this apart is still changing.
const QUIET: Duration = Duration::from_millis(2500);

impl Dispatcher {
    pub(super) async fn keeper(
        self: Arc<Self>,
        key: ThreadKey,
        channel: String,
        state: Arc<ThreadState>,
    ) {
        let mut last_edit: Option<Instant> = None;
        let mut owing = false;
        loop {
            // Owing an edit that is not due yet: wait for it to come due (or for a
            // change of pace) without reading the outbox or rendering a card. What
            // the parent will show is read when the edit goes out.
            if owing {
                if let Some(wait) = self.edit_not_due(last_edit, &state) {
                    let _ = tokio::time::timeout(wait, state.parent.notified()).await;
                    continue;
                }
            }
            // No parent yet (the worker posts it): nothing to edit, nothing to read.
            let mut thread = match self.with_store(|s| s.thread(&key, &channel)) {
                Ok(Some(t)) if t.parent_ts.is_some() => t,
                _ => {
                    state.parent.notified().await;
                    continue;
                }
            };
            let Ok(waiting) = self.with_store(|s| s.waiting_view(&key, &channel, DIGEST_MAX))
            else {
                state.parent.notified().await;
                continue;
            };
            let Some(latest) = waiting.newest.or_else(|| thread.latest.clone()) else {
                state.parent.notified().await;
                continue;
            };
            let mut history = thread.history.clone();
            history.extend(waiting.states);
            let mute = self.mute_of(&key);
            let card = self
                .renderer
                .parent(&ParentInput {
                    latest: &latest,
                    history: &history,
                    since: thread.created,
                    environment: self.settings.environment.as_deref(),
                    flapping: state.is_flapping(),
                })
                .with_controls(self.controls(&key, latest.to, mute.as_ref()).as_ref());
            if state.shown.lock().unwrap().as_ref() == Some(&card) {
                // A muted parent is drawn again when the mute ends.
                match Self::mute_left(mute.as_ref()) {
                    Some(left) => {
                        let _ = tokio::time::timeout(left + Duration::from_secs(1), state.parent.notified()).await;
                    }
                    None => state.parent.notified().await,
                }
                continue;
            }
            if !owing {
                owing = true;
                self.owing.fetch_add(1, Ordering::SeqCst);
                if self.edit_not_due(last_edit, &state).is_some() {
                    continue;
                }
            }
            last_edit = Some(Instant::now());
            // Shown or given up on: either way, wait for the next change.
            self.edit_parent(&mut thread, &card, &latest).await;
            *state.shown.lock().unwrap() = Some(card);
            owing = false;
            self.owing.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// How long an owed edit must still wait (`None`: it may go now). It goes at once
    /// if this thread has not edited for a while; otherwise when the process has been
    /// quiet for a moment, or when its share of half the edit budget (shared by every
    /// thread owing one) comes round. The other half is the reserve that lets every
    /// parent show its final state right after a storm.
    fn edit_not_due(&self, last_edit: Option<Instant>, state: &ThreadState) -> Option<Duration> {
        let n = self.owing.load(Ordering::SeqCst).max(1) as f64;
        let pace =
            Duration::from_secs_f64(n * 120.0 / self.settings.updates_per_minute as f64).max(QUIET);
        let since = last_edit.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        let quiet = state.quiet();
        (since < pace && quiet < QUIET).then(|| (pace - since).min(QUIET - quiet))
    }

    /// Edits the parent (as plain text when Slack refuses the card); when the parent
    /// can no longer be edited, posts a new parent (saved in `thread`). Returns
    /// whether the channel now shows `card`'s state.
    async fn edit_parent(
        &self,
        thread: &mut ThreadRecord,
        card: &card::Card,
        latest: &ProcessState,
    ) -> bool {
        let (Some(ts), Some(channel_id)) = (thread.parent_ts.clone(), thread.channel_id.clone())
        else {
            return false;
        };
        match self
            .retrier
            .update(&thread.channel, &channel_id, &ts, card, latest)
            .await
        {
            Ok(()) => true,
            Err(Failure::EditRefused(code)) | Err(Failure::ThreadGone(code)) => {
                tracing::info!(thread = %thread.key, code, "the parent can no longer be edited: posting a new parent");
                let out = Outgoing::top_level(&thread.channel, card.clone());
                match self
                    .retrier
                    .post(&out, std::slice::from_ref(latest), Variant::Parent)
                    .await
                {
                    Ok(posted) => {
                        thread.parent_ts = Some(posted.ts);
                        thread.channel_id = Some(posted.channel_id);
                        thread.created = Utc::now();
                        let key = thread.key.clone();
                        self.persist(&key, "the new parent", |s| s.save_parent(thread))
                            .await;
                        true
                    }
                    Err(f) => {
                        tracing::error!(thread = %thread.key, "cannot post a new parent: {f}");
                        false
                    }
                }
            }
            Err(f) => {
                tracing::error!(thread = %thread.key, "gave up editing the parent: {f}");
                false
            }
        }
    }
}
