//! A program's card across the fleet (`thread_by = "program"`): one parent for a
//! program however many hosts run it. Its header and colour show the worst state
//! across the hosts and count them — `api — FATAL on 3 of 20 hosts · 17 RUNNING`;
//! it names the failing hosts (the first few, then "and N more") and since when,
//! counts silent and removed hosts apart (never as RUNNING), and gives the trail of
//! the fleet's state. At most six lines, like a host's parent. Pure: values in, a
//! card out.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::limits::HEADER_MAX;
use super::text::{fit_escaped, fit_plain, sanitize_line};
use super::when::When;
use super::{color, emoji, trail, Card};
use crate::supervisord::event::{failing, State};

/// Failing hosts named before "and N more".
const NAMED: usize = 5;

/// One host's part of the program, as its card counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPart {
    /// The host reports the program in this state.
    State {
        state: State,
        expected: Option<bool>,
        since: Option<DateTime<Utc>>,
    },
    /// The host is not heard of: its last known state is not counted.
    Silent,
    /// The host's supervisord no longer has the program.
    Removed,
}

/// What the card is drawn from.
#[derive(Debug, Clone)]
pub struct FleetCardInput<'a> {
    /// `group:process`, or `process` when they match.
    pub name: &'a str,
    /// Each host's part, by host name.
    pub hosts: &'a [(String, HostPart)],
    /// The fleet's state over time (the worst state across hosts), oldest first.
    pub trail: &'a [State],
    pub environment: Option<&'a str>,
}

impl HostPart {
    fn failing(&self) -> bool {
        matches!(self, HostPart::State { state, expected, .. } if failing(*state, *expected))
    }

    /// Worst first: failing (FATAL, EXITED, BACKOFF, UNKNOWN), then changing, then
    /// stopped, then done, then RUNNING.
    fn rank(&self) -> u8 {
        match self {
            HostPart::State { state, expected, .. } => match state {
                State::Fatal => 0,
                State::Exited if *expected != Some(true) => 1,
                State::Backoff => 2,
                State::Unknown => 3,
                State::Starting => 4,
                State::Stopping => 5,
                State::Stopped => 6,
                State::Exited => 7,
                State::Removed => 9,
                State::Running => 8,
            },
            _ => 10,
        }
    }
}

/// The worst state across the hosts heard of (`None`: none is).
pub fn worst(hosts: &[(String, HostPart)]) -> Option<(State, Option<bool>)> {
    hosts
        .iter()
        .map(|(_, p)| p)
        .filter(|p| matches!(p, HostPart::State { .. }))
        .min_by_key(|p| p.rank())
        .and_then(|p| match p {
            HostPart::State { state, expected, .. } => Some((*state, *expected)),
            _ => None,
        })
}

fn label(state: State, expected: Option<bool>) -> String {
    match (state, expected) {
        (State::Exited, Some(true)) => "finished".into(),
        (s, _) => s.as_str().into(),
    }
}

/// `api — FATAL on 3 of 20 hosts · 17 RUNNING · 1 silent`: the header's words (raw).
pub fn headline(input: &FleetCardInput<'_>) -> String {
    let total = input.hosts.len();
    let name = sanitize_line(input.name);
    let Some((state, expected)) = worst(input.hosts) else {
        return format!("{name} — silent on {total} host{}", if total == 1 { "" } else { "s" });
    };
    let mut counts: Vec<(u8, String, usize)> = Vec::new();
    for (_, p) in input.hosts {
        let (rank, word) = match p {
            HostPart::State { state, expected, .. } => (p.rank(), label(*state, *expected)),
            HostPart::Silent => (20, "silent".to_string()),
            HostPart::Removed => (21, "removed".to_string()),
        };
        match counts.iter_mut().find(|(_, w, _)| *w == word) {
            Some((_, _, c)) => *c += 1,
            None => counts.push((rank, word, 1)),
        }
    }
    counts.sort_by_key(|(r, _, _)| *r);
    let worst_word = label(state, expected);
    let on = counts.iter().find(|(_, w, _)| *w == worst_word).map_or(0, |(_, _, c)| *c);
    let mut out = if on == total {
        format!("{name} — {worst_word} on {} host{}", total, if total == 1 { "" } else { "s" })
    } else {
        format!("{name} — {worst_word} on {on} of {total} hosts")
    };
    for (_, w, c) in counts.iter().filter(|(_, w, _)| *w != worst_word) {
        out.push_str(&format!(" · {c} {w}"));
    }
    out
}

