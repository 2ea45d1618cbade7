//! What a Slack user sees of a card: the JSON the renderer produces.

mod common;

use std::collections::HashSet;

use common::events::EventBuilder;
use serde_json::Value;
use supervisor_slack::card::samples::{self, event, fixed_time, HOSTILE};
use supervisor_slack::card::*;
use supervisor_slack::supervisord::event::{ProcessState, State};

fn parent_json(ev: &ProcessState, history: &[State], env: Option<&str>) -> Value {
    Renderer::builtin()
        .parent(&ParentInput {
            latest: ev,
            history,
            since: fixed_time(),
            environment: env,
            flapping: false,
        })
        .to_message_json()
}

fn reply_card(
    events: &[ProcessState],
    context: Option<&CrashContext>,
    notes: &[String],
    mentions: &[String],
) -> Card {
    Renderer::builtin().reply(&ReplyInput {
        events,
        environment: Some("prod"),
        notes,
        context,
        mentions,
    })
}

fn blocks(msg: &Value) -> &Vec<Value> {
    msg["attachments"][0]["blocks"].as_array().expect("blocks")
}

/// All mrkdwn text of a card joined, for "does the user see X" checks.
fn all_mrkdwn(msg: &Value) -> String {
    mrkdwn_texts(msg)
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes what the card itself puts in angle brackets: Slack date tokens and the
/// operator's mentions. What is left must hold no `<` or `>` at all.
fn strip_own_tokens(text: &str, mentions: &[String]) -> String {
    let mut t = text.to_string();
    for m in mentions {
        t = t.replace(m.as_str(), "");
    }
    while let Some(start) = t.find("<!date^") {
        let end = start + t[start..].find('>').expect("date token closes");
        t.replace_range(start..=end, "");
    }
    t
}

fn assert_no_injection(msg: &Value, mentions: &[String]) {
    for (path, text) in mrkdwn_texts(msg) {
        let rest = strip_own_tokens(&text, mentions);
        assert!(
            !rest.contains('<') && !rest.contains('>'),
            "unescaped angle bracket in {path}: {text}"
        );
        // Every `&` starts one of the three entities.
        for (i, _) in rest.match_indices('&') {
            let tail = &rest[i..];
            assert!(
                tail.starts_with("&amp;") || tail.starts_with("&lt;") || tail.starts_with("&gt;"),
                "bare & in {path}: {text}"
            );
        }
    }
    if let Some(fallback) = msg["attachments"][0]["fallback"].as_str() {
        assert!(
            !strip_own_tokens(fallback, mentions).contains('<'),
            "fallback: {fallback}"
        );
    }
}

#[test]
fn every_state_has_its_own_colour_and_symbol() {
    let mut symbols = HashSet::new();
    for s in State::ALL {
        let c = color(s, Some(false));
        assert!(
            c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|d| d.is_ascii_hexdigit()),
            "{c}"
        );
        symbols.insert(emoji(s, Some(false)));
    }
    symbols.insert(emoji(State::Exited, Some(true)));
    assert_eq!(symbols.len(), 9, "one symbol per state, two for EXITED");
    assert_eq!(color(State::Stopped, None), color(State::Stopping, None));
    assert_eq!(
        color(State::Exited, Some(true)),
        color(State::Stopped, None),
        "expected exit is grey"
    );
    assert_ne!(
        color(State::Exited, Some(false)),
        color(State::Exited, Some(true)),
        "unexpected exit is not grey"
    );
    assert_ne!(
        color(State::Fatal, None),
        color(State::Exited, Some(false)),
        "FATAL is a deeper red"
    );
}

#[test]
fn message_is_text_plus_one_attachment_with_only_color_fallback_blocks() {
    let ev = event("web-1", "api", "api_0", State::Running, State::Fatal, 0);
    let msg = parent_json(&ev, &[State::Running, State::Fatal], Some("prod"));
    assert_eq!(msg["text"], "🔴 web-1 (prod) · api:api_0 RUNNING → FATAL");
    let att = msg["attachments"].as_array().unwrap();
    assert_eq!(att.len(), 1);
    let keys: Vec<&str> = att[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["blocks", "color", "fallback"]);
    assert_eq!(att[0]["color"], "#8B0000");
    let b = blocks(&msg);
    assert_eq!(b[0]["type"], "header");
    assert_eq!(b[0]["text"]["type"], "plain_text");
    assert_eq!(b[0]["text"]["text"], "🔴 api:api_0 FATAL on web-1");
}

