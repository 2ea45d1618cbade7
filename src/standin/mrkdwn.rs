//! Slack `mrkdwn` to HTML, for the preview page: enough of Slack's rendering to judge a
//! card by eye (`*bold*`, `_italic_`, `~strike~`, `` `code` ``, ``` fences, links,
//! mentions (`<@U…>` by the user's name when known), `<!date^…>`), and safe above all: every piece of text is HTML-escaped, so
//! whatever a process name or log line holds, nothing reaches the page as markup.

use chrono::{DateTime, Local, TimeZone};

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes Slack's own escaping (`&amp;`, `&lt;`, `&gt;`, the only three) to get the
/// text a reader sees.
pub fn decode_slack(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Renders `plain_text` as HTML: decoded, escaped, line breaks kept.
pub fn plain_to_html(text: &str) -> String {
    escape_html(&decode_slack(text)).replace('\n', "<br>")
}

/// Renders `mrkdwn` as HTML; `users` (id, name) name the users `<@U…>` mentions.
pub fn mrkdwn_to_html(text: &str, users: &[(String, String)]) -> String {
    let mut out = String::new();
    // Code fences first: nothing inside them is formatting.
    for (i, part) in text.split("```").enumerate() {
        if i % 2 == 1 {
            let code = part.strip_prefix('\n').unwrap_or(part);
            out.push_str("<pre>");
            out.push_str(&escape_html(&decode_slack(code)));
            out.push_str("</pre>");
        } else {
            out.push_str(&inline(part, users));
        }
    }
    out
}

/// Renders a stretch of mrkdwn outside code fences: `<…>` control sequences, inline
/// code, then emphasis, line by line.
fn inline(text: &str, users: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&formatted(&rest[..open]));
        match rest[open..].find('>') {
            Some(close) => {
                out.push_str(&control(&rest[open + 1..open + close], users));
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&formatted(&rest[open..]));
                rest = "";
            }
        }
    }
    out.push_str(&formatted(rest));
    out
}

/// Renders one `<…>` control sequence (the part between the angle brackets).
fn control(inner: &str, users: &[(String, String)]) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    let label_html = |fallback: &str| escape_html(&decode_slack(label.unwrap_or(fallback)));
    if let Some(date) = target.strip_prefix("!date^") {
        let mut parts = date.splitn(3, '^');
        let epoch = parts.next().and_then(|e| e.parse::<i64>().ok());
        let format = parts.next().unwrap_or("");
        return match epoch.and_then(|e| Local.timestamp_opt(e, 0).single()) {
            Some(when) => format!(
                "<time title=\"{}\">{}</time>",
                escape_html(&when.to_rfc3339()),
                escape_html(&format_date(&decode_slack(format), when, Local::now()))
            ),
            None => label_html(""),
        };
    }
    if let Some(special) = target.strip_prefix('!') {
        let name = special.split('^').next().unwrap_or(special);
        return format!(
            "<span class=\"mention\">@{}</span>",
            escape_html(&decode_slack(name))
        );
    }
    if let Some(user) = target.strip_prefix('@') {
        // Slack shows the user's current name, whatever the label says.
        let name = match users.iter().find(|(id, _)| id == user) {
            Some((_, name)) => escape_html(name),
            None => label_html(user),
        };
        return format!("<span class=\"mention\">@{name}</span>");
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!("<span class=\"mention\">#{}</span>", label_html(channel));
    }
    let url = decode_slack(target);
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
    {
        return format!(
            "<a href=\"{}\" rel=\"noreferrer noopener\" target=\"_blank\">{}</a>",
            escape_html(&url),
            label_html(target)
        );
    }
    // Not a control sequence Slack knows: show it as the text it is.
    escape_html(&format!("<{}>", decode_slack(inner)))
}

/// Fills Slack's date tokens (`{date_short_pretty}`, `{time}`, ...) in the reader's
/// (here: the machine's) time zone.
fn format_date(format: &str, when: DateTime<Local>, now: DateTime<Local>) -> String {
    let day = when.date_naive();
    let pretty = |fallback: String| {
        if day == now.date_naive() {
            "Today".to_string()
        } else if Some(day) == now.date_naive().pred_opt() {
            "Yesterday".to_string()
        } else {
            fallback
        }
    };
    let ago = {
        let secs = (now - when).num_seconds();
        match secs {
            s if s < 60 => "just now".to_string(),
            s if s < 3600 => format!("{} minutes ago", s / 60),
            s if s < 86_400 => format!("{} hours ago", s / 3600),
            s => format!("{} days ago", s / 86_400),
        }
    };
    let short = when.format("%b %-d, %Y").to_string();
    let long = when.format("%A, %B %-d, %Y").to_string();
    format
        .replace("{date_num}", &when.format("%Y-%m-%d").to_string())
        .replace("{date_short_pretty}", &pretty(short.clone()))
        .replace("{date_long_pretty}", &pretty(long.clone()))
        .replace(
            "{date_pretty}",
            &pretty(when.format("%B %-d, %Y").to_string()),
        )
        .replace("{date_short}", &short)
        .replace("{date_long}", &long)
        .replace("{date}", &when.format("%B %-d, %Y").to_string())
        .replace("{time_secs}", &when.format("%H:%M:%S").to_string())
        .replace("{time}", &when.format("%H:%M").to_string())
        .replace("{ago}", &ago)
}

