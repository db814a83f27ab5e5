#!/usr/bin/env bash
# CPU instructions per data-plane call, counted by valgrind's callgrind: Keyplane's Key Protect
# `wrap` against the bare axum endpoint doing the same JSON + base64 + AES-GCM work. Instruction
# counts do not depend on what else the machine is doing, so two builds compare exactly where
# wall-clock throughput on a shared machine does not. Counts user-space instructions of the
# server only, not the kernel's socket work (the same system calls for both).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
TOKEN=bench-token-0123456789abcdef
KP_PORT=18189 BARE_PORT=18199

command -v valgrind >/dev/null || { echo "valgrind is required (Debian package valgrind)" >&2; exit 1; }
cargo build --release --locked -p keyplane-cli -p keyplane-bench
DATA=$(mktemp -d)
trap 'pkill -f "callgrind-out-file=$DATA" 2>/dev/null || true; rm -rf "$DATA"' EXIT

measure() { # name url workload out-file command...
    local name=$1 url=$2 workload=$3 out=$4
    shift 4
    (cd "$DATA" && valgrind --tool=callgrind --callgrind-out-file="$DATA/$out" "$@" > "$DATA/$name.log" 2>&1 &)
    for _ in $(seq 120); do
        curl -s -o /dev/null "$url/" 2>/dev/null && break
        sleep 0.5
    done
    # A first run warms caches (the key's material, tokens); the counted run starts from zero.
    target/release/keyplane-load --duration 2s --url "$url" --token "$TOKEN" "$workload" > /dev/null
    callgrind_control -z > /dev/null
    local calls
    calls=$(target/release/keyplane-load --duration "$DURATION" --url "$url" --token "$TOKEN" "$workload" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
    callgrind_control -d > /dev/null
    local dump
    dump=$(ls -t "$DATA/$out".* | head -1)
    local instructions
    instructions=$(sed -n 's/^summary: //p' "$dump")
    python3 - "$name" "$calls" "$instructions" <<'PY'
import sys
name, calls, instructions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"{name:<10} calls {calls:>7}  instructions per call {instructions / calls:>9,.0f}")
PY
    pkill -f "callgrind-out-file=$DATA/$out" || true
    sleep 1
}

KEYPLANE_DATA_DIR=$DATA/keyplane KEYPLANE_LISTEN=127.0.0.1:$KP_PORT KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN \
KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 \
    measure keyplane "http://127.0.0.1:$KP_PORT" wrap cg.keyplane "$PWD/target/release/keyplane" serve
# The same binary recording no call metrics: what recording them costs a call.
KEYPLANE_DATA_DIR=$DATA/keyplane-unmetered KEYPLANE_LISTEN=127.0.0.1:$KP_PORT KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN \
KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 KEYPLANE_METRICS=off \
    measure unmetered "http://127.0.0.1:$KP_PORT" wrap cg.unmetered "$PWD/target/release/keyplane" serve
measure bare "http://127.0.0.1:$BARE_PORT" bare-wrap cg.bare "$PWD/target/release/keyplane-bare" --listen "127.0.0.1:$BARE_PORT"
