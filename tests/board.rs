//! The host board with a real supervisord: one message per host, listing every
//! process with its state (failing first) under a summary, edited in place and
//! current a few seconds after the last change of a storm; without XML-RPC it is
//! built from the events seen.
//!
//! Needs `scripts/test-env`.

mod common;

use std::time::Instant;

use common::slack::{header, options, slack_listener};
use common::supervisord::*;
use common::{secs, wait_until};
use supervisor_slack::standin::{StandIn, Thread};

fn boards(standin: &StandIn) -> Vec<Thread> {
    standin
        .channel("#ops")
        .into_iter()
        .filter(|t| header(t).starts_with("🖥 web-1:"))
        .collect()
}

fn board_text(standin: &StandIn) -> String {
    boards(standin)
        .first()
        .map(|t| t.parent.visible_text())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lists_every_process_failing_first_and_follows_a_storm() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut c = SupervisordConfig::new()
        .program(
            Program::new("crasher", "/bin/sh -c 'exit 3'")
                .startsecs(1)
                .startretries(1),
        )
        .program(Program::sleeper("idle").autostart(false));
    for i in 0..4 {
        c = c
            .program(Program::sleeper(&format!("web{i}")).startsecs(0));
    }
    let sv = Supervisord::start(c.listener(slack_listener(
        state.path(),
        &standin.api_url(),
        "board = true\nboard_pin = true\n",
    )));
    sv.wait_for_state("crasher", "FATAL", secs(15));
    let ok = wait_until(secs(20), || {
        let h = boards(&standin).first().map(header).unwrap_or_default();
        h == "🖥 web-1: 1 FATAL, 5 running, 1 STOPPED"
    });
    assert!(
        ok,
        "board: {:?}\n{}",
        boards(&standin).first().map(header),
        sv.listener_stderr()
    );
    let text = board_text(&standin);
    let fatal = text.find("*crasher* FATAL").expect("crasher listed");
    let running = text.find("*web0* RUNNING").expect("web0 listed");
    assert!(fatal < running, "failing first: {text}");
    assert!(text.contains("*idle* STOPPED"), "{text}");
    assert!(text.contains("as supervisord reports it"), "{text}");

    // A storm: four programs stopped and started; the board follows.
    let storm_end;
    {
        for i in 0..4 {
            sv.ctl_ok(&["stop", &format!("web{i}")]);
        }
        sv.ctl_ok(&["start", "web0"]);
        storm_end = Instant::now();
    }
    let ok = wait_until(secs(20), || {
        boards(&standin).first().map(header).as_deref()
            == Some("🖥 web-1: 1 FATAL, 2 running, 4 STOPPED")
    });
    let took = storm_end.elapsed().as_secs_f64();
    assert!(
        ok,
        "board after the storm: {:?}",
        boards(&standin).first().map(header)
    );
    eprintln!("figure: the board was current {took:.1} s after the last change of the storm");
    assert_eq!(boards(&standin).len(), 1, "one board, edited in place");
    assert!(
        boards(&standin)[0].parent.pinned,
        "board_pin = true pins it"
    );
    assert_eq!(standin.calls_to("pins.add").len(), 1, "pinned once");
    assert!(
        !standin.calls_to("chat.update").is_empty(),
        "edited, not posted again"
    );
    sv.assert_no_protocol_trouble();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_xmlrpc_the_board_shows_the_events_seen() {
    let standin = StandIn::start(options()).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let nowhere = state.path().join("no.sock");
    let extra = format!(
        "board = true\nsupervisor_server_url = \"unix://{}\"\n",
        nowhere.display()
    );
    let sv = Supervisord::start(
        SupervisordConfig::new()
            .program(Program::sleeper("web").startsecs(0))
            .listener(slack_listener(state.path(), &standin.api_url(), &extra)),
    );
    sv.wait_for_state("web", "RUNNING", secs(10));
    let ok = wait_until(secs(20), || {
        boards(&standin).first().map(header).as_deref() == Some("🖥 web-1: 1 running")
    });
    assert!(ok, "{:?}", boards(&standin).first().map(header));
    assert!(board_text(&standin).contains("from the events seen"));
}

/// Two hosts in one channel: each keeps a board of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_has_its_own_board() {
    use common::pipe::PipeListener;
    use common::slack::{FAST, FAST_UPDATES};
    let standin = StandIn::start(options()).await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let settings = format!("{FAST}{FAST_UPDATES}board = true\n");
    let mut web1 = PipeListener::start_on_host(a.path(), &standin.api_url(), &settings, "web-1");
    let mut web2 = PipeListener::start_on_host(b.path(), &standin.api_url(), &settings, "web-2");
    web1.state("api", "STARTING", "RUNNING");
    web2.state("api", "BACKOFF", "FATAL");
    let heads = || -> Vec<String> {
        let mut h: Vec<String> = standin
            .channel("#ops")
            .iter()
            .map(header)
            .filter(|h| h.starts_with("🖥 "))
            .collect();
        h.sort();
        h
    };
    let ok = wait_until(secs(20), || heads() == ["🖥 web-1: 1 running", "🖥 web-2: 1 FATAL"]);
    assert!(ok, "{:?}", heads());
    web1.close();
    web2.close();
}
