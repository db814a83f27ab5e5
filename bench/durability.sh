#!/usr/bin/env bash
# Create-and-activate under each SQLite durability (KEYPLANE_SQLITE_SYNCHRONOUS full, then
# normal), one fresh server each, in one run: keys/s and latency from the load generator, and
# what the server wrote to disk per key (from /proc/PID/io).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
PORT=${PORT:-18589}
OUT=${OUT:-bench/results/durability.jsonl}
: > "$OUT"

for mode in full normal; do
    export KEYPLANE_SQLITE_SYNCHRONOUS=$mode
    (
        . bench/server.sh
        before=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER/io")
        line=$(target/release/keyplane-load --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
            --duration "$DURATION" --label "create-activate-$mode" create-activate)
        after=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER/io")
        keys=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
        echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['disk_bytes_per_key']=round(($after-$before)/max($keys,1)); print(json.dumps(d))" | tee -a "$OUT"
    )
done
