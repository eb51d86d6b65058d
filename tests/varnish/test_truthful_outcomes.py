"""One outcome per call, decided once (issue 20, issue 22 points 1-4), through a real varnishd.

For each way a call fails -- the answer late by a trickle, late by a stall, cut mid-body, a 429, a
function error, a connection refused -- a backend fetch and an invoke() with a fallback are made
against a local endpoint, and what the client saw is compared with the VCL_Log record and with
every counter of the object: those that must move, and those that must not. Each case has objects
of its own (f_<case> for fetches, i_<case> for invoke()), so that its counters are its alone.
"""

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.fake_lambda import Action, FakeLambda
from support.observe import counters, timed, vsl, wait_for
from support.varnish_harness import Varnishd, require_stage

TIMEOUT = 1.0
MARGIN = 0.1            # the caller's documented slack (vmod_lambda.vcc, "Timeouts")
SLACK = 1.5             # the test harness's own (a loaded, shared 2-core machine)
OK = b'{"statusCode": 200, "body": "ok"}'

CASES = ("trickle", "stall", "cut", "throttled", "funcerr", "refused")
FAIL_COUNTERS = ("function_error", "timeout", "throttled", "err_4xx", "err_5xx", "conn_fail",
                 "invalid", "too_large", "busy", "internal")


def route(name, event):
    if name == "trickle":
        # a valid answer, one byte every 20 ms: about 7 s in all
        return Action("trickle", OK + b" " * 250, delay=0.02)
    if name == "stall":
        return Action("hang", delay=3.0)
    if name == "cut":
        return Action("partial", OK * 100)
    if name == "throttled":
        return Action("status", b"Rate exceeded", 429, {"type": "TooManyRequestsException"})
    if name == "funcerr":
        return Action("payload", b'{"errorMessage": "boom", "errorType": "ValueError"}',
                      headers={"X-Amz-Function-Error": "Unhandled"})
    if name == "slow08":
        time.sleep(0.8)
        return Action("payload", b'"slow"')
    if name == "big":
        return Action("payload", json.dumps("x" * 200000).encode())
    if name == "hdrs":
        headers = {f"x-h{i}": str(i) for i in range(58)}
        return Action("payload", json.dumps({"statusCode": 200, "headers": headers,
                                             "body": "many"}).encode())
    return Action("payload", OK)


def _vcl(url, dead_url):
    objs, fetch, invoke = [], [], []
    for case in CASES:
        u = dead_url if case == "refused" else url
        for p in ("f", "i"):
            objs.append(f'    new {p}_{case} = lambda.backend("{case}", "us-east-1", "{u}", '
                        f'timeout = {TIMEOUT:g}s, pool_size = 4);')
        fetch.append(f'    if (req.url ~ "^/f/{case}/") {{ set req.backend_hint = f_{case}.backend(); '
                     f'return (pass); }}')
        invoke.append(f'    if (req.url ~ "^/i/{case}/") {{ set req.http.x-r = '
                      f'i_{case}.invoke("{{}}", fallback = "FALLBACK"); return (synth(200)); }}')
    return "\n".join([
        "vcl 4.1;", "import lambda;", "import std;", "backend be none;", "sub vcl_init {", *objs,
        f'    new q = lambda.backend("slow08", "us-east-1", "{url}", timeout = 1s, pool_size = 1);',
        f'    new big = lambda.backend("big", "us-east-1", "{url}", timeout = 5s);',
        f'    new hdrs = lambda.backend("hdrs", "us-east-1", "{url}", timeout = 5s);',
        f'    new asy = lambda.backend("ok", "us-east-1", "{url}", timeout = 5s);',
        "}", "sub vcl_recv {", *fetch, *invoke,
        '    if (req.url ~ "^/q/") { set req.http.x-r = q.invoke("{}", fallback = "FALLBACK");'
        ' return (synth(200)); }',
        '    if (req.url ~ "^/status") { set req.http.x-r = lambda.status(); return (synth(200)); }',
        '    if (req.url ~ "^/big/") { set req.http.x-r = big.invoke("{}", fallback = "FALLBACK");'
        ' return (synth(200)); }',
        '    if (req.url ~ "^/hdrs/") { set req.backend_hint = hdrs.backend(); return (pass); }',
        '    if (req.url ~ "^/async/") { set req.http.x-r = asy.invoke_async('
        'std.fileread(req.http.x-file)); return (synth(200)); }',
        "    return (synth(404));", "}",
        "sub vcl_synth { set resp.http.x-r = req.http.x-r; }",
        'sub vcl_backend_error { set beresp.http.x-fetch-failed = "1"; }', ""])