/// The card.
pub fn fleet_card(input: &FleetCardInput<'_>) -> Card {
    let head = headline(input);
    let (bar, icon) = match worst(input.hosts) {
        Some((s, e)) => (color(s, e), emoji(s, e)),
        None => (color(State::Unknown, None), "⚪"),
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": fit_plain(&format!("{icon} {head}"), HEADER_MAX), "emoji": true}
    })];
    let mut failing_hosts: Vec<(&String, &HostPart)> = input.hosts.iter().filter(|(_, p)| p.failing()).map(|(h, p)| (h, p)).collect();
    failing_hosts.sort_by(|a, b| a.1.rank().cmp(&b.1.rank()).then(a.0.cmp(b.0)));
    let mut lines = Vec::new();
    if !failing_hosts.is_empty() {
        let named: Vec<String> = failing_hosts
            .iter()
            .take(NAMED)
            .map(|(h, _)| format!("*{}*", fit_escaped(&sanitize_line(h), 60)))
            .collect();
        let more = failing_hosts.len().saturating_sub(NAMED);
        let since = failing_hosts
            .iter()
            .filter_map(|(_, p)| match p {
                HostPart::State { since, .. } => *since,
                _ => None,
            })
            .min()
            .map(|t| format!(" · since {}", When::new(t).slack))
            .unwrap_or_default();
        lines.push(format!(
            "Failing on {}{}{since}",
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    let apart: Vec<String> = input
        .hosts
        .iter()
        .filter(|(_, p)| matches!(p, HostPart::Silent | HostPart::Removed))
        .take(NAMED)
        .map(|(h, p)| {
            format!(
                "*{}* {}",
                fit_escaped(&sanitize_line(h), 60),
                if *p == HostPart::Silent { "silent" } else { "removed" }
            )
        })
        .collect();
    if !apart.is_empty() {
        lines.push(format!("Not counted: {}", apart.join(", ")));
    }
    if !lines.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}));
    }
    let trail_text = trail(input.trail);
    let mut context = vec![];
    if !trail_text.is_empty() {
        context.push(json!({"type": "mrkdwn", "text": fit_escaped(&trail_text, 1500)}));
    }
    let mut about = format!("{} across the fleet", fit_escaped(&sanitize_line(input.name), 100));
    if let Some(env) = input.environment {
        about.push_str(&format!(" · {}", fit_escaped(&sanitize_line(env), 60)));
    }
    context.push(json!({"type": "mrkdwn", "text": about}));
    blocks.push(json!({"type": "context", "elements": context}));
    Card::summary(&format!("{icon} {head}"), bar, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(state: State) -> HostPart {
        HostPart::State {
            state,
            expected: None,
            since: Some(Utc::now()),
        }
    }

    #[test]
    fn a_bad_deploy_is_counted_named_and_coloured_by_its_worst_host() {
        let mut hosts: Vec<(String, HostPart)> = (1..=20).map(|i| (format!("web-{i:02}"), part(State::Running))).collect();
        for i in [2, 5, 9] {
            hosts[i].1 = part(State::Fatal);
        }
        let input = FleetCardInput {
            name: "api",
            hosts: &hosts,
            trail: &[State::Running, State::Fatal],
            environment: None,
        };
        assert_eq!(headline(&input), "api — FATAL on 3 of 20 hosts · 17 RUNNING");
        let card = fleet_card(&input);
        assert_eq!(card.color, color(State::Fatal, None));
        let body = card.blocks[1]["text"]["text"].as_str().unwrap();
        assert!(body.starts_with("Failing on *web-03*, *web-06*, *web-10* · since"), "{body}");
        assert!(crate::card::check_limits(&card.to_message_json()).is_ok());
        assert!(card.blocks.as_array().unwrap().len() <= 6);
    }

    #[test]
    fn green_only_when_every_host_runs_and_silent_or_removed_hosts_are_counted_apart() {
        let hosts = vec![
            ("a".to_string(), part(State::Running)),
            ("b".to_string(), part(State::Running)),
            ("c".to_string(), HostPart::Silent),
            ("<!channel>".to_string(), HostPart::Removed),
        ];
        let input = FleetCardInput {
            name: "api",
            hosts: &hosts,
            trail: &[],
            environment: Some("prod"),
        };
        assert_eq!(headline(&input), "api — RUNNING on 2 of 4 hosts · 1 silent · 1 removed");
        let card = fleet_card(&input);
        assert_eq!(card.color, color(State::Running, None));
        let json = card.blocks.to_string();
        assert!(json.contains("&lt;!channel&gt;* removed") && !json.contains("<!channel>"), "{json}");
        let all_up = vec![("a".to_string(), part(State::Running)), ("b".to_string(), part(State::Running))];
        let input = FleetCardInput { name: "api", hosts: &all_up, trail: &[], environment: None };
        assert_eq!(headline(&input), "api — RUNNING on 2 hosts");
    }

    #[test]
    fn many_failing_hosts_name_the_first_few_then_count() {
        let hosts: Vec<(String, HostPart)> = (0..30).map(|i| (format!("h{i:02}"), part(State::Backoff))).collect();
        let card = fleet_card(&FleetCardInput { name: "worker", hosts: &hosts, trail: &[], environment: None });
        let body = card.blocks[1]["text"]["text"].as_str().unwrap();
        assert!(body.contains("*h04* and 25 more"), "{body}");
    }
}
