#!/usr/bin/env python3
"""Process functions: warm-invoke overhead and cold start, each against its
baseline in the same run.

1. warm invoke. Baseline: one awslambdaric process (Debian's python3, the
   runtime client from the bundle directory) driven through a minimal
   Runtime API served by this script on loopback — the time from handing it
   an event to receiving its response, i.e. the handler through the Runtime
   API directly. Wisp: the same handler deployed as a process function;
   sequential POSTs to /fn/hello/ over one keep-alive connection, the time
   to the response. Added = Wisp - baseline (p50 and p99).
2. cold start. Baseline: `python3 -c 'import awslambdaric'` wall time (the
   interpreter and the runtime client starting). Wisp: the first request
   after the function's processes were stopped (--idle-evict 200ms), i.e.
   with no process of the function -> first response, end to end, sandbox
   included: by default from a prestarted interpreter (the node's
   --prestart-runtimes 1), and also with --prestart-runtimes 0 (process
   spawn -> first response) and without the sandbox. Each response says
   whether its process came from a prestarted interpreter (its command
   line), so the counts are reported too.

Usage: process.py WISP_BINARY PYDEPS_DIR [RESULT_FILE]
  PYDEPS_DIR: awslambdaric installed with `pip install --target`.
Environment: SAMPLES (2000 warm), COLD (40), NODE_RIC (aws-lambda-ric's
directory, e.g. ~/.cache/wisp/node-ric-3.3.0/node_modules/aws-lambda-ric:
adds Node.js cold starts, prestarted and fresh, without a target).
"""
import http.client
import http.server
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

SAMPLES = int(os.environ.get("SAMPLES", "2000"))
COLD = int(os.environ.get("COLD", "40"))
PY = "/usr/bin/python3"

HANDLER = """
# Whether this process came from a prestarted interpreter (Wisp's
# hand-over script runs as `python3 -c`), for the report.
PRESTARTED = open("/proc/self/cmdline", "rb").read().split(b"\\0")[1] == b"-c"

def handler(event, context):
    return {"statusCode": 200, "headers": {"x-prestarted": str(PRESTARTED)}, "body": "hello"}
"""

# Cold starts served by a prestarted interpreter, per wisp_cold label.
STEMMED = {}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def summary(xs):
    return {"p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3), "n": len(xs)}


def bundle_dir(pydeps):
    d = tempfile.mkdtemp(prefix="wisp-bench-proc-")
    shutil.copytree(pydeps, d, dirs_exist_ok=True)
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(HANDLER)
    return d


def baseline_warm(code):
    """A minimal Runtime API in this process; one awslambdaric client."""
    events = queue.Queue()
    results = queue.Queue()

    class Api(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this the
        # client's delayed ACK adds 40 ms to every invocation.
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            rid, body = events.get()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:0:function:hello")
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(n)
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            results.put(data)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{srv.server_address[1]}",
           "_HANDLER": "app.handler", "LAMBDA_TASK_ROOT": code, "AWS_LAMBDA_FUNCTION_NAME": "hello",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "1"}
    p = subprocess.Popen([PY, "-m", "awslambdaric", "app.handler"], cwd=code, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    event = json.dumps({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}}}).encode()
    lat = []
    for i in range(SAMPLES + 50):
        t = time.perf_counter()
        events.put((f"req-{i}", event))
        results.get()
        if i >= 50:
            lat.append((time.perf_counter() - t) * 1000)
    p.kill()
    srv.shutdown()
    return lat


def start_node(wisp, extra):
    d = tempfile.mkdtemp(prefix="wisp-bench-node-")
    proc = subprocess.Popen([wisp, "serve", "--listen", "127.0.0.1:0", "--s3-listen", "off", "--data-dir", d] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().split()[-1]
    host, port = url.replace("http://", "").split(":")
    return proc, d, host, int(port)


# A Node.js handler run by aws-lambda-ric (npm), for the optional Node rows.
NODE_HANDLER = """
const PRESTARTED = require("fs").readFileSync("/proc/self/cmdline", "utf8").split("\\0")[1] === "-e";
exports.handler = async () => ({statusCode: 200, headers: {"x-prestarted": PRESTARTED ? "True" : "False"}, body: "hello"});
"""
NODE_COMMAND = "/usr/bin/node node_modules/aws-lambda-ric/bin/index.mjs"


def node_bundle_dir(ric):
    d = tempfile.mkdtemp(prefix="wisp-bench-node-")
    for part in ("bin", "dist", "package.json"):
        src = os.path.join(ric, part)
        dst = os.path.join(d, "node_modules", "aws-lambda-ric", part)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src, dst)
    with open(os.path.join(d, "index.js"), "w") as f:
        f.write(NODE_HANDLER)
    return d


def deploy(wisp, d, code):
    z = os.path.join(d, "hello.zip")
    with zipfile.ZipFile(z, "w") as zf:
        for root, _, files in os.walk(code):
            for f in files:
                full = os.path.join(root, f)
                zf.write(full, os.path.relpath(full, code))
    node = os.path.isfile(os.path.join(code, "index.js"))
    handler, command = ("index.handler", NODE_COMMAND) if node else ("app.handler", f"{PY} -m awslambdaric")
    subprocess.run([wisp, "deploy", "hello", z, "--runtime", "process", "--handler", handler,
                    "--command", command], env=dict(os.environ, WISP_DATA_DIR=d),
                   check=True, capture_output=True)


