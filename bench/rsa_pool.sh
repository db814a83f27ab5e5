#!/usr/bin/env bash
# Activation latency of RSA-3072 keys with and without the pre-generated pool: a fresh server
# each time, one key created (active at once) per request, sequentially. With the pool, the
# pool is filled before the first request. Prints the median and the slowest of KEYS requests.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-8}
PORT=${PORT:-18091}
TOKEN=bench-token-0123456789abcdef
URL=http://127.0.0.1:$PORT

cargo build --release --locked -p keyplane-cli
api() { curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

measure() {
    local pool=$1 data
    data=$(mktemp -d)
    KEYPLANE_DATA_DIR=$data KEYPLANE_LISTEN=127.0.0.1:$PORT KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN \
        KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=$pool target/release/keyplane serve > "$data/out" 2>&1 &
    local server=$!
    for _ in $(seq 50); do grep -q listening "$data/out" && break; sleep 0.2; done
    if [ "$pool" != 0 ]; then
        for _ in $(seq 600); do
            [ "$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM key_pool").fetchone()[0])' "$data/keyplane.sqlite" 2>/dev/null || echo 0)" -ge "$KEYS" ] && break
            sleep 0.2
        done
    fi
    local vault
    vault=$(api -X POST "$URL/api/v4/vaults" -d '{"name":"rsa-bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    api -X POST "$URL/api/v4/keystores" -o /dev/null \
        -d "{\"type\":\"ibm_cloud_kms\",\"ibm_variant\":\"internal\",\"vault\":{\"id\":\"$vault\"},\"name\":\"ks\",\"groups\":[\"g\"]}"
    api -X POST "$URL/api/v4/templates" -o /dev/null \
        -d "{\"vault\":{\"id\":\"$vault\"},\"name\":\"RSA\",\"key\":{\"algorithm\":\"rsa\",\"size\":\"3072\",\"state\":\"active\"},\"keystores\":[{\"type\":\"ibm_cloud_kms\",\"group\":\"g\"}]}"
    for i in $(seq "$KEYS"); do
        api -X POST "$URL/api/v4/managed_keys" -o /dev/null -w '%{time_total}\n' \
            -d "{\"vault\":{\"id\":\"$vault\"},\"template_name\":\"RSA\",\"label\":\"k$i\"}"
    done | python3 -c "
import statistics, sys
t = [float(l) * 1000 for l in sys.stdin]
print(f'pool={sys.argv[1]:<8} keys={len(t)}  median {statistics.median(t):7.1f} ms   slowest {max(t):7.1f} ms')" "$pool"
    kill $server; wait $server 2>/dev/null || true
    rm -rf "$data"
}

measure 0
measure "3072:$KEYS"
