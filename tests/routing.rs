//! Routing rules: first match wins, globs, state filters, recoveries, mentions.

mod common;

use std::path::Path;

use common::events::{ev, EventBuilder};
use supervisor_slack::config::{parse_str, resolve};
use supervisor_slack::routing::{is_mention, PreviousStates, Route, Router, Routes, RoutingRouter};
use supervisor_slack::supervisord::event::{ProcessState, State};

fn routes(text: &str) -> Routes {
    let file = parse_str(text, Some(Path::new("test.toml"))).unwrap();
    resolve(&file, &[("SLACK_TOKEN", "xoxb-test")])
        .unwrap()
        .settings
        .routes
}

fn event(group: &str, process: &str, from: State, to: State) -> ProcessState {
    ev(process, to).group(group).from(from)
}

fn exited(group: &str, process: &str, expected: bool) -> ProcessState {
    event(group, process, State::Running, State::Exited).expected(expected)
}

fn channel(r: &Routes, e: &ProcessState) -> Option<String> {
    r.route(e, None).map(|r| r.channel)
}

const RULES: &str = r##"
channel = "#ops"

[[route]]
group = "web-*"
process = "api-?"
channel = "#web-api"

[[route]]
group = "web-*"
channel = "#web"
mentions = ["<!subteam^S012AB3CD>", "<@U012AB3CD>"]

[[route]]
process = "{cron,backup}-*"
drop = true

[[route]]
group = "quiet"
channel = ""
"##;

#[test]
fn first_matching_rule_wins() {
    let r = routes(RULES);
    let e = event("web-eu", "api-1", State::Starting, State::Running);
    assert_eq!(channel(&r, &e).as_deref(), Some("#web-api"));
    let e = event("web-eu", "worker", State::Starting, State::Running);
    assert_eq!(channel(&r, &e).as_deref(), Some("#web"));
}

#[test]
fn glob_patterns_match_whole_names() {
    let r = routes(RULES);
    // `api-?` is one character; `web-*` must match from the start.
    let e = event("web-eu", "api-10", State::Starting, State::Running);
    assert_eq!(channel(&r, &e).as_deref(), Some("#web"));
    let e = event("old-web-eu", "api-1", State::Starting, State::Running);
    assert_eq!(channel(&r, &e).as_deref(), Some("#ops"));
}

#[test]
fn unmatched_events_go_to_the_default_channel() {
    let r = routes(RULES);
    let e = event("db", "postgres", State::Starting, State::Running);
    assert_eq!(channel(&r, &e).as_deref(), Some("#ops"));
}

#[test]
fn drop_and_empty_channel_drop_events() {
    let r = routes(RULES);
    assert_eq!(
        channel(
            &r,
            &event("jobs", "cron-hourly", State::Starting, State::Running)
        ),
        None
    );
    assert_eq!(
        channel(
            &r,
            &event("jobs", "backup-db", State::Running, State::Exited)
        ),
        None
    );
    assert_eq!(
        channel(&r, &event("quiet", "x", State::Starting, State::Running)),
        None
    );
}

#[test]
fn no_default_channel_means_unmatched_events_go_nowhere() {
    let r = routes("[[route]]\ngroup = \"web\"\nchannel = \"#web\"\n");
    assert!(!r.has_default_channel());
    assert_eq!(
        channel(&r, &event("db", "pg", State::Starting, State::Running)),
        None
    );
    assert_eq!(
        channel(&r, &event("web", "x", State::Starting, State::Running)).as_deref(),
        Some("#web")
    );
}

#[test]
fn a_rule_without_channel_uses_the_default_with_its_own_filters() {
    let r = routes("channel = \"#ops\"\n[[route]]\ngroup = \"web\"\nskip = [\"starting\"]\n");
    assert_eq!(
        channel(&r, &event("web", "x", State::Stopped, State::Starting)),
        None
    );
    assert_eq!(
        channel(&r, &event("web", "x", State::Starting, State::Running)).as_deref(),
        Some("#ops")
    );
    // Other groups keep STARTING.
    assert_eq!(
        channel(&r, &event("db", "x", State::Stopped, State::Starting)).as_deref(),
        Some("#ops")
    );
}

#[test]
fn top_level_skip_applies_to_unmatched_events_only() {
    let r = routes(
        "channel = \"#ops\"\nskip = [\"STARTING\", \"STOPPING\"]\n[[route]]\ngroup = \"web\"\nchannel = \"#web\"\n",
    );
    assert_eq!(
        channel(&r, &event("db", "x", State::Stopped, State::Starting)),
        None
    );
    assert_eq!(
        channel(&r, &event("db", "x", State::Running, State::Stopping)),
        None
    );
    assert_eq!(
        channel(&r, &event("db", "x", State::Stopping, State::Stopped)).as_deref(),
        Some("#ops")
    );
    assert_eq!(
        channel(&r, &event("web", "x", State::Stopped, State::Starting)).as_deref(),
        Some("#web"),
        "the matching rule decides, not the top-level filter"
    );
}

const AFTER_FAILURE: &str = "channel = \"#ops\"\nrunning = \"after_failure\"\n";

