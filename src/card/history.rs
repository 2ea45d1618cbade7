//! A thread's history, made readable: runs of one state and cycles of two to four
//! states counted (`(STARTING → BACKOFF) ×3`), the parent's trail, and the summary
//! line of a digest.

use serde::Serialize;

use super::when::When;
use super::text::ELLIPSIS;
use crate::supervisord::event::{ProcessState, State};

/// How many runs of the history trail a parent card shows (the most recent ones).
pub const TRAIL_RUNS_MAX: usize = 10;

/// One run of the history trail: `states` repeated `count` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// One state, or a cycle of two to four (`STARTING`, `BACKOFF`).
    pub states: Vec<&'static str>,
    pub count: usize,
}

/// Compacts a history into runs: repeats of one state (`BACKOFF ×3`) and repeats of a
/// two-state cycle (`(STARTING → BACKOFF) ×3`, supervisord's crash loop).
pub fn compact_history(history: &[State]) -> Vec<Run> {
    let mut runs = Vec::new();
    let n = history.len();
    let mut i = 0;
    while i < n {
        let a = history[i];
        let single = history[i..].iter().take_while(|s| **s == a).count();
        if single >= 2 {
            runs.push(Run {
                states: vec![a.as_str()],
                count: single,
            });
            i += single;
            continue;
        }
        // The cycle (of 2 to 4 states) repeated at least twice that covers the most
        // states from here: a crash loop `(STARTING → BACKOFF) ×3`, a churning
        // process `(STARTING → RUNNING → EXITED) ×63`.
        let mut best: Option<(usize, usize)> = None;
        for len in 2..=4 {
            if i + len > n {
                break;
            }
            let cycle = &history[i..i + len];
            if cycle.iter().all(|s| *s == a) {
                continue;
            }
            let mut reps = 1;
            while i + (reps + 1) * len <= n
                && history[i + reps * len..i + (reps + 1) * len] == *cycle
            {
                reps += 1;
            }
            if reps >= 2 && best.is_none_or(|(l, r)| reps * len > l * r) {
                best = Some((len, reps));
            }
        }
        if let Some((len, reps)) = best {
            runs.push(Run {
                states: history[i..i + len].iter().map(|s| s.as_str()).collect(),
                count: reps,
            });
            i += len * reps;
            continue;
        }
        runs.push(Run {
            states: vec![a.as_str()],
            count: 1,
        });
        i += 1;
    }
    runs
}

pub(super) fn run_text(run: &Run) -> String {
    let inner = run.states.join(" → ");
    match (run.states.len(), run.count) {
        (_, 1) => inner,
        (1, n) => format!("{inner} ×{n}"),
        (_, n) => format!("({inner}) ×{n}"),
    }
}

/// The history trail shown on a parent card: run-length compacted, only the most recent
/// [`TRAIL_RUNS_MAX`] runs, with a leading `… →` when older ones were left out.
pub fn trail(history: &[State]) -> String {
    let runs = compact_history(history);
    let cut = runs.len() > TRAIL_RUNS_MAX;
    let shown = &runs[runs.len().saturating_sub(TRAIL_RUNS_MAX)..];
    let body = shown.iter().map(run_text).collect::<Vec<_>>().join(" → ");
    if cut {
        format!("{ELLIPSIS} → {body}")
    } else {
        body
    }
}

/// The first line of a digest: when its changes happened and how many were crashes
/// (`14:03:05 – 14:05:10 · 6 crashes: 5 unexpected exits, 1 failed start, FATAL`).
/// supervisord's events carry no exit status: the crash context shows the last one.
pub(super) fn digest_summary(events: &[ProcessState]) -> String {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return String::new();
    };
    let exits = events
        .iter()
        .filter(|e| e.to == State::Exited && e.expected != Some(true))
        .count();
    let backoffs = events.iter().filter(|e| e.to == State::Backoff).count();
    let fatal = events.iter().any(|e| e.to == State::Fatal);
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    if exits > 0 {
        parts.push(plural(exits, "unexpected exit", "unexpected exits"));
    }
    if backoffs > 0 {
        parts.push(plural(backoffs, "failed start", "failed starts"));
    }
    if fatal {
        parts.push("FATAL".to_string());
    }
    let crashes = if parts.is_empty() {
        "no crash".to_string()
    } else {
        format!(
            "{}: {}",
            plural(exits + backoffs, "crash", "crashes"),
            parts.join(", ")
        )
    };
    format!(
        "{} – {} · {crashes}",
        When::new(first.at).slack_time,
        When::new(last.at).slack_time
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn trail_compacts_runs_and_cycles() {
        assert_eq!(
            trail(&[Starting, Running, Exited, Backoff, Backoff, Backoff, Fatal]),
            "STARTING → RUNNING → EXITED → BACKOFF ×3 → FATAL"
        );
        assert_eq!(
            trail(&[
                Running, Exited, Starting, Backoff, Starting, Backoff, Starting, Backoff, Fatal
            ]),
            "RUNNING → EXITED → (STARTING → BACKOFF) ×3 → FATAL"
        );
        assert_eq!(trail(&[Running]), "RUNNING");
        assert_eq!(trail(&[]), "");
    }

    #[test]
    fn long_trail_keeps_the_most_recent_part() {
        // A history with no short cycle in it (its period is 7 states).
        let mut h = Vec::new();
        for i in 0..20 {
            if i % 2 == 0 {
                h.extend([Running, Stopping, Stopped, Starting]);
            } else {
                h.extend([Running, Exited, Starting]);
            }
        }
        h.push(Fatal);
        let t = trail(&h);
        assert!(t.starts_with("… → "), "{t}");
        assert!(t.ends_with("→ STARTING → FATAL"), "{t}");
        assert_eq!(t.matches(" → ").count(), TRAIL_RUNS_MAX, "{t}");
    }

    #[test]
    fn a_churning_process_reads_as_one_counted_cycle() {
        let mut h = vec![Starting];
        for _ in 0..63 {
            h.extend([Running, Exited, Starting]);
        }
        h.push(Running);
        assert_eq!(
            trail(&h),
            "(STARTING → RUNNING → EXITED) ×63 → STARTING → RUNNING"
        );
        let mut h = Vec::new();
        for _ in 0..5 {
            h.extend([Running, Stopping, Stopped, Starting]);
        }
        assert_eq!(trail(&h), "(RUNNING → STOPPING → STOPPED → STARTING) ×5");
    }

    #[test]
    fn a_digest_says_when_and_how_many_crashes() {
        let ev = |from, to, expected| {
            let mut e = super::super::samples::event("h", "g", "p", from, to, 0);
            e.expected = expected;
            e
        };
        let events = [
            ev(Running, Exited, Some(false)),
            ev(Exited, Starting, None),
            ev(Starting, Backoff, None),
            ev(Backoff, Starting, None),
            ev(Starting, Backoff, None),
            ev(Backoff, Fatal, None),
        ];
        let d = digest_summary(&events);
        assert!(
            d.ends_with(" · 3 crashes: 1 unexpected exit, 2 failed starts, FATAL"),
            "{d}"
        );
        let calm = [
            ev(Stopped, Starting, None),
            ev(Starting, Running, None),
            ev(Running, Stopping, None),
            ev(Stopping, Stopped, None),
        ];
        assert!(digest_summary(&calm).ends_with(" · no crash"));
    }
}
