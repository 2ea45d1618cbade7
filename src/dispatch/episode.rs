//! Which replies the channel sees too: failure episodes, followed on supervisord's
//! clock. An episode starts at a failure and ends only when the process is stopped
//! on purpose, or has been up — RUNNING, or exited as expected — for `settle_after`
//! as supervisord reports it (the events' times, reconcile's `since`), never as the
//! deliveries happen: a crash loop whose digests go out once a minute is one episode
//! for as long as it loops. Of each episode the channel is shown one reply (the first
//! that shows the process down and does not end with it running again), and its
//! FATAL. A pure function over values; the worker applies it and keeps the episode
//! in the shared state, so that a restart goes on with the same one.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::Episode;
use crate::supervisord::event::{ProcessState, State};

/// What a reply means for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The reply goes to the channel too.
    pub broadcast: bool,
    /// The episode after the reply (`None`: none under way).
    pub episode: Option<Episode>,
}

/// Whether a reply carrying `events` (oldest first) goes to the channel too, given
/// the thread's episode so far, and the episode after them. A broadcast marks the
/// episode told (and FATAL's, when it carries it); a mute is the caller's affair.
pub fn decide(so_far: Option<&Episode>, events: &[ProcessState], settle_after: Duration) -> Decision {
    let settle = chrono::Duration::from_std(settle_after).unwrap_or(chrono::Duration::MAX);
    let mut ep = so_far.cloned();
    // What of the episode under way this reply would be the first to show.
    let (mut failure, mut fatal) = (false, false);
    for e in events {
        let at = when(e);
        // Up for long enough before this event (that episode ended then), or stopped
        // (or removed) on purpose.
        if calm(ep.as_ref(), at, settle) || matches!(e.to, State::Stopped | State::Removed) {
            (ep, failure, fatal) = (None, false, false);
        }
        if e.is_failing() {
            let open = ep.get_or_insert_with(|| Episode {
                started: at,
                told: false,
                fatal_told: false,
                calm_since: None,
            });
            open.calm_since = None;
            if e.is_failure() {
                failure |= !open.told;
                fatal |= e.to == State::Fatal && !open.fatal_told;
            }
        } else if is_up(e) {
            if let Some(open) = ep.as_mut() {
                open.calm_since.get_or_insert(at);
            }
        }
        // Reconcile may report a process up since long before it was received.
        if calm(ep.as_ref(), e.at, settle) {
            (ep, failure, fatal) = (None, false, false);
        }
    }
    // Never a reply that ends with the process running again: the channel hears of
    // the episode from the next failure's reply, if the loop goes on.
    let recovered = events.last().is_some_and(|e| e.to == State::Running);
    let broadcast = (failure || fatal) && !recovered;
    if broadcast {
        if let Some(open) = ep.as_mut() {
            open.told = true;
            open.fatal_told |= fatal;
        }
    }
    Decision {
        broadcast,
        episode: ep,
    }
}

/// When supervisord says the event's state began: reconcile's `since`, else when the
/// event was received.
fn when(e: &ProcessState) -> DateTime<Utc> {
    e.reconciled
        .as_ref()
        .and_then(|r| r.since)
        .unwrap_or(e.at)
}

/// The process is up: RUNNING, or exited as expected.
fn is_up(e: &ProcessState) -> bool {
    e.to == State::Running || (e.to == State::Exited && e.expected == Some(true))
}

