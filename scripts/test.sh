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

cargo test --workspace --all-targets --locked "$@"