def _closed_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def env():
    require_stage()
    with FakeLambda(route) as fake, \
            Varnishd(_vcl(fake.url, f"http://127.0.0.1:{_closed_port()}"),
                     params={"workspace_client": "64k", "http_max_hdr": "64"}) as v:
        yield v, fake
        assert not v.panicked()


# What each case must show: the record's outcome word, the counter besides fail, the reason.
EXPECT = {
    # The caller's deadline (timeout + 0.1 s) usually comes first; on a loaded machine the worker's
    # own deadline (the timeout, checked between the trickle's bytes) can: then it is its message.
    "trickle": ("timeout", "timeout",
                r"timed out after 1(\.[01][0-9]{2}s \(timeout 1s\), the function did not answer"
                r"|s waiting for the function)$"),
    "stall": ("timeout", "timeout", r"timed out after 1(\.[01][0-9]{2})?s"),
    "cut": ("transport", "conn_fail", r"closed|connection|reset"),
    "throttled": ("throttled", "throttled", r"TooManyRequestsException \(HTTP 429\)"),
    "funcerr": ("function_error", "function_error", r"function error \(Unhandled\): ValueError"),
    "refused": ("transport", "conn_fail", r"cannot connect to the Lambda endpoint"),
}


def _check_counters(c, kind, cause, late_ok, case):
    assert c["req"] == 1 and c[kind] == 1, c
    for k in ("fetch", "invoke", "invoke_async", "probe"):
        if k != kind:
            assert c[k] == 0, (k, c)
    assert c["fail"] == 1, c
    for k in FAIL_COUNTERS:
        assert c[k] == (1 if k == cause else 0), (k, c)
    assert c["beresp_bodybytes"] == 0 and c["beresp_hdrbytes"] == 0, c
    assert c["inflight"] == 0 and c["queued"] == 0, c
    assert c["late"] in late_ok, c
    if case in ("trickle", "stall"):
        # the late answer's bytes are not response bytes, nor its time the call's
        assert c["payload_in"] == 0, c
        assert c["invoke_time_ms"] <= (TIMEOUT + MARGIN + SLACK) * 1000, c
    if case == "refused":
        assert c["payload_in"] == 0, c


@pytest.mark.parametrize("case", CASES)
def test_a_failed_fetch_is_counted_and_logged_as_the_client_saw_it(env, case):
    v, fake = env
    word, cause, reason = EXPECT[case]
    url = f"/f/{case}/1"
    status, headers, body, elapsed = timed(v, url)
    assert status == 503 and headers.get("x-fetch-failed") == "1", (status, body[:200])
    assert elapsed < TIMEOUT + MARGIN + SLACK, elapsed
    errors = vsl(v, url, "FetchError")
    assert errors and re.search(reason, errors[0]), errors
    assert errors[0].startswith(f"lambda: f_{case}: "), errors
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: f_{case}: fetch ")]
    assert len(records) == 1, records
    assert records[0].startswith(f"lambda: f_{case}: fetch {word} function={case} "), records
    if case in ("trickle", "stall"):
        # the late worker stops at the deadline too, and counts its dropped answer as late
        late = {0, 1}
        assert wait_for(lambda: counters(v, f"f_{case}")["late"] in late, 15), \
            counters(v, f"f_{case}")
        if counters(v, f"f_{case}")["late"] == 0:
            # the worker's read timeout fired first: its own timeout, not a late answer
            assert re.search(r"waiting for the function$", errors[0]), errors
        _check_counters(counters(v, f"f_{case}"), "fetch", cause, late, case)
    else:
        _check_counters(counters(v, f"f_{case}"), "fetch", cause, {0}, case)


@pytest.mark.parametrize("case", CASES)
def test_a_failed_invoke_is_counted_and_logged_as_the_client_saw_it(env, case):
    v, fake = env
    word, cause, reason = EXPECT[case]
    url = f"/i/{case}/1"
    status, headers, body, elapsed = timed(v, url)
    assert status == 200 and headers.get("x-r") == "FALLBACK", (status, headers)
    assert elapsed < TIMEOUT + MARGIN + SLACK, elapsed
    errors = vsl(v, url, "VCL_Error")
    assert errors and errors[0].startswith(f"lambda: i_{case}: invoke: "), errors
    assert re.search(reason, errors[0]), errors
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: i_{case}: invoke ")]
    assert len(records) == 1, records
    assert records[0].startswith(f"lambda: i_{case}: invoke {word} function={case} "), records
    late = {"trickle": {0, 1}, "stall": {0, 1}}.get(case, {0})   # as for fetches, above
    assert wait_for(lambda: counters(v, f"i_{case}")["late"] in late, 15), counters(v, f"i_{case}")
    _check_counters(counters(v, f"i_{case}"), "invoke", cause, late, case)


