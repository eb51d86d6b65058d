"""The direct transport (vmod_lambda/transport/direct.py): signs like botocore, behaves like the boto3
transport (tests/unit/test_transport.py runs the common test body over both).

Signatures are compared byte for byte with botocore's SigV4Auth for the same request, credentials and
time, and with what the boto3 transport itself sends. Outcomes (results and errors) are compared with
the boto3 transport's for the same answers of the scripted fake Lambda API (support.fake_lambda).
"""

import base64
import datetime
import ssl
import subprocess
import time
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials

from support.fake_lambda import Action, FakeLambda, answer as reply, scripted
from support.invokers import STREAM_BODY, make_invoker as invoker, read_stream
from vmod_lambda.transport import direct
from vmod_lambda.config import validate_backend
from vmod_lambda.invoker import Hooks, InvokeError, Invoker

FIXED = datetime.datetime(2026, 2, 3, 4, 5, 6)


@pytest.fixture(autouse=True, params=["nogil", "python"])
def io_path(request, monkeypatch):
    """Every test runs with the exchange in C without the GIL (_netio, http:// endpoints) and with
    the pure-Python exchange (what https:// endpoints and a build without _netio use)."""
    if request.param == "nogil":
        if direct._netio is None:
            pytest.skip("vmod_lambda._netio is not built")
    else:
        monkeypatch.setattr(direct, "_netio", None)
    return request.param


@pytest.fixture
def fixed_time(monkeypatch):
    """Both signers at the same fixed time."""
    monkeypatch.setattr(direct, "_utcnow", lambda: FIXED.timetuple())
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FIXED)
    try:        # botocore signs with awscrt instead when awscrt is installed
        import botocore.crt.auth as crt_auth
        monkeypatch.setattr(crt_auth, "get_current_datetime",
                            lambda *a, **k: FIXED.replace(tzinfo=datetime.timezone.utc))
    except ImportError:
        pass


def parse_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(": ", 1)
            headers[k] = v
    return method, target, headers


def botocore_authorization(url, target, headers, payload, creds, region="us-east-1"):
    """What SigV4Auth puts in Authorization for the request as sent (its signed headers only)."""
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    keep = {k: v for k, v in headers.items()
            if k.lower() in signed and k.lower() not in ("x-amz-date", "x-amz-security-token")}
    parts = urlsplit(url)
    req = AWSRequest(method="POST", url=f"{parts.scheme}://{parts.netloc}{target}", data=payload,
                     headers=keep)
    SigV4Auth(creds, "lambda", region).add_auth(req)
    return req.headers["Authorization"], req.headers.get("X-Amz-Security-Token")


# ------------------------------------------------------------------------------------ signatures

@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjEJr//////////session+token/="])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9999", "https://lambda.eu-west-1.amazonaws.com",
                                      "http://LocalHost:8080/base", "https://[::1]:4443"])
@pytest.mark.parametrize("function, qualifier, log_type, context", [
    ("my-fn", None, None, None),
    ("arn:aws:lambda:us-east-1:123456789012:function:f", "live", "Tail", None),
    ("f", "$LATEST", None, base64.b64encode(b'{"custom":{"a":"b c"}}').decode()),
    ("a.b_c-1", "7", "Tail", base64.b64encode(b"{}").decode()),
])
@pytest.mark.parametrize("payload", [b"", b'{"q":"x"}', bytes(range(256)) * 100])
def test_authorization_is_botocore_sigv4auth_byte_for_byte(fixed_time, token, endpoint, function,
                                                           qualifier, log_type, context, payload):
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    client = direct.DirectClient(endpoint, "eu-west-1" if "eu-west-1" in endpoint else "us-east-1",
                                 "lambda", creds, 1, 1, 1, "test")
    head = client.request_head(function, payload, "RequestResponse", qualifier, log_type, context)
    method, target, headers = parse_head(head)
    assert method == "POST"
    region = client.signer.region
    expected, sent_token = botocore_authorization(endpoint, target, headers, payload,
                                                  creds.get_frozen_credentials(), region)
    assert headers["Authorization"] == expected
    assert headers["X-Amz-Date"] == "20260203T040506Z"
    assert headers.get("X-Amz-Security-Token") == sent_token == token
    assert int(headers["Content-Length"]) == len(payload)


