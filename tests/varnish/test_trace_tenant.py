"""Trace propagation (trace), tenant ids (tenant_header, invoke(tenant_id)) and lambda.error()
through a real varnishd, over both transports: a local endpoint (FakeLambda) records the headers
of every Invoke request (vmod_lambda.vcc: *trace*, *tenant_header*, ``lambda.error()``)."""

import json
import subprocess

import pytest

from support.fake_lambda import Action, FakeLambda
from support.varnish_harness import Varnishd

TRANSPORTS = ("direct", "boto3")
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP_AMZN = "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"


def _ok(name, event):
    if name == "streamer":
        return Action("status", b"Rate exceeded", 429,
                      {"type": "TooManyRequestsException", "Retry-After": "3"})
    return Action("payload", json.dumps({"statusCode": 200, "body": "ok"}).encode())


VCL = """
vcl 4.1;
import lambda;
import std;
backend none none;

sub vcl_init {
    new app = lambda.backend("app", "us-east-1", "%(url)s", transport = "%(transport)s",
                             timeout = 5s);
    new untraced = lambda.backend("untraced", "us-east-1", "%(url)s",
                                  transport = "%(transport)s", trace = false);
    new tenant = lambda.backend("tenant", "us-east-1", "%(url)s", transport = "%(transport)s",
                                tenant_header = "X-Tenant");
    new streamer = lambda.backend("streamer", "us-east-1", "%(url)s",
                                  transport = "%(transport)s", streaming = true,
                                  tenant_header = "X-Tenant",
                                  throttle_hold = 0s);  # (its next call after the 429 is sent)
}

sub vcl_recv {
    if (req.url ~ "^/invoke" || req.url == "/status") {
        return (synth(200));
    }
    if (req.url ~ "^/untraced") {
        set req.backend_hint = untraced.backend();
    } elsif (req.url ~ "^/tenant") {
        set req.backend_hint = tenant.backend();
    } elsif (req.url ~ "^/stream") {
        set req.backend_hint = streamer.backend();
    } else {
        set req.backend_hint = app.backend();
    }
    return (pass);
}

sub vcl_backend_response {
    set beresp.http.cause = "[" + lambda.error() + "]";
}

sub vcl_backend_error {
    set beresp.http.cause = lambda.error();
    set beresp.http.retry = lambda.retry_after();
}

sub vcl_synth {
    if (req.url == "/status") {
        set resp.http.status = lambda.status();
        return (deliver);
    }
    if (req.url == "/invoke/tenant") {
        set resp.http.r = app.invoke("x", fallback = "fb", tenant_id = req.http.X-Tenant);
    } else {
        set resp.http.r = app.invoke("x", fallback = "fb");
    }
    set resp.http.cause = "[" + lambda.error() + "]";
}
"""


@pytest.fixture(scope="module", params=TRANSPORTS)
def env(request):
    fake = FakeLambda(_ok)
    fake.keep_events = True
    try:
        with Varnishd(VCL % {"url": fake.url, "transport": request.param}) as v:
            yield v, fake
    finally:
        fake.stop()


def _headers_of_call(fake, v, path, headers=None):
    """(status, response headers, the Invoke request's headers (lower-case names) or None when
    nothing was sent)."""
    before = len(fake.events)
    status, rh, _ = v.request(path, headers=headers or {})
    sent = fake.events[before:]
    assert len(sent) <= 1
    return status, dict(rh), ({k.lower(): val for k, val in sent[0][1].items()} if sent else None)


def _vsl(v, tag, query=None):
    args = ["varnishlog", "-n", v.workdir, "-d", "-g", "raw", "-i", tag]
    if query:
        args += ["-q", query]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return r.stdout


def test_traceparent_becomes_x_amzn_trace_id(env):
    v, fake = env
    status, rh, sent = _headers_of_call(fake, v, "/tp", {"traceparent": TP})
    assert status == 200
    assert sent["x-amzn-trace-id"] == TP_AMZN
    # The invocation's record carries it.
    assert f"trace={TP_AMZN}" in _vsl(v, "VCL_Log", 'VCL_Log ~ "fetch ok"')


def test_own_x_amzn_trace_id_is_sent_unchanged(env):
    v, fake = env
    own = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    _, _, sent = _headers_of_call(fake, v, "/own", {"X-Amzn-Trace-Id": own, "traceparent": TP})
    assert sent["x-amzn-trace-id"] == own


def test_no_trace_headers_no_trace_id(env):
    v, fake = env
    _, _, sent = _headers_of_call(fake, v, "/none")
    assert "x-amzn-trace-id" not in sent


