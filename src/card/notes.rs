//! The texts the dispatcher adds to a thread beyond the cards themselves: the notes
//! on a reply (events supervisord dropped, events folded, a recovery) and the
//! "settled" reply that ends a flapping episode.

use serde_json::json;

use super::model::When;
use super::text::sanitize_line;
use super::{color, emoji, escape_mrkdwn, Card};
use crate::supervisord::event::{ProcessState, Reconciled, State};

/// What a reply's notes are made of, besides its events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoteCounts {
    /// Events supervisord dropped before these (its buffer overflowed).
    pub dropped: u64,
    /// Earlier transitions folded into these (the outbox was full).
    pub coalesced: u64,
}

/// Notes for a reply carrying `events`, after a thread whose states so far were
/// `history`: events supervisord dropped, transitions folded, a recovery after a
/// failure.
pub fn reply_notes(events: &[ProcessState], counts: NoteCounts, history: &[State]) -> Vec<String> {
    merge_repeats(raw_notes(events, counts, history))
}

/// Each note once, in the order first said, with how many times it was said
/// (`Recovered: RUNNING again after EXITED (×42)`).
pub fn merge_repeats(notes: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for n in notes {
        match out.iter_mut().find(|(o, _)| *o == n) {
            Some((_, count)) => *count += 1,
            None => out.push((n, 1)),
        }
    }
    out.into_iter()
        .map(|(n, count)| if count == 1 { n } else { format!("{n} (×{count})") })
        .collect()
}

fn raw_notes(events: &[ProcessState], counts: NoteCounts, history: &[State]) -> Vec<String> {
    let mut notes = Vec::new();
    let NoteCounts { dropped, coalesced } = counts;
    if dropped > 0 {
        notes.push(format!(
            "{dropped} event{} dropped by supervisord before this (its event buffer overflowed; raise buffer_size)",
            if dropped == 1 { "" } else { "s" }
        ));
    }
    if coalesced > 0 {
        notes.push(format!(
            "{coalesced} earlier transition{} folded into this one: the outbox was full while Slack was unreachable",
            if coalesced == 1 { " was" } else { "s were" }
        ));
    }
    // The failure this thread is in, if any: the last failing state since the last
    // RUNNING (STARTING and STOPPING in between do not end it).
    let mut last_bad = history
        .iter()
        .rev()
        .find(|s| **s == State::Running || s.is_failing())
        .copied()
        .filter(|s| *s != State::Running);
    for e in events {
        if let Some(r) = &e.reconciled {
            notes.push(reconciled_note(e, r));
        }
        if e.is_supervisord() {
            notes.push(match e.to {
                State::Running => format!("supervisord on {} started", escape_mrkdwn(&e.host)),
                _ => format!(
                    "supervisord on {} is stopping: its programs stop with it",
                    escape_mrkdwn(&e.host)
                ),
            });
        }
        if e.to == State::Running {
            if let Some(bad) = last_bad.take() {
                notes.push(format!("Recovered: RUNNING again after {bad}"));
            }
        } else if e.is_failing() {
            last_bad = Some(e.to);
        } else if e.to == State::Stopped {
            // Stopped on purpose: a later start is not a recovery.
            last_bad = None;
        }
    }
    notes
}

/// What reconcile found, said in the thread: what supervisord reports now and since
/// when, what the channel showed, and that the changes in between were missed.
pub fn reconciled_note(e: &ProcessState, r: &Reconciled) -> String {
    let since = r
        .since
        .map(|t| format!(" since {}", When::new(t).slack))
        .unwrap_or_default();
    let said = if r.description.trim().is_empty() {
        String::new()
    } else {
        format!(" (“{}”)", escape_mrkdwn(&sanitize_line(&r.description)))
    };
    let why = escape_mrkdwn(&r.why);
    if e.to == State::Removed {
        return format!(
            ":wastebasket: No longer configured in supervisord ({why}): the last state this channel saw was {}.",
            e.from
        );
    }
    if e.from == State::Removed {
        return format!(
            ":arrows_counterclockwise: Configured again ({why}): supervisord reports *{}*{since}{said}.",
            e.to
        );
    }
    if r.first_seen {
        return format!(
            ":mag: Found when reconciling with supervisord ({why}): it reports *{}*{since}{said}; the channel had not seen this process before.",
            e.to
        );
    }
    let missed = match r.dropped {
        Some(n) if n > 0 => format!(
            "supervisord dropped {n} event{} meant for this listener (its buffer overflowed; raise buffer_size), some may have been this process's",
            if n == 1 { "" } else { "s" }
        ),
        _ => "they never reached this listener (it was not running, or supervisord did not send them)".to_string(),
    };
    format!(
        ":arrows_counterclockwise: Reconciled with supervisord ({why}): it reports *{}*{since}{said}, the card showed *{}*. Changes in between were missed: {missed}.",
        e.to, e.from
    )
}

/// The reply that ends a flapping episode: the process stayed in `latest`'s state for
/// `quiet_secs`.
pub fn settled(latest: &ProcessState, quiet_secs: u64) -> Card {
    let text = format!(
        "{} · {} settled: {} for {}s, no longer flapping",
        latest.host,
        latest.display_name(),
        latest.to,
        quiet_secs
    );
    Card {
        fallback: escape_mrkdwn(&text),
        color: color(latest.to, latest.expected).to_string(),
        blocks: json!([{
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                "{} *Settled* in *{}* for {}s: no longer flapping.",
                emoji(latest.to, latest.expected),
                latest.to,
                quiet_secs
            )}
        }]),
        text: escape_mrkdwn(&text),
    }
}

/// The note in a thread whose entries Slack would not take: they are kept on disk and
/// `supervisor-slack check` lists them.
pub fn set_aside(count: usize, reason: &str) -> Card {
    let text = format!(
        "{count} event{} could not be posted here and {} set aside ({}); `supervisor-slack check` lists them",
        if count == 1 { "" } else { "s" },
        if count == 1 { "was" } else { "were" },
        escape_mrkdwn(reason)
    );
    Card {
        fallback: text.clone(),
        color: color(State::Unknown, None).to_string(),
        blocks: json!([{
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(":warning: {text}")}]
        }]),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_said_many_times_is_said_once_with_its_count() {
        let notes = vec!["a".to_string(), "b".into(), "a".into(), "a".into()];
        assert_eq!(merge_repeats(notes), ["a (×3)", "b"]);
    }

    #[test]
    fn a_digest_of_many_recoveries_says_recovered_once() {
        let mut events = Vec::new();
        for _ in 0..42 {
            events.push(super::super::samples::event("h", "g", "p", State::Running, State::Exited, 0));
            events.push(super::super::samples::event("h", "g", "p", State::Starting, State::Running, 0));
        }
        for e in events.iter_mut().filter(|e| e.to == State::Exited) {
            e.expected = Some(false);
        }
        let notes = reply_notes(&events, NoteCounts::default(), &[]);
        assert_eq!(notes, ["Recovered: RUNNING again after EXITED (×42)"]);
    }
}