#[test]
fn card_shows_host_group_process_pid_transition_and_time() {
    let ev = event("web-1", "api", "api_0", State::Running, State::Exited, 0);
    let msg = parent_json(&ev, &[State::Running, State::Exited], None);
    let text = all_mrkdwn(&msg);
    // Compact (issue 16): the header names process, state and host; one line says
    // since when, the pid, the exit and the group; the trail the transition.
    let header = blocks(&msg)[0]["text"]["text"].as_str().unwrap().to_string();
    assert_eq!(header, "❌ api:api_0 EXITED on web-1");
    for want in [
        "*EXITED* since <!date^1795701785^{date_short_pretty} {time}|2026-11-26 14:03:05 UTC>",
        "pid 4242",
        "*unexpected exit*",
        "group api",
        "*History* RUNNING → EXITED",
        "🖥 *web-1*",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    assert!(!text.contains("Tries"), "tries only for STARTING/BACKOFF");
    assert_eq!(
        msg["attachments"][0]["color"],
        color(State::Exited, Some(false))
    );
}

#[test]
fn tries_shown_for_starting_and_backoff_only() {
    for (to, shown) in [
        (State::Starting, true),
        (State::Backoff, true),
        (State::Running, false),
    ] {
        let mut ev = event("h", "g", "p", State::Stopped, to, 0);
        ev.tries = Some(3);
        let text = all_mrkdwn(&parent_json(&ev, &[to], None));
        assert_eq!(text.contains("tries 3"), shown, "{to}: {text}");
    }
}

#[test]
fn environment_is_on_every_card_when_set() {
    let ev = event("web-1", "api", "api_0", State::Starting, State::Running, 0);
    let parent = parent_json(&ev, &[State::Running], Some("prod"));
    let reply = reply_card(std::slice::from_ref(&ev), None, &[], &[]).to_message_json();
    for msg in [&parent, &reply] {
        assert!(msg["text"].as_str().unwrap().contains("(prod)"));
        assert!(all_mrkdwn(msg).contains("🏷 prod"));
    }
    let none = parent_json(&ev, &[State::Running], None);
    assert!(!all_mrkdwn(&none).contains("🏷"));
}

#[test]
fn cards_from_two_hosts_differ_in_text_header_and_context() {
    let a = parent_json(
        &event("web-1", "api", "api", State::Starting, State::Running, 0),
        &[],
        None,
    );
    let b = parent_json(
        &event("web-2", "api", "api", State::Starting, State::Running, 0),
        &[],
        None,
    );
    assert_eq!(a["text"], "🟢 web-1 · api STARTING → RUNNING");
    assert_eq!(b["text"], "🟢 web-2 · api STARTING → RUNNING");
    assert_eq!(blocks(&b)[0]["text"]["text"], "🟢 api RUNNING on web-2");
    assert_eq!(
        blocks(&b).last().unwrap()["elements"][0]["text"],
        "🖥 *web-2*"
    );
}

#[test]
fn parent_shows_compacted_trail_and_flapping() {
    let ev = event("h", "g", "p", State::Backoff, State::Fatal, 0);
    let history = [
        State::Starting,
        State::Running,
        State::Exited,
        State::Backoff,
        State::Backoff,
        State::Backoff,
        State::Fatal,
    ];
    let card = Renderer::builtin().parent(&ParentInput {
        latest: &ev,
        history: &history,
        since: fixed_time(),
        environment: None,
        flapping: true,
    });
    let text = all_mrkdwn(&card.to_message_json());
    assert!(
        text.contains("*History* STARTING → RUNNING → EXITED → BACKOFF ×3 → FATAL"),
        "{text}"
    );
    assert!(text.contains("⚠️ *Flapping*"), "{text}");

    let long: Vec<State> = (0..500).map(|i| State::ALL[i % 8]).collect();
    let card = Renderer::builtin().parent(&ParentInput {
        latest: &ev,
        history: &long,
        since: fixed_time(),
        environment: None,
        flapping: false,
    });
    let text = all_mrkdwn(&card.to_message_json());
    assert!(text.contains("*History* … → "), "{text}");
    assert!(!text.contains("Flapping"));
}

#[test]
fn coalesced_reply_lists_every_transition_in_order() {
    let events = vec![
        event("h", "g", "p", State::Running, State::Exited, 0),
        event("h", "g", "p", State::Exited, State::Starting, 1),
        event("h", "g", "p", State::Starting, State::Backoff, 2),
        event("h", "g", "p", State::Backoff, State::Fatal, 3),
    ];
    let msg = reply_card(&events, None, &[], &[]).to_message_json();
    // Titled with its first and last state and the count: no transition that did not happen.
    assert_eq!(msg["text"], "🔴 h (prod) · g:p RUNNING → … → FATAL (4 changes)");
    let text = all_mrkdwn(&msg);
    let pos: Vec<usize> = [
        "RUNNING → EXITED",
        "EXITED → STARTING",
        "STARTING → BACKOFF",
        "BACKOFF → FATAL",
    ]
    .iter()
    .map(|t| {
        text.find(t)
            .unwrap_or_else(|| panic!("{t} missing: {text}"))
    })
    .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "out of order: {text}");
    assert!(text.contains("*4 changes, oldest first*"));
}

