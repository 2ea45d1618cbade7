//! The board: one message per host listing every process with its state and since
//! when, failing ones first, under a one-line summary (`web-1: 12 running, 1 FATAL`).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::limits::HEADER_MAX;
use super::when::When;
use super::text::{fit_escaped, fit_plain, sanitize_line};
use super::{color, emoji, Card};
use crate::supervisord::event::State;

/// One process on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardLine {
    /// `group:process`, or `process` when they match.
    pub name: String,
    pub state: State,
    /// For EXITED: whether the exit was expected (unknown counts as unexpected).
    pub expected: Option<bool>,
    pub since: Option<DateTime<Utc>>,
}

impl BoardLine {
    fn failing(&self) -> bool {
        crate::supervisord::event::failing(self.state, self.expected)
    }

    /// Failing first, then running, starting, stopping, stopped, done.
    fn rank(&self) -> u8 {
        if self.failing() {
            return match self.state {
                State::Fatal => 0,
                State::Exited => 1,
                State::Backoff => 2,
                _ => 3,
            };
        }
        match self.state {
            State::Running => 4,
            State::Starting => 5,
            State::Stopping => 6,
            State::Stopped => 7,
            _ => 8,
        }
    }
}

/// Lines of one section (Slack allows 3,000 characters per text).
const SECTION_CHARS: usize = 2800;
/// Characters of process lines in all (a message holds 12,000 characters of JSON in
/// all); the processes beyond are counted.
const LINES_CHARS: usize = 8000;

/// `web-1: 1 FATAL, 12 running, 1 finished` — failing states first; an expected
/// exit is `finished`, an unexpected one `EXITED`.
pub fn summary(host: &str, lines: &[BoardLine]) -> String {
    let mut sorted: Vec<&BoardLine> = lines.iter().collect();
    sorted.sort_by_key(|l| l.rank());
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in sorted {
        let label = match l.state {
            State::Running => "running".to_string(),
            State::Exited if l.expected == Some(true) => "finished".to_string(),
            s => s.as_str().to_string(),
        };
        match counts.iter_mut().find(|(n, _)| *n == label) {
            Some((_, c)) => *c += 1,
            None => counts.push((label, 1)),
        }
    }
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect();
    if parts.is_empty() {
        format!("{host}: no processes")
    } else {
        format!("{host}: {}", parts.join(", "))
    }
}

/// Board lines packed into sections (each under Slack's limit), as many as the
/// card holds in all; what does not fit is counted: "… and N {more}".
pub(super) fn sections_of(lines: Vec<String>, more: &str) -> Vec<String> {
    let mut sections: Vec<String> = vec![String::new()];
    let total = lines.len();
    let (mut used, mut shown) = (0, 0);
    for line in lines {
        let n = line.chars().count() + 1;
        if used + n > LINES_CHARS {
            break;
        }
        used += n;
        shown += 1;
        let last = sections.last_mut().expect("one section");
        if !last.is_empty() && last.chars().count() + n > SECTION_CHARS {
            sections.push(line);
        } else {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(&line);
        }
    }
    if total > shown {
        let last = sections.last_mut().expect("one section");
        last.push_str(&format!("\n… and {} {more}", total - shown));
    }
    sections
}

/// The board card of `host`. `from_supervisord`: the list is what supervisord reports
/// (else what the events showed). `at`: when it was made.
pub fn board(host: &str, lines: &[BoardLine], from_supervisord: bool, at: DateTime<Utc>) -> Card {
    let mut sorted: Vec<&BoardLine> = lines.iter().collect();
    sorted.sort_by(|a, b| a.rank().cmp(&b.rank()).then(a.name.cmp(&b.name)));
    let host_raw = sanitize_line(host);
    let summary_raw = summary(&host_raw, lines);
    let failing = lines.iter().any(BoardLine::failing);
    let bar = if failing {
        color(State::Fatal, None)
    } else if lines.iter().all(|l| l.state == State::Running) {
        color(State::Running, None)
    } else {
        color(State::Stopped, None)
    };
    let lines: Vec<String> = sorted
        .iter()
        .map(|l| {
            let since = l
                .since
                .map(|t| format!(" since {}", When::new(t).slack))
                .unwrap_or_default();
            format!(
                "{} *{}* {}{since}",
                emoji(l.state, l.expected),
                fit_escaped(&sanitize_line(&l.name), 100),
                l.state
            )
        })
        .collect();
    let sections = sections_of(lines, "more");
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": fit_plain(&format!("🖥 {summary_raw}"), HEADER_MAX), "emoji": true}
    })];
    for s in sections.into_iter().filter(|s| !s.is_empty()) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}));
    }
    let source = if from_supervisord {
        "as supervisord reports it"
    } else {
        "from the events seen (supervisord's XML-RPC is not available)"
    };
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("updated {} · {source}", When::new(at).slack)}]
    }));
    Card::summary(&summary_raw, bar, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, state: State) -> BoardLine {
        BoardLine {
            name: name.into(),
            state,
            expected: None,
            since: None,
        }
    }

    #[test]
    fn failing_processes_come_first_and_the_summary_counts_each_state() {
        let mut lines: Vec<BoardLine> = (0..12)
            .map(|i| line(&format!("api-{i:02}"), State::Running))
            .collect();
        lines.push(line("worker", State::Fatal));
        lines.push(line("<!channel>", State::Stopped));
        let card = board("web-1", &lines, true, Utc::now());
        assert_eq!(card.text, "web-1: 1 FATAL, 12 running, 1 STOPPED");
        let json = card.blocks.to_string();
        assert!(json.contains("🖥 web-1: 1 FATAL, 12 running, 1 STOPPED"));
        let first = card.blocks[1]["text"]["text"].as_str().unwrap();
        assert!(first.starts_with("🔴 *worker* FATAL"), "{first}");
        assert!(first.contains("&lt;!channel&gt;") && !first.contains("<!channel>"));
        assert_eq!(card.color, color(State::Fatal, None));
        assert!(crate::card::check_limits(&card.to_message_json()).is_ok());
    }

    #[test]
    fn a_huge_host_stays_within_limits_and_counts_what_it_cannot_list() {
        let lines: Vec<BoardLine> = (0..400)
            .map(|i| line(&format!("{}-{i}", "x".repeat(90)), State::Running))
            .collect();
        let card = board("web-1", &lines, false, Utc::now());
        assert!(
            crate::card::check_limits(&card.to_message_json()).is_ok(),
            "{:?}",
            crate::card::check_limits(&card.to_message_json())
        );
        let json = card.blocks.to_string();
        let listed = json.matches("* RUNNING").count();
        assert!(listed > 20, "{listed}");
        assert!(
            json.contains(&format!("… and {} more", 400 - listed)),
            "{json}"
        );
        assert_eq!(card.color, color(State::Running, None));
    }
}
