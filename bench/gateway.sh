#!/usr/bin/env bash
# Gateway overhead, side by side in one run on one node: the same hello
# function behind two routes,
#   plain    - GET /plain: no auth, no rate limit, no CORS
#   guarded  - GET /guarded: API-key auth (key with its own rate limit and a
#              daily quota), a route rate limit, CORS for the request's Origin
# Rate limits and quota are set high enough never to refuse, so both routes
# do the same work apart from the checks. wrk -t1, server pinned to
# $SERVER_CPUS, wrk to $CLIENT_CPUS; the targets alternate rep by rep.
# Writes $RESULTS/gateway_raw.csv and prints medians and the ratio.
set -euo pipefail
source "$(dirname "$0")/env.sh"
CSV="$RESULTS/gateway_raw.csv"
echo "target,conc,rep,rps,p50_ms,p99_ms,non2xx" > "$CSV"
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else {sub(/s$/,"",v); print v*1000} }'; }
port=8290
data="$BENCH_WORK/wisp-gw-data"
rm -rf "$data"
$PIN_SERVER "$WISP" serve --listen 127.0.0.1:$port --data-dir "$data" > "$RESULTS/gateway.server.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
export WISP_DATA_DIR="$data"
"$WISP" deploy hello "$HELLO_WASM" --concurrency 1000 >/dev/null
"$WISP" route add GET /plain --function hello >/dev/null
"$WISP" route add GET /guarded --function hello --auth api-key --rate 1000000/s --cors https://shop.example >/dev/null
key=$("$WISP" apikey create --name bench --rate 1000000/s --quota 1000000000/day 2>/dev/null)
base="http://127.0.0.1:$port"
echo "plain:   $(curl -sf "$base/plain")"
echo "guarded: $(curl -sf -H "x-api-key: $key" -H 'Origin: https://shop.example' -D - "$base/guarded" | tr -d '\r' | grep -iE '^(access-control-allow-origin|ratelimit-limit):' | tr '\n' ' ')"
run() { # target conc rep
  local t=$1 c=$2 rep=$3 out="$RESULTS/gateway.$1.c$2.r$3.txt"
  if [ "$t" = plain ]; then
    $PIN_CLIENT wrk -t1 -c"$c" -d"$DURATION" --latency "$base/plain" > "$out"
  else
    $PIN_CLIENT wrk -t1 -c"$c" -d"$DURATION" --latency -H "x-api-key: $key" -H "Origin: https://shop.example" "$base/guarded" > "$out"
  fi
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$out")"); p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$out")")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$out"); non2xx=${non2xx:-0}
  echo "$t,$c,$rep,$rps,$p50,$p99,$non2xx" | tee -a "$CSV"
}
$PIN_CLIENT wrk -t1 -c16 -d2s "$base/plain" > /dev/null   # warm-up
for c in $CONCS; do for rep in $(seq 1 "$REPS"); do
  run plain "$c" "$rep"; run guarded "$c" "$rep"
done; done
kill "$spid"; wait "$spid" 2>/dev/null || true; trap - EXIT
python3 - "$CSV" "$RESULTS/gateway.json" <<'PY'
# The machine is noisy (the same target varies by up to 2x between runs):
# the headline is the median of the per-rep ratios of adjacent runs, which
# drift affects least; medians per target are reported too.
import csv, json, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
out = {}
for c in sorted({int(r["conc"]) for r in rows}):
    m = {}
    for t in ("plain", "guarded"):
        rs = [r for r in rows if r["target"] == t and int(r["conc"]) == c]
        m[t] = {f: statistics.median(float(r[f]) for r in rs) for f in ("rps", "p50_ms", "p99_ms")}
        m[t]["non2xx"] = sum(int(r["non2xx"]) for r in rs)
    by_rep = {(r["target"], r["rep"]): float(r["rps"]) for r in rows if int(r["conc"]) == c}
    ratios = [by_rep[("guarded", rep)] / by_rep[("plain", rep)] for (t, rep) in by_rep if t == "plain"]
    m["ratio_per_rep"] = [round(x, 3) for x in ratios]
    m["ratio"] = round(statistics.median(ratios), 3)
    m["ratio_of_medians"] = round(m["guarded"]["rps"] / m["plain"]["rps"], 3)
    out[f"c{c}"] = m
    print(f"c={c}: guarded/plain = {m['ratio']:.3f} (median of per-rep ratios {m['ratio_per_rep']}); "
          f"medians {m['guarded']['rps']:.0f} vs {m['plain']['rps']:.0f} req/s = {m['ratio_of_medians']:.3f}; "
          f"p99 {m['guarded']['p99_ms']:.2f} vs {m['plain']['p99_ms']:.2f} ms; non-2xx {m['guarded']['non2xx']}/{m['plain']['non2xx']}")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
