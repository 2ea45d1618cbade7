//! The composition root of `listen`: the one place that builds the parts, once —
//! the settings, the local outbox, the shared state, one Slack client, one client
//! for supervisord's XML-RPC — and runs them with one [`Shutdown`]. The reader runs
//! on this thread (it must never wait on the async side); everything else runs on
//! tokio and stops when the shutdown is triggered (a signal, or the end of stdin).
//!
//! Stopping: the event in hand is answered, events held in memory get a last chance
//! at the disk, deliveries under way finish (at most [`DRAIN`]), and the process
//! exits — from one place, since the reader may be blocked on stdin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::card::Renderer;
use crate::config::Settings;
use crate::crash::{ContextOptions, ContextSource};
use crate::dispatch::{Board, Delivery, Dispatcher, Offer, Parts as DeliveryParts};
use crate::interact::run::{FleetRunner, Runner, RunnerParts};
use crate::listen::{self, lock, serve, Handler, HeldEvents, InHand, DRAIN};
use crate::reconcile::{Reconciler, Trigger};
use crate::routing::RoutingRouter;
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::slack::SlackApi;
use crate::store::{Budget, Outbox, PostgresShared, SharedState, SqliteShared};
use crate::supervisord::event::{State, ThreadKey};
use crate::supervisord::xmlrpc;
use crate::wakeup::Wakeup;

/// How long the listener waits for the state database between tries, when the disk
/// refuses it at start.
const DISK_RETRY: Duration = Duration::from_secs(5);

/// What every part is built from, once.
#[derive(Clone)]
struct Parts {
    settings: Settings,
    renderer: Renderer,
    state_path: PathBuf,
    /// The one Slack client.
    slack: Arc<SlackApi>,
    /// The one client for supervisord's XML-RPC (`None`: not reachable by settings).
    supervisor: Option<xmlrpc::Client>,
    /// The listener's own (group, process), left out of cards unless `own_card`.
    own: Option<(String, String)>,
    wakeup: Arc<Wakeup>,
    trigger: Arc<Trigger>,
    shutdown: Shutdown,
}

/// Runs the listener until stdin closes or a signal stops it.
pub fn listen(settings: Settings, renderer: Renderer, state_path: PathBuf) -> Result<()> {
    if let Err(missing) = settings.ready_to_listen() {
        let all: Vec<String> = missing.iter().map(ToString::to_string).collect();
        bail!("{}", all.join("; "));
    }
    let token = settings.token.clone().expect("ready_to_listen checked the token");
    // Held until the process exits. A disk that refuses even the lock file is the
    // disk trouble the reader rides out (events held in memory), not a reason to
    // lose events by not starting.
    let _lock = match lock::StateLock::acquire(&state_path) {
        Ok(l) => Some(l),
        Err(e @ lock::LockError::Held { .. }) => bail!("{e}"),
        Err(e) => {
            tracing::warn!("{e}; starting without the one-writer guard");
            None
        }
    };
    tracing::info!(
        state = %state_path.display(),
        channel = settings.channel.as_deref().unwrap_or_default(),
        host = %settings.host,
        supervisord = listen::parent_identity(),
        "listening for supervisord events"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("delivery")
        .build()
        .context("starting the async runtime")?;
    let parts = Parts {
        slack: Arc::new(SlackApi::new(&settings.api_url, token, settings.call_timeout)),
        supervisor: supervisor_client(&settings),
        own: own_process(&settings),
        settings,
        renderer,
        state_path,
        wakeup: Arc::default(),
        trigger: Arc::default(),
        shutdown: Shutdown::new(),
    };

    let reader_outbox = match Outbox::for_reader(&parts.state_path) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state database; holding events in memory until it can be written");
            None
        }
    };
    let shared = {
        let _inside = runtime.enter();
        open_shared(&parts).map_err(|e| {
            tracing::error!(error = %e, "cannot open the shared state; delivery waits for it");
        })
    };
    let previous = match &shared {
        Ok(shared) => runtime.block_on(previous_states(&parts, shared.as_ref(), reader_outbox.as_ref())),
        Err(()) => Vec::new(),
    };
    let mut handler = reader(&parts, reader_outbox, previous);
    let in_hand = Arc::new(InHand::default());
    {
        let _inside = runtime.enter();
        parts
            .shutdown
            .on_signals()
            .context("installing signal handlers")?;
    }
    runtime.spawn(finish(parts.shutdown.clone(), in_hand.clone(), handler.held_events(), parts.state_path.clone()));
    runtime.spawn(delivery(parts.clone(), shared.ok()));
    runtime.spawn(give_back_memory());

    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    // Buffered, so that each flush is one write (stdout's own line buffering would
    // split `RESULT 2\nOK` in two, and wake supervisord twice).
    let mut out = std::io::BufWriter::new(stdout.lock());
    let served = serve(stdin.lock(), &mut out, &mut handler, &parts.shutdown, &in_hand);
    // Whatever ended the loop, the process ends in `finish`.
    parts.shutdown.trigger();
    if let Err(e) = served {
        tracing::error!("talking to supervisord: {e}");
    }
    runtime.block_on(std::future::pending::<()>());
    Ok(())
}

