//! The answers of `/supervisor`, as the asker alone sees them: mrkdwn text, every
//! untrusted value (process and host names, log lines, what the asker typed)
//! sanitised and escaped, logs in a code block they cannot close, each answer
//! bounded well under Slack's limits. Pure: what is asked and of whom is
//! [`crate::interact::command`]'s.

use chrono::{DateTime, Utc};

use super::text::{escape_mrkdwn, fit_escaped, fit_escaped_tail, sanitize_line, sanitize_log};
use super::when::When;
use super::{emoji, format_duration, CrashContext};
use crate::actions::Ask;
use crate::supervisord::event::State;

/// Most characters of log lines an answer carries (a section's text is 3,000).
pub const LOG_MAX: usize = 2_800;

/// Most characters a `status` answer lists before it says how many more there are.
const STATUS_MAX: usize = 11_000;

/// One process in a `status` answer.
#[derive(Debug, Clone)]
pub struct StatusLine {
    pub host: String,
    /// As cards name it.
    pub name: String,
    pub state: State,
    pub expected: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub pid: Option<u32>,
    pub spawnerr: Option<String>,
    /// The host is silent: `Some(last heard of)`.
    pub silent: Option<Option<DateTime<Utc>>>,
}

/// An untrusted one-line value, safe in mrkdwn.
pub fn shown(s: &str) -> String {
    escape_mrkdwn(&sanitize_line(s))
}

