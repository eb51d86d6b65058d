"""Handlers for the tests that run varnishd in front of the emulator."""

import time


def slow_page(event, context):
    """A cacheable page that takes a while: concurrent misses must coalesce onto one invocation."""
    time.sleep(1.0)
    return {"statusCode": 200,
            "headers": {"content-type": "text/plain", "cache-control": "max-age=60"},
            "body": f"rendered for {event.get('path') or event.get('rawPath')}"}


def chatty_page(event, context):
    """Logs the request's headers (a credential among them) and answers: for log_tail."""
    import json
    print(f"handling {event.get('path')}")
    print(json.dumps({"headers": event.get("headers") or {}}, sort_keys=True))
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "chatty"}


# ---- streaming backends (tests/varnish/test_varnish_streaming.py): parameters in the query string

from lambda_emulator import HttpResponseStream, streamify_response  # noqa: E402


def _pattern(i, size):
    return (b"%08d" % i) * (size // 8)


def _wait_gate(q):
    """gate=PATH: hold the failure back until the test creates PATH (at most 30 s), i.e. until
    the client has the response head. Varnish sends it from cnt_transmit, once the delivery holds
    the busy object: a failure after that reaches the client as a cut body (the test's fixed
    point, where a failure between the fetch and the delivery is Varnish's race, see the tests)."""
    import os
    gate = q.get("gate")
    if not gate:
        return
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


@streamify_response
def stream_page(event, response_stream, context):
    """Query parameters (payload 2.0 event): mode=http|plain|big, n chunks of size bytes, delay
    seconds between chunks, first=seconds before anything, status, fail=1 (raise after the
    chunks), fault=corrupt_crc|stall|close (after the first chunk), stall=seconds, mb (big) and
    pause (big: seconds after each 64 KiB), cookies=0 (no Set-Cookie), gate=PATH (the fault or
    the raise waits until PATH exists, see _wait_gate)."""
    q = event.get("queryStringParameters") or {}
    mode = q.get("mode", "http")
    time.sleep(float(q.get("first", 0)))
    stream = response_stream
    if mode == "big":
        size, pause = 65536, float(q.get("pause", 0))
        for i in range(int(q.get("mb", 1)) * 16):
            stream.write(_pattern(i, size))
            if pause:
                time.sleep(pause)
        return
    if mode == "http":
        stream = HttpResponseStream.from_(response_stream, {
            "statusCode": int(q.get("status", 200)),
            "headers": {"Content-Type": "application/octet-stream", "X-Streamed": "yes",
                        "Cache-Control": "max-age=60"},
            "cookies": ["a=1; Path=/", "b=2; HttpOnly"] if q.get("cookies", "1") == "1" else []})
    n, size, delay = int(q.get("n", 3)), int(q.get("size", 256)), float(q.get("delay", 0))
    for i in range(n):
        if i and delay:
            time.sleep(delay)
        stream.write(bytes((i + j) % 256 for j in range(size)))
        if i == 0 and q.get("fault"):
            _wait_gate(q)
            opts = {"seconds": float(q.get("stall", 3))} if q["fault"] == "stall" else {}
            stream.fault(q["fault"], **opts)
    if q.get("fail"):
        _wait_gate(q)
        raise RuntimeError(f"failed after {n} chunks")
