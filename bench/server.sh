# Sourced by the benchmark scripts: builds the release binaries and starts one server on PORT
# with a fresh data directory (DATA), stopped and removed when the script exits. The RSA pool is
# off (filling it would take CPU from the first measured run), and so is the per-caller rate
# limit (the load comes from one caller).
TOKEN=bench-token-0123456789abcdef
cargo build --release --locked -p keyplane-cli -p keyplane-bench
mkdir -p "$(dirname "$OUT")"
DATA=$(mktemp -d)
KEYPLANE_DATA_DIR=$DATA KEYPLANE_LISTEN=127.0.0.1:$PORT KEYPLANE_BOOTSTRAP_TOKEN=$TOKEN KEYPLANE_LOG=warn KEYPLANE_RSA_POOL=0 KEYPLANE_RATE_LIMIT=0 \
    target/release/keyplane serve > "$DATA/server.out" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do grep -q listening "$DATA/server.out" && break; sleep 0.2; done