def wisp_warm(wisp, code):
    proc, d, host, port = start_node(wisp, [])
    deploy(wisp, d, code)
    c = http.client.HTTPConnection(host, port)
    lat = []
    for i in range(SAMPLES + 50):
        t = time.perf_counter()
        c.request("POST", "/fn/hello/", body=b"{}")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i >= 50:
            lat.append((time.perf_counter() - t) * 1000)
    proc.terminate()
    proc.wait()
    return lat


def wisp_cold(wisp, code, extra=(), label="default"):
    proc, d, host, port = start_node(wisp, ["--idle-evict", "200ms", *extra])
    deploy(wisp, d, code)
    lat = []
    for i in range(COLD + 1):
        time.sleep(0.8)  # evicted: its process was stopped
        c = http.client.HTTPConnection(host, port)
        c.connect()
        t = time.perf_counter()
        c.request("POST", "/fn/hello/", body=b"{}")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i > 0:
            lat.append((time.perf_counter() - t) * 1000)
            STEMMED[label] = STEMMED.get(label, 0) + (r.getheader("x-prestarted") == "True")
        c.close()
    proc.terminate()
    proc.wait()
    return lat


def baseline_first_next(code):
    """Spawn -> the runtime client's first GET /next, without Wisp."""
    import socket
    lat = []
    for _ in range(COLD):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{s.getsockname()[1]}",
               "_HANDLER": "app.handler", "LAMBDA_TASK_ROOT": code}
        t = time.perf_counter()
        p = subprocess.Popen([PY, "-m", "awslambdaric", "app.handler"], cwd=code, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = s.accept()
        conn.recv(1024)
        lat.append((time.perf_counter() - t) * 1000)
        conn.close()
        p.kill()
        p.wait()
        s.close()
    return lat


def baseline_import(code):
    lat = []
    for _ in range(COLD):
        t = time.perf_counter()
        subprocess.run([PY, "-c", "import awslambdaric"], cwd=code, check=True, env={"PATH": "/usr/bin:/bin"})
        lat.append((time.perf_counter() - t) * 1000)
    return lat


def main():
    wisp, pydeps = sys.argv[1], sys.argv[2]
    out = sys.argv[3] if len(sys.argv) > 3 else None
    code = bundle_dir(pydeps)
    spawn = baseline_first_next(code)
    base = baseline_warm(code)
    mine = wisp_warm(wisp, code)
    imp = baseline_import(code)
    cold = wisp_cold(wisp, code)
    # The same without the sandbox (cgroups, namespaces, mounts), to show
    # what it costs.
    cold_plain = wisp_cold(wisp, code, ["--no-process-sandbox"], "no_sandbox")
    cold_fresh = wisp_cold(wisp, code, ["--prestart-runtimes", "0"], "fresh")
    r = {
        "warm_baseline_runtime_api": summary(base),
        "warm_wisp_http": summary(mine),
        "warm_added_p50_ms": round(pct(mine, 50) - pct(base, 50), 3),
        "warm_added_p99_ms": round(pct(mine, 99) - pct(base, 99), 3),
        "cold_baseline_import_awslambdaric": summary(imp),
        "cold_wisp_first_response": summary(cold),
        "cold_ratio_p50": round(pct(cold, 50) / pct(imp, 50), 2),
        "cold_baseline_spawn_to_first_next": summary(spawn),
        "cold_wisp_first_response_no_sandbox": summary(cold_plain),
        "cold_wisp_first_response_fresh_process": summary(cold_fresh),
        "cold_ratio_p50_fresh_process": round(pct(cold_fresh, 50) / pct(imp, 50), 2),
        "cold_served_by_prestarted": STEMMED,
    }
    ric = os.environ.get("NODE_RIC")
    if ric:
        # Optional: the same cold starts for a Node.js handler on
        # aws-lambda-ric (no target; `node -e 0` as the reference).
        ncode = node_bundle_dir(ric)
        start = []
        for _ in range(COLD):
            t = time.perf_counter()
            subprocess.run(["/usr/bin/node", "-e", "0"], check=True)
            start.append((time.perf_counter() - t) * 1000)
        r["node_baseline_node_e_0"] = summary(start)
        r["node_cold_wisp_first_response"] = summary(wisp_cold(wisp, ncode, (), "node"))
        r["node_cold_wisp_first_response_fresh_process"] = summary(
            wisp_cold(wisp, ncode, ["--prestart-runtimes", "0"], "node_fresh"))
        r["cold_served_by_prestarted"] = STEMMED
        shutil.rmtree(ncode, ignore_errors=True)
    print(json.dumps(r, indent=1))
    if out:
        with open(out, "w") as f:
            json.dump(r, f, indent=1)
    shutil.rmtree(code, ignore_errors=True)


if __name__ == "__main__":
    main()
