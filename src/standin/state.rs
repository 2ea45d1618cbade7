//! What the stand-in keeps: the channels as a reader sees them (messages, threads,
//! edits), the `ts` clock, and the record of every call. Plain data behind the server's
//! one lock; nothing here knows HTTP.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// One request the stand-in received, as recorded in arrival order.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// API method, e.g. `chat.postMessage`.
    pub method: String,
    /// The request's parameters: the JSON body, or the form / query as a JSON object.
    pub body: Value,
    /// When it arrived, since the stand-in started.
    pub at: Duration,
    /// Channel id the call addressed, if any.
    pub channel: Option<String>,
    /// HTTP status answered; 0 while still being handled or if the connection was dropped.
    pub status: u16,
    /// Slack error code answered (`ratelimited` for 429s), if any.
    pub error: Option<String>,
    /// `Retry-After` seconds announced with this answer, if any.
    pub retry_after: Option<u64>,
    /// The token was present and accepted.
    pub authorization_ok: bool,
    /// Arrived while a `Retry-After` announced for the same method and channel was
    /// still running: Slack may disable apps that do this.
    pub during_retry_after: bool,
    /// The fault injected into this call, if any.
    pub fault: Option<String>,
    /// `ts` of the message posted or edited, if the call succeeded.
    pub ts: Option<String>,
}

/// A message as stored: the latest content after edits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Slack's id of the message, e.g. `1795702920.000100`.
    pub ts: String,
    /// The parent's `ts` if this is a thread reply.
    pub thread_ts: Option<String>,
    /// Top-level `text`.
    pub text: Option<String>,
    /// Top-level `blocks`, as sent.
    pub blocks: Option<Value>,
    /// `attachments`, as sent (the project's coloured card lives here).
    pub attachments: Option<Value>,
    /// Slack message metadata `{event_type, event_payload}`, as sent.
    pub metadata: Option<Value>,
    /// A reply also shown in the channel.
    pub reply_broadcast: bool,
    /// `ts` of the last edit, if edited.
    pub edited: Option<String>,
    /// How many times it was edited.
    pub edits: u32,
    /// Pinned to the channel (`pins.add`).
    pub pinned: bool,
}

impl Message {
    /// Whether this is a thread reply.
    pub fn is_reply(&self) -> bool {
        self.thread_ts.is_some()
    }
    /// `color` of the first attachment that has one (the card's colour bar).
    pub fn color(&self) -> Option<String> {
        self.attachments
            .as_ref()?
            .as_array()?
            .iter()
            .find_map(|a| a.get("color")?.as_str().map(str::to_owned))
    }
    /// Text of the first `header` block, top-level or inside an attachment.
    pub fn header(&self) -> Option<String> {
        self.all_blocks()
            .into_iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("header"))
            .and_then(|b| b.pointer("/text/text")?.as_str().map(str::to_owned))
    }
    /// Every text a reader could see (top-level text and all text in blocks and
    /// attachments), joined by newlines: handy for `contains` assertions.
    pub fn visible_text(&self) -> String {
        let mut texts: Vec<String> = self.text.iter().cloned().collect();
        fn collect(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        match v {
                            Value::String(s)
                                if k == "text"
                                    || k == "fallback"
                                    || k == "title"
                                    || k == "value" =>
                            {
                                out.push(s.clone())
                            }
                            other => collect(other, out),
                        }
                    }
                }
                Value::Array(list) => list.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        self.blocks
            .iter()
            .chain(self.attachments.iter())
            .for_each(|v| collect(v, &mut texts));
        texts.join("\n")
    }
    /// Top-level blocks followed by the blocks of every attachment.
    pub fn all_blocks(&self) -> Vec<&Value> {
        let top = self.blocks.iter().filter_map(Value::as_array).flatten();
        let inner = self
            .attachments
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|a| a.get("blocks")?.as_array())
            .flatten();
        top.chain(inner).collect()
    }
}

/// A parent message and its replies, in order, edits applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thread {
    /// The message in the channel.
    pub parent: Message,
    /// Its thread replies, oldest first.
    pub replies: Vec<Message>,
}

/// A channel the stand-in has seen.
#[derive(Debug, Clone, Default)]
pub(super) struct ChannelState {
    pub id: String,
    pub name: Option<String>,
    /// Every message, parents and replies, in `ts` order.
    pub messages: Vec<Message>,
}

impl ChannelState {
    /// Groups the channel's messages into threads.
    pub fn threads(&self) -> Vec<Thread> {
        let mut threads: Vec<Thread> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for m in &self.messages {
            match &m.thread_ts {
                None => {
                    index.insert(m.ts.as_str(), threads.len());
                    threads.push(Thread {
                        parent: m.clone(),
                        replies: Vec::new(),
                    });
                }
                Some(parent) => {
                    if let Some(&i) = index.get(parent.as_str()) {
                        threads[i].replies.push(m.clone());
                    }
                }
            }
        }
        threads
    }

