#!/usr/bin/env bash
# The compliance benchmark: the release binary against the bundled mock with adversities on.
# Prints one table row per scenario; exits non-zero if any scenario saw an upstream 429.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench compliance
