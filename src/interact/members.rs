//! Who is in the user groups `[actions] allow_groups` names, asked of Slack
//! (`usergroups.users.list`) and cached: a group's members for five minutes, a
//! failure (no `usergroups:read` scope, a free plan) for one minute, logged once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::slack::SlackApi;

const FRESH: Duration = Duration::from_secs(300);
const FAILED: Duration = Duration::from_secs(60);

/// When a group was asked, and its members or why they could not be read.
type Asked = (Instant, Result<Vec<String>, String>);

/// The members of each allowed group, as last asked.
#[derive(Default)]
pub struct Members {
    groups: Mutex<HashMap<String, Asked>>,
}

impl Members {
    /// Whether `user` is in any of `groups` (a group that cannot be read counts as
    /// holding nobody).
    pub async fn any_has(&self, api: &SlackApi, groups: &[String], user: &str) -> bool {
        for g in groups {
            if self.members(api, g).await.iter().any(|u| u == user) {
                return true;
            }
        }
        false
    }

    async fn members(&self, api: &SlackApi, group: &str) -> Vec<String> {
        let mut groups = self.groups.lock().await;
        if let Some((at, r)) = groups.get(group) {
            let fresh = if r.is_ok() { FRESH } else { FAILED };
            if at.elapsed() < fresh {
                return r.clone().unwrap_or_default();
            }
        }
        let r = api.usergroup_members(group).await.map_err(|f| f.to_string());
        if let Err(e) = &r {
            let before = groups.get(group).map(|(_, r)| r.is_err()).unwrap_or(false);
            if !before {
                tracing::warn!(
                    group, error = %e,
                    "cannot read the members of an allowed user group: nobody is allowed through it. It needs the scope usergroups:read and a paid plan; or list the people in [actions] allow_users"
                );
            }
        }
        groups.insert(group.to_string(), (Instant::now(), r.clone()));
        r.unwrap_or_default()
    }
}
