//! What `check` reports of the fleet database: one connection, no schema change.

use std::time::Duration;

use super::conn::Pg;
use super::{schema, PostgresShared};
use crate::config::FleetSettings;
use crate::store::StoreError;

/// What `check` reports of the fleet database.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetProbe {
    /// `HOST:PORT/DATABASE as USER`.
    pub address: String,
    /// The server's version (`server_version`).
    pub server_version: String,
    /// The listener's schema version there (0: none yet), and this release's.
    pub schema: i32,
    pub schema_known: i32,
    /// The hosts of this fleet, and how long since each was heard of.
    pub hosts: Vec<(String, Duration)>,
    /// Whether the role may create tables in the database (the first listener needs
    /// to, to create the schema; later migrations too).
    pub can_create: bool,
    /// Who holds the Slack app's Socket Mode connections: (slot, host).
    pub sockets: Vec<(String, String)>,
}

impl PostgresShared {
    /// Connects once (no schema change) and says what the fleet database holds: for
    /// `check`. The error says what is wrong and how to fix it.
    pub async fn probe(fleet: &FleetSettings) -> Result<FleetProbe, StoreError> {
        let pg = Pg::new(&fleet.url)?;
        let address = pg.address();
        let config: tokio_postgres::Config =
            fleet.url.expose().parse().map_err(|_| StoreError::Fleet {
                message: "fleet_url is not a PostgreSQL connection string".into(),
            })?;
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            config.connect(tokio_postgres::NoTls),
        );
        let (client, connection) = match connect.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(pg.error(&e)),
            Err(_) => {
                return Err(StoreError::Fleet {
                    message: format!("no answer from {address} within 10s"),
                })
            }
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let can_create: bool = client
            .query_one(
                "SELECT has_database_privilege(current_user, current_database(), 'CREATE')",
                &[],
            )
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let at = match schema::version(&client).await {
            Ok(v) => v,
            // A role that may not create the schema's bookkeeping table: no schema yet.
            Err(_) if !can_create => 0,
            Err(e) => return Err(pg.error(&e)),
        };
        let has_hosts: bool = client
            .query_one("SELECT to_regclass('hosts') IS NOT NULL", &[])
            .await
            .map_err(|e| pg.error(&e))?
            .get(0);
        let hosts = if has_hosts {
            client
                .query(
                    "SELECT host, EXTRACT(EPOCH FROM now() - last_seen)::float8 FROM hosts WHERE fleet = $1 ORDER BY host",
                    &[&fleet.name],
                )
                .await
                .map_err(|e| pg.error(&e))?
                .iter()
                .map(|r| (r.get::<_, String>(0), Duration::try_from_secs_f64(r.get(1)).unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        let sockets = if has_hosts {
            client
                .query(
                    "SELECT name, holder FROM leases WHERE fleet = $1 AND starts_with(name, 'socket ') AND expires_at > now() ORDER BY name",
                    &[&fleet.name],
                )
                .await
                .map_err(|e| pg.error(&e))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(FleetProbe {
            sockets,
            address,
            server_version: version,
            schema: at,
            schema_known: schema::VERSION,
            hosts,
            can_create,
        })
    }
}
