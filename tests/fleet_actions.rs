//! One Slack app for the whole fleet, with real hosts — each a real supervisord with
//! its own listener — sharing one app token, a real PostgreSQL, and the stand-in
//! handing every click to a live Socket Mode connection picked at random, as Slack
//! may: a Start on each host's failing `api` runs on that host and no other; at most
//! `socket_connections` hosts hold a connection (12 hosts, 2 sockets), and a killed
//! holder's connection moves; a value forged, signed by another fleet, naming a host
//! outside the fleet, or a queue row addressed to a host its signed value does not
//! name, runs nothing; with the database down a click is refused and the clicker told.
//!
//! Needs `scripts/test-env` (supervisord, PostgreSQL).

mod common;

use std::time::Duration;

use common::fleet::Host;
use common::postgres::{self, Cluster};
use common::secs;
use common::slack::{options, reported};
use common::supervisord::Program;
use supervisor_slack::actions::{Action, Signer};
use supervisor_slack::standin::{Click, Message, StandIn, StandInOptions, Thread};

const ADMIN: &str = "U0ADMIN";
const APP_TOKEN: &str = "xapp-1-A0TEST-1234-appsecretappsecret";

/// `api`: fails at once with a line on stderr, unless its host's flag file exists.
fn api(flag: &std::path::Path) -> Program {
    Program::new(
        "api",
        &format!(
            "/bin/sh -c 'test -f {} && exec sleep 1000; echo \"api: cannot bind :8080\" >&2; sleep 0.3; exit 1'",
            flag.display()
        ),
    )
    .startsecs(5)
    .startretries(0)
}

fn random_sockets() -> StandInOptions {
    StandInOptions {
        random_sockets: true,
        ..options()
    }
}

struct Fleet {
    standin: StandIn,
    hosts: Vec<Host>,
    flags: tempfile::TempDir,
    url: String,
    cluster: Option<Cluster>,
}

impl Fleet {
    /// Hosts `names` with `api` (failing) and actions on for [`ADMIN`], one app token,
    /// `socket_connections = sockets`, in a fresh database of `cluster` (the shared
    /// cluster when `None`).
    async fn start(names: &[&str], sockets: u32, cluster: Option<Cluster>) -> Fleet {
        let standin = StandIn::start(random_sockets()).await.unwrap();
        let url = match &cluster {
            Some(c) => c.database(),
            None => postgres::database(),
        };
        let flags = tempfile::tempdir().unwrap();
        let extra = format!("socket_connections = {sockets}\n[actions]\nallow_users = [\"{ADMIN}\"]\n");
        let api_url = standin.api_url();
        let hosts = common::fleet::start_together(names, |h| {
            let flag = flags.path().join(format!("{h}.fixed"));
            Host::start_env(h, &api_url, &url, &[api(&flag)], &extra, &[("SLACK_APP_TOKEN", APP_TOKEN)])
        });
        Fleet {
            standin,
            hosts,
            flags,
            url,
            cluster,
        }
    }

    fn db(&self) -> String {
        self.url.rsplit('/').next().unwrap().to_string()
    }

    fn psql(&self, sql: &str) -> String {
        match &self.cluster {
            Some(c) => c.psql(&self.db(), sql),
            None => postgres::shared().psql(&self.db(), sql),
        }
    }

    fn fix(&self, host: &str) {
        std::fs::write(self.flags.path().join(format!("{host}.fixed")), b"").unwrap();
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    /// The api card's thread across the fleet.
    fn api_card(&self) -> Option<Thread> {
        self.standin
            .channel("#ops")
            .into_iter()
            .find(|t| t.parent.header().unwrap_or_default().contains("api — "))
    }

    /// `host`'s reply in the api card's thread that carries a `start` button.
    fn start_reply(&self, host: &str) -> Option<Message> {
        self.api_card()?.replies.into_iter().rev().find(|r| {
            reported(r).is_some_and(|rep| rep.host == host)
                && self.standin.buttons("#ops", &r.ts).iter().any(|(id, _, _)| id == "start")
        })
    }

    async fn wait_start_buttons(&self, names: &[&str]) {
        let ok = self
            .standin
            .wait_for(secs(40), |_| names.iter().all(|h| self.start_reply(h).is_some()))
            .await;
        assert!(
            ok,
            "each host's FATAL reply with its Start button: {:#?}\n{}",
            self.api_card().map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>()),
            self.logs()
        );
    }

    fn logs(&self) -> String {
        self.hosts.iter().map(|h| format!("--- {}\n{}", h.name, h.log())).collect::<Vec<_>>().join("\n")
    }