#[test]
fn running_after_failure_reports_only_recoveries() {
    let r = routes(AFTER_FAILURE);
    let running = event("web", "api", State::Starting, State::Running);
    for failing in [State::Backoff, State::Exited, State::Fatal, State::Unknown] {
        assert_eq!(
            r.route(&running, Some(failing))
                .map(|r| r.channel)
                .as_deref(),
            Some("#ops"),
            "RUNNING after {failing}"
        );
    }
    for calm in [State::Stopped, State::Running, State::Stopping] {
        assert_eq!(r.route(&running, Some(calm)), None, "RUNNING after {calm}");
    }
    assert_eq!(
        r.route(&running, None),
        None,
        "unknown history: not a recovery"
    );
    // Other states are unaffected.
    let stopped = event("web", "api", State::Stopping, State::Stopped);
    assert!(r.route(&stopped, Some(State::Running)).is_some());
}

#[test]
fn previous_states_skip_the_starting_in_between() {
    let mut p = PreviousStates::default();
    let seq = [
        event("g", "p", State::Stopped, State::Starting),
        event("g", "p", State::Starting, State::Running),
        exited("g", "p", false),
        event("g", "p", State::Exited, State::Starting),
        event("g", "p", State::Starting, State::Running),
    ];
    let prev: Vec<Option<State>> = seq.iter().map(|e| p.observe(e)).collect();
    assert_eq!(
        prev,
        vec![
            Some(State::Stopped), // no history: the event's own `from`
            None,                 // only STARTING known
            Some(State::Running),
            Some(State::Exited),
            Some(State::Exited), // the RUNNING is a recovery from EXITED
        ]
    );
    // Other processes have their own history.
    assert_eq!(
        p.observe(&event("g", "q", State::Starting, State::Running)),
        None
    );
}

#[test]
fn the_router_reports_a_recovery_but_not_a_normal_start() {
    let router = RoutingRouter::new(routes(AFTER_FAILURE));
    let start = [
        event("g", "p", State::Stopped, State::Starting),
        event("g", "p", State::Starting, State::Running),
    ];
    let got: Vec<_> = start.iter().map(|e| router.channel_for(e)).collect();
    assert_eq!(got, vec![Some("#ops".to_string()), None]);

    let crash = [
        event("g", "p", State::Starting, State::Backoff),
        event("g", "p", State::Backoff, State::Starting),
        event("g", "p", State::Starting, State::Running),
    ];
    let got: Vec<_> = crash.iter().map(|e| router.channel_for(e)).collect();
    assert_eq!(got, vec![Some("#ops".to_string()); 3]);
}

#[test]
fn mentions_only_for_fatal_and_unexpected_exited() {
    let r = routes(RULES);
    let want = vec![
        "<!subteam^S012AB3CD>".to_string(),
        "<@U012AB3CD>".to_string(),
    ];
    let fatal = event("web-eu", "worker", State::Backoff, State::Fatal);
    assert_eq!(
        r.route(&fatal, None),
        Some(Route {
            channel: "#web".into(),
            mentions: want.clone()
        })
    );
    assert_eq!(r.mentions_for(&exited("web-eu", "worker", false)), want);
    assert!(r.mentions_for(&exited("web-eu", "worker", true)).is_empty());
    for to in [
        State::Backoff,
        State::Running,
        State::Stopped,
        State::Starting,
    ] {
        let e = event("web-eu", "worker", State::Starting, to);
        assert!(r.route(&e, None).unwrap().mentions.is_empty(), "{to}");
    }
    // Rules without mentions give none, even on failure.
    let e = event("db", "pg", State::Backoff, State::Fatal);
    assert!(r.route(&e, None).unwrap().mentions.is_empty());
}

#[test]
fn mentions_of_coalesced_events_are_listed_once() {
    let r = routes("channel = \"#ops\"\nmentions = [\"<!here>\"]\n");
    let events = [
        event("g", "p", State::Backoff, State::Fatal),
        exited("g", "p", false),
        event("g", "p", State::Starting, State::Running),
    ];
    assert_eq!(r.mentions_for_all(&events), vec!["<!here>".to_string()]);
}

#[test]
fn mentions_never_come_from_event_text() {
    let r = routes("channel = \"#ops\"\n");
    let e = event("<!channel>", "<@U012AB3CD>", State::Backoff, State::Fatal);
    assert!(r.route(&e, None).unwrap().mentions.is_empty());
}

#[test]
fn mention_syntax() {
    for ok in [
        "<!here>",
        "<!channel>",
        "<!everyone>",
        "<!subteam^S012AB3CD>",
        "<@U012AB3CD>",
        "<@W012AB3CD>",
    ] {
        assert!(is_mention(ok), "{ok}");
    }
    for bad in [
        "@here",
        "<!here",
        "<!subteam^>",
        "<!subteam^s012>",
        "<!subteam^U012AB3CD>",
        "<@u012>",
        "<@U012|bob>",
        "<http://x|y>",
        "<@U>",
        "here",
        "",
        "<!date^1^x|y>",
    ] {
        assert!(!is_mention(bad), "{bad}");
    }
}

#[test]
fn channels_lists_every_destination_once() {
    let r = routes(RULES);
    assert_eq!(r.channels(), vec!["#ops", "#web-api", "#web"]);
}
