#!/usr/bin/env python3
"""Object storage through the S3 API: small-object request rates and
large-object throughput, next to `dd` on the same disk, in one run.

Starts a node (its data dir on the disk under test), makes a deployer
access key, and runs `cargo bench -p wisp-gateway --bench s3load`
against the S3 listener (every request SigV4-signed, payload hash
included). See that file for what is measured.

Usage: s3.py WISP_BINARY [RESULT_FILE]
"""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    wisp = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mktemp(suffix=".json")
    d = tempfile.mkdtemp(prefix="wisp-bench-s3-", dir=os.environ.get("BENCH_DISK_DIR", REPO + "/.."))
    proc = subprocess.Popen([wisp, "serve", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0",
                             "--data-dir", d], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()
        s3 = proc.stdout.readline().split()[-1]
        env = dict(os.environ, WISP_DATA_DIR=d)
        keys = subprocess.run([wisp, "accesskey", "create", "--role", "deployer"], env=env,
                              check=True, capture_output=True, text=True).stdout
        field = lambda k: next(l.split(" = ")[1] for l in keys.splitlines() if l.startswith(k))
        subprocess.run(["cargo", "bench", "--manifest-path", os.path.join(REPO, "Cargo.toml"),
                        "-p", "wisp-gateway", "--bench", "s3load", "--",
                        s3, field("aws_access_key_id"), field("aws_secret_access_key"), d, out],
                       check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            print(f.read())
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
