//! The delivery policy: one ordered worker per thread key, coalescing what piled up,
//! pacing each channel, waiting out 429s, retrying transient failures with backoff,
//! falling back to plain text when Slack refuses a card. Knows no wire bytes: it
//! reads the outbox, renders cards and calls [`SlackApi`].
//!
//! Per thread: post a parent the first time (its `ts` is saved at once, so a restart
//! never posts a second parent), post every transition as a reply, then edit the
//! parent to show the current state. Entries are marked delivered only after Slack
//! confirmed the reply.

use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;

use crate::bucket::Bucket;
use crate::card::{self, ParentInput, Renderer, ReplyInput, Variant};
use crate::config::Settings;
use crate::crash::ContextSource;
use crate::supervisord::event::{ProcessState, State, ThreadKey};
use crate::listen::{Wake, Wakeup};
use crate::slack::{Failure, Identity, Outgoing, Posted, SlackApi};
use crate::store::{OutboxEntry, Store, StoreError, ThreadRecord};

/// A flapping process's digest takes up to this many waiting events (the card
/// compacts them into a run-length sequence).
const DIGEST_MAX: usize = 500;

/// Delivered entries are kept this long so that a resend is still recognised.
const KEEP_DELIVERED: chrono::Duration = chrono::Duration::hours(24);

/// What kind of call, for pacing.
enum Call<'a> {
    Post(&'a str),
    Update,
}

/// Shared limits: the 429 gate (no call to Slack before it opens) and the buckets.
struct Limits {
    closed_until: Mutex<Option<Instant>>,
    posts: Mutex<HashMap<String, Bucket>>,
    updates: Mutex<Bucket>,
    post_burst: u32,
    post_interval: Duration,
}

impl Limits {
    async fn acquire(&self, call: &Call<'_>) {
        loop {
            let gate = *self.closed_until.lock().unwrap();
            if let Some(t) = gate.filter(|t| *t > Instant::now()) {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            let wait = match call {
                Call::Post(channel) => self
                    .posts
                    .lock()
                    .unwrap()
                    .entry(channel.to_string())
                    .or_insert_with(|| Bucket::full(self.post_burst, self.post_interval, Instant::now()))
                    .take(Instant::now()),
                Call::Update => self.updates.lock().unwrap().take(Instant::now()),
            };
            match wait {
                Ok(()) => {
                    // The gate may have closed while we waited for a token.
                    let gate = *self.closed_until.lock().unwrap();
                    if gate.is_some_and(|t| t > Instant::now()) {
                        continue;
                    }
                    return;
                }
                Err(d) => tokio::time::sleep(d).await,
            }
        }
    }

    fn close_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut g = self.closed_until.lock().unwrap();
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }
}

/// Counters for tests and the benchmark driver.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub posts: u64,
    pub updates: u64,
    pub rate_limited: u64,
    pub retries: u64,
    pub fallbacks: u64,
    pub given_up: u64,
}

pub struct Dispatcher {
    api: SlackApi,
    /// supervisord's XML-RPC, for the crash context of failures (None: not available).
    context: Option<ContextSource>,
    store: Mutex<Store>,
    renderer: Renderer,
    settings: Settings,
    limits: Limits,
    /// Setup errors already logged (logged again after a success).
    reported: Mutex<HashSet<String>>,
    /// How many parents owe an edit now (they share the edit budget).
    owing: AtomicUsize,
    pub stats: Mutex<Stats>,
}

/// A worker's view of how often its process changes.
#[derive(Default)]
struct Flap {
    /// When each recent transition was first seen (within `flap_window`).
    times: VecDeque<Instant>,
    /// The newest outbox entry counted.
    seen: Option<i64>,
    flapping: bool,
    last_reply: Option<Instant>,
}

/// What a thread's worker (replies) and keeper (parent) share.
#[derive(Default)]
pub(crate) struct Shared {
    /// New entries for the worker.
    work: Notify,
    /// The parent may need an edit.
    parent: Notify,
    flapping: AtomicBool,
    last_event: Mutex<Option<Instant>>,
    /// The parent card the channel shows now (as posted or last edited).
    shown: Mutex<Option<card::Card>>,
}

