"""The function behind the cluster tests (tests/varnish/test_cluster.py): a cacheable page per URL, each
invocation appended to the file $CLUSTER_LOG (one line per invocation: the path), so the test can
count invocations per URL across the three Varnish nodes."""

import os
import time


def page(event, context):
    path = event.get("path") or event.get("rawPath") or ""
    if path.startswith("/slow"):
        time.sleep(0.5)   # long enough for hundreds of requests to arrive while it runs
    # One short O_APPEND write per invocation: atomic between the emulator's worker processes.
    with open(os.environ["CLUSTER_LOG"], "a") as f:
        f.write(path + "\n")
    return {"statusCode": 200,
            "headers": {"content-type": "text/plain", "cache-control": "max-age=300"},
            "body": f"page {path}"}
