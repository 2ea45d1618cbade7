//! Alternated A/B runs of the load driver: the answer figures of two listeners from
//! the same run, each the better of two, so that the machine's moods fall on both.
//! - [`before_after`]: another build of the listener (say, the last release) against
//!   this one;
//! - [`fleet_off_on`]: this listener with its state in SQLite alone, against the same
//!   with a fleet (a private PostgreSQL): the answer must not notice the fleet.

use std::path::Path;

use super::{drive_with, listener_from, print, supervisor_slack, Figures, Subject};
use supervisor_slack::standin::{StandIn, StandInOptions};

fn fresh(rt: &tokio::runtime::Runtime) -> StandIn {
    rt.block_on(StandIn::start(StandInOptions {
        enforce_rate_limit: false,
        ..StandInOptions::default()
    }))
    .expect("start the Slack stand-in")
}

fn better(a: Option<Figures>, b: Figures) -> Figures {
    match a {
        Some(a) if a.p99 <= b.p99 => a,
        _ => b,
    }
}

fn ratios(what: &str, a: &Figures, b: &Figures) {
    println!(
        "{what} (better of two runs each, alternated): p50 {:.2}×, p99 {:.2}×, events/s {:.2}×, peak RSS {:.1} → {:.1} MB",
        b.p50.as_secs_f64() / a.p50.as_secs_f64(),
        b.p99.as_secs_f64() / a.p99.as_secs_f64(),
        b.per_sec / a.per_sec,
        a.peak_rss_kb as f64 / 1024.0,
        b.peak_rss_kb as f64 / 1024.0,
    );
}

/// `before` (another build) against this build, alternated.
pub fn before_after(rt: &tokio::runtime::Runtime, before: &Path, n: usize, processes: usize) {
    let (mut a, mut b) = (None, None);
    for _ in 0..2 {
        let slack = fresh(rt);
        a = Some(better(a, drive_with(&slack, listener_from(before, &slack.api_url()), n, processes)));
        let slack = fresh(rt);
        b = Some(better(b, drive_with(&slack, supervisor_slack(&slack.api_url()), n, processes)));
    }
    let (a, b) = (a.unwrap(), b.unwrap());
    print(&format!("before ({})", before.display()), &a);
    print("now (this build)", &b);
    ratios("now ÷ before", &a, &b);
}

fn with_fleet(mut s: Subject, url: &str) -> Subject {
    s.cmd.env("SUPERVISOR_SLACK_FLEET_URL", url);
    s
}

/// The listener without and with a fleet (a private PostgreSQL, started here),
/// alternated; then `n_rss` events with the fleet on, for its peak RSS.
pub fn fleet_off_on(rt: &tokio::runtime::Runtime, n: usize, n_rss: usize, processes: usize) {
    let cluster = super::postgres::Cluster::start();
    let (mut off, mut on) = (None, None);
    for _ in 0..2 {
        let slack = fresh(rt);
        off = Some(better(off, drive_with(&slack, supervisor_slack(&slack.api_url()), n, processes)));
        let slack = fresh(rt);
        let url = cluster.database();
        on = Some(better(on, drive_with(&slack, with_fleet(supervisor_slack(&slack.api_url()), &url), n, processes)));
    }
    let (off, on) = (off.unwrap(), on.unwrap());
    print("supervisor-slack, one host (SQLite)", &off);
    print("supervisor-slack, in a fleet (PostgreSQL)", &on);
    ratios("fleet on ÷ off", &off, &on);
    if n_rss > n {
        let slack = fresh(rt);
        let url = cluster.database();
        let big = drive_with(&slack, with_fleet(supervisor_slack(&slack.api_url()), &url), n_rss, processes);
        print(&format!("supervisor-slack, in a fleet, {n_rss} events"), &big);
    }
}
