//! The payload checks Slack applies to `chat.postMessage`, `chat.update` and
//! `chat.postEphemeral`, reduced to the ones this project can trip over: Block Kit
//! size limits (buttons and their `confirm` dialogs included), blocks next to legacy
//! attachment fields, and messages with nothing to show.
//!
//! Pure functions over the request body, so the limits can be read (and tested) apart
//! from the server. A refusal carries Slack's error code and, like Slack, a short
//! human-readable reason that names the offending JSON pointer.

use std::collections::HashSet;

use serde_json::Value;

/// Most blocks Slack accepts in one message (and in one attachment).
pub const MAX_BLOCKS: usize = 50;
/// Longest `header` text (`plain_text`), in characters.
pub const MAX_HEADER_TEXT: usize = 150;
/// Longest `section` text, in characters.
pub const MAX_SECTION_TEXT: usize = 3000;
/// Most `fields` in a section.
pub const MAX_SECTION_FIELDS: usize = 10;
/// Longest single section field, in characters.
pub const MAX_FIELD_TEXT: usize = 2000;
/// Most elements in a `context` block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Longest top-level `text` Slack takes before answering `msg_too_long`.
pub const MAX_MESSAGE_TEXT: usize = 40_000;
/// Most attachments in one message.
pub const MAX_ATTACHMENTS: usize = 100;
/// Longest `block_id`.
pub const MAX_BLOCK_ID: usize = 255;
/// Most elements in an `actions` block.
pub const MAX_ACTIONS_ELEMENTS: usize = 25;
/// Longest `action_id`.
pub const MAX_ACTION_ID: usize = 255;
/// Longest button text (`plain_text`).
pub const MAX_BUTTON_TEXT: usize = 75;
/// Longest button `value`.
pub const MAX_BUTTON_VALUE: usize = 2000;
/// Longest `confirm` dialog title.
pub const MAX_CONFIRM_TITLE: usize = 100;
/// Longest `confirm` dialog text.
pub const MAX_CONFIRM_TEXT: usize = 300;
/// Longest label of a `confirm` dialog's confirm and deny buttons.
pub const MAX_CONFIRM_BUTTON: usize = 30;

/// Keys an attachment may hold beside `blocks`. Anything else there (`text`, `title`,
/// `fields`, `callback_id`, ...) is a legacy field, and Slack refuses the mix with
/// `invalid_attachments`.
const ATTACHMENT_KEYS_WITH_BLOCKS: &[&str] = &["blocks", "color", "fallback", "id"];

/// Block types Slack knows; anything else is `invalid_blocks`.
const KNOWN_BLOCK_TYPES: &[&str] = &[
    "section",
    "header",
    "context",
    "divider",
    "image",
    "actions",
    "rich_text",
    "input",
    "file",
    "video",
    "markdown",
    "context_actions",
    "table",
];

/// Why Slack would refuse a payload: the error `code` it answers with and a reason
/// for humans (Slack sends similar text in the response's `errors` array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Slack's error code, e.g. `invalid_blocks`.
    pub code: &'static str,
    /// What exactly was wrong, with a JSON pointer into the request.
    pub reason: String,
}