    fn told(&self) -> Vec<String> {
        self.standin.ephemerals().into_iter().map(|e| e.text.unwrap_or_default()).collect()
    }

    fn api_state(&self, host: &str) -> String {
        self.host(host).sv.state("api").unwrap_or_default()
    }
}

fn click(reply: &Message, action: &str) -> Click {
    Click::new(ADMIN, "#ops", reply.ts.clone(), action)
}

/// Three hosts, one app token, two connections: a Start on each host's failing
/// `api`, each click handed to a random connection, starts it on that host and on no
/// other — 3 out of 3 — with each host's action audited in the program's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_each_hosts_failing_api_runs_on_that_host_and_no_other() {
    let f = Fleet::start(&["web-1", "web-2", "web-3"], 2, None).await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    assert!(f.standin.wait_for_sockets(2, secs(20)).await, "two hosts connect: {}", f.logs());
    f.wait_start_buttons(&["web-1", "web-2", "web-3"]).await;
    for h in ["web-1", "web-2", "web-3"] {
        f.fix(h);
    }
    let mut by_connection = Vec::new();
    for (n, host) in ["web-2", "web-3", "web-1"].iter().enumerate() {
        let reply = f.start_reply(host).unwrap();
        // The same click delivered twice, each envelope to a random connection.
        let mut c = click(&reply, "start");
        c.repeat = 2;
        let out = f.standin.click(c).await.unwrap();
        assert_eq!(out.acked, [true, true], "acked at once: {out:?}");
        by_connection.extend(f.standin.acks().iter().rev().take(2).map(|a| a.connection));
        assert!(
            common::wait_until(secs(20), || f.api_state(host) == "RUNNING"),
            "{host}'s api started: {}\n{:?}\n{}",
            f.api_state(host),
            f.told(),
            f.logs()
        );
        // Only there: the others still failing (those not yet clicked).
        for other in ["web-2", "web-3", "web-1"].iter().skip(n + 1) {
            assert_eq!(f.api_state(other), "FATAL", "{other}'s api was not touched by {host}'s click");
        }
    }
    let thread = |s: &StandIn| {
        s.channel("#ops")
            .into_iter()
            .find(|t| t.parent.header().unwrap_or_default().contains("api — "))
            .map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for host in ["web-1", "web-2", "web-3"] {
        let asked = format!("of api on {host} requested by");
        assert!(
            f.standin.wait_for(secs(30), |s| thread(s).iter().filter(|r| r.contains(&asked)).count() == 1).await,
            "{host}'s Start audited once in the program's thread: {:#?}",
            thread(&f.standin)
        );
    }
    let audit_now = || f.psql("SELECT host || ' ' || action || ' ' || coalesce(outcome, '-') FROM clicks ORDER BY id");
    common::wait_until(secs(10), || !audit_now().contains(" -"));
    let audit = audit_now();
    let rows: Vec<&str> = audit.lines().collect();
    assert_eq!(rows.len(), 3, "one audit row per click: {audit}");
    for host in ["web-1", "web-2", "web-3"] {
        assert!(rows.iter().any(|r| r.starts_with(&format!("{host} start RUNNING"))), "{host}: {audit}");
    }
    for h in &f.hosts {
        assert_eq!(h.sv.main_log().matches("spawned: 'api'").count(), 2, "{}: api spawned at boot and once by the click", h.name);
    }
    assert!(f.told().is_empty(), "nobody was refused: {:?}", f.told());
    eprintln!("figure: the 6 envelopes went to connections {by_connection:?}");
}

/// `socket_connections = 1`: one host holds the app's connection; killed, another
/// host takes it over within the lease (3 s with these settings) and clicks work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_socket_holders_connection_moves_to_another_host() {
    let mut f = Fleet::start(&["web-1", "web-2", "web-3"], 1, None).await;
    assert!(f.standin.wait_for_sockets(1, secs(20)).await, "{}", f.logs());
    let holder = f.psql("SELECT holder FROM leases WHERE name = 'socket 1'");
    let holder = holder.trim().to_string();
    let victim = f.hosts.iter().position(|h| h.name == holder).unwrap_or_else(|| panic!("a holder: {holder:?}"));
    tokio::time::sleep(secs(2)).await;
    assert_eq!(f.standin.socket_connections(), 1, "one socket for three hosts");
    assert_eq!(f.standin.sockets_opened(), 1, "and no other opened");
    f.hosts[victim].kill9();
    let killed = std::time::Instant::now();
    assert!(
        f.standin.wait_for(secs(20), |s| s.sockets_opened() == 2 && s.socket_connections() == 1).await,
        "another host connects: {}",
        f.logs()
    );
    eprintln!("figure: a new connection {:.1} s after its holder was killed (lease 3 s)", killed.elapsed().as_secs_f64());
    let now = f.psql("SELECT holder FROM leases WHERE name = 'socket 1'");
    assert_ne!(now.trim(), holder, "the slot moved");
    let new_holder = f.host(now.trim());
    assert!(new_holder.log().contains("holds one of the fleet's Socket Mode connections"), "the log says who holds it");
    // A click on a surviving host's card works through the new connection.
    let survivor = f.hosts.iter().find(|h| h.name != holder).unwrap().name.clone();
    f.host(&survivor).sv.wait_for_state("api", "FATAL", secs(20));
    f.wait_start_buttons(&[&survivor]).await;
    f.fix(&survivor);
    f.standin.click(click(&f.start_reply(&survivor).unwrap(), "start")).await.unwrap();
    assert!(common::wait_until(secs(20), || f.api_state(&survivor) == "RUNNING"), "{}", f.logs());
}

