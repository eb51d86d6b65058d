"""vmod_lambda.events: Varnish backend request -> Lambda event, Lambda response payload -> HTTP response."""

import base64
import json
import math
import random

import pytest

from vmod_lambda.events import (HttpRequest, HttpResponse, ResponseError, build_event,
                                parse_response)

FORMATS = ("1.0", "2.0", "alb")
NOW = 1428582896.5                      # 09/Apr/2015:12:34:56.5 UTC
NOW_CLF = "09/Apr/2015:12:34:56 +0000"
NOW_MS = 1428582896500


def make_req(url="/", method="GET", headers=(), body=b"", **kw):
    fields = dict(method=method, url=url, proto="HTTP/1.1", headers=list(headers), body=body,
                  client_ip="192.0.2.7", request_id="req-42", now=NOW)
    fields.update(kw)
    return HttpRequest(**fields)


def event(fmt, req, **kw):
    raw = build_event(fmt, req, **kw)
    assert isinstance(raw, bytes)
    return json.loads(raw)


# ==================================================================================================
# Request -> event


@pytest.mark.parametrize("body", [b"", b"plain ASCII", "héllo wörld".encode()])
@pytest.mark.parametrize("fmt", FORMATS)
def test_event_is_compact_utf8_json(fmt, body):
    req = make_req("/x?a=1", headers=[("Host", "h.example"), ("X-Name", "Zoë"),
                                      ("Content-Type", "text/plain")], body=body)
    raw = build_event(fmt, req)
    method_key = b'"method":"GET"' if fmt == "2.0" else b'"httpMethod":"GET"'
    assert method_key in raw
    ev = json.loads(raw.decode("utf-8"))
    assert ev["headers"]["x-name"] == "Zoë"
    compact = json.dumps(ev, separators=(",", ":"), ensure_ascii=body.isascii())
    assert raw == compact.encode()
    if not body.isascii():                            # a text body at its UTF-8 size, not \u escapes
        assert body in raw


def test_event_unknown_format():
    with pytest.raises(ValueError, match="unknown event format"):
        build_event("3.0", make_req())


# ---- URL: path and query, per format. One row per URL; each format reads its own columns.

URL_CASES = [
    dict(id="repeated keys, blank value, encoded path",
         url="/a%20b/c?x=1&x=2&y",
         v1_path="/a b/c", v1_q={"x": "2", "y": ""}, v1_mq={"x": ["1", "2"], "y": [""]},
         v2_raw_path="/a%20b/c", v2_raw_q="x=1&x=2&y", v2_q={"x": "1,2", "y": ""},
         alb_path="/a%20b/c", alb_q={"x": "2", "y": ""}, alb_mq={"x": ["1", "2"], "y": [""]}),
    dict(id="plus and percent in query",
         url="/s?q=a+b%2Bc&k%3D=%E2%9C%93&m+n=1",
         v1_path="/s", v1_q={"q": "a b+c", "k=": "\u2713", "m n": "1"},
         v1_mq={"q": ["a b+c"], "k=": ["\u2713"], "m n": ["1"]},
         v2_raw_path="/s", v2_raw_q="q=a+b%2Bc&k%3D=%E2%9C%93&m+n=1",
         v2_q={"q": "a b+c", "k=": "\u2713", "m n": "1"},
         alb_path="/s", alb_q={"q": "a+b%2Bc", "k%3D": "%E2%9C%93", "m+n": "1"},
         alb_mq={"q": ["a+b%2Bc"], "k%3D": ["%E2%9C%93"], "m+n": ["1"]}),
    dict(id="no query",
         url="/",
         v1_path="/", v1_q=None, v1_mq=None,
         v2_raw_path="/", v2_raw_q="", v2_q=None,
         alb_path="/", alb_q={}, alb_mq={}),
    dict(id="empty query",
         url="/p?",
         v1_path="/p", v1_q=None, v1_mq=None,
         v2_raw_path="/p", v2_raw_q="", v2_q=None,
         alb_path="/p", alb_q={}, alb_mq={}),
    dict(id="empty pieces skipped",
         url="/p?&a=1&&b=",
         v1_path="/p", v1_q={"a": "1", "b": ""}, v1_mq={"a": ["1"], "b": [""]},
         v2_raw_path="/p", v2_raw_q="&a=1&&b=", v2_q={"a": "1", "b": ""},
         alb_path="/p", alb_q={"a": "1", "b": ""}, alb_mq={"a": ["1"], "b": [""]}),
    dict(id="value with =",
         url="/p?t=a=b",
         v1_path="/p", v1_q={"t": "a=b"}, v1_mq={"t": ["a=b"]},
         v2_raw_path="/p", v2_raw_q="t=a=b", v2_q={"t": "a=b"},
         alb_path="/p", alb_q={"t": "a=b"}, alb_mq={"t": ["a=b"]}),
    dict(id="plus in path is no space, bad escape kept, UTF-8 decoded",
         url="/caf%C3%A9/%ZZ+x",
         v1_path="/caf\u00e9/%ZZ+x", v1_q=None, v1_mq=None,
         v2_raw_path="/caf%C3%A9/%ZZ+x", v2_raw_q="", v2_q=None,
         alb_path="/caf%C3%A9/%ZZ+x", alb_q={}, alb_mq={}),
    dict(id="absolute-form target",
         url="http://example.com/x/y?z=1",
         v1_path="/x/y", v1_q={"z": "1"}, v1_mq={"z": ["1"]},
         v2_raw_path="/x/y", v2_raw_q="z=1", v2_q={"z": "1"},
         alb_path="/x/y", alb_q={"z": "1"}, alb_mq={"z": ["1"]}),
]
URL_IDS = [c["id"] for c in URL_CASES]


