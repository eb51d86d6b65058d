"""The event of common requests built in C on the fetch thread (vmod_lambda/_fastevent.pyx) is byte for
byte the one events.build_event("1.0", ...) makes (and "1.0-compat", with compat), and requests it does
not cover are left to Python.

Requests are generated (hypothesis) as request records (_request.Request, what the director collects
from bo->bereq): the C builder reads the record's struct, the Python mapping its view, with the
same request id and time on both sides.
"""

import json
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from vmod_lambda import events, fetch

_fastevent = pytest.importorskip("vmod_lambda._fastevent", reason="the Cython modules are not built")
from vmod_lambda._request import Request  # noqa: E402  (built with _fastevent)

RID = "3f2c1a9e-5b7d-4e21-9c3a-0d1e2f3a4b5c"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7f))


def python_event(head: Request, rid: str, now: float, compat: bool = False) -> bytes:
    headers = head.headers
    req = events.HttpRequest(method=head.method, url=head.url, proto=head.proto, headers=headers,
                             body=b"", client_ip=fetch.client_ip(headers), request_id=rid, now=now)
    return events.build_event("1.0-compat" if compat else "1.0", req)


def head_of(method, url, proto, headers) -> Request:
    return Request(method, url, proto, headers)


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1,
                max_size=12)
value = st.text(alphabet=PRINTABLE, max_size=40)
name = st.one_of(token, st.sampled_from(["Host", "host", "HOST", "User-Agent", "user-agent",
                                         "X-Forwarded-For", "x-forwarded-for", "Cookie",
                                         "Content-Type", "Accept"]))
query_char = st.text(alphabet="abcAB0123=+&-_.~!$'()*,;:@/?\"\\ ", max_size=30)
path = st.text(alphabet="abcxyz0123/._-~!$&'()*+,;=:@\"\\", max_size=30).map(lambda p: "/" + p)


@st.composite
def requests(draw):
    url = draw(path)
    if draw(st.booleans()):
        url += "?" + draw(query_char)
    headers = draw(st.lists(st.tuples(name, value), max_size=12))
    method = draw(st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS", "POST"]))
    proto = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]))
    return head_of(method, url, proto, headers)


@settings(max_examples=600, deadline=None)
@given(requests(), st.floats(min_value=0, max_value=4102444800, allow_nan=False), st.booleans())
def test_same_bytes_as_python(head, now, compat):
    c = _fastevent.build_v1(head, RID, now, compat)
    if c is None:
        # Left to Python: only for what the C builder does not cover.
        assert "%" in head.url or not head.url.startswith("/")
        return
    assert c == python_event(head, RID, now, compat)


def test_common_request_is_built_in_c():
    head = head_of("GET", "/a/b?x=1&y=a+b&x=2&&z", "HTTP/1.1",
                   [("Host", "app.example.com"), ("User-Agent", "wrk"),
                    ("X-Forwarded-For", "10.0.0.1, 192.0.2.7"), ("X-Varnish", "32770"),
                    ("x-varnish", "7")])
    now = 1764320000.25
    c = _fastevent.build_v1(head, RID, now)
    assert c is not None and c == python_event(head, RID, now)
    doc = json.loads(c)
    assert doc["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["a b"], "z": [""]}
    assert doc["requestContext"]["identity"]["sourceIp"] == "192.0.2.7"
    assert doc["multiValueHeaders"]["x-varnish"] == ["32770", "7"]
    assert doc["requestContext"]["requestTimeEpoch"] == 1764320000250


def test_no_headers_no_query_root_path():
    head = head_of("GET", "/", "HTTP/1.1", [])
    c = _fastevent.build_v1(head, RID, 0.0)
    assert c == python_event(head, RID, 0.0)
    doc = json.loads(c)
    assert doc["headers"] == {} and doc["queryStringParameters"] is None and doc["body"] is None
    assert doc["pathParameters"] is None and doc["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"


@pytest.mark.parametrize("url", ["/", "/a?", "/a?&&"])
def test_compat_empty_values(url):
    """"1.0-compat": no query gives {} and no body "" (movableink's vmod-lambda), the rest as 1.0."""
    head = head_of("GET", url, "HTTP/1.1", [("Host", "h")])
    c = _fastevent.build_v1(head, RID, 0.0, True)
    assert c == python_event(head, RID, 0.0, True)
    doc = json.loads(c)
    assert doc["queryStringParameters"] == {} and doc["body"] == ""
    assert doc["multiValueQueryStringParameters"] is None and doc["isBase64Encoded"] is False
    plain = json.loads(_fastevent.build_v1(head, RID, 0.0, False))
    assert plain["queryStringParameters"] is None and plain["body"] is None
    plain.update(queryStringParameters={}, body="")
    assert plain == doc


@pytest.mark.parametrize("head", [
    head_of("GET", "/caf%C3%A9", "HTTP/1.1", []),                   # percent-escapes: Python decodes
    head_of("GET", "/a?q=%20", "HTTP/1.1", []),
    head_of("GET", "http://example.com/a", "HTTP/1.1", []),         # absolute form
    head_of("GET", "/a", "HTTP/1.1", [("X-Name", "caf\u00e9")]),    # not ASCII
    head_of("GET", "/a", "HTTP/1.1", [("X-Tab", "a\tb")]),          # a control character
    head_of("GET", "/a", "", []),                                   # no protocol
    head_of("GET", "/a", "HTTP/1.1", [("X-Many", str(i)) for i in range(300)]),
])
def test_left_to_python(head):
    assert _fastevent.build_v1(head, RID, time.time()) is None


def test_request_ids_are_uuid4_and_differ():
    ids = {_fastevent.request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in ids:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rid)