/// Twelve hosts with `socket_connections = 2` open exactly two sockets, and keep
/// them (no host opens one while the two holders live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_hosts_with_two_socket_connections_open_exactly_two() {
    let names: Vec<String> = (1..=12).map(|i| format!("h{i:02}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Fleet::start(&names, 2, None).await;
    assert!(
        common::wait_until(secs(60), || f.psql("SELECT count(*) FROM hosts").trim() == "12"),
        "twelve hosts beat: {}",
        f.psql("SELECT host FROM hosts")
    );
    assert!(f.standin.wait_for_sockets(2, secs(20)).await, "{}", f.logs());
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(f.standin.socket_connections());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(most, 2, "never more than two at once");
    assert_eq!(f.standin.socket_connections(), 2);
    assert_eq!(f.standin.sockets_opened(), 2, "no host opened another one meanwhile");
    let holders = f.psql("SELECT count(DISTINCT holder) FROM leases WHERE name LIKE 'socket %'");
    assert_eq!(holders.trim(), "2", "two hosts hold them");
    let quiet = f.hosts.iter().filter(|h| h.log().contains("held by other hosts: this host opens none")).count();
    assert_eq!(quiet, 10, "the other ten say so");
}

/// A value forged, signed by another fleet, or naming a host outside the fleet is
/// refused by the host that receives it; a queue row for web-2 carrying a click
/// whose signed value names web-1 is refused by web-2. Nothing runs anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_foreign_values_and_misaddressed_rows_run_nothing() {
    let f = Fleet::start(&["web-1", "web-2"], 1, None).await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    f.wait_start_buttons(&["web-1", "web-2"]).await;
    f.fix("web-1");
    f.fix("web-2");
    let reply = f.start_reply("web-2").unwrap();
    let (_, _, value) = f.standin.buttons("#ops", &reply.ts).into_iter().find(|(id, _, _)| id == "start").unwrap();
    let send = |value: String| {
        let mut c = click(&reply, "start");
        c.value = Some(value);
        f.standin.click(c)
    };
    // Signed by another fleet (another key).
    let other = Signer::new(&[7u8; 32]);
    let key = |host: &str| supervisor_slack::supervisord::event::ThreadKey {
        host: host.into(),
        group: "api".into(),
        process: "api".into(),
    };
    send(other.value(&key("web-2"), Action::Start)).await.unwrap();
    // Signed with this fleet's key, for a host outside the fleet.
    let hex_key = f.psql("SELECT value FROM meta WHERE key = 'action_signing_key'");
    let fleet_signer = Signer::new(&hex::decode(hex_key.trim()).unwrap());
    send(fleet_signer.value(&key("web-9"), Action::Start)).await.unwrap();
    // Edited: web-2's value with another process.
    send(value.replace("\"api\"", "\"slack\"")).await.unwrap();
    assert!(
        common::wait_until(secs(15), || f.told().len() == 3),
        "each refused and told: {:#?}",
        f.told()
    );
    let told = f.told();
    assert_eq!(told.iter().filter(|t| t.contains("not signed by this fleet")).count(), 2, "{told:#?}");
    assert!(told.iter().any(|t| t.contains("*web-9*, which is not in this fleet")), "{told:#?}");
    // A row written straight into the queue for web-2, carrying web-1's signed value.
    let web1 = fleet_signer.value(&key("web-1"), Action::Start);
    let row = serde_json::json!({
        "user": ADMIN, "channel_id": f.standin.channel_id("#ops").unwrap(), "message_ts": reply.ts,
        "thread_ts": null, "action_id": "start", "value": web1, "action_ts": format!("{}.000100", chrono::Utc::now().timestamp()),
        "audit": 0
    });
    f.psql(&format!(
        "INSERT INTO actions (fleet, owner, kind, payload, expires_at) VALUES ('default', 'web-2', 'click', '{}'::jsonb, now() + interval '30 seconds')",
        row.to_string().replace('\'', "''")
    ));
    assert!(
        common::wait_until(secs(15), || f.psql("SELECT state FROM actions WHERE owner = 'web-2' ORDER BY id DESC LIMIT 1").trim() == "done"),
        "web-2 took the row"
    );
    let answer = f.psql("SELECT answer::text FROM actions WHERE owner = 'web-2' ORDER BY id DESC LIMIT 1");
    assert!(answer.contains("refused: addressed to web-1"), "{answer}");
    assert!(f.host("web-2").log().contains("names another host in its signed value"), "{}", f.host("web-2").log());
    tokio::time::sleep(secs(2)).await;
    for h in ["web-1", "web-2"] {
        assert_eq!(f.api_state(h), "FATAL", "nothing ran on {h}");
    }
    let audit = f.psql("SELECT count(*) FROM clicks WHERE outcome NOT LIKE 'refused%'");
    assert_eq!(audit.trim(), "0", "nothing ran: {}", f.psql("SELECT * FROM clicks"));
}

