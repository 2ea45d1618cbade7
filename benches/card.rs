//! Criterion benchmarks of the card renderer (built-in templates): the parent and the
//! reply for a typical event (a process going RUNNING), and the reply for a crash
//! with its context and a 2,000-character stderr tail.
//!
//! `cargo bench --bench card`. Under `cargo test --all-targets` criterion runs each
//! routine once (a smoke run, no timing).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use supervisor_slack::card::{samples, CrashContext, Renderer};
use supervisor_slack::supervisord::event::State;

/// About 2,000 characters of a Python traceback, as a stderr tail.
fn log_tail() -> String {
    let mut s = String::from("Traceback (most recent call last):\n");
    let mut i = 0;
    while s.chars().count() < 2000 {
        s.push_str(&format!(
            "  File \"/srv/app/handlers/module_{i}.py\", line {}, in handle_request\n    result = process(payload, retries=3)  # <http://x|y> & *z*\n",
            10 + i
        ));
        i += 1;
    }
    let mut s: String = s.chars().take(1960).collect();
    s.push_str("\nValueError: bad config value for 'workers'");
    s
}

fn bench(c: &mut Criterion) {
    let renderer = Renderer::builtin();
    let all = samples::all();
    let typical = all
        .iter()
        .find(|s| s.label == State::Running.to_string())
        .expect("a RUNNING sample")
        .clone();
    let mut crash = all
        .iter()
        .find(|s| s.label == "crash loop with context")
        .expect("the crash sample")
        .clone();
    let tail = log_tail();
    assert!((1990..=2010).contains(&tail.chars().count()));
    crash.context = Some(CrashContext {
        log_tail: Some(tail),
        ..crash.context.clone().unwrap_or_default()
    });

    let mut g = c.benchmark_group("card");
    g.bench_function("parent, typical (RUNNING)", |b| {
        let input = typical.parent();
        b.iter(|| renderer.parent(black_box(&input)))
    });
    g.bench_function("reply, typical (RUNNING)", |b| {
        let input = typical.reply();
        b.iter(|| renderer.reply(black_box(&input)))
    });
    g.bench_function("reply, crash with 2,000-char log tail", |b| {
        let input = crash.reply();
        b.iter(|| renderer.reply(black_box(&input)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
