"""The transports (vmod_lambda/transport/) through their one interface: the same test body runs over
"direct" and "boto3" (as aiohttp runs one suite over its C and Python parsers), against real local
endpoints: the emulator (lambda_emulator, with its fault hooks for response streams) and a hostile
Invoke API (tests/support/fake_lambda.py). Invoke, async invoke, InvokeWithResponseStream, and every way a
call fails: function errors, 429, 5xx, timeouts, refused and cut connections, broken streams."""

import json
import socket

import pytest

from support.fake_lambda import Action, FakeLambda
from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS
from vmod_lambda import eventstream
from vmod_lambda.config import TRANSPORTS, validate_backend
from vmod_lambda.invoker import InvocationRecord, Invoker
from vmod_lambda.limits import MAX_PAYLOAD
from vmod_lambda.transport.base import InvokeError, InvokeRequest, ResponseStream, Transport



def fn(handler, **kw):
    return FunctionConfig(handler, path=[HANDLERS], **kw)


@pytest.fixture(scope="module")
def emu():
    with Emulator({
        "echo": fn("handlers_transport:echo"),
        "fail": fn("handlers_transport:fail"),
        "slow": fn("handlers_transport:slow", timeout=30),
        "none": fn("handlers_transport:echo", reserved_concurrency=0),
        "chunks": fn("handlers_emulator:stream_chunks", timeout=30),
        "error": fn("handlers_emulator:stream_error", timeout=30),
        "fault": fn("handlers_emulator:stream_fault", timeout=30),
    }) as e:
        yield e


@pytest.fixture(params=TRANSPORTS)
def transport_name(request):
    return request.param


@pytest.fixture
def make(transport_name):
    """make(url, **backend args): the Transport of an object with this test's transport."""
    made = []

    def make(url, **kw):
        kw.setdefault("timeout", 10)
        inv = Invoker(validate_backend("t", kw.pop("function_name", "echo"), "us-east-1",
                                       endpoint_url=url, transport=transport_name, **kw))
        assert isinstance(inv.transport, Transport) and inv.transport.name == transport_name
        made.append(inv.transport)
        return inv.transport

    yield make
    for t in made:
        t.close()


def rec(invocation_type="RequestResponse"):
    return InvocationRecord(invocation_type, None, 0)


def call(transport, name, payload=b"{}", **kw):
    r = rec()
    return transport.invoke(InvokeRequest(name, payload, **kw), r), r


# ------------------------------------------------------------------------------------- invoke

def test_invoke_returns_the_payload_and_fills_the_record(emu, make):
    t = make(emu.url)
    res, r = call(t, "echo", b'{"q": [1, 2]}')
    assert json.loads(res.payload) == {"q": [1, 2]} and res.status == 200
    assert res.request_id and res.executed_version == "$LATEST"
    assert (r.status, r.request_id, r.received) == (200, res.request_id, len(res.payload))


def test_invoke_as_a_generator_and_plain_call_agree(emu, make):
    t = make(emu.url)
    gen = t.invoke_gen(InvokeRequest("echo", b'"g"'), rec())
    res = t.run(gen)
    assert res.payload == b'"g"'
    assert t.invoke(InvokeRequest("echo", b'"p"'), rec()).payload == b'"p"'


def test_log_tail_and_qualifier(emu, make):
    t = make(emu.url)
    res, r = call(t, "echo", b"1", qualifier="3", log_type="Tail")
    assert res.executed_version == "3" and r.executed_version == "3"
    assert res.log_result and r.log_result == res.log_result


def test_invoke_async_is_queued_with_202(emu, make):
    t = make(emu.url)
    r = rec("Event")
    res = t.invoke_async(InvokeRequest("echo", b'{"async": true}', log_type="Tail"), r)
    assert res.status == 202 and res.payload == b"" and r.status == 202
    assert emu.wait_idle(30)


def test_function_error(emu, make):
    r = rec()
    with pytest.raises(InvokeError) as e:
        make(emu.url).invoke(InvokeRequest("fail", b"{}"), r)
    assert e.value.kind == "function_error" and e.value.status == 200
    assert e.value.reason == "function error (Unhandled): ValueError: boom"
    assert e.value.request_id and r.request_id == e.value.request_id


def test_throttled_429(emu, make):
    r = rec()
    with pytest.raises(InvokeError) as e:
        make(emu.url).invoke(InvokeRequest("none", b"{}"), r)
    assert e.value.kind == "throttled" and e.value.status == 429 and r.status == 429
    assert e.value.reason.startswith("TooManyRequestsException (HTTP 429)")


