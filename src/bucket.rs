//! The one token bucket: `cap` calls at once, one more every `interval`. Used by the
//! dispatcher's pacing (posts per channel, the edit budget) and by the Slack stand-in
//! (the limits it enforces). Time is passed in, so that callers (and tests) decide
//! what "now" is.

use std::time::{Duration, Instant};

/// A token bucket. Tokens refill continuously at one per `interval`, up to `cap`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    cap: f64,
    /// Tokens per second.
    rate: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket holding `tokens` of `cap` at `now` (a fresh one starts full; one
    /// restored after a restart starts with what it had earned).
    pub fn new(cap: u32, interval: Duration, tokens: f64, now: Instant) -> Self {
        let cap = f64::from(cap.max(1));
        Bucket {
            tokens: tokens.clamp(0.0, cap),
            cap,
            rate: 1.0 / interval.as_secs_f64().max(1e-6),
            last: now,
        }
    }

    /// A full bucket.
    pub fn full(cap: u32, interval: Duration, now: Instant) -> Self {
        Bucket::new(cap, interval, f64::from(cap.max(1)), now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.cap);
        self.last = self.last.max(now);
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// The tokens held at `now` (for saving the bucket across a restart).
    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// How many tokens it holds at most.
    pub fn capacity(&self) -> u32 {
        self.cap as u32
    }

    /// The time between two tokens.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// Changes the refill rate from `now` on (tokens earned so far are kept).
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.refill(now);
        self.rate = 1.0 / interval.as_secs_f64().max(1e-6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2, Duration::from_secs(1), t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn an_empty_bucket_earns_no_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(5, Duration::from_secs(2), 0.0, t0);
        assert!(b.take(t0).is_err());
        assert!(b.take(t0 + Duration::from_secs(2)).is_ok());
        assert!(b.take(t0 + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_refill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(1, Duration::from_secs(1), 0.0, t0);
        assert!(b.take(t0 - Duration::from_secs(5)).is_err());
    }
}
