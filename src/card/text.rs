//! Text helpers for cards: mrkdwn escaping, sanitising untrusted text, and cutting text
//! to a size budget without breaking a character or an `&amp;`-style entity.
//!
//! Sizes are measured in *cost* units: the number of UTF-16 code units the text takes
//! once serialised as a JSON string. That is never less than the character count Slack
//! checks against its per-block limits, and it is exactly what the text adds to the
//! whole card's JSON, so one budget keeps both kinds of limit.

/// The mark shown where text was cut.
pub const ELLIPSIS: &str = "…";

/// Escapes `&`, `<`, `>` for mrkdwn (only these three: Slack un-escapes exactly those).
pub fn escape_mrkdwn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

/// The cost of one character as it ends up in the card's JSON (see the module doc).
pub fn char_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf16(),
    }
}

/// The cost of a string (see the module doc).
pub fn cost(s: &str) -> usize {
    s.chars().map(char_cost).sum()
}

/// Length as Slack's limits count it, conservatively: UTF-16 code units (an emoji
/// outside the BMP counts as two, so a text that passes here passes Slack's own count).
pub fn slack_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Bidirectional override and isolate controls. A name containing them can make the
/// rest of a line display in reverse ("Trojan Source"), so they never reach a card.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Makes an untrusted one-line value (host, group, process, environment, spawn error)
/// safe to display: control characters (newlines included) and bidi overrides become
/// U+FFFD, so a name cannot break a line, a header or the reading order of a card.
pub fn sanitize_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Makes an untrusted log excerpt safe to show in a code block: ANSI escape sequences
/// (colours from the process's own output) are removed, `\r\n` becomes `\n`, other
/// control characters and bidi overrides become U+FFFD, and a zero-width space is put
/// between adjacent backticks so the log cannot close the card's ``` block early.
pub fn sanitize_log(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params... final byte in @..~ ; other ESC x: drop both.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\t' => out.push(c),
            '`' => {
                if out.ends_with('`') {
                    out.push('\u{200B}');
                }
                out.push('`');
            }
            c if c.is_control() || is_bidi_control(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `raw` for mrkdwn and keeps its beginning so that the result costs at most
/// `max`; when cut, the result ends with `…`. Never splits a character or an entity.
pub fn fit_escaped(raw: &str, max: usize) -> String {
    fit_head(raw, max, true)
}

/// Like [`fit_escaped`] without escaping: for plain_text, which shows raw text.
pub fn fit_plain(raw: &str, max: usize) -> String {
    fit_head(raw, max, false)
}

fn piece(c: char, escape: bool) -> (String, usize) {
    let mut s = String::new();
    if escape {
        push_escaped(&mut s, c);
    } else {
        s.push(c);
    }
    let n = cost(&s);
    (s, n)
}

fn fit_head(raw: &str, max: usize, escape: bool) -> String {
    let full: usize = raw.chars().map(|c| piece(c, escape).1).sum();
    if full <= max {
        return if escape {
            escape_mrkdwn(raw)
        } else {
            raw.to_string()
        };
    }
    let room = max.saturating_sub(cost(ELLIPSIS));
    let mut out = String::new();
    let mut used = 0;
    for c in raw.chars() {
        let (p, n) = piece(c, escape);
        if used + n > room {
            break;
        }
        used += n;
        out.push_str(&p);
    }
    if max >= cost(ELLIPSIS) {
        out.push_str(ELLIPSIS);
    }
    out
}

/// Escapes `raw` for mrkdwn and keeps its END so that the result costs at most `max`;
/// when cut, the result starts with `…`. For log tails, whose last lines matter most.
pub fn fit_escaped_tail(raw: &str, max: usize) -> String {
    let full: usize = raw.chars().map(|c| piece(c, true).1).sum();
    if full <= max {
        return escape_mrkdwn(raw);
    }
    let room = max.saturating_sub(cost(ELLIPSIS));
    let mut pieces: Vec<String> = Vec::new();
    let mut used = 0;
    for c in raw.chars().rev() {
        let (p, n) = piece(c, true);
        if used + n > room {
            break;
        }
        used += n;
        pieces.push(p);
    }
    let mut out = String::from(if max >= cost(ELLIPSIS) { ELLIPSIS } else { "" });
    for p in pieces.iter().rev() {
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_only_the_three_control_characters() {
        assert_eq!(
            escape_mrkdwn("<!channel> & *b* `c` > _i_"),
            "&lt;!channel&gt; &amp; *b* `c` &gt; _i_"
        );
        assert_eq!(escape_mrkdwn("&amp;"), "&amp;amp;");
    }

    #[test]
    fn fit_never_cuts_inside_an_entity() {
        let raw = "<".repeat(100);
        for max in 0..60 {
            let s = fit_escaped(&raw, max);
            assert!(cost(&s) <= max, "{max}: {s}");
            let body = s.trim_end_matches(ELLIPSIS);
            assert_eq!(body.len() % 4, 0, "{max}: {s}");
            assert!(body.chars().all(|c| "&lt;".contains(c)));
        }
    }

    #[test]
    fn fit_tail_keeps_the_end() {
        let s = fit_escaped_tail("first line\nsecond line\nthe error <x>", 20);
        assert!(s.starts_with(ELLIPSIS), "{s}");
        assert!(s.ends_with("error &lt;x&gt;"), "{s}");
        assert!(cost(&s) <= 20);
    }

    #[test]
    fn fit_counts_astral_emoji_as_two() {
        let s = fit_plain(&"🔥".repeat(10), 9);
        assert_eq!(s, "🔥🔥🔥🔥…");
    }

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(fit_escaped("a<b", 10), "a&lt;b");
        assert_eq!(fit_plain("a<b", 3), "a<b");
    }

    #[test]
    fn log_sanitising_strips_ansi_and_defuses_fences() {
        assert_eq!(
            sanitize_log("\u{1b}[31merror\u{1b}[0m\r\n```x"),
            "error\n`\u{200B}`\u{200B}`x"
        );
        assert_eq!(sanitize_log("a\u{202E}b\u{7}"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn line_sanitising_removes_newlines() {
        assert_eq!(sanitize_line("a\nb\u{2066}c"), "a\u{FFFD}b\u{FFFD}c");
    }
}
