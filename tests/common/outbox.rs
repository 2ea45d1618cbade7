//! The outbox rows on disk, read with a connection of the test's own: what the
//! listener committed (delivered rows are kept 24 h, so this lists every event).

use std::path::Path;
use std::time::Duration;

/// One outbox row as it is on disk.
#[derive(Debug, Clone)]
pub struct Row {
    pub serial: u64,
    pub process: String,
    /// The state the event moved to, from the stored event JSON.
    pub to: String,
    pub delivered: bool,
    /// The supervisord instance the event came from (see `listen::instance_id`).
    pub instance: String,
}

/// Every outbox row, delivered or not, in commit order.
pub fn outbox(db: &Path) -> Vec<Row> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let Ok(mut st) = conn
        .prepare("SELECT serial, process, event, delivered_at, instance FROM outbox ORDER BY id")
    else {
        return Vec::new();
    };
    st.query_map([], |r| {
        let event: String = r.get(2)?;
        let json: serde_json::Value = serde_json::from_str(&event).unwrap();
        Ok(Row {
            serial: r.get::<_, i64>(0)? as u64,
            process: r.get(1)?,
            to: json["to"].as_str().unwrap_or_default().to_string(),
            delivered: r.get::<_, Option<String>>(3)?.is_some(),
            instance: r.get(4)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}
