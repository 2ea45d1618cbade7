//! How often one user is told "no". A refused click costs a Slack call (the message
//! only the clicker sees) and an audit row; someone (or something) clicking refused
//! buttons in a loop must cost neither without bound. Each user may be refused a few
//! times at once, then once per [`EVERY`]; beyond that their refused clicks are
//! dropped, with one log line per user until they are let through again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bucket::Bucket;

/// Refusals told at once.
pub const BURST: u32 = 5;
/// Then one per this.
pub const EVERY: Duration = Duration::from_secs(12);
/// Users remembered at most (the least recent are forgotten first).
const USERS_MAX: usize = 1024;

#[derive(Default)]
pub struct Refusals {
    users: Mutex<HashMap<String, (Bucket, bool)>>,
}

impl Refusals {
    /// Whether a refusal of `user` may be told (and audited) now.
    pub fn may_tell(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap();
        if users.len() >= USERS_MAX && !users.contains_key(user) {
            // Those whose budget has refilled carry no memory worth keeping.
            users.retain(|_, (b, _)| b.tokens(now) < f64::from(BURST));
            if users.len() >= USERS_MAX {
                users.clear();
            }
        }
        let (bucket, silenced) = users
            .entry(user.to_string())
            .or_insert_with(|| (Bucket::full(BURST, EVERY, now), false));
        match bucket.take(now) {
            Ok(()) => {
                *silenced = false;
                true
            }
            Err(_) => {
                if !*silenced {
                    *silenced = true;
                    tracing::warn!(
                        user,
                        "this user's clicks keep being refused: further refusals are dropped without a word for a while"
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_told_a_few_times_then_not_for_a_while_and_others_still_are() {
        let r = Refusals::default();
        for _ in 0..BURST {
            assert!(r.may_tell("U1"));
        }
        assert!(!r.may_tell("U1"));
        assert!(!r.may_tell("U1"));
        assert!(r.may_tell("U2"), "per user");
    }
}