impl Refusal {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// Checks the content of a `chat.postMessage` / `chat.update` body (`text`, `blocks`,
/// `attachments`) against Slack's limits. `blocks_text_limit` is the total number of
/// characters of text all blocks together may carry before `msg_blocks_too_long`.
pub fn check_message(body: &Value, blocks_text_limit: usize) -> Result<(), Refusal> {
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    let blocks = body.get("blocks");
    let attachments = body.get("attachments");

    if text.chars().count() > MAX_MESSAGE_TEXT {
        return Err(Refusal::new(
            "msg_too_long",
            format!("text is longer than {MAX_MESSAGE_TEXT} characters"),
        ));
    }

    let mut blocks_text = 0usize;
    let mut has_blocks = false;
    if let Some(blocks) = blocks.filter(|b| !b.is_null()) {
        let list = blocks.as_array().ok_or_else(|| {
            Refusal::new(
                "invalid_blocks",
                "blocks must be an array [json-pointer:/blocks]",
            )
        })?;
        has_blocks = !list.is_empty();
        blocks_text += check_blocks(list, "/blocks")?;
    }

    let mut has_attachments = false;
    if let Some(attachments) = attachments.filter(|a| !a.is_null()) {
        let list = attachments.as_array().ok_or_else(|| {
            Refusal::new(
                "invalid_attachments",
                "attachments must be an array [json-pointer:/attachments]",
            )
        })?;
        if list.len() > MAX_ATTACHMENTS {
            return Err(Refusal::new(
                "too_many_attachments",
                format!("more than {MAX_ATTACHMENTS} attachments"),
            ));
        }
        has_attachments = !list.is_empty();
        for (i, attachment) in list.iter().enumerate() {
            blocks_text += check_attachment(attachment, &format!("/attachments/{i}"))?;
        }
    }

    if blocks_text > blocks_text_limit {
        return Err(Refusal::new(
            "msg_blocks_too_long",
            format!("blocks carry {blocks_text} characters of text, more than {blocks_text_limit}"),
        ));
    }
    if text.trim().is_empty() && !has_blocks && !has_attachments {
        return Err(Refusal::new("no_text", "no text, blocks or attachments"));
    }
    Ok(())
}

/// Checks one attachment; returns the characters of text its blocks carry.
fn check_attachment(attachment: &Value, at: &str) -> Result<usize, Refusal> {
    let obj = attachment.as_object().ok_or_else(|| {
        Refusal::new(
            "invalid_attachments",
            format!("attachment must be an object [json-pointer:{at}]"),
        )
    })?;
    let Some(blocks) = obj.get("blocks") else {
        return Ok(0);
    };
    if let Some(legacy) = obj
        .keys()
        .find(|k| !ATTACHMENT_KEYS_WITH_BLOCKS.contains(&k.as_str()))
    {
        return Err(Refusal::new(
            "invalid_attachments",
            format!("legacy field `{legacy}` beside blocks [json-pointer:{at}/{legacy}]"),
        ));
    }
    let list = blocks.as_array().ok_or_else(|| {
        Refusal::new(
            "invalid_attachments",
            format!("blocks must be an array [json-pointer:{at}/blocks]"),
        )
    })?;
    check_blocks(list, &format!("{at}/blocks"))
}

/// Checks a list of blocks; returns the characters of text they carry.
fn check_blocks(blocks: &[Value], at: &str) -> Result<usize, Refusal> {
    if blocks.len() > MAX_BLOCKS {
        return Err(invalid(
            format!("no more than {MAX_BLOCKS} items allowed"),
            at,
        ));
    }
    let mut total = 0;
    for (i, block) in blocks.iter().enumerate() {
        total += check_block(block, &format!("{at}/{i}"))?;
    }
    Ok(total)
}

fn invalid(reason: impl std::fmt::Display, at: &str) -> Refusal {
    Refusal::new("invalid_blocks", format!("{reason} [json-pointer:{at}]"))
}

/// Checks one block; returns the characters of text it carries.
fn check_block(block: &Value, at: &str) -> Result<usize, Refusal> {
    let kind = block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing required field: type", at))?;
    if !KNOWN_BLOCK_TYPES.contains(&kind) {
        return Err(invalid(
            format!("unknown block type `{kind}`"),
            &format!("{at}/type"),
        ));
    }
    if let Some(id) = block.get("block_id").and_then(Value::as_str) {
        if id.chars().count() > MAX_BLOCK_ID {
            return Err(invalid(
                format!("must be less than {} characters", MAX_BLOCK_ID + 1),
                &format!("{at}/block_id"),
            ));
        }
    }
    match kind {
        "header" => {
            let text = block
                .get("text")
                .ok_or_else(|| invalid("missing required field: text", at))?;
            if text.get("type").and_then(Value::as_str) != Some("plain_text") {
                return Err(invalid(
                    "must be a plain_text text object",
                    &format!("{at}/text"),
                ));
            }
            text_object(text, MAX_HEADER_TEXT, &format!("{at}/text"))
        }
        "section" => {
            let mut total = 0;
            let text = block.get("text");
            let fields = block.get("fields").and_then(Value::as_array);
            if text.is_none() && fields.is_none() {
                return Err(invalid("must provide either text or fields", at));
            }
            if let Some(text) = text {
                total += text_object(text, MAX_SECTION_TEXT, &format!("{at}/text"))?;
            }
            if let Some(fields) = fields {
                if fields.len() > MAX_SECTION_FIELDS {
                    return Err(invalid(
                        format!("no more than {MAX_SECTION_FIELDS} items allowed"),
                        &format!("{at}/fields"),
                    ));
                }
                for (i, field) in fields.iter().enumerate() {
                    total += text_object(field, MAX_FIELD_TEXT, &format!("{at}/fields/{i}"))?;
                }
            }
            Ok(total)
        }
        "context" => {
            let elements = block
                .get("elements")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("missing required field: elements", at))?;
            if elements.is_empty() || elements.len() > MAX_CONTEXT_ELEMENTS {
                return Err(invalid(
                    format!("must have between 1 and {MAX_CONTEXT_ELEMENTS} items"),
                    &format!("{at}/elements"),
                ));
            }
            let mut total = 0;
            for (i, element) in elements.iter().enumerate() {
                let at = format!("{at}/elements/{i}");
                match element.get("type").and_then(Value::as_str) {
                    Some("mrkdwn") | Some("plain_text") => {
                        total += text_object(element, MAX_SECTION_TEXT, &at)?
                    }
                    Some("image") => {}
                    _ => return Err(invalid("must be a text object or an image", &at)),
                }
            }
            Ok(total)
        }
        "actions" => {
            let elements = block
                .get("elements")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("missing required field: elements", at))?;
            if elements.is_empty() || elements.len() > MAX_ACTIONS_ELEMENTS {
                return Err(invalid(
                    format!("must have between 1 and {MAX_ACTIONS_ELEMENTS} items"),
                    &format!("{at}/elements"),
                ));
            }
            let mut action_ids = HashSet::new();
            for (i, element) in elements.iter().enumerate() {
                let at = format!("{at}/elements/{i}");
                if let Some(id) = element.get("action_id").and_then(Value::as_str) {
                    let at = format!("{at}/action_id");
                    at_most(id, MAX_ACTION_ID, &at)?;
                    if !action_ids.insert(id) {
                        return Err(invalid("action_id must be unique in its block", &at));
                    }
                }
                if element.get("type").and_then(Value::as_str) == Some("button") {
                    check_button(element, &at)?;
                }
            }
            // Button labels are not counted toward `msg_blocks_too_long`: whether Slack
            // counts them is unverified.
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// Checks a button: `plain_text` text, `value`, and its `confirm` dialog if any.
fn check_button(button: &Value, at: &str) -> Result<(), Refusal> {
    let text = button
        .get("text")
        .ok_or_else(|| invalid("missing required field: text", at))?;
    plain_text(text, MAX_BUTTON_TEXT, &format!("{at}/text"))?;
    if let Some(value) = button.get("value").and_then(Value::as_str) {
        at_most(value, MAX_BUTTON_VALUE, &format!("{at}/value"))?;
    }
    let Some(confirm) = button.get("confirm") else {
        return Ok(());
    };
    let at = format!("{at}/confirm");
    for (key, max, plain_only) in [
        ("title", MAX_CONFIRM_TITLE, true),
        ("text", MAX_CONFIRM_TEXT, false),
        ("confirm", MAX_CONFIRM_BUTTON, true),
        ("deny", MAX_CONFIRM_BUTTON, true),
    ] {
        let obj = confirm
            .get(key)
            .ok_or_else(|| invalid(format!("missing required field: {key}"), &at))?;
        let at = format!("{at}/{key}");
        if plain_only {
            plain_text(obj, max, &at)?;
        } else {
            text_object(obj, max, &at)?;
        }
    }
    Ok(())
}

/// Checks a `plain_text` text object of 1..=`max` characters.
fn plain_text(obj: &Value, max: usize, at: &str) -> Result<usize, Refusal> {
    if obj.get("type").and_then(Value::as_str) != Some("plain_text") {
        return Err(invalid("must be a plain_text text object", at));
    }
    text_object(obj, max, at)
}

/// Refuses a string longer than `max` characters.
fn at_most(s: &str, max: usize, at: &str) -> Result<(), Refusal> {
    if s.chars().count() > max {
        return Err(invalid(
            format!("must be less than {} characters", max + 1),
            at,
        ));
    }
    Ok(())
}

/// Checks a `plain_text` / `mrkdwn` text object: 1..=`max` characters.
fn text_object(obj: &Value, max: usize, at: &str) -> Result<usize, Refusal> {
    match obj.get("type").and_then(Value::as_str) {
        Some("plain_text") | Some("mrkdwn") => {}
        _ => {
            return Err(invalid(
                "must be a text object (plain_text or mrkdwn)",
                &format!("{at}/type"),
            ))
        }
    }
    let text = obj
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing required field: text", at))?;
    let len = text.chars().count();
    if len == 0 {
        return Err(invalid(
            "must be more than 0 characters",
            &format!("{at}/text"),
        ));
    }
    if len > max {
        return Err(invalid(
            format!("must be less than {} characters", max + 1),
            &format!("{at}/text"),
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn card(blocks: Value) -> Value {
        json!({"text": "t", "attachments": [{"color": "#2EB67D", "fallback": "t", "blocks": blocks}]})
    }

    #[test]
    fn a_plain_card_passes() {
        let body = card(json!([
            {"type": "header", "text": {"type": "plain_text", "text": "web:nginx RUNNING"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*host*\nalpha"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "pid 42"}]}
        ]));
        assert_eq!(check_message(&body, 12_000), Ok(()));
    }

    #[test]
    fn header_of_151_characters_is_invalid_blocks() {
        let body = card(
            json!([{"type": "header", "text": {"type": "plain_text", "text": "é".repeat(151)}}]),
        );
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "invalid_blocks"
        );
        let body = card(
            json!([{"type": "header", "text": {"type": "plain_text", "text": "é".repeat(150)}}]),
        );
        assert_eq!(check_message(&body, 12_000), Ok(()));
    }

    #[test]
    fn legacy_text_beside_blocks_is_invalid_attachments() {
        let body = json!({"text": "t", "attachments": [{"color": "#000000", "text": "x",
            "blocks": [{"type": "divider"}]}]});
        let refusal = check_message(&body, 12_000).unwrap_err();
        assert_eq!(refusal.code, "invalid_attachments");
        assert!(
            refusal.reason.contains("/attachments/0/text"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn eleven_fields_and_long_fields_are_invalid_blocks() {
        let field = json!({"type": "mrkdwn", "text": "x"});
        let body = card(json!([{"type": "section", "fields": vec![field; 11]}]));
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "invalid_blocks"
        );
        let body = card(
            json!([{"type": "section", "fields": [{"type": "mrkdwn", "text": "x".repeat(2001)}]}]),
        );
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "invalid_blocks"
        );
    }

    #[test]
    fn too_many_blocks_or_context_elements_are_invalid_blocks() {
        let body = card(Value::Array(vec![json!({"type": "divider"}); 51]));
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "invalid_blocks"
        );
        let el = json!({"type": "plain_text", "text": "x"});
        let body = card(json!([{"type": "context", "elements": vec![el; 11]}]));
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "invalid_blocks"
        );
    }

    fn actions(elements: Value) -> Value {
        card(json!([{"type": "actions", "block_id": "act", "elements": elements}]))
    }

    fn button(action_id: &str, text: &str) -> Value {
        json!({"type": "button", "action_id": action_id, "value": "v",
               "text": {"type": "plain_text", "text": text}})
    }

    #[test]
    fn buttons_within_limits_pass_and_overlong_ones_are_invalid_blocks() {
        let mut ok = button("restart", &"r".repeat(75));
        ok["style"] = json!("danger");
        ok["confirm"] = json!({
            "title": {"type": "plain_text", "text": "t".repeat(100)},
            "text": {"type": "mrkdwn", "text": "x".repeat(300)},
            "confirm": {"type": "plain_text", "text": "y".repeat(30)},
            "deny": {"type": "plain_text", "text": "n".repeat(30)}
        });
        assert_eq!(check_message(&actions(json!([ok.clone()])), 12_000), Ok(()));
        let too_long = |pointer: &str, len: usize| {
            let mut b = ok.clone();
            *b.pointer_mut(pointer).unwrap() = json!("z".repeat(len));
            check_message(&actions(json!([b])), 12_000).unwrap_err()
        };
        for (pointer, len) in [
            ("/text/text", 76),
            ("/value", 2001),
            ("/action_id", 256),
            ("/confirm/title/text", 101),
            ("/confirm/text/text", 301),
            ("/confirm/confirm/text", 31),
            ("/confirm/deny/text", 31),
        ] {
            let refusal = too_long(pointer, len);
            assert_eq!(refusal.code, "invalid_blocks", "{pointer}");
            assert!(
                refusal
                    .reason
                    .contains(&format!("/elements/0{}", pointer.trim_end_matches("/text"))),
                "{pointer}: {}",
                refusal.reason
            );
        }
    }

    #[test]
    fn actions_blocks_hold_1_to_25_elements_with_unique_action_ids() {
        let many: Vec<Value> = (0..26).map(|i| button(&format!("b{i}"), "x")).collect();
        assert_eq!(check_message(&actions(json!(many[..25])), 12_000), Ok(()));
        for elements in [
            json!(many),
            json!([]),
            json!([button("a", "x"), button("a", "y")]),
        ] {
            assert_eq!(
                check_message(&actions(elements), 12_000).unwrap_err().code,
                "invalid_blocks"
            );
        }
        let markdown_label = json!([{"type": "button", "action_id": "a",
                                     "text": {"type": "mrkdwn", "text": "*x*"}}]);
        assert_eq!(
            check_message(&actions(markdown_label), 12_000)
                .unwrap_err()
                .code,
            "invalid_blocks",
            "a button's text is plain_text"
        );
    }

    #[test]
    fn blocks_that_carry_too_much_text_are_msg_blocks_too_long() {
        let section =
            json!({"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3000)}});
        let body = card(Value::Array(vec![section; 5]));
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "msg_blocks_too_long"
        );
    }

    #[test]
    fn nothing_to_show_is_no_text_and_huge_text_is_msg_too_long() {
        assert_eq!(
            check_message(&json!({"channel": "C1"}), 12_000)
                .unwrap_err()
                .code,
            "no_text"
        );
        assert_eq!(
            check_message(&json!({"text": " ", "blocks": []}), 12_000)
                .unwrap_err()
                .code,
            "no_text"
        );
        let body = json!({"text": "x".repeat(40_001)});
        assert_eq!(
            check_message(&body, 12_000).unwrap_err().code,
            "msg_too_long"
        );
    }
}
