//! Every reaction to a failed Slack call, in one place: what [`crate::slack`]
//! classified as a [`Failure`] becomes a wait (429: the gate), a retry with backoff
//! (transient), a slow retry after one log line with the hint (setup), a plain-text
//! card sent once (bad payload), a few tries (an error this version does not know),
//! or a failure handed back to the caller (a parent that can no longer be edited, a
//! lost thread, anything final: the worker sets such entries aside).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use super::pacing::{Call, Pacing};
use crate::card::{self, Card, Variant};
use crate::slack::{Failure, Outgoing, Posted, SlackApi};
use crate::supervisord::event::ProcessState;

/// How many times an error Slack gives that this version does not know is tried
/// before the entry is set aside.
pub const UNKNOWN_TRIES: u32 = 5;

/// Runs calls to Slack under the policy.
pub struct Retrier {
    pub api: SlackApi,
    pub pacing: Pacing,
    retry_max: Duration,
    setup_retry: Duration,
    /// Setup errors already logged (logged again after a success).
    reported: Mutex<HashSet<String>>,
}

impl Retrier {
    pub fn new(api: SlackApi, pacing: Pacing, retry_max: Duration, setup_retry: Duration) -> Self {
        Retrier {
            api,
            pacing,
            retry_max,
            setup_retry,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Runs one call until it succeeds or fails in a way the caller must handle:
    /// waits out 429s (no call at all before Retry-After), retries transient failures
    /// with exponential backoff and jitter, retries setup errors slowly after logging
    /// the hint once.
    pub async fn run<T, F, Fut>(&self, call: Call<'_>, channel: &str, mut f: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self.retry_max);
        let mut unknown = 0;
        loop {
            self.pacing.acquire(call).await;
            match f().await {
                Ok(v) => {
                    if let Call::Post(c) = call {
                        self.pacing.speed_up(c);
                    }
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
                    self.pacing.close_for(d);
                    if let Call::Post(c) = call {
                        self.pacing.slow_down(c);
                    }
                }
                Err(Failure::Transient(m)) => {
                    let wait = backoff.next();
                    tracing::warn!(
                        channel,
                        wait_secs = wait.as_secs_f32(),
                        "Slack call failed ({m}); retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(Failure::Setup { code, hint }) => {
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
                Err(Failure::Unknown(code)) if unknown + 1 < UNKNOWN_TRIES => {
                    unknown += 1;
                    let wait = backoff.next();
                    tracing::warn!(
                        channel, code, try_ = unknown, wait_secs = wait.as_secs_f32(),
                        "Slack answered an error this version does not know; trying again ({UNKNOWN_TRIES} tries in all)"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Posts a message under the policy; when Slack refuses the card itself, posts a
    /// plain-text version of `events` once.
    pub async fn post(
        &self,
        out: &Outgoing,
        events: &[ProcessState],
        variant: Variant,
    ) -> Result<Posted, Failure> {
        let call = Call::Post(&out.channel);
        match self.run(call, &out.channel, || self.api.post(out)).await {
            Err(Failure::BadPayload(code)) => {
                tracing::warn!(code, "Slack refused the card; sending it as plain text");
                let mut plain = Outgoing {
                    card: card::plain_text(events, variant),
                    ..out.clone()
                };
                keep_mentions(&out.card, &mut plain.card);
                self.run(call, &out.channel, || self.api.post(&plain)).await
            }
            other => other,
        }
    }

    /// Edits a message under the policy; when Slack refuses the card itself, edits it
    /// as plain text once.
    pub async fn update(
        &self,
        channel: &str,
        channel_id: &str,
        ts: &str,
        card: &Card,
        latest: &ProcessState,
    ) -> Result<(), Failure> {
        match self
            .run(Call::Update, channel, || self.api.update(channel_id, ts, card))
            .await
        {
            Err(Failure::BadPayload(code)) => {
                tracing::warn!(code, "Slack refused the parent card; editing it as plain text");
                let plain = card::plain_text(std::slice::from_ref(latest), Variant::Parent);
                self.run(Call::Update, channel, || self.api.update(channel_id, ts, &plain))
                    .await
            }
            other => other,
        }
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
