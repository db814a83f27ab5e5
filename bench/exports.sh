#!/usr/bin/env bash
# List exports at scale: seeds KEYS active keys (default 100,000) through the API, then exports
# them all as CSV, zipped CSV and zipped JSON, against reading the same keys as JSON pages of
# 1,000 (what a client without exports does). For each: wall time, bytes, and how much the
# server's heap (anonymous resident memory, sampled) rose while it ran — flat for a streamed
# export, whatever the number of keys. Prints one JSON line each, appended to OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
PORT=${PORT:-18389}
OUT=${OUT:-bench/results/exports.jsonl}

. bench/server.sh

# Seed (the list workload seeds first; one short measured pass of a single list follows).
target/release/keyplane-load --url "http://127.0.0.1:$PORT" --token "$TOKEN" --duration 1s \
    --connections 1 list-active --keys "$KEYS" --path "/api/v4/managed_keys?limit=1" > /dev/null

# The server's anonymous resident memory (heap; not the database file it maps), sampled every
# 20 ms while a command runs: the highest value seen, in KiB.
anon() { sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER/status"; }
peak_during() { # command...
    local peak_file=$(mktemp) sampler
    anon > "$peak_file"
    ( while :; do
        now=$(anon); [ "$now" -gt "$(cat "$peak_file")" ] && echo "$now" > "$peak_file"
        sleep 0.02
      done ) &
    sampler=$!
    "$@"
    kill $sampler; wait $sampler 2>/dev/null || true
    PEAK=$(cat "$peak_file"); rm -f "$peak_file"
}
url="http://127.0.0.1:$PORT/api/v4/managed_keys?state=active"
report() { # name seconds bytes baseline
    python3 -c 'import json,sys; n,k,s,b,base,peak=sys.argv[1:]; print(json.dumps({"export": n, "keys": int(k), "seconds": round(float(s), 3), "bytes": int(b), "server_heap_rise_kib": int(peak)-int(base)}))' \
        "$1" "$KEYS_HELD" "$2" "$3" "$4" "$PEAK" | tee -a "$OUT"
}
one() { # accept
    curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' \
        -H "Authorization: Bearer $TOKEN" -H "Accept: $1" "$url" > "$RESULT"
}
every_page() {
    local offset=0 bytes=0 got started total
    total=$(curl -sf -H "Authorization: Bearer $TOKEN" "$url&limit=1" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_count"])')
    started=$(date +%s.%N)
    while [ "$offset" -lt "$total" ]; do
        got=$(curl -sf -H "Authorization: Bearer $TOKEN" "$url&limit=1000&offset=$offset" | wc -c)
        bytes=$((bytes + got)); offset=$((offset + 1000))
    done
    echo "$(python3 -c "import time; print(time.time() - $started)") $bytes" > "$RESULT"
}
# The seeding overshoots a little: the keys the lists hold.
KEYS_HELD=$(curl -sf -H "Authorization: Bearer $TOKEN" "$url&limit=1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_count"])')
RESULT=$(mktemp)
trap 'rm -f "$RESULT"; kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for name in json-pages-of-1000 csv csv-zip json-zip; do
    base=$(anon)
    case $name in
        json-pages-of-1000) peak_during every_page ;;
        csv) peak_during one text/csv ;;
        csv-zip) peak_during one application/zip ;;
        json-zip) peak_during one application/vnd.ibm.uko.managed-key-list.v4.1.json+zip ;;
    esac
    read -r seconds bytes < "$RESULT"
    report "$name" "$seconds" "$bytes" "$base"
done
