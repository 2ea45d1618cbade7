//! Block Kit as the preview page draws it: each block and attachment of a message
//! turned into plain values for `page.html` — text already HTML (through
//! [`mrkdwn`](super::mrkdwn), which escapes everything), the colour bar's CSS colour
//! checked to be a colour, and the buttons of `actions` blocks with what a click
//! needs (`action_id`, `value`, the `confirm` dialog) as plain strings the template
//! escapes.

use serde::Serialize;
use serde_json::Value;

use super::mrkdwn::{decode_slack, mrkdwn_to_html, plain_to_html};

/// The workspace's users, (id, name), for mentions.
type Users<'a> = &'a [(String, String)];

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
    Actions {
        elements: Vec<Element>,
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

/// One element of an `actions` block.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Element {
    Button {
        text_html: String,
        /// `primary` or `danger`; anything else is the default look.
        style: Option<&'static str>,
        action_id: String,
        value: Option<String>,
        confirm: Option<Confirm>,
    },
    /// An element the page does not draw (a menu, a date picker), named.
    Other { name: String },
}

/// A button's `confirm` dialog, as plain text (the page shows it as text).
#[derive(Serialize)]
pub(super) struct Confirm {
    title: String,
    text: String,
    confirm: String,
    deny: String,
    danger: bool,
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

pub(super) fn attachment(a: &Value, users: Users) -> Attachment {
    let text = |key: &str| a.get(key).and_then(Value::as_str);
    Attachment {
        color: bar_color(a),
        blocks: a
            .get("blocks")
            .and_then(Value::as_array)
            .map(|b| blocks(b, users)),
        // A legacy attachment: the few fields worth seeing.
        headers_html: ["pretext", "title"]
            .into_iter()
            .filter_map(text)
            .map(plain_to_html)
            .collect(),
        text_html: text("text").map(|t| mrkdwn_to_html(t, users)),
        fields: a.get("fields").and_then(Value::as_array).map(|fields| {
            fields
                .iter()
                .map(|f| {
                    let get = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("");
                    Field {
                        title_html: plain_to_html(get("title")),
                        value_html: mrkdwn_to_html(get("value"), users),
                    }
                })
                .collect()
        }),
        footer_html: text("footer").map(plain_to_html),
    }
}

/// A text object (`plain_text` or `mrkdwn`) as HTML.
fn text_html(obj: &Value, users: Users) -> String {
    let text = obj.get("text").and_then(Value::as_str).unwrap_or("");
    match obj.get("type").and_then(Value::as_str) {
        Some("mrkdwn") => mrkdwn_to_html(text, users),
        _ => plain_to_html(text),
    }
}

/// A text object's text as a reader sees it, not HTML.
fn plain(obj: Option<&Value>) -> Option<String> {
    let text = obj?.get("text")?.as_str()?;
    Some(decode_slack(text))
}

fn element(e: &Value) -> Element {
    let str_of = |key: &str| e.get(key).and_then(Value::as_str);
    if str_of("type") != Some("button") {
        return Element::Other {
            name: str_of("type").unwrap_or("element").to_string(),
        };
    }
    Element::Button {
        text_html: plain_to_html(
            e.pointer("/text/text")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        style: match str_of("style") {
            Some("primary") => Some("primary"),
            Some("danger") => Some("danger"),
            _ => None,
        },
        action_id: str_of("action_id").unwrap_or("").to_string(),
        value: str_of("value").map(str::to_owned),
        confirm: e.get("confirm").map(|c| Confirm {
            title: plain(c.get("title")).unwrap_or_else(|| "Are you sure?".into()),
            text: plain(c.get("text")).unwrap_or_default(),
            confirm: plain(c.get("confirm")).unwrap_or_else(|| "Yes".into()),
            deny: plain(c.get("deny")).unwrap_or_else(|| "Cancel".into()),
            danger: c.get("style").and_then(Value::as_str) == Some("danger"),
        }),
    }
}

fn alt_html(obj: &Value) -> String {
    plain_to_html(
        obj.get("alt_text")
            .and_then(Value::as_str)
            .unwrap_or("image"),
    )
}

pub(super) fn blocks(list: &[Value], users: Users) -> Vec<Block> {
    list.iter().map(|b| block(b, users)).collect()
}

fn block(b: &Value, users: Users) -> Block {
    let text_html = |obj: &Value| text_html(obj, users);
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
            html: mrkdwn_to_html(b.get("text").and_then(Value::as_str).unwrap_or(""), users),
        },
        "actions" => Block::Actions {
            elements: b
                .get("elements")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(element)
                .collect(),
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
