//! The fleet database's schema is the listener's own: versioned migrations, applied
//! at connect under an advisory lock, so that hosts starting together apply each one
//! once. A database a newer release migrated is left alone: an older listener says
//! so rather than write into tables it does not know.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The schema version this release writes.
pub const VERSION: i32 = 2;

/// The advisory lock every host takes to migrate (an arbitrary constant: "ss-fleet").
const LOCK: i64 = 0x7373_2d66_6c65_6574;

/// Migrations, oldest first: `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the shared state of a fleet (every table is per fleet: one database may
    // hold several).
    "
    CREATE TABLE hosts (
        fleet       text NOT NULL,
        host        text NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        last_seen   timestamptz NOT NULL DEFAULT now(),
        processes   jsonb NOT NULL DEFAULT '[]',
        from_supervisord boolean NOT NULL DEFAULT false,
        silent_since timestamptz,
        PRIMARY KEY (fleet, host)
    );
    CREATE TABLE threads (
        fleet       text NOT NULL,
        host        text NOT NULL,
        grp         text NOT NULL,
        process     text NOT NULL,
        channel     text NOT NULL,
        channel_id  text,
        parent_ts   text,
        created     timestamptz NOT NULL DEFAULT now(),
        history     jsonb NOT NULL DEFAULT '[]',
        latest      jsonb,
        PRIMARY KEY (fleet, host, grp, process, channel)
    );
    CREATE TABLE budget (
        fleet       text NOT NULL,
        lane        text NOT NULL,
        next_at     timestamptz NOT NULL,
        gate_until  timestamptz,
        PRIMARY KEY (fleet, lane)
    );
    CREATE TABLE mutes (
        fleet       text NOT NULL,
        host        text NOT NULL,
        grp         text NOT NULL,
        process     text NOT NULL,
        by_user     text NOT NULL,
        until       timestamptz NOT NULL,
        PRIMARY KEY (fleet, host, grp, process)
    );
    CREATE TABLE clicks (
        id          bigserial PRIMARY KEY,
        fleet       text NOT NULL,
        at          timestamptz NOT NULL DEFAULT now(),
        user_id     text NOT NULL,
        click       text NOT NULL,
        host        text NOT NULL,
        grp         text NOT NULL,
        process     text NOT NULL,
        action      text NOT NULL,
        outcome     text,
        UNIQUE (fleet, user_id, click)
    );
    CREATE TABLE meta (
        fleet       text NOT NULL,
        key         text NOT NULL,
        value       text NOT NULL,
        PRIMARY KEY (fleet, key)
    );
    CREATE TABLE boards (
        fleet       text NOT NULL,
        name        text NOT NULL,
        channel_id  text NOT NULL,
        ts          text NOT NULL,
        at          timestamptz NOT NULL,
        PRIMARY KEY (fleet, name)
    );
    CREATE TABLE leases (
        fleet       text NOT NULL,
        name        text NOT NULL,
        holder      text NOT NULL,
        expires_at  timestamptz NOT NULL,
        PRIMARY KEY (fleet, name)
    );
    ",
    // 2: cards across the fleet: a program's thread is the row of host '' (the
    // fleet); who may post its parent (a claim), and its broadcast episode. Each
    // host's own failure episodes (a crash loop told once), kept while one is open;
    // each process's last crash, for `/supervisor why`; the action queue (a click or
    // a question for the host that owns the process).
    "
    ALTER TABLE threads ADD COLUMN claim_holder text;
    ALTER TABLE threads ADD COLUMN claim_until timestamptz;
    ALTER TABLE threads ADD COLUMN episode jsonb;
    CREATE TABLE episodes (
        fleet       text NOT NULL,
        host        text NOT NULL,
        grp         text NOT NULL,
        process     text NOT NULL,
        channel     text NOT NULL,
        episode     jsonb NOT NULL,
        PRIMARY KEY (fleet, host, grp, process, channel)
    );
    CREATE TABLE crashes (
        fleet       text NOT NULL,
        host        text NOT NULL,
        grp         text NOT NULL,
        process     text NOT NULL,
        at          timestamptz NOT NULL,
        crash       jsonb NOT NULL,
        PRIMARY KEY (fleet, host, grp, process)
    );
    CREATE TABLE actions (
        id          bigserial PRIMARY KEY,
        fleet       text NOT NULL,
        owner       text NOT NULL,
        kind        text NOT NULL,
        payload     jsonb NOT NULL,
        state       text NOT NULL DEFAULT 'queued',
        created_at  timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL,
        taken_at    timestamptz,
        answer      jsonb
    );
    CREATE INDEX actions_queued ON actions (fleet, owner) WHERE state = 'queued';
    ",
];

/// The version the database is at (0: none of ours yet).
pub async fn version(client: &Client) -> Result<i32, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS supervisor_slack_schema (
                 version integer NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM supervisor_slack_schema", &[])
        .await?;
    Ok(row.get(0))
}

/// Brings the schema to [`VERSION`], once across every host starting together.
pub async fn migrate(client: &Client) -> Result<(), StoreError> {
    let db = |e: tokio_postgres::Error| StoreError::Fleet {
        message: match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
                "the role may not create the listener's tables: GRANT CREATE ON DATABASE … TO the role in fleet_url (or make it the database's owner)".to_string()
            }
            _ => format!("migrating the fleet database: {}", e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())),
        },
    };
    client
        .query_one("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(db)?;
    let result = async {
        let at = version(client).await.map_err(db)?;
        if at > VERSION {
            return Err(StoreError::Fleet {
                message: format!(
                    "the fleet database was migrated by a newer supervisor-slack (schema {at}, this one knows {VERSION}): upgrade this host"
                ),
            });
        }
        for v in at..VERSION {
            let sql = format!(
                "BEGIN; {} INSERT INTO supervisor_slack_schema (version) VALUES ({}); COMMIT;",
                MIGRATIONS[v as usize],
                v + 1
            );
            if let Err(e) = client.batch_execute(&sql).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(db(e));
            }
            tracing::info!(version = v + 1, "migrated the fleet database");
        }
        Ok(())
    }
    .await;
    let _ = client.query_one("SELECT pg_advisory_unlock($1)", &[&LOCK]).await;
    result
}
