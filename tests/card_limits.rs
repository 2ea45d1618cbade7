//! Any input, any state: the built-in cards stay within Block Kit's limits, keep
//! untrusted text escaped, and survive slack-morphism's SlackBlock unchanged.

mod common;

use chrono::{TimeZone, Utc};
use common::events::{ev, EventBuilder};
use proptest::prelude::*;
use supervisor_slack::card::limits::CARD_BUDGET;
use supervisor_slack::card::*;
use supervisor_slack::supervisord::event::{ProcessState, State};

fn state() -> impl Strategy<Value = State> {
    proptest::sample::select(State::ALL.to_vec())
}

/// Text that is hostile in every way we know: mentions, links, entities, formatting,
/// emoji, right-to-left, control characters, and sometimes very long.
fn nasty_text(max_repeat: usize) -> impl Strategy<Value = String> {
    let atoms = proptest::sample::select(vec![
        "<!channel>",
        "<!here>",
        "<@U123>",
        "<http://evil.example|click>",
        "&amp;",
        "&",
        "<",
        ">",
        "*bold*",
        "_i_",
        "`",
        "```",
        "🔥",
        "👩‍👩‍👧",
        "שלום",
        "مرحبا",
        "\u{202E}",
        "\n",
        "\r\n",
        "\t",
        "\u{1b}[31m",
        "\"",
        "\\",
        "\u{0}",
        "a",
        "web-1",
        " ",
    ]);
    (proptest::collection::vec(atoms, 0..40), 1..=max_repeat)
        .prop_map(|(parts, n)| parts.concat().repeat(n))
}

fn process_state() -> impl Strategy<Value = ProcessState> {
    (
        nasty_text(60),
        nasty_text(40),
        nasty_text(60),
        state(),
        state(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<bool>()),
        0i64..4_000_000_000,
    )
        .prop_map(
            |(host, group, process, from, to, pid, tries, expected, secs)| {
                ev(&process, to)
                    .from(from)
                    .host(&host)
                    .group(&group)
                    .server("s")
                    .pool("p")
                    .pid(pid)
                    .tries(tries)
                    .expected(expected)
                    .at(Utc.timestamp_opt(secs, 0).unwrap())
            },
        )
}

fn crash_context() -> impl Strategy<Value = CrashContext> {
    (
        proptest::option::of(any::<i64>()),
        proptest::option::of(nasty_text(20)),
        proptest::option::of(any::<i64>()),
        proptest::option::of(nasty_text(2000)),
        proptest::option::of(nasty_text(5)),
        proptest::option::of(nasty_text(20)),
    )
        .prop_map(
            |(exit_status, spawn_error, uptime_secs, log_tail, log_name, unavailable)| {
                CrashContext {
                    exit_status,
                    spawn_error,
                    uptime_secs,
                    log_tail,
                    log_name,
                    unavailable,
                }
            },
        )
}

fn strip_date_tokens(text: &str) -> String {
    let mut t = text.to_string();
    while let Some(start) = t.find("<!date^") {
        let end = start + t[start..].find('>').expect("date token closes");
        t.replace_range(start..=end, "");
    }
    t
}

fn assert_card_ok(card: &Card, mentions: &[String]) -> Result<(), TestCaseError> {
    let msg = card.to_message_json();
    if let Err(e) = check_limits(&msg) {
        return Err(TestCaseError::fail(e));
    }
    let size = msg.to_string().encode_utf16().count();
    prop_assert!(
        size <= CARD_BUDGET,
        "card is {} characters, budget {}",
        size,
        CARD_BUDGET
    );
    prop_assert!(
        check_blocks_roundtrip(&card.blocks).is_ok(),
        "{:?}",
        check_blocks_roundtrip(&card.blocks)
    );
    for (path, text) in mrkdwn_texts(&msg) {
        let mut rest = strip_date_tokens(&text);
        for m in mentions {
            rest = rest.replace(m.as_str(), "");
        }
        prop_assert!(
            !rest.contains('<') && !rest.contains('>'),
            "unescaped in {}: {}",
            path,
            text
        );
    }
    let blocks = msg["attachments"][0]["blocks"].as_array().unwrap();
    // A header, or (a routine reply, issue 16) the one line that names everything.
    prop_assert!(
        blocks[0]["type"] == "header" || blocks[0]["type"] == "section",
        "{}",
        blocks[0]
    );
    Ok(())
}

