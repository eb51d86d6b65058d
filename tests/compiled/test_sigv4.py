"""The request head built in C (vmod_lambda/_sigv4.pyx) is byte for byte the one direct.py's Python
builder gives, over many generated requests: qualifiers, log tail, client context, tenant id, session
token, trace id, payload sizes, endpoints, signing times; and requests that are not plain (white
space in a signed value, non-ASCII) fall back to the Python builder. (The signature itself is
compared with botocore's in test_direct.py, which goes through the C builder.)"""

import base64
import random
import time

import pytest
from botocore.credentials import Credentials

from vmod_lambda.transport import direct

_sigv4 = pytest.importorskip("vmod_lambda._sigv4")

ENDPOINTS = ["http://127.0.0.1:9999", "https://lambda.eu-west-1.amazonaws.com",
             "http://LocalHost:8080/base", "https://[::1]:4443", "http://lambda.local"]
FUNCTIONS = ["my-fn", "arn:aws:lambda:us-east-1:123456789012:function:f", "a.b_c-1",
             "f:alias", "x" * 64]
QUALIFIERS = [None, "", "live", "$LATEST", "7"]
TRACES = [None, "", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"]
TENANTS = [None, "", "tenant-1", "t.2_x:y"]
TOKENS = [None, "", "IQoJb3JpZ2luX2VjEJr//////////session+token/="]


class Counting:
    """A HeadSigner that counts the heads it built (not None)."""

    def __init__(self, signer):
        self.signer = signer
        self.built = 0

    def head(self, *args):
        head = self.signer.head(*args)
        self.built += head is not None
        return head


def both(client, args, kw, now):
    """(C head, Python head) of one request at the time now."""
    c = client.request_head(*args, **kw)
    head, client._head = client._head, None
    try:
        py = client.request_head(*args, **kw)
    finally:
        client._head = head
    return c, py


def test_c_head_equals_python_head_over_generated_requests(monkeypatch):
    rng = random.Random(17)
    built = 0
    for i in range(3000):
        endpoint = rng.choice(ENDPOINTS)
        token = rng.choice(TOKENS)
        secret = rng.choice(["wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "s2", ""])
        creds = Credentials(rng.choice(["AKIDEXAMPLE", "AKID2", ""]), secret, token)
        client = direct.DirectClient(endpoint, rng.choice(["us-east-1", "eu-west-1"]), "lambda",
                                     creds, 1, 1, 1, rng.choice(["test", "vmod-lambda/0.1.0 x/y"]))
        assert client._head is not None
        client._head = counting = Counting(client._head)
        now = time.gmtime(rng.randrange(0, 4_000_000_000))
        monkeypatch.setattr(direct, "_utcnow", lambda now=now: now)
        size = rng.choice([0, 1, 100, 2047, 2048, 65535, 65536, 200_000])
        payload = rng.randbytes(size)
        ctx = rng.choice([None, "", base64.b64encode(b'{"custom":{"a":"b c"}}').decode()])
        args = (rng.choice(FUNCTIONS), payload, rng.choice(["RequestResponse", "Event", "DryRun"]),
                rng.choice(QUALIFIERS), rng.choice([None, "", "Tail", "None"]), ctx)
        kw = dict(stream=rng.random() < 0.2, trace_id=rng.choice(TRACES),
                  tenant_id=rng.choice(TENANTS))
        c, py = both(client, args, kw, now)
        assert c == py, (args[0], args[2:], kw, endpoint, token)
        built += counting.built
    assert built == 3000        # every one of them plain: built in C


def test_the_signing_key_cache_follows_day_and_secret(monkeypatch):
    creds = Credentials("AKID", "secret-1")
    client = direct.DirectClient("http://127.0.0.1:9999", "us-east-1", "lambda", creds, 1, 1, 1, "t")
    for t, secret in [(0, "secret-1"), (10, "secret-1"), (86400, "secret-1"), (86401, "secret-2"),
                      (86402, "secret-1"), (5, "secret-1")]:
        creds.secret_key = secret
        now = time.gmtime(1_700_000_000 + t)
        monkeypatch.setattr(direct, "_utcnow", lambda now=now: now)
        c, py = both(client, ("f", b"{}"), {}, now)
        assert c == py


@pytest.mark.parametrize("field, value", [
    ("tenant_id", "tenant with  spaces"), ("tenant_id", " t"), ("tenant_id", "t\u00e9"),
    ("client_context", "abc\tdef"), ("trace_id", "Root=\u00e91"),
])
def test_requests_that_are_not_plain_are_built_in_python(monkeypatch, field, value):
    creds = Credentials("AKID", "secret")
    client = direct.DirectClient("http://127.0.0.1:9999", "us-east-1", "lambda", creds, 1, 1, 1, "t")
    now = time.gmtime(1_700_000_000)
    kw = {field: value}
    head = client._head.head("/t", "/t", "", None, kw.get("client_context"), "RequestResponse",
                             kw.get("tenant_id"), kw.get("trace_id"), b"{}", "AKID", "secret",
                             None, now)
    assert head is None
    monkeypatch.setattr(direct, "_utcnow", lambda: now)
    args = ("f", b"{}", "RequestResponse", None, None, kw.pop("client_context", None))
    c, py = both(client, args, kw, now)
    assert c == py


def test_the_current_time_is_the_clock_s(monkeypatch):
    """Without a replaced _utcnow, _sigv4 reads the clock itself: the same second as time.gmtime()
    (or the next, at a second's edge)."""
    creds = Credentials("AKID", "secret")
    client = direct.DirectClient("http://127.0.0.1:9999", "us-east-1", "lambda", creds, 1, 1, 1, "t")
    before = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    head = client.request_head("f", b"{}")
    after = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    date = [line for line in head.split(b"\r\n") if line.startswith(b"X-Amz-Date: ")][0][12:]
    assert before <= date.decode() <= after
