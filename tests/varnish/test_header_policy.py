"""The header policy, both ways, row by row (vmod_lambda/headers.py ROWS, the manual's table)
through a real varnishd: what of bereq reaches the event (GET: the event built in C on the fetch
thread; POST: built in Python), what of the function's headers reaches beresp."""

import functools
import json
import os
import subprocess
import tempfile

import pytest

from support.fake_lambda import Action, FakeLambda
from support.varnish_harness import Varnishd
from vmod_lambda import headers as policy

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = list(enumerate(policy.ROWS))


def _sample(row):
    """(the headers that show the row, the name whose fate the row decides)."""
    h = row.header
    if h == "(named in Connection)":
        return [("Connection", "close, X-Private"), ("X-Private", "s")], "X-Private"
    if h == "Proxy-*":
        return [("Proxy-Authorization", "Basic eDp5"), ("Proxy-Authenticate", "Basic")], \
            ("Proxy-Authorization", "Proxy-Authenticate")
    if h == "(any other)":
        return [("X-Custom", "v")], "X-Custom"
    if h.startswith("(any;"):
        return [("X-Bad", "a\u0001b")], "X-Bad"
    return [(h, "v")], h


@functools.lru_cache(maxsize=None)
def _settable(name):
    """True when this Varnish's VCL compiler lets VCL set bereq.http.<name>: Varnish 7.7 refuses
    Transfer-Encoding ("Variable is read only"), 7.1 does not. A header VCL cannot set never reaches
    a fetch from VCL (and a client cannot send it on a GET), so its request row cannot arise there."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.vcl")
        with open(path, "w") as f:
            f.write(f'vcl 4.1;\nbackend none none;\nsub vcl_backend_fetch {{\n'
                    f'    set bereq.http.{name} = "v";\n}}\n')
        os.chmod(d, 0o755)
        os.chmod(path, 0o644)
        r = subprocess.run(["varnishd", "-C", "-n", os.path.join(d, "n"), "-f", path],
                           capture_output=True, text=True, timeout=120)
        return r.returncode == 0


# Every name the samples use, for the generated VCL.
NAMES = sorted({n for _, r in ROWS for n, _ in _sample(r)[0]} | {"Content-Length"})


def _vcl(url):
    set_req = "\n".join(
        f'    if (bereq.http.X-Row == "{i}") {{\n'
        + "".join(f'        set bereq.http.{n} = "{v}";\n' for n, v in _sample(r)[0]
                  if not n.startswith("X-Bad") and n != "Content-Length" and _settable(n))
        + "    }" for i, r in ROWS)
    seen = "\n".join(f'    if (beresp.http.{n}) {{ set beresp.http.X-Seen = beresp.http.X-Seen + '
                     f'",{n}={{" + beresp.http.{n} + "}}"; }}' for n in NAMES)
    return f"""
vcl 4.1;
import lambda;
backend none none;

sub vcl_init {{
    new app = lambda.backend("app", "us-east-1", "{url}");
}}

sub vcl_recv {{
    set req.backend_hint = app.backend();
    return (pass);
}}

sub vcl_backend_fetch {{
{set_req}
}}

sub vcl_backend_response {{
    set beresp.http.X-Seen = "";
{seen}
}}
"""


def _route(name, event):
    doc = json.loads(event)
    path = doc.get("path", "")
    if path.startswith("/resp/"):
        row = policy.ROWS[int(path.rsplit("/", 1)[1])]
        headers, _ = _sample(row)
        if row.header == "Content-Length":
            headers = [("Content-Length", "999")]
        return Action("payload", json.dumps({"statusCode": 200,
                                             "multiValueHeaders": {k: [v] for k, v in headers},
                                             "body": "abc"}).encode())
    return Action("payload", json.dumps({"statusCode": 200, "body": "ok"}).encode())


@pytest.fixture(scope="module")
def env():
    fake = FakeLambda(_route)
    fake.keep_events = True
    try:
        with Varnishd(_vcl(fake.url)) as v:
            yield v, fake
    finally:
        fake.stop()


def _names(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("i,row", ROWS, ids=[r.header for _, r in ROWS])
def test_request_side(env, i, row, method):
    v, fake = env
    if row.header.startswith("(any;"):
        pytest.skip("Varnish holds no request header with CR, LF or NUL in its value")
    if not all(_settable(n) for n, _ in _sample(row)[0] if n != "Content-Length"):
        pytest.skip(f"this Varnish's VCL cannot set bereq.http.{row.header}: the row cannot arise")
    before = len(fake.events)
    status, _, _ = v.request(f"/req/{i}", method=method, data=b"abc" if method == "POST" else None,
                             headers={"X-Row": str(i)})
    assert status == 200
    event = json.loads(fake.events[before][2])
    sent = {k.lower(): vals for k, vals in event["multiValueHeaders"].items()}
    headers, name = _sample(row)
    if row.header == "Content-Length":
        if method == "GET":
            pytest.skip("a GET without a body has no Content-Length")
        assert sent["content-length"] == ["3"]
        return
    if row.header == "Proxy-*":
        name = ("Proxy-Authorization",)
    for n in _names(name):
        if row.request == "dropped":
            assert n.lower() not in sent, (row, sent)
        else:
            assert sent[n.lower()] == [dict(headers)[n]], (row, sent)
    # What the policy does not name still gets through.
    assert sent["x-row"] == [str(i)]


@pytest.mark.parametrize("i,row", ROWS, ids=[r.header for _, r in ROWS])
def test_response_side(env, i, row):
    v, fake = env
    status, rh, body = v.request(f"/resp/{i}")
    if row.response == "fails the fetch":
        assert status == 503
        return
    assert status == 200 and body == b"abc"
    seen = dict(rh)["X-Seen"]
    headers, name = _sample(row)
    if row.header == "Content-Length":
        assert ",Content-Length={3}" in seen     # recomputed from the body, not the 999 sent
        return
    if row.header == "Proxy-*":
        name = ("Proxy-Authenticate",)
    for n in _names(name):
        if row.response == "dropped":
            assert f",{n}=" not in seen, (row, seen)
        else:
            assert f",{n}={{{dict(headers)[n]}}}" in seen, (row, seen)


def test_the_manual_has_the_table():
    with open(os.path.join(HERE, "..", "..", "vmod_lambda.vcc")) as f:
        manual = f.read()
    assert policy.manual_table() in manual