/// The number of states in a run-length sequence such as
/// `STOPPED → (STARTING → BACKOFF) ×3 → FATAL` that follows "changes, oldest first*\n".
fn sequence_len(blocks_json: &str) -> Option<usize> {
    let start = blocks_json.find("changes, oldest first*\\n")? + "changes, oldest first*\\n".len();
    let rest = &blocks_json[start..];
    let seq = &rest[..rest.find('"')?];
    if seq.contains("<!date^") {
        return None;
    }
    let mut total = 0;
    let mut s = seq;
    while !s.is_empty() {
        let (states, after) = if let Some(inner) = s.strip_prefix('(') {
            let close = inner.find(')')?;
            (inner[..close].split(" → ").count(), &inner[close + 1..])
        } else {
            let end = s.find(|c: char| !c.is_ascii_uppercase()).unwrap_or(s.len());
            (1, &s[end..])
        };
        let (count, after) = match after.strip_prefix(" ×") {
            Some(n) => {
                let end = n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len());
                (n[..end].parse::<usize>().ok()?, &n[end..])
            }
            None => (1, after),
        };
        total += states * count;
        s = after.strip_prefix(" → ").unwrap_or(after);
        if s == after && !s.is_empty() {
            return None;
        }
    }
    Some(total)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn parent_cards_stay_within_limits(
        latest in process_state(),
        history in proptest::collection::vec(state(), 0..600),
        env in proptest::option::of(nasty_text(30)),
        flapping in any::<bool>(),
    ) {
        let card = Renderer::builtin().parent(&ParentInput {
            latest: &latest,
            history: &history,
            since: Utc.timestamp_opt(0, 0).unwrap(),
            environment: env.as_deref(),
            flapping,
        });
        assert_card_ok(&card, &[])?;
    }

    #[test]
    fn reply_cards_stay_within_limits(
        events in proptest::collection::vec(process_state(), 1..120),
        env in proptest::option::of(nasty_text(30)),
        notes in proptest::collection::vec(nasty_text(20), 0..40),
        context in proptest::option::of(crash_context()),
        mentions in proptest::collection::vec(proptest::sample::select(vec!["<!subteam^S0123>".to_string(), "<@U999>".to_string(), "<!channel>".to_string()]), 0..200),
    ) {
        let card = Renderer::builtin().reply(&ReplyInput {
            events: &events,
            environment: env.as_deref(),
            notes: &notes,
            context: context.as_ref(),
            mentions: &mentions,
        });
        assert_card_ok(&card, &mentions)?;
        // Every transition is listed, or named in the title, or given as a run-length sequence that expands
        // to all of them, or (when even that does not fit) counted in "… and N more".
        if events.len() > 1 {
            let text = card.blocks.to_string();
            let listed = text.matches("• <!date^").count();
            let sequence = sequence_len(&text);
            // Up to three changes, the title is the whole sequence (issue 16).
            let mut title = vec![events[0].from.as_str()];
            title.extend(events.iter().map(|e| e.to.as_str()));
            let titled = events.len() <= 3 && text.contains(&title.join(" → "));
            prop_assert!(listed == events.len()
                    || titled
                    || sequence == Some(events.len() + 1)
                    || text.contains(&format!("… and {} more", events.len() - listed)),
                "{} of {} listed, sequence {:?}", listed, events.len(), sequence);
        }
    }

    #[test]
    fn plain_text_cards_stay_within_limits(
        events in proptest::collection::vec(process_state(), 1..300),
        parent in any::<bool>(),
    ) {
        let card = plain_text(&events, if parent { Variant::Parent } else { Variant::Reply });
        let msg = card.to_message_json();
        prop_assert!(check_limits(&msg).is_ok(), "{:?}", check_limits(&msg));
        prop_assert!(msg.get("attachments").is_none());
        let text = strip_date_tokens(msg["text"].as_str().unwrap());
        prop_assert!(!text.contains('<'), "{}", text);
        prop_assert!(text.encode_utf16().count() <= 4000);
    }
}

/// Every budget filled at once with the most expensive characters (`<` becomes four).
#[test]
fn worst_case_reply_fits_the_budget() {
    let big = "<\"".repeat(3000);
    let events: Vec<ProcessState> = (0..300)
        .map(|i| {
            ev(&big, State::Exited)
                .from(State::Starting)
                .host(&big)
                .group(&format!("{i}{big}"))
                .server("")
                .pool("")
                .serial(i)
                .pid(u32::MAX)
                .tries(u32::MAX)
                .expected(false)
                .at(Utc.timestamp_opt(4_000_000_000, 0).unwrap())
        })
        .collect();
    let ctx = CrashContext {
        exit_status: Some(i64::MIN),
        spawn_error: Some(big.clone()),
        uptime_secs: Some(i64::MAX),
        log_tail: Some(big.clone()),
        log_name: Some(big.clone()),
        unavailable: Some(big.clone()),
    };
    let notes = vec![big.clone(); 50];
    let mentions = vec!["<!subteam^S0123456789|@a-very-long-team-name>".to_string(); 100];
    let card = Renderer::builtin().reply(&ReplyInput {
        events: &events,
        environment: Some(&big),
        notes: &notes,
        context: Some(&ctx),
        mentions: &mentions,
    });
    let msg = card.to_message_json();
    let size = msg.to_string().encode_utf16().count();
    check_limits(&msg).unwrap();
    assert!(size <= CARD_BUDGET, "{size}");
    // It really is the built-in card, not the last-resort minimal one.
    assert!(
        card.blocks.as_array().unwrap().len() >= 7,
        "{}",
        card.blocks
    );

    let history: Vec<State> = (0..10_000).map(|i| State::ALL[(i * 7) % 8]).collect();
    let parent = Renderer::builtin().parent(&ParentInput {
        latest: &events[0],
        history: &history,
        since: Utc.timestamp_opt(0, 0).unwrap(),
        environment: Some(&big),
        flapping: true,
    });
    let msg = parent.to_message_json();
    check_limits(&msg).unwrap();
    assert!(msg.to_string().encode_utf16().count() <= CARD_BUDGET);
    eprintln!(
        "worst reply {size}, worst parent {}",
        msg.to_string().encode_utf16().count()
    );
}
