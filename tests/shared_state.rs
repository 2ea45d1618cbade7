//! The shared state's contract, against both of its implementations: SQLite (one
//! host, a real file) and PostgreSQL (a fleet, a real private cluster). The same
//! checks run against each; the fleet's own parts (hosts, leases, the shared budget,
//! migrations) against PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::events::{self, EventBuilder};
use common::postgres;
use supervisor_slack::config::FleetSettings;
use supervisor_slack::pacing::Call;
use supervisor_slack::secret::Secret;
use supervisor_slack::store::{
    AuditKeep, Budget, HostProcess, PostgresShared, Posted, SharedState, SqliteShared,
};
use supervisor_slack::supervisord::event::{ProcessState, State, ThreadKey};

fn budget() -> Budget {
    Budget {
        post_burst: 2,
        post_interval: Duration::from_millis(200),
        updates_per_minute: 600,
    }
}

fn fleet(url: &str, name: &str) -> FleetSettings {
    FleetSettings {
        url: Secret::new(url),
        name: name.into(),
        heartbeat: Duration::from_secs(1),
        silent_after: Duration::from_secs(3),
        by_program: true,
        socket_connections: 2,
    }
}

/// A fleet's shared state on a fresh database, connected.
async fn pg(url: &str, name: &str) -> Arc<PostgresShared> {
    let s = PostgresShared::start(&fleet(url, name), budget()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), s.until_connected())
        .await
        .expect("connected to the test cluster");
    s
}

fn sqlite(dir: &tempfile::TempDir) -> SqliteShared {
    SqliteShared::open(&dir.path().join("state.db"), budget()).unwrap()
}

fn key(host: &str, process: &str) -> ThreadKey {
    ThreadKey {
        host: host.into(),
        group: "api".into(),
        process: process.into(),
    }
}

fn ev(process: &str, serial: u64, to: State) -> ProcessState {
    events::ev(process, to).group("api").serial(serial).host("web-1")
}

fn posted(ts: &str) -> Posted {
    Posted {
        channel_id: "C1".into(),
        ts: ts.into(),
        at: Utc::now(),
    }
}

/// The thread map: parents replaced only from the parent they replace, history
/// appended and kept to its last 200 states, the latest event, per channel.
async fn thread_map(s: &dyn SharedState) {
    let k = key("web-1", "a");
    assert_eq!(s.thread(&k, "#ops").await.unwrap(), None);
    assert!(s.set_parent(&k, "#ops", None, &posted("1.1"), false).await.unwrap());
    assert!(!s.set_parent(&k, "#ops", None, &posted("1.2"), false).await.unwrap(), "it has one");
    s.record_delivery(&k, "#ops", &[State::Starting, State::Running], &ev("a", 2, State::Running))
        .await
        .unwrap();
    let many: Vec<State> = (0..250).map(|i| if i % 2 == 0 { State::Backoff } else { State::Starting }).collect();
    s.record_delivery(&k, "#ops", &many, &ev("a", 3, State::Starting)).await.unwrap();
    let t = s.thread(&k, "#ops").await.unwrap().unwrap();
    assert_eq!(t.history.len(), 200, "the last 200 states");
    assert_eq!(t.history.last(), Some(&State::Starting));
    assert_eq!(t.latest.as_ref().map(|e| e.serial), Some(3));
    assert!(s.set_parent(&k, "#ops", Some("1.1"), &posted("2.1"), false).await.unwrap());
    assert!(!s.set_parent(&k, "#ops", Some("1.1"), &posted("2.2"), false).await.unwrap(), "from a stale copy");
    assert!(s.set_parent(&k, "#ops", Some("2.1"), &posted("3.1"), true).await.unwrap());
    let t = s.thread(&k, "#ops").await.unwrap().unwrap();
    assert_eq!((t.parent_ts.as_deref(), t.channel_id.as_deref()), (Some("3.1"), Some("C1")));
    assert!(t.history.is_empty(), "started over");
    // Another channel of the same process is another thread.
    assert!(s.set_parent(&k, "#alerts", None, &posted("9.9"), false).await.unwrap());
    assert_eq!(s.threads_of(&k).await.unwrap().len(), 2);
    let latest = s.latest_states("web-1").await.unwrap();
    assert_eq!(latest.len(), 1, "only threads that delivered: {latest:?}");
    assert_eq!(s.latest_states("web-2").await.unwrap(), vec![]);
}

