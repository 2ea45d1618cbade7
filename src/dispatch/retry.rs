//! Every reaction to a failed Slack call, in one place: what [`crate::slack`]
//! classified as a [`Failure`] becomes a wait (429: the budget's gate, for every
//! caller), a retry with backoff (transient), a slow retry after one log line with
//! the hint (setup), a plain-text card sent once (bad payload), a few tries (an error
//! this version does not know), a message posted anew (one that can no longer be
//! edited), or a failure handed back to the caller (a lost thread, anything final: the
//! worker sets such entries aside).
//!
//! Every call goes through the shared state's budget first; nothing here or in the
//! rest of the delivery side reaches Slack another way.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use crate::card::{self, Card, Variant};
use crate::pacing::Call;
use crate::slack::{Failure, Outgoing, SlackApi};
use crate::store::{Posted, SharedState};
use crate::supervisord::event::ProcessState;

/// How many times an error Slack gives that this version does not know is tried
/// before the entry is set aside.
pub const UNKNOWN_TRIES: u32 = 5;

/// What [`Retrier::edit_or_replace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The message shows the card now.
    InPlace,
    /// Slack would not edit it any more: the card was posted anew, here.
    Replaced(Posted),
}

/// Runs calls to Slack under the policy.
pub struct Retrier {
    api: Arc<SlackApi>,
    budget: Arc<dyn SharedState>,
    retry_max: Duration,
    setup_retry: Duration,
    /// Setup errors already logged (logged again after a success).
    reported: Mutex<HashSet<String>>,
}