impl Shared {
    /// How long since the process last changed state.
    fn quiet(&self) -> Duration {
        self.last_event
            .lock()
            .unwrap()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }
}

/// What a delivery attempt concluded.
enum Outcome {
    Done,
    /// Try the same entries again (e.g. the parent vanished: a new one is needed).
    Again,
}

impl Dispatcher {
    pub fn new(
        api: SlackApi,
        context: Option<ContextSource>,
        store: Store,
        renderer: Renderer,
        settings: Settings,
    ) -> Arc<Self> {
        let per_update = Duration::from_secs_f64(60.0 / settings.updates_per_minute as f64);
        Arc::new(Dispatcher {
            api,
            context,
            store: Mutex::new(store),
            renderer,
            limits: Limits {
                closed_until: Mutex::new(None),
                posts: Mutex::new(HashMap::new()),
                // Half a minute's edits may go at once: the reserve that lets every
                // parent show its final state right after a storm.
                updates: Mutex::new(Bucket::full(
                    (settings.updates_per_minute / 2).max(1),
                    per_update,
                    Instant::now(),
                )),
                post_burst: settings.post_burst,
                post_interval: settings.post_interval,
            },
            settings,
            reported: Mutex::new(HashSet::new()),
            owing: AtomicUsize::new(0),
            stats: Mutex::new(Stats::default()),
        })
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.store.lock().unwrap())
    }

    /// Runs for the life of the process: one worker per thread key, started for
    /// what the outbox already holds (after a restart) and for every nudge.
    pub async fn run(self: Arc<Self>, wakes: Arc<Wakeup>) {
        let mut workers: HashMap<Wake, Arc<Shared>> = HashMap::new();
        let start = self.with_store(|s| s.pending_keys()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the outbox");
            Vec::new()
        });
        if !start.is_empty() {
            tracing::info!(
                threads = start.len(),
                "delivering what the outbox held from before"
            );
        }
        for w in start {
            self.clone().nudge(&mut workers, w);
        }
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                keys = wakes.take() => {
                    for w in keys {
                        self.clone().nudge(&mut workers, w);
                    }
                }
                _ = prune.tick() => {
                    if let Err(e) = self.with_store(|s| s.prune(KEEP_DELIVERED)) {
                        tracing::warn!(error = %e, "cannot prune delivered entries");
                    }
                }
            }
        }
    }

    fn nudge(self: Arc<Self>, workers: &mut HashMap<Wake, Arc<Shared>>, w: Wake) {
        if let Some(shared) = workers.get(&w) {
            *shared.last_event.lock().unwrap() = Some(Instant::now());
            shared.work.notify_one();
            shared.parent.notify_one();
            return;
        }
        let shared = Arc::new(Shared::default());
        workers.insert(w.clone(), shared.clone());
        let keeper = self.clone();
        let (key, channel) = (w.0.clone(), w.1.clone());
        let keeper_shared = shared.clone();
        tokio::spawn(async move { keeper.keeper(key, channel, keeper_shared).await });
        tokio::spawn(async move { self.worker(w.0, w.1, shared).await });
    }

    /// Posts one thread's replies strictly in order, forever. While the process
    /// flaps, replies become digests (at most one per `digest_interval`, FATAL at
    /// once); its parent is kept current meanwhile by the thread's [`keeper`].
    ///
    /// [`keeper`]: Dispatcher::keeper
    async fn worker(self: Arc<Self>, key: ThreadKey, channel: String, shared: Arc<Shared>) {
        let mut backoff = Backoff::new(self.settings.retry_max);
        let mut flap = Flap::default();
        loop {
            let limit = if flap.flapping {
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
            self.observe(&key, &mut flap, &batch, &shared);
            if !flap.flapping {
                if batch.is_empty() {
                    shared.work.notified().await;
                    continue;
                }
            } else {
                let since_reply = flap
                    .last_reply
                    .map(|t| t.elapsed())
                    .unwrap_or(Duration::MAX);
                let fatal = batch.iter().any(|e| e.event.to == State::Fatal);
                let due =
                    !batch.is_empty() && (fatal || since_reply >= self.settings.digest_interval);
                if !due {
                    let wait = if batch.is_empty() {
                        let quiet = shared.quiet();
                        if quiet >= self.settings.settle_after {
                            self.settle(&key, &channel, &mut flap, &shared).await;
                            continue;
                        }
                        self.settings.settle_after - quiet
                    } else {
                        self.settings.digest_interval.saturating_sub(since_reply)
                    };
                    let _ = tokio::time::timeout(wait, shared.work.notified()).await;
                    continue;
                }
            }
            match self
                .deliver(&key, &channel, &batch, flap.flapping, &shared)
                .await
            {
                Ok(Outcome::Done) => {
                    backoff.reset();
                    flap.last_reply = Some(Instant::now());
                    shared.parent.notify_one();
                }
                Ok(Outcome::Again) => {}
                Err(e) => {
                    tracing::error!(thread = %key, error = %e, "cannot record a delivery; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// Counts new transitions and decides whether the process is flapping.
    fn observe(&self, key: &ThreadKey, flap: &mut Flap, batch: &[OutboxEntry], shared: &Shared) {
        let now = Instant::now();
        let seen = flap.seen;
        for e in batch.iter().filter(|e| seen.is_none_or(|id| e.id > id)) {
            flap.times.push_back(now);
            flap.seen = Some(e.id);
        }
        while flap
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.settings.flap_window)
        {
            flap.times.pop_front();
        }
        // Only "more than the threshold" matters: keep no more than that many.
        while flap.times.len() > self.settings.flap_threshold as usize + 1 {
            flap.times.pop_front();
        }
        if !flap.flapping && flap.times.len() > self.settings.flap_threshold as usize {
            flap.flapping = true;
            shared.flapping.store(true, Ordering::SeqCst);
            shared.parent.notify_one();
            tracing::info!(
                thread = %key, transitions = flap.times.len(),
                "process is flapping: its replies become digests every {}s",
                self.settings.digest_interval.as_secs()
            );
        }
    }

    /// Keeps one thread's parent showing the newest state known — delivered or still
    /// waiting in the outbox — independently of the replies, which may be queued
    /// behind other threads' posts. Paced so that a storm never drains Slack's edit
    /// budget: every parent is final moments after a storm ends.
    async fn keeper(self: Arc<Self>, key: ThreadKey, channel: String, shared: Arc<Shared>) {
        // A process whose events come less than this apart is still changing.
        const QUIET: Duration = Duration::from_millis(2500);
        let mut last_edit: Option<Instant> = None;
        let mut owing = false;
        loop {
            let thread = self.with_store(|s| s.thread(&key, &channel));
            let pending = self.with_store(|s| s.pending(&key, &channel, DIGEST_MAX));
            let (Ok(Some(mut thread)), Ok(pending)) = (thread, pending) else {
                shared.parent.notified().await;
                continue;
            };
            let latest = pending
                .last()
                .map(|e| e.event.clone())
                .or(thread.latest.clone());
            let (Some(latest), Some(_)) = (latest, thread.parent_ts.as_ref()) else {
                shared.parent.notified().await;
                continue;
            };
            let mut history = thread.history.clone();
            history.extend(pending.iter().map(|e| e.event.to));
            let card = self.parent_card(
                &latest,
                &history,
                thread.created,
                shared.flapping.load(Ordering::SeqCst),
            );
            if shared.shown.lock().unwrap().as_ref() == Some(&card) {
                shared.parent.notified().await;
                continue;
            }
            // Owing an edit: go at once if this thread has not edited for a while;
            // otherwise wait until the process has been quiet for a moment, or until
            // its share of half the edit budget (shared by every thread owing one)
            // comes round. The other half is the reserve that lets every parent show
            // its final state right after a storm.
            if !owing {
                owing = true;
                self.owing.fetch_add(1, Ordering::SeqCst);
            }
            let n = self.owing.load(Ordering::SeqCst).max(1) as f64;
            let pace = Duration::from_secs_f64(n * 120.0 / self.settings.updates_per_minute as f64)
                .max(QUIET);
            let since = last_edit.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            let quiet = shared.quiet();
            if since < pace && quiet < QUIET {
                let _ = tokio::time::timeout(
                    (pace - since).min(QUIET - quiet),
                    shared.parent.notified(),
                )
                .await;
                continue;
            }
            last_edit = Some(Instant::now());
            // Shown or given up on: either way, wait for the next change.
            self.edit_parent(&mut thread, card.clone(), &latest).await;
            *shared.shown.lock().unwrap() = Some(card);
            owing = false;
            self.owing.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A flapping process stayed in one state for `settle_after`: say so in its
    /// thread; the keeper then clears the flapping mark on its parent.
    async fn settle(&self, key: &ThreadKey, channel: &str, flap: &mut Flap, shared: &Shared) {
        flap.flapping = false;
        flap.times.clear();
        shared.flapping.store(false, Ordering::SeqCst);
        shared.parent.notify_one();
        let Ok(Some(thread)) = self.with_store(|s| s.thread(key, channel)) else {
            return;
        };
        let Some(latest) = thread.latest.clone() else {
            return;
        };
        let quiet = self.settings.settle_after.as_secs();
        let text = format!(
            "{} · {} settled: {} for {}s, no longer flapping",
            latest.host,
            latest.display_name(),
            latest.to,
            quiet
        );
        let card = card::Card {
            fallback: card::escape_mrkdwn(&text),
            color: card::color(latest.to, latest.expected).to_string(),
            blocks: serde_json::json!([{
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!(
                    "{} *Settled* in *{}* for {}s: no longer flapping.",
                    card::emoji(latest.to, latest.expected),
                    latest.to,
                    quiet
                )}
            }]),
            text: card::escape_mrkdwn(&text),
        };
        tracing::info!(thread = %key, state = %latest.to, "process settled");
        let out = Outgoing {
            channel: channel.to_string(),
            card,
            thread_ts: thread.parent_ts.clone(),
            broadcast: false,
            identity: None,
        };
        if let Err(f) = self
            .post(&out, std::slice::from_ref(&latest), Variant::Reply)
            .await
        {
            tracing::warn!(thread = %key, "could not post the settled note: {f}");
        }
    }

    fn parent_card(
        &self,
        latest: &ProcessState,
        history: &[State],
        since: chrono::DateTime<Utc>,
        flapping: bool,
    ) -> card::Card {
        self.renderer.parent(&ParentInput {
            latest,
            history,
            since,
            environment: self.settings.environment.as_deref(),
            flapping,
        })
    }

    async fn deliver(
        &self,
        key: &ThreadKey,
        channel: &str,
        batch: &[OutboxEntry],
        flapping: bool,
        shared: &Shared,
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

        // A new parent first when there is none; otherwise the keeper edits it.
        if thread.parent_ts.is_none() {
            let card = self.parent_card(&latest, &history, now, flapping);
            let out = Outgoing {
                channel: channel.to_string(),
                card: card.clone(),
                thread_ts: None,
                broadcast: false,
                identity: None,
            };
            match self.post(&out, &events, Variant::Parent).await {
                Ok(posted) => {
                    thread.parent_ts = Some(posted.ts);
                    thread.channel_id = Some(posted.channel_id);
                    thread.created = now;
                    // Saved at once: a restart never posts a second parent.
                    self.with_store(|s| s.save_thread(&thread))?;
                    *shared.shown.lock().unwrap() = Some(card);
                }
                Err(f) => return self.give_up(key, batch, &thread, f),
            }
        }

        let notes = notes(batch, &thread.history);
        // Why it failed: asked of supervisord for the last failure of the batch, on
        // this side only, bounded by the context time-out.
        let crash = match (
            &self.context,
            events.iter().rev().find(|e| ContextSource::wants(e)),
        ) {
            (Some(source), Some(failed)) => source.for_event(failed).await,
            _ => None,
        };
        let mentions = self.settings.routes.mentions_for_all(&events);
        let mut reply = self.renderer.reply(&ReplyInput {
            events: &events,
            environment: self.settings.environment.as_deref(),
            notes: &notes,
            context: crash.as_ref(),
            mentions: &mentions,
        });
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
                && events.iter().any(ProcessState::is_failure),
            identity: Some(identity),
        };
        match self.post(&out, &events, Variant::Reply).await {
            Ok(_) => {}
            Err(Failure::ThreadGone(code)) => {
                tracing::warn!(thread = %key, code, "the parent message is gone: posting a new parent");
                thread.parent_ts = None;
                self.with_store(|s| s.save_parent(&thread))?;
                return Ok(Outcome::Again);
            }
            Err(f) => return self.give_up(key, batch, &thread, f),
        }
        thread.history = history;
        thread.truncate_history();
        thread.latest = Some(latest);
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        self.with_store(|s| s.commit_delivery(&thread, &ids))?;
        Ok(Outcome::Done)
    }

    /// Edits the parent; when Slack refuses the card, edits it as plain text; when the
    /// parent can no longer be edited, posts a new parent (saved in `thread`). Returns
    /// whether the channel now shows `card`'s state.
    async fn edit_parent(
        &self,
        thread: &mut ThreadRecord,
        card: card::Card,
        latest: &ProcessState,
    ) -> bool {
        let (Some(ts), Some(channel_id)) = (thread.parent_ts.clone(), thread.channel_id.clone())
        else {
            return false;
        };
        let result = self
            .with_policy(Call::Update, &thread.channel, || {
                self.api.update(&channel_id, &ts, &card)
            })
            .await;
        let result = match result {
            Err(Failure::BadPayload(code)) => {
                tracing::warn!(thread = %thread.key, code, "Slack refused the parent card; editing it as plain text");
                self.stats.lock().unwrap().fallbacks += 1;
                let plain = card::plain_text(std::slice::from_ref(latest), Variant::Parent);
                self.with_policy(Call::Update, &thread.channel, || {
                    self.api.update(&channel_id, &ts, &plain)
                })
                .await
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.stats.lock().unwrap().updates += 1;
                true
            }
            Err(Failure::EditRefused(code)) | Err(Failure::ThreadGone(code)) => {
                tracing::info!(thread = %thread.key, code, "the parent can no longer be edited: posting a new parent");
                let out = Outgoing {
                    channel: thread.channel.clone(),
                    card,
                    thread_ts: None,
                    broadcast: false,
                    identity: None,
                };
                match self
                    .post(&out, std::slice::from_ref(latest), Variant::Parent)
                    .await
                {
                    Ok(posted) => {
                        thread.parent_ts = Some(posted.ts);
                        thread.channel_id = Some(posted.channel_id);
                        thread.created = Utc::now();
                        let _ = self.with_store(|s| s.save_parent(thread));
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

    /// Posts a message under the policy; when Slack refuses the card itself, posts a
    /// plain-text version once.
    async fn post(
        &self,
        out: &Outgoing,
        events: &[ProcessState],
        variant: Variant,
    ) -> Result<Posted, Failure> {
        match self
            .with_policy(Call::Post(&out.channel), &out.channel, || {
                self.api.post(out)
            })
            .await
        {
            Err(Failure::BadPayload(code)) => {
                tracing::warn!(code, "Slack refused the card; sending it as plain text");
                self.stats.lock().unwrap().fallbacks += 1;
                let plain = Outgoing {
                    card: card::plain_text(events, variant),
                    ..out.clone()
                };
                let r = self
                    .with_policy(Call::Post(&out.channel), &out.channel, || {
                        self.api.post(&plain)
                    })
                    .await;
                if r.is_ok() {
                    self.stats.lock().unwrap().posts += 1;
                }
                r
            }
            Ok(p) => {
                self.stats.lock().unwrap().posts += 1;
                Ok(p)
            }
            Err(f) => Err(f),
        }
    }

    /// Runs one call until it succeeds or fails in a way the caller must handle:
    /// waits out 429s (no call at all before Retry-After), retries transient failures
    /// with exponential backoff and jitter, retries setup errors slowly after logging
    /// the hint once.
    async fn with_policy<T, F, Fut>(
        &self,
        call: Call<'_>,
        channel: &str,
        mut f: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self.settings.retry_max);
        loop {
            self.limits.acquire(&call).await;
            match f().await {
                Ok(v) => {
                    let mut reported = self.reported.lock().unwrap();
                    if !reported.is_empty() {
                        tracing::info!("Slack accepts messages again");
                        reported.clear();
                    }
                    return Ok(v);
                }
                Err(Failure::RateLimited(d)) => {
                    tracing::warn!(
                        channel,
                        retry_after = d.as_secs_f32(),
                        "Slack rate limit hit: waiting before any further call"
                    );
                    self.stats.lock().unwrap().rate_limited += 1;
                    self.limits.close_for(d);
                }
                Err(Failure::Transient(m)) => {
                    let wait = backoff.next();
                    tracing::warn!(
                        channel,
                        wait_secs = wait.as_secs_f32(),
                        "Slack call failed ({m}); retrying"
                    );
                    self.stats.lock().unwrap().retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(Failure::Setup { code, hint }) => {
                    if self.reported.lock().unwrap().insert(code.clone()) {
                        tracing::error!(
                            channel,
                            code,
                            "Slack refused: {hint}. Events are kept and retried every {}s",
                            self.settings.setup_retry.as_secs()
                        );
                    }
                    self.stats.lock().unwrap().retries += 1;
                    tokio::time::sleep(self.settings.setup_retry).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// A batch Slack will not take in any form: recorded as delivered so it does not
    /// block the thread forever, and reported loudly with what was lost.
    fn give_up(
        &self,
        key: &ThreadKey,
        batch: &[OutboxEntry],
        thread: &ThreadRecord,
        f: Failure,
    ) -> Result<Outcome, StoreError> {
        let serials: Vec<u64> = batch.iter().map(|e| e.event.serial).collect();
        tracing::error!(thread = %key, ?serials, "gave up on these events: {f}");
        self.stats.lock().unwrap().given_up += batch.len() as u64;
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        self.with_store(|s| s.commit_delivery(thread, &ids))?;
        Ok(Outcome::Done)
    }
}

/// Notes for a reply: events supervisord dropped, a recovery after a failure.
fn notes(batch: &[OutboxEntry], history: &[State]) -> Vec<String> {
    let mut notes = Vec::new();
    let dropped: u64 = batch.iter().map(|e| e.dropped_before).sum();
    if dropped > 0 {
        notes.push(format!(
            "{dropped} event{} dropped by supervisord before this (its event buffer overflowed; raise buffer_size)",
            if dropped == 1 { "" } else { "s" }
        ));
    }
    let coalesced: u64 = batch.iter().map(|e| e.coalesced).sum();
    if coalesced > 0 {
        notes.push(format!(
            "{coalesced} earlier transition{} folded into this one: the outbox was full while Slack was unreachable",
            if coalesced == 1 { " was" } else { "s were" }
        ));
    }
    // The failure this thread is in, if any: the last BACKOFF/EXITED/FATAL/UNKNOWN
    // since the last RUNNING (STARTING and STOPPING in between do not end it).
    let mut last_bad = history
        .iter()
        .rev()
        .find(|s| **s == State::Running || is_trouble_state(**s))
        .copied()
        .filter(|s| *s != State::Running);
    for e in batch {
        if e.event.to == State::Running {
            if let Some(bad) = last_bad.take() {
                notes.push(format!("Recovered: RUNNING again after {bad}"));
            }
        } else if is_trouble(&e.event) {
            last_bad = Some(e.event.to);
        } else if e.event.to == State::Stopped {
            // Stopped on purpose: a later start is not a recovery.
            last_bad = None;
        }
    }
    notes
}

fn is_trouble_state(s: State) -> bool {
    matches!(
        s,
        State::Backoff | State::Exited | State::Fatal | State::Unknown
    )
}

fn is_trouble(e: &ProcessState) -> bool {
    e.is_failure() || e.to == State::Backoff
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... up to `retry_max`.
struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff { attempt: 0, max }
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
    fn next(&mut self) -> Duration {
        let base = Duration::from_millis(500) * 2u32.saturating_pow(self.attempt.min(7));
        self.attempt += 1;
        let cap = base.min(self.max);
        // Half fixed, half random: never zero, never synchronised across hosts.
        cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
    }
}
