//! The `preview` command: the [`standin`](crate::standin) Slack stand-in, run on its
//! own so that a person can see what the channel would look like without a Slack
//! workspace. It keeps Slack's real pacing (the default [`StandInOptions`]: one
//! `chat.postMessage` per second per channel, bursts of 3, `Retry-After` on 429), so the
//! page shows what the channel would show, at the speed it would show it.
//!
//! The stand-in binds 127.0.0.1 only: it accepts any `xoxb-` token and keeps every
//! message in memory, which is fine on loopback and wrong anywhere else. It answers
//! only requests addressed to a loopback name (no DNS rebinding) and changes state
//! only on POST.

use crate::shutdown::Shutdown;
use crate::standin::{StandIn, StandInOptions};

/// Where a running preview can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// The page: `http://127.0.0.1:PORT/`.
    pub page: String,
    /// What a listener's `SLACK_API_URL` should be: `http://127.0.0.1:PORT/api`.
    pub api: String,
}

impl Addresses {
    /// The one line `preview` prints on stdout for a person (and for scripts: the
    /// `SLACK_API_URL=...` part is easy to cut out).
    pub fn announcement(&self) -> String {
        format!(
            "Slack preview: open {}  ·  point a listener at it with SLACK_API_URL={} (any xoxb- token, any channel)",
            self.page, self.api
        )
    }
}

/// Starts the stand-in on 127.0.0.1:`port` (0: a free port) with Slack's own pacing,
/// calls `started` with its addresses, then serves until `shutdown` is triggered.
pub async fn run(
    port: u16,
    started: impl FnOnce(&Addresses),
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let standin = StandIn::start(StandInOptions {
        port,
        ..StandInOptions::default()
    })
    .await?;
    let addresses = Addresses {
        page: standin.page_url(),
        api: standin.api_url(),
    };
    tracing::info!(page = %addresses.page, api = %addresses.api, "Slack preview is serving");
    started(&addresses);
    shutdown.triggered().await;
    tracing::info!(
        calls = standin.calls().len(),
        "Slack preview stopping; its messages are gone"
    );
    standin.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_until_shutdown_and_announces_both_addresses() {
        let stop = Shutdown::new();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Addresses>();
        let task = tokio::spawn(run(
            0,
            move |a| {
                let _ = seen_tx.send(a.clone());
            },
            stop.clone(),
        ));
        let a = seen_rx.await.unwrap();
        assert!(a.page.starts_with("http://127.0.0.1:") && a.page.ends_with('/'));
        assert_eq!(a.api, format!("{}api", a.page));
        let line = a.announcement();
        assert!(line.contains(&a.page));
        assert!(line.contains(&format!("SLACK_API_URL={} ", a.api)));
        let port: u16 = a.page["http://127.0.0.1:".len()..a.page.len() - 1]
            .parse()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok());
        stop.trigger();
        task.await.unwrap().unwrap();
    }
}