/// The end of the process, once shutdown is triggered: the event in hand answered,
/// held events written if the disk takes them, deliveries under way finished, the
/// state database's WAL folded in.
async fn finish(shutdown: Shutdown, in_hand: Arc<InHand>, held: HeldEvents, state: PathBuf) {
    shutdown.triggered().await;
    in_hand.answered(Duration::from_millis(900)).await;
    held.last_words(None);
    let unfinished = shutdown.drained(DRAIN).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "exiting with deliveries under way: they are sent again at the next start");
    }
    crate::store::at_exit(&state);
    std::process::exit(0);
}

/// The shared state: a fleet's in PostgreSQL (connecting in the background: call it
/// inside the runtime), else one host's in the state database beside the outbox.
fn open_shared(parts: &Parts) -> Result<Arc<dyn SharedState>, crate::store::StoreError> {
    let s = &parts.settings;
    if let Some(fleet) = &s.fleet {
        tracing::info!(fleet = %fleet.name, "sharing the thread map, the budget and the board with the fleet");
        return Ok(PostgresShared::start(fleet, budget(s))?);
    }
    let shared = SqliteShared::open(&parts.state_path, budget(s))?;
    Ok(Arc::new(shared))
}

/// The reader's handler, with what an earlier run knew.
fn reader(parts: &Parts, outbox: Option<Outbox>, previous: Vec<(ThreadKey, State)>) -> Handler {
    let s = &parts.settings;
    // Where this supervisord's pool serials stood when its last listener stopped.
    let last_serials = outbox
        .as_ref()
        .and_then(|o| o.last_poolserials(listen::parent_identity()).ok())
        .unwrap_or_default();
    let router = RoutingRouter::with_previous(s.routes.clone(), previous);
    let mut handler = Handler::new(
        s.host.clone(),
        outbox,
        parts.state_path.clone(),
        Box::new(router),
        Some(parts.wakeup.clone()),
    );
    handler.outbox_cap = s.outbox_cap;
    handler.reconcile = Some(parts.trigger.clone());
    handler.own = parts.own.clone();
    handler.seed_gaps(&last_serials);
    handler
}

/// What an earlier run knew of each process, for `running = "after_failure"`: the
/// newest state other than STARTING, from the thread map, then the outbox (newer).
async fn previous_states(
    parts: &Parts,
    shared: &dyn SharedState,
    outbox: Option<&Outbox>,
) -> Vec<(ThreadKey, State)> {
    let mut out: std::collections::HashMap<ThreadKey, State> = Default::default();
    // A fleet database that does not answer at once is not waited for.
    shared.ready(Duration::from_secs(2)).await;
    let latest = shared.latest_states(&parts.settings.host).await.unwrap_or_default();
    for (key, _, ev) in latest {
        let state = if ev.to == State::Starting { ev.from } else { ev.to };
        if state != State::Starting {
            out.insert(key, state);
        }
    }
    if let Some(o) = outbox {
        out.extend(o.previous_states().unwrap_or_default());
    }
    out.into_iter().collect()
}

/// The pace the settings give the budget.
fn budget(s: &Settings) -> Budget {
    Budget {
        post_burst: s.post_burst,
        post_interval: s.post_interval,
        updates_per_minute: s.updates_per_minute,
    }
}

