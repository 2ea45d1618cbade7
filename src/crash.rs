//! Crash context: why a process died, asked of supervisord over its XML-RPC interface.
//!
//! When a process goes BACKOFF, FATAL or EXITED unexpectedly, the event itself says
//! nothing about why (no exit code, no output). supervisord knows: `getProcessInfo`
//! has the exit status, the spawn error and the run's start/stop times, and
//! `readProcessStderrLog` has the last bytes the process wrote. [`ContextSource`]
//! fetches both through the [`xmlrpc::Client`] and hands the dispatcher a
//! [`CrashContext`] for the thread reply. Where `getProcessInfo` has lost the exit
//! status (a run that ended before `startsecs`, a process autorestarted before the
//! listener got the event, a signal), supervisord's own log (`readLog`) still has its
//! `exited:` line.
//!
//! Crash context is best effort and bounded: [`ContextSource::for_event`] never
//! fails and never takes longer than [`ContextOptions::timeout`]. When something is
//! missing, [`CrashContext::unavailable`] says why in words a user can act on
//! ("permission denied on /run/supervisor.sock ..."), and the card goes out anyway.
//! Knows nothing of Slack.

use std::time::Duration;

use crate::card::CrashContext;
use crate::secret::Secret;
use crate::supervisord::event::{ProcessState, State};
use crate::supervisord::xmlrpc::{self, Client, LogChannel, ProcessInfo};

/// Limits of one crash-context fetch.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// The whole fetch (info + log tail, retries included). The card goes out
    /// without context rather than wait longer.
    pub timeout: Duration,
    /// Lines of the log tail kept.
    pub tail_lines: usize,
    /// Characters of the log tail kept (the window read is four times as many bytes,
    /// since a character takes up to four).
    pub tail_chars: usize,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            timeout: Duration::from_secs(2),
            tail_lines: 20,
            tail_chars: 2000,
        }
    }
}

/// Fetches [`CrashContext`] for failure events. Built once from the settings.
#[derive(Debug, Clone)]
pub struct ContextSource {
    client: Client,
    opts: ContextOptions,
}

impl ContextSource {
    /// A source for supervisord at `server_url` (`unix:///path/supervisor.sock` or
    /// `http://host:port`). Credentials are those of `[unix_http_server]` /
    /// `[inet_http_server]`: supervisord does not pass them to listeners.
    pub fn new(
        server_url: &str,
        username: Option<String>,
        password: Option<Secret>,
        opts: ContextOptions,
    ) -> Result<Self, xmlrpc::Error> {
        let client = Client::new(server_url, username, password)?;
        Ok(Self::with_client(client, opts))
    }

    /// A source asking through `client`. Each call is bounded by the whole fetch's
    /// time-out as well.
    pub fn with_client(client: Client, opts: ContextOptions) -> Self {
        let client = client.with_timeout(opts.timeout);
        ContextSource { client, opts }
    }

    /// A source for the supervisord that started this listener, from
    /// `SUPERVISOR_SERVER_URL` (which supervisord sets for every child).
    pub fn from_env(
        username: Option<String>,
        password: Option<Secret>,
        opts: ContextOptions,
    ) -> Result<Self, xmlrpc::Error> {
        let client = Client::from_env(username, password)?;
        Ok(Self::with_client(client, opts))
    }

    /// The client underneath, for other callers (a `check` command).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether `event` is a death worth explaining: the process is failing
    /// ([`ProcessState::is_failing`]).
    pub fn wants(event: &ProcessState) -> bool {
        event.is_failing()
    }

    /// For EXITED when unexpected, BACKOFF and FATAL: everything supervisord can tell
    /// about why the process died; for other transitions `None`.
    ///
    /// Never fails and never takes longer than [`ContextOptions::timeout`]: whatever
    /// could not be had is explained in [`CrashContext::unavailable`], alongside
    /// whatever was fetched before the problem.
    pub async fn for_event(&self, event: &ProcessState) -> Option<CrashContext> {
        if !Self::wants(event) {
            return None;
        }
        let mut ctx = CrashContext::default();
        let fetched = tokio::time::timeout(self.opts.timeout, self.fill(event, &mut ctx)).await;
        if fetched.is_err() {
            add_reason(
                &mut ctx,
                xmlrpc::Error::Timeout(self.opts.timeout).to_string(),
            );
        }
        if let Some(reason) = &ctx.unavailable {
            tracing::warn!(
                process = %event.display_name(),
                serial = event.serial,
                reason = %reason,
                "crash context incomplete"
            );
        }
        Some(ctx)
    }