/// What the asker typed, quoted back (cut short, never formatting).
pub fn typed(s: &str) -> String {
    format!("“{}”", fit_escaped(&sanitize_line(s).replace('`', "'"), 80))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn last_heard(at: Option<DateTime<Utc>>) -> String {
    match at {
        Some(t) => format!("last heard from {}", When::new(t).slack),
        None => "never heard from".into(),
    }
}

fn status_line(l: &StatusLine) -> String {
    let mut out = format!(
        "{} *{}* {} · {}",
        emoji(l.state, l.expected),
        l.state,
        shown(&l.name),
        shown(&l.host)
    );
    if let Some(t) = l.since {
        out.push_str(&format!(" · since {}", When::new(t).slack));
    }
    if let Some(pid) = l.pid {
        out.push_str(&format!(" · pid {pid}"));
    }
    if let Some(e) = &l.spawnerr {
        out.push_str(&format!(" · {}", fit_escaped(&sanitize_line(e), 200)));
    }
    if l.silent.is_some() {
        out.push_str(" · ⚠️ _host silent_");
    }
    out
}

/// `status`: every line given (already in order, failing first), with a header
/// counting them and the failing ones, and a line per silent host.
pub fn status(lines: &[StatusLine], pattern: Option<&str>) -> String {
    let failing = lines
        .iter()
        .filter(|l| crate::supervisord::event::failing(l.state, l.expected))
        .count();
    let mut hosts: Vec<&str> = lines.iter().map(|l| l.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let on = match hosts.as_slice() {
        [one] => format!("on {}", shown(one)),
        many => format!("on {}", plural(many.len(), "host", "hosts")),
    };
    let matching = pattern.map(|p| format!(" matching {}", typed(p))).unwrap_or_default();
    let mut out = format!(
        "*{}*{matching} {on} · {} failing",
        plural(lines.len(), "process", "processes"),
        failing
    );
    let mut used = out.len();
    for (i, l) in lines.iter().enumerate() {
        let line = status_line(l);
        if used + line.len() > STATUS_MAX {
            out.push_str(&format!(
                "\n… and {} more: narrow it with a pattern, e.g. `/supervisor status web-*`",
                lines.len() - i
            ));
            break;
        }
        used += line.len() + 1;
        out.push('\n');
        out.push_str(&line);
    }
    let mut silent: Vec<(&str, Option<DateTime<Utc>>)> = lines
        .iter()
        .filter_map(|l| l.silent.map(|at| (l.host.as_str(), at)))
        .collect();
    silent.sort_by(|a, b| a.0.cmp(b.0));
    silent.dedup_by(|a, b| a.0 == b.0);
    for (host, at) in silent {
        out.push_str(&format!(
            "\n⚠️ *{}* is silent ({}): its processes are shown as it last reported them.",
            shown(host),
            last_heard(at)
        ));
    }
    out
}

/// `status` with a pattern nothing matches.
pub fn no_match(pattern: &str, names: &[String]) -> String {
    let some: Vec<String> = names.iter().take(10).map(|n| shown(n)).collect();
    let more = names.len().saturating_sub(some.len());
    format!(
        "No process matches {} (a glob on `group:process`, the process name or the host). There are: {}{}.",
        typed(pattern),
        some.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    )
}

/// Log lines in a code block: sanitised (no fence can close it, no ANSI), escaped
/// (no mention, no link), cut to `LOG_MAX` keeping the end.
fn code_block(text: &str) -> (String, usize) {
    let body = fit_escaped_tail(&sanitize_log(text.trim_end()), LOG_MAX);
    let n = body.lines().count();
    (format!("```\n{body}\n```"), n)
}

/// `tail`: the last lines of `log` of `name` on `host`; `capped`: the asker wanted
/// more than `stderr_lines` allows.
pub fn tail(name: &str, host: &str, log: &str, lines: &Result<Option<String>, String>, capped: Option<usize>) -> String {
    let what = format!("{} on {}", shown(name), shown(host));
    let cap = capped
        .map(|n| format!(" (at most {n}: `[actions] stderr_lines`)"))
        .unwrap_or_default();
    match lines {
        Err(why) => format!("📄 The {} of {what} cannot be read: {}", shown(log), fit_escaped(&sanitize_line(why), 500)),
        Ok(None) => format!("📄 The {} of {what} is empty.", shown(log)),
        Ok(Some(text)) if text.trim().is_empty() => format!("📄 The {} of {what} is empty.", shown(log)),
        Ok(Some(text)) => {
            let (block, n) = code_block(text);
            format!("📄 Last {} of {} of {what}{cap}\n{block}", plural(n, "line", "lines"), shown(log))
        }
    }
}

/// `why`: the last crash recorded, or that there is none.
pub fn why(name: &str, host: &str, crash: Option<(DateTime<Utc>, State, Option<bool>, &CrashContext)>) -> String {
    let what = format!("{} on {}", shown(name), shown(host));
    let Some((at, state, expected, ctx)) = crash else {
        return format!(
            "No crash of {what} is recorded. The listener keeps the crash context of each process's last failure (FATAL, BACKOFF, an unexpected EXITED) when it posts that failure's reply."
        );
    };
    let mut out = format!(
        "🔍 Last crash of {what}: {} *{state}* {}",
        emoji(state, expected),
        When::new(at).slack
    );
    let mut facts = Vec::new();
    if let Some(s) = ctx.exit_status {
        facts.push(format!("exit status {s}"));
    }
    if let Some(u) = ctx.uptime_secs {
        facts.push(format!("ran {}", format_duration(u)));
    }
    if !facts.is_empty() {
        out.push_str(&format!("\n• {}", facts.join(" · ")));
    }
    if let Some(e) = &ctx.spawn_error {
        out.push_str(&format!("\n• {}", fit_escaped(&sanitize_line(e), 300)));
    }
    if let Some(u) = &ctx.unavailable {
        out.push_str(&format!("\n• _not known:_ {}", fit_escaped(&sanitize_line(u), 400)));
    }
    if let Some(t) = ctx.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        let (block, n) = code_block(t);
        let log = ctx.log_name.as_deref().unwrap_or("log");
        out.push_str(&format!("\nLast {} of {} at the time:\n{block}", plural(n, "line", "lines"), shown(log)));
    }
    out
}

/// A name that means several processes: the candidates, and how to pick one.
pub fn several(command: &str, ask: Ask, name: &str, candidates: &[(String, String)]) -> String {
    let list: Vec<String> = candidates
        .iter()
        .map(|(host, full)| format!("• {} on *{}*", shown(full), shown(host)))
        .collect();
    let (host, full) = &candidates[0];
    let by_host = candidates.iter().any(|(h, _)| h != host);
    let example = if by_host {
        format!("`{} {ask} {} {}`", shown(command), shown(name), shown(host))
    } else {
        format!("`{} {ask} {}`", shown(command), shown(full))
    };
    format!(
        "{} means {} processes:\n{}\nPick one by {}, e.g. {example}",
        typed(name),
        candidates.len(),
        list.join("\n"),
        if by_host { "adding its host" } else { "its full name" }
    )
}

/// No process of that name.
pub fn no_process(name: &str, host: Option<&str>, similar: &[String]) -> String {
    let on = host.map(|h| format!(" on {}", shown(h))).unwrap_or_default();
    let hint = if similar.is_empty() {
        "`/supervisor status` lists every process.".to_string()
    } else {
        let names: Vec<String> = similar.iter().map(|s| shown(s)).collect();
        format!("Did you mean {}?", names.join(", "))
    };
    format!("No process named {}{on}. {hint}", typed(name))
}

/// No such host.
pub fn no_host(host: &str, hosts: &[String]) -> String {
    let names: Vec<String> = hosts.iter().map(|h| shown(h)).collect();
    format!(
        "No host {} is known here; the hosts are: {}.",
        typed(host),
        if names.is_empty() { "none".into() } else { names.join(", ") }
    )
}

/// Bad input: what was wrong, and the usage.
pub fn bad_input(problem: &str, usage: &str) -> String {
    format!(":warning: {problem}\nUsage: {usage}")
}

/// The answer comes later (to the response URL).
pub fn working() -> String {
    "⏳ Working on it… the answer follows here, only for you.".to_string()
}

/// A silent host is not asked.
pub fn silent(host: &str, at: Option<DateTime<Utc>>) -> String {
    format!(
        ":no_entry: *{}* is silent ({}): nothing was asked of it rather than wait. `/supervisor status` shows its processes as it last reported them.",
        shown(host),
        last_heard(at)
    )
}

/// The host did not answer in time.
pub fn no_answer(host: &str, within: std::time::Duration) -> String {
    format!(
        ":no_entry: *{}* did not answer within {} (`[actions] timeout`).",
        shown(host),
        humantime::format_duration(within)
    )
}

/// This listener cannot ask that host.
pub fn not_here(host: &str, here: &str) -> String {
    format!(
        ":no_entry: The process is on *{}*, but this command reached the listener on *{}*, which can only ask its own supervisord. Slack hands a command to any connection of the app: give each host its own Slack app (its own command name), or run the hosts as a fleet.",
        shown(host),
        shown(here)
    )
}

/// The host could not answer.
pub fn failed(host: &str, why: &str) -> String {
    format!(":no_entry: *{}* could not answer: {}", shown(host), fit_escaped(&sanitize_line(why), 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, state: State) -> StatusLine {
        StatusLine {
            host: "web-1".into(),
            name: name.into(),
            state,
            expected: None,
            since: None,
            pid: None,
            spawnerr: None,
            silent: None,
        }
    }

    #[test]
    fn a_log_cannot_ping_or_close_its_block() {
        let text = tail("reports", "web-1", "stderr", &Ok(Some("Traceback <!channel> @here\n```\nend & <http://x|y>".into())), None);
        assert!(text.contains("&lt;!channel&gt;") && text.contains("&amp;"), "{text}");
        let body = text.split_once("```\n").unwrap().1;
        let body = body.strip_suffix("\n```").unwrap();
        assert!(!body.contains("```"), "{body}");
        assert!(!text.contains("<!") && !text.contains("<http"), "{text}");
    }

    #[test]
    fn status_names_are_escaped_and_the_list_is_bounded() {
        let mut l = line("<!channel>", State::Fatal);
        l.spawnerr = Some("bad\nline".into());
        let text = status(&[l], Some("<*>"));
        assert!(!text.contains("<!channel>") && text.contains("&lt;!channel&gt;"), "{text}");
        assert!(text.contains("“&lt;*&gt;”"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        let many: Vec<StatusLine> = (0..2000).map(|i| line(&format!("p{i}"), State::Running)).collect();
        let text = status(&many, None);
        assert!(text.len() < 12_000 && text.contains("more: narrow it"), "{}", text.len());
    }

    #[test]
    fn several_says_how_to_pick() {
        let text = several("/supervisor", Ask::Tail, "worker", &[("web-1".into(), "app:worker".into()), ("web-2".into(), "app:worker".into())]);
        assert!(text.contains("`/supervisor tail worker web-1`"), "{text}");
        let text = several("/supervisor", Ask::Why, "worker", &[("web-1".into(), "a:worker".into()), ("web-1".into(), "b:worker".into())]);
        assert!(text.contains("`/supervisor why a:worker`"), "{text}");
    }
}