def test_same_signed_request_as_the_boto3_transport(fixed_time, api, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "the-session-token")
    kw = dict(function_name="arn:aws:lambda:us-east-1:123456789012:function:f:live", log_tail=True,
              client_context='{"custom": {"k": "v"}}')
    for transport in ("boto3", "direct"):
        invoker(api.url, transport, **kw).invoke(b'{"same":"request"}')
    (p1, h1, b1), (p2, h2, b2) = api.requests
    assert (p1, b1) == (p2, b2)
    assert p1.endswith("/invocations?Qualifier=live")
    signed = h1["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    # Content-Type: application/octet-stream on both, as the AWS SDKs send it, signed.
    assert signed == ["content-type", "host", "x-amz-client-context", "x-amz-date",
                      "x-amz-invocation-type", "x-amz-log-type", "x-amz-security-token"]
    assert h1["Content-Type"] == h2["Content-Type"] == "application/octet-stream"
    lower1 = {k.lower(): v for k, v in h1.items()}
    lower2 = {k.lower(): v for k, v in h2.items()}
    for name in signed + ["authorization"]:
        assert lower1[name] == lower2[name], name


# ----------------------------------------------------------------------------------- credentials

def test_refreshable_credentials_are_refreshed(api):
    issued = []

    def refresh():
        n = len(issued) + 1
        issued.append(n)
        # Inside the advisory refresh window: every use refreshes, so each call sees new keys.
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=12)
        return {"access_key": f"AKIDREFRESH{n}", "secret_key": f"secret-{n}",
                "token": f"token-{n}", "expiry_time": expiry.isoformat()}

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    inv = invoker(api.url, "direct")
    inv.transport.client.credentials = creds
    inv.invoke(b"{}")
    inv.invoke(b"{}")
    keys = [h["Authorization"].split("Credential=")[1].split("/")[0] for _, h, _ in api.requests]
    tokens = [h["X-Amz-Security-Token"] for _, h, _ in api.requests]
    assert keys == ["AKIDREFRESH2", "AKIDREFRESH3"]
    assert tokens == ["token-2", "token-3"]
    # Each request is signed with the secret that goes with its key.
    for (path, headers, body), n in zip(api.requests, (2, 3)):
        frozen = Credentials(f"AKIDREFRESH{n}", f"secret-{n}", f"token-{n}")
        date = headers["X-Amz-Date"]
        when = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ")
        orig = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            expected, _ = botocore_authorization(api.url, path, headers, body, frozen)
        finally:
            botocore.auth.get_current_datetime = orig
        assert headers["Authorization"] == expected