/// Whether the episode's process had been up for `settle` by `at`.
fn calm(ep: Option<&Episode>, at: DateTime<Utc>, settle: chrono::Duration) -> bool {
    ep.and_then(|ep| ep.calm_since)
        .is_some_and(|since| at.signed_duration_since(since) >= settle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::samples::event;
    use crate::supervisord::event::Reconciled;
    use State::*;

    const SETTLE: Duration = Duration::from_secs(60);

    /// A transition at `secs` seconds (supervisord's time).
    fn ev(from: State, to: State, secs: i64) -> ProcessState {
        event("h", "g", "p", from, to, secs)
    }

    /// A churning process's cycle from `t`: up a second, then an unexpected exit.
    fn cycle(t: i64) -> Vec<ProcessState> {
        vec![ev(Exited, Starting, t), ev(Starting, Running, t + 1), ev(Running, Exited, t + 2)]
    }

    /// Applies replies in turn; returns which were broadcast, and the episode after.
    fn replies(mut ep: Option<Episode>, batches: &[Vec<ProcessState>]) -> (Vec<bool>, Option<Episode>) {
        let mut out = Vec::new();
        for b in batches {
            let d = decide(ep.as_ref(), b, SETTLE);
            out.push(d.broadcast);
            ep = d.episode;
        }
        (out, ep)
    }

    #[test]
    fn a_loop_that_never_calms_is_broadcast_once_however_its_digests_are_paced() {
        // The first failure, then a digest per minute of delivery for an hour: each
        // holds a minute of 2-second uptimes, never the 60 s that end an episode.
        let mut batches = vec![vec![ev(Running, Exited, 0)]];
        for minute in 0..60 {
            let start = 1 + minute * 60;
            batches.push((0..20).flat_map(|i| cycle(start + i * 3)).collect());
        }
        let (out, ep) = replies(None, &batches);
        assert_eq!(out.iter().filter(|b| **b).count(), 1, "{out:?}");
        assert!(out[0], "the first failure");
        let ep = ep.expect("still under way");
        assert_eq!(ep.started, event("h", "g", "p", Running, Exited, 0).at);
        assert!(ep.told && !ep.fatal_told && ep.calm_since.is_none());
    }

    #[test]
    fn fatal_after_a_loop_is_broadcast_once_more_and_only_once() {
        let (out, ep) = replies(
            None,
            &[
                cycle(0),
                cycle(3),
                vec![ev(Exited, Starting, 6), ev(Starting, Backoff, 6), ev(Backoff, Fatal, 7)],
                // Started by hand, and it fails again at once: the same episode.
                vec![ev(Fatal, Starting, 30), ev(Starting, Backoff, 30), ev(Backoff, Fatal, 31)],
            ],
        );
        assert_eq!(out, [true, false, true, false]);
        let ep = ep.unwrap();
        assert!(ep.told && ep.fatal_told);
    }

    #[test]
    fn a_process_that_never_starts_is_broadcast_at_its_fatal() {
        // BACKOFF is still being retried: not a failure a person must hear of yet.
        let (out, _) = replies(
            None,
            &[
                vec![ev(Stopped, Starting, 0), ev(Starting, Backoff, 0)],
                vec![ev(Backoff, Starting, 1), ev(Starting, Backoff, 1)],
                vec![ev(Backoff, Fatal, 2)],
            ],
        );
        assert_eq!(out, [false, false, true]);
    }

    #[test]
    fn up_for_settle_after_by_supervisords_clock_ends_the_episode() {
        // Up at 3 s, fails at 62 s: 59 s up, the same episode.
        let (out, _) = replies(
            None,
            &[cycle(0), vec![ev(Exited, Starting, 2), ev(Starting, Running, 3)], vec![ev(Running, Exited, 62)]],
        );
        assert_eq!(out, [true, false, false]);
        // Up at 3 s, fails at 63 s: up for settle_after, a new episode.
        let (out, ep) = replies(
            None,
            &[cycle(0), vec![ev(Exited, Starting, 2), ev(Starting, Running, 3)], vec![ev(Running, Exited, 63)]],
        );
        assert_eq!(out, [true, false, true]);
        assert_eq!(ep.unwrap().started, ev(Running, Exited, 63).at);
    }

    #[test]
    fn the_episode_ends_inside_a_reply_that_spans_the_calm() {
        // One reply (after an outage, say): a crash, a recovery that held for two
        // minutes, a new crash. The new crash is a new episode's first failure.
        let (out, _) = replies(
            None,
            &[vec![ev(Running, Exited, 0), ev(Exited, Starting, 1), ev(Starting, Running, 2), ev(Running, Exited, 122)]],
        );
        assert_eq!(out, [true]);
        // Told by the first reply; the second holds the new episode's first failure.
        let (out, _) = replies(
            None,
            &[
                vec![ev(Running, Exited, 0)],
                vec![ev(Exited, Starting, 1), ev(Starting, Running, 2), ev(Running, Exited, 122)],
            ],
        );
        assert_eq!(out, [true, true]);
    }

    #[test]
    fn an_expected_exit_counts_as_up() {
        let mut done = ev(Running, Exited, 3);
        done.expected = Some(true);
        let (out, ep) = replies(None, &[cycle(0), vec![ev(Exited, Starting, 2), done]]);
        assert_eq!(out, [true, false]);
        assert_eq!(ep.unwrap().calm_since, Some(ev(Running, Exited, 3).at));
        let (out, _) = replies(
            None,
            &[cycle(0), vec![ev(Exited, Starting, 2), { let mut d = ev(Running, Exited, 3); d.expected = Some(true); d }], vec![ev(Exited, Starting, 70), ev(Starting, Backoff, 70), ev(Backoff, Starting, 71), ev(Starting, Running, 72), ev(Running, Exited, 73)]],
        );
        assert_eq!(out, [true, false, true], "up (done as expected) for 67 s: a new episode");
    }

    #[test]
    fn stopped_on_purpose_ends_the_episode() {
        let (out, ep) = replies(
            None,
            &[cycle(0), vec![ev(Exited, Starting, 2), ev(Starting, Running, 3), ev(Running, Stopping, 4), ev(Stopping, Stopped, 4)]],
        );
        assert_eq!(out, [true, false]);
        assert_eq!(ep, None);
        let (out, _) = replies(ep, &[vec![ev(Stopped, Starting, 5), ev(Starting, Running, 6)], vec![ev(Running, Exited, 7)]]);
        assert_eq!(out, [false, true], "the next failure opens a new episode");
    }

    #[test]
    fn a_reply_that_ends_running_again_is_not_broadcast_and_the_next_failure_is() {
        let (out, ep) = replies(None, &[cycle(0)[..2].to_vec(), vec![ev(Running, Exited, 2), ev(Exited, Starting, 3), ev(Starting, Running, 4)], vec![ev(Running, Exited, 5)], vec![ev(Exited, Starting, 6), ev(Starting, Backoff, 6)]]);
        assert_eq!(out, [false, false, true, false]);
        assert!(ep.unwrap().told);
        // A FATAL whose reply ends running (started by hand at once) is not told.
        let (out, ep) = replies(None, &[vec![ev(Backoff, Fatal, 0), ev(Fatal, Starting, 1), ev(Starting, Running, 2)]]);
        assert_eq!(out, [false]);
        assert!(!ep.unwrap().fatal_told);
    }

    #[test]
    fn reconciles_since_is_supervisords_clock() {
        let reconciled = |to: State, at: i64, since: i64| {
            let mut e = ev(Exited, to, at);
            e.reconciled = Some(Reconciled {
                why: "start".into(),
                since: Some(ev(Exited, to, since).at),
                dropped: None,
                description: String::new(),
                first_seen: false,
            });
            e
        };
        // The listener was down; supervisord says RUNNING since 1 s, at 100 s: up for
        // 99 s, the episode is over.
        let (_, ep) = replies(None, &[cycle(0)]);
        assert!(ep.is_some());
        let d = decide(ep.as_ref(), &[reconciled(Running, 100, 1)], SETTLE);
        assert_eq!(d, Decision { broadcast: false, episode: None });
        // RUNNING since 90 s, at 100 s, then a crash at 101 s: the same episode.
        let (out, ep) = replies(ep, &[vec![reconciled(Running, 100, 90)], vec![ev(Running, Exited, 101)]]);
        assert_eq!(out, [false, false]);
        assert!(ep.is_some());
    }

    #[test]
    fn a_restart_goes_on_with_the_stored_episode() {
        let (out, ep) = replies(None, &[cycle(0)]);
        assert_eq!(out, [true]);
        // What the store gives back after a restart is what was saved.
        let saved = serde_json::to_string(&ep).unwrap();
        let back: Option<Episode> = serde_json::from_str(&saved).unwrap();
        let (out, _) = replies(back, &[cycle(3), cycle(6)]);
        assert_eq!(out, [false, false]);
    }
}
