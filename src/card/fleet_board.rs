//! The fleet's board: one message for every host sharing the fleet database, under
//! a one-line summary (`fleet: 12 hosts, 230 running, 3 FATAL, 1 silent`): the
//! failing processes first, each with its host, then one line per host with its
//! counts. A host not heard of for `silent_after` is **silent since** its last
//! heartbeat, and its processes are shown as last known, apart from the counts.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::board::{summary, BoardLine};
use super::limits::HEADER_MAX;
use super::text::{fit_escaped, fit_plain, sanitize_line};
use super::when::When;
use super::{color, emoji, Card};
use crate::supervisord::event::State;

/// One host on the fleet board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHost {
    pub host: String,
    /// Since when it is silent (its last heartbeat); `None`: it is heard of.
    pub silent_since: Option<DateTime<Utc>>,
    /// Its processes, as it last reported them.
    pub lines: Vec<BoardLine>,
}


fn failing(l: &BoardLine) -> bool {
    crate::supervisord::event::failing(l.state, l.expected)
}

/// `fleet: 12 hosts, 230 running, 3 FATAL, 1 silent` (the fleet's name when it is
/// not `default`): the processes of the hosts heard of, and the silent hosts.
pub fn fleet_summary(fleet: &str, hosts: &[FleetHost]) -> String {
    let live: Vec<BoardLine> = hosts
        .iter()
        .filter(|h| h.silent_since.is_none())
        .flat_map(|h| h.lines.iter().cloned())
        .collect();
    let counts = summary("", &live);
    let counts = counts.trim_start_matches(": ");
    let silent = hosts.iter().filter(|h| h.silent_since.is_some()).count();
    let name = if fleet == crate::config::fleet::DEFAULT_FLEET_NAME {
        "fleet".to_string()
    } else {
        format!("fleet {}", sanitize_line(fleet))
    };
    let mut parts = vec![format!(
        "{} host{}",
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" }
    )];
    if counts != "no processes" {
        // Running first, then what is failing or otherwise: `230 running, 3 FATAL`.
        let (running, rest): (Vec<&str>, Vec<&str>) =
            counts.split(", ").partition(|c| c.ends_with(" running"));
        parts.extend(running.into_iter().chain(rest).map(str::to_string));
    }
    if silent > 0 {
        parts.push(format!("{silent} silent"));
    }
    format!("{name}: {}", parts.join(", "))
}

/// The fleet board card. `at`: when it was made.
pub fn fleet_board(fleet: &str, hosts: &[FleetHost], at: DateTime<Utc>) -> Card {
    let summary_raw = fleet_summary(fleet, hosts);
    let any_silent = hosts.iter().any(|h| h.silent_since.is_some());
    let mut failing_lines: Vec<(&str, &BoardLine)> = hosts
        .iter()
        .filter(|h| h.silent_since.is_none())
        .flat_map(|h| h.lines.iter().filter(|l| failing(l)).map(move |l| (h.host.as_str(), l)))
        .collect();
    failing_lines.sort_by(|a, b| a.1.state.cmp(&b.1.state).reverse().then(a.1.name.cmp(&b.1.name)).then(a.0.cmp(b.0)));
    let bar = if !failing_lines.is_empty() {
        color(State::Fatal, None)
    } else if any_silent {
        color(State::Backoff, None)
    } else if hosts.iter().all(|h| h.lines.iter().all(|l| l.state == State::Running)) {
        color(State::Running, None)
    } else {
        color(State::Stopped, None)
    };
    let mut lines: Vec<String> = Vec::new();
    for (host, l) in &failing_lines {
        let since = l
            .since
            .map(|t| format!(" since {}", When::new(t).slack))
            .unwrap_or_default();
        lines.push(format!(
            "{} *{}* {} on *{}*{since}",
            emoji(l.state, l.expected),
            fit_escaped(&sanitize_line(&l.name), 100),
            l.state,
            fit_escaped(&sanitize_line(host), 100)
        ));
    }
    let mut sorted: Vec<&FleetHost> = hosts.iter().collect();
    sorted.sort_by(|a, b| {
        b.silent_since
            .is_some()
            .cmp(&a.silent_since.is_some())
            .then(a.host.cmp(&b.host))
    });
    for h in sorted {
        let host = fit_escaped(&sanitize_line(&h.host), 100);
        let counts = summary("", &h.lines);
        let counts = fit_escaped(counts.trim_start_matches(": "), 300);
        lines.push(match h.silent_since {
            Some(t) => format!(
                "⚪ *{host}* silent since {} · last known: {counts}",
                When::new(t).slack
            ),
            None if h.lines.iter().any(failing) => format!("🖥 *{host}*: {counts}"),
            None => format!("🖥 {host}: {counts}"),
        });
    }
    let sections = super::board::sections_of(lines, "more lines");
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": fit_plain(&format!("🛰 {summary_raw}"), HEADER_MAX), "emoji": true}
    })];
    for s in sections.into_iter().filter(|s| !s.is_empty()) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": s}}));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("updated {} · as each host last reported", When::new(at).slack)}]
    }));
    Card::summary(&summary_raw, bar, blocks)
}

