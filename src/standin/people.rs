//! People: the workspace's users (their names, for mentions on the page and for the
//! clicker in a click's payload), user groups (`usergroups.users.list`) and the
//! ephemeral messages `chat.postEphemeral` shows one user. Ephemerals are kept apart
//! from the channels: `conversations.history` and `conversations.replies` never list
//! them, as on Slack.

use serde_json::{json, Map, Value};

use super::handle::{Inner, StandIn, StandInOptions};
use super::state::Ephemeral;
use super::validate;
use super::wire::{str_param, Answer};


/// The name of user `id`, if the stand-in knows it.
pub(super) fn user_name<'a>(users: &'a [(String, String)], id: &str) -> Option<&'a str> {
    users
        .iter()
        .find(|(uid, _)| uid == id)
        .map(|(_, name)| name.as_str())
}

/// `chat.postEphemeral`: the channel must exist and hold the bot, `user` is
/// required (`invalid_arguments`), the content is checked as `chat.postMessage`'s.
/// Every user counts as a member of every channel.
pub(super) fn post_ephemeral(
    inner: &mut Inner,
    opts: &StandInOptions,
    params: &Map<String, Value>,
) -> Answer {
    let channel = match inner.invited_channel(opts, params) {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let Some(user) = str_param(params, "user").map(str::to_owned) else {
        return Answer::error("invalid_arguments");
    };
    if let Err(refusal) =
        validate::check_message(&Value::Object(params.clone()), opts.blocks_text_limit)
    {
        return Answer::refusal(refusal.code, &refusal.reason);
    }
    let ts = inner.workspace.next_ts();
    let content = |key: &str| params.get(key).filter(|v| !v.is_null()).cloned();
    inner.ephemerals.push(Ephemeral {
        channel,
        user,
        text: str_param(params, "text").map(str::to_owned),
        thread_ts: str_param(params, "thread_ts").map(str::to_owned),
        blocks: content("blocks"),
        attachments: content("attachments"),
        ts: ts.clone(),
    });
    Answer::ok(json!({"message_ts": ts}))
}

/// `usergroups.users.list`: the members of `usergroup` from
/// [`StandInOptions::usergroups`]; `no_such_subteam` for others, and
/// [`StandInOptions::usergroups_error`] for every call when set.
pub(super) fn usergroup_users(opts: &StandInOptions, params: &Map<String, Value>) -> Answer {
    if let Some(code) = &opts.usergroups_error {
        return Answer::error(code);
    }
    let Some(group) = str_param(params, "usergroup") else {
        return Answer::error("invalid_arguments");
    };
    match opts.usergroups.iter().find(|(id, _)| id == group) {
        Some((_, users)) => Answer::ok(json!({"users": users})),
        None => Answer::error("no_such_subteam"),
    }
}

impl StandIn {
    /// Every ephemeral message posted so far, in order.
    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.shared.lock().ephemerals.clone()
    }
}