/// Every few seconds, returns the memory the process has freed to the OS. glibc keeps
/// what a thread frees in that thread's arena, and the delivery side's batches (up to
/// 500 entries a process, read, sent and dropped over and over under load) leave
/// those arenas fragmented: peak RSS after 100,000 events varied from 17.8 to 21.6 MB
/// without this (see BENCHMARKS.md). A trim of a few MB of heap takes well under a
/// millisecond, on a delivery thread, never on the reader's.
async fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // SAFETY: malloc_trim takes no pointers and is thread-safe (glibc locks
            // each arena it trims).
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// The delivery side: the stores it needs (waiting for the disk if it refuses), then
/// the dispatcher, reconcile, the board and actions from Slack, until shutdown.
async fn delivery(parts: Parts, shared: Option<Arc<dyn SharedState>>) {
    let (outbox, shared) = loop {
        let opened = Outbox::open(&parts.state_path).and_then(|o| {
            let shared = match &shared {
                Some(s) => s.clone(),
                None => open_shared(&parts)?,
            };
            Ok((o, shared))
        });
        match opened {
            Ok(both) => break both,
            Err(e) => {
                tracing::error!(error = %e, "delivery waits for the state database");
                tokio::select! {
                    _ = tokio::time::sleep(DISK_RETRY) => {}
                    _ = parts.shutdown.triggered() => return,
                }
            }
        }
    };
    let s = &parts.settings;
    let actions = actions_setup(s, shared.as_ref()).await;
    let context = parts.supervisor.clone().map(|c| ContextSource::with_client(c, ContextOptions::default()));
    let core = Arc::new(Delivery::new(DeliveryParts {
        api: parts.slack.clone(),
        shared: shared.clone(),
        outbox,
        renderer: parts.renderer.clone(),
        settings: s.clone(),
        offer: actions.as_ref().map(|(offer, _)| offer.clone()),
        context,
        shutdown: parts.shutdown.clone(),
    }));
    let dispatcher = Dispatcher::new(core.clone());
    match &parts.supervisor {
        Some(client) => until(&parts.shutdown, reconcile(&parts, client.clone(), shared.clone())),
        None => tracing::warn!(
            "reconcile is off: no supervisord XML-RPC. Cards follow events only and cannot notice what supervisord drops or sends while the listener is down; set supervisor_server_url (and supervisor_username/password if [unix_http_server] has them)"
        ),
    }
    until(&parts.shutdown, crate::dispatch::heartbeat::run(core.clone(), parts.supervisor.clone(), parts.trigger.clone()));
    if s.board {
        // The board asks supervisord what it runs; without XML-RPC, it shows the events.
        if let Some(board) = Board::new(core.clone(), parts.supervisor.clone(), parts.trigger.clone()) {
            until(&parts.shutdown, board.run());
        }
    }
    // In a fleet (its database in use): clicks and questions reach their host
    // through it, and a few hosts hold the app's connections for all.
    let fleet = s.fleet.as_ref().filter(|_| shared.fleet().is_some());
    let runner = actions.map(|(offer, _)| {
        let runner = Arc::new(Runner::new(RunnerParts {
            host: s.host.clone(),
            settings: s.actions.clone(),
            signer: offer.signer,
            api: parts.slack.clone(),
            shared: shared.clone(),
            dispatcher: dispatcher.clone(),
            supervisor: parts.supervisor.clone(),
            wakeup: parts.wakeup.clone(),
            trigger: parts.trigger.clone(),
            fleet: fleet.map(|f| FleetRunner {
                by_program: f.by_program,
                silent_after: f.silent_after,
            }),
        }));
        if parts.supervisor.is_none() {
            tracing::warn!("buttons can mute, but not act on processes or show stderr: no supervisord XML-RPC");
        }
        runner
    });
    let local = local_source(&parts, shared.clone());
    let asker = asker(&parts, shared.clone(), local.clone());
    if let Some(app_token) = s.app_token.clone().filter(|_| runner.is_some() || asker.is_some()) {
        let (api, shutdown) = (parts.slack.clone(), parts.shutdown.clone());
        match fleet {
            Some(f) => {
                let holding = crate::interact::holder::HolderParts {
                    host: s.host.clone(),
                    slots: f.socket_connections,
                    lease: crate::interact::holder::lease_for(f.silent_after),
                    shared: shared.clone(),
                    app_token,
                    api,
                    runner: runner.clone(),
                    asker,
                };
                tokio::spawn(crate::interact::holder::hold(holding, shutdown));
                let inbox = crate::interact::route::inbox(shared.clone(), s.host.clone(), runner, local);
                until(&parts.shutdown, inbox);
            }
            None => {
                let connections = s.actions.connections;
                tokio::spawn(crate::interact::serve(app_token, connections, api, runner, asker, shutdown));
            }
        }
    }
    dispatcher.run(parts.wakeup.clone()).await;
}

/// Reconcile, on its own connection to the outbox (waiting for the disk).
fn reconcile(
    parts: &Parts,
    client: xmlrpc::Client,
    shared: Arc<dyn SharedState>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (path, s) = (parts.state_path.clone(), parts.settings.clone());
    let (wake, trigger, own) = (parts.wakeup.clone(), parts.trigger.clone(), parts.own.clone());
    async move {
        let outbox = loop {
            match Outbox::open(&path) {
                Ok(o) => break o,
                Err(_) => tokio::time::sleep(DISK_RETRY).await,
            }
        };
        let mut r = Reconciler::new(client, outbox, shared, s.host.clone(), s.routes.clone(), wake, trigger);
        r.timing.every = s.reconcile_interval;
        r.ignore = own;
        r.run().await;
    }
}

