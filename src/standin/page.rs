//! The preview page: the stand-in's channels drawn the way Slack's desktop client draws
//! them, so a card can be judged by eye (and screenshotted for the README). Parents
//! carry their attachment's colour bar, blocks are rendered readably, threads sit
//! beneath their parent in a `<details>`, broadcast replies also appear in the channel,
//! edits are marked. Every string from a message goes through [`mrkdwn`] escaping.
//! `?thread=TS` shows one thread alone; `?collapsed=1` folds every thread to its
//! "N replies" line, as Slack's channel view does (see [`View`]).
//!
//! The page refreshes itself every 2 s with a small fetch loop that swaps the message
//! list and keeps open/closed threads as the reader left them.

use chrono::{Local, TimeZone};
use serde_json::Value;

use super::mrkdwn::{escape_html, mrkdwn_to_html, plain_to_html};
use super::{Message, Thread};

/// One channel as the page needs it.
#[derive(Debug, Clone)]
pub struct ChannelView {
    /// Channel id, e.g. `C0STANDIN1`.
    pub id: String,
    /// Name, if the channel was addressed by name.
    pub name: Option<String>,
    /// Parents with their replies.
    pub threads: Vec<Thread>,
    /// What the channel itself shows: parents and broadcast replies, in order.
    pub flow: Vec<Message>,
}