impl Retrier {
    pub fn new(
        api: Arc<SlackApi>,
        budget: Arc<dyn SharedState>,
        retry_max: Duration,
        setup_retry: Duration,
    ) -> Self {
        Retrier {
            api,
            budget,
            retry_max,
            setup_retry,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Runs one call until it succeeds or fails in a way the caller must handle:
    /// waits out 429s (no call at all before Retry-After), retries transient failures
    /// with exponential backoff and jitter, retries setup errors slowly after logging
    /// the hint once. `tries` bounds the calls made (`None`: as many as it takes).
    async fn run<T, F, Fut>(
        &self,
        call: Call<'_>,
        channel: &str,
        tries: Option<u32>,
        mut f: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self.retry_max);
        let mut unknown = 0;
        let mut made = 0;
        loop {
            self.budget.acquire(call).await;
            made += 1;
            let last = tries.is_some_and(|t| made >= t);
            let failure = match f().await {
                Ok(v) => {
                    self.budget.accepted(call).await;
                    let mut reported = self.reported.lock().unwrap();
                    if !reported.is_empty() {
                        tracing::info!("Slack accepts messages again");
                        reported.clear();
                    }
                    return Ok(v);
                }
                Err(f) => f,
            };
            match failure {
                Failure::RateLimited(d) => {
                    tracing::warn!(
                        channel,
                        retry_after = d.as_secs_f32(),
                        "Slack rate limit hit: waiting before any further call"
                    );
                    self.budget.rate_limited(call, d).await;
                    if last {
                        return Err(Failure::RateLimited(d));
                    }
                }
                Failure::Transient(m) if !last => {
                    let wait = backoff.next();
                    tracing::warn!(
                        channel,
                        wait_secs = wait.as_secs_f32(),
                        "Slack call failed ({m}); retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Failure::Setup { code, hint } if !last => {
                    if self.reported.lock().unwrap().insert(code.clone()) {
                        tracing::error!(
                            channel,
                            code,
                            "Slack refused: {hint}. Events are kept and retried every {}s",
                            self.setup_retry.as_secs()
                        );
                    }
                    tokio::time::sleep(self.setup_retry).await;
                }
                Failure::Unknown(code) if unknown + 1 < UNKNOWN_TRIES && !last => {
                    unknown += 1;
                    let wait = backoff.next();
                    tracing::warn!(
                        channel, code, try_ = unknown, wait_secs = wait.as_secs_f32(),
                        "Slack answered an error this version does not know; trying again ({UNKNOWN_TRIES} tries in all)"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => return Err(other),
            }
        }
    }

    /// Posts a card of `events` under the policy; when Slack refuses the card
    /// itself, posts a plain-text version of `events` once.
    pub async fn post(
        &self,
        out: &Outgoing,
        events: &[ProcessState],
        variant: Variant,
    ) -> Result<Posted, Failure> {
        let call = Call::Post(&out.channel);
        match self.run(call, &out.channel, None, || self.api.post(out)).await {
            Err(Failure::BadPayload(code)) => {
                tracing::warn!(code, "Slack refused the card; sending it as plain text");
                let mut plain = Outgoing {
                    card: card::plain_text(events, variant),
                    ..out.clone()
                };
                keep_mentions(&out.card, &mut plain.card);
                self.run(call, &out.channel, None, || self.api.post(&plain)).await
            }
            other => other,
        }
        .map(stamped)
    }

    /// Posts a note (an action's audit, Show stderr, the settled line, the board)
    /// under the policy. No plain-text stand-in: that would show an event.
    pub async fn post_note(&self, out: &Outgoing) -> Result<Posted, Failure> {
        let call = Call::Post(&out.channel);
        self.run(call, &out.channel, None, || self.api.post(out))
            .await
            .map(stamped)
    }

    /// Posts a note with one try (within the budget): for a note that must never
    /// hold up its thread, such as the one that says entries were set aside.
    pub async fn post_once(&self, out: &Outgoing) -> Result<Posted, Failure> {
        let call = Call::Post(&out.channel);
        self.run(call, &out.channel, Some(1), || self.api.post(out))
            .await
            .map(stamped)
    }

    /// Edits the message at `at` (in `channel`) to show `card`, as plain text when
    /// Slack refuses the card (`latest` tells what). When the message can no longer
    /// be edited (too old, deleted), the card is posted anew and its new place
    /// returned: the caller records it.
    pub async fn edit_or_replace(
        &self,
        channel: &str,
        at: &Posted,
        card: &Card,
        latest: Option<&ProcessState>,
    ) -> Result<Edited, Failure> {
        match self.edit(channel, at, card, latest).await {
            Ok(()) => Ok(Edited::InPlace),
            Err(Failure::EditRefused(code)) | Err(Failure::ThreadGone(code)) => {
                tracing::info!(channel, code, "the message can no longer be edited: posting it anew");
                let out = Outgoing::top_level(channel, card.clone());
                let posted = match latest {
                    Some(l) => self.post(&out, std::slice::from_ref(l), Variant::Parent).await,
                    None => self.post_note(&out).await,
                }?;
                Ok(Edited::Replaced(posted))
            }
            Err(f) => Err(f),
        }
    }

    /// Edits the message at `at` to show `card` (as plain text when Slack refuses
    /// the card and `latest` tells what); a message that can no longer be edited is
    /// the caller's to replace (`EditRefused`, `ThreadGone`).
    pub async fn edit(
        &self,
        channel: &str,
        at: &Posted,
        card: &Card,
        latest: Option<&ProcessState>,
    ) -> Result<(), Failure> {
        let (id, ts) = (at.channel_id.as_str(), at.ts.as_str());
        match self
            .run(Call::Update, channel, None, || self.api.update(id, ts, card))
            .await
        {
            Err(Failure::BadPayload(code)) if latest.is_some() => {
                tracing::warn!(code, "Slack refused the parent card; editing it as plain text");
                let plain = card::plain_text(std::slice::from_ref(latest.unwrap()), Variant::Parent);
                self.run(Call::Update, channel, None, || self.api.update(id, ts, &plain))
                    .await
            }
            other => other,
        }
    }

    /// Pins a message: once, within the edit budget.
    pub async fn pin(&self, channel: &str, at: &Posted) -> Result<(), Failure> {
        self.run(Call::Update, channel, Some(1), || {
            self.api.pin(&at.channel_id, &at.ts)
        })
        .await
    }
}

/// Where a posted message landed, with when.
fn stamped(p: crate::slack::Posted) -> Posted {
    Posted {
        channel_id: p.channel_id,
        ts: p.ts,
        at: Utc::now(),
    }
}

/// The plain-text fallback keeps the mentions of the card it replaces: a FATAL whose
/// card Slack refused must still page the people the route names. Every mention in a
/// card's text is the settings' own: untrusted text is escaped (`<` is `&lt;`), so it
/// can never look like one.
fn keep_mentions(card: &Card, plain: &mut Card) {
    let mentions: Vec<&str> = card
        .text
        .split_whitespace()
        .filter(|w| crate::routing::is_mention(w))
        .collect();
    if !mentions.is_empty() {
        plain.text = format!("{} {}", plain.text, mentions.join(" "));
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... up to `max`.
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff { attempt: 0, max }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next(&mut self) -> Duration {
        let base = Duration::from_millis(500) * 2u32.saturating_pow(self.attempt.min(7));
        self.attempt = self.attempt.saturating_add(1);
        let cap = base.min(self.max);
        // Half fixed, half random: never zero, never synchronised across hosts.
        cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
    }
}
