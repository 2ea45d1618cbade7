//! Production faults (issue 14): what Slack, the disk and restarts can do to the
//! listener, and what Slack receives then. The listener is the real binary, driven
//! over pipes as supervisord drives it; Slack is the stand-in.

mod drive;

use std::time::Duration;

use drive::{Listener, FAST};
use supervisor_slack::standin::{Fault, StandIn, StandInOptions};

fn options() -> StandInOptions {
    StandInOptions {
        post_interval: Duration::from_millis(100),
        burst: 3,
        updates_per_minute: 600,
        ..StandInOptions::default()
    }
}

async fn wait(standin: &StandIn, secs: u64, what: &str, done: impl Fn(&StandIn) -> bool) {
    assert!(
        standin.wait_for(Duration::from_secs(secs), done).await,
        "timed out waiting for: {what}"
    );
}

/// A FATAL whose card Slack refuses still pages the route's people: the plain-text
/// fallback keeps the mentions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_text_fallback_keeps_the_mentions() {
    let standin = StandIn::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut l = Listener::start(
        dir.path(),
        &standin.api_url(),
        &format!("{FAST}updates_per_minute = 600\nmentions = [\"<!subteam^S0123ABC>\"]\n"),
    );
    l.state("alpha", "STARTING", "RUNNING");
    wait(&standin, 10, "the first reply", |s| {
        s.channel("#ops").iter().any(|t| t.replies.len() == 1)
    })
    .await;
    standin.set_fault(
        Fault::api_error("invalid_blocks")
            .on("chat.postMessage")
            .times(1),
    );
    l.state("alpha", "RUNNING", "FATAL");
    wait(&standin, 10, "the FATAL reply", |s| {
        s.channel("#ops").iter().any(|t| t.replies.len() == 2)
    })
    .await;
    let posts = standin.calls_to("chat.postMessage");
    let refused = posts
        .iter()
        .position(|c| c.error.as_deref() == Some("invalid_blocks"))
        .expect("the refused card");
    assert!(
        posts[refused].body["text"]
            .as_str()
            .unwrap()
            .contains("<!subteam^S0123ABC>"),
        "the card itself carried the mention"
    );
    let plain = &posts[refused + 1];
    assert!(plain.body.get("attachments").is_none(), "{}", plain.body);
    let text = plain.body["text"].as_str().unwrap();
    assert!(text.contains("FATAL"), "{text}");
    assert!(text.contains("<!subteam^S0123ABC>"), "the fallback pages too: {text}");
    l.close();
}
