//! `check` for the fleet: the database answers (with the fix for a wrong URL, a
//! refused login, a missing database), its server version, the listener's schema
//! there (none yet, older, newer), whether the role may create it, and the hosts it
//! sees (silent ones named).

use super::Finding;
use crate::config::Settings;
use crate::store::PostgresShared;

/// Every finding about the fleet.
pub async fn check(settings: &Settings) -> Vec<Finding> {
    let Some(fleet) = &settings.fleet else {
        return vec![Finding::note(
            "fleet: off (one host, its state in SQLite); set fleet_url to share the thread map, the channel's budget and one board with other hosts",
        )];
    };
    let probe = match PostgresShared::probe(fleet).await {
        Ok(p) => p,
        Err(e) => {
            return vec![Finding::problem(
                format!("fleet {}: cannot use the fleet database", fleet.name),
                format!("{e}; the listener starts anyway and answers supervisord, but delivers nothing until the database answers"),
            )]
        }
    };
    let mut out = vec![Finding::ok(format!(
        "fleet {}: PostgreSQL {} at {}",
        fleet.name, probe.server_version, probe.address
    ))];
    let grant = "GRANT CREATE ON DATABASE <db> TO <role>; (or make the role the database's owner)";
    out.push(if probe.schema > probe.schema_known {
        Finding::problem(
            format!(
                "fleet database schema {} is newer than this release's {}: a newer supervisor-slack migrated it",
                probe.schema, probe.schema_known
            ),
            "upgrade this host to the fleet's release (an older listener does not write into tables it does not know)",
        )
    } else if !probe.can_create && probe.schema < probe.schema_known {
        Finding::problem(
            format!(
                "fleet database schema {} (this release needs {}), and the role may not create tables there",
                probe.schema, probe.schema_known
            ),
            grant,
        )
    } else if probe.schema == 0 {
        Finding::note(format!(
            "fleet database: no tables yet; the first listener to start creates them (schema {})",
            probe.schema_known
        ))
    } else if probe.schema < probe.schema_known {
        Finding::note(format!(
            "fleet database schema {} is older than this release's {}: the first listener of this release to start migrates it (under a lock, once)",
            probe.schema, probe.schema_known
        ))
    } else {
        Finding::ok(format!("fleet database schema {}", probe.schema))
    });
    if probe.hosts.is_empty() {
        out.push(Finding::note("fleet: no host has joined yet"));
    } else {
        let listed: Vec<String> = probe
            .hosts
            .iter()
            .map(|(h, quiet)| {
                if *quiet > fleet.silent_after {
                    format!("{h} (silent for {})", humantime::format_duration(std::time::Duration::from_secs(quiet.as_secs())))
                } else {
                    format!("{h} (heard of {}s ago)", quiet.as_secs())
                }
            })
            .collect();
        out.push(Finding::ok(format!("fleet: {} host(s): {}", probe.hosts.len(), listed.join(", "))));
    }
    if !probe.sockets.is_empty() {
        let held: Vec<String> = probe.sockets.iter().map(|(slot, h)| format!("{slot} by {h}")).collect();
        out.push(Finding::note(format!(
            "the Slack app's Socket Mode connections (socket_connections = {}): {}",
            fleet.socket_connections,
            held.join(", ")
        )));
    }
    out
}
