"""examples/failover.vcl through varnishd: two lambda.backend objects (two regions) behind
vmod_directors' fallback director, with probes and the throttle hold. Traffic moves to the second
region when the first throttles (at once, on the first 429) or fails (the failed fetch retried on the
other region, then the probes), and back when it recovers; no client error beyond what grace cannot
cover (a URL never cached, while both regions are down). docs/FAILOVER.md.

The example runs unchanged but for each object's endpoint_url (a local fake Lambda endpoint per
region) and a short probe interval."""

import json
import os
import re
import threading
import time

import pytest

from support.fake_lambda import Action, FakeLambda, event_path
from support.varnish_harness import Varnishd, require_stage

HERE = os.path.dirname(__file__)
EXAMPLE = os.path.join(HERE, "..", "..", "examples", "failover.vcl")


class Region:
    """One region's endpoint: answers as `mode` says ("ok", "throttle": 429 with Retry-After 2,
    "fail": a function error), probes included; counts the invocations that are not probes."""

    def __init__(self, name):
        self.name = name
        self.mode = "ok"
        self.pages = 0
        self.lock = threading.Lock()
        self.fake = FakeLambda(self.route)

    def route(self, function, event):
        path = event_path(event)
        if path != "/healthz":
            with self.lock:
                self.pages += 1
        if self.mode == "throttle":
            return Action("status", b"Rate exceeded", 429,
                          {"type": "TooManyRequestsException", "Retry-After": "2"})
        if self.mode == "fail":
            return Action("payload", b'{"errorMessage": "down", "errorType": "RuntimeError"}',
                          headers={"X-Amz-Function-Error": "Unhandled"})
        return Action("payload", json.dumps({
            "statusCode": 200, "headers": {"Cache-Control": "max-age=1"},
            "body": f"{self.name} {path}"}).encode())


def example_vcl(east_url, west_url):
    with open(EXAMPLE) as f:
        vcl = f.read()
    for region, url in (("us-east-1", east_url), ("us-west-2", west_url)):
        old = f'"{region}", probe'
        assert vcl.count(old) == 1, f"examples/failover.vcl: no {old}"
        vcl = vcl.replace(old, f'"{region}", endpoint_url = "{url}", probe')
    for old, new in ((".interval = 5s;", ".interval = 0.3s;"), (".timeout = 2s;", ".timeout = 1s;")):
        assert vcl.count(old) == 1, f"examples/failover.vcl: no {old}"
        vcl = vcl.replace(old, new)
    return vcl


@pytest.fixture()
def failover():
    require_stage()
    east, west = Region("east"), Region("west")
    try:
        with Varnishd(example_vcl(east.fake.url, west.fake.url)) as v:
            yield v, east, west
    finally:
        east.fake.stop()
        west.fake.stop()


def health(v):
    """{"primary": "healthy"|"sick", "secondary": ...} from backend.list."""
    out = v.adm("backend.list")
    return {name: m.group(1) for name in ("primary", "secondary")
            for m in [re.search(rf"\b{name}\s.*\b(healthy|sick)\b", out)] if m}


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def get(v, path):
    status, headers, body = v.request(path)
    return status, dict((k.lower(), val) for k, val in headers).get("x-lambda-backend"), body


def test_failover_moves_to_the_second_region_and_back(failover):
    v, east, west = failover
    wait_for("both regions healthy",
             lambda: health(v) == {"primary": "healthy", "secondary": "healthy"})
    seen = []       # (status, backend) of every client request

    def req(path):
        r = get(v, path)
        seen.append(r[:2])
        return r

    assert req("/p/1")[:2] == (200, "primary")

    # The primary throttles: its first 429 makes it sick at once (the throttle hold); that fetch
    # is retried on the secondary, and the next ones go there without invoking the primary.
    east.mode = "throttle"
    assert req("/p/2")[:2] == (200, "secondary")
    assert health(v)["primary"] == "sick"
    before = east.pages
    for i in range(3, 8):
        assert req(f"/p/{i}")[:2] == (200, "secondary")
    assert east.pages == before, "the held primary was invoked"
    c = v.counters("lambda.primary.*")
    assert c["lambda.primary.throttled"] >= 1 and c["lambda.primary.held"] == 0
    # (no call reached the held primary: the director skipped it, so nothing was refused there)

    # It recovers: once its hold is over and its probes are good again, traffic goes back.
    east.mode = "ok"
    wait_for("the primary back", lambda: req("/p/back")[1] == "primary")

    # It fails (function errors): the failed fetch is retried on the secondary; then the probes
    # take it out of the rotation.
    east.mode = "fail"
    assert req("/p/f1")[:2] == (200, "secondary")
    wait_for("the primary sick by its probes", lambda: health(v)["primary"] == "sick")
    before = east.pages
    assert req("/p/f2")[:2] == (200, "secondary")
    assert east.pages == before
    east.mode = "ok"
    wait_for("the primary back", lambda: req("/p/back2")[1] == "primary")

    # No client error so far.
    assert all(status == 200 for status, _ in seen), seen

    # Both down: grace serves what is cached (stale, up to an hour); a URL never cached cannot
    # be served (what grace cannot cover).
    assert get(v, "/cached")[0] == 200
    east.mode = west.mode = "fail"
    wait_for("both sick", lambda: health(v) == {"primary": "sick", "secondary": "sick"})
    time.sleep(1.2)         # past the object's TTL (max-age=1)
    status, _, body = get(v, "/cached")
    assert (status, body) == (200, b"east /cached")
    assert get(v, "/never-cached")[0] == 503
    assert not v.panicked()


def test_throttled_primary_refuses_calls_that_reach_it(failover):
    """A request sent to the held primary directly (not through the fallback director, as the
    retry of the example does) fails at once without invoking it: counted in held."""
    v, east, west = failover
    wait_for("both regions healthy",
             lambda: health(v) == {"primary": "healthy", "secondary": "healthy"})
    east.mode = west.mode = "throttle"
    before = east.pages, west.pages
    # The primary's 429, then the retry on the secondary: its 429 too. Both held now.
    assert get(v, "/t/1")[0] == 503
    assert (east.pages, west.pages) == (before[0] + 1, before[1] + 1)
    # No healthy region: the fallback director has none; the retry goes to the primary, held:
    # refused without invoking.
    assert get(v, "/t/2")[0] == 503
    assert (east.pages, west.pages) == (before[0] + 1, before[1] + 1)
    assert v.counters("lambda.primary.held")["lambda.primary.held"] == 1