/// Plain text with inline code and emphasis, line breaks as `<br>`.
fn formatted(text: &str) -> String {
    let mut out = String::new();
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push_str("<br>");
        }
        let parts: Vec<&str> = line.split('`').collect();
        for (i, part) in parts.iter().enumerate() {
            // Odd parts sit between two backticks, unless the last backtick is unpaired.
            let is_code = i % 2 == 1 && i < parts.len() - 1;
            if is_code {
                out.push_str("<code>");
                out.push_str(&escape_html(&decode_slack(part)));
                out.push_str("</code>");
            } else {
                if i % 2 == 1 {
                    out.push('`');
                }
                let escaped = escape_html(&decode_slack(part));
                let bold = emphasis(&escaped, '*', "b");
                let italic = emphasis(&bold, '_', "i");
                out.push_str(&emphasis(&italic, '~', "s"));
            }
        }
    }
    out
}

/// Wraps `marker`-delimited words (`*bold*`) in `<tag>`, Slack-style: the opening
/// marker starts a word, the closing one ends it. Works on already escaped text; the
/// markers never occur inside an HTML entity.
fn emphasis(text: &str, marker: char, tag: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let boundary =
        |c: Option<&char>| c.is_none_or(|c| c.is_whitespace() || "([{.,;:!?)]}\"'-".contains(*c));
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == marker && boundary(i.checked_sub(1).and_then(|p| chars.get(p))) {
            let close = (i + 2..chars.len()).find(|&j| {
                chars[j] == marker && !chars[j - 1].is_whitespace() && boundary(chars.get(j + 1))
            });
            if let Some(j) = close.filter(|_| !chars[i + 1].is_whitespace()) {
                let inner: String = chars[i + 1..j].iter().collect();
                out.push_str(&format!("<{tag}>{inner}</{tag}>"));
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders with no users known.
    fn md(text: &str) -> String {
        mrkdwn_to_html(text, &[])
    }

    #[test]
    fn mentions_show_the_users_name_when_known() {
        let users = [("U0DEMO".to_string(), "demo <b>".to_string())];
        assert_eq!(
            mrkdwn_to_html("hi <@U0DEMO> and <@U0OTHER>", &users),
            "hi <span class=\"mention\">@demo &lt;b&gt;</span> and <span class=\"mention\">@U0OTHER</span>"
        );
        assert_eq!(
            mrkdwn_to_html("<@U0OTHER|bob>", &users),
            "<span class=\"mention\">@bob</span>"
        );
    }

    #[test]
    fn emphasis_and_code_render() {
        assert_eq!(
            md("*web* is _up_ ~now~"),
            "<b>web</b> is <i>up</i> <s>now</s>"
        );
        assert_eq!(md("run `a*b*c` please"), "run <code>a*b*c</code> please");
        assert_eq!(md("```\nx < y\n```"), "<pre>x &lt; y\n</pre>");
        assert_eq!(md("2*3*4"), "2*3*4");
    }

    #[test]
    fn slack_escapes_are_decoded_then_html_escaped() {
        assert_eq!(md("a &lt;b&gt; &amp; c"), "a &lt;b&gt; &amp; c");
        assert_eq!(
            md("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert!(!md("&lt;img src=x onerror=alert(1)&gt;").contains("<img"));
    }

    #[test]
    fn links_only_for_safe_schemes() {
        assert_eq!(
            md("<https://x.test/?a=1&amp;b=2|logs>"),
            "<a href=\"https://x.test/?a=1&amp;b=2\" rel=\"noreferrer noopener\" target=\"_blank\">logs</a>"
        );
        assert!(!md("<javascript:alert(1)|x>").contains("href"));
        assert_eq!(md("<!here>"), "<span class=\"mention\">@here</span>");
    }

    #[test]
    fn dates_render_in_local_time() {
        let html = md("<!date^0^{date_num} {time_secs}|fallback>");
        let expected = Local
            .timestamp_opt(0, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        assert!(html.contains(&expected), "{html}");
        assert!(!html.contains("fallback"));
    }
}
