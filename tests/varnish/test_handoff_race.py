"""The hand-off of a call between its caller and a worker when the answer and the caller's deadline
come at about the same time (_handoff.pyx: the worker posts job.done, the caller waits for it on a
futex without the pool's mutex, or gives up at its deadline and abandons the job to the worker).

A local endpoint answers after a random delay spread across the object's timeout and the caller's
deadline (timeout + 0.1 s), so that every few calls the worker finishes just as its caller gives up.
Many backend fetches and invoke() calls run at once; whichever side wins each race, every client
gets an answer or its failure, each call is counted once (the counters agree with what the clients
saw), nothing stays in flight or queued, and the child neither panics nor leaks threads or fds.
"""

import random
import time
from concurrent.futures import ThreadPoolExecutor

from support.fake_lambda import Action, FakeLambda
from support.netns_faults import child_pid, usage
from support.observe import counters, wait_for
from support.varnish_harness import Varnishd, require_stage

TIMEOUT = 0.2
OK = b'{"statusCode": 200, "body": "ok"}'
CALLS = 240             # of each kind
CLIENTS = 16


def _route(name, event):
    time.sleep(random.uniform(0.12, 0.36))      # before, at and after the timeout and deadline
    return Action("payload", OK)


VCL = """vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new f = lambda.backend("edge", "us-east-1", "{url}", timeout = {t}s, pool_size = 64);
    new i = lambda.backend("edge", "us-east-1", "{url}", timeout = {t}s, pool_size = 64);
}}
sub vcl_recv {{
    if (req.url ~ "^/f/") {{ set req.backend_hint = f.backend(); return (pass); }}
    if (req.url ~ "^/i/") {{
        set req.http.x-r = i.invoke("{{}}", fallback = "FALLBACK");
        return (synth(200));
    }}
    return (synth(404));
}}
sub vcl_synth {{ set resp.http.x-r = req.http.x-r; }}
"""


def _round(v):
    """CALLS fetches and CALLS invoke() calls, CLIENTS at a time: {"f": [ok...], "i": [ok...]}."""
    def call(n):
        if n % 2:
            status, headers, body = v.request(f"/f/{n}")
            assert status in (200, 503), (status, body[:200])
            return "f", status == 200 and body == b"ok"
        status, headers, body = v.request(f"/i/{n}")
        assert status == 200, status
        r = dict((k.lower(), val) for k, val in headers).get("x-r")
        assert r in ("FALLBACK", OK.decode()), r
        return "i", r != "FALLBACK"

    with ThreadPoolExecutor(CLIENTS) as ex:
        results = list(ex.map(call, range(2 * CALLS)))
    return {k: [ok for kind, ok in results if kind == k] for k in ("f", "i")}


def _settled(v, pid):
    """The child's (fds, threads) once no call is in flight and the late answers are in."""
    assert wait_for(lambda: counters(v, "f")["inflight"] == 0 and
                    counters(v, "i")["inflight"] == 0, 10)
    time.sleep(1.0)
    return usage(pid)


def test_answers_racing_the_callers_deadline_are_counted_once_and_leave_nothing_behind():
    require_stage()
    with FakeLambda(_route) as fake, \
            Varnishd(VCL.format(url=fake.url, t=TIMEOUT)) as v:
        pid = child_pid(v)
        first = _round(v)
        fds1, threads1 = _settled(v, pid)
        second = _round(v)
        fds2, threads2 = _settled(v, pid)
        seen = {k: first[k] + second[k] for k in ("f", "i")}
        # Both sides of the race happened, or the test proves nothing about it.
        for k in ("f", "i"):
            assert 0 < sum(seen[k]) < len(seen[k]), (k, sum(seen[k]))
        for obj, kind in (("f", "fetch"), ("i", "invoke")):
            c = counters(v, obj)
            calls = seen[obj]
            assert c["req"] == len(calls) and c[kind] == len(calls), c
            assert c["fail"] == calls.count(False), (calls.count(False), c)
            assert c["timeout"] == c["fail"], c
            assert c["queued"] == 0 and c["inflight"] == 0, c
            assert c["late"] <= c["fail"], c
        assert not v.panicked()
        assert child_pid(v) == pid
        # Jobs abandoned to their workers are freed by them: a second round keeps no more fds or
        # threads than the first left (the connections kept alive are at most pool_size per object).
        assert fds2 <= fds1 + 8, (fds1, fds2)
        assert threads2 <= threads1 + 2, (threads1, threads2)
