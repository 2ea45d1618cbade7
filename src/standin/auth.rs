//! Who may call and who answers: the bearer token a call carries (header or `token`
//! parameter), the one the stand-in accepts, and the workspace and bot identity that
//! `auth.test` reports and every stored message carries.

use axum::http::{header, HeaderMap};

/// The team id the stand-in reports by default.
pub const TEAM_ID: &str = "T0STANDIN";
/// The bot user every message is posted as, by default.
pub const BOT_USER_ID: &str = "U0STANDIN";
/// The bot id every message carries, by default.
pub const BOT_ID: &str = "B0STANDIN";
/// The app id every message carries.
pub(super) const APP_ID: &str = "A0STANDIN";

/// The workspace and bot the token belongs to, as `auth.test` tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Workspace name (`team`).
    pub team: String,
    /// Workspace URL (`url`), e.g. `https://acme.slack.com/`.
    pub url: String,
    /// `team_id`.
    pub team_id: String,
    /// The bot user's name (`user`).
    pub user: String,
    /// The bot user's id (`user_id`); messages are posted as this user.
    pub user_id: String,
    /// `bot_id`; every message carries it.
    pub bot_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            team: "Slack stand-in".into(),
            url: "https://standin.slack.com/".into(),
            team_id: TEAM_ID.into(),
            user: "supervisor-slack".into(),
            user_id: BOT_USER_ID.into(),
            bot_id: BOT_ID.into(),
        }
    }
}

/// Which tokens are accepted: one set with [`Auth::set`], or by default any `xoxb-`
/// token.
#[derive(Debug, Default)]
pub(super) struct Auth {
    token: Option<String>,
}

impl Auth {
    /// Accepts only `token` from now on.
    pub fn set(&mut self, token: String) {
        self.token = Some(token);
    }

    /// Whether a call carrying `token` is authorized.
    pub fn accepts(&self, token: Option<&str>) -> bool {
        match (token, &self.token) {
            (Some(t), Some(expected)) => t == expected,
            (Some(t), None) => t.starts_with("xoxb-"),
            (None, _) => false,
        }
    }
}

/// The token of an `Authorization: Bearer …` header, if any.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}