/// With the fleet database down a click runs nothing and its clicker is told at
/// once; it does not run later when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_a_click_is_refused_and_never_runs_later() {
    let f = Fleet::start(&["web-1", "web-2"], 1, Some(Cluster::start())).await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    assert!(f.standin.wait_for_sockets(1, secs(20)).await, "{}", f.logs());
    f.wait_start_buttons(&["web-1", "web-2"]).await;
    f.fix("web-1");
    f.fix("web-2");
    let replies = [f.start_reply("web-1").unwrap(), f.start_reply("web-2").unwrap()];
    let cluster = f.cluster.as_ref().unwrap();
    cluster.stop_server();
    for r in &replies {
        let out = f.standin.click(click(r, "start")).await.unwrap();
        assert_eq!(out.acked, [true], "acked with the database down: {out:?}");
    }
    assert!(
        common::wait_until(secs(20), || f.told().iter().filter(|t| t.contains("fleet database cannot be reached")).count() == 2),
        "both clickers told: {:#?}\n{}",
        f.told(),
        f.logs()
    );
    cluster.start_server();
    tokio::time::sleep(secs(8)).await;
    for h in ["web-1", "web-2"] {
        assert_eq!(f.api_state(h), "FATAL", "nothing ran on {h}, then or later");
    }
}

/// A holder killed while it routes a click: the click ran once (its request and
/// outcome in the thread) or not at all (nothing in the thread), never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_click_runs_it_once_or_not_at_all_and_the_thread_says_which() {
    let mut f = Fleet::start(&["web-1", "web-2"], 1, None).await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    assert!(f.standin.wait_for_sockets(1, secs(20)).await, "{}", f.logs());
    let holder = f.psql("SELECT holder FROM leases WHERE name = 'socket 1'").trim().to_string();
    let owner = if holder == "web-1" { "web-2" } else { "web-1" };
    f.wait_start_buttons(&[owner]).await;
    f.fix(owner);
    let reply = f.start_reply(owner).unwrap();
    f.standin.click(click(&reply, "start")).await.unwrap();
    let victim = f.hosts.iter().position(|h| h.name == holder).unwrap();
    f.hosts[victim].kill9();
    tokio::time::sleep(secs(8)).await;
    let requested = format!("of api on {owner} requested by");
    let lines = f.api_card().map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>()).unwrap_or_default();
    let asked = lines.iter().filter(|l| l.contains(&requested)).count();
    let spawned = f.host(owner).sv.main_log().matches("spawned: 'api'").count();
    match f.api_state(owner).as_str() {
        "RUNNING" => {
            assert_eq!(asked, 1, "it ran, once, and the thread says so: {lines:#?}");
            assert_eq!(spawned, 2, "spawned at boot and once by the click");
        }
        other => {
            assert_eq!(other, "FATAL");
            assert_eq!(asked, 0, "it did not run, and the thread says nothing ran: {lines:#?}");
            assert_eq!(spawned, 1);
        }
    }
    eprintln!("figure: with its holder killed at once, the click {}", if asked == 1 { "ran" } else { "did not run" });
}

