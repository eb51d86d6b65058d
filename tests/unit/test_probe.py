"""Probe bookkeeping (vmod_lambda.probe) against Varnish's own rules, and a Prober over real HTTP."""

import threading

import pytest

from support.fake_lambda import Action, scripted
from support.invokers import make_invoker as invoker
from vmod_lambda.probe import ProbeSpec, ProbeState, Prober


def test_defaults_are_varnishs():
    s = ProbeSpec().with_defaults()
    assert (s.timeout, s.interval, s.window, s.threshold, s.exp_status, s.initial) == \
        (2.0, 5.0, 8, 3, 200, 2)
    assert ProbeSpec(threshold=2, initial=5).with_defaults().initial == 2


def test_window_threshold_and_messages():
    st = ProbeState(ProbeSpec(window=3, threshold=2, initial=0).with_defaults())
    seq = []
    for happy in (True, True, False, False, False, True, True):
        st.record(True, True, happy, 0.01, "HTTP/1.1 200 OK")
        seq.append((st.update()[1], st.good))
    assert seq == [
        ("Went sick", 1), ("Went healthy", 2), ("Still healthy", 2), ("Went sick", 1),
        ("Still sick", 0), ("Still sick", 1), ("Went healthy", 2)]


def test_initial_counts_as_good_pokes():
    st = ProbeState(ProbeSpec(window=8, threshold=3, initial=3).with_defaults())
    assert st.good == 3 and st.update() == (False, "Still healthy")


def test_bits_log_line_and_details():
    st = ProbeState(ProbeSpec(window=3, threshold=1, initial=0).with_defaults())
    st.record(True, True, True, 0.5, 'HTTP/1.1 200 "OK"')
    went, msg = st.update()
    assert st.bit_string() == "----X-RH"
    assert st.log_line("app", msg) == \
        "app Still healthy ----X-RH 1 1 3 0.500000 0.500000 \"HTTP/1.1 200 'OK'\""
    st.record(False, False, False, 0, "cannot connect")
    assert st.bit_string() == "---x----"
    assert '"bits_H": 2,' in st.details(json=True)
    assert "Current states  good:  1 threshold:  1 window:  3" in st.details(json=False)


def _fields(r):
    return r.method, r.url, r.proto, r.headers, r.body


def test_probe_request_records():
    assert _fields(ProbeSpec(url="/hz").request_record()) == ("GET", "/hz", "HTTP/1.1", [], b"")
    # (Connection: the header policy keeps hop-by-hop headers out of the record, headers.py)
    assert _fields(ProbeSpec(request="HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n")
                   .request_record()) == ("HEAD", "/x", "HTTP/1.1", [("Host", "a")], b"")


def test_prober_pokes_the_function_and_reports():
    api = scripted()
    try:
        api.script += [Action("payload", b'{"statusCode":200}'), Action("payload", b'{"statusCode":503}')]
        reports = []
        p = Prober("app", invoker(api.url), ProbeSpec(url="/hz", window=2, threshold=1, initial=0),
                   lambda healthy, went, line: reports.append((healthy, went, line)))
        p.poke_once()
        p.poke_once()
        assert [r[:2] for r in reports] == [(False, True), (True, True), (True, False)]
        assert reports[1][2].startswith("app Went healthy ----X-RH 1 1 2 ")
        assert reports[2][2].endswith('"HTTP/1.1 503 Service Unavailable"')
        assert b'"path":"/hz"' in api.requests[0][2]
    finally:
        api.stop()


class Slots:
    """The director's slot of the object's pool, as the Prober sees it: records the calls."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def acquire(self, timeout):
        self.calls.append(("acquire", timeout))
        return self.answer

    def release(self):
        self.calls.append(("release",))


def test_each_poke_takes_and_gives_back_a_slot_of_the_pool():
    api = scripted()
    try:
        api.script += [Action("payload", b'{"statusCode":200}')]
        slots = Slots("ok")
        reports = []
        p = Prober("app", invoker(api.url), ProbeSpec(url="/hz", timeout=1.5, threshold=1, initial=0),
                   lambda healthy, went, line: reports.append(healthy), slot=slots)
        p.poke_once()
        assert slots.calls == [("acquire", 1.5), ("release",)]
        assert reports[-1] is True and len(api.requests) == 1
    finally:
        api.stop()


def test_a_poke_without_a_free_slot_fails_without_invoking():
    api = scripted()
    try:
        slots = Slots("busy")
        seen = []
        p = Prober("app", invoker(api.url), ProbeSpec(url="/hz", timeout=0.5, threshold=1, initial=1),
                   lambda healthy, went, line: seen.append(line),
                   observe=lambda good, err, rec: seen.append((good, err.kind, rec)), slot=slots)
        p.poke_once()
        assert slots.calls == [("acquire", 0.5)]          # nothing taken, nothing to give back
        assert api.requests == []
        assert seen[-2] == (False, "busy", None)
        assert seen[-1].startswith("app Still healthy ---x---- 1 1 8 ")    # not sent: x
        assert "waiting for one of the invocations in flight (pool_size)" in seen[-1]
    finally:
        api.stop()