#[test]
fn too_many_transitions_to_list_become_a_run_length_sequence_that_drops_none() {
    let events: Vec<ProcessState> = (0..500)
        .map(|i| event("h", "g", "p", State::Starting, State::Backoff, i))
        .collect();
    let card = reply_card(&events, None, &[], &[]);
    let msg = card.to_message_json();
    let text = all_mrkdwn(&msg);
    assert!(text.contains("STARTING → BACKOFF ×500"), "{text}");
    assert!(text.contains("*500 changes, oldest first*"), "{text}");
    assert!(!text.contains("… and"), "nothing is left out: {text}");
    check_limits(&msg).unwrap();
}

#[test]
fn a_crash_loop_digest_reads_as_one_repeated_pair() {
    // STOPPED → STARTING, then 60 × (BACKOFF, STARTING), then FATAL: 122 transitions.
    let mut events = vec![event("h", "g", "p", State::Stopped, State::Starting, 0)];
    for i in 0..60 {
        events.push(event(
            "h",
            "g",
            "p",
            State::Starting,
            State::Backoff,
            2 * i + 1,
        ));
        events.push(event(
            "h",
            "g",
            "p",
            State::Backoff,
            State::Starting,
            2 * i + 2,
        ));
    }
    events.push(event("h", "g", "p", State::Starting, State::Fatal, 121));
    let card = reply_card(&events, None, &[], &[]);
    let msg = card.to_message_json();
    let text = all_mrkdwn(&msg);
    assert!(
        text.contains("STOPPED → (STARTING → BACKOFF) ×60 → STARTING → FATAL"),
        "{text}"
    );
    check_limits(&msg).unwrap();
}

#[test]
fn crash_context_shows_status_uptime_spawn_error_and_log_end() {
    let ev = event("h", "g", "p", State::Running, State::Exited, 0);
    let mut log: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    log.push_str("FINAL ERROR <!channel>\n");
    let ctx = CrashContext {
        exit_status: Some(3),
        spawn_error: Some("spawn failed".into()),
        uptime_secs: Some(3725),
        log_tail: Some(log),
        log_name: Some("stderr".into()),
        unavailable: Some("stdout log not configured".into()),
    };
    let msg = reply_card(std::slice::from_ref(&ev), Some(&ctx), &[], &[]).to_message_json();
    let text = all_mrkdwn(&msg);
    assert!(text.contains("*Exit status* 3"), "{text}");
    assert!(text.contains("*Ran for* 1h 02m"), "{text}");
    assert!(text.contains("*Spawn error* spawn failed"));
    assert!(text.contains("_Crash context unavailable: stdout log not configured_"));
    let log_block = blocks(&msg)
        .iter()
        .find_map(|b| {
            b["text"]["text"]
                .as_str()
                .filter(|t| t.starts_with("*Last lines of stderr*"))
        })
        .expect("log block");
    assert!(
        log_block.starts_with("*Last lines of stderr*\n```\n…"),
        "cut at the start: {log_block}"
    );
    assert!(
        log_block.ends_with("FINAL ERROR &lt;!channel&gt;\n```"),
        "keeps the end: {log_block}"
    );
    assert!(!log_block.contains("line 0\n"));
    check_limits(&msg).unwrap();
}

#[test]
fn log_cannot_close_the_code_block() {
    let ev = event("h", "g", "p", State::Running, State::Exited, 0);
    let ctx = CrashContext {
        log_tail: Some("a\n```\n<!here> *x*".into()),
        ..Default::default()
    };
    let msg = reply_card(std::slice::from_ref(&ev), Some(&ctx), &[], &[]).to_message_json();
    let text = all_mrkdwn(&msg);
    assert_eq!(
        text.matches("```").count(),
        2,
        "only the card's own fences: {text}"
    );
    assert!(text.contains("&lt;!here&gt; *x*"));
}