def test_credentials_come_from_the_boto3_chain(api, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMTHECHAIN")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "chain-token")
    invoker(api.url, "direct").invoke(b"{}")
    _, headers, _ = api.requests[0]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFROMTHECHAIN/")
    assert headers["X-Amz-Security-Token"] == "chain-token"


def test_region_and_endpoint_resolve_as_boto3_does():
    inv = invoker(None, "direct")
    client = inv.transport.client
    assert client.endpoint_url == inv.client.meta.endpoint_url == \
        "https://lambda.us-east-1.amazonaws.com"
    assert client.host == "lambda.us-east-1.amazonaws.com"
    assert client.signer.region == "us-east-1" and client.signer.service == "lambda"


# -------------------------------------------------------------------------------------- outcomes

ANSWERS = [
    (200, {"X-Amz-Executed-Version": "7", "X-Amz-Log-Result": base64.b64encode(b"log").decode()},
     b'{"ok":true}'),
    (200, {"X-Amz-Function-Error": "Unhandled"},
     b'{"errorType":"ValueError","errorMessage":"boom","stackTrace":[]}'),
    (200, {"X-Amz-Function-Error": "Handled"}, b"not json at all"),
    (429, {"x-amzn-ErrorType": "TooManyRequestsException"},
     b'{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","message":"Rate exceeded"}'),
    (404, {"x-amzn-ErrorType": "ResourceNotFoundException:http://internal.amazon.com/"},
     b'{"Type":"User","Message":"Function not found: my-fn"}'),
    (500, {}, b"<html>Internal Server Error</html>"),
    (502, {"Content-Type": "application/json"}, b'{"__type":"EC2ThrottledException","message":"x"}'),
    (413, {"x-amzn-ErrorType": "RequestTooLargeException"}, b""),
    (202, {}, b""),
]


def outcome(inv, invocation_type):
    try:
        if invocation_type == "Event":
            r = inv.invoke(b'{"a":1}', invocation_type="Event")
        else:
            r = inv.invoke(b'{"a":1}')
        return ("ok", r.payload, r.status, r.request_id, r.executed_version, r.log_result)
    except InvokeError as e:
        return ("error", e.kind, str(e), e.status, e.request_id)


def raw_server(answers):
    """The fake Lambda API answering each request with canned bytes (raw, close): then closing the
    connection, or keeping it for the next request."""
    srv = FakeLambda()
    srv.script += [Action("raw", raw, keep=not close) for raw, close in answers]
    return srv


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: str(a[0]))
def test_same_outcome_as_the_boto3_transport(api, answer):
    invocation_type = "Event" if answer[0] == 202 else "RequestResponse"
    api.request_id = "the-request-id"       # the same answer for both transports
    got = {}
    for transport in ("boto3", "direct"):
        api.script.append(reply(*answer))
        got[transport] = outcome(invoker(api.url, transport), invocation_type)
    assert got["direct"] == got["boto3"]
    assert got["direct"][0] == ("ok" if answer[0] < 300 and "X-Amz-Function-Error" not in answer[1]
                                else "error")


@pytest.mark.parametrize("raw, payload", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
     b"0\r\nX-Trailer: t\r\n\r\n", b"hello world"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
])
def test_response_framings(raw, payload):
    srv = raw_server([(raw, False), (raw, False)])
    try:
        inv = invoker(srv.url, "direct")
        assert inv.invoke(b"{}").payload == payload
        assert inv.invoke(b"{}").payload == payload
    finally:
        srv.stop()