    /// Fills `ctx` step by step, so that a time-out keeps what came before it.
    async fn fill(&self, event: &ProcessState, ctx: &mut CrashContext) {
        let name = format!("{}:{}", event.group, event.process);
        let info = match self.client.get_process_info(&name).await {
            Ok(info) => info,
            Err(e) => {
                add_reason(ctx, e.to_string());
                return;
            }
        };
        // supervisord keeps only the latest run, and a new spawn clears the exit status
        // and spawn error. A process restarted since this event (BACKOFF retries,
        // autorestart, a delivery delayed by an outage) is in another state now, or
        // started after the event: its details would describe the wrong run.
        let restarted_since =
            info.statename != event.to.as_str() || info.start > event.at.timestamp();
        if !restarted_since {
            apply_info(event, &info, ctx);
        }
        // getProcessInfo has no exit status for a run that ended before startsecs
        // (BACKOFF/FATAL), none once the process was restarted (autorestart restarts
        // it before the listener even receives the EXITED event), and only -1 for a
        // signal. supervisord's own log has the line `exited: NAME (exit status 3; not
        // expected)` for every one of them.
        if ctx.exit_status.is_none_or(|s| s < 0) {
            if let Some(exit) = self.exit_from_main_log(event).await {
                ctx.exit_status = exit.status;
                if let Some(signal) = exit.signal {
                    // more telling than getProcessInfo's "Bad exit code -1"
                    ctx.spawn_error = Some(signal);
                }
                if restarted_since {
                    ctx.uptime_secs = exit.uptime_secs;
                }
            } else if restarted_since {
                add_reason(
                    ctx,
                    format!(
                        "the process was restarted before supervisord was asked (now {}): exit details are gone",
                        info.statename
                    ),
                );
            }
        }

        let channel = if !info.stderr_logfile.is_empty() {
            LogChannel::Stderr
        } else if !info.stdout_logfile.is_empty() {
            // redirect_stderr=true: stderr went into the stdout log.
            LogChannel::Stdout
        } else {
            add_reason(
                ctx,
                "the process's output is not logged (stderr_logfile and stdout_logfile are NONE)"
                    .into(),
            );
            return;
        };
        ctx.log_name = Some(channel.as_str().to_string());
        match self.log_tail(channel, &name).await {
            Ok(Some(tail)) => ctx.log_tail = Some(tail),
            Ok(None) => add_reason(ctx, format!("the {} log is empty", channel.as_str())),
            Err(reason) => add_reason(ctx, reason),
        }
    }

    /// The last lines of a log, or why not.
    async fn log_tail(&self, channel: LogChannel, name: &str) -> Result<Option<String>, String> {
        self.client.last_lines(channel, name, self.opts.tail_lines, self.opts.tail_chars)
            .await
    }

    /// The death of `event`'s process as supervisord logged it, if its line is in the
    /// last 16 KiB of supervisord's log.
    async fn exit_from_main_log(&self, event: &ProcessState) -> Option<LoggedExit> {
        match self.client.read_window(None, 16 * 1024).await {
            Ok((log, _)) => {
                let not_after = event.at.with_timezone(&chrono::Local).naive_local()
                    + chrono::Duration::seconds(1);
                find_logged_exit(&log, &event.process, not_after)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read supervisord's log for the exit status");
                None
            }
        }
    }
}

/// A process's death as supervisord's own log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedExit {
    /// The exit status; `None` when a signal ended the process.
    pub status: Option<i64>,
    /// "terminated by SIGSEGV (core dumped)" when a signal ended the process.
    pub signal: Option<String>,
    /// From the `spawned:` line before it to the `exited:` line, when both are there.
    pub uptime_secs: Option<i64>,
}

/// Finds the last `exited: NAME (...)` line of supervisord's log at or before
/// `not_after` (local time, as the log writes it) and reads the exit from it:
///
/// ```text
/// 2026-11-26 15:04:08,556 INFO spawned: 'quick' with pid 24213
/// 2026-11-26 15:04:08,592 WARN exited: quick (exit status 1; not expected)
/// 2026-11-26 15:04:09,101 WARN exited: web (terminated by SIGSEGV (core dumped); not expected)
/// ```
pub fn find_logged_exit(
    log: &str,
    process: &str,
    not_after: chrono::NaiveDateTime,
) -> Option<LoggedExit> {
    let exited = format!("exited: {process} (");
    let spawned = format!("spawned: '{process}' with pid ");
    let mut last_spawn: Option<chrono::NaiveDateTime> = None;
    let mut found = None;
    for line in log.lines() {
        // `2026-11-26 15:04:08,556 LEVL message`
        let Some(at) = line
            .get(..23)
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S,%3f").ok())
        else {
            continue;
        };
        if at > not_after {
            break;
        }
        let Some(message) = line[23..].trim_start().split_once(' ').map(|(_, m)| m) else {
            continue;
        };
        if message.starts_with(&spawned) {
            last_spawn = Some(at);
        } else if let Some(rest) = message.strip_prefix(&exited) {
            let how = rest
                .strip_suffix("; not expected)")
                .or_else(|| rest.strip_suffix("; expected)"))
                .unwrap_or(rest);
            let (status, signal) = match how.strip_prefix("exit status ") {
                Some(n) => (n.trim().parse().ok(), None),
                None => (None, Some(how.to_string())),
            };
            found = Some(LoggedExit {
                status,
                signal,
                uptime_secs: last_spawn.map(|s| (at - s).num_seconds()),
            });
        }
    }
    found
}

