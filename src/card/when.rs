//! A point in time as cards show it: a leaf of the card room, used by the card
//! models, the history lines, the board and the controls.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A point in time, three ways.
#[derive(Debug, Clone, Serialize)]
pub struct When {
    /// Seconds since the Unix epoch.
    pub epoch: i64,
    /// `2026-11-26 14:03:05 UTC`
    pub utc: String,
    /// Slack's date token: shows in each reader's own time zone, `utc` as fallback.
    pub slack: String,
    /// Slack's date token for the time of day only (with seconds).
    pub slack_time: String,
}

impl When {
    pub fn new(at: DateTime<Utc>) -> When {
        let epoch = at.timestamp();
        let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let time = at.format("%H:%M:%S UTC").to_string();
        When {
            epoch,
            slack: format!("<!date^{epoch}^{{date_short_pretty}} {{time}}|{utc}>"),
            slack_time: format!("<!date^{epoch}^{{time_secs}}|{time}>"),
            utc,
        }
    }
}