@pytest.mark.parametrize("case", URL_CASES, ids=URL_IDS)
def test_url_v1(case):
    ev = event("1.0", make_req(case["url"]))
    assert ev["path"] == case["v1_path"]
    assert ev["requestContext"]["path"] == case["v1_path"]
    assert ev["queryStringParameters"] == case["v1_q"]
    assert ev["multiValueQueryStringParameters"] == case["v1_mq"]


@pytest.mark.parametrize("case", URL_CASES, ids=URL_IDS)
def test_url_v2(case):
    ev = event("2.0", make_req(case["url"]))
    assert ev["rawPath"] == case["v2_raw_path"]
    assert ev["rawQueryString"] == case["v2_raw_q"]
    assert ev.get("queryStringParameters") == case["v2_q"]
    assert ("queryStringParameters" in ev) == (case["v2_q"] is not None)
    assert ev["requestContext"]["http"]["path"] == case["v1_path"]       # decoded, like 1.0


@pytest.mark.parametrize("case", URL_CASES, ids=URL_IDS)
@pytest.mark.parametrize("multi_value", [False, True])
def test_url_alb(case, multi_value):
    ev = event("alb", make_req(case["url"]), multi_value=multi_value)
    assert ev["path"] == case["alb_path"]
    if multi_value:
        assert ev["multiValueQueryStringParameters"] == case["alb_mq"]
        assert "queryStringParameters" not in ev
    else:
        assert ev["queryStringParameters"] == case["alb_q"]
        assert "multiValueQueryStringParameters" not in ev


@pytest.mark.parametrize("url, body", [("/", b""), ("/x?", b""), ("/x?a=1&a=2", b""),
                                       ("/x", b"payload"), ("/x?q", b"\x00\xff")])
def test_v1_compat_differs_from_1_0_only_in_empty_values(url, body):
    """"1.0-compat" (the default) is the 1.0 event with the empty values of movableink's
    vmod-lambda: no body gives "" and no query queryStringParameters {}, where 1.0 has null."""
    headers = [("Host", "h.example"), ("Content-Type", "application/octet-stream")]
    v1 = event("1.0", make_req(url, headers=headers, body=body))
    compat = event("1.0-compat", make_req(url, headers=headers, body=body))
    if body:
        assert compat["body"] == v1["body"] and v1["body"]
    else:
        assert v1["body"] is None and compat["body"] == ""
    if "=" not in url and "?q" not in url:
        assert v1["queryStringParameters"] is None and compat["queryStringParameters"] == {}
    else:
        assert compat["queryStringParameters"] == v1["queryStringParameters"]
        assert v1["queryStringParameters"]
    assert compat["multiValueQueryStringParameters"] == v1["multiValueQueryStringParameters"]
    rest = {k: v for k, v in compat.items() if k not in ("body", "queryStringParameters")}
    assert rest == {k: v for k, v in v1.items() if k not in ("body", "queryStringParameters")}


@pytest.mark.parametrize("url, proxy", [("/", None), ("/a%20b/c", {"proxy": "a b/c"}),
                                        ("/x", {"proxy": "x"})])
def test_v1_resource_and_path_parameters(url, proxy):
    ev = event("1.0", make_req(url))
    assert ev["resource"] == "/{proxy+}"
    assert ev["requestContext"]["resourcePath"] == "/{proxy+}"
    assert ev["pathParameters"] == proxy
    assert ev["stageVariables"] is None
    assert ev["version"] == "1.0"


# ---- headers and cookies

HEADERS = [("Host", "api.example.com"), ("X-Multi", "a"), ("x-multi", "b"), ("Accept", "*/*"),
           ("Cookie", "a=1; b=2"), ("COOKIE", "c=3;d=4"), ("User-Agent", "curl/8.0")]


def test_headers_v1():
    ev = event("1.0", make_req(headers=HEADERS))
    assert ev["headers"] == {"host": "api.example.com", "x-multi": "b", "accept": "*/*",
                             "cookie": "c=3;d=4", "user-agent": "curl/8.0"}
    assert ev["multiValueHeaders"] == {"host": ["api.example.com"], "x-multi": ["a", "b"],
                                       "accept": ["*/*"], "cookie": ["a=1; b=2", "c=3;d=4"],
                                       "user-agent": ["curl/8.0"]}
    assert ev["requestContext"]["identity"] == {"sourceIp": "192.0.2.7", "userAgent": "curl/8.0"}


def test_headers_v2():
    ev = event("2.0", make_req(headers=HEADERS))
    assert ev["headers"] == {"host": "api.example.com", "x-multi": "a,b", "accept": "*/*",
                             "user-agent": "curl/8.0"}
    assert ev["cookies"] == ["a=1", "b=2", "c=3", "d=4"]
    assert ev["requestContext"]["http"]["userAgent"] == "curl/8.0"
    assert ev["requestContext"]["http"]["sourceIp"] == "192.0.2.7"


@pytest.mark.parametrize("multi_value", [False, True])
def test_headers_alb(multi_value):
    ev = event("alb", make_req(headers=HEADERS), multi_value=multi_value)
    if multi_value:
        assert "headers" not in ev
        assert ev["multiValueHeaders"]["x-multi"] == ["a", "b"]
        assert ev["multiValueHeaders"]["cookie"] == ["a=1; b=2", "c=3;d=4"]
    else:
        assert "multiValueHeaders" not in ev
        assert ev["headers"] == {"host": "api.example.com", "x-multi": "b", "accept": "*/*",
                                 "cookie": "c=3;d=4", "user-agent": "curl/8.0"}


