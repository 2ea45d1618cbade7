//! The `listen` command: the loop supervisord talks to.
//!
//! stdin is read on a plain thread. For each event it commits the event to the
//! outbox, answers `RESULT 2\nOK`, and wakes the dispatcher — it never waits on the
//! network, so supervisord is never slowed down by Slack. The dispatcher runs on
//! tokio and delivers from the outbox at its own pace.
//! - [`instance`]: which supervisord sent an event, resends, gaps in the serials;
//! - [`handler`]: one event, from bytes to a committed outbox row (or held in memory);
//! - [`serve`]: the protocol loop and the signal watcher;
//! - [`lock`]: one writer per state file.

mod handler;
mod instance;
pub mod lock;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

pub use handler::{Handler, HeldEvents, CHECKPOINT_EVERY, HELD_MAX};
pub use instance::{instance_id, parent_identity, GapTracker, RecentSerials};
pub use serve::{serve, watch_signals, Lifecycle};

use crate::card::Renderer;
use crate::config::Settings;
use crate::crash::{ContextOptions, ContextSource};
use crate::dispatch::{Dispatcher, InFlight};
use crate::reconcile::{Reconciler, Trigger};
use crate::routing::RoutingRouter;
use crate::slack::SlackApi;
use crate::store::Store;
use crate::wakeup::Wakeup;

/// How long a stopping listener lets deliveries under way finish (supervisord waits
/// `stopwaitsecs`, 10 s by default, before SIGKILL).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The page cache of each of the listener's two database connections, in KiB
/// (SQLite's default: 2,000). The reader only appends and the dispatcher reads a
/// thread's first or newest entries: both touch a few dozen pages, and the rest are
/// in the OS page cache anyway. At the default, the two caches filled up to ~4 MB of
/// heap as the outbox grew (peak RSS after 100,000 events: 21.3 MB with Slack
/// healthy; 16.0 MB at 256 KiB; see BENCHMARKS.md).
pub(crate) const CACHE_KIB: u32 = 256;

