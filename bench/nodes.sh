#!/usr/bin/env bash
# One node on SQLite, one node on PostgreSQL and two nodes on PostgreSQL, side by side in one
# run on this machine: create-and-activate keys/s (durable: synchronous=FULL on SQLite, the
# default synchronous_commit=on on PostgreSQL) and Key Protect `wrap` req/s, 16 connections
# (spread over both nodes when there are two). Each PostgreSQL setup gets a fresh database on
# the local server (127.0.0.1:5432, user postgres), dropped at the end. The nodes share a
# passphrase seal, so they open the same hierarchy.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
OUT=${OUT:-bench/results/nodes.jsonl}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
TOKEN=bench-token-0123456789abcdef
cargo build --release --locked -p keyplane-cli -p keyplane-bench
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
DATA=$(mktemp -d)
PIDS=()
DBS=()
cleanup() {
    kill "${PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    for db in "${DBS[@]}"; do psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT

# start NAME PORT [DATABASE_URL]: a node with its own data directory.
start() {
    mkdir -p "$DATA/$1"
    env KEYPLANE_DATA_DIR="$DATA/$1" KEYPLANE_LISTEN=127.0.0.1:$2 KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN \
        KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 \
        KEYPLANE_SEAL=passphrase KEYPLANE_SEAL_PASSPHRASE="benchmark nodes share this" \
        ${3:+KEYPLANE_DATABASE_URL=$3} \
        target/release/keyplane serve > "$DATA/$1.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$DATA/$1.out" && return; sleep 0.2; done
    echo "node $1 did not start" >&2; cat "$DATA/$1.out" >&2; exit 1
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; PIDS=(); }
fresh_db() {
    local db=keyplane_bench_$1_$$
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" -qc "CREATE DATABASE $db" >/dev/null
    DBS+=("$db")
    echo "$PG/$db"
}
load() {
    target/release/keyplane-load --token "$TOKEN" --duration "$DURATION" "$@" | tee -a "$OUT"
}

start sqlite 18701
load --url http://127.0.0.1:18701 --label "create-activate sqlite-1-node" create-activate
load --url http://127.0.0.1:18701 --label "wrap sqlite-1-node" wrap
stop_all

url=$(fresh_db one)
start pg-one 18711 "$url"
load --url http://127.0.0.1:18711 --label "create-activate postgres-1-node" create-activate
load --url http://127.0.0.1:18711 --label "wrap postgres-1-node" wrap
stop_all

url=$(fresh_db two)
start pg-a 18721 "$url"
start pg-b 18722 "$url"
load --url http://127.0.0.1:18721 --also-url http://127.0.0.1:18722 --label "create-activate postgres-2-nodes" create-activate
load --url http://127.0.0.1:18721 --also-url http://127.0.0.1:18722 --label "wrap postgres-2-nodes" wrap
stop_all
