"""Hostile client requests through a real varnishd to a Lambda backend, in the three event formats.

Each request is sent as raw bytes. The outcome is either a clear 4xx made by Varnish or by the
VMOD (400, 413, 414, 431...), with the function not invoked, or an invocation whose event is
strict, valid JSON that carries the request as documented (invalid percent-encoding and bytes that
are not UTF-8 become U+FFFD, never an exception). After the run: no panic, no child restart, the
child still serves.
"""

import json
import re
import threading

import pytest

from support.fake_lambda import Action, FakeLambda, event_path
from support.http_helpers import raw_request
from support.varnish_harness import Varnishd, require_stage

FORMATS = {"v1": "1.0", "v2": "2.0", "alb": "alb"}


class Recorder:
    """Keeps the event of each invocation by the marker path segment /<fmt>/<id>/..."""

    def __init__(self):
        self.events = {}
        self.lock = threading.Lock()

    def route(self, name, event):
        try:
            doc = json.loads(event)          # strict: must be valid JSON, else the test sees it
        except ValueError as e:
            doc = {"invalid_json": str(e)}
        path = event_path(event) or ""
        m = re.match(r"/(v1|v2|alb)/([a-z0-9-]+)", path)
        key = (m.group(1), m.group(2)) if m else ("?", path[:40])
        with self.lock:
            self.events[key] = (event, doc)
        return Action("payload", b'{"statusCode": 200, "body": "seen"}')


def vcl(url):
    objs = "\n".join(
        f'    new {name} = lambda.backend("rec", "us-east-1", "{url}", timeout = 30s, '
        f'event_format = "{fmt}");' for name, fmt in FORMATS.items())
    return f"""vcl 4.1;
import lambda;
import std;
backend be none;
sub vcl_init {{
{objs}
}}
sub vcl_recv {{
    if (req.url ~ "^/v2/") {{
        set req.backend_hint = v2.backend();
    }} elsif (req.url ~ "^/alb/") {{
        set req.backend_hint = alb.backend();
    }} else {{
        set req.backend_hint = v1.backend();
    }}
    if (req.url ~ "/cached/") {{
        std.cache_req_body(8MB);
    }}
    return (pass);
}}
"""


@pytest.fixture(scope="module")
def env():
    require_stage()
    rec = Recorder()
    with FakeLambda(rec.route) as fake, Varnishd(vcl(fake.url)) as v:
        yield v, rec, fake
        assert not v.panicked()


def send(v, raw: bytes):
    return raw_request(v.port, raw)


def get(path: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: hostile.example\r\n" + headers + b"\r\n"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_invalid_percent_encoding_is_passed_on_not_fatal(env, fmt):
    v, rec, _ = env
    url = f"/{fmt}/pct/a%zzb%25%?x=%zz&y=%e9&z=%c3%28&w=%&%%=1".encode()
    status, _, body, _ = send(v, get(url))
    assert (status, body) == (200, b"seen")
    raw, event = rec.events[(fmt, "pct")]
    assert "invalid_json" not in event
    if fmt == "v1":
        assert event["path"] == "/v1/pct/a%zzb%%"
        q = event["queryStringParameters"]
        assert q["x"] == "%zz" and q["y"] == "\ufffd" and q["z"] == "\ufffd(" and q["w"] == "%"
    elif fmt == "v2":
        assert event["rawPath"] == "/v2/pct/a%zzb%25%"
        assert event["rawQueryString"] == "x=%zz&y=%e9&z=%c3%28&w=%&%%=1"
        assert event["queryStringParameters"]["y"] == "\ufffd"
    else:
        assert event["path"] == "/alb/pct/a%zzb%25%"
        assert event["queryStringParameters"]["y"] == "%e9"     # ALB does not decode


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_binary_junk_in_headers_and_url_becomes_replacement_characters(env, fmt):
    v, rec, _ = env
    url = f"/{fmt}/junk/".encode() + b"\xff\xfe\x80?k=\xc3\x28"
    status, _, body, _ = send(v, get(url, b"X-Junk: a\xff\xfe\x80b\r\nX-Utf8: caf\xc3\xa9\r\n"
                                          b"X-Json: \"}{\\\"\r\n"))
    assert (status, body) == (200, b"seen")
    raw, event = rec.events[(fmt, "junk")]
    assert "invalid_json" not in event
    assert raw.isascii() or fmt == "never"      # non-ASCII goes as \\u escapes outside the body
    headers = event.get("headers") or {k: v[-1] for k, v in event["multiValueHeaders"].items()}
    assert headers["x-junk"] == "a\ufffd\ufffd\ufffdb"
    assert headers["x-utf8"] == "caf\u00e9"
    assert headers["x-json"] == '"}{\\"'


def test_control_characters_in_a_header_value_are_refused_or_carried(env):
    v, rec, _ = env
    status, _, body, _ = send(v, get(b"/v1/ctl/", b"X-Ctl: a\x01b\x7fc\x1bd\r\n"))
    if status == 200:
        _, event = rec.events[("v1", "ctl")]
        assert event["headers"]["x-ctl"] == "a\x01b\x7fc\x1bd"
    else:
        assert 400 <= status < 500


@pytest.mark.parametrize("raw", [
    b"GET /v1/nul/\x00 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /v1/crlf/ HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    b"GET /v1/space name/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /v1/badproto/ HTTP/9.9\r\nHost: h\r\n\r\n",
    b"GET /v1/colon/ HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
    b"GET /v1/te/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/cl2/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
], ids=["nul-in-url", "cr-in-header", "space-in-url", "bad-protocol", "no-colon",
        "unknown-te", "two-content-lengths"])
def test_malformed_requests_get_a_4xx_from_varnish(env, raw):
    v, rec, fake = env
    before = fake.invocations
    status, _, _, _ = send(v, raw)
    assert status == 0 or 400 <= status < 500, status
    assert fake.invocations == before


def test_request_without_host_is_carried_with_an_empty_domain(env):
    # The built-in vcl_recv would answer 400; this VCL returns before it, so the event says "".
    v, rec, _ = env
    status, _, body, _ = send(v, b"GET /v2/nohost/ HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"seen")
    _, event = rec.events[("v2", "nohost")]
    assert event["requestContext"]["domainName"] == ""


def test_huge_query_string_within_http_req_size_is_carried(env):
    v, rec, _ = env
    q = "&".join(f"k{i}=%{i % 256:02x}" for i in range(3000))   # ~27 KB
    status, _, body, _ = send(v, get(f"/v2/bigq/?{q}".encode()))
    assert (status, body) == (200, b"seen")
    _, event = rec.events[("v2", "bigq")]
    assert event["rawQueryString"] == q
    assert len(event["queryStringParameters"]) == 3000


def test_query_string_beyond_http_req_size_is_refused_by_varnish(env):
    v, rec, fake = env
    before = fake.invocations
    status, _, _, _ = send(v, get(b"/v1/hugeq/?" + b"a" * 200_000))
    assert status == 0 or 400 <= status < 500
    assert fake.invocations == before


def test_header_sets_within_and_beyond_http_max_hdr(env):
    v, rec, fake = env
    many = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(50))
    status, _, body, _ = send(v, get(b"/v1/hdrs50/", many))
    assert (status, body) == (200, b"seen")
    _, event = rec.events[("v1", "hdrs50")]
    assert event["headers"]["x-h49"] == "49"
    before = fake.invocations
    too_many = b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(500))
    status, _, _, _ = send(v, get(b"/v1/hdrs500/", too_many))
    assert status == 0 or 400 <= status < 500
    big = b"X-Big: " + b"b" * 100_000 + b"\r\n"
    status, _, _, _ = send(v, get(b"/v1/hdrbig/", big))
    assert status == 0 or 400 <= status < 500
    assert fake.invocations == before


