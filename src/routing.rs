//! Routing: which channel an event goes to, with which mentions — or whether it is
//! not reported at all. Built from the settings' ordered `[[route]]` tables; the
//! first table whose patterns match an event decides; the default channel takes the
//! rest.
//!
//! ```toml
//! channel = "#ops"                 # the default
//!
//! [[route]]                        # workers: only failures and recoveries
//! group = "worker-*"
//! channel = "#ops-workers"
//! skip = ["STARTING", "STOPPING"]
//! running = "after_failure"
//! mentions = ["<!subteam^S012AB3CD>"]
//!
//! [[route]]                        # never report the cron helper
//! process = "cron-*"
//! drop = true
//! ```
//!
//! Mentions come only from here, never from event text, and are added only to FATAL
//! and unexpected EXITED events.
//!
//! The schema of those tables and their checking (with the line of every error) is
//! [`crate::config`]'s job; this room holds the logic only.

use std::collections::HashMap;
use std::sync::Mutex;

use globset::GlobMatcher;

use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// When RUNNING is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Running {
    /// Every RUNNING.
    #[default]
    Always,
    /// Only a recovery: RUNNING after the process was failing (see [`State::is_failing`]).
    AfterFailure,
}

/// Where a routed event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub channel: String,
    /// Mentions to put on the card (empty unless the event is a failure).
    pub mentions: Vec<String>,
}

/// One rule, checked (the settings build these from `[[route]]` tables).
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// `None`: any group.
    pub group: Option<GlobMatcher>,
    /// `None`: any process.
    pub process: Option<GlobMatcher>,
    /// `None`: the default channel; `Some("")`: dropped.
    pub channel: Option<String>,
    /// States not reported.
    pub skip: Vec<State>,
    pub running: Running,
    /// Added to FATAL and unexpected EXITED cards.
    pub mentions: Vec<String>,
}

impl Rule {
    fn matches(&self, event: &ProcessState) -> bool {
        self.group.as_ref().is_none_or(|g| g.is_match(&event.group))
            && self
                .process
                .as_ref()
                .is_none_or(|p| p.is_match(&event.process))
    }
}

/// The routing rules, in order, and the default route. Part of
/// [`crate::config::Settings`].
#[derive(Debug, Clone)]
pub struct Routes {
    rules: Vec<Rule>,
    /// Used when no rule matches: the default channel with the top-level `skip`,
    /// `running` and `mentions`.
    fallback: Rule,
}

impl Default for Routes {
    /// No rules, no default channel: nothing is routed.
    fn default() -> Self {
        Routes::one_channel(None)
    }
}

impl Routes {
    /// Every event to `channel` (or nowhere when `None`), no filters, no mentions.
    pub fn one_channel(channel: Option<String>) -> Routes {
        Routes {
            rules: Vec::new(),
            fallback: Rule {
                group: None,
                process: None,
                channel: Some(channel.unwrap_or_default()),
                skip: Vec::new(),
                running: Running::Always,
                mentions: Vec::new(),
            },
        }
    }

    /// Routes from checked rules, in order, and the rule for events that match none
    /// (its `channel` is the default channel, `Some("")` for none).
    pub fn new(rules: Vec<Rule>, fallback: Rule) -> Routes {
        Routes { rules, fallback }
    }

    /// Where `event` goes, or `None` when it is not reported (a dropping rule, a
    /// skipped state, a RUNNING that is no recovery, no channel at all).
    ///
    /// `previous` is the state the process was in before its current start attempt:
    /// the `to` of the latest earlier event of the same thread key whose `to` was not
    /// STARTING ([`PreviousStates`] keeps it). `None` when unknown (first event since
    /// the listener started): then `running = "after_failure"` does not report.
    pub fn route(&self, event: &ProcessState, previous: Option<State>) -> Option<Route> {
        let rule = self.rule_for(event);
        let channel = rule
            .channel
            .as_deref()
            .or(self.fallback.channel.as_deref())?;
        if channel.is_empty() || rule.skip.contains(&event.to) {
            return None;
        }
        if event.to == State::Running
            && rule.running == Running::AfterFailure
            && !previous.is_some_and(State::is_failing)
        {
            return None;
        }
        Some(Route {
            channel: channel.to_string(),
            mentions: mentions_of(rule, event),
        })
    }

    /// The mentions for `event`: the matching rule's, for FATAL and unexpected EXITED
    /// only. Depends on the event alone, so the dispatcher can ask again at delivery
    /// time without the previous state.
    pub fn mentions_for(&self, event: &ProcessState) -> Vec<String> {
        mentions_of(self.rule_for(event), event)
    }

