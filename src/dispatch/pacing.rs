//! Pacing: the 429 gate (no call to Slack at all before it opens) and the token
//! buckets — posts per channel, and the edit budget shared by every parent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bucket::Bucket;

/// The longest the gate stays closed for one 429, whatever Retry-After says.
pub const MAX_GATE: Duration = Duration::from_secs(15 * 60);

/// What kind of call, for pacing.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `chat.postMessage` to this channel.
    Post(&'a str),
    /// `chat.update` (the edit budget).
    Update,
}

/// Shared limits: the gate and the buckets.
pub struct Pacing {
    closed_until: Mutex<Option<Instant>>,
    posts: Mutex<HashMap<String, Bucket>>,
    updates: Mutex<Bucket>,
    post_burst: u32,
    post_interval: Duration,
}

impl Pacing {
    /// Posts: `post_burst` at once per channel, then one per `post_interval`. Edits:
    /// `updates_per_minute`, of which half a minute's may go at once — the reserve
    /// that lets every parent show its final state right after a storm.
    pub fn new(post_burst: u32, post_interval: Duration, updates_per_minute: u32) -> Pacing {
        let per_update = Duration::from_secs_f64(60.0 / f64::from(updates_per_minute.max(1)));
        Pacing {
            closed_until: Mutex::new(None),
            posts: Mutex::new(HashMap::new()),
            updates: Mutex::new(Bucket::full(
                (updates_per_minute / 2).max(1),
                per_update,
                Instant::now(),
            )),
            post_burst,
            post_interval,
        }
    }

    /// Waits until `call` may go: the gate is open and its bucket has a token.
    pub async fn acquire(&self, call: Call<'_>) {
        loop {
            if let Some(t) = self.gate() {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            let now = Instant::now();
            let wait = match call {
                Call::Post(channel) => self
                    .posts
                    .lock()
                    .unwrap()
                    .entry(channel.to_string())
                    .or_insert_with(|| Bucket::full(self.post_burst, self.post_interval, now))
                    .take(now),
                Call::Update => self.updates.lock().unwrap().take(now),
            };
            match wait {
                // The gate may have closed while we waited for a token.
                Ok(()) if self.gate().is_some() => continue,
                Ok(()) => return,
                Err(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// When the gate opens, if it is closed now.
    fn gate(&self) -> Option<Instant> {
        let gate = *self.closed_until.lock().unwrap();
        gate.filter(|t| *t > Instant::now())
    }

    /// Closes the gate for `d` (Slack's Retry-After), unless it already stays closed
    /// longer.
    pub fn close_for(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_GATE);
        let mut g = self.closed_until.lock().unwrap();
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_retry_after_closes_the_gate_without_panicking_and_at_most_fifteen_minutes() {
        let p = Pacing::new(2, Duration::from_secs(1), 50);
        p.close_for(Duration::MAX);
        let open_at = p.gate().expect("closed");
        let left = open_at - Instant::now();
        assert!(left <= MAX_GATE && left > MAX_GATE - Duration::from_secs(5), "{left:?}");
        // A shorter one later does not reopen it early.
        p.close_for(Duration::from_secs(1));
        assert_eq!(p.gate(), Some(open_at));
    }
}
