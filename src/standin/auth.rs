//! Who may call and who answers: the bearer token a call carries (header or `token`
//! parameter), the ones the stand-in accepts (the bot token for the Web API, the
//! app-level token for `apps.connections.open`), and the workspace and bot identity
//! that `auth.test` reports and every stored message carries.

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

/// The one method an app-level token (`xapp-…`) may call, and a bot token may not.
pub(super) const APP_TOKEN_METHOD: &str = "apps.connections.open";

/// Which tokens are accepted. Bot tokens: one set with [`Auth::set`], or by default
/// any `xoxb-` token. App-level tokens (only for [`APP_TOKEN_METHOD`]): the one in
/// [`StandInOptions::app_token`](super::StandInOptions::app_token), or by default any
/// `xapp-` token, until [`Auth::revoke_app_token`].
#[derive(Debug, Default)]
pub(super) struct Auth {
    token: Option<String>,
    app_token: Option<String>,
    app_token_revoked: bool,
}

impl Auth {
    /// Accepts only the app-level token `app_token` (any `xapp-` one when `None`).
    pub fn new(app_token: Option<String>) -> Self {
        Auth {
            app_token,
            ..Auth::default()
        }
    }

    /// Accepts only `token` from now on.
    pub fn set(&mut self, token: String) {
        self.token = Some(token);
    }

    /// From now on the accepted app-level token answers `token_revoked`.
    pub fn revoke_app_token(&mut self) {
        self.app_token_revoked = true;
    }

    /// Whether a call of `method` carrying `token` is authorized; if not, Slack's
    /// error code: `not_authed` (no token), `not_allowed_token_type` (a bot or user
    /// token where an app-level one is needed, or the other way round),
    /// `token_revoked`, `invalid_auth`.
    pub fn check(&self, method: &str, token: Option<&str>) -> Result<(), &'static str> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err("not_authed");
        };
        let is_app_token = token.starts_with("xapp-");
        if method != APP_TOKEN_METHOD {
            return match &self.token {
                _ if is_app_token => Err("not_allowed_token_type"),
                Some(expected) if token == expected => Ok(()),
                None if token.starts_with("xoxb-") => Ok(()),
                _ => Err("invalid_auth"),
            };
        }
        if token.starts_with("xoxb-") || token.starts_with("xoxp-") {
            return Err("not_allowed_token_type");
        }
        let accepted = match &self.app_token {
            Some(expected) => token == expected,
            None => is_app_token,
        };
        match (accepted, self.app_token_revoked) {
            (true, true) => Err("token_revoked"),
            (true, false) => Ok(()),
            (false, _) => Err("invalid_auth"),
        }
    }
}

/// The token of an `Authorization: Bearer …` header, if any.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_and_app_tokens_each_open_only_their_own_methods() {
        let mut auth = Auth::new(None);
        assert_eq!(auth.check("auth.test", Some("xoxb-1")), Ok(()));
        assert_eq!(auth.check("auth.test", None), Err("not_authed"));
        assert_eq!(auth.check("auth.test", Some("")), Err("not_authed"));
        assert_eq!(auth.check("auth.test", Some("xoxp-1")), Err("invalid_auth"));
        assert_eq!(
            auth.check("auth.test", Some("xapp-1")),
            Err("not_allowed_token_type")
        );
        assert_eq!(auth.check(APP_TOKEN_METHOD, Some("xapp-1")), Ok(()));
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("xoxb-1")),
            Err("not_allowed_token_type")
        );
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("nope")),
            Err("invalid_auth")
        );
        auth.revoke_app_token();
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("xapp-1")),
            Err("token_revoked")
        );
    }

    #[test]
    fn a_set_app_token_is_the_only_one_and_revoking_it_leaves_others_invalid() {
        let mut auth = Auth::new(Some("xapp-right".into()));
        assert_eq!(auth.check(APP_TOKEN_METHOD, Some("xapp-right")), Ok(()));
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("xapp-wrong")),
            Err("invalid_auth")
        );
        auth.revoke_app_token();
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("xapp-right")),
            Err("token_revoked")
        );
        assert_eq!(
            auth.check(APP_TOKEN_METHOD, Some("xapp-wrong")),
            Err("invalid_auth")
        );
    }
}
