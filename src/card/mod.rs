//! Cards: Block Kit attachments rendered from events. Pure functions over values;
//! knows nothing of the network or storage.
//!
//! A card is one message: a short top-level `text` (what a phone notification shows)
//! and one attachment holding only `color`, `fallback` and `blocks` — the attachment is
//! there for its colour bar, which Block Kit alone cannot draw.
//!
//! - [`text`]: mrkdwn escaping, sanitising, cutting to a budget.
//! - [`model`]: the template context — every value escaped and cut before a template
//!   sees it, so that no template can forget to escape or break a limit by input.
//! - [`history`]: runs and cycles counted, the parent's trail, a digest's summary.
//! - [`notes`]: the notes on replies and the "settled" and "set aside" messages.
//! - [`board`]: the host's board.
//! - [`answers`]: what `/supervisor` answers, as only the asker sees it.
//! - [`limits`]: Block Kit's limits, checked on the JSON ([`check_limits`]).
//! - this module: the [`Renderer`] (built-in or user templates from `templates/`, with a
//!   fall-back to the built-in card whenever a user template fails) and [`plain_text`].

pub mod answers;
pub mod board;
pub mod controls;
pub mod fleet_board;
pub mod fleet_card;
pub mod history;
pub mod limits;
pub mod model;
pub mod notes;
pub mod text;
pub mod when;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{json, Value};

use crate::supervisord::event::{ProcessState, State};

pub use limits::check_limits;
pub use history::{compact_history, trail};
pub use model::format_duration;
pub use text::escape_mrkdwn;

/// Which of the two cards of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The thread's parent: the process's current state, colour, history trail.
    Parent,
    /// One reply in the thread: one transition, or several coalesced ones.
    Reply,
}

impl Variant {
    /// The file name of this variant's template in a templates directory.
    pub fn template_name(self) -> &'static str {
        match self {
            Variant::Parent => PARENT_TEMPLATE,
            Variant::Reply => REPLY_TEMPLATE,
        }
    }
}

/// What went wrong with a process, from supervisord's XML-RPC (crash-context issue).
/// Kept as the process's last crash (for `/supervisor why`), hence `Deserialize`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CrashContext {
    pub exit_status: Option<i64>,
    pub spawn_error: Option<String>,
    /// Seconds the process ran before this transition.
    pub uptime_secs: Option<i64>,
    /// The last lines of the log (already cut to size by the caller is NOT assumed:
    /// the card cuts it at a character boundary to fit).
    pub log_tail: Option<String>,
    /// `stderr` or `stdout` — which log the tail came from.
    pub log_name: Option<String>,
    /// Why context is missing or partial, e.g. "permission denied on supervisor.sock".
    pub unavailable: Option<String>,
}

/// Everything a parent card shows.
#[derive(Debug, Clone)]
pub struct ParentInput<'a> {
    /// The latest event of the thread (its `to` is the current state).
    pub latest: &'a ProcessState,
    /// Every state of the thread so far, oldest first, the current one last
    /// (may be long; the card compacts it into a trail such as `BACKOFF ×3`).
    pub history: &'a [State],
    /// When the thread started.
    pub since: DateTime<Utc>,
    pub environment: Option<&'a str>,
    /// Set by flood control when the process is flapping.
    pub flapping: bool,
}

/// Everything a reply card shows.
#[derive(Debug, Clone)]
pub struct ReplyInput<'a> {
    /// One transition, or several coalesced ones in order (never empty).
    pub events: &'a [ProcessState],
    pub environment: Option<&'a str>,
    /// Extra lines such as "3 events dropped by supervisord" or "recovered after FATAL".
    pub notes: &'a [String],
    pub context: Option<&'a CrashContext>,
    /// Mentions from the operator's settings (e.g. `<!subteam^S1>`), NOT escaped:
    /// they never come from event text.
    pub mentions: &'a [String],
}

/// A rendered card: the top-level `text` plus one attachment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    /// Top-level message text (phone notifications, screen readers).
    pub text: String,
    /// `#RRGGBB`
    pub color: String,
    pub fallback: String,
    /// The Block Kit blocks (a JSON array); `Value::Null` for a plain-text card.
    pub blocks: Value,
}

impl Card {
    /// A summary card (a board, a program's card across the fleet): `summary_raw`,
    /// escaped and cut to 300 characters, is both its notification text and its
    /// fallback; `bar` its colour.
    pub(crate) fn summary(summary_raw: &str, bar: &str, blocks: Vec<Value>) -> Card {
        let text = text::fit_escaped(summary_raw, 300);
        Card {
            fallback: text.clone(),
            text,
            color: bar.to_string(),
            blocks: Value::Array(blocks),
        }
    }

