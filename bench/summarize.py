"""Medians per (target, concurrency) and ratios of Wisp to the others."""
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
groups = {}
for r in rows:
    groups.setdefault((r["target"], int(r["conc"])), []).append(r)
med = {k: {f: statistics.median(float(r[f]) for r in rs) for f in ("rps", "p50_ms", "p99_ms", "rss_mb")} for k, rs in groups.items()}
with open(sys.argv[2], "w") as f:
    f.write("target,conc,rps,p50_ms,p99_ms,rss_mb\n")
    for (t, c), m in sorted(med.items()):
        f.write(f"{t},{c},{m['rps']:.0f},{m['p50_ms']:.3f},{m['p99_ms']:.3f},{m['rss_mb']:.1f}\n")
print(open(sys.argv[2]).read())
for mine, theirs in (("wisp", "wasmtime"), ("wisp-reuse", "wasmtime-reuse"), ("wisp", "baseline")):
    for c in sorted({c for _, c in med}):
        w, o = med.get((mine, c)), med.get((theirs, c))
        if w and o:
            print(f"c={c}: {mine} {w['rps']:.0f} req/s = {w['rps'] / o['rps']:.2f}x {theirs} ({o['rps']:.0f})")
