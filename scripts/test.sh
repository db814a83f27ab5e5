#!/usr/bin/env bash
# Runs Keyplane's whole test suite from a fresh checkout: unit, store, API and end-to-end tests
# through the real binary. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (install Rust with rustup)" >&2
    exit 1
fi

# The suite's peers so far are in-process (SQLite) or the keyplane binary itself; external
# peers (PostgreSQL, LocalStack, OpenBao, SoftHSM2) are started here as their tests arrive.

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
