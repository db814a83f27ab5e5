#!/usr/bin/env bash
# Every list at scale: seeds KEYS active keys (default 100,000) into one vault of a fresh
# database through the API, then measures each list (one connection, DURATION each): the
# managed-key list with no filter (the console's default), with each documented filter and with
# each sort, and the other lists. Prints one JSON line per list with its p50 and p99.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3s}
KEYS=${KEYS:-100000}
PORT=${PORT:-18289}
OUT=${OUT:-bench/results/lists.jsonl}

. bench/server.sh

keys=/api/v4/managed_keys?limit=100
paths=(
    "$keys"
    "$keys&state=active"
    "$keys&state=destroyed"
    "$keys&state=pre_activation,active,deactivated,destroyed"
    "$keys&vault.id={vault}"
    "$keys&algorithm=aes"
    "$keys&size=256"
    "$keys&label=absent"
    "$keys&template.name=BENCH"
    "$keys&created_at_min=2000-01-01"
    "$keys&created_at_max=2000-01-01"
    "$keys&updated_at_min=2000-01-01"
    "$keys&activation_date_max=2100-01-01"
    "$keys&expiration_date_min=2000-01-01"
    "$keys&rotated_at_min=2000-01-01"
    "$keys&state=active&created_at_min=2000-01-01"
    "$keys&sort=label"
    "$keys&sort=-created_at"
    "$keys&sort=state"
    "$keys&sort=size"
    "$keys&sort=version"
    "$keys&sort=id"
    "$keys&offset=5000"
    "/api/v4/audit_events?limit=100"
    "/api/v4/vaults?limit=100"
    "/api/v4/keystores?limit=100"
    "/api/v4/templates?limit=100"
)
args=()
for p in "${paths[@]}"; do args+=(--path "$p"); done
target/release/keyplane-load --url "http://127.0.0.1:$PORT" --token "$TOKEN" --duration "$DURATION" \
    --connections 1 list-active --keys "$KEYS" "${args[@]}" | tee "$OUT"
