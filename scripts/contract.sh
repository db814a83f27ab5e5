#!/usr/bin/env bash
# Checks that the server keeps the contract its OpenAPI document states: schemathesis derives
# requests from GET /api/v4/openapi.json and checks every answer against the document (status
# codes, bodies, content types, headers; schema-valid input accepted, invalid input refused).
#
# Usage: scripts/contract.sh [path/to/keyplane]     (default target/debug/keyplane)
# Budget per pass, in seconds and examples per operation: CONTRACT_MAX_TIME (default 90),
# CONTRACT_MAX_EXAMPLES (default 20). CONTRACT_EXCLUDE_CHECKS names checks to leave out
# (comma-separated); CONTRACT_SEED fixes the fuzzer's seed (unset: a new one each run, printed).
# Reports (JUnit XML) go to target/contract-report/.
# Needs python3 (with venv) and curl. Exits non-zero when any pass finds a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
BIN=${1:-target/debug/keyplane}
MAX_TIME=${CONTRACT_MAX_TIME:-90}
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-20}
VENV=target/contract-venv
REPORTS=$PWD/target/contract-report

for tool in python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "no keyplane binary at $BIN (build it first)" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# The fuzzer at a pinned version: a new release adds checks, which must not turn CI red unasked.
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST=$PWD/$VENV/bin/st

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A fresh server per run: fuzzing creates, changes and deletes whatever it can reach.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
admin_token=contract-admin-$(python3 -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p "$work/data"
# A zero grace period and rotation interval let the fuzzer reach destroy and repeated rotations.
KEYPLANE_DATA_DIR=$work/data \
KEYPLANE_LISTEN=127.0.0.1:$port \
KEYPLANE_BOOTSTRAP_TOKEN=$admin_token \
KEYPLANE_DESTROY_GRACE_PERIOD=0s \
KEYPLANE_ROTATION_MIN_INTERVAL=0s \
    "$BIN" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 60); do
    curl -sf "$base/health" >/dev/null 2>&1 && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server did not start:" >&2; tail -20 "$work/server.log" >&2; exit 2
    fi
    sleep 0.5
done
curl -sf "$base/health" >/dev/null || { echo "the server did not answer on $base" >&2; exit 2; }