#[test]
fn notes_and_mentions_are_shown_and_mentions_are_not_escaped() {
    let ev = event("h", "g", "p", State::Running, State::Fatal, 0);
    let notes = vec![
        "3 events dropped by supervisord".to_string(),
        "<!channel> note".to_string(),
    ];
    let mentions = vec!["<!subteam^S0123>".to_string(), "<@U999>".to_string()];
    let msg = reply_card(std::slice::from_ref(&ev), None, &notes, &mentions).to_message_json();
    let b = blocks(&msg);
    assert!(
        b.iter()
            .any(|b| b["type"] == "section" && b["text"]["text"] == "<!subteam^S0123> <@U999>"),
        "{msg}"
    );
    let text = all_mrkdwn(&msg);
    assert!(
        text.contains("3 events dropped by supervisord\n&lt;!channel&gt; note"),
        "{text}"
    );
    assert_no_injection(&msg, &mentions);
}

#[test]
fn hostile_names_and_text_are_escaped_everywhere_in_mrkdwn() {
    let hostile = format!(
        "{} &amp; *bold* 🔥 שלום مرحبا \u{202E}evil",
        HOSTILE.join(" ")
    );
    let huge = format!("{hostile}{}", "n".repeat(1000));
    let ev = event(&huge, &hostile, &huge, State::Running, State::Exited, 0).pid(1);
    let ctx = CrashContext {
        exit_status: Some(1),
        spawn_error: Some(hostile.clone()),
        uptime_secs: Some(5),
        log_tail: Some(format!("{hostile}\n").repeat(300)),
        log_name: Some(hostile.clone()),
        unavailable: Some(hostile.clone()),
    };
    let notes = vec![hostile.clone(); 3];
    let history = [State::Running, State::Exited];
    let parent = Renderer::builtin()
        .parent(&ParentInput {
            latest: &ev,
            history: &history,
            since: fixed_time(),
            environment: Some(&hostile),
            flapping: true,
        })
        .to_message_json();
    let reply = Renderer::builtin()
        .reply(&ReplyInput {
            events: &vec![ev.clone(); 30],
            environment: Some(&hostile),
            notes: &notes,
            context: Some(&ctx),
            mentions: &[],
        })
        .to_message_json();
    for msg in [&parent, &reply] {
        assert_no_injection(msg, &[]);
        check_limits(msg).unwrap();
        let text = all_mrkdwn(msg);
        assert!(text.contains("&lt;!channel&gt;"), "escaped form shown");
        assert!(
            text.contains("&amp;amp;"),
            "an existing entity is escaped again"
        );
        assert!(!text.contains('\u{202E}'), "bidi override removed");
        // plain_text header shows raw text (Slack does not parse it).
        let header = blocks(msg)[0]["text"]["text"].as_str().unwrap();
        assert!(header.contains("<!channel>"), "{header}");
        assert!(header.chars().count() <= 150);
    }
}

#[test]
fn blocks_round_trip_through_slack_morphism() {
    use slack_morphism::prelude::SlackBlock;
    for s in samples::all() {
        for card in [
            Renderer::builtin().parent(&s.parent()),
            Renderer::builtin().reply(&s.reply()),
        ] {
            let typed: Vec<SlackBlock> =
                serde_json::from_value(card.blocks.clone()).expect(&s.label);
            assert_eq!(
                serde_json::to_value(&typed).unwrap(),
                card.blocks,
                "{}",
                s.label
            );
            assert!(
                typed.iter().all(|b| !matches!(b, SlackBlock::Unknown(_))),
                "{}",
                s.label
            );
        }
    }
}

#[test]
fn plain_text_card_has_text_only() {
    let events = vec![
        event("web-1", "api", "api_0", State::Running, State::Exited, 0),
        event("web-1", "api", "api_0", State::Exited, State::Fatal, 1),
    ];
    let card = plain_text(&events, Variant::Reply);
    let msg = card.to_message_json();
    assert_eq!(msg.as_object().unwrap().len(), 1, "{msg}");
    let text = msg["text"].as_str().unwrap();
    assert!(
        text.starts_with("🔴 web-1 · api:api_0 RUNNING → EXITED → FATAL"),
        "{text}"
    );
    assert!(text.contains("RUNNING → EXITED") && text.contains("EXITED → FATAL"));

    let parent = plain_text(&events, Variant::Parent).to_message_json();
    assert!(parent["text"]
        .as_str()
        .unwrap()
        .starts_with("🔴 web-1 · api:api_0 EXITED → FATAL ·"));

    let many: Vec<_> = (0..1000)
        .map(|i| event("<!here>", "g", "p", State::Starting, State::Backoff, i))
        .collect();
    let msg = plain_text(&many, Variant::Reply).to_message_json();
    let text = msg["text"].as_str().unwrap();
    assert!(
        text.contains("more") && text.chars().count() <= 3000,
        "{}",
        text.len()
    );
    assert!(!strip_own_tokens(text, &[]).contains('<'));
    check_limits(&msg).unwrap();
}