    /// A plain-text card (no attachment blocks): `text` is also its fallback.
    pub(crate) fn plain(text: String, color: &str) -> Card {
        Card {
            fallback: text.clone(),
            text,
            color: color.to_string(),
            blocks: Value::Null,
        }
    }

    /// `{"text": ..., "attachments": [{"color", "fallback", "blocks"}]}` — the message
    /// content as Slack receives it (channel, thread_ts etc. are added by the caller).
    /// A plain-text card (`blocks` null) is `{"text": ...}` alone.
    pub fn to_message_json(&self) -> Value {
        if self.blocks.is_null() {
            return json!({ "text": self.text });
        }
        json!({
            "text": self.text,
            "attachments": [{
                "color": self.color,
                "fallback": self.fallback,
                "blocks": self.blocks,
            }],
        })
    }
}

/// The colour of a state (`#RRGGBB`); `expected` matters for EXITED only (an EXITED
/// whose expectation is unknown is treated as unexpected: better seen than missed).
pub fn color(state: State, expected: Option<bool>) -> &'static str {
    match state {
        State::Running => "#2EB67D",
        State::Starting => "#1D9BD1",
        State::Backoff => "#ECB22E",
        State::Stopping | State::Stopped => "#9E9E9E",
        State::Exited if expected == Some(true) => "#9E9E9E",
        State::Exited => "#E01E5A",
        State::Fatal => "#8B0000",
        State::Unknown => "#7B3FA0",
        State::Removed => "#5F5F5F",
    }
}

/// The symbol of a state, so that a card reads without its colour: every state (and
/// expected vs unexpected EXITED) has a different one.
pub fn emoji(state: State, expected: Option<bool>) -> &'static str {
    match state {
        State::Running => "🟢",
        State::Starting => "🔵",
        State::Backoff => "🟠",
        State::Stopping => "⏳",
        State::Stopped => "⏹️",
        State::Exited if expected == Some(true) => "⚪",
        State::Exited => "❌",
        State::Fatal => "🔴",
        State::Unknown => "❓",
        State::Removed => "🗑️",
    }
}

/// Template file name of the parent card.
pub const PARENT_TEMPLATE: &str = "parent.json.j2";
/// Template file name of the reply card.
pub const REPLY_TEMPLATE: &str = "reply.json.j2";

const BUILTIN_PARENT: &str = include_str!("../../templates/parent.json.j2");
const BUILTIN_REPLY: &str = include_str!("../../templates/reply.json.j2");

/// A template environment set up the same way for built-in and user templates: the
/// name-based auto-escaping (JSON for `*.json.j2`, so every `{{ value }}` is a JSON
/// literal) and undefined values that fail when printed, so a misspelt key is an error
/// with a line number rather than a silently empty card.
fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env
}

fn builtin_env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = new_env();
        env.add_template(PARENT_TEMPLATE, BUILTIN_PARENT)
            .expect("built-in parent template compiles");
        env.add_template(REPLY_TEMPLATE, BUILTIN_REPLY)
            .expect("built-in reply template compiles");
        env
    })
}

/// Renders cards from templates (built-in, or a user's `templates_dir`).
#[derive(Clone)]
pub struct Renderer {
    /// The user's templates, when any were found; `None` means built-in only.
    user: Option<Environment<'static>>,
    user_parent: bool,
    user_reply: bool,
    dir: Option<PathBuf>,
}

/// Why templates could not be loaded or a card could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax or render error; minijinja's message names the template and line.
    #[error("{0}")]
    Template(#[from] minijinja::Error),
    /// The template rendered, but not to valid Block Kit within Slack's limits.
    #[error("{template}: {problem}")]
    Invalid { template: String, problem: String },
    #[error("{0}")]
    Other(String),
}

impl Renderer {
    /// The built-in templates from `templates/`, compiled in.
    pub fn builtin() -> Renderer {
        Renderer {
            user: None,
            user_parent: false,
            user_reply: false,
            dir: None,
        }
    }