# json FIELD...: reads a JSON document on stdin and prints the value at that path.
json() { python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$@"; }
# call METHOD PATH [BODY]: an admin call that must succeed; prints the answer (and the error
# body on stderr when it fails, so a broken setup step says why).
call() {
    local out
    if ! out=$(curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $admin_token" \
        -H 'Content-Type: application/json' ${3:+-d "$3"} "$base$2"); then
        echo "setup call $1 $2 failed: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# Documented behaviour the fuzzer's defaults do not know: a missing If-Match is 428 (RFC 6585), a
# stale one 412 whether the request is otherwise valid or not (the ETag is checked first), and a
# resource that is gone answers 404 before its If-Match is read.
cat >"$work/schemathesis.toml" <<'EOF'
[checks.missing_required_header]
expected-statuses = ["400", "401", "403", "404", "406", "415", "422", "428"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429", "5xx"]

# 413: a body over the size limit (1 MiB, documented on every operation that takes one) is
# refused whatever its fields, and the document cannot bound a body's total size.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "413", "428", "429", "5xx"]

# Requests the document cannot tell apart from valid ones, refused with 400 and a body naming
# why: they refer to what must exist (a vault, a template, a principal), to what a keystore's
# type decides (its connection fields, a template's key properties, a type fixed once created),
# or carry what only the server can judge (a ciphertext it made, key material under its import
# token with its nonce proof), or choose between fields (count or plaintexts; a policy and the
# one ?policy= names; a rotation interval when rotation is enabled), or name an alias Key
# Protect keeps out (a UUID, one of its path words). Every other operation must accept
# whatever the document allows.
# A keystore whose type has a connector is tested on connect: a valid body naming a target that
# cannot be reached from here (a cloud's public endpoint) is 424, as documented. An adoption names
# a vault, a template and keystores that must exist, ids in the form each keystore's type gives
# them, and history no later than now; its copies are read at their keystores (424 unreachable).
[[operations]]
include-name = [
    "POST /api/v4/keystores",
    "PATCH /api/v4/keystores/{id}",
    "POST /api/v4/managed_keys/adopt",
]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "412", "413", "424", "428", "429", "5xx"]

[[operations]]
include-name = [
    "POST /api/v4/templates",
    "PATCH /api/v4/templates/{id}",
    "POST /api/v4/managed_keys",
    "POST /api/v4/access/policies",
    "POST /api/v2/keys",
    "POST /api/v2/keys/{id}/actions/unwrap",
    "POST /api/v2/keys/{id}/actions/rewrap",
    "POST /api/v2/keys/{id}/actions/unwrap_batch",
    "POST /api/v2/keys/{id}/actions/rotate",
    "POST /api/v2/keys/{id}/actions/wrap_batch",
    "POST /api/v2/keys/{id}/aliases/{alias}",
    "PUT /api/v2/keys/{id}/policies",
]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "412", "413", "428", "429", "5xx"]
EOF

# Real resources for the seeded pass: random ids only ever reach 404, so without them no 2xx
# body of an {id} operation or of the Key Protect data plane would be checked.
vault=$(call POST /api/v4/vaults '{"name":"contract-vault"}' | json id)
keystore=$(call POST /api/v4/keystores "{\"type\":\"ibm_cloud_kms\",\"ibm_variant\":\"internal\",\"vault\":{\"id\":\"$vault\"},\"name\":\"contract-ks\",\"groups\":[\"g\"]}" | json id)
template=$(call POST /api/v4/templates "{\"vault\":{\"id\":\"$vault\"},\"name\":\"T1\",\"key\":{\"algorithm\":\"aes\",\"size\":\"256\",\"state\":\"active\"},\"keystores\":[{\"type\":\"ibm_cloud_kms\",\"group\":\"g\"}]}" | json id)
key_json=$(call POST /api/v4/managed_keys "{\"vault\":{\"id\":\"$vault\"},\"template_name\":\"T1\",\"label\":\"contract-key\"}")
key=$(echo "$key_json" | json id)
key_ref=$(echo "$key_json" | json status_in_keystores 0 key_id_in_keystore)
cp "$work/schemathesis.toml" "$work/seeded.toml"
cat >>"$work/seeded.toml" <<EOF

[parameters]
"header.bluemix-instance" = "$keystore"

[[operations]]
include-path-regex = '^/api/v2/keys/\{id\}'
parameters = { "path.id" = "$key_ref" }

[[operations]]
include-path-regex = '^/api/v4/managed_keys/\{id\}'
parameters = { "path.id" = "$key", "header.If-Match" = "*" }

[[operations]]
include-path-regex = '^/api/v4/templates/\{id\}'
parameters = { "path.id" = "$template", "header.If-Match" = "*" }

[[operations]]
include-path-regex = '^/api/v4/keystores/\{id\}'
parameters = { "path.id" = "$keystore", "header.If-Match" = "*" }

[[operations]]
include-path-regex = '^/api/v4/vaults/\{id\}'
parameters = { "path.id" = "$vault", "header.If-Match" = "*" }
EOF

failed=0
# run NAME CONFIG TOKEN [st run options...]: one bounded schemathesis pass.
run() {
    local name=$1 config=$2 token=$3
    shift 3
    echo "=== contract pass: $name (up to ${MAX_TIME}s)" >&2
    # From the scratch directory: schemathesis keeps its caches in the working directory.
    if ! (cd "$work" && "$ST" --config-file "$config" run "$base/api/v4/openapi.json" \
        -H "Authorization: Bearer $token" \
        --checks all ${CONTRACT_EXCLUDE_CHECKS:+--exclude-checks "$CONTRACT_EXCLUDE_CHECKS"} \
        --exclude-path /api/v4/system/seal \
        --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" ${CONTRACT_SEED:+--seed "$CONTRACT_SEED"} \
        --continue-on-failure --generation-database none \
        --report junit --report-junit-path "$REPORTS/$name.xml" \
        "$@"); then
        failed=1
    fi
}
mkdir -p "$REPORTS"

# POST /system/seal is left out of every pass: once sealed, every later call is 503.
run admin "$work/schemathesis.toml" "$admin_token"
run admin-seeded "$work/seeded.toml" "$admin_token" \
    --include-path-regex '^/api/v2/|/\{id\}' --exclude-path-regex '^/api/v4/(access|approvals)/'

# A principal with no policies, made after the admin passes so that their fuzzing cannot delete
# it or grant it a role: every call must be refused in a documented way.
principal=$(call POST /api/v4/access/principals '{"name":"contract-nopolicy"}' | json id)
apikey=$(call POST "/api/v4/access/principals/$principal/api_keys" '{}' | json apikey)
nopolicy_token=$(curl -sf -X POST "$base/identity/token" \
    --data-urlencode 'grant_type=urn:ibm:params:oauth:grant-type:apikey' \
    --data-urlencode "apikey=$apikey" | json access_token)
run nopolicy "$work/schemathesis.toml" "$nopolicy_token"

if [ "$failed" -ne 0 ]; then
    echo "contract: FAILED (reports in $REPORTS)" >&2
    exit 1
fi
echo "contract: passed" >&2
