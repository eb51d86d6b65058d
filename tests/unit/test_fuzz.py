"""Property tests (hypothesis) for the code that handles untrusted bytes: the event builder, both
response parsers and the director's head parser (vmod_lambda/events.py, vmod_lambda/fetch.py).

Properties: nothing raises but the documented error type, whatever the input; what is produced is
well-formed (strict JSON events, valid statuses, header names that are tokens, values without CR,
LF or NUL, no hop-by-hop headers); and round trips hold where they exist (a request body comes back
from the event byte for byte; a response serialised in either format parses back to itself).

Runtime is kept modest for the default test run (300 examples per property); a longer campaign:
VMOD_LAMBDA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_fuzz.py
"""

import base64
import json
import math
import os
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vmod_lambda.events import (EVENT_FORMATS, HttpRequest, HttpResponse, ResponseError,
                                build_event, parse_response)
from vmod_lambda.fetch import client_ip
from vmod_lambda.probe import ProbeSpec

FUZZ = settings(max_examples=int(os.environ.get("VMOD_LAMBDA_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "content-length"}

# Text as the director hands it over (decoded with "replace": no lone surrogates), and any text.
any_text = st.text(max_size=40)
header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
token = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True)
# What a header value may hold (Varnish's vct_ishdrval: HTAB, 0x20-0x7e, 0x80 and up; no surrogates).
safe_value = st.text(st.characters(blacklist_categories=("Cs",),
                                   blacklist_characters="".join(map(chr, [*range(0, 9),
                                                                          *range(10, 32), 127]))),
                     max_size=40).map(lambda s: s.strip(" \t"))

requests = st.builds(
    HttpRequest,
    method=st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), any_text),
    url=st.one_of(any_text, st.from_regex(r"/[a-z%0-9/+]*(\?[a-z0-9%=&+;]*)?", fullmatch=True)),
    proto=st.sampled_from(["HTTP/1.1", "HTTP/1.0", ""]),
    headers=st.lists(st.tuples(st.one_of(token, any_text),
                               st.one_of(header_text, any_text)), max_size=8)
    .map(lambda hs: hs + []),
    body=st.binary(max_size=200),
    client_ip=st.one_of(st.just("192.0.2.1"), any_text),
    request_id=st.uuids().map(str),
    now=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                  st.just(1700000000.5)),
)
content_types = st.sampled_from([None, "text/plain", "application/json; charset=utf-8",
                                 "application/octet-stream", "image/png", "application/x+json",
                                 "TEXT/HTML"])


def _check_event(fmt, req, out):
    assert isinstance(out, bytes)
    event = json.loads(out)           # strict JSON, UTF-8
    assert isinstance(event, dict)
    # The body always comes back byte for byte.
    body = event.get("body")
    if req.body:
        if event["isBase64Encoded"]:
            assert base64.b64decode(body, validate=True) == req.body
        else:
            assert body.encode("utf-8") == req.body
    else:
        assert body in (None, "")
    return event


@FUZZ
@given(fmt=st.sampled_from(EVENT_FORMATS), req=requests, ctype=content_types,
       multi=st.booleans())
def test_build_event_never_raises_and_round_trips_the_body(fmt, req, ctype, multi):
    if ctype is not None:
        req.headers.append(("Content-Type", ctype))
    event = _check_event(fmt, req, build_event(fmt, req, multi_value=multi))
    method = event["httpMethod"] if fmt != "2.0" else event["requestContext"]["http"]["method"]
    assert method == req.method


@FUZZ
@given(req=requests)
def test_event_headers_keep_every_value_in_order(req):
    event = json.loads(build_event("1.0", req))
    want = {}
    for name, value in req.headers:
        want.setdefault(name.lower(), []).append(value)
    assert event["multiValueHeaders"] == want
    assert event["headers"] == {k: v[-1] for k, v in want.items()}


@FUZZ
@given(path=st.text(max_size=30), query=st.one_of(st.none(), st.text(max_size=40)))
def test_v2_raw_path_and_query_are_as_received(path, query):
    assume("?" not in path)
    url = "/" + path + ("" if query is None else "?" + query)
    req = HttpRequest("GET", url, "HTTP/1.1", [], b"", "192.0.2.1", "id", 1700000000.0)
    event = json.loads(build_event("2.0", req))
    assert event["rawQueryString"] == (query or "")
    assert event["rawPath"] == "/" + path


@FUZZ
@given(fmt=any_text, req=requests)
def test_unknown_event_format_is_a_value_error(fmt, req):
    assume(fmt not in EVENT_FORMATS)
    try:
        build_event(fmt, req)
    except ValueError as e:
        assert "unknown event format" in str(e)
    else:
        raise AssertionError("no error")


def _check_response(r):
    assert isinstance(r, HttpResponse)
    assert 100 <= r.status <= 599
    assert isinstance(r.body, bytes)
    if r.reason is not None:
        assert not re.search("[\x00-\x08\x0a-\x1f\x7f]", r.reason)
    for name, value in r.headers:
        assert TOKEN.fullmatch(name), name
        assert not re.search("[\r\n\x00\ud800-\udfff]", value), value
        assert name.lower() not in HOP
        value.encode("utf-8")


