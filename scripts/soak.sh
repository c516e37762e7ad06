#!/usr/bin/env bash
# Soak: scripts/soak.sh [duration, default 10m] (units: s or m; a bare number is seconds)
#
# Builds --release, starts the bundled mock with upstream faults switched on (5xx answers,
# resets, slow answers; seeded) and the proxy in front of it, drives mixed traffic at twice the
# account's limit through the proxy (examples/soak_load.rs, loopback only, bounded in time and
# in flight), samples the proxy's resident memory from /proc every few seconds, and reports:
# upstream 429s, client errors by type, retries by reason, RSS start/end/max. Memory must be flat.
# Knobs (environment): LIMIT (per minute, default 1000), LOAD (multiple of the limit, 2),
# SAMPLE (seconds between RSS samples, 5), FAULTS (mock fault flags).
set -euo pipefail
cd "$(dirname "$0")/.."

dur="${1:-10m}"
case "$dur" in
  *m) secs=$(( ${dur%m} * 60 )) ;;
  *s) secs=${dur%s} ;;
  *) secs=$dur ;;
esac
limit="${LIMIT:-1000}"
load="${LOAD:-2}"
sample="${SAMPLE:-5}"
faults="${FAULTS:---fault-5xx-rate 0.02 --fault-reset-rate 0.01 --fault-slow-rate 0.005 --fault-slow 5s --fault-seed 42}"
out="target/soak/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

echo "== building (release)"
cargo build --release --quiet --bin racknap-proxy --example soak_load
bin=target/release/racknap-proxy

key="soak_$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Wait (bounded) until a log file shows a pattern; print the first match.
await_log() {
  for _ in $(seq 1 300); do
    if m=$(grep -o -m1 "$2" "$1" 2>/dev/null); then echo "$m"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; return 1
}

echo "== mock: $limit per 60s, faults: $faults"
# shellcheck disable=SC2086
RACKNAP_API_KEY="$key" NO_COLOR=1 "$bin" mock --listen 127.0.0.1:0 --limit "$limit" --window 60s $faults \
  >"$out/mock.log" 2>&1 &
pids+=($!)
mock_url=$(await_log "$out/mock.log" 'http://127\.0\.0\.1:[0-9]*')

cat >"$out/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[upstream]
url = "$mock_url"
timeout = "2s"
[budget]
limit = $limit
window = "60s"
[queue]
max_wait = "20s"
[log]
format = "json"
level = "warn,racknap_proxy::app=info"
EOF
echo "== proxy -> $mock_url"
RACKNAP_API_KEY="$key" "$bin" --config "$out/proxy.toml" >"$out/proxy.log" 2>&1 &
proxy_pid=$!
pids+=($proxy_pid)
proxy_addr=$(await_log "$out/proxy.log" '"proxy_addr":"[^"]*"' | cut -d'"' -f4)
admin_addr=$(await_log "$out/proxy.log" '"admin_addr":"[^"]*"' | cut -d'"' -f4)

rss() { awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status" 2>/dev/null || echo 0; }
( start=$(date +%s); while kill -0 "$proxy_pid" 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(rss)"; sleep "$sample"; done ) >"$out/rss.txt" &
pids+=($!)

rate=$(awk -v l="$limit" -v k="$load" 'BEGIN { printf "%.2f", l * k / 60 }')
echo "== load: $rate req/s (${load}x the limit) for ${secs}s through $proxy_addr; RSS every ${sample}s -> $out/rss.txt"
target/release/examples/soak_load --proxy "$proxy_addr" --rate "$rate" --duration "${secs}s" --timeout 150s \
  >"$out/load.json"

curl -s "http://$admin_addr/metrics" >"$out/metrics.txt"
curl -s "$mock_url/__mock/stats" >"$out/mock_stats.json"
kill -TERM "$proxy_pid"
code=0; wait "$proxy_pid" || code=$?

echo
echo "== report ($out)"
echo "clients:       $(cat "$out/load.json")"
echo "mock:          $(cat "$out/mock_stats.json" | sed 's/,"byPath":{.*}}$/}/')"
grep -E '^racknap_proxy_(upstream_429_total|retries_total|errors_total|upstream_attempts_total)' "$out/metrics.txt" \
  | sed 's/^/proxy:         /'
# Warm-up: the queue (queue.max_wait), retries (retry.max_wait) and the cache (ttl) reach their
# steady state within about two minutes; memory after that must stay flat.
warm=$(( secs / 3 > 120 ? secs / 3 : (secs / 2 < 120 ? secs / 2 : 120) ))
awk -v warm="$warm" '
  { t[NR]=$1; r[NR]=$2; if ($2 > max) max=$2; if ($1 <= warm) w=$2 }
  END {
    if (NR == 0) { print "rss: no samples"; exit 1 }
    printf "rss (KiB):     start %d, after warm-up (%ds) %d, end %d, max %d, samples %d\n", r[1], warm, w, r[NR], max, NR
    slope = (t[NR] > warm) ? (r[NR] - w) * 60 / (t[NR] - warm) : 0
    printf "after warm-up: %+.0f KiB/min\n", slope
    flat = (r[NR] <= w * 1.15 + 2048)
    printf "memory:        %s (end within 15%% + 2MiB of the post-warm-up sample)\n", flat ? "FLAT" : "GROWING"
    exit flat ? 0 : 3
  }' "$out/rss.txt" && flat=0 || flat=$?
echo "proxy exit:    $code on SIGTERM"
[ "$flat" -eq 0 ] && [ "$code" -eq 0 ]
