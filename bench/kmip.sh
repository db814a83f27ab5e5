#!/usr/bin/env bash
# Distribution of KEYS keys to a real KMIP server (PyKMIP) with CONCURRENCY calls in flight,
# against PyKMIP's own client registering and activating as many keys on as many connections.
# PyKMIP comes from PyPI (the virtualenv scripts/test.sh makes under target/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/kmip-venv
if [ ! -x "$VENV/bin/pykmip-server" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'pykmip==0.11.0' 'sqlalchemy==2.1.9' 'cryptography==50.0.2'
fi
cargo build --release --locked -p keyplane-cli -p keyplane-bench
KEYPLANE_TEST_PYKMIP=$PWD/$VENV/bin/pykmip-server target/release/keyplane-kmip \
    --keys "${KEYS:-500}" --concurrency "${CONCURRENCY:-4}" \
    | tee -a bench/results/kmip.jsonl