    /// The mentions for a reply carrying several events (coalesced): each distinct
    /// mention once, in order.
    pub fn mentions_for_all(&self, events: &[ProcessState]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in events.iter().flat_map(|e| self.mentions_for(e)) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The channels events may go to (the default first), for `check`.
    pub fn channels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = std::iter::once(&self.fallback).chain(&self.rules);
        for c in all.filter_map(|r| r.channel.as_deref()) {
            if !c.is_empty() && !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        }
        out
    }

    /// `true` when events that match no rule have a channel to go to.
    pub fn has_default_channel(&self) -> bool {
        self.fallback
            .channel
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    }

    fn rule_for(&self, event: &ProcessState) -> &Rule {
        self.rules
            .iter()
            .find(|r| r.matches(event))
            .unwrap_or(&self.fallback)
    }
}

fn mentions_of(rule: &Rule, event: &ProcessState) -> Vec<String> {
    if event.is_failure() {
        rule.mentions.clone()
    } else {
        Vec::new()
    }
}

/// A mention in Slack's wire syntax: `<!here>`, `<!channel>`, `<!everyone>`,
/// `<!subteam^S…>` (a user group) or `<@U…>`/`<@W…>` (a person). IDs are upper-case
/// letters and digits. Anything else (a bare `@name`, a link) is refused, so the
/// settings cannot smuggle arbitrary markup onto a card.
pub fn is_mention(s: &str) -> bool {
    fn id(s: &str, first: &[char]) -> bool {
        let mut c = s.chars();
        c.next().is_some_and(|f| first.contains(&f))
            && s.len() >= 3
            && s.chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
    }
    let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) else {
        return false;
    };
    match inner {
        "!here" | "!channel" | "!everyone" => true,
        _ => {
            if let Some(group) = inner.strip_prefix("!subteam^") {
                id(group, &['S'])
            } else if let Some(user) = inner.strip_prefix('@') {
                id(user, &['U', 'W'])
            } else {
                false
            }
        }
    }
}

/// Remembers, per thread key, the state each process was in before its current start
/// attempt — what [`Routes::route`] needs as `previous`. Bounded: beyond `cap` keys
/// it starts over (a recovery may then go unreported once; nothing else is lost).
#[derive(Debug)]
pub struct PreviousStates {
    last: HashMap<ThreadKey, State>,
    cap: usize,
}

impl Default for PreviousStates {
    fn default() -> Self {
        PreviousStates::new(10_000)
    }
}

impl PreviousStates {
    pub fn new(cap: usize) -> Self {
        PreviousStates {
            last: HashMap::new(),
            cap,
        }
    }

    /// What an earlier run knew: `key` was last seen in `state`.
    pub fn seed(&mut self, key: ThreadKey, state: State) {
        if self.last.len() < self.cap && state != State::Starting {
            self.last.insert(key, state);
        }
    }

    /// Records `event` and returns the `previous` to route it with: the last state
    /// other than STARTING seen for its process before it.
    pub fn observe(&mut self, event: &ProcessState) -> Option<State> {
        let key = event.thread_key();
        let before = self.last.get(&key).copied();
        if event.to != State::Starting {
            if self.last.len() >= self.cap && !self.last.contains_key(&key) {
                self.last.clear();
            }
            self.last.insert(key, event.to);
        }
        // Without history, the event's own `from` is the best guess when it is
        // not the STARTING every RUNNING comes from.
        before.or(Some(event.from).filter(|s| *s != State::Starting))
    }
}

/// Which channel an event goes to, asked by the listener for each event before it is
/// stored (`None`: not reported).
pub trait Router: Send {
    fn channel_for(&self, event: &ProcessState) -> Option<String>;
}

/// Every event to one channel.
pub struct OneChannel(pub String);

impl Router for OneChannel {
    fn channel_for(&self, _: &ProcessState) -> Option<String> {
        Some(self.0.clone())
    }
}

/// [`Routes`] as the listener's [`Router`]: tracks previous states itself. (The
/// trait hands over only the channel; the dispatcher gets the mentions with
/// [`Routes::mentions_for_all`] from `settings.routes`.)
pub struct RoutingRouter {
    routes: Routes,
    previous: Mutex<PreviousStates>,
}

impl RoutingRouter {
    pub fn new(routes: Routes) -> Self {
        Self::with_previous(routes, [])
    }

    /// Starting from the previous states an earlier run left (see
    /// [`crate::store::Store::previous_states`]), so that a recovery right after a
    /// restart is still told from a routine start.
    pub fn with_previous(
        routes: Routes,
        previous: impl IntoIterator<Item = (ThreadKey, State)>,
    ) -> Self {
        let mut p = PreviousStates::default();
        for (key, state) in previous {
            p.seed(key, state);
        }
        RoutingRouter {
            routes,
            previous: Mutex::new(p),
        }
    }
}

impl Router for RoutingRouter {
    fn channel_for(&self, event: &ProcessState) -> Option<String> {
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(event);
        self.routes.route(event, previous).map(|r| r.channel)
    }
}