def test_a_call_waiting_for_a_pool_slot_shows_as_queued_and_is_never_sent_late(env):
    """Issue 22.1: pool_size 1, timeout 1 s, a function taking 0.8 s, three callers at once."""
    v, fake = env
    before = fake.invocations
    seen = {}

    def watch():
        time.sleep(0.4)
        seen["queued"] = counters(v, "q")["queued"]
        seen["status"] = timed(v, "/status/1")[1].get("x-r", "")

    t = threading.Thread(target=watch)
    t.start()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: timed(v, f"/q/{i}"), range(3)))
    t.join()
    assert seen["queued"] == 2, seen
    assert re.search(r"queued=2\b", seen["status"]), seen
    assert [r[0] for r in results] == [200] * 3
    assert max(r[3] for r in results) < TIMEOUT + MARGIN + SLACK
    answers = sorted(r[1].get("x-r") for r in results)
    assert answers == ['"slow"', "FALLBACK", "FALLBACK"], answers
    assert wait_for(lambda: counters(v, "q")["late"] == 1, 15), counters(v, "q")
    time.sleep(1.0)         # the third call would have been sent by now
    assert fake.invocations - before == 2
    c = counters(v, "q")
    assert (c["req"], c["invoke"], c["fail"], c["timeout"], c["busy"], c["late"]) == \
        (3, 3, 2, 1, 1, 1), c
    assert c["inflight"] == 0 and c["queued"] == 0, c
    words = sorted(re.match(r"lambda: q: invoke (\w+)", r).group(1)
                   for i in range(3) for r in vsl(v, f"/q/{i}", "VCL_Log"))
    assert words == ["busy", "ok", "timeout"], words


def test_an_invoke_answer_beyond_the_workspace_gives_the_fallback_and_counts_a_failure(env):
    """Issue 22.2: the fallback, a 200, and the record says so."""
    v, fake = env
    status, headers, body, _ = timed(v, "/big/1")
    assert status == 200 and headers.get("x-r") == "FALLBACK", (status, body[:200])
    errors = vsl(v, "/big/1", "VCL_Error")
    assert errors and "does not fit in the workspace" in errors[0], errors
    records = vsl(v, "/big/1", "VCL_Log")
    assert records and records[0].startswith("lambda: big: invoke payload function=big "), records
    c = counters(v, "big")
    assert (c["req"], c["invoke"], c["fail"], c["invalid"]) == (1, 1, 1, 1), c


def test_too_many_response_headers_is_a_failed_fetch_in_the_record_and_counters(env):
    """Issue 22.3: 58 headers at http_max_hdr = 64."""
    v, fake = env
    status, headers, body, _ = timed(v, "/hdrs/1")
    assert status == 503 and headers.get("x-fetch-failed") == "1", status
    assert vsl(v, "/hdrs/1", "FetchError"), "no FetchError"
    records = vsl(v, "/hdrs/1", "VCL_Log")
    assert records and records[0].startswith(
        "lambda: hdrs: fetch invalid_response function=hdrs "), records
    c = counters(v, "hdrs")
    assert (c["req"], c["fetch"], c["fail"], c["invalid"]) == (1, 1, 1, 1), c
    assert c["beresp_hdrbytes"] == 0 and c["beresp_bodybytes"] == 0, c


def test_an_async_payload_over_1mb_is_a_call_counted_and_logged(env, tmp_path):
    """Issue 22.4: in req and invoke_async, and a VCL_Log record, so that fail <= req."""
    v, fake = env
    path = os.path.join(v.dir, "big.txt")
    with open(path, "w") as f:
        f.write("x" * (1024 * 1024 + 1))
    os.chmod(path, 0o644)
    before = fake.invocations
    status, headers, _, _ = timed(v, "/async/1", headers={"x-file": path})
    assert status == 200 and headers.get("x-r") == "false", headers
    records = vsl(v, "/async/1", "VCL_Log")
    assert records and records[0].startswith(
        "lambda: asy: invoke_async payload function=ok "), records
    c = counters(v, "asy")
    assert (c["req"], c["invoke_async"], c["fail"], c["too_large"], c["payload_out"]) == \
        (1, 1, 1, 1, 0), c
    assert fake.invocations == before