def test_no_headers():
    v1 = event("1.0", make_req())
    assert v1["headers"] == {} and v1["multiValueHeaders"] == {}
    assert v1["requestContext"]["identity"]["userAgent"] is None
    v2 = event("2.0", make_req())
    assert v2["headers"] == {} and "cookies" not in v2
    assert v2["requestContext"]["http"]["userAgent"] == ""
    assert event("alb", make_req())["headers"] == {}
    assert event("alb", make_req(), multi_value=True)["multiValueHeaders"] == {}


def test_v2_empty_cookie_header_gives_no_cookies():
    ev = event("2.0", make_req(headers=[("Cookie", " ; ")]))
    assert "cookies" not in ev and "cookie" not in ev["headers"]


@pytest.mark.parametrize("host, domain, prefix", [
    ("api.example.com", "api.example.com", "api"),
    ("localhost:8080", "localhost:8080", "localhost:8080"),
    ("www.example.com:8443", "www.example.com:8443", "www"),
    (None, "", ""),
])
@pytest.mark.parametrize("fmt", ["1.0", "2.0"])
def test_domain_name_and_prefix(fmt, host, domain, prefix):
    headers = [("Host", host)] if host else []
    ctx = event(fmt, make_req(headers=headers))["requestContext"]
    assert (ctx["domainName"], ctx["domainPrefix"]) == (domain, prefix)


# ---- request context and time

@pytest.mark.parametrize("now, clf, ms", [
    (NOW, NOW_CLF, NOW_MS),
    (1584039838.123, "12/Mar/2020:19:03:58 +0000", 1584039838123),
    (0.0, "01/Jan/1970:00:00:00 +0000", 0),
    (1700000000, "14/Nov/2023:22:13:20 +0000", 1700000000000),
])
@pytest.mark.parametrize("fmt", ["1.0", "2.0"])
def test_request_time(fmt, now, clf, ms):
    ctx = event(fmt, make_req(now=now))["requestContext"]
    if fmt == "1.0":
        assert (ctx["requestTime"], ctx["requestTimeEpoch"]) == (clf, ms)
    else:
        assert (ctx["time"], ctx["timeEpoch"]) == (clf, ms)


@pytest.mark.parametrize("now", [math.nan, math.inf, -5.0, 1e20])
def test_nonsense_now_falls_back_to_current_time(now):
    ctx = event("2.0", make_req(now=now))["requestContext"]
    assert ctx["timeEpoch"] > NOW_MS
    assert ctx["time"].endswith(" +0000") and len(ctx["time"]) == len(NOW_CLF)


def test_v1_request_context():
    req = make_req("/a%2Fb?x=1", method="POST", headers=[("Host", "api.example.com")],
                   proto="HTTP/1.0")
    assert event("1.0", req)["requestContext"] == {
        "accountId": "123456789012", "apiId": "vmod-lambda", "domainName": "api.example.com",
        "domainPrefix": "api", "extendedRequestId": "req-42", "httpMethod": "POST",
        "identity": {"sourceIp": "192.0.2.7", "userAgent": None}, "path": "/a/b",
        "protocol": "HTTP/1.0", "requestId": "req-42", "requestTime": NOW_CLF,
        "requestTimeEpoch": NOW_MS, "resourceId": "vmod-lambda", "resourcePath": "/{proxy+}",
        "stage": "$default"}


def test_v2_request_context():
    req = make_req("/a%2Fb?x=1", method="PUT", headers=[("Host", "api.example.com"),
                                                        ("User-Agent", "ua/1")])
    assert event("2.0", req)["requestContext"] == {
        "accountId": "123456789012", "apiId": "vmod-lambda", "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {"method": "PUT", "path": "/a/b", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.7",
                 "userAgent": "ua/1"},
        "requestId": "req-42", "routeKey": "$default", "stage": "$default", "time": NOW_CLF,
        "timeEpoch": NOW_MS}


def test_alb_request_context():
    ev = event("alb", make_req(method="DELETE"))
    assert ev["requestContext"] == {"elb": {"targetGroupArn": (
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vmod-lambda/"
        "0000000000000000")}}
    assert ev["httpMethod"] == "DELETE"


# What AWS Lambda Powertools' parser models require (v1: APIGatewayProxyEventModel and its request
# context, v2: APIGatewayProxyEventV2Model, ALB: AlbModel), for a bare request and a full one.
POWERTOOLS_REQUIRED = {
    "1.0": ({"resource", "path", "httpMethod", "headers", "multiValueHeaders", "requestContext"},
            {"accountId", "apiId", "stage", "protocol", "identity", "requestId", "requestTime",
             "requestTimeEpoch", "resourcePath", "httpMethod", "path"}),
    "2.0": ({"version", "routeKey", "rawPath", "rawQueryString", "headers", "requestContext",
             "isBase64Encoded"},
            {"accountId", "apiId", "domainName", "domainPrefix", "requestId", "routeKey", "stage",
             "time", "timeEpoch", "http"}),
    "alb": ({"httpMethod", "path", "body", "isBase64Encoded", "headers", "queryStringParameters",
             "requestContext"}, {"elb"}),
}


