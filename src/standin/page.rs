//! The preview page: the stand-in's channels drawn the way Slack's desktop client draws
//! them, so a card can be judged by eye (and screenshotted for the README). Parents
//! carry their attachment's colour bar, blocks are rendered readably, threads sit
//! beneath their parent in a `<details>`, broadcast replies also appear in the channel,
//! edits are marked. `?thread=TS` shows one thread alone; `?collapsed=1` folds every
//! thread to its "N replies" line, as Slack's channel view does (see [`View`]).
//! Buttons are drawn and work: a click (after the button's `confirm` dialog, if it
//! has one) goes to `POST /api/_socket/click` as the page's user, and so to the
//! listener over Socket Mode; that user's ephemeral messages show where they were
//! posted, marked "Only visible to you". A channel has a message box: a slash command
//! typed there (`/supervisor status`) goes to `POST /api/_socket/command` as the page's
//! user, in that channel, and its answer shows in the flow, also "Only visible to you".
//!
//! The markup is the minijinja template `page.html`; this file only decides what it
//! shows (a view of plain values) and turns message text into HTML through
//! [`mrkdwn`](super::mrkdwn), which escapes every string it is given. Everything else
//! the template prints is escaped on output, the same way.
//!
//! The page refreshes itself every 2 s with a small fetch loop that swaps the message
//! list and keeps open/closed threads as the reader left them; clicks are caught on
//! the document, so buttons keep working after a swap.

use std::sync::LazyLock;

use chrono::{Local, TimeZone};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

use super::blocks::{attachment, blocks, Attachment, Block};
use super::mrkdwn::{escape_html, mrkdwn_to_html, plain_to_html};
use super::state::Ephemeral;
use super::{Message, Thread};

/// The workspace's users, (id, name), for mentions.
type Users<'a> = &'a [(String, String)];

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
    /// The page user's ephemeral messages in this channel, in order.
    pub ephemerals: Vec<Ephemeral>,
}

impl ChannelView {
    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id.clone())
    }

    fn thread(&self, ts: &str) -> Option<&Thread> {
        self.threads.iter().find(|t| t.parent.ts == ts)
    }
}

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
    /// The workspace's users, (id, name): mentions show their names.
    pub users: &'a [(String, String)],
    /// The user reading the page: the clicks it sends are theirs.
    pub page_user: &'a str,
}

/// The template, parsed once. Strings are escaped with [`escape_html`] (the one
/// escaping the page uses, also inside `mrkdwn`), values marked `safe` are not.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_formatter(
        |out, state, value| match (state.auto_escape(), value.as_str()) {
            (AutoEscape::Html, Some(s)) if !value.is_safe() => {
                out.write_str(&escape_html(s))?;
                Ok(())
            }
            _ => minijinja::escape_formatter(out, state, value),
        },
    );
    env.add_template("page.html", include_str!("page.html"))
        .expect("page.html parses");
    env
});

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
    let page = page_of(channels, view, api_url);
    TEMPLATES
        .get_template("page.html")
        .and_then(|t| t.render(&page))
        .unwrap_or_else(|err| {
            // A bug in the template, not in a message: say so on the page.
            tracing::warn!(%err, "the preview page did not render");
            format!(
                "<!doctype html><title>Slack stand-in</title><pre>the page did not render: {}</pre>",
                escape_html(&format!("{err:#}"))
            )
        })
}

/// Everything the template shows.
#[derive(Serialize)]
struct Page<'a> {
    title: String,
    nav: Vec<Nav>,
    api_url: &'a str,
    page_user: &'a str,
    view: Main,
}

/// A channel in the sidebar.
#[derive(Serialize)]
struct Nav {
    id: String,
    label: String,
    on: bool,
}

/// The main column.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Main {
    /// `?thread=TS`: one thread; `parent` is `None` when no thread starts at `ts`.
    Thread {
        channel_id: String,
        channel_label: String,
        reply_count: usize,
        ts: String,
        parent: Option<Box<Msg>>,
    },
    /// A channel's flow.
    Channel {
        id: String,
        label: String,
        message_count: usize,
        flow: Vec<Msg>,
    },
    /// Nothing posted yet.
    Empty,
}

/// One message, ready to draw.
#[derive(Serialize)]
struct Msg {
    /// The `ts` with `-` for `.`, for element ids.
    anchor: String,
    ts: String,
    /// The reader's local time of `ts`.
    time: String,
    edited: bool,
    pinned: bool,
    broadcast: bool,
    /// Shown to the page user only (`chat.postEphemeral`).
    ephemeral: bool,
    /// For a broadcast reply shown in the channel: the thread it belongs to.
    parent_ref: Option<ParentRef>,
    /// Top-level blocks, when there are any (then `text` is only the notification
    /// fallback and is not drawn).
    blocks: Option<Vec<Block>>,
    text_html: Option<String>,
    attachments: Vec<Attachment>,
    /// The replies beneath a parent.
    thread: Option<Replies>,
}

#[derive(Serialize)]
struct ParentRef {
    anchor: String,
    about_html: String,
}

#[derive(Serialize)]
struct Replies {
    open: bool,
    /// The reader's local time of the last reply.
    last: String,
    replies: Vec<Msg>,
}