def _parse(fmt, payload):
    try:
        r = parse_response(fmt, payload)
    except ResponseError as e:
        text = str(e)
        assert text and "\n" not in text and len(text) < 1000
        return None
    _check_response(r)
    return r


@FUZZ
@given(payload=st.binary(max_size=400), fmt=st.sampled_from(["json", "http"]))
def test_any_bytes_parse_or_raise_response_error(payload, fmt):
    _parse(fmt, payload)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)),
    max_leaves=12)
response_objects = st.fixed_dictionaries(
    {"statusCode": st.one_of(st.integers(0, 700), st.text(max_size=4), json_values)},
    optional={
        "statusDescription": st.one_of(st.text(max_size=30), json_values),
        "headers": st.one_of(st.dictionaries(st.one_of(token, st.text(max_size=10)),
                                             st.one_of(st.text(max_size=20), json_leaf),
                                             max_size=5), json_values),
        "multiValueHeaders": st.one_of(st.dictionaries(
            st.one_of(token, st.text(max_size=10)),
            st.one_of(st.lists(st.one_of(st.text(max_size=20), json_leaf), max_size=3),
                      json_values), max_size=4), json_values),
        "cookies": st.one_of(st.lists(st.text(max_size=20), max_size=3), json_values),
        "body": st.one_of(st.text(max_size=40), json_values,
                          st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())),
        "isBase64Encoded": st.one_of(st.booleans(), json_values),
    })


@FUZZ
@given(obj=st.one_of(response_objects, json_values))
def test_json_shaped_payloads_parse_or_raise_response_error(obj):
    payload = json.dumps(obj).encode()
    r = _parse("json", payload)
    if r is not None and not (isinstance(obj, dict) and "statusCode" in obj):
        # payload format 2.0 rule: any other JSON value is the body of a 200, byte for byte
        assert (r.status, r.body) == (200, payload)


headers_list = st.lists(st.tuples(token, safe_value), max_size=6).map(
    lambda hs: [(n, v) for n, v in hs if n.lower() not in HOP])
statuses = st.integers(200, 599).filter(lambda s: s not in (204, 304))


@FUZZ
@given(status=statuses, headers=headers_list, body=st.binary(max_size=300), b64=st.booleans())
def test_json_response_round_trip(status, headers, body, b64):
    assume(b64 or _utf8(body))
    obj = {"statusCode": status,
           "multiValueHeaders": {},
           "body": base64.b64encode(body).decode() if b64 else body.decode("utf-8"),
           "isBase64Encoded": b64}
    for name, value in headers:
        obj["multiValueHeaders"].setdefault(name, []).append(value)
    r = parse_response("json", json.dumps(obj).encode())
    assert r.status == status and r.body == body
    assert sorted(r.headers) == sorted(headers)


def _utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@FUZZ
@given(status=statuses, reason=st.from_regex(r"[A-Za-z][A-Za-z ]{0,15}", fullmatch=True),
       headers=headers_list, body=st.binary(max_size=300),
       framing=st.sampled_from(["length", "chunked", "close"]),
       cuts=st.lists(st.integers(0, 300), max_size=5), lf_only=st.booleans())
def test_http_response_round_trip(status, reason, headers, body, framing, cuts, lf_only):
    eol = b"\n" if lf_only else b"\r\n"
    reason = reason.strip(" ")
    head = b"HTTP/1.1 %d %s" % (status, reason.encode()) + eol
    for name, value in headers:
        head += name.encode() + b": " + value.encode() + eol
    if framing == "length":
        msg = head + b"Content-Length: %d" % len(body) + eol + eol + body
    elif framing == "chunked":
        points = sorted({c for c in cuts if c < len(body)} | {0, len(body)})
        chunks = b"".join(b"%x" % (b - a) + eol + body[a:b] + eol
                          for a, b in zip(points, points[1:]) if b > a)
        msg = head + b"Transfer-Encoding: chunked" + eol + eol + chunks + b"0" + eol + eol
    else:
        msg = head + eol + body
    r = parse_response("http", msg)
    assert r.status == status and r.body == body
    assert r.reason == (reason or None)
    assert r.headers == headers


@FUZZ
@given(prefix=st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                                                       b"chunked\r\n\r\n"]),
       rest=st.binary(max_size=300))
def test_http_parser_on_mutated_messages(prefix, rest):
    _parse("http", prefix + rest)


@FUZZ
@given(head=st.text(max_size=400))
def test_probe_request_text_never_raises(head):
    """A probe's .request is the one request text vmod-lambda parses (every other request is
    collected from Varnish's struct http into the same record)."""
    r = ProbeSpec(request=head).request_record()
    method, url, proto, headers = r.method, r.url, r.proto, r.headers
    assert isinstance(method, str) and isinstance(url, str) and isinstance(proto, str)
    for name, value in headers:
        assert "\n" not in name and "\n" not in value
    assert isinstance(client_ip(headers), str)


def test_nan_and_huge_times_do_not_break_the_event():
    for now in (math.nan, math.inf, -1.0, 1e300, 2**80):
        req = HttpRequest("GET", "/", "HTTP/1.1", [], b"", "192.0.2.1", "id", now)
        assert json.loads(build_event("1.0", req))["requestContext"]["requestTimeEpoch"] > 0
