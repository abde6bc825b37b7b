# Settings shared by the benchmark scripts. Source it; override by environment.
: "${WASMTIME_VERSION:=48.0.8}"
: "${DURATION:=10s}"          # wrk duration per point
: "${CONCS:=1 16 64}"         # concurrency levels
: "${REPS:=3}"                # repetitions per point (the median is reported)
: "${SERVER_CPUS:=1}"         # taskset CPU list for the server ('' = no pinning)
: "${CLIENT_CPUS:=0}"         # taskset CPU list for wrk
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
: "${BENCH_WORK:=${TMPDIR:-/tmp}/wisp-bench}"
: "${RESULTS:=$BENCH_DIR/results}"
: "${CARGO_TARGET_DIR:=$HOME/.cache/wisp/target}"
: "${WISP_WASM_TARGET_DIR:=$HOME/.cache/wisp/target-wasm}"
export CARGO_TARGET_DIR WISP_WASM_TARGET_DIR
WASMTIME="$BENCH_WORK/tools/bin/wasmtime"
WISP="$CARGO_TARGET_DIR/release/wisp"
BASELINE="$BENCH_WORK/baseline-target/release/baseline-hyper"
HELLO_WASM="$WISP_WASM_TARGET_DIR/wasm32-wasip2/release/hello.wasm"
mkdir -p "$BENCH_WORK" "$RESULTS"
PIN_SERVER=""; PIN_CLIENT=""
if command -v taskset >/dev/null; then
  [ -n "$SERVER_CPUS" ] && PIN_SERVER="taskset -c $SERVER_CPUS"
  [ -n "$CLIENT_CPUS" ] && PIN_CLIENT="taskset -c $CLIENT_CPUS"
fi
