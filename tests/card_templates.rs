//! User templates: loading, falling back to the built-in card, and `check_templates`.

use std::fs;

use supervisor_slack::card::samples::{self, event};
use supervisor_slack::card::*;
use supervisor_slack::supervisord::event::State;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

const BUILTIN_PARENT: &str = include_str!("../templates/parent.json.j2");
const BUILTIN_REPLY: &str = include_str!("../templates/reply.json.j2");

fn sample_fatal() -> samples::Sample {
    samples::all()
        .into_iter()
        .find(|s| s.label == "crash loop with context")
        .unwrap()
}

#[test]
fn user_template_is_used_and_missing_one_falls_back_to_builtin() {
    let custom = r#"[{"type": "section", "text": {"type": "mrkdwn", "text": {{ "custom " ~ host ~ " " ~ to }}}}]"#;
    let dir = dir_with(&[("parent.json.j2", custom)]);
    let r = Renderer::from_dir(dir.path()).unwrap();
    let s = sample_fatal();
    let parent = r.parent(&s.parent());
    assert_eq!(parent.blocks[0]["text"]["text"], "custom web-1 FATAL");
    assert_eq!(parent.color, color(State::Fatal, None));
    // No reply.json.j2 in the directory: the built-in reply.
    assert_eq!(r.reply(&s.reply()), Renderer::builtin().reply(&s.reply()));
}

#[test]
fn copies_of_the_builtin_templates_render_the_builtin_cards() {
    let dir = dir_with(&[
        ("parent.json.j2", BUILTIN_PARENT),
        ("reply.json.j2", BUILTIN_REPLY),
    ]);
    let r = Renderer::from_dir(dir.path()).unwrap();
    assert!(r.uses_user_template(Variant::Parent) && r.uses_user_template(Variant::Reply));
    for s in samples::all() {
        assert_eq!(
            r.try_parent(&s.parent()).unwrap(),
            Renderer::builtin().parent(&s.parent())
        );
        assert_eq!(
            r.try_reply(&s.reply()).unwrap(),
            Renderer::builtin().reply(&s.reply())
        );
    }
    assert_eq!(check_templates(dir.path()), Ok(()));
}

#[test]
fn a_broken_user_template_never_loses_the_event() {
    // (what, template, what the error must say)
    let cases = [
        ("not json", "this is not json {{ host }}", "not JSON"),
        ("not an array", r#"{"type": "divider"}"#, "not a JSON array"),
        (
            "unknown key",
            r#"[{"type": "section", "txt": {"type": "mrkdwn", "text": "x"}}]"#,
            "SlackBlock",
        ),
        (
            "too long",
            r#"[{"type": "section", "text": {"type": "mrkdwn", "text": {{ "x" * 4000 }}}}]"#,
            "limit 3000",
        ),
        ("undefined key", "{{ no_such_key }}", "reply.json.j2:1"),
        (
            "attribute of nothing",
            "[\n{{ crash.nope.deeper }}]",
            "reply.json.j2:2",
        ),
    ];
    let s = sample_fatal();
    let builtin = Renderer::builtin().reply(&s.reply());
    for (what, body, says) in cases {
        let dir = dir_with(&[("reply.json.j2", body)]);
        let r = Renderer::from_dir(dir.path()).unwrap();
        let err = r.try_reply(&s.reply()).expect_err(what).to_string();
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(
            r.reply(&s.reply()),
            builtin,
            "{what}: built-in card instead"
        );
    }
}

#[test]
fn syntax_errors_are_reported_with_template_and_line() {
    let dir = dir_with(&[("reply.json.j2", "[\n\n{% if %}\n]")]);
    let err = Renderer::from_dir(dir.path())
        .err()
        .expect("syntax error")
        .to_string();
    assert!(err.contains("reply.json.j2:3"), "{err}");
    let problems = check_templates(dir.path()).unwrap_err();
    assert!(problems[0].contains("reply.json.j2:3"), "{problems:?}");
}

#[test]
fn check_templates_reports_render_errors_with_line_and_limit_breaks() {
    let parent = "[\n{\"type\": \"divider\"},\n{{ missing.value }}\n]";
    let reply = r#"[{"type": "header", "text": {"type": "plain_text", "text": {{ plain.name }}}}]"#;
    let dir = dir_with(&[("parent.json.j2", parent), ("reply.json.j2", reply)]);
    let problems = check_templates(dir.path()).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("parent.json.j2:3")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("reply.json.j2") && p.contains("limit 150")),
        "{problems:?}"
    );
}

#[test]
fn check_templates_catches_raw_text_in_mrkdwn() {
    let reply = r#"[{"type": "section", "text": {"type": "mrkdwn", "text": {{ plain.host }}}}]"#;
    let dir = dir_with(&[("reply.json.j2", reply)]);
    let problems = check_templates(dir.path()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unescaped") && p.contains("<!channel>")),
        "{problems:?}"
    );
}

#[test]
fn a_missing_directory_is_an_error_and_an_empty_one_is_builtin() {
    assert!(Renderer::from_dir(std::path::Path::new("/nonexistent/templates")).is_err());
    let dir = tempfile::tempdir().unwrap();
    let r = Renderer::from_dir(dir.path()).unwrap();
    let ev = event("h", "g", "p", State::Starting, State::Running, 0);
    let input = ReplyInput {
        events: std::slice::from_ref(&ev),
        environment: None,
        notes: &[],
        context: None,
        mentions: &[],
    };
    assert_eq!(r.reply(&input), Renderer::builtin().reply(&input));
    assert_eq!(check_templates(dir.path()), Ok(()));
}

#[test]
fn renderer_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Renderer>();
}
