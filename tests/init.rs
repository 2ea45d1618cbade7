//! `init`: the supervisord block has the lines that matter; the starter settings
//! parse with the real loader and change nothing until edited.

use std::path::Path;

use supervisor_slack::config::{parse_str, resolve};
use supervisor_slack::init::{starter_settings, supervisord_block};

fn lines(block: &str) -> Vec<&str> {
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(';'))
        .collect()
}

#[test]
fn supervisord_block_has_the_required_lines() {
    let block = supervisord_block(Path::new("/opt/bin/supervisor-slack"), None);
    let l = lines(&block);
    for required in [
        "[eventlistener:slack]",
        "command=/opt/bin/supervisor-slack listen",
        "events=PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP",
        "buffer_size=1024",
        "autorestart=true",
        "stdout_logfile=NONE",
    ] {
        assert!(l.contains(&required), "missing {required:?} in:\n{block}");
    }
    let value = |key: &str| {
        l.iter()
            .find_map(|x| x.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in:\n{block}"))
    };
    // Its own priority, not supervisord's default -1 shared by every listener.
    let priority: i64 = value("priority").parse().unwrap();
    assert_ne!(priority, -1);
    let stopwait: u64 = value("stopwaitsecs").parse().unwrap();
    assert!(stopwait >= 5);
    assert!(value("stderr_logfile").starts_with('/'));
    let env = value("environment");
    assert!(env.contains("SLACK_TOKEN_FILE=\""), "{env}");
    assert!(env.contains("SLACK_CHANNEL=\""), "{env}");
    assert!(
        !env.contains("SLACK_TOKEN=\""),
        "the token itself never goes in supervisord's config"
    );
}

#[test]
fn supervisord_block_passes_the_settings_file_and_quotes_paths() {
    let block = supervisord_block(
        Path::new("/opt/my tools/supervisor-slack"),
        Some(Path::new("/etc/slack.toml")),
    );
    assert!(
        block
            .contains("command=\"/opt/my tools/supervisor-slack\" --config /etc/slack.toml listen"),
        "{block}"
    );
}

#[test]
fn starter_settings_parse_with_the_loader() {
    let text = starter_settings();
    let file = parse_str(&text, Some(Path::new("starter.toml"))).expect("the starter file parses");
    let s = resolve(&file, &[("SLACK_TOKEN", "xoxb-test")])
        .unwrap()
        .settings;
    assert_eq!(s.channel.as_deref(), Some("#ops"));
}

/// Every key the loader knows is documented in the starter file, and each commented
/// example, uncommented, is accepted by the loader.
#[test]
fn starter_settings_document_every_key_with_working_examples() {
    let text = starter_settings();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            // `# key = value` and `# [[route]]` lines are examples; prose is not.
            Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // The two password forms exclude each other: keep the file.
    let uncommented = uncommented.replace("supervisor_password = \"...\"", "");
    let file = parse_str(&uncommented, None).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let f = &file.parsed;
    assert!(f.token_file.is_some() && f.host.is_some() && f.environment.is_some());
    assert!(f.state.is_some() && f.templates_dir.is_some() && f.api_url.is_some());
    assert!(f.thread_ttl.is_some() && f.broadcast_failures.is_some() && f.call_timeout.is_some());
    assert!(f.post_interval.is_some() && f.post_burst.is_some() && f.updates_per_minute.is_some());
    assert!(f.coalesce_max.is_some() && f.setup_retry.is_some());
    assert!(f.supervisor_server_url.is_some() && f.supervisor_username.is_some());
    assert!(f.supervisor_password_file.is_some());
    assert!(f.skip.is_some() && f.running.is_some() && f.mentions.is_some());
    assert_eq!(f.route.len(), 2);
    assert!(f.app_token_file.is_some() && f.actions.is_some());
    assert!(f.fleet_url.is_some() && f.fleet_url_file.is_some() && f.fleet_name.is_some());
    assert!(f.heartbeat.is_some() && f.silent_after.is_some());
    assert!(text.contains("# supervisor_password = "));
    // Semantic checks pass on the examples (files aside, which do not exist here).
    let no_files = uncommented
        .lines()
        .filter(|l| {
            !l.starts_with("token_file")
                && !l.starts_with("app_token_file")
                && !l.starts_with("supervisor_password_file")
                && !l.starts_with("fleet_url_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let no_files = no_files.replace("supervisor_username = \"slack\"", "");
    let file = parse_str(&no_files, None).unwrap();
    resolve(&file, &[("SLACK_TOKEN", "xoxb-test")]).unwrap_or_else(|e| panic!("{e}"));
}

/// The keys the loader accepts, read from its own "unknown field" error (so a key
/// added later without documentation fails this test).
fn known_keys(table: &str) -> Vec<String> {
    let e = parse_str(&format!("{table}no_such_key = 1\n"), None)
        .unwrap_err()
        .to_string();
    let list = e
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("{e}"));
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, k)| k.to_string())
        .collect()
}

#[test]
fn every_known_key_is_in_the_starter_file() {
    let text = starter_settings();
    let top = known_keys("");
    assert!(top.len() > 20, "{top:?}");
    for key in top.iter().filter(|k| *k != "route" && *k != "actions") {
        assert!(
            text.contains(&format!("{key} = ")),
            "{key} is not documented"
        );
    }
    for key in known_keys("[[route]]\n") {
        assert!(
            text.contains(&format!("# {key} = "))
                || text.contains(&format!(" {key} ("))
                || text.contains(&format!(" {key},")),
            "route key {key} is not documented"
        );
    }
    assert!(text.contains("# [actions]"));
    for key in known_keys("[actions]\n") {
        assert!(text.contains(&format!("# {key} = ")), "actions key {key} is not documented");
    }
}