/// A process's last crash (the newest kept, per process) and the newest command.
async fn crashes_and_commands(s: &dyn SharedState) {
    use supervisor_slack::card::CrashContext;
    use supervisor_slack::store::CrashRecord;
    let k = key("web-1", "crashy");
    let crash = |status: i64| CrashRecord {
        at: chrono::DateTime::from_timestamp(1_800_000_000 + status, 0).unwrap(),
        state: State::Exited,
        expected: Some(false),
        context: CrashContext {
            exit_status: Some(status),
            log_tail: Some("boom <!here>".into()),
            ..CrashContext::default()
        },
    };
    assert_eq!(s.last_crash(&k).await.unwrap(), None);
    s.record_crash(&k, &crash(3)).await.unwrap();
    s.record_crash(&k, &crash(4)).await.unwrap();
    assert_eq!(s.last_crash(&k).await.unwrap(), Some(crash(4)), "the newest");
    assert_eq!(s.last_crash(&key("web-2", "crashy")).await.unwrap(), None, "per host");
    assert_eq!(s.last_command().await.unwrap(), None);
    s.command_seen("U0ADMIN").await.unwrap();
    assert_eq!(s.last_command().await.unwrap().map(|c| c.user), Some("U0ADMIN".into()));
}

/// A thread's failure episode: per thread and channel, the latest kept, gone when
/// it ends.
async fn episodes(s: &dyn SharedState) {
    use supervisor_slack::store::Episode;
    let k = key("web-1", "ep");
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), None, "never recorded");
    let at = chrono::Utc::now();
    let ep = Episode {
        started: at,
        told: true,
        fatal_told: false,
        calm_since: None,
    };
    s.save_episode(&k, "#ops", Some(&ep)).await.unwrap();
    let fatal = Episode { fatal_told: true, ..ep.clone() };
    s.save_episode(&k, "#ops", Some(&fatal)).await.unwrap();
    s.save_episode(&k, "#alerts", Some(&ep)).await.unwrap();
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), Some(fatal), "the latest");
    assert_eq!(s.episode(&k, "#alerts").await.unwrap(), Some(ep), "per channel");
    assert_eq!(s.episode(&key("web-2", "ep"), "#ops").await.unwrap(), None, "per host");
    s.save_episode(&k, "#ops", None).await.unwrap();
    assert_eq!(s.episode(&k, "#ops").await.unwrap(), None, "ended");
}

