#!/usr/bin/env python3
"""Durable async invocations: end-to-end throughput and event-to-invocation
latency, with the synchronous invoke of the same function through the same
API measured in the same run as the baseline.

1. baseline: wrk POSTs to /v1/functions/hello/invoke (synchronous: not
   stored, the caller waits for the function).
2. async throughput: wrk POSTs to /v1/functions/hello/invoke?async=true for
   DURATION (each 202 only after the event is committed and fsynced); then
   the queue drains. End-to-end rate = deliveries that succeeded / (time from
   the first request until the queue is empty), i.e. accepted -> stored ->
   invoked -> recorded.
3. latency: async invokes sent one at a time at ~RATE/s when the queue is
   empty; latency = the activation's start time - the client's send time.

Usage: events.py WISP_BINARY HELLO_WASM [RESULT_FILE]
Environment: DURATION (10s), CONC (64), REPS (3), RATE (200), SAMPLES (1000),
PIN_SERVER / PIN_CLIENT (taskset prefixes, e.g. "taskset -c 1").
"""
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DURATION = os.environ.get("DURATION", "10s")
CONC = int(os.environ.get("CONC", "64"))
REPS = int(os.environ.get("REPS", "3"))
RATE = float(os.environ.get("RATE", "200"))
SAMPLES = int(os.environ.get("SAMPLES", "1000"))
PIN_SERVER = os.environ.get("PIN_SERVER", "").split()
PIN_CLIENT = os.environ.get("PIN_CLIENT", "").split()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


class Node:
    def __init__(self, wisp):
        self.wisp = wisp
        self.dir = tempfile.mkdtemp(prefix="wisp-events-")
        self.proc = subprocess.Popen(
            PIN_SERVER + [wisp, "serve", "--listen", "127.0.0.1:0", "--s3-listen", "off", "--data-dir", self.dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("wisp listening on "):
                self.url = line.split()[-1]
                break
        hostport = self.url.split("//")[1]
        self.host, self.port = hostport.split(":")[0], int(hostport.split(":")[1])
        self.token = open(os.path.join(self.dir, "admin-token")).read().strip()

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection(self.host, self.port)
        h = {"Authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def metric(self, name):
        _, text = self.request("GET", "/metrics")
        m = re.search(rf"^{name} (\S+)$", text.decode(), re.M)
        return float(m.group(1)) if m else 0.0

    def deploy(self, name, wasm):
        env = dict(os.environ, WISP_DATA_DIR=self.dir)
        subprocess.run(
            [self.wisp, "deploy", name, wasm, "--concurrency", "1000"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


LUA = """
wrk.method = "POST"
wrk.body = '{"order":7,"items":["a","b"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WISP_TOKEN")
"""


def wrk(node, path):
    lua = os.path.join(node.dir, "post.lua")
    open(lua, "w").write(LUA)
    out = subprocess.run(
        PIN_CLIENT
        + ["wrk", "-t1", f"-c{CONC}", f"-d{DURATION}", "--latency", "-s", lua, node.url + path],
        env=dict(os.environ, WISP_TOKEN=node.token),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+(\S+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(non2xx.group(1)) if non2xx else 0


def throughput(node):
    base_rps, _, base_bad = wrk(node, "/v1/functions/hello/invoke")
    succeeded0 = node.metric("wisp_queue_succeeded_total")
    t0 = time.time()
    acc_rps, total, bad = wrk(node, "/v1/functions/hello/invoke?async=true")
    accepted = total - bad
    while node.metric("wisp_queue_depth") > 0:
        time.sleep(0.01)
    t1 = time.time()
    done = node.metric("wisp_queue_succeeded_total") - succeeded0
    return {
        "sync_rps": base_rps,
        "sync_non2xx": base_bad,
        "async_accept_rps": acc_rps,
        "async_accepted": accepted,
        "async_refused": bad,
        "async_succeeded": done,
        "drain_s": round(t1 - t0, 3),
        "async_e2e_rps": round(done / (t1 - t0), 1),
    }


def latency(node):
    sent = []
    gap = 1.0 / RATE
    c = http.client.HTTPConnection(node.host, node.port)
    h = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
    for i in range(SAMPLES):
        t = time.time()
        c.request("POST", "/v1/functions/hello/invoke?async=true", body=b'{"n":%d}' % i, headers=h)
        r = c.getresponse()
        ack = time.time()
        body = json.loads(r.read())
        sent.append((body["event_id"], t, ack))
        time.sleep(max(0.0, gap - (time.time() - t)))
    c.close()
    while node.metric("wisp_queue_depth") > 0:
        time.sleep(0.01)
    time.sleep(0.3)  # activation records are written in 100 ms batches
    lat, ack_lat = [], []
    for eid, t, ack in sent:
        _, data = node.request("GET", f"/v1/activations?event={eid}")
        runs = json.loads(data)
        start = min(a["start_ms"] for a in runs)
        lat.append(start - t * 1000)
        ack_lat.append((ack - t) * 1000)
    return {
        "samples": len(lat),
        "event_to_invocation_p50_ms": round(pct(lat, 50), 2),
        "event_to_invocation_p99_ms": round(pct(lat, 99), 2),
        "event_to_invocation_max_ms": round(max(lat), 2),
        "accept_202_p50_ms": round(pct(ack_lat, 50), 2),
        "accept_202_p99_ms": round(pct(ack_lat, 99), 2),
    }


def main():
    wisp, hello = sys.argv[1], sys.argv[2]
    result_file = sys.argv[3] if len(sys.argv) > 3 else None
    runs = []
    for rep in range(REPS):
        node = Node(wisp)
        try:
            node.deploy("hello", hello)
            r = throughput(node)
            print(f"rep {rep + 1}: {json.dumps(r)}", flush=True)
            runs.append(r)
        finally:
            node.stop()
    node = Node(wisp)
    try:
        node.deploy("hello", hello)
        lat = latency(node)
        print(f"latency: {json.dumps(lat)}", flush=True)
    finally:
        node.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    summary = {
        "conc": CONC,
        "duration": DURATION,
        "reps": runs,
        "median": med,
        "async_e2e_vs_sync": round(med["async_e2e_rps"] / med["sync_rps"], 3),
        "latency": lat,
    }
    print(json.dumps(summary, indent=1))
    if result_file:
        json.dump(summary, open(result_file, "w"), indent=1)


if __name__ == "__main__":
    main()