    /// What the channel itself shows: parents and broadcast replies, in order.
    pub fn flow(&self) -> impl Iterator<Item = &Message> {
        self.messages
            .iter()
            .filter(|m| !m.is_reply() || m.reply_broadcast)
    }

    /// The replies to the parent at `ts`, oldest first.
    pub fn replies_to<'a>(&'a self, ts: &'a str) -> impl Iterator<Item = &'a Message> {
        self.messages
            .iter()
            .filter(move |m| m.thread_ts.as_deref() == Some(ts))
    }
}

/// Every channel and the `ts` clock.
#[derive(Debug, Default)]
pub(super) struct Workspace {
    pub channels: Vec<ChannelState>,
    last_ts_micros: u64,
}

/// Whether a channel argument is an id (`C…`, `G…`, `D…`, upper case) rather than a
/// name: Slack channel names are lower case.
pub(super) fn is_channel_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['C', 'G', 'D'])
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A channel name as Slack compares it: no `#`, lower case.
pub(super) fn normalize_name(s: &str) -> String {
    s.trim().trim_start_matches('#').to_lowercase()
}

/// Whether a channel argument (name, `#name` or id) names the channel listed as `listed`.
pub(super) fn names_match(listed: &str, id: Option<&str>, name: Option<&str>) -> bool {
    if is_channel_id(listed) {
        id == Some(listed)
    } else {
        name == Some(normalize_name(listed).as_str())
    }
}

impl Workspace {
    /// The channel a name, `#name` or id refers to, if it has been seen.
    pub fn find_channel(&self, channel: &str) -> Option<&ChannelState> {
        if is_channel_id(channel) {
            self.channels.iter().find(|c| c.id == channel)
        } else {
            let name = normalize_name(channel);
            self.channels
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()))
        }
    }

    /// The channel with this id, to change it.
    pub fn channel_by_id(&mut self, id: &str) -> Option<&mut ChannelState> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    /// Resolves a channel argument to its state, creating it on first use (unless
    /// `allowed` restricts channels). `None`: `channel_not_found`.
    pub fn channel_mut(
        &mut self,
        channel: &str,
        allowed: Option<&[String]>,
    ) -> Option<&mut ChannelState> {
        let (id, name) = if is_channel_id(channel) {
            (Some(channel.to_string()), None)
        } else {
            let name = normalize_name(channel);
            if name.is_empty() {
                return None;
            }
            (None, Some(name))
        };
        if let Some(allowed) = allowed {
            if !allowed
                .iter()
                .any(|a| names_match(a, id.as_deref(), name.as_deref()))
            {
                return None;
            }
        }
        let pos = self.channels.iter().position(|c| match (&id, &name) {
            (Some(id), _) => &c.id == id,
            (_, Some(name)) => c.name.as_ref() == Some(name),
            _ => false,
        });
        let pos = match pos {
            Some(p) => p,
            None => {
                let id = id.unwrap_or_else(|| format!("C0STANDIN{}", self.channels.len() + 1));
                self.channels.push(ChannelState {
                    id,
                    name,
                    messages: Vec::new(),
                });
                self.channels.len() - 1
            }
        };
        Some(&mut self.channels[pos])
    }

    /// A new `ts`: the wall clock in microseconds, strictly increasing.
    pub fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let micros = now.max(self.last_ts_micros + 1);
        self.last_ts_micros = micros;
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

/// A message `chat.postEphemeral` showed one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ephemeral {
    /// The channel's id.
    pub channel: String,
    /// The one user who sees it.
    pub user: String,
    /// Top-level `text`.
    pub text: Option<String>,
    /// The thread it shows in, if any.
    pub thread_ts: Option<String>,
    /// Top-level `blocks`, as sent.
    pub blocks: Option<Value>,
    /// `attachments`, as sent.
    pub attachments: Option<Value>,
    /// The `message_ts` answered.
    pub ts: String,
}

// --- slash commands

/// An answer the user saw: from the ack, or posted to the response URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandAnswer {
    /// The command's `trigger_id` (the response URL's last part).
    pub id: String,
    pub user: String,
    /// The channel's id.
    pub channel: String,
    /// `ack` or `response_url`.
    pub via: &'static str,
    /// As sent.
    pub body: Value,
    /// When it arrived, since the stand-in started.
    pub at: Duration,
}

impl CommandAnswer {
    /// Its `text` (what a text-only answer shows).
    pub fn text(&self) -> String {
        self.body.get("text").and_then(Value::as_str).unwrap_or("").to_string()
    }
}

/// A command on its way: who typed it where, for the answers that come later.
#[derive(Debug, Clone)]
pub struct Pending {
    pub user: String,
    pub channel: String,
}