@pytest.mark.parametrize("status, code", [(500, "ServiceException"),
                                          (502, "EC2UnexpectedException")])
def test_service_errors_5xx(make, status, code):
    with FakeLambda(lambda name, event: Action("status", b"bad day", status,
                                               headers={"type": code})) as fake:
        with pytest.raises(InvokeError) as e:
            call(make(fake.url), "f")
        assert e.value.kind == "service" and e.value.status == status
        assert e.value.reason == f"{code} (HTTP {status}): bad day"
        assert e.value.request_id == "fake-request-id"
        assert fake.invocations == 1, "never retried"


def test_read_timeout_is_not_retried(emu, make):
    emu.reset()
    with pytest.raises(InvokeError) as e:
        call(make(emu.url, timeout=1), "slow", b'{"seconds": 3}')
    assert e.value.kind == "timeout"
    assert str(e.value) == "timed out after 1s waiting for the function"
    assert emu.stats()["invocations"]["slow"] == 1
    assert emu.wait_idle(30)


def test_connection_refused(make):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    with pytest.raises(InvokeError) as e:
        call(make(url), "f")
    assert e.value.kind == "transport"
    assert str(e.value) == f"cannot connect to the Lambda endpoint {url}"


@pytest.mark.parametrize("kind", ["reset", "close", "partial"])
def test_connection_cut_before_the_answer_is_not_retried(make, kind):
    with FakeLambda(lambda name, event: Action(kind, b"x" * 100)) as fake:
        with pytest.raises(InvokeError) as e:
            call(make(fake.url), "f")
        assert e.value.kind == "transport"
        assert fake.invocations == 1, "a request that was sent is never sent again"


# ------------------------------------------------------------------ InvokeWithResponseStream

def stream(t, name, event, **kw):
    """(StreamResult, record) of an InvokeWithResponseStream call."""
    r = rec()
    return t.invoke_stream(InvokeRequest(name, json.dumps(event).encode(), **kw), r), r


def read_all(res):
    """(payload, complete event, error): the body decoded as the fetch decodes it."""
    decoder = eventstream.LambdaStream()
    payload, complete = bytearray(), None
    try:
        for data in res.raw.chunks(65536):
            for ev in decoder.feed(data):
                if ev.kind == "chunk":
                    payload += ev.data
                else:
                    complete = ev
        decoder.close()
    except (InvokeError, eventstream.EventStreamError) as e:
        res.raw.close()
        return bytes(payload), complete, e
    res.raw.release_conn()
    return bytes(payload), complete, None


def test_stream_head_then_body(emu, make):
    t = make(emu.url)
    res, r = stream(t, "chunks", {"n": 4, "size": 5, "text": "ab"}, log_type="Tail")
    assert isinstance(res.raw, ResponseStream)
    assert res.status == 200 and res.request_id and r.request_id == res.request_id
    assert res.executed_version == "$LATEST"
    assert res.content_type == "application/vnd.amazon.eventstream"
    payload, complete, err = read_all(res)
    assert err is None and payload == b"ababa" * 4
    assert complete.error_code is None and complete.log_result
    # The connection of a stream read to its end carries the next one.
    res, _ = stream(t, "chunks", {"n": 1, "size": 3})
    assert read_all(res)[:1] == (b"xxx",)


def test_stream_qualifier(emu, make):
    res, r = stream(make(emu.url), "chunks", {"n": 1}, qualifier="7")
    assert res.executed_version == "7" == r.executed_version
    assert read_all(res)[2] is None


def test_stream_function_error_mid_stream(emu, make):
    res, _ = stream(make(emu.url), "error", {})
    payload, complete, err = read_all(res)
    assert err is None and payload == b"partial output then"
    assert complete.error_code == "ValueError" and "boom mid-stream" in complete.error_details


def test_stream_throttled(emu, make):
    r = rec()
    with pytest.raises(InvokeError) as e:
        make(emu.url).invoke_stream(InvokeRequest("none", b"{}"), r)
    assert e.value.kind == "throttled" and e.value.status == 429 and r.status == 429


@pytest.mark.parametrize("where", ["message", "prelude"])
def test_stream_bad_crc(emu, make, where):
    res, _ = stream(make(emu.url), "fault", {"fault": "corrupt_crc", "options": {"where": where}})
    payload, complete, err = read_all(res)
    assert isinstance(err, eventstream.EventStreamError) and "CRC mismatch" in str(err)
    assert payload == b"before" and complete is None


