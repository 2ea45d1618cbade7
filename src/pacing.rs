//! Local pacing: the 429 gate (no call to Slack at all before it opens) and the
//! token buckets — posts per channel, and the edit budget shared by every parent —
//! kept by one listener. It is how the one-host shared state keeps the budget, and
//! what a fleet falls back to while its database is out of reach.
//!
//! Two things make it hold across restarts and across hosts:
//! - **Saved.** The gate (as a wall-clock time) and every bucket (its tokens, its
//!   learnt pace, when) are saved through a [`PacingMemory`] as they change. A
//!   listener started seconds after another one died sends nothing before an
//!   earlier Retry-After has passed and takes no burst it has not earned.
//! - **Learnt.** Listeners on other hosts share a channel's budget without sharing
//!   state: a 429 on a channel doubles this host's interval between posts there
//!   (multiplicative decrease of the rate, up to [`SLOWEST`]); an accepted post takes
//!   back a twentieth of the base rate (additive increase) — at most once every
//!   [`RAISE_EVERY`] base intervals and never sooner than that after a 429 — down to
//!   the configured interval. The hosts converge on the channel's budget quickly and
//!   probe for more slowly, so that a storm's 429s come at its start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bucket::Bucket;

/// Where local pacing saves its state, as text under a key (the store keeps it in a
/// file of its own, so that saving never holds the lock the reader commits with).
pub trait PacingMemory: Send + Sync {
    fn load(&self, key: &str) -> Option<String>;
    fn save(&self, key: &str, value: &str);
}

/// The longest the gate stays closed for one 429, whatever Retry-After says.
pub const MAX_GATE: Duration = Duration::from_secs(15 * 60);

/// The slowest a channel's pace is learnt down to: one post per this.
pub const SLOWEST: Duration = Duration::from_secs(30);

/// The pace is raised at most once per this many base intervals (50 s for Slack's
/// one post a second), and not within that long of a 429.
pub const RAISE_EVERY: u32 = 50;

/// What kind of call, for pacing.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `chat.postMessage` to this channel.
    Post(&'a str),
    /// `chat.update` (the edit budget).
    Update,
}

/// A bucket as saved: what it held, at what pace, and when (wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SavedBucket {
    pub tokens: f64,
    pub interval_ms: f64,
    pub at: DateTime<Utc>,
}

/// One listener's limits: the gate and the buckets.
pub struct LocalPacing {
    closed_until: Mutex<Option<Instant>>,
    posts: Mutex<HashMap<String, Bucket>>,
    /// Per channel: the last 429 or raise of the pace (raises wait for it).
    last_change: Mutex<HashMap<String, Instant>>,
    updates: Mutex<Bucket>,
    post_burst: u32,
    post_interval: Duration,
    /// Where the state is saved; `None`: kept in memory.
    memory: Option<Box<dyn PacingMemory>>,
}

const GATE_KEY: &str = "pacing.gate";
const UPDATES_KEY: &str = "pacing.updates";

fn post_key(channel: &str) -> String {
    format!("pacing.post.{channel}")
}

impl LocalPacing {
    /// Posts: `post_burst` at once per channel, then one per `post_interval`. Edits:
    /// `updates_per_minute`, of which half a minute's may go at once — the reserve
    /// that lets every parent show its final state right after a storm. With a
    /// memory, what an earlier process saved is taken up again.
    pub fn new(
        post_burst: u32,
        post_interval: Duration,
        updates_per_minute: u32,
        memory: Option<Box<dyn PacingMemory>>,
    ) -> LocalPacing {
        let per_update = Duration::from_secs_f64(60.0 / f64::from(updates_per_minute.max(1)));
        let now = Instant::now();
        let mut pacing = LocalPacing {
            closed_until: Mutex::new(None),
            posts: Mutex::new(HashMap::new()),
            last_change: Mutex::new(HashMap::new()),
            updates: Mutex::new(Bucket::full(
                (updates_per_minute / 2).max(1),
                per_update,
                now,
            )),
            post_burst,
            post_interval,
            memory,
        };
        pacing.restore();
        pacing
    }

    /// Takes up the gate and the edit budget an earlier process saved (the post
    /// buckets are read when their channel is first used).
    fn restore(&mut self) {
        if let Some(until) = self.load::<DateTime<Utc>>(GATE_KEY) {
            if let Ok(left) = (until - Utc::now()).to_std() {
                tracing::info!(
                    wait_secs = left.as_secs_f32(),
                    "an earlier run was told to wait by Slack: no call before that has passed"
                );
                self.close_for(left);
            }
        }
        if let Some(saved) = self.load::<SavedBucket>(UPDATES_KEY) {
            let b = self.updates.get_mut().unwrap();
            *b = revive(b, &saved, b.interval());
        }
    }

