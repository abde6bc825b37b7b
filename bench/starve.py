#!/usr/bin/env python3
"""CPU-bound guests vs a light function, on one node, in one run.

For each mode of `wisp serve --long-guest-after` (`off`: every guest stays
on the request threads, as before; `20ms`: a guest that used 20 ms of CPU
moves to nice-19 threads), start a node (not pinned: it gets every core of
the machine), deploy `hello` and the `testfn` fixture, and measure the
latency of sequential GET /fn/hello/ requests:

  idle   - nothing else running
  loaded - while two requests to testfn's /loop (an infinite loop, 120 s
           timeout) keep two guests busy

Prints p50/p99 of each and the loaded/idle ratios (target: p50 <= 5x,
p99 <= 10x), and writes them as JSON.

usage: starve.py WISP_BINARY HELLO_WASM TESTFN_WASM OUT_JSON [SAMPLES]
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def start(wisp, mode):
    data = tempfile.mkdtemp(prefix="wisp-starve-")
    proc = subprocess.Popen(
        [wisp, "serve", "--listen", "127.0.0.1:0", "--s3-listen", "off",
         "--data-dir", data, "--long-guest-after", mode],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("wisp listening on "):
            url = line.split()[-1]
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    host, port = url.removeprefix("http://").split(":")
    return proc, data, host, int(port)


def cli(wisp, data, *args):
    env = dict(os.environ, WISP_DATA_DIR=data)
    subprocess.run([wisp, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def latencies(host, port, path, n):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            raise SystemExit(f"{path} answered {r.status}")
    conn.close()
    return out


def loop_forever(host, port):
    try:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        conn.request("GET", "/fn/spin/loop")
        conn.getresponse().read()
    except Exception:
        pass  # the node was stopped under it


def run(wisp, hello, testfn, mode, samples):
    proc, data, host, port = start(wisp, mode)
    try:
        cli(wisp, data, "deploy", "hello", hello, "--concurrency", "100")
        cli(wisp, data, "deploy", "spin", testfn, "--timeout", "120s", "--concurrency", "10")
        latencies(host, port, "/fn/hello/", 200)  # warm-up
        idle = latencies(host, port, "/fn/hello/", samples)
        loops = [threading.Thread(target=loop_forever, args=(host, port), daemon=True)
                 for _ in range(2)]
        for t in loops:
            t.start()
        time.sleep(1.0)
        loaded = latencies(host, port, "/fn/hello/", samples)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)
    r = {
        "mode": mode,
        "idle_p50_ms": round(pct(idle, 50), 3),
        "idle_p99_ms": round(pct(idle, 99), 3),
        "loaded_p50_ms": round(pct(loaded, 50), 3),
        "loaded_p99_ms": round(pct(loaded, 99), 3),
    }
    r["p50_ratio"] = round(r["loaded_p50_ms"] / r["idle_p50_ms"], 2)
    r["p99_ratio"] = round(r["loaded_p99_ms"] / r["idle_p99_ms"], 2)
    return r


def main():
    wisp, hello, testfn, out = sys.argv[1:5]
    samples = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    results = {"cores": os.cpu_count(), "samples": samples, "runs": []}
    for mode in ["off", "20ms"]:
        r = run(wisp, hello, testfn, mode, samples)
        print(f"--long-guest-after {mode:>4}: idle p50 {r['idle_p50_ms']} ms p99 {r['idle_p99_ms']} ms; "
              f"2 loops p50 {r['loaded_p50_ms']} ms p99 {r['loaded_p99_ms']} ms; "
              f"ratio p50 {r['p50_ratio']}x p99 {r['p99_ratio']}x", flush=True)
        results["runs"].append(r)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
