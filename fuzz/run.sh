#!/usr/bin/env bash
# Fuzzes the protocol reader: fuzz/run.sh [SECONDS] (default 180).
# Needs `cargo install cargo-fuzz`; runs on the stable toolchain with RUSTC_BOOTSTRAP=1
# (cargo fuzz passes -Zsanitizer=address). Seeds the corpus with the real capture.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-180}"
corpus=fuzz/corpus/event_reader
mkdir -p "$corpus"
cp -n tests/fixtures/*.bin "$corpus"/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 exec cargo fuzz run --fuzz-dir fuzz event_reader "$corpus" -- \
    -dict=fuzz/event_reader.dict -max_total_time="$secs" -max_len=16384 \
    -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
