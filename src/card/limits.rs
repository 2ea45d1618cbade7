//! Block Kit limits, checked on the JSON Slack would receive. Shared by the renderer
//! (to reject a user template's output), the Slack stand-in and the `check` command.

use serde_json::Value;

use super::text::slack_len;

/// Header text (plain_text) limit.
pub const HEADER_MAX: usize = 150;
/// Section text limit.
pub const SECTION_TEXT_MAX: usize = 3000;
/// Number of fields in a section.
pub const SECTION_FIELDS_MAX: usize = 10;
/// Length of one section field.
pub const SECTION_FIELD_MAX: usize = 2000;
/// Number of elements in a context block.
pub const CONTEXT_ELEMENTS_MAX: usize = 10;
/// Text of one context element (Slack documents none; the field limit is a sane cap).
pub const CONTEXT_TEXT_MAX: usize = 2000;
/// Blocks in a message (or in one attachment).
pub const BLOCKS_MAX: usize = 50;
/// The whole message (text + attachments as JSON). Slack reports `msg_blocks_too_long`
/// near 13k; this is the hard line a card must never cross.
pub const CARD_MAX: usize = 12_000;
/// What the built-in cards aim for, leaving room for the caller's own fields.
pub const CARD_BUDGET: usize = 10_000;

/// Checks a message (`{"text", "attachments": [{color, fallback, blocks}]}` or with
/// top-level `blocks`) against Slack's limits. The error names the limit and the path
/// of the offending value, e.g. `attachments[0].blocks[2] (section): text is 3012
/// characters, limit 3000`.
pub fn check_limits(message_json: &Value) -> Result<(), String> {
    let msg = message_json
        .as_object()
        .ok_or_else(|| "message: not a JSON object".to_string())?;
    match msg.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => {}
        _ => return Err("text: missing or empty (mobile notifications show only this)".into()),
    }
    let total = slack_len(&message_json.to_string());
    if total > CARD_MAX {
        return Err(format!(
            "message: {total} characters of JSON, limit {CARD_MAX}"
        ));
    }
    if let Some(blocks) = msg.get("blocks") {
        check_blocks(blocks, "blocks")?;
    }
    if let Some(atts) = msg.get("attachments") {
        let atts = atts
            .as_array()
            .ok_or_else(|| "attachments: not an array".to_string())?;
        for (i, att) in atts.iter().enumerate() {
            let path = format!("attachments[{i}]");
            let obj = att
                .as_object()
                .ok_or_else(|| format!("{path}: not an object"))?;
            if obj.contains_key("blocks") {
                // Anything else next to blocks gives `invalid_attachments`.
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "color" | "fallback" | "blocks"))
                {
                    return Err(format!(
                        "{path}: key `{k}` next to `blocks` (only color, fallback, blocks allowed)"
                    ));
                }
                check_blocks(&obj["blocks"], &format!("{path}.blocks"))?;
            }
            if let Some(c) = obj.get("color") {
                let ok = c.as_str().is_some_and(|c| {
                    c.len() == 7
                        && c.starts_with('#')
                        && c[1..].chars().all(|d| d.is_ascii_hexdigit())
                });
                if !ok {
                    return Err(format!("{path}.color: {c} is not #RRGGBB"));
                }
            }
        }
    }
    Ok(())
}

fn text_of<'a>(obj: &'a Value, path: &str) -> Result<(&'a str, &'a str), String> {
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}: text object without a type"))?;
    let text = obj
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}: text object without text"))?;
    Ok((kind, text))
}