async fn mutes_clicks_key_and_boards(s: &dyn SharedState) {
    let k = key("web-1", "worker");
    s.mute(&k, "U1", Utc::now() + chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(s.mute_of(&k).await.unwrap().map(|m| m.by), Some("U1".to_string()));
    s.mute(&key("web-1", "old"), "U1", Utc::now() - chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(s.mute_of(&key("web-1", "old")).await.unwrap(), None, "expired");
    assert!(s.unmute(&k).await.unwrap());
    assert!(!s.unmute(&k).await.unwrap());
    let id = s.record_click("U1", "1.000001", &k, "restart").await.unwrap().expect("recorded");
    assert_eq!(s.record_click("U1", "1.000001", &k, "restart").await.unwrap(), None, "twice: once");
    s.click_outcome(id, "RUNNING, pid 7").await.unwrap();
    for i in 2..=12 {
        s.record_click("U1", &format!("1.{i:06}"), &k, "stop").await.unwrap();
    }
    assert_eq!(s.prune_audit(AuditKeep { days: 90, rows: 10 }).await.unwrap(), 2);
    let audit = s.audit(100).await.unwrap();
    assert_eq!(audit.len(), 10);
    assert_eq!(audit.last().unwrap().action, "stop", "the oldest (the restart) went first");
    let key1 = s.signing_key().await.unwrap();
    assert_eq!(key1.len(), 32);
    assert_eq!(s.signing_key().await.unwrap(), key1, "made once");
    assert_eq!(s.board("web-1 #ops").await.unwrap(), None);
    s.save_board("web-1 #ops", &posted("5.5")).await.unwrap();
    assert_eq!(s.board("web-1 #ops").await.unwrap().map(|p| p.ts), Some("5.5".to_string()));
}

#[tokio::test]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite(&dir);
    thread_map(&s).await;
    mutes_clicks_key_and_boards(&s).await;
    episodes(&s).await;
    crashes_and_commands(&s).await;
    assert!(s.lease("board #ops", "web-1", Duration::from_secs(5)).await.unwrap(), "one host holds every lease");
    assert_eq!(s.fleet(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_keeps_the_contract() {
    let url = postgres::database();
    let s = pg(&url, "default").await;
    thread_map(s.as_ref()).await;
    mutes_clicks_key_and_boards(s.as_ref()).await;
    episodes(s.as_ref()).await;
    crashes_and_commands(s.as_ref()).await;
    assert_eq!(s.fleet(), Some("default"));
    // Another fleet in the same database sees none of it.
    let other = pg(&url, "other").await;
    assert_eq!(other.thread(&key("web-1", "a"), "#ops").await.unwrap(), None);
    assert_ne!(other.signing_key().await.unwrap(), s.signing_key().await.unwrap(), "a key per fleet");
    assert!(other.audit(10).await.unwrap().is_empty());
}

/// Hosts starting together against a fresh database apply each migration once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_migrate_once() {
    let url = postgres::database();
    let many: Vec<Arc<PostgresShared>> = (0..6)
        .map(|_| PostgresShared::start(&fleet(&url, "default"), budget()).unwrap())
        .collect();
    for s in &many {
        tokio::time::timeout(Duration::from_secs(20), s.until_connected()).await.unwrap();
    }
    let db = url.rsplit('/').next().unwrap();
    let rows = postgres::shared().psql(db, "SELECT version FROM supervisor_slack_schema ORDER BY 1");
    assert_eq!(rows, "1\n2", "each version once");
}

/// Heartbeats, silence said once, and back again said once; leases held by one host
/// at a time and taken over when they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_go_silent_come_back_and_leases_move() {
    let url = postgres::database();
    let s = pg(&url, "default").await;
    let table = vec![HostProcess {
        group: "api".into(),
        process: "api".into(),
        state: State::Fatal,
        since: Some(Utc::now()),
        pid: None,
        expected: None,
    }];
    s.heartbeat("web-1", &table, true).await.unwrap();
    s.heartbeat("web-2", &[], false).await.unwrap();
    let hosts = s.hosts().await.unwrap();
    assert_eq!(hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), ["web-1", "web-2"]);
    assert_eq!(hosts[0].processes, table);
    assert!(hosts[0].from_supervisord && hosts[0].quiet_for < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.heartbeat("web-2", &[], false).await.unwrap();
    let silent = s.newly_silent(Duration::from_secs(1)).await.unwrap();
    assert_eq!(silent.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["web-1"]);
    assert!(s.newly_silent(Duration::from_secs(1)).await.unwrap().is_empty(), "said once");
    assert!(s.back_again(Duration::from_secs(1)).await.unwrap().is_empty(), "still silent");
    s.heartbeat("web-1", &table, true).await.unwrap();
    let back = s.back_again(Duration::from_secs(1)).await.unwrap();
    assert_eq!(back.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["web-1"]);
    assert!(s.back_again(Duration::from_secs(1)).await.unwrap().is_empty(), "said once");

    let ttl = Duration::from_secs(1);
    assert!(s.lease("board #ops", "web-1", ttl).await.unwrap());
    assert!(!s.lease("board #ops", "web-2", ttl).await.unwrap(), "held by web-1");
    assert!(s.lease("board #ops", "web-1", ttl).await.unwrap(), "renewed by its holder");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(s.lease("board #ops", "web-2", ttl).await.unwrap(), "taken over once it expired");
    s.release("board #ops", "web-2").await.unwrap();
    assert!(s.lease("board #ops", "web-3", ttl).await.unwrap(), "released: free at once");
}

/// The budget is the channel's, whoever asks: hosts reserving slots together get
/// them one interval apart after a burst, and a 429 one host is told closes the lane
/// for the others too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_shared_and_a_429_closes_it_for_every_host() {
    let url = postgres::database();
    let hosts: Vec<Arc<PostgresShared>> = vec![pg(&url, "default").await, pg(&url, "default").await, pg(&url, "default").await];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for h in &hosts {
        for _ in 0..4 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                h.acquire(Call::Post("#ops")).await;
                started.elapsed()
            }));
        }
    }
    let mut at: Vec<Duration> = Vec::new();
    for t in tasks {
        at.push(t.await.unwrap());
    }
    at.sort();
    // 12 calls, a burst of 2, then one per 200 ms: the last at least 9 intervals in.
    assert!(at[11] >= Duration::from_millis(1800), "{at:?}");
    for w in at[2..].windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(150), "spaced by the interval: {at:?}");
    }
    eprintln!("figure: 12 posts from 3 hosts, last at {:?} (pace 200 ms, burst 2)", at[11]);
    // web-1 is told 429 (2 s): web-2, which shares the channel, waits too.
    hosts[0].rate_limited(Call::Post("#ops"), Duration::from_secs(2)).await;
    let t = Instant::now();
    hosts[1].acquire(Call::Post("#ops")).await;
    assert!(t.elapsed() >= Duration::from_millis(1800), "{:?}", t.elapsed());
    // Another channel is another budget.
    let t = Instant::now();
    hosts[2].acquire(Call::Post("#other")).await;
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
}