/// The line said in the board's thread when a host goes silent.
pub fn went_silent(host: &str, last_seen: DateTime<Utc>) -> Card {
    note(format!(
        "⚪ *{}* is silent since {}: no heartbeat from its listener (the host, its supervisord or the listener is down, or it cannot reach the fleet database)",
        fit_escaped(&sanitize_line(host), 100),
        When::new(last_seen).slack
    ))
}

/// The line said in the board's thread, once, when a silent host is heard of again.
pub fn back_again(host: &str, silent_since: DateTime<Utc>) -> Card {
    note(format!(
        "🖥 *{}* is back: heard of again after being silent since {}",
        fit_escaped(&sanitize_line(host), 100),
        When::new(silent_since).slack
    ))
}

fn note(text: String) -> Card {
    Card::plain(text, "")
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

    fn host(name: &str, silent: bool, lines: Vec<BoardLine>) -> FleetHost {
        FleetHost {
            host: name.into(),
            silent_since: silent.then(Utc::now),
            lines,
        }
    }

    #[test]
    fn the_summary_counts_hosts_processes_and_silent_hosts_and_failing_ones_come_first_with_their_host() {
        let mut hosts: Vec<FleetHost> = (1..=11)
            .map(|i| host(&format!("web-{i:02}"), false, (0..20).map(|p| line(&format!("p{p}"), State::Running)).collect()))
            .collect();
        hosts[3].lines.push(line("api", State::Fatal));
        hosts[4].lines.push(line("api", State::Fatal));
        hosts[5].lines.push(line("api", State::Fatal));
        hosts.push(host("<!channel>", true, vec![line("db", State::Running)]));
        let card = fleet_board("default", &hosts, Utc::now());
        assert_eq!(card.text, "fleet: 12 hosts, 220 running, 3 FATAL, 1 silent");
        let body = card.blocks[1]["text"]["text"].as_str().unwrap();
        let first: Vec<&str> = body.lines().take(3).collect();
        assert!(first.iter().all(|l| l.starts_with("🔴 *api* FATAL on *web-")), "{first:?}");
        assert!(body.contains("*&lt;!channel&gt;* silent since"), "{body}");
        assert!(!body.contains("<!channel>"));
        assert_eq!(card.color, color(State::Fatal, None));
        assert!(crate::card::check_limits(&card.to_message_json()).is_ok());
        assert_eq!(fleet_summary("prod", &hosts[..1]), "fleet prod: 1 host, 20 running");
    }

    #[test]
    fn five_hundred_hosts_stay_within_limits() {
        let hosts: Vec<FleetHost> = (0..500)
            .map(|i| host(&format!("host-{i:04}"), i % 50 == 0, vec![line("api", if i % 7 == 0 { State::Fatal } else { State::Running })]))
            .collect();
        let card = fleet_board("default", &hosts, Utc::now());
        assert!(crate::card::check_limits(&card.to_message_json()).is_ok());
        assert!(card.blocks.to_string().contains("more lines"));
    }
}
