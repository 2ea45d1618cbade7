//! A fleet for the tests: several real hosts on this machine — each a real
//! supervisord with its own programs and its own listener, labelled with its own host
//! name, with its own state directory — sharing one Slack stand-in and one
//! PostgreSQL database ([`super::postgres`]).

use std::time::Duration;

use super::slack::slack_listener_for;
use super::supervisord::{Program, Supervisord, SupervisordConfig};

/// One host of the fleet.
pub struct Host {
    pub name: String,
    pub sv: Supervisord,
    /// The listener's settings and state database.
    pub dir: tempfile::TempDir,
}

/// The fleet settings of the tests: heartbeats every second, silent after three.
pub fn fleet_settings(url: &str) -> String {
    format!("fleet_url = \"{url}\"\nheartbeat = \"1s\"\nsilent_after = \"3s\"\n")
}

impl Host {
    /// Starts host `name`: supervisord running `programs` and the listener, posting
    /// to the stand-in at `api_url`, in the fleet whose database is at `fleet_url`,
    /// with `extra` settings.
    pub fn start(name: &str, api_url: &str, fleet_url: &str, programs: &[Program], extra: &str) -> Host {
        Host::start_env(name, api_url, fleet_url, programs, extra, &[])
    }

    /// [`Host::start`] with more environment for the listener (an app token, say).
    pub fn start_env(
        name: &str,
        api_url: &str,
        fleet_url: &str,
        programs: &[Program],
        extra: &str,
        env: &[(&str, &str)],
    ) -> Host {
        let dir = tempfile::Builder::new().prefix(&format!("host-{name}-")).tempdir().unwrap();
        let settings = format!("{}{extra}", fleet_settings(fleet_url));
        let mut listener = slack_listener_for(name, dir.path(), api_url, &settings);
        for (k, v) in env {
            listener = listener.env(k, v);
        }
        let mut config = SupervisordConfig::new().listener(listener);
        for p in programs {
            config = config.program(p.clone());
        }
        Host {
            name: name.to_string(),
            sv: Supervisord::start(config),
            dir,
        }
    }

    /// The listener's stderr.
    pub fn log(&self) -> String {
        self.sv.listener_stderr()
    }

    /// Kills the whole host at once (supervisord, its programs, its listener), as a
    /// power cut does.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.sv.pid() {
            super::kill_tree(pid);
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    /// The events the listener said it received, (serial, process).
    pub fn received(&self) -> Vec<(u64, String)> {
        super::supervisord::received_events(&self.log())
            .into_iter()
            .filter(|r| r.eventname.starts_with("PROCESS_STATE_"))
            .map(|r| (r.serial, r.process))
            .collect()
    }
}

/// A program that crash-loops as fast as supervisord lets it: dies 0.2 s after each
/// start, restarted at once.
pub fn churner(name: &str) -> Program {
    Program::new(name, "/bin/sh -c 'sleep 0.2; exit 1'")
        .startsecs(0)
        .autorestart("true")
}

/// Starts the hosts `names` together (their first events race, as a deploy's do),
/// each with `start`.
pub fn start_together(names: &[&str], start: impl Fn(&str) -> Host + Sync) -> Vec<Host> {
    std::thread::scope(|s| {
        let start = &start;
        let started: Vec<_> = names.iter().map(|h| s.spawn(move || start(h))).collect();
        started.into_iter().map(|j| j.join().unwrap()).collect()
    })
}
