//! `check` for actions from Slack: the app-level token (one Socket Mode connection
//! opened, its hello read, and closed again — slack-morphism itself only logs a bad
//! token), the allow lists, and the user groups they name; and `/supervisor`: who may
//! ask what, and whether Socket Mode has delivered a command to this listener (Slack
//! tells no one whether an app has the command: the listener notes each one it
//! receives in its state database).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::Finding;
use crate::config::Settings;
use crate::slack::{Failure, SlackApi};
use crate::store::{Budget, SharedState, SqliteShared};

/// How to get a working app-level token.
pub fn app_token_fix() -> &'static str {
    "make an app-level token under Basic Information → App-Level Tokens with the scope connections:write (and turn on Socket Mode and Interactivity), then set SLACK_APP_TOKEN_FILE (a file holding xapp-…, chmod 600), SLACK_APP_TOKEN, or app_token_file"
}

/// Every finding about actions from Slack.
pub async fn check(settings: &Settings, api: Option<&SlackApi>) -> Vec<Finding> {
    let a = &settings.actions;
    let mut out = Vec::new();
    let Some(app_token) = &settings.app_token else {
        out.push(if a.anyone_allowed() {
            Finding::warning(
                "[actions] allows people to act, but there is no app-level token: cards carry no buttons",
                app_token_fix(),
            )
        } else {
            Finding::note("actions from Slack: off (no app-level token; cards carry no buttons)")
        });
        return out;
    };
    if !a.anyone_allowed() {
        out.push(Finding::warning(
            "an app-level token is set but [actions] allows nobody: cards carry no buttons",
            "list who may act: [actions] allow_users = [\"U0123ABCD\"] (member ids) and/or allow_groups = [\"S0123ABCD\"]",
        ));
    } else {
        let names: Vec<&str> = a.allowed.iter().map(|x| x.name()).collect();
        out.push(Finding::ok(format!(
            "actions from Slack: {} for {} user(s) and {} group(s)",
            names.join(", "),
            a.allow_users.len(),
            a.allow_groups.len()
        )));
    }
    let Some(api) = api else {
        return out;
    };
    out.push(match api.open_socket_url(app_token).await {
        Err(f) => socket_problem(&f),
        Ok(url) => match hello(&url).await {
            Ok(app) => Finding::ok(format!("Socket Mode: connected and greeted by Slack (app {app})")),
            Err(e) => Finding::problem(
                format!("Socket Mode: Slack gave a URL but the connection failed: {e}"),
                "allow outgoing WebSocket (wss://wss-primary.slack.com, port 443) through the proxy or firewall",
            ),
        },
    });
    for g in &a.allow_groups {
        out.push(match api.usergroup_members(g).await {
            Ok(m) => Finding::ok(format!("user group {g}: {} member(s) may act", m.len())),
            Err(f) => Finding::problem(
                format!("user group {g}: usergroups.users.list failed: {f}"),
                "add the bot scope usergroups:read and reinstall the app (user groups need a paid plan); or list the people in allow_users",
            ),
        });
    }
    out
}

/// How to make Slack deliver `/supervisor` over Socket Mode.
pub fn command_fix() -> &'static str {
    "add the slash command /supervisor to the app (manifest: features.slash_commands, should_escape: false) and the bot scope commands, reinstall the app, then type /supervisor help in a channel; check reports it once one has arrived"
}

/// `/supervisor`: what may be asked by whom, and whether a command has reached this
/// listener (noted in the state database at `state`).
pub async fn commands(settings: &Settings, state: &Path) -> Vec<Finding> {
    let a = &settings.actions;
    if a.asks.is_empty() {
        return vec![Finding::note("/supervisor: off ([actions] allowed lists none of status, tail and why)")];
    }
    if settings.app_token.is_none() {
        return vec![Finding::note("/supervisor: off (no app-level token)")];
    }
    if !a.anyone_may_ask() {
        return vec![Finding::warning(
            "/supervisor: nobody may ask anything (no allow list, and [actions] open_to_channel lists none of the commands switched on)",
            "list who may: [actions] allow_users / allow_groups, or open_to_channel = [\"status\"]",
        )];
    }
    let name = |asks: Vec<&crate::actions::Ask>| asks.iter().map(|x| x.name()).collect::<Vec<_>>().join(", ");
    let open: Vec<_> = a.asks.iter().filter(|x| a.open_to_channel.contains(x)).collect();
    let listed: Vec<_> = a.asks.iter().filter(|x| !a.open_to_channel.contains(x)).collect();
    let mut out = vec![Finding::ok(format!(
        "/supervisor: {}{}",
        if open.is_empty() { String::new() } else { format!("{} for anyone in {}; ", name(open), settings.routes.channels().join(", ")) },
        if listed.is_empty() { "nothing else".to_string() } else { format!("{} for {} user(s) and {} group(s) only", name(listed), a.allow_users.len(), a.allow_groups.len()) }
    ))];
    let seen = match state.is_file() {
        false => None,
        true => {
            let budget = Budget {
                post_burst: settings.post_burst,
                post_interval: settings.post_interval,
                updates_per_minute: settings.updates_per_minute,
            };
            match SqliteShared::open(state, budget) {
                Ok(shared) => shared.last_command().await.ok().flatten(),
                Err(_) => None,
            }
        }
    };
    out.push(match seen {
        Some(c) => Finding::ok(format!(
            "Socket Mode delivers /supervisor: the last command reached this listener at {} (from {})",
            c.at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.user
        )),
        None => Finding::warning(
            "no /supervisor command has reached this listener over Socket Mode yet",
            command_fix(),
        ),
    });
    out
}

fn socket_problem(f: &Failure) -> Finding {
    let code = f.code().unwrap_or("");
    let fix = match code {
        "not_allowed_token_type" => format!("the token is not an app-level token (xapp-…): {}", app_token_fix()),
        "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" | "token_expired" => {
            format!("the app-level token is wrong or was revoked: {}", app_token_fix())
        }
        "" => "Slack could not be reached: check the network path and api_url / SLACK_API_URL".to_string(),
        _ => format!("unexpected answer; {}", app_token_fix()),
    };
    // The code alone: the hint a Failure carries is about the bot token.
    let what = if code.is_empty() { f.to_string() } else { format!("Slack answered {code}") };
    Finding::problem(format!("Socket Mode: apps.connections.open failed: {what}"), fix)
}

/// Opens the Socket Mode URL, reads Slack's hello and closes: the app id it names.
async fn hello(url: &str) -> Result<String, String> {
    let connect = tokio_tungstenite::connect_async(url);
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "no connection within 10s".to_string())?
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no hello within 10s".to_string())?;
    let _ = ws.close(None).await;
    let text = match first {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => t.to_string(),
        Some(Ok(other)) => return Err(format!("the first frame was not a hello: {other:?}")),
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("closed before the hello".into()),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("unreadable hello: {e}"))?;
    if v["type"] != "hello" {
        return Err(format!("the first frame was {:?}, not a hello", v["type"]));
    }
    Ok(v["connection_info"]["app_id"].as_str().unwrap_or("?").to_string())
}
