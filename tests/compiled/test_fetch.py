"""vmod_lambda.fetch: one backend fetch (the request record as the director hands it over) through a
scripted Lambda API over real HTTP."""

import json

import pytest

from support.fake_lambda import Action
from support.invokers import make_invoker as invoker
from vmod_lambda._request import Request
from vmod_lambda.fetch import client_ip, handle
from vmod_lambda.invoker import InvokeError

HEADERS = [("Host", "shop.example"), ("X-Forwarded-For", "10.0.0.1, 192.0.2.7"),
           ("Cookie", "a=1; b=2")]
HEAD = Request("GET", "/a/b?x=1&x=2", "HTTP/1.1", HEADERS)


def test_request_record_keeps_order_and_repeats():
    r = Request("POST", "/x", "HTTP/1.0", [("A", "1"), ("A", "2"), ("B", " \tspaced \t")],
                b"data")
    assert (r.method, r.url, r.proto) == ("POST", "/x", "HTTP/1.0")
    assert r.headers == [("A", "1"), ("A", "2"), ("B", "spaced")]
    assert (r.body, r.body_len) == (b"data", 4)
    # the head as Varnish sends it: "POST\n/x\nHTTP/1.0\nA: 1\n..." (bereq_hdrbytes)
    assert r.head_bytes == len("POST\n/x\nHTTP/1.0\nA: 1\nA: 2\nB:  \tspaced \t\n")
    assert Request("GET", "/", "HTTP/1.1", [], None, 7 * 1024 * 1024).body is None


def test_source_ip_is_the_entry_varnish_appended():
    assert client_ip([("X-Forwarded-For", "10.0.0.1, 192.0.2.7")]) == "192.0.2.7"
    assert client_ip([]) == "127.0.0.1"


@pytest.mark.parametrize("fmt, probe", [
    ("1.0", lambda e: e["multiValueQueryStringParameters"]["x"] == ["1", "2"]),
    ("2.0", lambda e: e["rawQueryString"] == "x=1&x=2" and e["cookies"] == ["a=1", "b=2"]),
    ("alb", lambda e: "elb" in e["requestContext"] and e["queryStringParameters"]["x"] == "2"),
])
def test_the_event_sent_is_in_the_configured_format(api, fmt, probe):
    api.script.append(Action("payload", b'{"statusCode":201,"headers":{"X-A":"1"},"body":"made"}'))
    r = handle(invoker(api.url, event_format=fmt), HEAD)
    event = json.loads(api.requests[0][2])
    assert probe(event)
    assert (r.status, r.headers, r.body) == (201, [("X-A", "1")], b"made")
    assert r.request_id == "req-1"


def test_body_over_the_limit_is_answered_413_without_invoking(api):
    r = handle(invoker(api.url), Request("GET", "/a", "HTTP/1.1", HEADERS, None, 7 * 1024 * 1024))
    assert r.status == 413
    assert "answered 413 without invoking" in r.note
    assert api.requests == []


def test_event_over_the_limit_is_answered_413_without_invoking(api):
    r = handle(invoker(api.url), Request("POST", "/a/b?x=1&x=2", "HTTP/1.1",
                                         HEADERS + [("Content-Type", "text/plain")],
                                         b"x" * (6 * 1024 * 1024 - 10)))
    assert r.status == 413
    assert r.note.startswith("event of ")
    assert api.requests == []


@pytest.mark.parametrize("payload, reason", [
    (b'{"statusCode":700}', "invalid response: statusCode 700 is not in 100-599"),
    (b'{"statusCode":101,"body":""}', "invalid response: status 101 is an interim (1xx)"),
    (b'not json', "invalid response: payload is not valid JSON"),
])
def test_invalid_responses_fail_with_the_request_id(api, payload, reason):
    api.script.append(Action("payload", payload))
    with pytest.raises(InvokeError) as e:
        handle(invoker(api.url), HEAD)
    assert e.value.kind == "invalid_response"
    assert str(e.value).startswith(reason)
    assert str(e.value).endswith("(RequestId: req-1)")


def test_function_errors_propagate(api):
    api.script.append(Action("payload", b'{"errorType":"E","errorMessage":"m"}',
                             headers={"X-Amz-Function-Error": "Unhandled"}))
    with pytest.raises(InvokeError) as e:
        handle(invoker(api.url), HEAD)
    assert e.value.kind == "function_error"