@pytest.mark.parametrize("req", [make_req(), make_req("/p?q=1", "POST", HEADERS, b"\x00")],
                         ids=["bare", "full"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_shape_has_what_powertools_requires(fmt, req):
    ev = event(fmt, req)
    top, ctx = POWERTOOLS_REQUIRED[fmt]
    assert top <= ev.keys()
    assert ctx <= ev["requestContext"].keys()
    assert isinstance(ev["headers"], dict)
    if fmt == "1.0":
        assert isinstance(ev["multiValueHeaders"], dict)
        assert "sourceIp" in ev["requestContext"]["identity"]
    if fmt == "2.0":
        assert ev["requestContext"]["http"].keys() == {"method", "path", "protocol", "sourceIp",
                                                       "userAgent"}
        assert isinstance(ev["requestContext"]["http"]["userAgent"], str)
    if fmt == "alb":
        assert isinstance(ev["body"], str) and isinstance(ev["queryStringParameters"], dict)


# ---- body

BODY_CASES = [
    # content type, body, sent as text?
    ("text/plain; charset=utf-8", "héllo\r\n".encode(), True),
    ("TEXT/HTML", b"<p>x</p>", True),
    ("application/json", b'{"a":[1,2]}', True),
    ("application/json; charset=UTF-8", b"{}", True),
    ("application/vnd.api+json", b'{"data":null}', True),
    ("application/soap+xml", b"<x/>", True),
    ("application/xml", b"<x/>", True),
    ("application/javascript", b"f()", True),
    ("application/x-www-form-urlencoded", b"a=1&b=%20", True),
    ("text/plain", b"\xff\xfe\x00bad utf-8", False),
    ("application/json", b'{"a":"\xe9"}', False),         # Latin-1 labelled JSON
    ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00", False),
    ("application/octet-stream", bytes(range(256)), False),
    ("application/jsonx", b"{}", False),
    (None, b"plain but untyped", False),
]


@pytest.mark.parametrize("content_type, body, as_text", BODY_CASES,
                         ids=[f"{c}-{'text' if t else 'b64'}" for c, _, t in BODY_CASES])
@pytest.mark.parametrize("fmt", FORMATS)
def test_body_encoding(fmt, content_type, body, as_text):
    headers = [("Content-Type", content_type)] if content_type else []
    ev = event(fmt, make_req(method="POST", headers=headers, body=body))
    assert ev["isBase64Encoded"] is (not as_text)
    if as_text:
        assert ev["body"] == body.decode("utf-8")
    else:
        assert base64.b64decode(ev["body"], validate=True) == body


def test_body_last_content_type_counts():
    headers = [("Content-Type", "image/png"), ("Content-Type", "text/plain")]
    assert event("1.0", make_req(headers=headers, body=b"hi"))["body"] == "hi"


@pytest.mark.parametrize("fmt, expected", [("1.0", None), ("alb", "")])
def test_empty_body(fmt, expected):
    ev = event(fmt, make_req(headers=[("Content-Type", "image/png")]))
    assert ev["body"] == expected and ev["isBase64Encoded"] is False


def test_empty_body_v2_is_omitted():
    ev = event("2.0", make_req(headers=[("Content-Type", "image/png")]))
    assert "body" not in ev and ev["isBase64Encoded"] is False


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_like_body(fmt):
    ev = event(fmt, make_req(body=bytearray(b"\x00\x01")))
    assert base64.b64decode(ev["body"]) == b"\x00\x01"


@pytest.mark.parametrize("body", [b"", "t\u00e9xt".encode()], ids=["no body", "non-ASCII body"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_unencodable_strings_still_give_valid_json(fmt, body):
    # A lone surrogate (e.g. from surrogateescape decoding) cannot be UTF-8: escaped, never raised.
    req = make_req("/p\udcff?q=\udcfe", headers=[("X-Bad", "a\udcffb"), ("Content-Type", "text/plain")],
                   body=body)
    raw = build_event(fmt, req)
    ev = json.loads(raw.decode("utf-8"))
    assert ev["headers"]["x-bad"] == "a\udcffb"
    assert (ev.get("body") or "") == body.decode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_weird_requests_never_raise(fmt):
    rng = random.Random(1234)
    alphabet = "/?&=%+;#:@ aZ9\u00e9\u2713\x00\r\n\t\udcff"
    for _ in range(300):
        url = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        headers = [("".join(rng.choice("HhCcOoKkIiEe-") for _ in range(rng.randint(1, 8))),
                    "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))))
                   for _ in range(rng.randint(0, 5))]
        headers.append(("Content-Type", rng.choice(["text/plain", "image/gif", "", ";", "+json"])))
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 20)))
        ev = event(fmt, make_req(url, headers=headers, body=body), multi_value=rng.random() < .5)
        assert isinstance(ev, dict)


# ==================================================================================================
# Response payload -> HttpResponse: "json"


def parse_json(obj_or_bytes):
    payload = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    resp = parse_response("json", payload)
    assert isinstance(resp, HttpResponse)
    return resp


def test_json_basic():
    resp = parse_json({"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-A": "1"},
                       "body": "héllo", "isBase64Encoded": False})
    assert resp == HttpResponse(201, None, [("Content-Type", "text/plain"), ("X-A", "1")],
                                "héllo".encode())


@pytest.mark.parametrize("code, status", [(200, 200), ("404", 404), (100, 100), (599, 599),
                                          ("0302", 302)])
def test_json_status_code(code, status):
    assert parse_json({"statusCode": code}).status == status


@pytest.mark.parametrize("description, reason", [
    ("HTTP 404 Not Found", "Not Found"),
    ("404 Not Found", "Not Found"),
    ("HTTP/1.1 418 I'm a teapot", "I'm a teapot"),
    ("Not Found", "Not Found"),
    ("Gone  fishing ", "Gone  fishing"),
    ("HTTP 404", None),
    ("", None),
    (None, None),
])
def test_json_status_description(description, reason):
    obj = {"statusCode": 404}
    if description is not None:
        obj["statusDescription"] = description
    assert parse_json(obj).reason == reason


def test_json_header_values_converted():
    resp = parse_json({"statusCode": 200, "headers": {"A": 1, "B": 1.5, "C": True, "D": False,
                                                      "E": None, "F": ""}})
    assert resp.headers == [("A", "1"), ("B", "1.5"), ("C", "true"), ("D", "false"), ("F", "")]


def test_json_multi_value_headers_merge():
    resp = parse_json({
        "statusCode": 200,
        "headers": {"X-A": "from headers", "Content-Type": "text/plain", "X-Keep": "k"},
        "multiValueHeaders": {"x-a": ["m1", 2], "Set-Cookie": ["a=1", "b=2"], "X-Null": None,
                              "X-Empty": []},
    })
    assert resp.headers == [("Content-Type", "text/plain"), ("X-Keep", "k"), ("x-a", "m1"),
                            ("x-a", "2"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_json_multi_value_null_list_does_not_override():
    resp = parse_json({"statusCode": 200, "headers": {"X-A": "h"},
                       "multiValueHeaders": {"x-a": None}})
    assert resp.headers == [("X-A", "h")]


def test_json_case_variant_keys_stay_apart():
    # Mangum sends repeated headers to ALB (single-value mode) as case variants of one name.
    resp = parse_json({"statusCode": 200, "headers": {"set-cookie": "a=1", "Set-cookie": "b=2",
                                                      "sEt-cookie": "c=3"}})
    assert resp.headers == [("set-cookie", "a=1"), ("Set-cookie", "b=2"), ("sEt-cookie", "c=3")]


def test_json_cookies_become_set_cookie():
    resp = parse_json({"statusCode": 200, "headers": {"X": "y"},
                       "cookies": ["a=1; Path=/", "b=2; HttpOnly"]})
    assert resp.headers == [("X", "y"), ("Set-Cookie", "a=1; Path=/"),
                            ("Set-Cookie", "b=2; HttpOnly")]


def test_json_base64_body_is_byte_exact():
    data = bytes(range(256)) * 3
    resp = parse_json({"statusCode": 200, "body": base64.b64encode(data).decode(),
                       "isBase64Encoded": True})
    assert resp.body == data


@pytest.mark.parametrize("obj", [{"statusCode": 200}, {"statusCode": 200, "body": None},
                                 {"statusCode": 200, "body": ""},
                                 {"statusCode": 200, "body": "", "isBase64Encoded": True}])
def test_json_empty_body(obj):
    assert parse_json(obj).body == b""


@pytest.mark.parametrize("status", [204, 304, 101])
def test_json_bodyless_status_keeps_empty_body(status):
    resp = parse_json({"statusCode": status, "body": "ignored", "headers": {"ETag": '"x"'}})
    assert (resp.status, resp.body, resp.headers) == (status, b"", [("ETag", '"x"')])


@pytest.mark.parametrize("payload", [
    b'{"message":"hi"}',
    b'  {"statusDescription": "no status code"}\n',
    b'[1,2,{"statusCode":500}]',
    b'"just a string"',
    b"42",
    b"null",
    b"true",
    '{"t":"\u00e9"}'.encode(),
])
def test_json_without_status_code_is_a_200_json_body(payload):
    resp = parse_json(payload)
    assert resp == HttpResponse(200, None, [("Content-Type", "application/json")], payload)


@pytest.mark.parametrize("fmt", ["json", "http"])
def test_hop_by_hop_and_content_length_dropped(fmt):
    headers = [("Connection", "close, X-Private"), ("X-Private", "p"), ("Keep-Alive", "timeout=5"),
               ("Proxy-Connection", "keep-alive"), ("Transfer-Encoding", "identity"), ("TE", "trailers"),
               ("Trailer", "X-T"), ("Upgrade", "h2c"), ("Content-Length", "2"), ("X-Kept", "k"),
               ("Content-Type", "text/plain")]
    if fmt == "json":
        resp = parse_json({"statusCode": 200, "multiValueHeaders": {n: [v] for n, v in headers},
                           "body": "ok"})
    else:
        headers = [h for h in headers if h[0] != "Transfer-Encoding"]
        payload = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in headers)
        resp = parse_response("http", payload + b"\r\nok")
    assert resp.headers == [("X-Kept", "k"), ("Content-Type", "text/plain")]
    assert resp.body == b"ok"


def invalid(name, obj_or_payload, message):
    payload = (obj_or_payload if isinstance(obj_or_payload, bytes)
               else json.dumps(obj_or_payload).encode())
    return pytest.param(payload, message, id=name)


JSON_ERRORS = [
    invalid("status too high", {"statusCode": 700}, "statusCode 700 is not in 100-599"),
    invalid("status too low", {"statusCode": 99}, "statusCode 99 is not in 100-599"),
    invalid("status string too high", {"statusCode": "600"}, "statusCode 600 is not in 100-599"),
    invalid("status not numeric", {"statusCode": "abc"}, "statusCode 'abc' is not an integer"),
    invalid("status with junk", {"statusCode": "200 OK"}, "is not an integer"),
    invalid("status empty string", {"statusCode": ""}, "is not an integer"),
    invalid("status float", {"statusCode": 200.0}, "statusCode 200.0 is not an integer"),
    invalid("status bool", {"statusCode": True}, "statusCode True is not an integer"),
    invalid("status null", {"statusCode": None}, "statusCode None is not an integer"),
    invalid("status list", {"statusCode": [200]}, "is not an integer"),
    invalid("description not string", {"statusCode": 200, "statusDescription": 5},
            "statusDescription 5 is not a string"),
    invalid("description with CRLF", {"statusCode": 200, "statusDescription": "OK\r\nX: y"},
            "control character"),
    invalid("headers is a list", {"statusCode": 200, "headers": ["X: y"]},
            "headers is a list, not an object"),
    invalid("headers is a string", {"statusCode": 200, "headers": "X: y"},
            "headers is a string, not an object"),
    invalid("header value is a list", {"statusCode": 200, "headers": {"X": ["a"]}},
            "headers['X'] is a list, not a string or number"),
    invalid("header value is an object", {"statusCode": 200, "headers": {"X": {"a": 1}}},
            "headers['X'] is a object"),
    invalid("multiValueHeaders is a list", {"statusCode": 200, "multiValueHeaders": [["X", "y"]]},
            "multiValueHeaders is a list, not an object"),
    invalid("multiValueHeaders value is a string", {"statusCode": 200,
                                                    "multiValueHeaders": {"X": "y"}},
            "multiValueHeaders['X'] is a string, not a list"),
    invalid("multiValueHeaders item is a list", {"statusCode": 200,
                                                 "multiValueHeaders": {"X": [["y"]]}},
            "multiValueHeaders['X'] item is a list"),
    invalid("cookies is a string", {"statusCode": 200, "cookies": "a=1"},
            "cookies is a string, not a list"),
    invalid("cookie item not a string", {"statusCode": 200, "cookies": [{"a": 1}]},
            "cookies item {'a': 1} is not a string"),
    invalid("header name with CRLF", {"statusCode": 200, "headers": {"X-A\r\nEvil": "1"}},
            "header name 'X-A\\r\\nEvil' is not a valid token"),
    invalid("header name with space", {"statusCode": 200, "headers": {"Bad Name": "1"}},
            "is not a valid token"),
    invalid("header name with colon", {"statusCode": 200, "headers": {"X:Y": "1"}},
            "is not a valid token"),
    invalid("empty header name", {"statusCode": 200, "headers": {"": "1"}},
            "header name '' is not a valid token"),
    invalid("non-ASCII header name", {"statusCode": 200, "headers": {"X-\u00e9": "1"}},
            "is not a valid token"),
    invalid("header value with CRLF", {"statusCode": 200,
                                       "headers": {"X": "a\r\nSet-Cookie: evil=1"}},
            "header X has a CR, LF, NUL"),
    invalid("header value with LF", {"statusCode": 200, "headers": {"X": "a\nb"}},
            "header X has a CR, LF, NUL"),
    invalid("header value with NUL", {"statusCode": 200, "headers": {"X": "a\x00b"}},
            "header X has a CR, LF, NUL"),
    invalid("multi value with CR", {"statusCode": 200, "multiValueHeaders": {"X": ["ok", "a\rb"]}},
            "header X has a CR, LF, NUL"),
    invalid("header value with ESC", {"statusCode": 200, "headers": {"X": "\x1b[2J"}},
            "header X has a CR, LF, NUL, another control character"),
    invalid("header value with VT", {"statusCode": 200, "headers": {"X": "a\x0bb"}},
            "header X has a CR, LF, NUL, another control character"),
    invalid("header value with DEL", {"statusCode": 200, "headers": {"X": "a\x7fb"}},
            "header X has a CR, LF, NUL, another control character"),
    invalid("header value with SOH", {"statusCode": 200, "multiValueHeaders": {"X": ["a\x01"]}},
            "header X has a CR, LF, NUL, another control character"),
    invalid("cookie with CRLF", {"statusCode": 200, "cookies": ["a=1\r\nX-Evil: 1"]},
            "header Set-Cookie has a CR, LF, NUL"),
    invalid("hop-by-hop header with CRLF", {"statusCode": 200, "headers": {"Connection": "a\r\nb"}},
            "header Connection has a CR, LF, NUL"),
    invalid("lone surrogate in value", b'{"statusCode":200,"headers":{"X":"\\ud800"}}',
            "header X has a CR, LF, NUL, another control character or an invalid character"),
    invalid("body is a number", {"statusCode": 200, "body": 5}, "body is a number, not a string"),
    invalid("body is an object", {"statusCode": 200, "body": {"a": 1}},
            "body is an object, not a string"),
    invalid("isBase64Encoded not a bool", {"statusCode": 200, "body": "", "isBase64Encoded": "yes"},
            "isBase64Encoded 'yes' is not a bool"),
    invalid("base64 bad padding", {"statusCode": 200, "body": "YWJ", "isBase64Encoded": True},
            "body is not valid base64: length 3 is not a multiple of 4"),
    invalid("base64 bad character", {"statusCode": 200, "body": "YW!j", "isBase64Encoded": True},
            "body is not valid base64: character '!' at offset 2 is not in the base64 alphabet"),
    invalid("base64 with newline", {"statusCode": 200, "body": "YWJj\nZGVm",
                                    "isBase64Encoded": True},
            "body is not valid base64: character '\\n' at offset 4 is not in the base64 alphabet"),
    invalid("base64 non-ASCII", {"statusCode": 200, "body": "YWJj\u00e9", "isBase64Encoded": True},
            "body is not valid base64: character 'é' at offset 4 is not in the base64 alphabet"),
    invalid("lone surrogate in body", b'{"statusCode":200,"body":"\\udc80"}', "lone surrogate"),
    invalid("truncated JSON", b'{"statusCode": 200', "payload is not valid JSON"),
    invalid("empty payload", b"", "payload is not valid JSON"),
    invalid("not JSON", b"HTTP/1.1 200 OK\r\n\r\n", "payload is not valid JSON"),
    invalid("trailing garbage", b'{"statusCode":200} x', "payload is not valid JSON: Extra data"),
    invalid("UTF-8 BOM", b'\xef\xbb\xbf{"statusCode":200}', "payload is not valid JSON"),
    invalid("nested too deeply", b"[" * 100000 + b"]" * 100000, "payload is not valid JSON"),
    invalid("integer too long", b'{"statusCode":' + b"9" * 5000 + b"}",
            "payload is not valid JSON"),
    invalid("not UTF-8", b'{"statusCode":200,"body":"\xff"}',
            "payload is not UTF-8 (invalid byte at offset 26)"),
    invalid("UTF-16", '{"statusCode":200}'.encode("utf-16"), "payload is not UTF-8"),
]


@pytest.mark.parametrize("payload, message", JSON_ERRORS)
def test_json_response_errors(payload, message):
    with pytest.raises(ResponseError) as info:
        parse_response("json", payload)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and "\r" not in text and len(text) < 200


# ==================================================================================================
# Response payload -> HttpResponse: "http"


def parse_http(payload):
    resp = parse_response("http", payload)
    assert isinstance(resp, HttpResponse)
    return resp


def test_http_content_length_extra_bytes_ignored():
    resp = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                      b"X-A: 1\r\n\r\nhello, and more")
    assert resp == HttpResponse(200, "OK", [("Content-Type", "text/plain"), ("X-A", "1")], b"hello")


def test_http_repeated_content_length_equal_values():
    resp = parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabcdef")
    assert resp.body == b"abc" and resp.headers == []


def test_http_lf_only_lines():
    resp = parse_http(b"HTTP/1.0 404 Not Found\nX-A: 1\nX-A: 2\n\nline1\r\nline2\n")
    assert resp == HttpResponse(404, "Not Found", [("X-A", "1"), ("X-A", "2")],
                                b"line1\r\nline2\n")


def test_http_binary_body_without_length_is_byte_exact():
    data = bytes(range(256)) + b"\r\n\r\nHTTP/1.1 200 OK\r\n"
    resp = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + data)
    assert resp.body == data


