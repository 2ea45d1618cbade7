//! The exact JSON of each card, at a fixed time: every state, both variants, a crash
//! reply and the plain-text fallback. Review changes to `tests/snapshots/` like code.

use insta::assert_json_snapshot;
use supervisor_slack::card::samples::{self, event, from_state};
use supervisor_slack::card::*;
use supervisor_slack::supervisord::event::{ProcessState, State};

/// The reply for one event, with no environment, notes, crash context or mentions.
fn reply(ev: &ProcessState) -> Card {
    Renderer::builtin().reply(&ReplyInput {
        events: std::slice::from_ref(ev),
        environment: None,
        notes: &[],
        context: None,
        mentions: &[],
    })
}

#[test]
fn parent_card_for_every_state() {
    for s in State::ALL {
        let ev = event("web-1", "api", "api_0", from_state(s), s, 0);
        let history = [State::Starting, State::Running, from_state(s), s];
        let card = Renderer::builtin().parent(&ParentInput {
            latest: &ev,
            history: &history,
            since: samples::fixed_time() - chrono::Duration::hours(2),
            environment: Some("prod"),
            flapping: false,
        });
        assert_json_snapshot!(
            format!("parent_{}", s.as_str().to_lowercase()),
            card.to_message_json()
        );
    }
}

#[test]
fn reply_card_for_every_state() {
    for s in State::ALL {
        let ev = event("web-1", "api", "api_0", from_state(s), s, 0);
        let card = reply(&ev);
        assert_json_snapshot!(
            format!("reply_{}", s.as_str().to_lowercase()),
            card.to_message_json()
        );
    }
}

#[test]
fn exited_expected_is_grey() {
    let mut ev = event(
        "web-1",
        "worker",
        "worker",
        State::Running,
        State::Exited,
        0,
    );
    ev.expected = Some(true);
    let card = reply(&ev);
    assert_json_snapshot!("reply_exited_expected", card.to_message_json());
}

#[test]
fn crash_loop_cards() {
    let s = samples::all()
        .into_iter()
        .find(|s| s.label == "crash loop with context")
        .unwrap();
    assert_json_snapshot!(
        "parent_crash_loop_flapping",
        Renderer::builtin().parent(&s.parent()).to_message_json()
    );
    assert_json_snapshot!(
        "reply_crash_loop_with_context",
        Renderer::builtin().reply(&s.reply()).to_message_json()
    );
    assert_json_snapshot!(
        "plain_reply_crash_loop",
        plain_text(&s.events, Variant::Reply).to_message_json()
    );
    assert_json_snapshot!(
        "plain_parent_crash_loop",
        plain_text(&s.events, Variant::Parent).to_message_json()
    );
}
