"""Large Python allocations in the varnishd child are given back to the OS (the loader's bigalloc hook).

A Lambda fetch of a 5 MB body makes about six transient 5 MB buffers in the child (the received
response, its bytes, the parsed JSON str, the re-encoded body, the copy the VFP streams from).
Python allocates them with malloc, which in Debian's varnishd is jemalloc: freed, they stay in
jemalloc's arenas as dirty pages (decay 10 s, purged only on later allocator activity in the same
arena), so the child's RSS grew by hundreds of MB per run of such fetches and never came back. The
python loader sends Python's large raw allocations to a private jemalloc arena that purges at once
(vmod_lambda.vcc, PITFALLS, "Large responses and memory"). VMOD_LAMBDA_BIGALLOC=0 in the
environment turns that off, and then this test fails; VMOD_LAMBDA_BIGALLOC_CONTROL=1 adds a run
with the hook off that must exceed the bound (that the bound still tells the two apart).

Both transports: with boto3 the response is read, parsed and mapped by Python only; the direct
transport reads it in C (_netio.pyx), into a buffer from PyMem_RawMalloc, which the hook covers as
well, like the body copy the VFP streams from (_director.pyx).
"""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.fake_lambda import Action, FakeLambda
from support.varnish_harness import Varnishd, require_stage

BODY_MB = 5
CLIENTS = 8
FETCHES = 32                 # 8 clients, 4 fetches of 5 MB each
# The child's RSS after the fetches minus before them (after a warm-up fetch), measured on the
# shared 2-core VM: see RELIABILITY.md. With the hook at most +88 MB, most of it Varnish's own
# Transient storage of the pass bodies (a native backend alone: about +60 MB) and the body copy
# _director.pyx takes from plain malloc; without the hook at least +147 MB.
MAX_GROWTH_MB = 115

BODY = "0123456789abcdef" * (BODY_MB * 65536)
PAYLOAD = json.dumps({"statusCode": 200, "headers": {"Content-Type": "text/plain"},
                      "body": BODY}).encode()


def vcl(url, transport):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new big = lambda.backend("big", "us-east-1", "{url}", timeout = 60s, pool_size = 16,
                             transport = "{transport}");
}}
sub vcl_recv {{
    if (req.url == "/selftest") {{
        return (synth(200));
    }}
    set req.backend_hint = big.backend();
    return (pass);
}}
sub vcl_synth {{
    set resp.http.selftest = lambda.selftest();
}}
"""


@pytest.fixture(scope="module")
def endpoint():
    require_stage()
    with FakeLambda(lambda name, event: Action("payload", PAYLOAD)) as fl:
        yield fl


def child_pid(v):
    out = subprocess.run(["pgrep", "-P", str(v.proc.pid)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    assert pids, "no varnishd child"
    return pids[0]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cpu_faults(pid):
    """(utime + stime in s, minor page faults) of the whole process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def fetch(v, i):
    status, _, body = v.request(f"/big/{i}")
    return status, len(body)


def run(endpoint, bigalloc, transport="boto3"):
    env = {} if bigalloc is None else {"VMOD_LAMBDA_BIGALLOC": bigalloc}
    with Varnishd(vcl(endpoint.url, transport), env=env) as v:
        status, headers, _ = v.request("/selftest")
        report = dict(headers).get("selftest", "")
        assert status == 200 and report.startswith("ok "), report
        assert fetch(v, 0) == (200, len(BODY))          # warm-up: the worker pool, botocore
        child = child_pid(v)
        before = rss_mb(child)
        cpu0, flt0 = cpu_faults(child)
        t0 = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda i: fetch(v, i), range(1, FETCHES + 1)))
        elapsed = time.monotonic() - t0
        cpu, flt = cpu_faults(child)
        cpu, flt = cpu - cpu0, flt - flt0
        assert results == [(200, len(BODY))] * FETCHES
        time.sleep(0.5)
        after = rss_mb(child)
        assert not v.panicked()
        state = next((w for w in report.split() if w.startswith("bigalloc=")), "bigalloc=?")
        print(f"\n{transport}, VMOD_LAMBDA_BIGALLOC={bigalloc}: {state}; {FETCHES} fetches of "
              f"{BODY_MB} MB in {elapsed:.1f}s, child CPU {cpu * 1000 / FETCHES:.0f} ms and "
              f"{flt // FETCHES} page faults each; child RSS {before:.0f} -> {after:.0f} MB "
              f"({after - before:+.0f} MB)")
        return report, after - before


@pytest.mark.parametrize("transport", ["boto3", "direct"])
def test_large_allocations_are_returned_to_the_os(endpoint, transport):
    report, growth = run(endpoint, None, transport)
    assert growth < MAX_GROWTH_MB, \
        f"the child's RSS grew by {growth:.0f} MB over {FETCHES} fetches of {BODY_MB} MB ({report})"
    assert "bigalloc=jemalloc-arena:" in report, report


@pytest.mark.skipif(os.environ.get("VMOD_LAMBDA_BIGALLOC_CONTROL") != "1",
                    reason="the control run without the hook: VMOD_LAMBDA_BIGALLOC_CONTROL=1")
def test_control_without_the_hook_grows(endpoint):
    """The same fetches with the hook off: the growth the bound above is there to catch. (With
    the direct transport the multiplexed workers leave less behind in a run this short: about
    +85 MB without the hook, +55 MB with it, too close to tell apart on this machine.)"""
    report, growth = run(endpoint, "0", "boto3")
    assert "bigalloc=off" in report, report
    assert growth >= MAX_GROWTH_MB, f"without the hook the child's RSS grew by {growth:.0f} MB only"
