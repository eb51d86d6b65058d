"""vmod_lambda.invoker against real HTTP endpoints: moto's server and the scripted fake Lambda API
(the `api` fixture of tests/conftest.py)."""

import json
import socket
import time

import pytest
import requests

from support.fake_lambda import Action
from support.invokers import make_invoker
from vmod_lambda.config import TRANSPORTS
from vmod_lambda.invoker import MAX_PAYLOAD, InvokeError, clean_reason


_transport = TRANSPORTS[0]


@pytest.fixture(autouse=True, params=TRANSPORTS)
def transport(request):
    """Every test of this module runs against every transport: they must behave the same."""
    global _transport
    _transport = request.param
    yield request.param


def invoker(url, **kw):
    kw.setdefault("transport", _transport)
    return make_invoker(url, **kw)


def test_request_is_a_signed_requestresponse_invocation(api):
    api.script.append(Action("payload", b'{"a":1}'))
    res = invoker(api.url).invoke(b'{"q":"x"}')
    assert res.payload == b'{"a":1}'
    assert res.request_id == "req-1"
    path, headers, body = api.requests[0]
    assert path == "/2015-03-31/functions/my-fn/invocations"
    assert headers["X-Amz-Invocation-Type"] == "RequestResponse"
    assert headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDVMODLAMBDATEST/")
    assert "/us-east-1/lambda/aws4_request" in headers["Authorization"]
    # The Content-Type of the AWS SDKs' Invoke requests, signed like the other headers.
    assert headers["Content-Type"] == "application/octet-stream"
    assert "content-type;" in headers["Authorization"].split("SignedHeaders=")[1]
    assert body == b'{"q":"x"}'


def test_arn_with_qualifier_is_sent_quoted_in_the_path_with_the_qualifier_as_parameter(api):
    inv = invoker(api.url, function_name="arn:aws:lambda:us-east-1:123456789012:function:f:live")
    inv.invoke(b"{}")
    inv.invoke(b"{}", qualifier="7")
    assert [r[0] for r in api.requests] == [
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af"
        "/invocations?Qualifier=" + q for q in ("live", "7")]


def test_function_error_carries_type_message_and_request_id(api):
    api.script.append(Action("payload", b'{"errorType":"ValueError","errorMessage":"boom"}',
                             headers={"X-Amz-Function-Error": "Unhandled"}))
    with pytest.raises(InvokeError) as e:
        invoker(api.url).invoke(b"{}")
    assert e.value.kind == "function_error"
    assert str(e.value) == "function error (Unhandled): ValueError: boom (RequestId: req-1)"


@pytest.mark.parametrize("status, code, kind", [
    (429, "TooManyRequestsException", "throttled"),
    (500, "ServiceException", "service"),
    (404, "ResourceNotFoundException", "service"),
    (413, "RequestTooLargeException", "service"),
])
def test_service_errors(api, status, code, kind):
    api.script.append(Action("payload", b'{"message":"said the service"}', status,
                             {"x-amzn-ErrorType": code}))
    with pytest.raises(InvokeError) as e:
        invoker(api.url).invoke(b"{}")
    assert e.value.kind == kind
    assert e.value.status == status
    assert str(e.value) == f"{code} (HTTP {status}): said the service (RequestId: req-1)"
    assert len(api.requests) == 1       # never retried


def test_read_timeout_is_not_retried(api):
    api.script.append(Action("payload", b"late", delay=1.0))
    inv = invoker(api.url, timeout=0.3)
    with pytest.raises(InvokeError) as e:
        inv.invoke(b"{}")
    assert e.value.kind == "timeout"
    assert str(e.value) == "timed out after 0.3s waiting for the function"
    time.sleep(1.0)
    assert len(api.requests) == 1


def test_connection_dropped_after_sending_is_not_retried(api):
    api.script.append(Action("close"))
    with pytest.raises(InvokeError) as e:
        invoker(api.url).invoke(b"{}")
    assert e.value.kind == "transport"
    assert len(api.requests) == 1