@pytest.mark.parametrize("where", ["", "cached/"])
def test_oversized_body_is_answered_413_without_invoking(env, where):
    v, rec, fake = env
    before = fake.invocations
    body = b"\xa5" * (7 * 1024 * 1024)
    raw = (f"POST /v1/{where}big/ HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status, _, text, _ = send(v, raw)
    if where and status == 413:
        pass        # std.cache_req_body refused it (8 MB cap not reached, but either way 413)
    assert status == 413, text[:200]
    assert fake.invocations == before


def test_body_whose_event_would_exceed_6mb_is_answered_413(env):
    v, rec, fake = env
    before = fake.invocations
    body = b"\x00" * (5 * 1024 * 1024)          # base64 makes it ~6.7 MB
    raw = (f"POST /v1/b64big/ HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    status, _, _, _ = send(v, raw + body)
    assert status == 413
    assert fake.invocations == before


def test_broken_chunked_request_body_fails_cleanly(env):
    v, rec, fake = env
    raw = (b"POST /v1/badchunk/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\nzz\r\nnot hex\r\n0\r\n\r\n")
    status, _, _, _ = send(v, raw)
    assert status == 0 or 400 <= status < 600
    assert ("v1", "badchunk") not in rec.events


def test_valid_chunked_binary_body_is_sent_base64(env):
    v, rec, _ = env
    raw = (b"POST /v2/chunked/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\n\x00\xff\x01\r\n2\r\n\r\n\r\n0\r\n\r\n")
    status, _, body, _ = send(v, raw)
    assert (status, body) == (200, b"seen")
    _, event = rec.events[("v2", "chunked")]
    assert event["isBase64Encoded"] is True
    import base64
    assert base64.b64decode(event["body"]) == b"\x00\xff\x01\r\n"


def test_text_body_that_is_not_utf8_is_sent_base64(env):
    v, rec, _ = env
    body = b"caf\xe9 \x00 \xff"
    raw = (b"POST /alb/latin1/ HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    status, _, text, _ = send(v, raw)
    assert (status, text) == (200, b"seen")
    _, event = rec.events[("alb", "latin1")]
    import base64
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body


def test_client_that_disappears_mid_body_leaves_varnish_serving(env):
    v, rec, fake = env
    import socket
    with socket.create_connection(("127.0.0.1", v.port), timeout=10) as s:
        s.sendall(b"POST /v1/gone/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n"
                  + b"x" * 1000)
    status, _, body, _ = send(v, get(b"/v1/after-gone/"))
    assert (status, body) == (200, b"seen")
    assert ("v1", "gone") not in rec.events
    assert not v.panicked()
