//! Slack's rate limits as the stand-in enforces them: `chat.postMessage` per channel
//! (one per `post_interval`, bursts of `burst`) and `chat.update` per channel
//! (`updates_per_minute`), each a [`Bucket`] — the project's one token bucket — and
//! the `Retry-After` windows announced with every 429, so that a call arriving inside
//! one is noted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::bucket::Bucket;

use super::StandInOptions;

/// (method, channel id): what a limit or a `Retry-After` applies to.
type Key = (String, String);

/// The buckets and the announced waits.
#[derive(Debug, Default)]
pub(super) struct Limits {
    buckets: HashMap<Key, Bucket>,
    /// When the last `Retry-After` announced for a key ends.
    retry_until: HashMap<Key, Instant>,
}

impl Limits {
    /// Takes a token for a call of `method` to `channel`; when the bucket is empty,
    /// the seconds of `Retry-After` to announce (at least `opts.retry_after_secs`).
    /// With `enforce_rate_limit` off every call passes.
    pub fn take(
        &mut self,
        opts: &StandInOptions,
        method: &str,
        channel: &str,
        now: Instant,
    ) -> Result<(), u64> {
        if !opts.enforce_rate_limit {
            return Ok(());
        }
        let (capacity, interval) = match method {
            "chat.postMessage" => (opts.burst.max(1), opts.post_interval),
            _ => (
                opts.updates_per_minute.max(1),
                Duration::from_secs(60) / opts.updates_per_minute.max(1),
            ),
        };
        self.buckets
            .entry((method.to_string(), channel.to_string()))
            .or_insert_with(|| Bucket::full(capacity, interval, now))
            .take(now)
            .map_err(|wait| opts.retry_after_secs.max(wait.as_secs_f64().ceil() as u64))
    }

    /// Notes a `Retry-After` of `secs` announced at `now` for `method` on `channel`.
    pub fn announce(&mut self, method: &str, channel: &str, secs: u64, now: Instant) {
        let until = now
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.retry_until
            .insert((method.to_string(), channel.to_string()), until);
    }

    /// Whether a call of `method` to `channel` at `now` arrives before an announced
    /// `Retry-After` has passed.
    pub fn inside_retry_after(&self, method: &str, channel: &str, now: Instant) -> bool {
        self.retry_until
            .get(&(method.to_string(), channel.to_string()))
            .is_some_and(|until| now < *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_burst_then_wait_per_channel_and_the_wait_is_announced() {
        let opts = StandInOptions {
            burst: 2,
            retry_after_secs: 1,
            post_interval: Duration::from_secs(3),
            ..StandInOptions::default()
        };
        let mut limits = Limits::default();
        let t0 = Instant::now();
        assert!(limits.take(&opts, "chat.postMessage", "C1", t0).is_ok());
        assert!(limits.take(&opts, "chat.postMessage", "C1", t0).is_ok());
        assert_eq!(limits.take(&opts, "chat.postMessage", "C1", t0), Err(3));
        assert!(limits.take(&opts, "chat.postMessage", "C2", t0).is_ok());
        assert!(limits.take(&opts, "chat.update", "C1", t0).is_ok());

        limits.announce("chat.postMessage", "C1", 3, t0);
        assert!(limits.inside_retry_after("chat.postMessage", "C1", t0 + Duration::from_secs(2)));
        assert!(!limits.inside_retry_after("chat.postMessage", "C1", t0 + Duration::from_secs(3)));
        assert!(!limits.inside_retry_after("chat.update", "C1", t0));
    }

    #[test]
    fn a_huge_retry_after_does_not_panic() {
        let mut limits = Limits::default();
        let t0 = Instant::now();
        limits.announce("chat.postMessage", "C1", u64::MAX, t0);
        assert!(limits.inside_retry_after("chat.postMessage", "C1", t0));
    }
}
