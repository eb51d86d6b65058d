"""The function behind the Prometheus tests and the dashboard snapshot (tests/varnish/test_prometheus.py,
examples/grafana/snapshot.py): a page whose path picks its behaviour."""

import time


def page(event, context):
    path = event.get("path") or event.get("rawPath") or ""
    if path.startswith("/error"):
        raise RuntimeError(f"failed on purpose for {path}")
    if path.startswith(("/slow", "/api/slow")):
        time.sleep(float(path.rsplit("/", 1)[-1] or 1) if path.count("/") > 1 else 1.0)
    print(f"rendering {path}")
    return {"statusCode": 200, "headers": {"content-type": "text/plain", "cache-control": "no-store"},
            "body": f"page {path}"}