/// `thread_by = "host"`: each host keeps its own card, and their buttons work from
/// whichever connection Slack picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_cards_keep_their_buttons_working_from_any_connection() {
    let standin = StandIn::start(random_sockets()).await.unwrap();
    let url = postgres::database();
    let extra = format!("thread_by = \"host\"\nsocket_connections = 1\n[actions]\nallow_users = [\"{ADMIN}\"]\n");
    let hosts: Vec<Host> = ["web-1", "web-2"]
        .iter()
        .map(|h| Host::start_env(h, &standin.api_url(), &url, &[Program::sleeper("worker")], &extra, &[("SLACK_APP_TOKEN", APP_TOKEN)]))
        .collect();
    assert!(standin.wait_for_sockets(1, secs(20)).await);
    for h in &hosts {
        h.sv.wait_for_state("worker", "RUNNING", secs(10));
        let title = format!("worker RUNNING on {}", h.name);
        let card = |s: &StandIn| {
            s.channel("#ops").into_iter().find(|t| {
                t.parent.header().unwrap_or_default().contains(&title) && s.buttons("#ops", &t.parent.ts).iter().any(|(id, _, _)| id == "restart")
            })
        };
        assert!(standin.wait_for(secs(30), |s| card(s).is_some()).await, "{}'s own card with its buttons", h.name);
        let before = h.sv.process_pid("worker").unwrap();
        let ts = card(&standin).unwrap().parent.ts;
        standin.click(Click::new(ADMIN, "#ops", ts, "restart")).await.unwrap();
        assert!(
            common::wait_until(secs(20), || h.sv.process_pid("worker").is_some_and(|p| p != before)),
            "{}'s worker restarted: {:?}",
            h.name,
            standin.ephemerals()
        );
    }
}

/// `api` down on several hosts: the program's card offers one Start for all of them,
/// its confirmation naming them; clicked (delivered twice), it starts api on each
/// host where it is down — once each — and not where someone started it already,
/// and each host's Start is audited in the thread with its own outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_start_on_the_programs_card_starts_it_on_every_host_where_it_is_down() {
    let f = Fleet::start(&["web-1", "web-2", "web-3"], 2, None).await;
    for h in &f.hosts {
        h.sv.wait_for_state("api", "FATAL", secs(20));
    }
    let card_button = |s: &StandIn| {
        let t = s.channel("#ops").into_iter().find(|t| t.parent.header().unwrap_or_default().contains("api — FATAL on 3 hosts"))?;
        let b = s.buttons("#ops", &t.parent.ts).into_iter().find(|(id, _, _)| id == "start")?;
        Some((t, b))
    };
    assert!(f.standin.wait_for(secs(40), |s| card_button(s).is_some()).await, "the card's Start: {:#?}", f.api_card());
    let (card, (_, text, _)) = card_button(&f.standin).unwrap();
    assert_eq!(text, "Start on the 3 failing hosts");
    let json = serde_json::to_string(&card.parent.attachments).unwrap();
    assert!(json.contains("supervisord starts api on web-1, web-2, web-3"), "the confirmation names the hosts: {json}");
    for h in ["web-1", "web-2", "web-3"] {
        f.fix(h);
    }
    // Someone starts it on web-3 by hand first: the card's Start leaves it alone.
    f.host("web-3").sv.ctl_ok(&["start", "api"]);
    tokio::time::sleep(secs(2)).await;
    let mut c = Click::new(ADMIN, "#ops", card.parent.ts.clone(), "start");
    c.repeat = 2;
    let out = f.standin.click(c).await.unwrap();
    assert_eq!(out.acked, [true, true]);
    for h in ["web-1", "web-2"] {
        assert!(common::wait_until(secs(20), || f.api_state(h) == "RUNNING"), "{h}: {}\n{:?}\n{}", f.api_state(h), f.told(), f.logs());
    }
    tokio::time::sleep(secs(3)).await;
    for h in &f.hosts {
        assert_eq!(h.sv.main_log().matches("spawned: 'api'").count(), 2, "{}: at boot, then once", h.name);
    }
    let lines = f.api_card().map(|t| t.replies.iter().map(|r| r.visible_text()).collect::<Vec<_>>()).unwrap_or_default();
    for h in ["web-1", "web-2"] {
        let asked = format!("of api on {h} requested by");
        assert_eq!(lines.iter().filter(|l| l.contains(&asked)).count(), 1, "{h} audited once: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.contains("of api on web-3 requested by")), "web-3 was not asked: {lines:#?}");
    let audit = f.psql("SELECT host || ' ' || coalesce(outcome, '-') FROM clicks ORDER BY host");
    assert!(audit.contains("web-1 RUNNING") && audit.contains("web-2 RUNNING"), "{audit}");
    assert!(!audit.contains("web-3"), "{audit}");
}