/// Runs `task` until it ends or shutdown is triggered.
fn until<F>(shutdown: &Shutdown, task: F)
where
    F: std::future::Future + Send + 'static,
{
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = shutdown.triggered() => {}
        }
    });
}

/// supervisord's XML-RPC: the `supervisor_server_url` setting, else the
/// `SUPERVISOR_SERVER_URL` supervisord gives its listeners.
pub fn supervisor_client(settings: &Settings) -> Option<xmlrpc::Client> {
    let user = settings.supervisor_username.clone();
    let password = settings.supervisor_password.clone();
    let client = match &settings.supervisor_server_url {
        Some(url) => xmlrpc::Client::new(url, user, password),
        None => xmlrpc::Client::from_env(user, password),
    };
    match client {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("supervisord's XML-RPC is out of reach ({e}): no crash context, no reconcile, no actions on processes");
            None
        }
    }
}

/// The listener's own process, as supervisord names it to its children: its events
/// get no card unless `own_card`.
fn own_process(settings: &Settings) -> Option<(String, String)> {
    match (
        std::env::var("SUPERVISOR_GROUP_NAME"),
        std::env::var("SUPERVISOR_PROCESS_NAME"),
    ) {
        (Ok(g), Ok(p)) if !settings.own_card && !p.is_empty() => Some((g, p)),
        _ => None,
    }
}

// --- asking from Slack: /supervisor, over the actions' Socket Mode connection

/// `/supervisor`, when an app-level token is set and someone may ask something; it
/// answers for this host alone (a fleet passes its own [`Source`] instead).
///
/// [`Source`]: crate::interact::ask::Source
fn asker(
    parts: &Parts,
    shared: Arc<dyn SharedState>,
    local: Option<Arc<crate::interact::local::LocalSource>>,
) -> Option<Arc<crate::interact::Asker>> {
    use crate::interact::ask::Source;
    use crate::interact::command::{Asker, AskerParts};
    let s = &parts.settings;
    let local = local?;
    let source: Arc<dyn Source> = match s.fleet.as_ref().filter(|_| shared.fleet().is_some()) {
        Some(f) => Arc::new(crate::interact::fleet_source::FleetSource::new(
            s.host.clone(),
            local,
            shared.clone(),
            f.silent_after,
            s.actions.timeout,
        )),
        None => local,
    };
    Some(Arc::new(Asker::new(AskerParts {
        host: s.host.clone(),
        settings: s.actions.clone(),
        channels: s.routes.channels(),
        api: parts.slack.clone(),
        shared,
        source,
    })))
}

/// This host's answers to `/supervisor` (its supervisord, its shared state), when an
/// app-level token is set and someone may ask something.
fn local_source(parts: &Parts, shared: Arc<dyn SharedState>) -> Option<Arc<crate::interact::local::LocalSource>> {
    let s = &parts.settings;
    if s.app_token.is_none() || !s.actions.anyone_may_ask() {
        return None;
    }
    let supervisor = parts.supervisor.clone().map(|c| c.with_timeout(s.actions.timeout));
    Some(Arc::new(crate::interact::local::LocalSource::new(s.host.clone(), supervisor, shared)))
}

/// Actions from Slack, when an app-level token and an allow list are set: what cards
/// offer (with the signing key from the shared state) and the token.
async fn actions_setup(settings: &Settings, shared: &dyn SharedState) -> Option<(Offer, Secret)> {
    let a = &settings.actions;
    let app_token = match (&settings.app_token, a.anyone_allowed()) {
        (Some(t), true) => t.clone(),
        (Some(_), false) => {
            tracing::warn!("an app-level token is set but [actions] allows nobody: cards carry no buttons (add allow_users or allow_groups)");
            return None;
        }
        (None, true) => {
            tracing::warn!("[actions] allows people to act but there is no app-level token: cards carry no buttons. {}", crate::check::app_token_fix());
            return None;
        }
        (None, false) => return None,
    };
    let key = match shared.signing_key().await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "actions from Slack are off: no signing key");
            return None;
        }
    };
    let offer = Offer {
        signer: crate::actions::Signer::new(&key),
        allowed: a.allowed.clone(),
        mute_for: a.mute_for,
    };
    Some((offer, app_token))
}
