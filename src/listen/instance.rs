//! Who is talking to us and what was lost on the way: the supervisord instance an
//! event comes from, serials already seen (resends), and gaps in `poolserial`
//! (events supervisord discarded).

use std::collections::{HashMap, HashSet, VecDeque};

/// Which supervisord instance is talking to us: its `server` name and its pid (our
/// parent). Serials restart at 0 with a new supervisord, never within one (a reload
/// keeps the process and the counter).
pub fn instance_id(server: &str) -> String {
    #[cfg(unix)]
    let ppid = std::os::unix::process::parent_id();
    #[cfg(not(unix))]
    let ppid = 0;
    format!("{server}/{ppid}")
}

/// Remembers the last few thousand serials to drop events supervisord sent twice
/// (a resend after a rejection can reach several pools). Bounded memory.
pub struct RecentSerials {
    order: VecDeque<(String, u64)>,
    seen: HashSet<(String, u64)>,
    cap: usize,
}

impl RecentSerials {
    pub fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(cap),
            seen: HashSet::with_capacity(cap),
            cap,
        }
    }

    /// `true` when (instance, serial) was seen before; records it otherwise.
    pub fn check_and_insert(&mut self, instance: &str, serial: u64) -> bool {
        let key = (instance.to_string(), serial);
        if self.seen.contains(&key) {
            return true;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.seen.insert(key);
        false
    }
}

/// Notices gaps in `poolserial`: events supervisord discarded because its buffer was
/// full. The count is carried to the next process-state event so its card can say so.
#[derive(Default)]
pub struct GapTracker {
    last: HashMap<String, u64>,
    /// Dropped events not yet attached to a card.
    owed: u64,
}

impl GapTracker {
    /// Records an event's pool serial; returns how many events were skipped before it.
    pub fn observe(&mut self, pool: &str, poolserial: u64) -> u64 {
        let gap = match self.last.get(pool) {
            Some(&last) if poolserial > last + 1 => poolserial - last - 1,
            _ => 0,
        };
        // A lower number means supervisord restarted its count: start over.
        self.last.insert(pool.to_string(), poolserial);
        self.owed += gap;
        gap
    }

    /// Takes the owed count (to attach it to an event that is being stored).
    pub fn take(&mut self) -> u64 {
        std::mem::take(&mut self.owed)
    }
}

