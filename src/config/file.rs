//! The settings file as the operator writes it: the schema ([`FileSettings`], with
//! every value's position kept), parsing, and errors that name the key and the line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;


pub use super::schema::FileSettings;

/// A settings file: where it came from, its text, and what it says.
#[derive(Debug, Default)]
pub struct SettingsFile {
    /// `None` for settings that came from no file (tests, no file present).
    pub path: Option<PathBuf>,
    pub text: String,
    pub parsed: FileSettings,
}

impl SettingsFile {
    /// No file: every setting from the environment or its default.
    pub fn none() -> Self {
        Self::default()
    }

    /// Where a span of the file is, for error messages.
    pub fn at(&self, span: Range<usize>) -> Location {
        Location {
            path: self.path.clone(),
            line: line_of(&self.text, span.start),
        }
    }

    /// An error about a key of the file, at the line of `span`.
    pub fn invalid(
        &self,
        key: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            at: Some(self.at(span)),
            message: message.into(),
        }
    }
}

/// A line of a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: Option<PathBuf>,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "settings file {}, line {}", p.display(), self.line),
            None => write!(f, "settings, line {}", self.line),
        }
    }
}

/// The 1-based line that holds byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A setting that cannot be used. The program must not start with one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{at}, column {column}: {key}: {message}", key = key.as_deref().unwrap_or("(syntax)"))]
    Parse {
        at: Location,
        column: usize,
        /// The key involved, as a dotted path (`route[2].channel`), when known.
        key: Option<String>,
        message: String,
    },
    /// A value that parsed but makes no sense (a bad duration, pattern, mention...).
    /// `key` is the settings key (`route[2].process`) or the environment variable.
    #[error("{}{key}: {message}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Invalid {
        key: String,
        at: Option<Location>,
        message: String,
    },
}

impl ConfigError {
    /// The key (or environment variable) the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
    /// The 1-based line in the settings file, when the error is about the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { at, .. } => Some(at.line),
            ConfigError::Invalid { at, .. } => at.as_ref().map(|a| a.line),
        }
    }
}

/// An error about an environment variable (or a value with no place in a file).
pub fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        at: None,
        message: message.into(),
    }
}

/// A source of environment variables (the real one, or a map in tests).
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

/// Parses a duration such as `24h`, `90s`, `1m 30s`.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| invalid(key, duration_message(text, &e)))
}

pub(super) fn duration_message(text: &str, e: &humantime::DurationError) -> String {
    format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"24h\"")
}

/// Parses the text of a settings file. `path` is only used in error messages.
pub fn parse_str(text: &str, path: Option<&Path>) -> Result<SettingsFile, ConfigError> {
    let parsed: FileSettings = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    Ok(SettingsFile {
        path: path.map(Path::to_path_buf),
        text: text.to_string(),
        parsed,
    })
}

/// Turns toml's error into one that names the key and the line. toml gives the span
/// and a message; the key is read from the message (unknown fields) or from the line
/// the span points at, inside the table that holds it.
fn parse_error(text: &str, path: Option<&Path>, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let line = line_of(text, span.start);
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let column = text[line_start..span.start.min(text.len())].chars().count() + 1;
    let message = e.message().trim().replace('\n', "; ");
    let key = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
        .or_else(|| key_on_line(text.lines().nth(line - 1).unwrap_or("")))
        .map(|k| match table_at(text, line) {
            Some(t) => format!("{t}.{k}"),
            None => k,
        });
    ConfigError::Parse {
        at: Location {
            path: path.map(Path::to_path_buf),
            line,
        },
        column,
        key,
        message,
    }
}

/// `key` in a line such as `key = value`.
fn key_on_line(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    (!k.is_empty() && k.chars().all(bare)).then(|| k.to_string())
}

/// The table that line `line` belongs to: `route[N]` (1-based) for the Nth
/// `[[route]]`, the name of a `[table]`, or `None` at the top level.
fn table_at(text: &str, line: usize) -> Option<String> {
    let mut table = None;
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for l in text.lines().take(line) {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = match arrays.iter_mut().find(|(a, _)| *a == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((name.clone(), 1));
                    1
                }
            };
            table = Some(format!("{name}[{n}]"));
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = Some(name.trim().to_string());
        }
    }
    table
}

/// Reads and parses a settings file.
pub fn read_file(path: &Path) -> Result<SettingsFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, Some(path))
}
