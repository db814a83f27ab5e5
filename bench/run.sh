#!/usr/bin/env bash
# Runs Keyplane's benchmarks on this machine against a release build with a fresh database
# (SQLite synchronous=FULL: every acknowledged write is fsynced). Each workload runs three
# times; the summary prints the median of each figure.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
KEYS=${KEYS:-100000}
PORT=${PORT:-18089}
OUT=${OUT:-bench/results/latest.jsonl}

. bench/server.sh
: > "$OUT"

load() { target/release/keyplane-load --url "http://127.0.0.1:$PORT" --token "$TOKEN" --duration "$DURATION" "$@"; }

for _ in $(seq "$RUNS"); do load get-key | tee -a "$OUT"; done
for _ in $(seq "$RUNS"); do load create-activate | tee -a "$OUT"; done
for _ in $(seq "$RUNS"); do load wrap | tee -a "$OUT"; done
for _ in $(seq "$RUNS"); do load unwrap | tee -a "$OUT"; done
for _ in $(seq "$RUNS"); do load wrap-batch --batch 1000 | tee -a "$OUT"; done
# Seed once (create-activate rounds) until KEYS more active keys exist, then measure lists.
load list-active --keys "$KEYS" > /dev/null
for c in 16 4 1; do
    for _ in $(seq "$RUNS"); do
        load --connections "$c" list-active --keys 0 | sed "s/\"workload\":\"list-active\"/\"workload\":\"list-active-c$c\"/" | tee -a "$OUT"
    done
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'workload':<28} {'per second':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   (median of {sys.argv[2]} runs)")
for w in dict.fromkeys(r["workload"] for r in rows):
    rs = [r for r in rows if r["workload"] == w]
    med = lambda k: statistics.median(r.get(k, 0) for r in rs)
    print(f"{w:<28} {med('per_second'):>11.0f} {med('p50_ms'):>8.2f} {med('p99_ms'):>8.2f} {sum(r.get('errors', 0) for r in rs):>7}")
PY