def test_http_chunked_with_extension_and_trailer():
    payload = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n"
               b"Content-Type: text/plain\r\n\r\n"
               b"5;name=value\r\nhello\r\n"
               b"7 ; foo=\"bar\"\r\n, world\r\n"
               b"a\r\n\x00\r\n\x01\x02\x03\x04\x05\x06\x07\r\n"
               b"0;last\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n"
               b"garbage after the message")
    resp = parse_http(payload)
    assert resp == HttpResponse(200, "OK", [("Content-Type", "text/plain")],
                                b"hello, world\x00\r\n\x01\x02\x03\x04\x05\x06\x07")


def test_http_chunked_lf_only_and_no_final_empty_line():
    resp = parse_http(b"HTTP/1.1 200 OK\ntransfer-encoding: Chunked\n\n3\nabc\n1\nd\n0\n")
    assert resp.body == b"abcd" and resp.headers == []


def test_http_chunked_wins_over_content_length():
    resp = parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\nok\r\n0\r\n\r\n")
    assert resp.body == b"ok" and resp.headers == []


def test_http_no_reason_phrase():
    assert parse_http(b"HTTP/1.1 200\r\n\r\n").reason is None
    assert parse_http(b"HTTP/1.1 200 \r\n\r\n").reason is None


def test_http_header_section_ended_by_end_of_payload():
    assert parse_http(b"HTTP/1.1 204 No Content") == HttpResponse(204, "No Content", [], b"")
    assert parse_http(b"HTTP/1.1 200 OK\r\nX-A: 1") == HttpResponse(200, "OK", [("X-A", "1")], b"")


