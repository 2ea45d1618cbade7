//! The fleet's [`Source`] for `/supervisor`: every host's processes from the fleet
//! store (each host's last heartbeat, a silent host's rows marked so), and a
//! question put to the host that owns the process through the fleet's action queue
//! (its owner answers with its own [`LocalSource`], see [`super::route::inbox`]).
//! This host's own questions, and `why` (the last crash is in the fleet store), need
//! no other host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::ask::{Answer, Question, Row, Source, Unreachable};
use super::local::LocalSource;
use super::route::{owner, wait_taken, Owner, Pickup, PICKUP};
use crate::store::{ActionState, SharedState};

/// How often the asker looks for the answer.
const POLL: Duration = Duration::from_millis(150);

pub struct FleetSource {
    host: String,
    local: Arc<LocalSource>,
    shared: Arc<dyn SharedState>,
    silent_after: Duration,
    /// The longest a host may take to answer (`[actions] timeout`).
    timeout: Duration,
}

impl FleetSource {
    pub fn new(
        host: String,
        local: Arc<LocalSource>,
        shared: Arc<dyn SharedState>,
        silent_after: Duration,
        timeout: Duration,
    ) -> FleetSource {
        FleetSource {
            host,
            local,
            shared,
            silent_after,
            timeout,
        }
    }
}

#[async_trait]
impl Source for FleetSource {
    async fn processes(&self) -> Result<Vec<Row>, String> {
        let hosts = self
            .shared
            .hosts()
            .await
            .map_err(|e| format!("the fleet database cannot be read now: {e}"))?;
        let mut rows = Vec::new();
        for h in hosts {
            let silent = (h.quiet_for > self.silent_after).then_some(Some(h.last_seen));
            if h.host == self.host && silent.is_none() {
                // This host's own, as its supervisord says now.
                if let Ok(own) = self.local.processes().await {
                    rows.extend(own);
                    continue;
                }
            }
            rows.extend(h.processes.into_iter().map(|p| Row {
                host: h.host.clone(),
                group: p.group,
                process: p.process,
                state: p.state,
                expected: p.expected,
                since: p.since,
                pid: p.pid,
                spawnerr: None,
                silent,
            }));
        }
        Ok(rows)
    }

    async fn ask(&self, host: &str, question: Question) -> Result<Answer, Unreachable> {
        if host == self.host {
            return self.local.ask(host, question).await;
        }
        if let Question::Why { key } = &question {
            return self
                .shared
                .last_crash(key)
                .await
                .map(Answer::Why)
                .map_err(|e| Unreachable::Failed(e.to_string()));
        }
        match owner(self.shared.as_ref(), host, self.silent_after).await {
            Ok(Owner::Alive) => {}
            Ok(Owner::Silent(at)) => return Err(Unreachable::Silent(Some(at))),
            Ok(Owner::Unknown) => {
                return Err(Unreachable::Failed(format!(
                    "{host} is not a host of this fleet"
                )))
            }
            Err(e) => {
                return Err(Unreachable::Failed(format!(
                    "the fleet database cannot be read now: {e}"
                )))
            }
        }
        let payload = serde_json::to_value(&question).expect("questions serialize");
        let started = Instant::now();
        let id = self
            .shared
            .queue_action(host, "ask", &payload, PICKUP)
            .await
            .map_err(|e| {
                Unreachable::Failed(format!(
                    "the fleet database cannot queue the question now: {e}"
                ))
            })?;
        match wait_taken(self.shared.as_ref(), id, PICKUP).await {
            Pickup::Taken => {}
            Pickup::Expired | Pickup::Unknown => return Err(Unreachable::NoAnswer(PICKUP)),
        }
        loop {
            if let Ok(ActionState::Done(answer)) = self.shared.action_state(id).await {
                return serde_json::from_value::<Result<Answer, Unreachable>>(answer)
                    .unwrap_or_else(|e| {
                        Err(Unreachable::Failed(format!(
                            "{host} answered something this listener cannot read: {e}"
                        )))
                    });
            }
            if started.elapsed() >= self.timeout {
                return Err(Unreachable::NoAnswer(self.timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