/// `check` connects to the fleet database and says what it found, with the fix for
/// each thing that can be wrong: nothing listening, a refused login, a missing
/// database, a schema from a newer release; and the hosts it sees. The password is
/// never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_fleet_database_and_says_how_to_fix_it() {
    use supervisor_slack::check::{self, Level, Options};
    use supervisor_slack::config::{parse_str, resolve};
    let cluster = postgres::shared();
    let url = cluster.database();
    let report = |url: &str| {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("SLACK_TOKEN", "xoxb-test".to_string()),
            ("SLACK_CHANNEL", "#ops".to_string()),
            ("SLACK_API_URL", "http://127.0.0.1:9/api".to_string()),
            ("SUPERVISOR_SLACK_STATE", dir.path().join("s.db").to_str().unwrap().to_string()),
            ("SUPERVISOR_SLACK_FLEET_URL", url.to_string()),
        ];
        let env: [(&str, &str); 5] = std::array::from_fn(|i| (env[i].0, env[i].1.as_str()));
        let s = resolve(&parse_str("call_timeout = \"1s\"\n", None).unwrap(), &env)
            .unwrap()
            .settings;
        async move {
            let r = check::run(&s, &Options::default()).await;
            let fleet: Vec<_> = r
                .findings
                .iter()
                .filter(|f| f.what.contains("fleet"))
                .cloned()
                .collect();
            (r.to_string(), fleet)
        }
    };
    // A fresh database: it answers; no tables yet; no host.
    let (shown, fleet) = report(&url).await;
    assert!(fleet[0].level == Level::Ok && fleet[0].what.contains("PostgreSQL 1"), "{shown}");
    assert!(fleet[1].what.contains("no tables yet"), "{shown}");
    // A host joins.
    let s = pg(&url, "default").await;
    s.heartbeat("web-7", &[], true).await.unwrap();
    let (shown, fleet) = report(&url).await;
    assert!(fleet.iter().any(|f| f.what.contains("fleet database schema 2")), "{shown}");
    assert!(fleet.iter().any(|f| f.what.contains("1 host(s): web-7 (heard of")), "{shown}");
    // Who holds the app's connections.
    assert!(s.lease("socket 1", "web-7", Duration::from_secs(30)).await.unwrap());
    let (shown, _) = report(&url).await;
    assert!(shown.contains("Socket Mode connections (socket_connections = 2): socket 1 by web-7"), "{shown}");
    // Nothing listening.
    let (shown, fleet) = report("postgresql://postgres:sEcReT@127.0.0.1:9/x").await;
    assert_eq!(fleet[0].level, Level::Problem, "{shown}");
    assert!(shown.contains("nothing answers"), "{shown}");
    assert!(!shown.contains("sEcReT"), "the password is never shown: {shown}");
    // A refused login.
    let port = cluster.port;
    let (shown, _) = report(&format!("postgresql://nobody:sEcReT@127.0.0.1:{port}/postgres")).await;
    assert!(shown.contains("the login was refused for role nobody"), "{shown}");
    assert!(!shown.contains("sEcReT"), "{shown}");
    // A missing database.
    let (shown, _) = report(&format!("postgresql://postgres@127.0.0.1:{port}/nowhere")).await;
    assert!(shown.contains("database nowhere does not exist: create it first"), "{shown}");
    // A schema from an older release: the next listener migrates it.
    let older = cluster.database();
    let older_db = older.rsplit('/').next().unwrap();
    cluster.psql(older_db, "CREATE TABLE supervisor_slack_schema (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO supervisor_slack_schema (version) VALUES (1)");
    let (shown, fleet) = report(&older).await;
    assert!(fleet.iter().any(|f| f.what.contains("schema 1 is older than this release's 2")), "{shown}");
    // A schema from a newer release.
    let db = url.rsplit('/').next().unwrap();
    cluster.psql(db, "INSERT INTO supervisor_slack_schema (version) VALUES (99)");
    let (shown, fleet) = report(&url).await;
    let newer = fleet.iter().find(|f| f.what.contains("newer")).unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(newer.level, Level::Problem);
    assert!(newer.fix.as_deref().unwrap().contains("upgrade this host"), "{shown}");
}