def test_http_obs_fold_joined_and_values_trimmed():
    resp = parse_http(b"HTTP/1.1 200 OK\r\nX-Long: part1\r\n \tpart2\r\nX-Pad: \t v \t\r\n\r\n")
    assert resp.headers == [("X-Long", "part1 part2"), ("X-Pad", "v")]


def test_http_utf8_header_value_and_reason():
    resp = parse_http("HTTP/1.1 200 Très bien\r\nX-Name: Zoë\r\n\r\n".encode())
    assert resp.reason == "Très bien" and resp.headers == [("X-Name", "Zoë")]


@pytest.mark.parametrize("status", [204, 304, 100])
def test_http_bodyless_status_ignores_framing(status):
    # A 304 may carry the Content-Length of the representation it stands for.
    resp = parse_http(f"HTTP/1.1 {status} X\r\nContent-Length: 1234\r\nETag: \"e\"\r\n\r\n"
                      "stray".encode())
    assert (resp.status, resp.body, resp.headers) == (status, b"", [("ETag", '"e"')])


def test_http_bytes_like_payload():
    assert parse_response("http", bytearray(b"HTTP/1.1 200 OK\r\n\r\nx")).body == b"x"


HTTP_ERRORS = [
    invalid("empty", b"", "bad status line b''"),
    invalid("HTTP/2", b"HTTP/2 200 OK\r\n\r\n", "bad status line"),
    invalid("lower-case http", b"http/1.1 200 OK\r\n\r\n", "bad status line"),
    invalid("four-digit status", b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
    invalid("no status", b"HTTP/1.1\r\n\r\n", "bad status line"),
    invalid("leading blank line", b"\r\nHTTP/1.1 200 OK\r\n\r\n", "bad status line"),
    invalid("status too high", b"HTTP/1.1 700 Nope\r\n\r\n", "status 700 is not in 100-599"),
    invalid("status too low", b"HTTP/1.1 099 Nope\r\n\r\n", "status 99 is not in 100-599"),
    invalid("JSON-quoted message", json.dumps("HTTP/1.1 200 OK\r\n\r\nhi").encode(),
            "a JSON string"),
    invalid("reason with bare CR", b"HTTP/1.1 200 O\rK\r\n\r\n", "control character"),
    invalid("reason not UTF-8", b"HTTP/1.1 200 \xff\r\n\r\n", "reason phrase is not UTF-8"),
    invalid("header without colon", b"HTTP/1.1 200 OK\r\nX-A 1\r\n\r\n", "has no colon"),
    invalid("space before colon", b"HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
            "header name b'X-A ' is not a valid token"),
    invalid("empty header name", b"HTTP/1.1 200 OK\r\n: 1\r\n\r\n", "is not a valid token"),
    invalid("fold before any header", b"HTTP/1.1 200 OK\r\n X-A: 1\r\n\r\n", "continues nothing"),
    invalid("bare CR in value", b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil\r\n\r\n",
            "header X-A has a CR, LF, NUL"),
    invalid("NUL in value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", "header X-A has a CR"),
    invalid("header not UTF-8", b"HTTP/1.1 200 OK\r\nX-A: \xe9t\xe9\r\n\r\n",
            "header X-A is not UTF-8"),
    invalid("truncated Content-Length body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
            "body is truncated: Content-Length 10, 5 bytes follow"),
    invalid("Content-Length not a number", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "Content-Length 'abc' is not a length"),
    invalid("Content-Length negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "is not a length"),
    invalid("Content-Length huge", b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 +
            b"\r\n\r\n", "is not a length"),
    invalid("conflicting Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\nab", "Content-Length '1,2' is not a length"),
    invalid("unsupported transfer coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked"
            b"\r\n\r\n0\r\n\r\n", "Transfer-Encoding 'gzip, chunked' is not supported"),
    invalid("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "bad chunk size line b'zz'"),
    invalid("negative chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            "bad chunk size line"),
    invalid("chunk size with 0x", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n"
            b"hello\r\n0\r\n\r\n", "bad chunk size line"),
    invalid("truncated chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10\r\nshort", "chunked body is truncated: chunk of 16 bytes, 5 follow"),
    invalid("chunk data too long", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabcd\r\n0\r\n\r\n", "chunk data is not followed by a line end"),
    invalid("no last chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n", "chunked body is truncated (no last chunk)"),
    invalid("chunked, no chunks at all", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "no last chunk"),
    invalid("bad trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nnot a trailer\r\n\r\n", "bad trailer line"),
]


@pytest.mark.parametrize("payload, message", HTTP_ERRORS)
def test_http_response_errors(payload, message):
    with pytest.raises(ResponseError) as info:
        parse_response("http", payload)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and "\r" not in text and len(text) < 200


def test_unknown_response_format():
    with pytest.raises(ValueError, match="unknown response format") as info:
        parse_response("xml", b"{}")
    assert not isinstance(info.value, ResponseError)


@pytest.mark.parametrize("fmt, seed_payload", [
    ("json", json.dumps({"statusCode": 200, "statusDescription": "HTTP 200 OK",
                         "headers": {"A": "1", "Connection": "x"},
                         "multiValueHeaders": {"B": ["1", 2]}, "cookies": ["c=1"],
                         "body": "aGVsbG8=", "isBase64Encoded": True}).encode()),
    ("http", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n  2\r\n\r\n"
             b"5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n"),
    ("http", b"HTTP/1.1 200 OK\nContent-Length: 5\nConnection: X-A\nX-A: 1\n\nhello"),
])
def test_mangled_payloads_raise_only_response_error(fmt, seed_payload):
    rng = random.Random(99)
    specials = b'\r\n\x00:;"{}[],0123456789abcdefHTTP/ \t\xff\xc3'
    for _ in range(2000):
        payload = bytearray(seed_payload)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(payload) + 1)
            action = rng.randrange(3)
            if action == 0 and i < len(payload):
                del payload[i:i + rng.randint(1, 8)]
            elif action == 1:
                payload.insert(i, rng.choice(specials))
            elif i < len(payload):
                payload[i] = rng.choice(specials)
        try:
            resp = parse_response(fmt, bytes(payload))
        except ResponseError as e:
            assert "\n" not in str(e)
            continue
        assert 100 <= resp.status <= 599
        assert isinstance(resp.body, bytes)
        for name, value in resp.headers:
            assert name and not set(name) & set(" :\r\n\x00")
            assert not set(value) & set("\r\n\x00")
            assert name.lower() not in ("connection", "transfer-encoding", "content-length")
