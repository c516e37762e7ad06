#!/usr/bin/env bash
# Fuzz every target for a bounded time each: scripts/fuzz.sh [seconds per target, default 60] [target...]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The fuzz/ crate is not part
# of the main build, so `cargo test` at the root never needs either. A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a regular test (tests/fuzz_properties.rs) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ratelimit_headers path_normalize config_toml)
cargo +nightly fuzz build --release
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  start=$(date +%s)
  # -max_total_time bounds the run; seeds/ is read, new inputs go to corpus/ (not committed).
  if cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 \
      2>"corpus/$t.log"; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "corpus/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "$t: $(( $(date +%s) - start ))s, ${runs} inputs, no crash"
  else
    failed=1
    echo "$t: CRASH after $(( $(date +%s) - start ))s; input in fuzz/artifacts/$t/, log in fuzz/corpus/$t.log:"
    grep -E -m3 "panicked at|^thread|assertion" "corpus/$t.log" | sed 's/^/    /'
  fi
done
exit $failed