#[test]
fn json_j2_templates_are_auto_escaped_as_json() {
    // The renderer relies on minijinja's default: `*.json.j2` ⇒ JSON auto-escaping.
    let mut env = minijinja::Environment::new();
    env.add_template("t.json.j2", "{{ v }}").unwrap();
    let out = env
        .get_template("t.json.j2")
        .unwrap()
        .render(minijinja::context! { v => "a\"b\n<c>" })
        .unwrap();
    let back: String = serde_json::from_str(&out).unwrap();
    assert_eq!(back, "a\"b\n<c>");
}

#[test]
fn empty_input_does_not_panic() {
    // The contract says a reply is never empty; a bug upstream must still not crash.
    let card = Renderer::builtin().reply(&ReplyInput {
        events: &[],
        environment: None,
        notes: &[],
        context: None,
        mentions: &[],
    });
    check_limits(&card.to_message_json()).unwrap();
    let plain = plain_text(&[], Variant::Reply).to_message_json();
    assert_eq!(plain, serde_json::json!({"text": "(no events)"}));
}

/// The lines a reader scrolls past: a header is one, a section's text one per line
/// (fields two per row), a context block one.
fn lines_a_reader_scrolls(msg: &serde_json::Value) -> usize {
    blocks(msg)
        .iter()
        .map(|b| match b["type"].as_str() {
            Some("header") | Some("context") => 1,
            Some("section") => {
                let text = b["text"]["text"].as_str().map_or(0, |t| t.lines().count());
                let fields = b["fields"].as_array().map_or(0, |f| f.len().div_ceil(2));
                text + fields
            }
            _ => 1,
        })
        .sum()
}

/// README: "A routine reply is one line (`🟢 STARTING → RUNNING · api:api-1 on web-1 ·
/// pid 4242 · 15:58:22`)"; a parent is at most six.
#[test]
fn a_routine_reply_is_one_line_and_a_parent_at_most_six() {
    let routine = [
        (State::Stopped, State::Starting, " · tries 2"),
        (State::Starting, State::Running, " · pid 4242"),
        (State::Running, State::Stopping, " · pid 4242"),
        (State::Stopping, State::Stopped, ""),
    ];
    for (from, to, detail) in routine {
        let ev = event("web-1", "api", "api_0", from, to, 0);
        let reply = reply_card(std::slice::from_ref(&ev), None, &[], &[]).to_message_json();
        let n = lines_a_reader_scrolls(&reply);
        assert_eq!(n, 1, "{from} → {to}: {n} lines\n{}", all_mrkdwn(&reply));
        let b = blocks(&reply);
        assert_eq!(b.len(), 1, "no header, no second block: {b:?}");
        assert_eq!(b[0]["type"], "section");
        let line = b[0]["text"]["text"].as_str().unwrap();
        // The change, the process and its host, the environment, pid or tries, the time.
        let want = format!(
            "{} *{from} → {to}* · api:api_0 on *web-1* · 🏷 prod{detail} · <!date^",
            emoji(to, None)
        );
        assert!(line.starts_with(&want), "{line:?} starts with {want:?}");
        assert!(!line.contains('\n') && line.ends_with('>'), "one line: {line:?}");
    }
    // Two routine changes coalesced: still one line, titled with the sequence.
    let two = [
        event("web-1", "api", "api_0", State::Stopped, State::Starting, 0),
        event("web-1", "api", "api_0", State::Starting, State::Running, 1),
    ];
    let reply = reply_card(&two, None, &[], &[]).to_message_json();
    assert_eq!(lines_a_reader_scrolls(&reply), 1, "{}", all_mrkdwn(&reply));
    assert!(all_mrkdwn(&reply).contains("STOPPED → STARTING → RUNNING"));
    for to in State::ALL {
        let ev = event("web-1", "api", "api_0", State::Running, to, 0);
        let history = vec![State::Starting, State::Running, to];
        let mut parent = parent_json(&ev, &history, Some("prod"));
        assert!(lines_a_reader_scrolls(&parent) <= 6, "{to}: {}", all_mrkdwn(&parent));
        parent = parent_json(&ev, &history, None);
        assert!(lines_a_reader_scrolls(&parent) <= 6);
    }
}
