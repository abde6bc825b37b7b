#!/usr/bin/env bash
# Installs and builds what the benchmarks need: wrk (apt), wasmtime-cli
# (cargo install, ~30 min on 2 cores the first time), the release `wisp`,
# the hello component, the raw hyper baseline.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if ! command -v wrk >/dev/null; then
  echo "==> apt-get install wrk"; apt-get update -qq && apt-get install -y -qq wrk
fi
if ! [ -x "$WASMTIME" ] || ! "$WASMTIME" --version | grep -q "$WASMTIME_VERSION"; then
  echo "==> cargo install wasmtime-cli@$WASMTIME_VERSION (slow the first time)"
  cargo install --locked --root "$BENCH_WORK/tools" "wasmtime-cli@$WASMTIME_VERSION"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
echo "==> release wisp"; (cd "$REPO" && cargo build --release --locked -p wisp-cli)
echo "==> hello component"; (cd "$REPO/examples" && CARGO_TARGET_DIR="$WISP_WASM_TARGET_DIR" cargo build --release --locked --target wasm32-wasip2 -p hello)
echo "==> baseline hyper"; (cd "$BENCH_DIR/baseline-hyper" && CARGO_TARGET_DIR="$BENCH_WORK/baseline-target" cargo build --release)
echo "==> precompiling hello for wasmtime serve"
"$WASMTIME" compile -o "$BENCH_WORK/hello.cwasm" "$HELLO_WASM"
