"""lambda.error() names each cause of a failed call (issue 18 item 4), through a real varnishd, over
both transports: the causes vtc/lambda_b00040.vtc (throttled, function_error, timeout, err_5xx) and
tests/varnish/test_trace_tenant.py (invalid) do not cover: err_4xx, conn_fail, too_large, busy,
sts_fail and an invalid answer (a fetch's; invoke() returns a payload as it is). For a backend fetch (in vcl_backend_error) and for invoke() with a
fallback (after the call), each against the counter that the failure moved, so the cause VCL sees
is the one the counters record; and "" after a call that succeeded."""

import json
import threading
import time

import pytest

from support.fake_lambda import Action, FakeLambda
from support.hung_endpoints import closed_port
from support.observe import counters
from support.varnish_harness import Varnishd, require_stage
from vmod_lambda.config import TRANSPORTS

SLOW = 2.0          # the busy object's function holds its one slot this long
OK = json.dumps({"statusCode": 200, "body": "ok"}).encode()
# An answer beyond Lambda's 6 MB cap for synchronous responses (limits.MAX_RESPONSE_BODY).
HUGE = b'{"statusCode":200,"body":"' + b"a" * (7 << 20) + b'"}'


def route(name, event):
    if name == "notfound":
        return Action("status", status=404,
                      headers={"x-amzn-ErrorType": "ResourceNotFoundException"},
                      payload=b'{"Type":"User","message":"Function not found"}')
    if name == "huge":
        return Action("payload", HUGE)
    if name == "garbled":
        return Action("payload", b"this is not a Lambda answer")
    if name == "slow":
        return Action("payload", OK, delay=SLOW)
    return Action("payload", OK)


# object -> (function, the cause lambda.error() says, the counter it moved)
CASES = {
    "notfound": ("notfound", "err_4xx", "err_4xx"),
    "refused": ("fn", "conn_fail", "conn_fail"),
    "huge": ("huge", "too_large", "too_large"),
    "garbled": ("garbled", "invalid", "invalid"),
    "norole": ("fn", "sts_fail", "sts_fail"),
}


def vcl(url, transport):
    dead = f"http://127.0.0.1:{closed_port()}"
    objs = {
        "fine": f'"fn", "us-east-1", "{url}"',
        "notfound": f'"notfound", "us-east-1", "{url}"',
        "refused": f'"fn", "us-east-1", "{dead}"',
        "huge": f'"huge", "us-east-1", "{url}"',
        "garbled": f'"garbled", "us-east-1", "{url}"',
        "norole": f'"fn", "us-east-1", "{url}", role_arn = "arn:aws:iam::123456789012:role/edge", '
                  f'sts_endpoint_url = "{dead}"',
        "busy": f'"slow", "us-east-1", "{url}", pool_size = 1, max_queue_wait = 0s',
    }
    init = "\n".join(f'    new {name} = lambda.backend({args}, transport = "{transport}", '
                     f'timeout = 5s);' for name, args in objs.items())
    backends = "\n".join(f'    if (req.url ~ "^/f/{name}/") {{ set req.backend_hint = '
                         f'{name}.backend(); return (pass); }}' for name in objs)
    invokes = "\n".join(f'    if (req.url ~ "^/i/{name}/") {{ set resp.http.r = '
                        f'{name}.invoke("x", fallback = "FB"); }}' for name in objs)
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
{init}
}}
sub vcl_recv {{
    if (req.url ~ "^/i/") {{ return (synth(200)); }}
{backends}
    return (synth(404));
}}
sub vcl_backend_response {{
    set beresp.http.cause = "[" + lambda.error() + "]";
}}
sub vcl_backend_error {{
    set beresp.http.cause = "[" + lambda.error() + "]";
}}
sub vcl_synth {{
{invokes}
    set resp.http.cause = "[" + lambda.error() + "]";
    return (deliver);
}}
"""


@pytest.fixture(scope="module", params=TRANSPORTS)
def env(request):
    require_stage()
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url, request.param)) as v:
        yield v
        assert not v.panicked()


def cause(v, path):
    status, headers, _ = v.request(path)
    return status, dict((k.lower(), val) for k, val in headers)


@pytest.mark.parametrize("obj", sorted(CASES))
def test_a_failed_fetch_says_its_cause(env, obj):
    v = env
    _, want, counter = CASES[obj]
    before = counters(v, obj)
    status, h = cause(v, f"/f/{obj}/a")
    assert status == 503
    assert h["cause"] == f"[{want}]"
    after = counters(v, obj)
    assert after[counter] == before[counter] + 1
    assert after["fail"] == before["fail"] + 1


# invoke() returns the function's payload as it is (no mapping): a garbled one is its answer.
@pytest.mark.parametrize("obj", sorted(set(CASES) - {"garbled"}))
def test_an_invoke_that_fell_back_says_its_cause(env, obj):
    v = env
    _, want, counter = CASES[obj]
    before = counters(v, obj)
    status, h = cause(v, f"/i/{obj}/a")
    assert status == 200 and h["r"] == "FB"
    assert h["cause"] == f"[{want}]"
    after = counters(v, obj)
    assert after[counter] == before[counter] + 1


def test_success_says_nothing(env):
    v = env
    status, h = cause(v, "/f/fine/a")
    assert status == 200 and h["cause"] == "[]"
    status, h = cause(v, "/i/fine/a")
    assert status == 200 and h["r"] == OK.decode() and h["cause"] == "[]"
    status, h = cause(v, "/i/garbled/a")
    assert status == 200 and h["r"] == "this is not a Lambda answer" and h["cause"] == "[]"


def test_busy(env):
    """pool_size = 1, max_queue_wait = 0s: while one call holds the slot, the next is busy."""
    v = env
    before = counters(v, "busy")
    first = {}
    t = threading.Thread(target=lambda: first.update(r=cause(v, "/f/busy/first")))
    t.start()
    try:
        deadline = time.monotonic() + SLOW
        while counters(v, "busy")["inflight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counters(v, "busy")["inflight"] == 1
        status, h = cause(v, "/f/busy/second")
        assert status == 503 and h["cause"] == "[busy]"
        status, h = cause(v, "/i/busy/third")
        assert status == 200 and h["r"] == "FB" and h["cause"] == "[busy]"
    finally:
        t.join()
    assert first["r"][0] == 200 and first["r"][1]["cause"] == "[]"
    after = counters(v, "busy")
    assert after["busy"] == before["busy"] + 2
