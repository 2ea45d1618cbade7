//! Reading the end of a log: a window of the last bytes (shifted when it starts
//! inside a multi-byte character, which supervisord answers with HTTP 500), cut to
//! whole lines and a character budget. For crash context and Show stderr.

use super::{Client, Error, Fault, LogChannel};

impl Client {
    /// The last `lines` lines (at most `chars` characters) of a process log, or why
    /// not in words an operator can act on (no file yet, not UTF-8, supervisord's
    /// fault); `None`: the log is empty. For crash context and Show stderr.
    pub async fn last_lines(
        &self,
        channel: LogChannel,
        name: &str,
        lines: usize,
        chars: usize,
    ) -> Result<Option<String>, String> {
        let window = i32::try_from(chars.max(1).saturating_mul(4)).unwrap_or(i32::MAX);
        match self.read_window(Some((channel, name)), window).await {
            Ok((text, starts_mid_file)) => {
                let tail = cut_tail(&text, starts_mid_file, lines, chars);
                Ok((!tail.is_empty()).then_some(tail))
            }
            Err(Error::Fault {
                fault: Fault::NoFile,
                ..
            }) => Err(format!(
                "the {} log file does not exist (yet)",
                channel.as_str()
            )),
            Err(Error::ServerError) => Err(format!(
                "{} log tail unreadable (not UTF-8 at the window start, or the log holds non-UTF-8 bytes)",
                channel.as_str()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The last `window` bytes of a process log (`Some`) or of supervisord's own log
    /// (`None`), and whether they start mid-file. A window supervisord cannot decode
    /// (HTTP 500: it starts inside a multi-byte character, or the log holds non-UTF-8
    /// bytes) is retried starting 1, 2 and 3 bytes later — one of those starts on a
    /// character boundary, since a character is at most 4 bytes — then given up on
    /// with [`Error::ServerError`].
    pub async fn read_window(
        &self,
        log: Option<(LogChannel, &str)>,
        window: i32,
    ) -> Result<(String, bool), Error> {
        for shift in 0..=3 {
            let bytes = window - shift;
            let read = match log {
                Some((channel, name)) => {
                    self.read_process_log(channel, name, -bytes, 0).await
                }
                None => self.read_main_log(-bytes, 0).await,
            };
            match read {
                // Fewer bytes than asked: the window began at the start of the file.
                Ok(text) => {
                    let starts_mid_file = text.len() >= bytes as usize;
                    return Ok((text, starts_mid_file));
                }
                Err(Error::ServerError) => {
                    tracing::debug!(shift, "log window not UTF-8, shifting it");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::ServerError)
    }
}

/// The end of a log window, cut for a card: at most `max_lines` lines and at most
/// `max_chars` characters, cut at a character boundary. When the window does not
/// begin at the start of the file (`starts_mid_file`) its first line is partial and is
/// dropped, unless it is the only line. Trailing blank lines are dropped.
pub fn cut_tail(text: &str, starts_mid_file: bool, max_lines: usize, max_chars: usize) -> String {
    let mut s = text.trim_end_matches(['\n', '\r']);
    if starts_mid_file {
        if let Some(i) = s.find('\n') {
            s = &s[i + 1..];
        }
    }
    // The last `max_lines` lines.
    if max_lines == 0 {
        return String::new();
    }
    if let Some((i, _)) = s.rmatch_indices('\n').nth(max_lines - 1) {
        s = &s[i + 1..];
    }
    // The last `max_chars` characters, starting on a line when one fits whole.
    let count = s.chars().count();
    if count > max_chars {
        let skip = count - max_chars;
        let start = s.char_indices().nth(skip).map_or(s.len(), |(i, _)| i);
        let cut = &s[start..];
        s = match cut.find('\n') {
            Some(i) if i + 1 < cut.len() && !s[..start].ends_with('\n') => &cut[i + 1..],
            _ => cut,
        };
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_drops_the_partial_first_line_of_a_mid_file_window() {
        assert_eq!(
            cut_tail("ial line\nfull one\nlast\n", true, 20, 2000),
            "full one\nlast"
        );
        assert_eq!(
            cut_tail("first\nsecond\n", false, 20, 2000),
            "first\nsecond"
        );
        // a single long line is kept even when it began mid-file
        assert_eq!(
            cut_tail("only part of a line", true, 20, 2000),
            "only part of a line"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = cut_tail(&text, false, 3, 2000);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }

    #[test]
    fn tail_keeps_the_last_characters_at_a_boundary_and_whole_lines_when_possible() {
        // 10 characters, multibyte: the cut never splits a character
        assert_eq!(cut_tail("☃☃☃☃☃☃☃☃☃☃☃☃", false, 20, 10), "☃".repeat(10));
        // a cut inside a line drops that partial line when a whole one remains
        assert_eq!(cut_tail("aaaaaaaaaa\nbbb\n", false, 20, 6), "bbb");
        // a cut right after a newline keeps the whole next line
        assert_eq!(cut_tail("aaaa\nbbb\ncc", false, 20, 6), "bbb\ncc");
    }
}
