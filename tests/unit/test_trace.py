"""The X-Amzn-Trace-Id an invocation sends and the tenant ids it accepts (vmod_lambda/trace.py),
without varnishd; tests/varnish/test_trace_tenant.py sends them through varnishd."""

import pytest

from vmod_lambda.trace import tenant_problem, trace_header

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("amzn,tp,want", [
    (None, TP, "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"),
    (None, TP[:-2] + "00",
     "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=0"),
    (None, TP[:-2] + "03",
     "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", TP,
     "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
    (None, None, None),
])
def test_trace_header(amzn, tp, want):
    assert trace_header(amzn, tp) == (want, None)


@pytest.mark.parametrize("tp", [
    "", "00", TP[:-1], TP + "0", TP.upper(), "01" + TP[2:], TP.replace("-", "_"),
    "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16
    + "-01", "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", TP + "\r\nX: y",
])
def test_malformed_traceparent_is_never_sent(tp):
    value, problem = trace_header(None, tp)
    assert value is None and "malformed traceparent" in problem
    assert "\r" not in problem and "\n" not in problem


@pytest.mark.parametrize("amzn", ["", "a b", "x\x01", "x" * 1025, "Root=1-\u00e9"])
def test_unsafe_x_amzn_trace_id_is_never_sent(amzn):
    value, problem = trace_header(amzn, TP)
    assert value is None and problem


@pytest.mark.parametrize("value,ok", [
    ("acme", True), ("a" * 256, True), ("a.b_c:d/e=f+g-h@i j", True), ("", False),
    ("a" * 257, False), ("a;b", False), ("a\nb", False), ("t\u00e9", False), ('"x"', False),
])
def test_tenant_ids(value, ok):
    assert (tenant_problem(value) is None) is ok