/// Hosts that see a program's first failure at the same moment claim its card at
/// once: exactly one wins and posts; the others wait for its parent. A claim whose
/// holder died (it expired) is taken over; a parent is replaced only by one claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_wins_the_claim_to_post_a_programs_card() {
    let url = postgres::database();
    let hosts: Vec<Arc<PostgresShared>> = vec![pg(&url, "default").await, pg(&url, "default").await, pg(&url, "default").await];
    let card = ThreadKey::fleet("api", "api");
    let claims: Vec<bool> = futures_util::future::join_all(hosts.iter().enumerate().map(|(i, h)| {
        let card = card.clone();
        async move {
            h.claim_parent(&card, "#ops", None, &format!("web-{i}"), Duration::from_secs(30))
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    let winner = claims.iter().position(|c| *c).unwrap();
    assert!(hosts[winner].set_parent(&card, "#ops", None, &posted("7.1"), false).await.unwrap());
    let t = hosts[(winner + 1) % 3].thread(&card, "#ops").await.unwrap().unwrap();
    assert_eq!(t.parent_ts.as_deref(), Some("7.1"), "the others find its parent");
    // Replacing it: one claim, from the parent it replaces.
    assert!(hosts[0].claim_parent(&card, "#ops", Some("7.1"), "web-0", Duration::from_millis(300)).await.unwrap());
    assert!(!hosts[1].claim_parent(&card, "#ops", Some("7.1"), "web-1", Duration::from_secs(30)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hosts[1].claim_parent(&card, "#ops", Some("7.1"), "web-1", Duration::from_secs(30)).await.unwrap(),
        "web-0's claim expired (it died): web-1 takes it"
    );
    assert!(!hosts[2].claim_parent(&card, "#ops", Some("6.0"), "web-2", Duration::from_secs(30)).await.unwrap(), "a stale copy");
    // The program's broadcast episode: the first failure, not the next ones.
    assert!(hosts[0].fleet_broadcast(&card, "#ops", 1, 3, Duration::from_secs(60)).await.unwrap());
    assert!(!hosts[1].fleet_broadcast(&card, "#ops", 2, 3, Duration::from_secs(60)).await.unwrap(), "grown, but within regroup");
    assert!(!hosts[2].fleet_broadcast(&card, "#ops", 3, 3, Duration::from_secs(60)).await.unwrap());
    // Calm for longer than regroup: the next failure opens a new episode.
    hosts[0].fleet_calm(&card, "#ops").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hosts[1].fleet_broadcast(&card, "#ops", 1, 3, Duration::from_millis(200)).await.unwrap());
    // Grown from one host to half, after regroup: once more, then no more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hosts[1].fleet_broadcast(&card, "#ops", 2, 3, Duration::from_millis(200)).await.unwrap());
    assert!(!hosts[1].fleet_broadcast(&card, "#ops", 3, 3, Duration::from_millis(200)).await.unwrap());
}

/// The fleet's action queue: an action queued for a host wakes it (NOTIFY), is
/// taken once however many takers race, and answered; one nobody took expires and
/// can no longer be taken; an expired one is not taken late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_is_taken_once_and_one_nobody_took_expires() {
    use supervisor_slack::store::ActionState;
    let url = postgres::database();
    let (asker, owner, twin) = (pg(&url, "default").await, pg(&url, "default").await, pg(&url, "default").await);
    let payload = serde_json::json!({"q": 1});
    // Woken at once, not at the next look.
    let waiting = {
        let owner = owner.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            owner.wait_for_actions("web-2", Duration::from_secs(10)).await;
            at.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = asker.queue_action("web-2", "ask", &payload, Duration::from_secs(30)).await.unwrap();
    let woke = waiting.await.unwrap();
    assert!(woke < Duration::from_secs(5), "woken by the notification: {woke:?}");
    assert_eq!(asker.action_state(id).await.unwrap(), ActionState::Queued);
    // Two takers at once (the same host twice, say): one gets it.
    let (a, b) = tokio::join!(owner.take_actions("web-2"), twin.take_actions("web-2"));
    let taken: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!((taken[0].id, taken[0].kind.as_str(), &taken[0].payload), (id, "ask", &payload));
    assert!(owner.take_actions("web-1").await.unwrap().is_empty(), "another host's queue is its own");
    assert!(!asker.expire_action(id).await.unwrap(), "taken: too late to expire");
    assert_eq!(asker.action_state(id).await.unwrap(), ActionState::Taken);
    owner.finish_action(id, &serde_json::json!({"a": 2})).await.unwrap();
    assert_eq!(asker.action_state(id).await.unwrap(), ActionState::Done(serde_json::json!({"a": 2})));
    // Nobody takes it: it expires and never runs.
    let late = asker.queue_action("web-3", "click", &payload, Duration::from_secs(30)).await.unwrap();
    assert!(asker.expire_action(late).await.unwrap());
    assert_eq!(asker.action_state(late).await.unwrap(), ActionState::Expired);
    assert!(owner.take_actions("web-3").await.unwrap().is_empty(), "an expired action is never taken");
    // Past its time, it is not taken either.
    asker.queue_action("web-4", "click", &payload, Duration::from_millis(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(owner.take_actions("web-4").await.unwrap().is_empty(), "not taken after its time");
    // One host has no queue.
    let dir = tempfile::tempdir().unwrap();
    assert!(sqlite(&dir).queue_action("web-2", "ask", &payload, Duration::from_secs(1)).await.is_err());
}
