//! The delivery core: what every worker, keeper and the board share — the retrier
//! (Slack under the policy), the outbox (the delivery side's own connection), the
//! shared state, the renderer, the settings, what cards offer, crash context, and the
//! shutdown that stops new deliveries.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::controls::Offer;
use super::retry::{Backoff, Retrier};
use crate::card::controls::Controls;
use crate::card::Renderer;
use crate::config::Settings;
use crate::crash::ContextSource;
use crate::shutdown::Shutdown;
use crate::slack::SlackApi;
use crate::store::{Mute, Outbox, SharedState, StoreError};
use crate::supervisord::event::{ProcessState, State, ThreadKey};

/// What the delivery side is built from (by the composition root).
pub struct Parts {
    pub api: Arc<SlackApi>,
    pub shared: Arc<dyn SharedState>,
    /// The delivery side's own connection to the outbox.
    pub outbox: Outbox,
    pub renderer: Renderer,
    pub settings: Settings,
    /// What cards offer when actions from Slack are on (`None`: no buttons).
    pub offer: Option<Offer>,
    /// supervisord's XML-RPC, for the crash context of failures (`None`: none).
    pub context: Option<ContextSource>,
    pub shutdown: Shutdown,
}

/// The delivery core.
pub struct Delivery {
    pub(super) retrier: Retrier,
    pub(super) shared: Arc<dyn SharedState>,
    outbox: Mutex<Outbox>,
    pub(super) renderer: Renderer,
    pub(super) settings: Settings,
    pub(super) offer: Option<Offer>,
    pub(super) context: Option<ContextSource>,
    pub(super) shutdown: Shutdown,
    /// How many parents owe an edit now (they share the edit budget).
    pub(super) owing: AtomicUsize,
}

impl Delivery {
    pub fn new(parts: Parts) -> Delivery {
        let s = &parts.settings;
        Delivery {
            retrier: Retrier::new(parts.api, parts.shared.clone(), s.retry_max, s.setup_retry),
            shared: parts.shared,
            outbox: Mutex::new(parts.outbox),
            renderer: parts.renderer,
            settings: parts.settings,
            offer: parts.offer,
            context: parts.context,
            shutdown: parts.shutdown,
            owing: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the outbox (never across an await).
    pub(super) fn outbox<T>(
        &self,
        f: impl FnOnce(&mut Outbox) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.outbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records what Slack already accepted: retried (with backoff) until the store
    /// takes it, never by asking Slack again — a post whose answer was thrown away
    /// would be posted twice.
    pub(super) async fn persist<F, Fut>(&self, key: &ThreadKey, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let mut failed = false;
        loop {
            match f().await {
                Ok(()) => {
                    if failed {
                        tracing::info!(thread = %key, what, "recorded after all");
                    }
                    return;
                }
                Err(e) => {
                    if !failed {
                        tracing::error!(
                            thread = %key, what, error = %e,
                            "cannot record what Slack accepted; keeping Slack's answer and retrying the write (nothing is posted again)"
                        );
                        failed = true;
                    }
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// Whether cards are per program across the fleet (`thread_by = "program"`).
    pub(super) fn by_program(&self) -> bool {
        self.shared.fleet().is_some() && self.settings.fleet.as_ref().is_some_and(|f| f.by_program)
    }

    /// The card a thread's replies go under: the program's across the fleet (and
    /// supervisord's own, one card for every host's supervisord), or the host's own.
    pub(super) fn card_key(&self, key: &ThreadKey) -> ThreadKey {
        if self.by_program() {
            ThreadKey::fleet(&key.group, &key.process)
        } else {
            key.clone()
        }
    }

    /// A host not heard of for this long is silent (in a fleet).
    pub(super) fn silent_after(&self) -> Duration {
        self.settings
            .fleet
            .as_ref()
            .map_or(crate::config::fleet::DEFAULT_SILENT_AFTER, |f| f.silent_after)
    }

    /// The mute on `key` now, if any: none when actions are off (nothing is read),
    /// and a store error counts as none (delivery goes on).
    pub(super) async fn mute_of(&self, key: &ThreadKey) -> Option<Mute> {
        self.offer.as_ref()?;
        self.shared.mute_of(key).await.ok().flatten()
    }

    /// The controls of a parent of `key` in `state` (`None`: actions are off).
    pub(super) fn controls(&self, key: &ThreadKey, state: State, mute: Option<&Mute>) -> Option<Controls> {
        self.offer.as_ref()?.controls(key, state, mute)
    }

    /// The controls of a reply carrying `events` (`None`: actions are off).
    pub(super) fn reply_controls(&self, key: &ThreadKey, events: &[ProcessState], mute: Option<&Mute>) -> Option<Controls> {
        self.offer.as_ref()?.reply_controls(key, events, mute)
    }
}
