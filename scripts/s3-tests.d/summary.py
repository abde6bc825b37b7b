"""Prints the s3-tests figure from the results `wisp_areas` wrote: one row
per area (passed / failed with 501 / failed otherwise / error / skipped),
as the Markdown table in docs/objects.md. With `--failures AREA,...`
also lists the failing tests of those areas and why."""

import collections
import json
import re
import sys

results = json.load(open(sys.argv[1]))
show = set(sys.argv[3].split(",")) if len(sys.argv) > 3 and sys.argv[2] == "--failures" else set()
cols = ["passed", "failed-501", "failed", "error", "skipped"]
rows = collections.defaultdict(collections.Counter)
# A failure is Wisp's 501 when the error says NotImplemented, or when the
# test compared the status it got, 501, with another (requests-based tests).
NOT_IMPLEMENTED = re.compile(r"NotImplemented|\(501\)|assert 501 ==|== 501\b")
for r in results.values():
    if r["outcome"] == "failed" and NOT_IMPLEMENTED.search(r["why"]):
        r["outcome"] = "failed-501"
    rows[r["area"]][r["outcome"] or "error"] += 1
print("| area | tests | passed | failed: 501 NotImplemented | failed: other | error (setup/teardown) | skipped |")
print("|---|---:|---:|---:|---:|---:|---:|")
total = collections.Counter()
for a in sorted(rows, key=lambda a: (-sum(rows[a].values()), a)):
    c = rows[a]
    total.update(c)
    print(f"| {a} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |")
print(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in cols) + " |")
for nodeid, r in sorted(results.items()):
    if r["area"] in show and r["outcome"] in ("failed", "error"):
        why = " ".join(r["why"].split())[-300:]
        print(f"\n{r['outcome']}: {nodeid.split('::')[-1]}\n    {why}")