/// Exit status, spawn error and uptime from `getProcessInfo`.
fn apply_info(event: &ProcessState, info: &ProcessInfo, ctx: &mut CrashContext) {
    if !info.spawnerr.is_empty() {
        ctx.spawn_error = Some(info.spawnerr.clone());
    }
    // supervisord records no exit status for a process that died before startsecs
    // (BACKOFF/FATAL) and reports 0 then: only an EXITED status is real.
    if event.to == State::Exited {
        ctx.exit_status = Some(info.exitstatus);
    }
    ctx.uptime_secs = if info.start <= 0 {
        None
    } else if info.stop >= info.start {
        Some(info.stop - info.start)
    } else if matches!(info.statename.as_str(), "STARTING" | "RUNNING" | "STOPPING") {
        Some(info.now - info.start)
    } else {
        None // a spawn that failed before a process existed: no run to measure
    };
}

fn add_reason(ctx: &mut CrashContext, reason: String) {
    ctx.unavailable = Some(match ctx.unavailable.take() {
        Some(prev) => format!("{prev}; {reason}"),
        None => reason,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN_LOG: &str = "\
2026-11-26 15:04:07,488 INFO spawned: 'quick' with pid 24201
2026-11-26 15:04:07,524 WARN exited: quick (exit status 1; not expected)
2026-11-26 15:04:08,556 INFO spawned: 'quick' with pid 24213
2026-11-26 15:04:09,592 WARN exited: quick (exit status 2; not expected)
2026-11-26 15:04:09,581 INFO gave up: quick entered FATAL state, too many start retries too quickly
2026-11-26 15:04:10,000 INFO spawned: 'web' with pid 300
2026-11-26 15:05:12,100 WARN exited: web (terminated by SIGSEGV (core dumped); not expected)
2026-11-26 15:05:12,200 INFO spawned: 'web' with pid 301
2026-11-26 15:09:00,000 WARN exited: quick (exit status 9; not expected)
";

    fn local(s: &str) -> chrono::NaiveDateTime {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn the_logged_exit_is_the_last_one_before_the_event() {
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:05:00")),
            Some(LoggedExit {
                status: Some(2),
                signal: None,
                uptime_secs: Some(1),
            })
        );
        // a later crash is not this event's
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:04:08"))
                .unwrap()
                .status,
            Some(1)
        );
        assert_eq!(
            find_logged_exit(MAIN_LOG, "quick", local("2026-11-26 15:04:00")),
            None
        );
    }

    #[test]
    fn a_signal_death_is_told_in_words() {
        assert_eq!(
            find_logged_exit(MAIN_LOG, "web", local("2026-11-26 16:00:00")),
            Some(LoggedExit {
                status: None,
                signal: Some("terminated by SIGSEGV (core dumped)".into()),
                uptime_secs: Some(62),
            })
        );
        // a name that is a prefix of another is not confused with it
        assert_eq!(
            find_logged_exit(MAIN_LOG, "we", local("2026-11-26 16:00:00")),
            None
        );
    }

    #[test]
    fn only_failures_get_context() {
        let mut ev = ProcessState {
            host: "h".into(),
            server: "s".into(),
            serial: 1,
            pool: "p".into(),
            poolserial: 1,
            group: "g".into(),
            process: "p".into(),
            from: State::Running,
            to: State::Exited,
            pid: Some(1),
            tries: None,
            expected: Some(true),
            at: chrono::Utc::now(),
            extra: Vec::new(),
            reconciled: None,
        };
        assert!(!ContextSource::wants(&ev));
        ev.expected = Some(false);
        assert!(ContextSource::wants(&ev));
        for (to, want) in [
            (State::Backoff, true),
            (State::Fatal, true),
            (State::Running, false),
            (State::Stopped, false),
            (State::Starting, false),
        ] {
            ev.to = to;
            assert_eq!(ContextSource::wants(&ev), want, "{to}");
        }
    }
}