def test_trace_false_sends_none(env):
    v, fake = env
    _, _, sent = _headers_of_call(fake, v, "/untraced", {"traceparent": TP})
    assert "x-amzn-trace-id" not in sent


def test_malformed_traceparent_is_never_sent_and_logged_once(env):
    v, fake = env
    for bad in ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "zz-" + "0" * 52,
                "00-" + "0" * 32 + "-b7ad6b7169203331-01"):
        status, _, sent = _headers_of_call(fake, v, "/bad", {"traceparent": bad})
        assert status == 200
        assert "x-amzn-trace-id" not in sent
    log = _vsl(v, "Error", 'Error ~ "traceparent"')
    assert log.count("lambda: app: trace: malformed traceparent") == 1, log


def test_invoke_takes_the_trace_of_its_request(env):
    v, fake = env
    _, rh, sent = _headers_of_call(fake, v, "/invoke", {"traceparent": TP})
    assert rh["r"] == '{"statusCode": 200, "body": "ok"}'
    assert sent["x-amzn-trace-id"] == TP_AMZN
    assert "x-amz-tenant-id" not in sent


def test_tenant_header_is_sent(env):
    v, fake = env
    status, rh, sent = _headers_of_call(fake, v, "/tenant", {"X-Tenant": "acme:eu-1"})
    assert status == 200
    assert sent["x-amz-tenant-id"] == "acme:eu-1"
    assert rh["cause"] == "[]"


def test_a_fetch_without_its_tenant_header_fails_invalid_unsent(env):
    v, fake = env
    before = v.counters("lambda.tenant.invalid").get("lambda.tenant.invalid", 0)
    status, rh, sent = _headers_of_call(fake, v, "/tenant")
    assert status == 503 and sent is None
    assert rh["cause"] == "invalid"
    assert v.counters("lambda.tenant.invalid")["lambda.tenant.invalid"] == before + 1
    assert "lambda: tenant: the request has no x-tenant header (tenant_header)" in \
        _vsl(v, "FetchError")


@pytest.mark.parametrize("value", ["a" * 257, "acme;drop", "t\u00e9"])
def test_an_invalid_tenant_id_is_refused_unsent(env, value):
    v, fake = env
    status, rh, sent = _headers_of_call(fake, v, "/tenant",
                                        {"X-Tenant": value.encode().decode("latin-1")})
    assert status == 503 and sent is None
    assert rh["cause"] == "invalid"


def test_invoke_tenant_id(env):
    v, fake = env
    _, rh, sent = _headers_of_call(fake, v, "/invoke/tenant", {"X-Tenant": "acme"})
    assert sent["x-amz-tenant-id"] == "acme" and rh["cause"] == "[]"
    _, rh, sent = _headers_of_call(fake, v, "/invoke/tenant", {"X-Tenant": "ac\"me"})
    assert sent is None
    assert rh["r"] == "fb" and rh["cause"] == "[invalid]"
    assert "the tenant id has a character Lambda does not accept" in _vsl(v, "VCL_Error")


def test_status_shows_the_settings(env):
    v, fake = env
    _, rh, _ = v.request("/status")
    # the settings come before the credential sets (credentials=, the line's last part)
    assert dict(rh)["status"].endswith(
        " trace=off:untraced tenant_header=streamer:x-tenant,tenant:x-tenant credentials=chain")


def test_streamed_fetch_sends_both_and_says_why_it_failed(env):
    v, fake = env
    status, rh, sent = _headers_of_call(fake, v, "/stream", {"X-Tenant": "acme",
                                                             "traceparent": TP})
    assert sent["x-amz-tenant-id"] == "acme"
    assert sent["x-amzn-trace-id"] == TP_AMZN
    assert status == 503
    assert rh["cause"] == "throttled" and rh["retry"] == "3.000"
    status, rh, sent = _headers_of_call(fake, v, "/stream")
    assert status == 503 and sent is None and rh["cause"] == "invalid"


def test_tenant_id_is_signed_trace_id_is_not(env):
    """As botocore does (its model's TenantId is a signed header; auth.py leaves X-Amzn-Trace-Id
    out of the signature, so the X-Ray daemon or a proxy may rewrite it)."""
    v, fake = env
    _, _, sent = _headers_of_call(fake, v, "/tenant", {"X-Tenant": "acme", "traceparent": TP})
    signed = sent["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-amz-tenant-id" in signed
    assert "x-amzn-trace-id" not in signed and sent["x-amzn-trace-id"] == TP_AMZN