impl ChannelView {
    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.clone())
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:"Slack-Lato","Lato","Helvetica Neue",-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:15px;line-height:1.46668;color:#1d1c1d;background:#fff;display:flex;min-height:100vh}
nav{width:220px;flex:none;background:#3f0e40;color:#cfc3cf;padding:12px 0}
nav h1{font-size:18px;color:#fff;margin:0 16px 14px;font-weight:900}
nav a{display:block;padding:2px 16px;color:#cfc3cf;text-decoration:none}
nav a.on{background:#1164a3;color:#fff}
nav .hint{margin:18px 16px 0;font-size:12px;opacity:.7;word-break:break-all}
main{flex:1;min-width:0}
header.top{border-bottom:1px solid #ddd;padding:10px 20px;font-weight:900;font-size:18px;position:sticky;top:0;background:#fff;z-index:1}
header.top small{font-weight:400;color:#616061;font-size:13px;margin-left:8px}
#flow{max-width:960px;padding:8px 0 40px}
.msg{display:flex;padding:8px 20px;gap:8px}
.msg:hover{background:#f8f8f8}
.avatar{width:36px;height:36px;border-radius:4px;background:#4a154b;color:#fff;font-weight:900;display:flex;align-items:center;justify-content:center;flex:none;font-size:13px}
.body{flex:1;min-width:0}
.who{font-weight:900}
.app{background:#e8e8e8;color:#616061;font-size:10px;font-weight:700;padding:1px 3px;border-radius:2px;margin-left:4px;vertical-align:1px}
.time,.edited,.broadcast{color:#616061;font-size:12px;margin-left:6px}
.text{word-wrap:break-word}
.att{display:flex;margin:4px 0}
.bar{width:4px;border-radius:8px;flex:none;background:#dddddd}
.att-body{padding:2px 12px;min-width:0;flex:1}
.hdr{font-weight:900;font-size:17px;margin:4px 0}
.section{margin:4px 0}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:6px 16px;margin:4px 0}
.context{color:#616061;font-size:12px;margin:4px 0}
.context span+span{margin-left:8px}
hr{border:none;border-top:1px solid #ddd;margin:8px 0}
code{font-family:Monaco,Menlo,Consolas,"Courier New",monospace;font-size:12px;color:#e01e5a;background:#f6f6f6;border:1px solid #ddd;border-radius:3px;padding:1px 3px}
pre{font-family:Monaco,Menlo,Consolas,"Courier New",monospace;font-size:12px;background:#f8f8f8;border:1px solid #ddd;border-radius:4px;padding:8px;margin:4px 0;white-space:pre-wrap;word-break:break-all}
a{color:#1264a3}
.mention{background:#e8f5fa;color:#1264a3;border-radius:3px;padding:0 2px}
details.thread{margin:4px 0 0}
details.thread>summary{color:#1264a3;font-weight:700;font-size:13px;cursor:pointer;list-style:none}
details.thread>summary::-webkit-details-marker{display:none}
details.thread>summary .last{color:#616061;font-weight:400;margin-left:6px}
.replies{border-left:2px solid #e8e8e8;margin:6px 0 0 2px}
.replies .msg{padding:6px 12px}
.parent-ref{color:#616061;font-size:13px}
.empty{color:#616061;padding:40px 20px}
"#;

const SCRIPT: &str = r#"
(function(){
  function closedThreads(){return Array.from(document.querySelectorAll('details.thread:not([open])')).map(function(d){return d.id});}
  setInterval(function(){
    fetch(location.href,{cache:'no-store'}).then(function(r){return r.text()}).then(function(html){
      var doc=new DOMParser().parseFromString(html,'text/html');
      var next=doc.getElementById('flow'), cur=document.getElementById('flow');
      if(!next||!cur||next.innerHTML===cur.innerHTML)return;
      var closed=closedThreads();
      cur.innerHTML=next.innerHTML;
      closed.forEach(function(id){var d=document.getElementById(id);if(d)d.removeAttribute('open')});
      var nav=doc.querySelector('nav');if(nav)document.querySelector('nav').innerHTML=nav.innerHTML;
    }).catch(function(){});
  },2000);
})();
"#;

/// What the page shows, from its query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct View<'a> {
    /// `?channel=`: a channel name or id; default: the channel posted to most recently
    /// (or, with `thread`, the channel holding that thread).
    pub channel: Option<&'a str>,
    /// `?thread=TS`: only this thread (its parent and every reply, unfolded).
    pub thread: Option<&'a str>,
    /// `?collapsed=1`: threads folded to their "N replies" line, as Slack's channel
    /// view shows them.
    pub collapsed: bool,
}

/// Renders the whole page for `selected` (a channel name or id; default: the channel
/// posted to most recently).
pub fn render(channels: &[ChannelView], selected: Option<&str>, api_url: &str) -> String {
    render_view(
        channels,
        &View {
            channel: selected,
            ..View::default()
        },
        api_url,
    )
}

/// Renders the page for a [`View`].
pub fn render_view(channels: &[ChannelView], view: &View<'_>, api_url: &str) -> String {
    let holds_thread = |c: &ChannelView| {
        view.thread
            .is_some_and(|ts| c.threads.iter().any(|t| t.parent.ts == ts))
    };
    let current = view
        .channel
        .and_then(|s| {
            let s = s.trim_start_matches('#');
            channels
                .iter()
                .position(|c| c.id == s || c.name.as_deref() == Some(s))
        })
        .or_else(|| channels.iter().position(holds_thread))
        .or_else(|| {
            channels
                .iter()
                .enumerate()
                .max_by(|a, b| last_ts(a.1).total_cmp(&last_ts(b.1)))
                .map(|(i, _)| i)
        });
    let mut html = String::with_capacity(16 * 1024);
    html.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    let title = current.map(|i| format!("#{} · Slack stand-in", channels[i].label()));
    html.push_str(&format!(
        "<title>{}</title>",
        escape_html(title.as_deref().unwrap_or("Slack stand-in"))
    ));
    html.push_str(&format!("<style>{STYLE}</style></head><body>"));

    html.push_str("<nav><h1>Slack stand-in</h1>");
    for (i, c) in channels.iter().enumerate() {
        let class = if Some(i) == current {
            " class=\"on\""
        } else {
            ""
        };
        html.push_str(&format!(
            "<a href=\"/?channel={}\"{class}># {}</a>",
            escape_html(&c.id),
            escape_html(&c.label())
        ));
    }
    html.push_str(&format!(
        "<div class=\"hint\">API: {}</div></nav>",
        escape_html(api_url)
    ));

    html.push_str("<main>");
    match (current, view.thread) {
        (Some(i), Some(ts)) => {
            let c = &channels[i];
            let thread = c.threads.iter().find(|t| t.parent.ts == ts);
            html.push_str(&format!(
                "<header class=\"top\">Thread<small><a href=\"/?channel={}\"># {}</a> · {} replies</small></header>",
                escape_html(&c.id),
                escape_html(&c.label()),
                thread.map(|t| t.replies.len()).unwrap_or(0)
            ));
            html.push_str("<div id=\"flow\">");
            match thread {
                Some(t) => render_thread(&mut html, c, &t.parent, false),
                None => html.push_str(&format!(
                    "<div class=\"empty\">No thread starts at ts {} in this channel.</div>",
                    escape_html(ts)
                )),
            }
            html.push_str("</div>");
        }
        (Some(i), None) => {
            let c = &channels[i];
            html.push_str(&format!(
                "<header class=\"top\"># {}<small>{} · {} messages</small></header>",
                escape_html(&c.label()),
                escape_html(&c.id),
                c.threads.iter().map(|t| 1 + t.replies.len()).sum::<usize>()
            ));
            html.push_str("<div id=\"flow\">");
            render_channel(&mut html, c, view.collapsed);
            html.push_str("</div>");
        }
        (None, _) => html.push_str(
            "<header class=\"top\">No messages yet</header><div id=\"flow\"><div class=\"empty\">\
             Nothing has been posted to the stand-in yet. This page refreshes by itself.</div></div>",
        ),
    }
    html.push_str(&format!("</main><script>{SCRIPT}</script></body></html>"));
    html
}

fn last_ts(c: &ChannelView) -> f64 {
    c.threads
        .iter()
        .flat_map(|t| std::iter::once(&t.parent).chain(t.replies.iter()))
        .map(|m| m.ts.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, f64::max)
}

fn render_channel(html: &mut String, channel: &ChannelView, collapsed: bool) {
    for m in &channel.flow {
        if let Some(parent_ts) = &m.thread_ts {
            // A broadcast reply, shown in the channel with a pointer to its thread.
            let parent = channel.threads.iter().find(|t| &t.parent.ts == parent_ts);
            let about = parent
                .map(|t| {
                    t.parent
                        .header()
                        .or(t.parent.text.clone())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let note = format!(
                "<div class=\"parent-ref\">replied to a thread: <a href=\"#t{}\">{}</a></div>",
                anchor(parent_ts),
                plain_to_html(&truncate(&about, 80))
            );
            render_message(html, m, &note, "");
            continue;
        }
        render_thread(html, channel, m, collapsed);
    }
}

/// A parent message with its replies beneath it in a `<details>` (folded when
/// `collapsed`).
fn render_thread(html: &mut String, channel: &ChannelView, m: &Message, collapsed: bool) {
    let thread = channel.threads.iter().find(|t| t.parent.ts == m.ts);
    let replies = thread.map(|t| t.replies.as_slice()).unwrap_or(&[]);
    let mut below = String::new();
    if !replies.is_empty() {
        let last = replies.last().map(|r| time_of(&r.ts)).unwrap_or_default();
        below.push_str(&format!(
            "<details class=\"thread\" id=\"t{}\"{}><summary>{} {}<span class=\"last\">Last reply {}</span></summary><div class=\"replies\">",
            anchor(&m.ts),
            if collapsed { "" } else { " open" },
            replies.len(),
            if replies.len() == 1 { "reply" } else { "replies" },
            escape_html(&last)
        ));
        for r in replies {
            render_message(&mut below, r, "", "");
        }
        below.push_str("</div></details>");
    }
    render_message(html, m, "", &below);
}

fn anchor(ts: &str) -> String {
    ts.replace('.', "-")
}

fn truncate(s: &str, max: usize) -> String {
    let first_line = s.lines().next().unwrap_or("");
    if first_line.chars().count() > max {
        format!("{}…", first_line.chars().take(max).collect::<String>())
    } else {
        first_line.to_string()
    }
}

/// The reader's local time of a `ts`.
fn time_of(ts: &str) -> String {
    let secs = ts
        .split('.')
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    Local
        .timestamp_opt(secs, 0)
        .single()
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn render_message(html: &mut String, m: &Message, before: &str, after: &str) {
    html.push_str(&format!(
        "<div class=\"msg\" id=\"m{}\" data-ts=\"{}\">",
        anchor(&m.ts),
        escape_html(&m.ts)
    ));
    html.push_str("<div class=\"avatar\">SV</div><div class=\"body\">");
    html.push_str(before);
    html.push_str("<div><span class=\"who\">supervisor-slack</span><span class=\"app\">APP</span>");
    html.push_str(&format!(
        "<span class=\"time\" title=\"{0}\">{1}</span>",
        escape_html(&m.ts),
        escape_html(&time_of(&m.ts))
    ));
    if m.edited.is_some() {
        html.push_str("<span class=\"edited\">(edited)</span>");
    }
    if m.reply_broadcast {
        html.push_str("<span class=\"broadcast\">also sent to the channel</span>");
    }
    html.push_str("</div>");

    let top_blocks = m
        .blocks
        .as_ref()
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty());
    match top_blocks {
        // With top-level blocks, `text` is only the notification fallback.
        Some(blocks) => render_blocks(html, blocks),
        None => {
            if let Some(text) = m.text.as_deref().filter(|t| !t.is_empty()) {
                html.push_str(&format!(
                    "<div class=\"text\">{}</div>",
                    mrkdwn_to_html(text)
                ));
            }
        }
    }
    for attachment in m
        .attachments
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        render_attachment(html, attachment);
    }
    html.push_str(after);
    html.push_str("</div></div>");
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

fn render_attachment(html: &mut String, a: &Value) {
    html.push_str(&format!(
        "<div class=\"att\"><div class=\"bar\" style=\"background:{}\"></div><div class=\"att-body\">",
        bar_color(a)
    ));
    if let Some(blocks) = a.get("blocks").and_then(Value::as_array) {
        render_blocks(html, blocks);
    } else {
        // A legacy attachment: the few fields worth seeing.
        for key in ["pretext", "title"] {
            if let Some(t) = a.get(key).and_then(Value::as_str) {
                html.push_str(&format!("<div class=\"hdr\">{}</div>", plain_to_html(t)));
            }
        }
        if let Some(t) = a.get("text").and_then(Value::as_str) {
            html.push_str(&format!(
                "<div class=\"section\">{}</div>",
                mrkdwn_to_html(t)
            ));
        }
        if let Some(fields) = a.get("fields").and_then(Value::as_array) {
            html.push_str("<div class=\"fields\">");
            for f in fields {
                let title = f.get("title").and_then(Value::as_str).unwrap_or("");
                let value = f.get("value").and_then(Value::as_str).unwrap_or("");
                html.push_str(&format!(
                    "<div><b>{}</b><br>{}</div>",
                    plain_to_html(title),
                    mrkdwn_to_html(value)
                ));
            }
            html.push_str("</div>");
        }
        if let Some(t) = a.get("footer").and_then(Value::as_str) {
            html.push_str(&format!(
                "<div class=\"context\">{}</div>",
                plain_to_html(t)
            ));
        }
    }
    html.push_str("</div></div>");
}

/// A text object (`plain_text` or `mrkdwn`) as HTML.
fn text_html(obj: &Value) -> String {
    let text = obj.get("text").and_then(Value::as_str).unwrap_or("");
    match obj.get("type").and_then(Value::as_str) {
        Some("mrkdwn") => mrkdwn_to_html(text),
        _ => plain_to_html(text),
    }
}

fn render_blocks(html: &mut String, blocks: &[Value]) {
    for b in blocks {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "header" => {
                let text = b.get("text").map(text_html).unwrap_or_default();
                html.push_str(&format!("<div class=\"hdr\">{text}</div>"));
            }
            "section" => {
                if let Some(t) = b.get("text") {
                    html.push_str(&format!("<div class=\"section\">{}</div>", text_html(t)));
                }
                if let Some(fields) = b.get("fields").and_then(Value::as_array) {
                    html.push_str("<div class=\"fields\">");
                    for f in fields {
                        html.push_str(&format!("<div>{}</div>", text_html(f)));
                    }
                    html.push_str("</div>");
                }
            }
            "context" => {
                html.push_str("<div class=\"context\">");
                for e in b
                    .get("elements")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let inner = match e.get("type").and_then(Value::as_str) {
                        Some("image") => {
                            let alt = e.get("alt_text").and_then(Value::as_str).unwrap_or("image");
                            format!("[{}]", plain_to_html(alt))
                        }
                        _ => text_html(e),
                    };
                    html.push_str(&format!("<span>{inner}</span>"));
                }
                html.push_str("</div>");
            }
            "divider" => html.push_str("<hr>"),
            "image" => {
                let alt = b.get("alt_text").and_then(Value::as_str).unwrap_or("image");
                html.push_str(&format!(
                    "<div class=\"context\">[image: {}]</div>",
                    plain_to_html(alt)
                ));
            }
            "markdown" => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                html.push_str(&format!(
                    "<div class=\"section\">{}</div>",
                    mrkdwn_to_html(text)
                ));
            }
            other => {
                html.push_str(&format!(
                    "<div class=\"context\">[{} block]</div>",
                    escape_html(other)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(ts: &str, attachments: Value) -> Message {
        Message {
            ts: ts.into(),
            thread_ts: None,
            text: Some("fallback".into()),
            blocks: None,
            attachments: Some(attachments),
            metadata: None,
            reply_broadcast: false,
            edited: None,
            edits: 0,
        }
    }

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

    #[test]
    fn a_parent_with_a_reply_renders_header_fields_and_thread() {
        let parent = message(
            "1700000000.000100",
            json!([{"color": "#2EB67D", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}},
                {"type": "section", "fields": [{"type": "mrkdwn", "text": "*host*\nalpha"}]}
            ]}]),
        );
        let mut reply = message("1700000001.000100", json!([]));
        reply.thread_ts = Some(parent.ts.clone());
        reply.text = Some("went _STARTING_".into());
        let view = ChannelView {
            id: "C0STANDIN1".into(),
            name: Some("ops".into()),
            threads: vec![Thread {
                parent: parent.clone(),
                replies: vec![reply],
            }],
            flow: vec![parent],
        };
        let html = render(&[view], None, "http://127.0.0.1:1/api");
        assert!(html.contains("background:#2EB67D"));
        assert!(html.contains("<div class=\"hdr\">web RUNNING</div>"));
        assert!(html.contains("<b>host</b><br>alpha"));
        assert!(html.contains("1 reply"));
        assert!(html.contains("went <i>STARTING</i>"));
    }

    fn two_threads() -> ChannelView {
        let web = message(
            "1700000000.000100",
            json!([{"color": "#2EB67D", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "web RUNNING"}}
            ]}]),
        );
        let worker = message(
            "1700000002.000100",
            json!([{"color": "#E01E5A", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "worker FATAL"}}
            ]}]),
        );
        let reply = |ts: &str, parent: &Message, text: &str| {
            let mut r = message(ts, json!([]));
            r.thread_ts = Some(parent.ts.clone());
            r.text = Some(text.into());
            r
        };
        ChannelView {
            id: "C0STANDIN1".into(),
            name: Some("ops".into()),
            threads: vec![
                Thread {
                    parent: web.clone(),
                    replies: vec![reply("1700000001.000100", &web, "web went up")],
                },
                Thread {
                    parent: worker.clone(),
                    replies: vec![
                        reply("1700000003.000100", &worker, "worker BACKOFF"),
                        reply("1700000004.000100", &worker, "worker FATAL: postgres"),
                    ],
                },
            ],
            flow: vec![web, worker],
        }
    }

    #[test]
    fn thread_view_shows_that_thread_alone_unfolded() {
        let view = View {
            thread: Some("1700000002.000100"),
            ..View::default()
        };
        let html = render_view(&[two_threads()], &view, "http://x/api");
        assert!(html.contains("worker FATAL"));
        assert!(html.contains("worker BACKOFF") && html.contains("worker FATAL: postgres"));
        assert!(html.contains("id=\"t1700000002-000100\" open"));
        assert!(
            !html.contains("web RUNNING"),
            "the other thread is not shown"
        );
        assert!(!html.contains("web went up"));
        assert!(html.contains("href=\"/?channel=C0STANDIN1\"># ops</a> · 2 replies"));
    }

    #[test]
    fn an_unknown_thread_says_so_with_the_ts_escaped() {
        let view = View {
            thread: Some("<b>1.2</b>"),
            channel: Some("ops"),
            ..View::default()
        };
        let html = render_view(&[two_threads()], &view, "http://x/api");
        assert!(html.contains("No thread starts at ts &lt;b&gt;1.2&lt;/b&gt;"));
        assert!(!html.contains("<b>1.2</b>"));
        assert!(!html.contains("web RUNNING"));
    }

    #[test]
    fn collapsed_folds_every_thread_and_the_default_unfolds_them() {
        let folded = render_view(
            &[two_threads()],
            &View {
                collapsed: true,
                ..View::default()
            },
            "http://x/api",
        );
        assert!(folded.contains("web RUNNING") && folded.contains("worker FATAL"));
        assert!(folded.contains("2 replies"));
        assert!(!folded.contains("\" open>"), "no thread unfolded");
        let open = render(&[two_threads()], None, "http://x/api");
        assert_eq!(open.matches("\" open>").count(), 2);
    }
}
