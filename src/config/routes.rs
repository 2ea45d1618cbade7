//! The `[[route]]` tables and the top-level `skip` / `running` / `mentions` keys:
//! their checking (the tables themselves are in [`super::schema`]) into [`crate::routing`]'s rules. Every error
//! names the key (`route[2].process`, 1-based as in the file) and its line.

use globset::{Glob, GlobMatcher};
use toml::Spanned;

use super::{ConfigError, SettingsFile};
use crate::routing::{is_mention, Routes, Rule, Running};
use crate::supervisord::event::State;

/// Builds the routes from a settings file's `[[route]]` tables and top-level
/// `skip`/`running`/`mentions`. Every error names the key (`route[2].process`,
/// 1-based as in the file) and its line.
pub fn routes(file: &SettingsFile, default_channel: Option<String>) -> Result<Routes, ConfigError> {
    let f = &file.parsed;
    let fallback = Rule {
        group: None,
        process: None,
        channel: Some(default_channel.unwrap_or_default()),
        skip: states(file, "skip", &f.skip)?,
        running: running(file, "running", &f.running)?,
        mentions: mentions(file, "mentions", &f.mentions)?,
    };
    let mut rules = Vec::with_capacity(f.route.len());
    for (i, t) in f.route.iter().enumerate() {
        let key = |k: &str| format!("route[{}].{k}", i + 1);
        let channel = match (&t.channel, &t.drop) {
            (Some(c), Some(d)) if *d.get_ref() && !c.get_ref().is_empty() => {
                return Err(file.invalid(
                    &key("drop"),
                    d.span(),
                    format!(
                        "drop = true and channel = {:?} contradict each other; keep one",
                        c.get_ref()
                    ),
                ))
            }
            (_, Some(d)) if *d.get_ref() => Some(String::new()),
            (Some(c), _) if c.get_ref().is_empty() => Some(String::new()),
            (Some(c), _) => Some(super::check_channel(
                &key("channel"),
                Some(file.at(c.span())),
                c.get_ref(),
            )?),
            (None, _) => None,
        };
        rules.push(Rule {
            group: glob(file, &key("group"), &t.group)?,
            process: glob(file, &key("process"), &t.process)?,
            channel,
            skip: states(file, &key("skip"), &t.skip)?,
            running: running(file, &key("running"), &t.running)?,
            mentions: mentions(file, &key("mentions"), &t.mentions)?,
        });
    }
    Ok(Routes::new(rules, fallback))
}

fn glob(
    file: &SettingsFile,
    key: &str,
    v: &Option<Spanned<String>>,
) -> Result<Option<GlobMatcher>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    Glob::new(v.get_ref())
        .map(|g| Some(g.compile_matcher()))
        .map_err(|e| {
            file.invalid(
                key,
                v.span(),
                format!(
                    "{:?} is not a valid pattern ({}); use * ? [abc] {{a,b}}, e.g. \"web-*\"",
                    v.get_ref(),
                    e.kind()
                ),
            )
        })
}

fn states(
    file: &SettingsFile,
    key: &str,
    v: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<State>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.get_ref()
        .iter()
        .map(|s| {
            s.get_ref()
                .trim()
                .to_ascii_uppercase()
                .parse::<State>()
                .map_err(|_| {
                    file.invalid(
                        key,
                        s.span(),
                        format!(
                            "{:?} is not a process state; use {}",
                            s.get_ref(),
                            State::ALL.map(State::as_str).join(", ")
                        ),
                    )
                })
        })
        .collect()
}

fn running(
    file: &SettingsFile,
    key: &str,
    v: &Option<Spanned<String>>,
) -> Result<Running, ConfigError> {
    match v.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("always", _)) => Ok(Running::Always),
        Some(("after_failure", _)) => Ok(Running::AfterFailure),
        Some((other, span)) => Err(file.invalid(
            key,
            span,
            format!("{other:?} is not a choice; use \"always\" or \"after_failure\""),
        )),
    }
}

fn mentions(
    file: &SettingsFile,
    key: &str,
    v: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.get_ref()
        .iter()
        .map(|m| {
            let text = m.get_ref().trim();
            if is_mention(text) {
                Ok(text.to_string())
            } else {
                Err(file.invalid(key, m.span(), format!(
                    "{:?} is not a Slack mention; write <@U012AB3CD> (a person: profile → ⋯ → Copy member ID), <!subteam^S012AB3CD> (a user group), <!here> or <!channel>",
                    m.get_ref()
                )))
            }
        })
        .collect()
}