/// Runs the listener until stdin closes or a signal stops it: the dispatcher on a
/// tokio runtime, the protocol loop on this thread.
pub fn run(settings: Settings, renderer: Renderer, state_path: PathBuf) -> Result<()> {
    if let Err(missing) = settings.ready_to_listen() {
        let all: Vec<String> = missing.iter().map(ToString::to_string).collect();
        bail!("{}", all.join("; "));
    }
    let token = settings.token.clone().expect("ready_to_listen checked the token");
    // Held until the process exits. A disk that refuses even the lock file is the
    // disk trouble the handler rides out (events held in memory), not a reason to
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
        supervisord = instance::parent_identity(),
        "listening for supervisord events"
    );

    let reader_store = match Store::open(&state_path)
        .and_then(Store::without_autocheckpoint)
        .and_then(|s| s.with_cache_kib(CACHE_KIB))
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state database; holding events in memory until it can be written");
            None
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("delivery")
        .build()
        .context("starting the async runtime")?;
    let wakeup = Arc::new(Wakeup::default());
    let wake_rx = wakeup.clone();
    let api = SlackApi::new(&settings.api_url, token, settings.call_timeout);
    let host = settings.host.clone();
    let outbox_cap = settings.outbox_cap;
    // What an earlier run knew of each process, for `running = "after_failure"`.
    let previous = reader_store
        .as_ref()
        .and_then(|s| s.previous_states().ok())
        .unwrap_or_default();
    let router = RoutingRouter::with_previous(settings.routes.clone(), previous);
    let context = crash_context_source(&settings);
    // Where this supervisord's pool serials stood when its last listener stopped.
    let last_serials = reader_store
        .as_ref()
        .and_then(|s| s.last_poolserials(instance::parent_identity()).ok())
        .unwrap_or_default();
    let trigger = Arc::new(Trigger::default());
    // The listener's own process, as supervisord names it to its children.
    let own = match (
        std::env::var("SUPERVISOR_GROUP_NAME"),
        std::env::var("SUPERVISOR_PROCESS_NAME"),
    ) {
        (Ok(g), Ok(p)) if !settings.own_card && !p.is_empty() => Some((g, p)),
        _ => None,
    };
    match supervisor_client(&settings) {
        Ok(client) => {
            let (path, host, routes) = (state_path.clone(), settings.host.clone(), settings.routes.clone());
            let (wake, trigger) = (wakeup.clone(), trigger.clone());
            let every = settings.reconcile_interval;
            let own_for_reconcile = own.clone();
            runtime.spawn(async move {
                let store = loop {
                    match Store::open(&path).and_then(|s| s.with_cache_kib(CACHE_KIB)) {
                        Ok(s) => break s,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_secs(5)).await,
                    }
                };
                let mut r = Reconciler::new(client, store, host, routes, wake, trigger);
                r.timing.every = every;
                r.ignore = own_for_reconcile;
                r.run().await;
            });
        }
        Err(e) => tracing::warn!(
            "reconcile is off: {e}. Cards follow events only and cannot notice what supervisord drops or sends while the listener is down; set supervisor_server_url (and supervisor_username/password if [unix_http_server] has them)"
        ),
    }
    // The board asks supervisord what it runs; without XML-RPC, it shows the events.
    let board = settings.board.then(|| supervisor_client(&settings).ok());
    let board_trigger = trigger.clone();
    let path = state_path.clone();
    let in_flight = Arc::new(InFlight::default());
    let flights = in_flight.clone();
    let wake_for_actions = wakeup.clone();
    runtime.spawn(async move {
        // The dispatcher has its own connection; wait for the disk if it is not there.
        let store = loop {
            match Store::open(&path).and_then(|s| s.with_cache_kib(CACHE_KIB)) {
                Ok(s) => break s,
                Err(e) => {
                    tracing::error!(error = %e, "delivery waits for the state database");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        };
        let mut store = store;
        let actions = actions_setup(&settings, &mut store);
        let offer = actions.as_ref().map(|(offer, _)| offer.clone());
        let dispatcher = Dispatcher::new(api, context, store, renderer, settings.clone(), flights, offer);
        if let Some((offer, app_token)) = actions {
            spawn_interact(&settings, &path, app_token, offer.signer, dispatcher.clone(), wake_for_actions);
        }
        if let Some(source) = board {
            tokio::spawn(dispatcher.clone().board(source, board_trigger));
        }
        dispatcher.run(wake_rx).await;
    });

    let mut handler = Handler::new(
        host,
        reader_store,
        state_path,
        Box::new(router),
        Some(wakeup),
    );
    handler.outbox_cap = outbox_cap;
    handler.reconcile = Some(trigger);
    handler.own = own.clone();
    handler.seed_gaps(&last_serials);
    let life = Arc::new(Lifecycle::default());
    watch_signals(life.clone(), handler.held_events(), in_flight.clone())
        .context("installing signal handlers")?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    // Buffered, so that each flush is one write (stdout's own line buffering would
    // split `RESULT 2\nOK` in two, and wake supervisord twice).
    let mut out = std::io::BufWriter::new(stdout.lock());
    serve(stdin.lock(), &mut out, &mut handler, &life).context("talking to supervisord")?;
    let unfinished = in_flight.drain(DRAIN);
    if unfinished > 0 {
        tracing::warn!(unfinished, "exiting with deliveries under way: they are sent again at the next start");
    }
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

/// supervisord's XML-RPC for reconcile: the `supervisor_server_url` setting, else the
/// `SUPERVISOR_SERVER_URL` supervisord gives its listeners.
fn supervisor_client(settings: &Settings) -> Result<crate::supervisord::xmlrpc::Client, crate::supervisord::xmlrpc::Error> {
    use crate::supervisord::xmlrpc::Client;
    let user = settings.supervisor_username.clone();
    let password = settings.supervisor_password.clone();
    match &settings.supervisor_server_url {
        Some(url) => Client::new(url, user, password),
        None => Client::from_env(user, password),
    }
}

/// supervisord's XML-RPC for crash context: the `supervisor_server_url` setting, else
/// the `SUPERVISOR_SERVER_URL` supervisord gives its listeners. Without either, cards
/// go out without context.
fn crash_context_source(settings: &Settings) -> Option<ContextSource> {
    let user = settings.supervisor_username.clone();
    let password = settings.supervisor_password.clone();
    let source = match &settings.supervisor_server_url {
        Some(url) => ContextSource::new(url, user, password, ContextOptions::default()),
        None => ContextSource::from_env(user, password, ContextOptions::default()),
    };
    match source {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::info!("crash context is off: {e}");
            None
        }
    }
}

/// Actions from Slack, when an app-level token and an allow list are set: what cards
/// offer (with the signing key from the state database) and the token.
fn actions_setup(settings: &Settings, store: &mut Store) -> Option<(crate::dispatch::Offer, crate::config::Secret)> {
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
    let key = match store.signing_key() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "actions from Slack are off: no signing key");
            return None;
        }
    };
    let offer = crate::dispatch::Offer {
        signer: crate::actions::Signer::new(&key),
        allowed: a.allowed.clone(),
        mute_for: a.mute_for,
    };
    Some((offer, app_token))
}

/// Opens Socket Mode and runs clicks, on the async side.
fn spawn_interact(
    settings: &Settings,
    path: &std::path::Path,
    app_token: crate::config::Secret,
    signer: crate::actions::Signer,
    dispatcher: Arc<Dispatcher>,
    wakeup: Arc<Wakeup>,
) {
    let Some(token) = settings.token.clone() else {
        return;
    };
    let store = match Store::open(path).and_then(|s| s.with_cache_kib(CACHE_KIB)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "actions from Slack are off: cannot open the state database");
            return;
        }
    };
    let a = settings.actions.clone();
    let supervisor = match supervisor_client(settings) {
        // Every call may take the whole action's time: startProcess waits for
        // startsecs and the retries.
        Ok(c) => Some(ContextSource::with_client(
            c,
            ContextOptions {
                timeout: a.timeout,
                ..ContextOptions::default()
            },
        )),
        Err(e) => {
            tracing::warn!("buttons can mute, but not act on processes or show stderr: {e}");
            None
        }
    };
    let connections = a.connections;
    let runner = Arc::new(crate::interact::Runner::new(
        settings.host.clone(),
        a,
        signer,
        SlackApi::new(&settings.api_url, token, settings.call_timeout),
        dispatcher,
        store,
        supervisor,
        wakeup,
    ));
    tokio::spawn(crate::interact::serve(app_token, connections, runner));
}

