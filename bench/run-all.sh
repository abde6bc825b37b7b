#!/usr/bin/env bash
# Everything BENCHMARKS.md reports: setup, the side-by-side load test, cold
# starts and idle memory. Results land in bench/results/ (not committed).
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$BENCH_DIR/setup.sh"
"$BENCH_DIR/loadtest.sh"
echo "== cold starts and memory"
python3 "$BENCH_DIR/coldstart.py" "$WISP" "$HELLO_WASM" "$RESULTS/coldstart.json"
cat "$RESULTS/coldstart.json"
echo "== durable async invocations (events)"
python3 "$BENCH_DIR/events.py" "$WISP" "$HELLO_WASM" "$RESULTS/events.json"
echo "== gateway: API key + rate limits + CORS vs a plain route"
"$BENCH_DIR/gateway.sh"
echo "== route lookup: 10 vs 10,000 routes"
cargo bench --manifest-path "$REPO/Cargo.toml" -p wisp-gateway --bench routes -- "$RESULTS/routes.json"
echo "== process functions: warm overhead and cold start (awslambdaric)"
pydeps="${WISP_PYDEPS:-$HOME/.cache/wisp/pydeps-awslambdaric-3.0.2}"
[ -d "$pydeps/awslambdaric" ] || python3 -m pip install --quiet --target "$pydeps" "awslambdaric==3.0.2"
python3 "$BENCH_DIR/process.py" "$WISP" "$pydeps" "$RESULTS/process.json"
echo "== key-value store: get/set inside a function vs one SQLite statement per operation"
python3 "$BENCH_DIR/kv.py" "$WISP" "${WISP_FIXTURES:-$HOME/.cache/wisp/target-wasm/wasm32-wasip2/release}/kvfn.wasm" "$RESULTS/kv.json"
echo "== object storage: S3 API small-object rates, large objects vs dd"
python3 "$BENCH_DIR/s3.py" "$WISP" "$RESULTS/s3.json"