def test_idle_connection_closed_by_the_endpoint_is_not_reused(api):
    inv = invoker(api.url)
    for i in range(3):
        api.script.append(Action("payload", str(i).encode(), headers={"Connection": "close"}))
        assert inv.invoke(b"{}").payload == str(i).encode()
        time.sleep(0.05)
    assert api.connections == 3


def test_keepalive_connection_is_reused(api):
    inv = invoker(api.url)
    for i in range(3):
        api.script.append(Action("payload", b"x"))
        inv.invoke(b"{}")
    assert api.connections == 1


def test_connection_refused_is_a_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InvokeError) as e:
        invoker(f"http://127.0.0.1:{port}", timeout=2).invoke(b"{}")
    assert e.value.kind == "transport"
    assert str(e.value) == f"cannot connect to the Lambda endpoint http://127.0.0.1:{port}"


def test_oversized_payload_is_refused_before_sending(api):
    with pytest.raises(InvokeError) as e:
        invoker(api.url).invoke(b"x" * (MAX_PAYLOAD + 1))
    assert e.value.kind == "payload"
    assert api.requests == []


def test_missing_credentials_are_reported_without_network(monkeypatch):
    """Real AWS (no endpoint_url) and an empty credential chain: every call fails before anything
    is sent (the signature comes first)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    def no_lookup(*args, **kwargs):     # nothing may leave the machine: a lookup fails the test
        raise AssertionError(f"name lookup of {args[:2]}")
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    inv = invoker(None)
    assert not inv.anonymous and inv.credentials is None
    with pytest.raises(InvokeError) as e:
        inv.invoke(b"{}")
    assert e.value.kind == "credentials"
    assert str(e.value).startswith("no AWS credentials found")


def test_no_credentials_with_an_endpoint_url_signs_with_empty_keys(monkeypatch, api):
    """An endpoint_url and an empty credential chain (a local endpoint): invoked anyway, signed
    with empty credentials, as movableink's vmod-lambda does."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    api.script.append(Action("payload", b'"hi"'))
    inv = invoker(api.url)
    assert inv.anonymous
    assert inv.invoke(b"{}").payload == b'"hi"'
    path, headers, body = api.requests[0]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=/")
    assert "/us-east-1/lambda/aws4_request, SignedHeaders=" in headers["Authorization"]
    assert "X-Amz-Security-Token" not in headers


def test_reasons_are_one_printable_bounded_line():
    assert clean_reason("a\r\nb\x00c\td") == "a b c d"
    assert len(clean_reason("x" * 5000)) == 400


def test_against_moto_server():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        requests.post(f"{url}/moto-api/config", json={"lambda": {"use_docker": False}}).raise_for_status()
        inv = invoker(url, function_name="anything")
        assert json.loads(inv.invoke(b'{"hello":"moto"}').payload) == {"hello": "moto"}
        requests.post(f"{url}/moto-api/static/lambda-simple/response",
                      json={"results": ["queued answer"], "region": "us-east-1"}).raise_for_status()
        assert inv.invoke(b"{}").payload == b"queued answer"
    finally:
        server.stop()


def test_reasons_never_carry_credentials_an_endpoint_echoed(api):
    # Regression (issue 8): an endpoint that echoed the request's Authorization header in its
    # error message had it, and the credentials, written to VSL by the FetchError/VCL_Error line.
    inv = invoker(api.url)
    api.script.append(Action("payload", json.dumps({
        "message": "Authorization: AWS4-HMAC-SHA256 Credential=AKIDVMODLAMBDATEST/20250101/"
                   "us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=" + "ab" * 32 +
                   " secret vmod-lambda-test-secret key AKIAIOSFODNN7EXAMPLE"}).encode(), 403,
        {"x-amzn-ErrorType": "InvalidSignatureException"}))
    with pytest.raises(InvokeError) as e:
        inv.invoke(b"{}")
    text = str(e.value)
    assert "InvalidSignatureException (HTTP 403)" in text
    for leak in ("AKIDVMODLAMBDATEST", "vmod-lambda-test-secret", "AKIAIOSFODNN7EXAMPLE", "abab",
                 "Credential="):
        assert leak not in text, text
    assert "[redacted]" in text
