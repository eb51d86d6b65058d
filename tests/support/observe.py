"""What a test reads back from a running varnishd (support.varnish_harness.Varnishd) to compare
with what its clients saw: an object's counters, a request's log records, a timed request."""

import subprocess
import time


def counters(v, obj):
    prefix = f"lambda.{obj}."
    return {k[len(prefix):]: val for k, val in v.counters(f"lambda.{obj}.*").items()
            if k.startswith(prefix)}


def vsl(v, url, tag, want=1, timeout=10.0):
    """The `tag` records of the transactions of the request for url (its backend fetch too)."""
    end = time.monotonic() + timeout
    while True:
        out = subprocess.run(["varnishlog", "-d", "-n", v.workdir, "-g", "request", "-q",
                              f'ReqURL eq "{url}"', "-i", tag], capture_output=True, text=True,
                             timeout=30).stdout
        lines = [ln.split(None, 2)[2] for ln in out.splitlines()
                 if len(ln.split(None, 2)) == 3 and ln.split(None, 2)[1] == tag]
        if len(lines) >= want or time.monotonic() > end:
            return lines
        time.sleep(0.2)


def timed(v, url, **kw):
    t0 = time.monotonic()
    status, headers, body = v.request(url, **kw)
    return status, {k.lower(): val for k, val in headers}, body, time.monotonic() - t0


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True