    fn load<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let text = self.memory.as_ref()?.load(key)?;
        serde_json::from_str(&text).ok()
    }

    fn save<T: Serialize>(&self, key: &str, value: &T) {
        let Some(memory) = &self.memory else { return };
        let text = serde_json::to_string(value).expect("pacing state serializes");
        memory.save(key, &text);
    }

    /// Waits until `call` may go: the gate is open and its bucket has a token.
    pub async fn acquire(&self, call: Call<'_>) {
        loop {
            if let Some(t) = self.gate() {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            let now = Instant::now();
            let (wait, saved) = match call {
                Call::Post(channel) => {
                    let mut posts = self.posts.lock().unwrap();
                    let b = posts
                        .entry(channel.to_string())
                        .or_insert_with(|| self.post_bucket(channel, now));
                    let wait = b.take(now);
                    (wait, (post_key(channel), snapshot(b, now)))
                }
                Call::Update => {
                    let mut b = self.updates.lock().unwrap();
                    let wait = b.take(now);
                    (wait, (UPDATES_KEY.to_string(), snapshot(&mut b, now)))
                }
            };
            match wait {
                // The gate may have closed while we waited for a token.
                Ok(()) if self.gate().is_some() => continue,
                Ok(()) => {
                    self.save(&saved.0, &saved.1);
                    return;
                }
                Err(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// A channel's bucket: as an earlier process left it (with what it earned since),
    /// else full.
    fn post_bucket(&self, channel: &str, now: Instant) -> Bucket {
        let fresh = Bucket::full(self.post_burst, self.post_interval, now);
        match self.load::<SavedBucket>(&post_key(channel)) {
            Some(saved) => revive(&fresh, &saved, self.post_interval),
            None => fresh,
        }
    }

    /// When the gate opens, if it is closed now.
    fn gate(&self) -> Option<Instant> {
        let gate = *self.closed_until.lock().unwrap();
        gate.filter(|t| *t > Instant::now())
    }

    /// Slack answered `call` with a 429: nothing goes before `retry_after` has
    /// passed, and a post's channel is paced more slowly from now on.
    pub fn rate_limited(&self, call: Call<'_>, retry_after: Duration) {
        self.close_for(retry_after);
        if let Call::Post(channel) = call {
            self.slow_down(channel);
        }
    }

    /// Slack accepted `call`: a post's channel may take back a little of its pace.
    pub fn accepted(&self, call: Call<'_>) {
        if let Call::Post(channel) = call {
            self.speed_up(channel);
        }
    }

    /// Closes the gate for `d` (Slack's Retry-After, at most [`MAX_GATE`]), unless it
    /// already stays closed longer; saved, so that a restart honours it too.
    pub fn close_for(&self, d: Duration) {
        let d = d.min(MAX_GATE);
        let until = Instant::now() + d;
        let mut g = self.closed_until.lock().unwrap();
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
            drop(g);
            let wall = Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
            self.save(GATE_KEY, &wall);
        }
    }

    /// A 429 on a post to `channel`: this host posts there half as often from now on.
    pub fn slow_down(&self, channel: &str) {
        self.last_change
            .lock()
            .unwrap()
            .insert(channel.to_string(), Instant::now());
        self.adjust(channel, |interval| (interval * 2).min(SLOWEST));
    }

    /// A post to `channel` went through: now and then, take back a little of the pace.
    pub fn speed_up(&self, channel: &str) {
        let base = self.post_interval;
        {
            let now = Instant::now();
            let mut last = self.last_change.lock().unwrap();
            let since = last.get(channel).map(|t| now.duration_since(*t));
            if since.is_some_and(|d| d < base * RAISE_EVERY) {
                return;
            }
            last.insert(channel.to_string(), now);
        }
        self.adjust(channel, |interval| {
            if interval <= base {
                return base;
            }
            // rate += base_rate / 20
            let rate = 1.0 / interval.as_secs_f64() + 1.0 / base.as_secs_f64() / 20.0;
            Duration::from_secs_f64(1.0 / rate).max(base)
        });
    }

    fn adjust(&self, channel: &str, f: impl FnOnce(Duration) -> Duration) {
        let now = Instant::now();
        let mut posts = self.posts.lock().unwrap();
        let b = posts
            .entry(channel.to_string())
            .or_insert_with(|| self.post_bucket(channel, now));
        let before = b.interval();
        let after = f(before);
        if after != before {
            b.set_interval(after, now);
            if after > before {
                tracing::info!(
                    channel,
                    interval_secs = after.as_secs_f32(),
                    "Slack limits this channel (other hosts post there too): posting more slowly"
                );
            }
            let saved = snapshot(b, now);
            drop(posts);
            self.save(&post_key(channel), &saved);
        }
    }

    /// The interval between posts to `channel` this host uses now.
    #[cfg(test)]
    fn post_interval(&self, channel: &str) -> Duration {
        let now = Instant::now();
        let mut posts = self.posts.lock().unwrap();
        posts
            .entry(channel.to_string())
            .or_insert_with(|| self.post_bucket(channel, now))
            .interval()
    }
}

fn snapshot(b: &mut Bucket, now: Instant) -> SavedBucket {
    SavedBucket {
        tokens: b.tokens(now),
        interval_ms: b.interval().as_secs_f64() * 1000.0,
        at: Utc::now(),
    }
}

/// A bucket from what was saved: the tokens it held plus what it earned since (by
/// the wall clock; none if the clock went back), at the learnt pace (never faster
/// than `base`).
fn revive(like: &Bucket, saved: &SavedBucket, base: Duration) -> Bucket {
    let now = Instant::now();
    let interval = Duration::try_from_secs_f64(saved.interval_ms / 1000.0)
        .unwrap_or(base)
        .clamp(base, SLOWEST.max(base));
    let elapsed = (Utc::now() - saved.at).to_std().unwrap_or_default();
    let earned = elapsed.as_secs_f64() / interval.as_secs_f64();
    let cap = like.capacity();
    Bucket::new(cap, interval, (saved.tokens + earned).min(f64::from(cap)), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_retry_after_closes_the_gate_without_panicking_and_at_most_fifteen_minutes() {
        let p = LocalPacing::new(2, Duration::from_secs(1), 50, None);
        p.close_for(Duration::MAX);
        let open_at = p.gate().expect("closed");
        let left = open_at - Instant::now();
        assert!(left <= MAX_GATE && left > MAX_GATE - Duration::from_secs(5), "{left:?}");
        // A shorter one later does not reopen it early.
        p.close_for(Duration::from_secs(1));
        assert_eq!(p.gate(), Some(open_at));
    }

    #[test]
    fn a_429_halves_the_rate_and_successes_take_it_back_slowly() {
        let p = LocalPacing::new(2, Duration::from_secs(1), 50, None);
        p.slow_down("#ops");
        assert_eq!(p.post_interval("#ops"), Duration::from_secs(2));
        p.slow_down("#ops");
        assert_eq!(p.post_interval("#ops"), Duration::from_secs(4));
        p.speed_up("#ops");
        assert_eq!(
            p.post_interval("#ops"),
            Duration::from_secs(4),
            "no raise right after a 429"
        );
        let raise = |p: &LocalPacing| {
            // As if RAISE_EVERY base intervals had passed since the last change.
            let long_ago = Instant::now() - Duration::from_secs(u64::from(RAISE_EVERY) + 1);
            p.last_change.lock().unwrap().insert("#ops".into(), long_ago);
            p.speed_up("#ops");
        };
        raise(&p);
        let after_one = p.post_interval("#ops");
        assert!(after_one < Duration::from_secs(4) && after_one > Duration::from_secs(3));
        p.speed_up("#ops");
        assert_eq!(p.post_interval("#ops"), after_one, "one raise per RAISE_EVERY");
        for _ in 0..100 {
            raise(&p);
        }
        assert_eq!(p.post_interval("#ops"), Duration::from_secs(1), "back to the base");
        for _ in 0..20 {
            p.slow_down("#ops");
        }
        assert_eq!(p.post_interval("#ops"), SLOWEST);
        assert_eq!(p.post_interval("#other"), Duration::from_secs(1), "per channel");
    }

    /// A memory that outlives the pacing that wrote it, as a file does.
    #[derive(Clone, Default)]
    struct Kept(std::sync::Arc<Mutex<HashMap<String, String>>>);

    impl PacingMemory for Kept {
        fn load(&self, key: &str) -> Option<String> {
            self.0.lock().unwrap().get(key).cloned()
        }
        fn save(&self, key: &str, value: &str) {
            self.0.lock().unwrap().insert(key.into(), value.into());
        }
    }

    #[test]
    fn the_gate_buckets_and_learnt_pace_survive_a_restart() {
        let kept = Kept::default();
        {
            let p = LocalPacing::new(3, Duration::from_secs(10), 50, Some(Box::new(kept.clone())));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for _ in 0..3 {
                    p.acquire(Call::Post("#ops")).await;
                }
            });
            p.slow_down("#ops");
            p.close_for(Duration::from_secs(60));
        }
        let p = LocalPacing::new(3, Duration::from_secs(10), 50, Some(Box::new(kept)));
        let left = p.gate().expect("the gate is still closed") - Instant::now();
        assert!(left > Duration::from_secs(55), "{left:?}");
        assert_eq!(p.post_interval("#ops"), Duration::from_secs(20), "learnt pace kept");
        let mut posts = p.posts.lock().unwrap();
        let tokens = posts.get_mut("#ops").unwrap().tokens(Instant::now());
        assert!(tokens < 0.5, "no burst it has not earned: {tokens}");
    }
}
