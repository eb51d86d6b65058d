"""vmod_lambda.fetch.StreamedFetch: a streaming backend fetch (InvokeWithResponseStream) against the
local emulator over real HTTP, without varnishd: the head from the prelude, the body as it comes,
and every way the stream can fail."""

import json
import time

import pytest

from vmod_lambda.config import validate_backend
from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS
from vmod_lambda._request import Request
from vmod_lambda.fetch import StreamedFetch
from vmod_lambda.invoker import InvokeError, Invoker

HEAD = Request("GET", "/s", "HTTP/1.1", [("Host", "x")])


def th(handler, **kw):
    return FunctionConfig(f"handlers_emulator:{handler}", path=[HANDLERS], **kw)


@pytest.fixture(scope="module")
def emu():
    with Emulator({"chunks": th("stream_chunks", timeout=30), "http": th("stream_http", timeout=30),
                   "error": th("stream_error", timeout=30), "fault": th("stream_fault", timeout=30),
                   "big": th("stream_big", timeout=120), "ctx": th("context_info")}) as e:
        yield e


def make(emu, name, timeout=30.0, **kw):
    return Invoker(validate_backend("b", name, "us-east-1", emu.url, timeout=timeout,
                                    event_format="2.0", streaming=True, **kw))




class EventInBody(Invoker):
    """An Invoker that sends a fixed event instead of the mapped request (handlers here are
    parameterised by their event)."""

    def __init__(self, base, event):
        self.__dict__.update(base.__dict__)
        self._fixed = json.dumps(event).encode()

    def invoke_stream(self, payload, qualifier=None, **kw):
        return Invoker.invoke_stream(self, self._fixed, qualifier, **kw)


def fetch(emu, name, event, **kw):
    inv = EventInBody(make(emu, name, **kw), event)
    f = StreamedFetch(inv, HEAD)
    return f


def drain(f):
    head = f.start()
    try:
        return head, head.body + b"".join(f.body())
    finally:
        f.close()


def test_prelude_sets_the_head_and_the_body_streams(emu):
    prelude = {"statusCode": 404, "headers": {"Content-Type": "text/html", "X-A": "1"},
               "cookies": ["s=1; HttpOnly", "t=2"]}
    head, body = drain(fetch(emu, "http", {"prelude": prelude, "parts": ["<p>", "\x00\xff", "</p>"]}))
    assert head.status == 404
    assert head.headers == [("Content-Type", "text/html"), ("X-A", "1"),
                            ("Set-Cookie", "s=1; HttpOnly"), ("Set-Cookie", "t=2")]
    assert body == b"<p>\x00\xff</p>"
    assert head.request_id


def test_a_plain_payload_is_the_body_of_a_200(emu):
    head, body = drain(fetch(emu, "chunks", {"n": 3, "size": 4, "text": "ab"}))
    assert head.status == 200 and head.headers == [("Content-Type", "application/octet-stream")]
    assert body == b"abab" * 3


def test_an_ordinary_function_is_streamed_too(emu):
    head, body = drain(StreamedFetch(make(emu, "ctx"), HEAD))
    assert head.status == 200 and json.loads(body)["function_name"] == "ctx"


def test_client_context_and_qualifier_reach_the_function(emu):
    inv = make(emu, "ctx", qualifier="5", client_context='{"custom": {"k": "v"}}')
    head, body = drain(StreamedFetch(inv, HEAD))
    doc = json.loads(body)
    assert doc["function_version"] == "5" and doc["invoked_function_arn"].endswith("ctx:5")
    assert doc["client_context"]["custom"] == {"k": "v"}


def test_the_head_comes_before_the_function_ends(emu):
    f = fetch(emu, "http", {"prelude": {"statusCode": 200}, "parts": ["a", "b"], "delay": 1.5})
    t0 = time.monotonic()
    head = f.start()
    t_head = time.monotonic() - t0
    rest = b"".join(f.body())
    t_end = time.monotonic() - t0
    f.close()
    assert head.status == 200 and head.body + rest == b"ab"
    assert t_end - t_head >= 1.0


def test_function_error_mid_stream(emu):
    f = fetch(emu, "error", {"delay": 0.2})
    head = f.start()
    assert head.status == 200 and head.body == b"partial output "
    with pytest.raises(InvokeError) as exc:
        for _ in f.body():
            pass
    f.close()
    assert exc.value.kind == "function_error"
    assert "ValueError: boom mid-stream" in str(exc.value)


@pytest.mark.parametrize("where", ["message", "prelude"])
def test_crc_corruption_breaks_the_fetch(emu, where):
    f = fetch(emu, "fault", {"fault": "corrupt_crc", "options": {"where": where}})
    assert f.start().body == b"before"
    with pytest.raises(InvokeError, match=f"broken response stream: {where} CRC mismatch"):
        list(f.body())
    f.close()


def test_a_cut_connection_is_a_broken_stream(emu):
    f = fetch(emu, "fault", {"fault": "close"})
    f.start()
    with pytest.raises(InvokeError) as exc:
        list(f.body())
    f.close()
    assert exc.value.kind in ("transport", "invalid_response")


def test_a_stall_beyond_the_read_timeout_is_a_timeout(emu):
    # The stall starts when the emulator has sent "before", not when this reader asks for more: a
    # reader that a loaded machine holds back for a while must still wait more than its timeout.
    f = fetch(emu, "fault", {"fault": "stall", "options": {"seconds": 10}}, timeout=1.0)
    f.start()
    with pytest.raises(InvokeError) as exc:
        list(f.body())
    f.close()
    assert exc.value.kind == "timeout"


def test_bad_prelude_is_an_invalid_response(emu):
    f = fetch(emu, "http", {"prelude": {"statusCode": 99}, "parts": ["x"]})
    with pytest.raises(InvokeError, match="invalid response: prelude: statusCode 99"):
        f.start()
    f.close()


def test_service_error_before_the_stream(emu):
    with pytest.raises(InvokeError) as exc:
        StreamedFetch(make(emu, "missing"), HEAD).start()
    assert exc.value.kind == "service" and "ResourceNotFoundException" in str(exc.value)


def test_oversized_request_is_413_without_invoking(emu):
    r = StreamedFetch(make(emu, "ctx"),
                      Request("GET", "/s", "HTTP/1.1", [("Host", "x")], None, 7_000_000)).start()
    assert r.status == 413


def test_big_stream_reads_in_bounded_pieces(emu):
    f = fetch(emu, "big", {"mb": 8})
    head = f.start()
    total, biggest = len(head.body), len(head.body)
    for data in f.body():
        total += len(data)
        biggest = max(biggest, len(data))
    f.close()
    assert total == 8 << 20 and biggest <= 65536


def test_a_fetch_after_a_failed_stream_gets_a_clean_connection(emu):
    """A stream cut short by an InvokeComplete error is not read to its end: its connection must
    be dropped, not handed back to the pool half-read (the next fetch would read its tail)."""
    base = make(emu, "error")
    for _ in range(3):
        f = StreamedFetch(EventInBody(base, {}), HEAD)
        f.start()
        with pytest.raises(InvokeError, match="boom mid-stream"):
            list(f.body())
        f.close()
        g = StreamedFetch(EventInBody(make(emu, "chunks"), {"n": 2, "size": 3}), HEAD)
        g.invoker.transport = base.transport    # the same connection pool
        head, body = drain(g)
        assert head.status == 200 and body == b"xxxxxx"
