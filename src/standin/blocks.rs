//! Block Kit as the preview page draws it: each block and attachment of a message
//! turned into plain values for `page.html` — text already HTML (through
//! [`mrkdwn`](super::mrkdwn), which escapes everything) and the colour bar's CSS
//! colour checked to be a colour.

use serde::Serialize;
use serde_json::Value;

use super::mrkdwn::{mrkdwn_to_html, plain_to_html};

/// One Block Kit block.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block {
    Header {
        html: String,
    },
    Section {
        text_html: Option<String>,
        fields_html: Option<Vec<String>>,
    },
    Context {
        elements_html: Vec<String>,
    },
    Divider,
    Image {
        alt_html: String,
    },
    Markdown {
        html: String,
    },
    /// A block the page does not draw, named.
    Other {
        name: String,
    },
}

/// One attachment: its colour bar and either blocks or the legacy fields worth seeing.
#[derive(Serialize)]
pub(super) struct Attachment {
    color: String,
    blocks: Option<Vec<Block>>,
    /// `pretext` and `title`.
    headers_html: Vec<String>,
    text_html: Option<String>,
    fields: Option<Vec<Field>>,
    footer_html: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Field {
    title_html: String,
    value_html: String,
}

/// The colour bar's CSS colour: `#RRGGBB` / `#RGB` (with or without `#`) only. Named
/// colours (`good`, `danger`) show grey beside blocks, as Slack is reported to do.
fn bar_color(attachment: &Value) -> String {
    let raw = attachment
        .get("color")
        .and_then(Value::as_str)
        .unwrap_or("");
    let hex = raw.trim_start_matches('#');
    let has_blocks = attachment.get("blocks").is_some();
    if (hex.len() == 6 || hex.len() == 3) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return format!("#{hex}");
    }
    match (raw, has_blocks) {
        ("good", false) => "#2eb886".into(),
        ("warning", false) => "#daa038".into(),
        ("danger", false) => "#a30200".into(),
        _ => "#dddddd".into(),
    }
}

pub(super) fn attachment(a: &Value) -> Attachment {
    let text = |key: &str| a.get(key).and_then(Value::as_str);
    Attachment {
        color: bar_color(a),
        blocks: a.get("blocks").and_then(Value::as_array).map(|b| blocks(b)),
        // A legacy attachment: the few fields worth seeing.
        headers_html: ["pretext", "title"]
            .into_iter()
            .filter_map(text)
            .map(plain_to_html)
            .collect(),
        text_html: text("text").map(mrkdwn_to_html),
        fields: a.get("fields").and_then(Value::as_array).map(|fields| {
            fields
                .iter()
                .map(|f| {
                    let get = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
                    Field {
                        title_html: plain_to_html(get("title")),
                        value_html: mrkdwn_to_html(get("value")),
                    }
                })
                .collect()
        }),
        footer_html: text("footer").map(plain_to_html),
    }
}

/// A text object (`plain_text` or `mrkdwn`) as HTML.
fn text_html(obj: &Value) -> String {
    let text = obj.get("text").and_then(Value::as_str).unwrap_or("");
    match obj.get("type").and_then(Value::as_str) {
        Some("mrkdwn") => mrkdwn_to_html(text),
        _ => plain_to_html(text),
    }
}

fn alt_html(obj: &Value) -> String {
    plain_to_html(
        obj.get("alt_text")
            .and_then(Value::as_str)
            .unwrap_or("image"),
    )
}

pub(super) fn blocks(list: &[Value]) -> Vec<Block> {
    list.iter().map(block).collect()
}

fn block(b: &Value) -> Block {
    match b.get("type").and_then(Value::as_str).unwrap_or("") {
        "header" => Block::Header {
            html: b.get("text").map(text_html).unwrap_or_default(),
        },
        "section" => Block::Section {
            text_html: b.get("text").map(text_html),
            fields_html: b
                .get("fields")
                .and_then(Value::as_array)
                .map(|fields| fields.iter().map(text_html).collect()),
        },
        "context" => Block::Context {
            elements_html: b
                .get("elements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| match e.get("type").and_then(Value::as_str) {
                    Some("image") => format!("[{}]", alt_html(e)),
                    _ => text_html(e),
                })
                .collect(),
        },
        "divider" => Block::Divider,
        "image" => Block::Image {
            alt_html: alt_html(b),
        },
        "markdown" => Block::Markdown {
            html: mrkdwn_to_html(b.get("text").and_then(Value::as_str).unwrap_or("")),
        },
        other => Block::Other {
            name: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colour_bar_accepts_hex_only() {
        assert_eq!(
            bar_color(&json!({"color": "#E01E5A", "blocks": []})),
            "#E01E5A"
        );
        assert_eq!(
            bar_color(&json!({"color": "danger", "blocks": []})),
            "#dddddd"
        );
        assert_eq!(
            bar_color(&json!({"color": "red;background:url(x)"})),
            "#dddddd"
        );
    }
}