def test_stream_stall_beyond_the_read_timeout(emu, make):
    t = make(emu.url, timeout=1)
    res, _ = stream(t, "fault", {"fault": "stall", "options": {"seconds": 3}})
    payload, complete, err = read_all(res)
    assert isinstance(err, InvokeError) and err.kind == "timeout"
    assert str(err) == "timed out after 1s waiting for the next bytes of the response stream"
    assert payload == b"before"
    assert emu.wait_idle(30)


def test_stream_cut_connection(emu, make):
    res, _ = stream(make(emu.url), "fault", {"fault": "close"})
    payload, complete, err = read_all(res)
    assert payload == b"before" and complete is None
    assert isinstance(err, InvokeError) and err.kind == "transport", err
    assert str(err).startswith("the response stream broke: ")


def test_stream_connection_refused(make):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    with pytest.raises(InvokeError) as e:
        make(url).invoke_stream(InvokeRequest("f", b"{}"), rec())
    assert e.value.kind == "transport"
    assert str(e.value) == f"cannot connect to the Lambda endpoint {url}"


# ------------------------------------------------------- the Invoker: the record with the outcome

@pytest.fixture
def make_invoker(transport_name):
    """make_invoker(url, **backend args): an Invoker (the facade) with this test's transport."""
    made = []

    def make(url, **kw):
        kw.setdefault("timeout", 10)
        inv = Invoker(validate_backend("t", kw.pop("function_name", "echo"), "us-east-1",
                                       endpoint_url=url, transport=transport_name, **kw))
        assert inv.transport.name == transport_name
        made.append(inv)
        return inv

    yield make
    for inv in made:
        inv.close()


def test_the_invokers_record_comes_with_each_result(emu, make_invoker):
    """No thread-local record: each call's InvocationRecord is on its own result, also when
    several calls of one thread are under way at once (a multiplexed worker's)."""
    inv = make_invoker(emu.url)
    res = inv.invoke(b'{"q": 1}')
    r = res.record
    assert isinstance(r, InvocationRecord) and r.invocation_type == "RequestResponse"
    assert (r.status, r.request_id, r.sent, r.received) == (200, res.request_id, 8,
                                                            len(res.payload))
    first, second = inv.invoke_gen(b'"a"'), inv.invoke_gen(b'"bbbb"')
    res2 = inv.transport.run(second)
    res1 = inv.transport.run(first)
    assert (res1.payload, res1.record.sent, res1.record.request_id) == (b'"a"', 3, res1.request_id)
    assert (res2.payload, res2.record.sent, res2.record.request_id) == (b'"bbbb"', 6,
                                                                        res2.request_id)
    assert res1.request_id != res2.request_id and res1.record is not res2.record
    res = inv.invoke(b"{}", "Event")
    assert res.record.invocation_type == "Event" and res.record.status == 202
    assert emu.wait_idle(30)


def test_the_invokers_record_comes_with_each_error(emu, make_invoker):
    with pytest.raises(InvokeError) as e:
        make_invoker(emu.url, function_name="fail").invoke(b"{}")
    r = e.value.record
    assert e.value.kind == "function_error" and isinstance(r, InvocationRecord)
    assert (r.status, r.request_id, r.sent) == (200, e.value.request_id, 2)
    with pytest.raises(InvokeError) as e:
        make_invoker(emu.url, function_name="none").invoke(b"{}")
    assert e.value.kind == "throttled" and e.value.record.status == 429
    with pytest.raises(InvokeError) as e:
        make_invoker(emu.url, function_name="none").invoke_stream(b"{}")
    assert e.value.kind == "throttled" and e.value.record.status == 429
    # Nothing was sent: no record.
    with pytest.raises(InvokeError) as e:
        make_invoker(emu.url).invoke(b"x" * (MAX_PAYLOAD + 1))
    assert e.value.kind == "payload" and e.value.record is None


def test_the_invokers_record_comes_with_a_stream(emu, make_invoker):
    inv = make_invoker(emu.url, function_name="chunks")
    res = inv.invoke_stream(json.dumps({"n": 2, "size": 3}).encode())
    r = res.record
    assert isinstance(r, InvocationRecord) and (r.status, r.request_id) == (200, res.request_id)
    assert read_all(res)[:1] == (b"xxxxxx",)
