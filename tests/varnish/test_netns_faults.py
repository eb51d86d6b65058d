"""Every fetch and invoke() ends within its deadline whatever the network does, and vcl.discard never
blocks the CLI (issue 17): varnishd with the staged build in a network namespace of the test's own,
faults applied to the endpoint's traffic there (tests/support/netns_faults.py says how).

Needs root, iproute2 (`ip netns`) and nftables; skipped, saying which is missing, where they are not.
About a minute.
"""

import os

import pytest

from support import netns_faults
from support.varnish_harness import require_stage


@pytest.fixture(scope="module")
def report():
    require_stage()
    why = netns_faults.netns_unavailable()
    if why:
        pytest.skip(f"network fault test: {why}")
    r = netns_faults.run_in_netns()
    print(netns_faults.markdown(r))
    out = os.environ.get("NETNS_FAULTS_REPORT")
    if out:         # e.g. RELIABILITY.md, to commit the figures of this run
        netns_faults.write_section(out, netns_faults.markdown(r))
    return r


def one(report, fault, transport):
    (f,) = [x for x in report["faults"] if x["fault"] == fault and x["transport"] == transport]
    assert f["sent"] == 2 * report["n"], f
    return f


@pytest.mark.parametrize("fault", netns_faults.FAULTS)
@pytest.mark.parametrize("transport", netns_faults.TRANSPORTS)
def test_every_call_ends_within_its_deadline_under_a_network_fault(report, fault, transport):
    f = one(report, fault, transport)
    # Every client had an answer (a 200, a 503 or the fallback) within timeout + 100 ms + slack.
    assert f["no_answer"] == 0, f
    assert f["within"] == f["sent"], f


@pytest.mark.parametrize("fault", netns_faults.FAULTS)
@pytest.mark.parametrize("transport", netns_faults.TRANSPORTS)
def test_a_healed_endpoint_finds_nothing_left_behind(report, fault, transport):
    f = one(report, fault, transport)
    # The child's descriptors and threads (outside the worker pool, whose size follows the work)
    # once the endpoint is healed and a healthy batch went through, against the baseline.
    assert f["leaked_fds"] <= 0, f
    assert f["leaked_threads"] <= 0, f


def test_the_faults_were_real(report):
    # A fault that failed nothing would prove nothing: the blackhole, the trickle and the resets fail
    # every call; the healthy baseline answers them all (the batches after healing).
    by = {(x["fault"], x["transport"]): x for x in report["faults"]}
    for t in netns_faults.TRANSPORTS:
        for fault in ("blackhole", "trickle", "reset"):
            assert by[fault, t]["answered_ok"] == 0, by[fault, t]
        # Delays of 0.2 to 2 s: some answers come in time, some after the timeout.
        assert by["delay", t]["answered_ok"] > 0 and by["delay", t]["failed_or_fallback"] > 0


def test_no_panic_and_one_child_through_all_faults(report):
    assert report["panics"] == 0
    assert report["child_start"] == 1 and report["child_died"] == 0
    assert report["same_child"]


def test_vcl_discard_of_objects_with_stuck_calls_does_not_block_the_cli(report):
    d = report["discard"]
    assert "stuck" not in d["vcl_list"], d
    # The CLI answers at once (it joined workers for up to 2 s per object, and probe threads for
    # 0.5 s each, before), and the child still answers its manager.
    assert d["cli_s"] < 1.0, d
    assert d["longest_ping_s"] < 1.0, d
    # The workers of the stuck calls ended on their own once the calls' deadlines passed.
    assert d["threads_leaked"] <= 0, d


class _Hang:
    """discard_phase's faults where there is no namespace: the endpoint (on 127.0.0.1) takes the
    calls and never answers them within their timeout, as a blackhole would."""

    def __init__(self):
        self.mode = "healthy"

    def apply(self, fault):
        self.mode = "hang"

    def heal(self):
        self.mode = "healthy"


def test_vcl_discard_does_not_wait_for_stuck_calls_without_a_namespace():
    # The same check as above on the host's loopback, so that it runs where `ip netns` does not.
    from support.fake_lambda import Action, FakeLambda
    from support.varnish_harness import Varnishd

    faults = _Hang()

    def route(name, event):
        if faults.mode == "hang":
            return Action("hang", delay=netns_faults.DISCARD_TIMEOUT + 1)
        return Action("payload", b'{"statusCode":200,"body":"ok"}', headers={"Connection": "close"})

    with FakeLambda(route) as fake, Varnishd(netns_faults.main_vcl(fake.url)) as v:
        pid = netns_faults.child_pid(v)
        d = netns_faults.discard_phase(v, fake.url, faults, pid)
        assert d["threads_stuck"] >= d["threads_before"] + d["objects"] // 2, d
        assert d["cli_s"] < 1.0, d
        assert d["longest_ping_s"] < 1.0, d
        assert "stuck" not in d["vcl_list"], d
        assert d["threads_leaked"] <= 0, d
        assert not v.panicked()