def test_body_delimited_by_close():
    srv = raw_server([(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", True)])
    try:
        assert invoker(srv.url, "direct").invoke(b"{}").payload == b"until the end"
    finally:
        srv.stop()


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_invalid_responses_are_transport_errors(raw):
    srv = raw_server([(raw, True)])
    try:
        with pytest.raises(InvokeError) as e:
            invoker(srv.url, "direct").invoke(b"{}")
        assert e.value.kind == "transport"
        assert str(e.value).startswith("invalid HTTP response from the Lambda endpoint")
        assert srv.invocations == 1
    finally:
        srv.stop()


def test_truncated_body_is_a_transport_error_and_not_retried():
    srv = raw_server([(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", True),
                     (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True)])
    try:
        with pytest.raises(InvokeError) as e:
            invoker(srv.url, "direct").invoke(b"{}")
        assert e.value.kind == "transport"
        assert str(e.value) == "the Lambda endpoint closed the connection before it answered"
        assert srv.invocations == 1
    finally:
        srv.stop()


def test_a_failed_connect_is_tried_once_more_and_only_once(api, monkeypatch):
    inv = invoker(api.url, "direct")
    real = inv.transport.client._connect
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) in fail:
            raise direct.ConnectFailed("refused")
        return real()

    real_gen = inv.transport.client._connect_gen

    def flaky_gen(deadline=0.0):
        # The nogil path's connect (a generator: its wait is yielded to the worker's poll).
        calls.append(1)
        if len(calls) in fail:
            raise direct.ConnectFailed("refused")
        return (yield from real_gen(deadline))

    monkeypatch.setattr(inv.transport.client, "_connect", flaky)
    monkeypatch.setattr(inv.transport.client, "_connect_gen", flaky_gen)
    fail = {1}
    assert inv.invoke(b"{}").payload == b"null"
    assert len(calls) == 2 and len(api.requests) == 1
    inv.transport.close()
    calls.clear()
    fail = {1, 2, 3}
    with pytest.raises(InvokeError) as e:
        inv.invoke(b"{}")
    assert e.value.kind == "transport"
    assert str(e.value) == f"cannot connect to the Lambda endpoint {api.url}"
    assert len(calls) == 2 and len(api.requests) == 1


def test_large_payloads_both_ways(api):
    big = bytes(range(256)) * (5 * 4096)      # 5 MiB
    api.script.append(reply(200, {}, big))
    res = invoker(api.url, "direct").invoke(big)
    assert res.payload == big
    assert api.requests[0][2] == big


# ------------------------------------------------------------------------------------------- TLS

@pytest.fixture
def tls_api(tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    s = scripted(tls_context=ctx)
    yield s
    s.stop()


def test_https_endpoint_with_the_ca_bundle_of_the_config_chain(tls_api):
    for transport in ("boto3", "direct"):
        tls_api.script.append(reply(200, {}, b'{"tls":true}'))
        assert invoker(tls_api.url, transport).invoke(b"{}").payload == b'{"tls":true}'
    inv = invoker(tls_api.url, "direct")
    for _ in range(3):
        inv.invoke(b"{}")
    # One connection per invoker: the last one kept alive for its three calls.
    assert tls_api.connections == 3


def test_https_endpoint_with_an_unknown_certificate_fails(tls_api, monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE")
    with pytest.raises(InvokeError) as e:
        invoker(tls_api.url, "direct").invoke(b"{}")
    assert e.value.kind == "transport"
    assert tls_api.requests == []


def test_read_timeout_applies_to_every_read():
    # A slow answer: the kernel's SO_RCVTIMEO must turn into the timeout error, not a hang.
    with FakeLambda(lambda name, event: Action("hang", delay=3.0)) as srv:
        t0 = time.monotonic()
        with pytest.raises(InvokeError) as e:
            invoker(srv.url, "direct", timeout=0.3).invoke(b"{}")
        assert e.value.kind == "timeout"
        assert str(e.value) == "timed out after 0.3s waiting for the function"
        assert time.monotonic() - t0 < 5


def test_a_proxied_endpoint_keeps_the_boto3_transport(api, monkeypatch):
    # The scripted API plays the proxy: boto3 sends it the absolute URI of the endpoint.
    for var in ("http_proxy", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", api.url)
    inv = invoker("http://lambda.example.invalid:9", "direct")
    assert inv.transport.name == "boto3"
    assert inv.invoke(b"{}").payload == b"null"
    assert api.requests[0][0] == \
        "http://lambda.example.invalid:9/2015-03-31/functions/my-fn/invocations"
    monkeypatch.setenv("NO_PROXY", "lambda.example.invalid")
    assert invoker("http://lambda.example.invalid:9", "direct").transport.name == "direct"


def test_payload_may_be_any_bytes_like(api):
    assert invoker(api.url, "direct").invoke(bytearray(b'{"x":1}')).payload == b"null"
    assert api.requests[0][2] == b'{"x":1}'


# ------------------------------------------------------------------------ response streaming

def test_stream_request_is_signed_like_the_boto3_transports(fixed_time, api, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "the-session-token")
    kw = dict(function_name="arn:aws:lambda:us-east-1:123456789012:function:f:live", log_tail=True,
              client_context='{"custom": {"k": "v"}}')
    for transport in ("boto3", "direct"):
        api.script.append(reply(200, {"Content-Type": "application/vnd.amazon.eventstream"},
                            STREAM_BODY))
        assert read_stream(invoker(api.url, transport, **kw), b'{"s":1}')[0] == b"hello stream"
    (p1, h1, b1), (p2, h2, b2) = api.requests
    assert (p1, b1) == (p2, b2) == (
        "/2021-11-15/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af"
        "/response-streaming-invocations?Qualifier=live", b'{"s":1}')
    lower1 = {k.lower(): v for k, v in h1.items()}
    lower2 = {k.lower(): v for k, v in h2.items()}
    signed = lower1["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-amz-log-type" in signed and "x-amz-client-context" in signed
    for name in signed + ["authorization"]:
        assert lower1[name] == lower2[name], name


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_stream_body_framings_and_connection_reuse(framing):
    """The event stream is read as it comes however the body is delimited; a connection whose
    stream was read to its end carries the next call (not one delimited by its close)."""
    body = STREAM_BODY
    if framing == "chunked":
        raw = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 9]), body[i:i + 9])
                       for i in range(0, len(body), 9))
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + raw + b"0\r\n\r\n"
    elif framing == "length":
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    else:
        raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    close = framing == "close"
    srv = raw_server([(raw, close), (raw, close)])
    try:
        inv = invoker(srv.url, "direct")
        assert read_stream(inv) == read_stream(inv)
        assert srv.invocations == 2
        assert srv.connections == (2 if close else 1)
    finally:
        srv.stop()


def test_stream_over_https(tls_api):
    for transport in ("boto3", "direct"):
        tls_api.script.append(reply(200, {}, STREAM_BODY))
        data, complete = read_stream(invoker(tls_api.url, transport))
        assert data == b"hello stream" and complete.error_code is None


def test_chunked_decoder_gives_the_same_bytes_however_the_input_is_cut():
    wire = b"5;x=y\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\nEXTRA"
    whole = direct.ChunkedDecoder()
    assert b"".join(whole.feed(wire)) == b"hello 0123456789"
    assert whole.done and whole.extra == 5
    for step in (1, 2, 3, 7):
        dec = direct.ChunkedDecoder()
        out = b"".join(b"".join(dec.feed(wire[i:i + step])) for i in range(0, len(wire), step))
        assert out == b"hello 0123456789" and dec.done and dec.extra == 5
    for bad, what in ((b"zz\r\n", "invalid chunk size"), (b"-1\r\n", "invalid chunk size"),
                      (b"2\r\nabX\r\n", "not terminated by CRLF"),
                      (b"1" * 5000, "chunk size line too long")):
        with pytest.raises(direct.BadResponse, match=what):
            direct.ChunkedDecoder().feed(bad)


def test_the_worker_hooks_are_passed_down_not_patched_in(api):
    """What the transport needs from the worker pool comes in with the Invoker: around connects
    and credential lookups it tells the worker it may block; nothing is set on the module.
    (Static credentials never block: the name lookup of the endpoint calls the hooks here.)"""
    calls = []
    hooks = Hooks(lambda: calls.append("begin"), lambda: calls.append("end"))
    url = api.url.replace("127.0.0.1", "localhost")
    inv = Invoker(validate_backend("fn", "my-fn", "us-east-1", endpoint_url=url,
                                   transport="direct"), hooks)
    inv.invoke(b"{}")
    assert calls and calls == ["begin", "end"] * (len(calls) // 2)
    assert not hasattr(direct, "blocking_begin") and not hasattr(direct, "blocking_end")
    n = len(calls)
    Invoker(validate_backend("fn", "my-fn", "us-east-1", endpoint_url=url,
                             transport="direct")).invoke(b"{}")
    assert len(calls) == n, "another object's calls use that object's hooks"
