#!/usr/bin/env python3
"""Key-value store: get and set from inside a function, side by side with
the baseline of one SQLite statement per operation, in one run.

1. baseline and native: `cargo bench -p wisp-kv --bench kv` (a SELECT per
   get and an autocommitted upsert per set on a WAL/NORMAL SQLite file —
   what a plain SQLite-backed store does — and Wisp's store called
   natively, without WebAssembly).
2. in a function: the kvfn fixture (tests/fixtures/kvfn) deployed with
   `--kv default`; its /bench-get and /bench-set routes time N operations
   through wasi:keyvalue@0.2.0-draft2 inside the component (the host call,
   the store) and answer nanoseconds per operation. ROUNDS rounds each;
   the median round is reported with the spread.

Usage: kv.py WISP_BINARY KVFN_WASM [RESULT_FILE]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request

ROUNDS = int(os.environ.get("ROUNDS", "7"))
GETS = 100_000
SETS = 10_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def native():
    out = tempfile.mktemp(suffix=".json")
    subprocess.run(["cargo", "bench", "--manifest-path", os.path.join(REPO, "Cargo.toml"),
                    "-p", "wisp-kv", "--bench", "kv", "--", out], check=True,
                   stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def in_function(wisp, wasm):
    d = tempfile.mkdtemp(prefix="wisp-bench-kv-")
    proc = subprocess.Popen([wisp, "serve", "--listen", "127.0.0.1:0", "--s3-listen", "off", "--data-dir", d],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        subprocess.run([wisp, "deploy", "kvfn", wasm, "--kv", "default", "--timeout", "60s"],
                       env=dict(os.environ, WISP_DATA_DIR=d), check=True, capture_output=True)

        def call(route, n):
            with urllib.request.urlopen(f"{url}/fn/kvfn/{route}/default/{n}") as r:
                return int(r.read())

        call("bench-get", 1000)  # warm-up: compile, first instance
        result = {}
        for route, n in (("bench-get", GETS), ("bench-set", SETS)):
            rounds = [call(route, n) for _ in range(ROUNDS)]
            result[route.replace("bench-", "")] = {
                "median_ns": statistics.median(rounds), "min_ns": min(rounds),
                "max_ns": max(rounds), "ops_per_round": n, "rounds": ROUNDS}
        return result
    finally:
        proc.terminate()
        proc.wait()


def main():
    wisp, wasm = sys.argv[1], sys.argv[2]
    result = native()
    result["wisp_in_function"] = in_function(wisp, wasm)
    text = json.dumps(result, indent=1)
    print(text)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