    /// User templates from a directory; missing files fall back to the built-in ones.
    /// A directory that cannot be read, or a template with a syntax error, is an error
    /// (with the file and line), so that a typo is reported at start-up.
    pub fn from_dir(dir: &Path) -> Result<Renderer, TemplateError> {
        std::fs::read_dir(dir).map_err(|source| TemplateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut env = new_env();
        let mut found = [false; 2];
        for (i, name) in [PARENT_TEMPLATE, REPLY_TEMPLATE].into_iter().enumerate() {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    env.add_template_owned(name, source)?;
                    found[i] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(TemplateError::Io { path, source }),
            }
        }
        Ok(Renderer {
            user: (found[0] || found[1]).then_some(env),
            user_parent: found[0],
            user_reply: found[1],
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Whether this renderer uses a user template for `variant`.
    pub fn uses_user_template(&self, variant: Variant) -> bool {
        match variant {
            Variant::Parent => self.user_parent,
            Variant::Reply => self.user_reply,
        }
    }

    /// Never fails: a user template that errors or yields invalid Block Kit is logged
    /// and the built-in card is used instead.
    pub fn parent(&self, input: &ParentInput) -> Card {
        let ctx = model::parent_context(input);
        self.render(Variant::Parent, &ctx, &ctx.common)
    }

    /// Never fails, like [`Renderer::parent`].
    pub fn reply(&self, input: &ReplyInput) -> Card {
        let ctx = model::reply_context(input);
        self.render(Variant::Reply, &ctx, &ctx.common)
    }

    /// Like [`Renderer::parent`], but reports a failing user template instead of
    /// falling back (for `check` and tests).
    pub fn try_parent(&self, input: &ParentInput) -> Result<Card, TemplateError> {
        let ctx = model::parent_context(input);
        self.try_render(Variant::Parent, &ctx, &ctx.common)
    }

    /// Like [`Renderer::reply`], but reports a failing user template.
    pub fn try_reply(&self, input: &ReplyInput) -> Result<Card, TemplateError> {
        let ctx = model::reply_context(input);
        self.try_render(Variant::Reply, &ctx, &ctx.common)
    }

    fn try_render<C: Serialize>(
        &self,
        variant: Variant,
        ctx: &C,
        common: &model::Common,
    ) -> Result<Card, TemplateError> {
        let env = match &self.user {
            Some(env) if self.uses_user_template(variant) => env,
            _ => builtin_env(),
        };
        render_with(env, variant.template_name(), ctx, common)
    }

    fn render<C: Serialize>(&self, variant: Variant, ctx: &C, common: &model::Common) -> Card {
        let name = variant.template_name();
        if let (Some(env), true) = (&self.user, self.uses_user_template(variant)) {
            match render_with(env, name, ctx, common) {
                Ok(card) => return card,
                Err(error) => tracing::warn!(
                    template = name,
                    dir = ?self.dir,
                    %error,
                    "user card template failed; sending the built-in card instead"
                ),
            }
        }
        match render_with(builtin_env(), name, ctx, common) {
            Ok(card) => card,
            Err(error) => {
                // A bug in the built-in template: still deliver the event.
                tracing::error!(template = name, %error, "built-in card template failed; sending a minimal card");
                minimal_card(common)
            }
        }
    }
}

/// Renders one template and checks the result: JSON, an array of blocks that survives
/// slack-morphism's `SlackBlock` unchanged (the Slack client sends blocks through that
/// type), and within Block Kit's limits.
fn render_with<C: Serialize>(
    env: &Environment<'static>,
    name: &str,
    ctx: &C,
    common: &model::Common,
) -> Result<Card, TemplateError> {
    let out = env.get_template(name)?.render(ctx)?;
    let invalid = |problem: String| TemplateError::Invalid {
        template: name.to_string(),
        problem,
    };
    let blocks: Value = serde_json::from_str(&out).map_err(|e| {
        invalid(format!(
            "output is not JSON ({e}; line {} of the rendered output)",
            e.line()
        ))
    })?;
    check_blocks_roundtrip(&blocks).map_err(invalid)?;
    let card = Card {
        text: common.text.clone(),
        color: common.color.to_string(),
        fallback: common.text.clone(),
        blocks,
    };
    check_limits(&card.to_message_json()).map_err(invalid)?;
    Ok(card)
}

/// Checks that `blocks` is a JSON array of blocks that slack-morphism's `SlackBlock`
/// reads and writes back unchanged (a typo such as `"txt"` would otherwise be dropped
/// silently on the way to Slack).
pub fn check_blocks_roundtrip(blocks: &Value) -> Result<(), String> {
    use slack_morphism::prelude::SlackBlock;
    let arr = blocks
        .as_array()
        .ok_or_else(|| "output is not a JSON array of blocks".to_string())?;
    for (i, b) in arr.iter().enumerate() {
        if !b.get("type").is_some_and(Value::is_string) {
            return Err(format!("block {i} has no \"type\""));
        }
    }
    let typed: Vec<SlackBlock> = serde_json::from_value(blocks.clone())
        .map_err(|e| format!("blocks are not valid Block Kit: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &back != blocks {
        let at = arr
            .iter()
            .zip(back.as_array().into_iter().flatten())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "block {at} does not survive slack-morphism's SlackBlock unchanged \
             (an unknown or misspelt key?): {}",
            arr.get(at).map(Value::to_string).unwrap_or_default()
        ));
    }
    Ok(())
}

/// The last resort when even the built-in template fails: the notification text in one
/// section.
fn minimal_card(common: &model::Common) -> Card {
    Card {
        text: common.text.clone(),
        color: common.color.to_string(),
        fallback: common.text.clone(),
        blocks: json!([{ "type": "section", "text": { "type": "mrkdwn", "text": common.text } }]),
    }
}

/// How much text a plain-text card may hold.
const PLAIN_TEXT_MAX: usize = 3000;

/// A plain-text card (no blocks) for when Slack refused the rich one.
pub fn plain_text(events: &[ProcessState], variant: Variant) -> Card {
    let Some(latest) = events.last() else {
        return Card::plain("(no events)".into(), color(State::Unknown, None));
    };
    let at = model::When::new(latest.at);
    let mut text = match variant {
        Variant::Reply if events.len() > 1 => {
            model::notification_text_with(latest, None, &model::changes_title(events))
        }
        _ => format!(
            "{} · {}",
            model::notification_text(latest, None, latest.from),
            at.slack
        ),
    };
    if variant == Variant::Reply && events.len() > 1 {
        for (shown, e) in events.iter().enumerate() {
            let line = format!(
                "\n• {} {} → {}",
                model::When::new(e.at).slack_time,
                e.from,
                e.to
            );
            let left = events.len() - shown;
            let reserve = text::cost(&format!("\n… and {left} more"));
            if text::cost(&text) + text::cost(&line) + reserve > PLAIN_TEXT_MAX {
                text.push_str(&format!("\n… and {left} more"));
                break;
            }
            text.push_str(&line);
        }
    }
    Card::plain(text, color(latest.to, latest.expected))
}

/// Renders sample events — every state, crash context, hostile and huge names and logs —
/// through the user templates in `dir`, and lists every problem found (template name,
/// line, what is wrong). For the `check` command. `Ok` when there is nothing to report
/// (including a directory without templates: the built-ins are then used).
pub fn check_templates(dir: &Path) -> Result<(), Vec<String>> {
    let renderer = Renderer::from_dir(dir).map_err(|e| vec![e.to_string()])?;
    let mut problems: Vec<String> = Vec::new();
    let mut report = |p: String| {
        if !problems.contains(&p) {
            problems.push(p);
        }
    };
    for sample in samples::all() {
        if renderer.uses_user_template(Variant::Parent) {
            match renderer.try_parent(&sample.parent()) {
                Ok(card) => {
                    if let Err(p) = check_no_injection(&card, &sample) {
                        report(format!("{PARENT_TEMPLATE}: {p}"));
                    }
                }
                Err(e) => report(e.to_string()),
            }
        }
        if renderer.uses_user_template(Variant::Reply) {
            match renderer.try_reply(&sample.reply()) {
                Ok(card) => {
                    if let Err(p) = check_no_injection(&card, &sample) {
                        report(format!("{REPLY_TEMPLATE}: {p}"));
                    }
                }
                Err(e) => report(e.to_string()),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every mrkdwn text in a card, with its path (for tests and `check`).
pub fn mrkdwn_texts(message_json: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if m.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    if let Some(t) = m.get("text").and_then(Value::as_str) {
                        out.push((path.clone(), t.to_string()));
                    }
                }
                for (k, v) in m {
                    walk(v, format!("{path}.{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(t) = message_json.get("text").and_then(Value::as_str) {
        out.push(("text".to_string(), t.to_string()));
    }
    walk(message_json, String::new(), &mut out);
    out
}

fn check_no_injection(card: &Card, sample: &samples::Sample) -> Result<(), String> {
    let json = card.to_message_json();
    for (path, text) in mrkdwn_texts(&json) {
        for needle in samples::HOSTILE {
            if text.contains(needle) {
                return Err(format!(
                    "{path} shows untrusted text {needle:?} unescaped (sample {}): use the \
                     escaped values, not `plain.*`, in mrkdwn",
                    sample.label
                ));
            }
        }
    }
    Ok(())
}

pub mod samples;
