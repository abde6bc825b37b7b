"""A pytest plugin (Wisp's own, loaded with `-p wisp_areas`): records the
outcome of every s3-tests test with its markers, and sorts tests into
areas, so `scripts/s3-tests` can print the figure in docs/objects.md.

Outcome per test: passed, failed, error (setup or teardown failed) or
skipped; a failure whose error is S3's NotImplemented (501) is
`failed-501`: the suite asked for something Wisp says it does not do.
"""

import json
import os
import re

_results = {}

# Markers first (the suite's own tags), then test names.
_MARKER_AREAS = [
    ("versioning", "versioning"),
    ("delete_marker", "versioning"),
    ("object_lock", "object lock"),
    ("tagging", "tagging"),
    ("lifecycle", "lifecycle"),
    ("lifecycle_expiration", "lifecycle"),
    ("lifecycle_transition", "lifecycle"),
    ("encryption", "encryption"),
    ("sse_s3", "encryption"),
    ("bucket_encryption", "encryption"),
    ("bucket_policy", "policy"),
    ("bucket_logging", "logging"),
    ("s3website", "website"),
    ("checksum", "checksum"),
    ("storage_class", "storage class"),
    ("appendobject", "append"),
    ("object_ownership", "acl"),
    ("iam_tenant", "tenant"),
    ("conditional_write", "conditional"),
    ("list_objects_v2", "list"),
    ("copy", "copy"),
]

_NAME_AREAS = [
    (r"versioning|_versions?_|version_id|versionid", "versioning"),
    (r"object_lock|lock_", "object lock"),
    (r"tagging|_tags?(_|$)", "tagging"),
    (r"lifecycle|_lc_", "lifecycle"),
    (r"sse|encrypt|kms", "encryption"),
    (r"policy|policies", "policy"),
    (r"cors", "cors"),
    (r"acl|grant|_public_|canned|ownership|access_block", "acl"),
    (r"website", "website"),
    (r"logging", "logging"),
    (r"post_object", "POST object"),
    (r"multipart|upload_part|list_parts|abort_", "multipart"),
    (r"copy", "copy"),
    (r"if_?match|if_?none|ifmatch|ifnonematch|if_?modified|if_?unmodified|conditional|_put_if", "conditional"),
    (r"list|prefix|delimiter|marker|max_keys|maxkeys|continuation|startafter|start_after|fetchowner|encoding_type", "list"),
    (r"anonymous|_auth_|presign|signature|expired|_v2_|_v4_|authenticated|_unauthenticated", "auth"),
    (r"torrent|restore|select|append|checksum|storage_class|attributes|accelerate|payer|request_payment", "other features"),
    (r"bucket", "bucket"),
    (r"object|_get|_put|_head|range|_key_|metadata|_meta_", "object"),
]


def area(name, markers):
    for m, a in _MARKER_AREAS:
        if m in markers:
            return a
    short = name.split("::")[-1].lower()
    for pattern, a in _NAME_AREAS:
        if re.search(pattern, short):
            return a
    return "other"


def pytest_runtest_logreport(report):
    r = _results.setdefault(report.nodeid, {"outcome": None, "why": ""})
    if "markers" not in r:
        r["markers"] = sorted(k for k, v in report.keywords.items() if v == 1)
    text = report.longreprtext if report.failed else ""
    if report.when == "call":
        if report.passed:
            r["outcome"] = r["outcome"] or "passed"
        elif report.skipped:
            r["outcome"] = "skipped"
        else:
            r["outcome"] = "failed-501" if "NotImplemented" in text else "failed"
            r["why"] = text[-600:]
    elif report.skipped and r["outcome"] is None:
        r["outcome"] = "skipped"
    elif report.failed:
        if r["outcome"] in (None, "passed"):
            r["outcome"] = "error"
            r["why"] = f"{report.when}: " + text[-600:]


def pytest_sessionfinish(session):
    path = os.environ.get("WISP_S3TESTS_RESULTS")
    if not path or hasattr(session.config, "workerinput"):
        return
    for nodeid, r in _results.items():
        r["area"] = area(nodeid, r.get("markers", []))
    with open(path, "w") as f:
        json.dump(_results, f, indent=1, sort_keys=True)