fn page_of<'a>(channels: &[ChannelView], view: &View<'a>, api_url: &'a str) -> Page<'a> {
    let holds_thread = |c: &ChannelView| view.thread.is_some_and(|ts| c.thread(ts).is_some());
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
    let title = match current {
        Some(i) => format!("#{} · Slack stand-in", channels[i].label()),
        None => "Slack stand-in".to_string(),
    };
    let nav = channels
        .iter()
        .enumerate()
        .map(|(i, c)| Nav {
            id: c.id.clone(),
            label: c.label(),
            on: Some(i) == current,
        })
        .collect();
    let main = match (current, view.thread) {
        (Some(i), Some(ts)) => {
            let c = &channels[i];
            let thread = c.thread(ts);
            Main::Thread {
                channel_id: c.id.clone(),
                channel_label: c.label(),
                reply_count: thread.map(|t| t.replies.len()).unwrap_or(0),
                ts: ts.to_string(),
                parent: thread.map(|t| Box::new(parent_msg(c, &t.parent, false, view.users))),
            }
        }
        (Some(i), None) => {
            let c = &channels[i];
            let mut flow: Vec<Msg> = c
                .flow
                .iter()
                .map(|m| flow_msg(c, m, view.collapsed, view.users))
                .collect();
            let in_thread = |e: &&Ephemeral| {
                e.thread_ts
                    .as_deref()
                    .is_some_and(|ts| c.thread(ts).is_some())
            };
            let ephemerals = c.ephemerals.iter().filter(|e| !in_thread(e));
            flow.extend(ephemerals.map(|e| ephemeral_msg(e, view.users)));
            flow.sort_by_key(|m| ts_order(&m.ts));
            Main::Channel {
                id: c.id.clone(),
                label: c.label(),
                message_count: c.threads.iter().map(|t| 1 + t.replies.len()).sum(),
                flow,
            }
        }
        (None, _) => Main::Empty,
    };
    Page {
        title,
        nav,
        api_url,
        page_user: view.page_user,
        view: main,
    }
}

fn last_ts(c: &ChannelView) -> f64 {
    c.threads
        .iter()
        .flat_map(|t| std::iter::once(&t.parent).chain(t.replies.iter()))
        .map(|m| m.ts.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, f64::max)
}

/// `ts` in time order: seconds, then microseconds.
fn ts_order(ts: &str) -> (u64, u64) {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    (secs.parse().unwrap_or(0), micros.parse().unwrap_or(0))
}

/// A message of the channel's flow: a parent with its thread, or a broadcast reply
/// with a pointer to its thread.
fn flow_msg(channel: &ChannelView, m: &Message, collapsed: bool, users: Users) -> Msg {
    let Some(parent_ts) = &m.thread_ts else {
        return parent_msg(channel, m, collapsed, users);
    };
    let about = channel
        .thread(parent_ts)
        .map(|t| {
            t.parent
                .header()
                .or(t.parent.text.clone())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    Msg {
        parent_ref: Some(ParentRef {
            anchor: anchor(parent_ts),
            about_html: plain_to_html(&truncate(&about, 80)),
        }),
        ..msg(m, users)
    }
}

/// A parent message with its replies and the page user's ephemerals in its thread
/// (folded when `collapsed`).
fn parent_msg(channel: &ChannelView, m: &Message, collapsed: bool, users: Users) -> Msg {
    let replies = channel
        .thread(&m.ts)
        .map(|t| t.replies.as_slice())
        .unwrap_or(&[]);
    let mut shown: Vec<Msg> = replies.iter().map(|r| msg(r, users)).collect();
    let ephemerals = channel
        .ephemerals
        .iter()
        .filter(|e| e.thread_ts.as_deref() == Some(m.ts.as_str()));
    shown.extend(ephemerals.map(|e| ephemeral_msg(e, users)));
    shown.sort_by_key(|r| ts_order(&r.ts));
    let thread = shown
        .last()
        .map(|last| last.time.clone())
        .map(|last| Replies {
            open: !collapsed,
            last,
            replies: shown,
        });
    Msg {
        thread,
        ..msg(m, users)
    }
}

/// An ephemeral message, drawn as a message marked "Only visible to you".
fn ephemeral_msg(e: &Ephemeral, users: Users) -> Msg {
    let m = Message {
        ts: e.ts.clone(),
        thread_ts: e.thread_ts.clone(),
        text: e.text.clone(),
        blocks: e.blocks.clone(),
        attachments: e.attachments.clone(),
        metadata: None,
        reply_broadcast: false,
        edited: None,
        edits: 0,
        pinned: false,
    };
    Msg {
        ephemeral: true,
        ..msg(&m, users)
    }
}

fn msg(m: &Message, users: Users) -> Msg {
    let top_blocks = m
        .blocks
        .as_ref()
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty());
    Msg {
        anchor: anchor(&m.ts),
        ts: m.ts.clone(),
        time: time_of(&m.ts),
        edited: m.edited.is_some(),
        pinned: m.pinned,
        broadcast: m.reply_broadcast,
        ephemeral: false,
        parent_ref: None,
        blocks: top_blocks.map(|b| blocks(b, users)),
        text_html: m
            .text
            .as_deref()
            .filter(|t| top_blocks.is_none() && !t.is_empty())
            .map(|t| mrkdwn_to_html(t, users)),
        attachments: m
            .attachments
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| attachment(a, users))
            .collect(),
        thread: None,
    }
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

#[cfg(test)]
mod tests;
