//! Who is talking to us and what was lost on the way: the supervisord instance an
//! event comes from, serials already seen (resends), and gaps in `poolserial`
//! (events supervisord discarded).

use std::collections::{HashMap, HashSet, VecDeque};

/// Which supervisord instance is talking to us: its `server` name, its pid (our
/// parent) and when that process started. Serials restart at 0 with a new
/// supervisord and never within one, so (instance, serial) tells a resend from a new
/// event:
/// - supervisord restarted by init: a new pid, a new start time;
/// - supervisord as PID 1 in a container that restarted: the same pid (1) and the
///   same `server` name, but a new start time — without it every event of the new
///   container would pass for a resend of the old one's;
/// - the listener restarted by supervisord: the same parent, the same instance, so a
///   resend of the event it held is still recognised;
/// - a reload (`supervisorctl reload`, SIGHUP): the same process and the same
///   serial counter, the same instance.
pub fn instance_id(server: &str) -> String {
    format!("{server}/{}", parent_identity())
}

/// `PID@START` for our parent process: its pid and its start time in clock ticks
/// since boot (`/proc/PID/stat`, field 22), read once. Just `PID` where /proc cannot
/// tell.
pub fn parent_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        #[cfg(unix)]
        let ppid = std::os::unix::process::parent_id();
        #[cfg(not(unix))]
        let ppid = 0;
        match process_start_ticks(ppid) {
            Some(start) => format!("{ppid}@{start}"),
            None => ppid.to_string(),
        }
    })
}

/// The start time of `pid` in clock ticks since boot, from `/proc/PID/stat`.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself: count from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come fields 3, 4, ...: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
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

    /// Where each pool's serials stand.
    pub fn positions(&self) -> Vec<(String, u64)> {
        self.last.iter().map(|(p, s)| (p.clone(), *s)).collect()
    }

    /// Takes the owed count (to attach it to an event that is being stored).
    pub fn take(&mut self) -> u64 {
        std::mem::take(&mut self.owed)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_field_22_even_with_a_hostile_command_name() {
        let stat = "1234 (super visor) (x)) S 1 1234 1234 0 -1 4194560 2477 0 0 0 12 3 0 0 20 0 1 0 987654 45056000 3500 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("garbage"), None);
        assert_eq!(parse_start_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(process_start_ticks(std::process::id()).is_some());
        assert!(parent_identity().contains('@'));
    }
}