fn check_blocks(blocks: &Value, path: &str) -> Result<(), String> {
    let blocks = blocks
        .as_array()
        .ok_or_else(|| format!("{path}: not an array"))?;
    if blocks.len() > BLOCKS_MAX {
        return Err(format!(
            "{path}: {} blocks, limit {BLOCKS_MAX}",
            blocks.len()
        ));
    }
    for (i, block) in blocks.iter().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("?");
        let at = format!("{path}[{i}] ({kind})");
        match kind {
            "header" => {
                let text = block.get("text").ok_or_else(|| format!("{at}: no text"))?;
                let (tk, t) = text_of(text, &format!("{at}.text"))?;
                if tk != "plain_text" {
                    return Err(format!("{at}: text is {tk}, must be plain_text"));
                }
                let n = slack_len(t);
                if n > HEADER_MAX {
                    return Err(format!("{at}: text is {n} characters, limit {HEADER_MAX}"));
                }
            }
            "section" => {
                let text = block.get("text");
                let fields = block.get("fields");
                if text.is_none() && fields.is_none() {
                    return Err(format!("{at}: needs text or fields"));
                }
                if let Some(text) = text {
                    let (_, t) = text_of(text, &format!("{at}.text"))?;
                    let n = slack_len(t);
                    if n > SECTION_TEXT_MAX {
                        return Err(format!(
                            "{at}: text is {n} characters, limit {SECTION_TEXT_MAX}"
                        ));
                    }
                }
                if let Some(fields) = fields {
                    let fields = fields
                        .as_array()
                        .ok_or_else(|| format!("{at}.fields: not an array"))?;
                    if fields.len() > SECTION_FIELDS_MAX {
                        return Err(format!(
                            "{at}: {} fields, limit {SECTION_FIELDS_MAX}",
                            fields.len()
                        ));
                    }
                    for (j, f) in fields.iter().enumerate() {
                        let (_, t) = text_of(f, &format!("{at}.fields[{j}]"))?;
                        let n = slack_len(t);
                        if n > SECTION_FIELD_MAX {
                            return Err(format!(
                                "{at}.fields[{j}]: {n} characters, limit {SECTION_FIELD_MAX}"
                            ));
                        }
                    }
                }
            }
            "context" => {
                let elements = block
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("{at}: no elements array"))?;
                if elements.len() > CONTEXT_ELEMENTS_MAX {
                    return Err(format!(
                        "{at}: {} elements, limit {CONTEXT_ELEMENTS_MAX}",
                        elements.len()
                    ));
                }
                for (j, e) in elements.iter().enumerate() {
                    if e.get("type").and_then(Value::as_str) == Some("image") {
                        continue;
                    }
                    let (_, t) = text_of(e, &format!("{at}.elements[{j}]"))?;
                    let n = slack_len(t);
                    if n > CONTEXT_TEXT_MAX {
                        return Err(format!(
                            "{at}.elements[{j}]: {n} characters, limit {CONTEXT_TEXT_MAX}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(blocks: Value) -> Value {
        json!({"text": "t", "attachments": [{"color": "#112233", "fallback": "t", "blocks": blocks}]})
    }

    #[test]
    fn accepts_a_small_card() {
        let m = msg(json!([{"type": "header", "text": {"type": "plain_text", "text": "hi"}}]));
        assert_eq!(check_limits(&m), Ok(()));
    }

    #[test]
    fn names_the_limit_and_the_place() {
        let m = msg(json!([
            {"type": "divider"},
            {"type": "header", "text": {"type": "plain_text", "text": "x".repeat(151)}}
        ]));
        let e = check_limits(&m).unwrap_err();
        assert!(
            e.contains("attachments[0].blocks[1] (header)") && e.contains("limit 150"),
            "{e}"
        );

        let m = msg(
            json!([{"type": "section", "fields": vec![json!({"type": "mrkdwn", "text": "a"}); 11]}]),
        );
        assert!(check_limits(&m)
            .unwrap_err()
            .contains("11 fields, limit 10"));

        let m =
            msg(json!([{"type": "section", "text": {"type": "mrkdwn", "text": "a".repeat(3001)}}]));
        assert!(check_limits(&m).unwrap_err().contains("limit 3000"));

        let m = msg(
            json!([{"type": "context", "elements": vec![json!({"type": "mrkdwn", "text": "a"}); 11]}]),
        );
        assert!(check_limits(&m)
            .unwrap_err()
            .contains("11 elements, limit 10"));

        let m = msg(Value::Array(vec![json!({"type": "divider"}); 51]));
        assert!(check_limits(&m)
            .unwrap_err()
            .contains("51 blocks, limit 50"));
    }

    #[test]
    fn rejects_a_too_long_card_and_stray_attachment_keys() {
        let blocks: Vec<Value> = (0..5)
            .map(|_| json!({"type": "section", "text": {"type": "mrkdwn", "text": "a".repeat(2900)}}))
            .collect();
        assert!(check_limits(&msg(Value::Array(blocks)))
            .unwrap_err()
            .contains("limit 12000"));

        let m =
            json!({"text": "t", "attachments": [{"color": "#112233", "text": "x", "blocks": []}]});
        assert!(check_limits(&m)
            .unwrap_err()
            .contains("`text` next to `blocks`"));

        let m = json!({"text": "t", "attachments": [{"color": "good", "blocks": []}]});
        assert!(check_limits(&m).unwrap_err().contains("#RRGGBB"));

        assert!(check_limits(&json!({"text": ""}))
            .unwrap_err()
            .contains("text"));
    }
}
