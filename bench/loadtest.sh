#!/usr/bin/env bash
# Side-by-side loopback load test of the same hello component:
#   wisp      - Wisp, fresh instance per request, routing + metering + activation recording on
#   wisp-reuse - Wisp with the function deployed with --instance-reuse 1000000 (opt-in reuse)
#   wasmtime  - `wasmtime serve` (fresh instance per request, its default) on the precompiled component
#   wasmtime-reuse - `wasmtime serve --max-instance-reuse-count 1000000`
#   baseline  - a raw hyper hello (the ceiling)
# wrk -t1 at each concurrency in $CONCS, $REPS reps of $DURATION, server pinned to
# $SERVER_CPUS and wrk to $CLIENT_CPUS. Writes $RESULTS/load_raw.csv and load.csv (medians).
# Usage: loadtest.sh [target...]   (default: wisp wasmtime wisp-reuse wasmtime-reuse baseline)
set -euo pipefail
source "$(dirname "$0")/env.sh"
TARGETS=${*:-"wisp wasmtime wisp-reuse wasmtime-reuse baseline"}
CSV="$RESULTS/load_raw.csv"
[ -f "$CSV" ] && [ -n "${APPEND:-}" ] || echo "target,conc,rep,rps,p50_ms,p99_ms,non2xx,rss_mb" > "$CSV"
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else {sub(/s$/,"",v); print v*1000} }'; }
port=8190
for t in $TARGETS; do
  port=$((port+1)); path="/"
  case "$t" in
    wisp|wisp-reuse)
      rm -rf "$BENCH_WORK/wisp-data"
      cmd="$WISP serve --listen 127.0.0.1:$port --data-dir $BENCH_WORK/wisp-data"; path="/fn/hello/" ;;
    wasmtime) cmd="$WASMTIME serve -Scli --allow-precompiled --addr 127.0.0.1:$port $BENCH_WORK/hello.cwasm" ;;
    wasmtime-reuse) cmd="$WASMTIME serve -Scli --allow-precompiled --max-instance-reuse-count 1000000 --addr 127.0.0.1:$port $BENCH_WORK/hello.cwasm" ;;
    baseline) cmd="$BASELINE 127.0.0.1:$port" ;;
    *) echo "unknown target $t"; exit 2 ;;
  esac
  echo "== $t: $cmd"
  $PIN_SERVER $cmd > "$RESULTS/$t.server.log" 2>&1 &
  spid=$!
  trap 'kill $spid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  case "$t" in
    wisp) WISP_DATA_DIR="$BENCH_WORK/wisp-data" "$WISP" deploy hello "$HELLO_WASM" --concurrency 1000 >/dev/null ;;
    wisp-reuse) WISP_DATA_DIR="$BENCH_WORK/wisp-data" "$WISP" deploy hello "$HELLO_WASM" --concurrency 1000 --instance-reuse 1000000 >/dev/null ;;
  esac
  url="http://127.0.0.1:$port$path"
  echo "   body: $(curl -sf "$url")"
  $PIN_CLIENT wrk -t1 -c16 -d2s "$url" > /dev/null   # warm-up
  for c in $CONCS; do for rep in $(seq 1 "$REPS"); do
    out="$RESULTS/$t.c$c.r$rep.txt"
    $PIN_CLIENT wrk -t1 -c"$c" -d"$DURATION" --latency "$url" > "$out"
    rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
    p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")"); p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
    non2xx=$(awk '/Non-2xx/{print $NF}' "$out"); non2xx=${non2xx:-0}
    rss=$(awk '$1=="VmRSS:"{printf "%.1f", $2/1024}' "/proc/$spid/status")
    echo "$t,$c,$rep,$rps,$p50,$p99,$non2xx,$rss" | tee -a "$CSV"
  done; done
  kill "$spid"; wait "$spid" 2>/dev/null || true; trap - EXIT
done
python3 "$BENCH_DIR/summarize.py" "$CSV" "$RESULTS/load.csv"
