//! Comparing what the channel shows with what supervisord reports: which threads
//! disagree, which disagreements held over two looks, and the reconciled transition
//! that corrects each.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::Why;
use crate::store::Known;
use crate::supervisord::event::{failing, ProcessState, Reconciled, State, ThreadKey};
use crate::supervisord::xmlrpc::ProcessInfo;

/// A thread whose card disagrees with supervisord.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub key: ThreadKey,
    /// The channel of the thread; `None` for a process the channel has never seen
    /// (routing decides).
    pub channel: Option<String>,
    /// What the card shows (`None`: never seen).
    pub shown: Option<ProcessState>,
    /// What supervisord reports (`Removed`: not configured any more).
    pub now: State,
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
    pub description: String,
    pub exitstatus: i64,
}

/// Whether supervisord's report of an exit is an expected one, as far as the exit
/// status tells (0: expected; anything else: nobody knows without `exitcodes`).
fn expected(state: State, exitstatus: i64) -> Option<bool> {
    (state == State::Exited && exitstatus == 0).then_some(true)
}

/// Compares what the channel shows for `host` with what supervisord reports.
pub fn compare(host: &str, known: &[Known], infos: &[ProcessInfo]) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let mut by_key: HashMap<ThreadKey, &ProcessInfo> = HashMap::new();
    for info in infos {
        let key = ThreadKey {
            host: host.to_string(),
            group: info.group.clone(),
            process: info.name.clone(),
        };
        by_key.insert(key, info);
    }
    let mut seen: HashSet<&ThreadKey> = HashSet::new();
    for k in known {
        if k.event.is_supervisord() {
            continue;
        }
        seen.insert(&k.key);
        match by_key.get(&k.key) {
            Some(info) => {
                let Some(state) = info.state() else { continue };
                if state != k.event.to {
                    out.push(Disagreement {
                        key: k.key.clone(),
                        channel: Some(k.channel.clone()),
                        shown: Some(k.event.clone()),
                        now: state,
                        pid: u32::try_from(info.pid).ok().filter(|p| *p > 0),
                        since: info.since(state),
                        description: info.description.clone(),
                        exitstatus: info.exitstatus,
                    });
                }
            }
            None if k.event.to != State::Removed => out.push(Disagreement {
                key: k.key.clone(),
                channel: Some(k.channel.clone()),
                shown: Some(k.event.clone()),
                now: State::Removed,
                pid: None,
                since: None,
                description: String::new(),
                exitstatus: 0,
            }),
            None => {}
        }
    }
    for (key, info) in &by_key {
        if seen.contains(key) {
            continue;
        }
        let Some(state) = info.state() else { continue };
        // A process the channel never saw gets a card only when it is failing now.
        if failing(state, expected(state, info.exitstatus)) {
            out.push(Disagreement {
                key: key.clone(),
                channel: None,
                shown: None,
                now: state,
                pid: u32::try_from(info.pid).ok().filter(|p| *p > 0),
                since: info.since(state),
                description: info.description.clone(),
                exitstatus: info.exitstatus,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Keeps what both looks found the same way (the same state, since the same time):
/// anything else was a change on its way.
pub(super) fn stable(first: &[Disagreement], second: Vec<Disagreement>) -> Vec<Disagreement> {
    second
        .into_iter()
        .filter(|d| {
            first.iter().any(|f| {
                f.key == d.key
                    && f.now == d.now
                    && f.since == d.since
                    && f.shown.as_ref().map(|e| (e.to, e.serial))
                        == d.shown.as_ref().map(|e| (e.to, e.serial))
            })
        })
        .collect()
}

/// The instance name of reconciled entries in the outbox (their serials are this
/// listener's own).
pub fn instance(host: &str) -> String {
    format!("reconcile/{host}")
}

/// The reconciled transition for a disagreement.
pub fn event(d: &Disagreement, why: &str, dropped: Option<u64>, serial: u64) -> ProcessState {
    let from = d.shown.as_ref().map_or(State::Unknown, |e| e.to);
    let expected = expected(d.now, d.exitstatus);
    ProcessState {
        host: d.key.host.clone(),
        server: d
            .shown
            .as_ref()
            .map(|e| e.server.clone())
            .unwrap_or_default(),
        serial,
        pool: "reconcile".into(),
        poolserial: 0,
        group: d.key.group.clone(),
        process: d.key.process.clone(),
        from,
        to: d.now,
        pid: d.pid,
        tries: None,
        expected,
        at: Utc::now(),
        extra: Vec::new(),
        reconciled: Some(Reconciled {
            why: why.to_string(),
            since: d.since,
            dropped,
            description: d.description.clone(),
            first_seen: d.shown.is_none(),
        }),
    }
}

/// The reason said in a thread: the group change that concerns it, else the reasons
/// of the pass.
pub(super) fn why_for(d: &Disagreement, whys: &[Why]) -> String {
    let own = whys.iter().find(|w| match w {
        Why::GroupRemoved(g) => *g == d.key.group && d.now == State::Removed,
        Why::GroupAdded(g) => *g == d.key.group && d.now != State::Removed,
        _ => false,
    });
    match own {
        Some(w) => w.text(),
        None => {
            let general: Vec<String> = whys
                .iter()
                .filter(|w| !matches!(w, Why::GroupAdded(_) | Why::GroupRemoved(_)))
                .map(Why::text)
                .collect();
            if general.is_empty() {
                whys.first()
                    .map(Why::text)
                    .unwrap_or_else(|| Why::Timer.text())
            } else {
                general.join(", ")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, name: &str, state: &str, exitstatus: i64) -> ProcessInfo {
        ProcessInfo {
            name: name.into(),
            group: group.into(),
            statename: state.into(),
            start: 1_700_000_000,
            stop: 1_700_000_100,
            exitstatus,
            pid: if state == "RUNNING" { 42 } else { 0 },
            ..Default::default()
        }
    }

    fn known(group: &str, name: &str, to: State) -> Known {
        let key = ThreadKey {
            host: "web-1".into(),
            group: group.into(),
            process: name.into(),
        };
        let d = Disagreement {
            key: key.clone(),
            channel: None,
            shown: None,
            now: to,
            pid: None,
            since: None,
            description: String::new(),
            exitstatus: 0,
        };
        let mut event = event(&d, "x", None, 1);
        event.reconciled = None;
        Known {
            key,
            channel: "#ops".into(),
            event,
        }
    }

    #[test]
    fn agreeing_cards_give_nothing() {
        let k = vec![known("a", "a", State::Running)];
        assert!(compare("web-1", &k, &[info("a", "a", "RUNNING", 0)]).is_empty());
    }

    #[test]
    fn a_card_that_disagrees_is_corrected_with_supervisords_state_and_time() {
        let k = vec![known("a", "a", State::Running)];
        let d = compare("web-1", &k, &[info("a", "a", "STOPPED", 0)]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].now, State::Stopped);
        assert_eq!(d[0].channel.as_deref(), Some("#ops"));
        assert_eq!(d[0].since.unwrap().timestamp(), 1_700_000_100);
        let ev = event(&d[0], "listener started", Some(27), 9);
        assert_eq!((ev.from, ev.to), (State::Running, State::Stopped));
        assert_eq!(ev.reconciled.as_ref().unwrap().dropped, Some(27));
    }

    #[test]
    fn unseen_processes_get_a_card_only_when_failing() {
        let infos = [
            info("a", "ok", "RUNNING", 0),
            info("a", "done", "EXITED", 0),
            info("a", "crashed", "EXITED", 3),
            info("b", "b", "FATAL", 0),
            info("c", "c", "BACKOFF", 0),
            info("d", "d", "STOPPED", 0),
        ];
        let d = compare("web-1", &[], &infos);
        let names: Vec<&str> = d.iter().map(|d| d.key.process.as_str()).collect();
        assert_eq!(names, ["crashed", "b", "c"]);
        assert!(d.iter().all(|d| d.channel.is_none() && d.shown.is_none()));
        assert!(event(&d[0], "x", None, 1).reconciled.unwrap().first_seen);
    }

    #[test]
    fn a_process_supervisord_no_longer_has_is_removed_once() {
        let k = vec![known("gone", "gone", State::Stopped)];
        let d = compare("web-1", &k, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].now, State::Removed);
        let k = vec![known("gone", "gone", State::Removed)];
        assert!(compare("web-1", &k, &[]).is_empty());
    }

    #[test]
    fn supervisords_own_thread_is_not_a_process() {
        let mut k = known("", "supervisord", State::Running);
        k.event.group = String::new();
        k.key.group = String::new();
        assert!(compare("web-1", &[k], &[]).is_empty());
    }

    #[test]
    fn only_what_disagrees_the_same_way_twice_is_corrected() {
        let k = vec![
            known("a", "a", State::Running),
            known("b", "b", State::Running),
        ];
        let first = compare(
            "web-1",
            &k,
            &[info("a", "a", "STOPPED", 0), info("b", "b", "STOPPED", 0)],
        );
        let mut b_restarted = info("b", "b", "STARTING", 0);
        b_restarted.start += 5;
        let second = compare("web-1", &k, &[info("a", "a", "STOPPED", 0), b_restarted]);
        let kept = stable(&first, second);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key.process, "a");
    }

    #[test]
    fn the_reason_is_the_groups_own_change_when_there_is_one() {
        let k = vec![known("gone", "gone", State::Stopped)];
        let d = compare("web-1", &k, &[]);
        let whys = [
            Why::GroupAdded("gone".into()),
            Why::Timer,
            Why::GroupRemoved("gone".into()),
        ];
        assert_eq!(why_for(&d[0], &whys), "group gone removed");
        assert_eq!(
            why_for(&d[0], &[Why::Start, Why::Gap]),
            "listener started, events were dropped"
        );
    }
}
