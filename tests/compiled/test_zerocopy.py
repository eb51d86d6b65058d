"""The direct transport hands the buffer an answer's body was received into over to its caller
(_netio.RawBody; issue 17): one allocation sized from the Content-Length, read into as the bytes
arrive, no bytes object and no second copy; the director's job takes it over (_director.pyx,
_FetchRef.take). Every other framing, and every caller that did not ask for it, still gets bytes.
The 6 MB cap is checked before the buffer is made."""

import socket
import threading
import time

import pytest

from support.fake_lambda import FakeLambda, answer as reply
from support.invokers import make_invoker as invoker
from support.listeners import stop_listening
from vmod_lambda import fetch
from vmod_lambda.invoker import InvokeError
from vmod_lambda.limits import MAX_RESPONSE_BODY
from vmod_lambda.transport import direct

_netio = pytest.importorskip("vmod_lambda._netio")


class PieceServer:
    """A loopback server answering each request it reads with pieces of bytes, a pause between
    them (so that the body arrives in several reads), then keeping the connection or closing it."""

    def __init__(self, pieces, pause=0.02, close=False):
        self.pieces, self.pause, self.close = pieces, pause, close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            for i, p in enumerate(self.pieces):
                if i:
                    time.sleep(self.pause)
                conn.sendall(p)
            if not self.close:
                time.sleep(0.5)

    def exchange(self, raw=True):
        c = socket.create_connection(("127.0.0.1", self.port))
        try:
            c.setblocking(False)
            return _netio.exchange(c.fileno(), b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                                   b"{}", False, 5.0, 0, raw)
        finally:
            c.close()

    def stop(self):
        stop_listening(self.sock, self.thread)     # never close() under the accept()


def serve(pieces, **kw):
    return PieceServer(pieces, **kw)


def head(n, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, extra)


BODY = bytes(range(256)) * 4096 + b"tail"       # 1 MiB and a bit, every byte value


@pytest.mark.parametrize("pieces", [
    [head(len(BODY)) + BODY],                                           # one send
    [head(len(BODY)), BODY[:100], BODY[100:700000], BODY[700000:]],     # head alone, then reads
    [head(len(BODY)) + BODY[:3], BODY[3:]],                             # head and a bit
    [head(len(BODY))[:10], head(len(BODY))[10:], BODY],                 # the head cut in two
], ids=["whole", "pieces", "head-and-some", "head-cut"])
def test_a_body_of_known_length_comes_in_its_own_buffer(pieces):
    srv = serve(pieces)
    try:
        rc, err, rhead, body, complete = srv.exchange()
    finally:
        srv.stop()
    assert (rc, err, complete) == (_netio.OK, 0, True)
    assert rhead == head(len(BODY))
    assert type(body) is _netio.RawBody and len(body) == len(BODY)
    assert bytes(body) == BODY and bytes(memoryview(body)) == BODY
    assert _netio.detach(body) == (BODY, True)      # handed over whole, NUL-terminated
    assert len(body) == 0 and bytes(body) == b"" and _netio.detach(body) is None


def test_a_small_body_and_an_empty_one_too():
    for payload in (b"", b"{}"):
        srv = serve([head(len(payload)) + payload])
        try:
            rc, _, _, body, complete = srv.exchange()
        finally:
            srv.stop()
        assert rc == _netio.OK and complete and type(body) is _netio.RawBody
        assert bytes(body) == payload and _netio.detach(body) == (payload, True)


def test_a_held_view_refuses_the_hand_over():
    """A memoryview points into the buffer: detaching it then would leave the view dangling."""
    srv = serve([head(len(BODY)) + BODY])
    try:
        body = srv.exchange()[3]
    finally:
        srv.stop()
    view = memoryview(body)
    assert _netio.detach(body) is None and bytes(view[-4:]) == b"tail"
    view.release()
    assert _netio.detach(body) == (BODY, True)


@pytest.mark.parametrize("pieces, complete", [
    # chunked, and a body up to the end of the connection: Python reads the rest, from bytes
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], False),
    ([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end"], False),
    # more than the Content-Length in the first read: the old path (Python sees it all)
    ([head(2) + b"okEXTRA"], False),
    # no body by its status
    ([b"HTTP/1.1 204 No Content\r\n\r\n"], False),
])
def test_other_framings_still_come_as_bytes(pieces, complete):
    srv = serve(pieces, close=True)
    try:
        rc, _, _, body, got_complete = srv.exchange()
    finally:
        srv.stop()
    assert rc == _netio.OK and type(body) is bytes and got_complete is complete


def test_without_raw_a_body_comes_as_bytes():
    srv = serve([head(len(BODY)), BODY])
    try:
        rc, _, _, body, complete = srv.exchange(raw=False)
    finally:
        srv.stop()
    assert rc == _netio.OK and complete and type(body) is bytes and body == BODY


def test_a_body_cut_short_frees_its_buffer_and_fails():
    srv = serve([head(len(BODY)) + BODY[:5000]], close=True)
    try:
        rc, _, _, body, complete = srv.exchange()
    finally:
        srv.stop()
    assert rc == _netio.RECV_ERROR and body is None and not complete


def test_the_6mb_cap_is_checked_before_the_buffer_is_made():
    srv = serve([head(MAX_RESPONSE_BODY + 1)], close=True)
    try:
        rc, _, rhead, body, complete = srv.exchange()
    finally:
        srv.stop()
    assert rc == _netio.TOO_LARGE and body is None and rhead.startswith(b"HTTP/1.1 200")


# --------------------------------------------------------------- through the transport and fetch

PAYLOAD = b'{"statusCode": 200, "body": "' + b"x" * (1 << 20) + b'"}'


@pytest.fixture
def api():
    with FakeLambda() as srv:
        yield srv


class Taker:
    """A take() that records what it was given and takes it (the buffer handed over), or not."""

    def __init__(self, takes):
        self.takes, self.got = takes, []

    def __call__(self, payload):
        self.got.append((type(payload), bytes(payload)))
        if self.takes and type(payload) is _netio.RawBody:
            assert _netio.detach(payload) == (PAYLOAD, True)
        return self.takes


class NoHeaders:
    """The request record, as far as handle_gen() reads it when the event is given."""

    def header(self, name):
        return None


@pytest.mark.parametrize("transport, kind", [("direct", _netio.RawBody), ("boto3", bytes)])
def test_the_invoker_hands_the_buffer_over_only_when_asked(api, transport, kind):
    api.script += [reply(200, {}, PAYLOAD), reply(200, {}, PAYLOAD)]
    inv = invoker(api.url, transport)
    res = direct.run(inv.invoke_gen(b"{}", raw_body=True)) if transport == "direct" else \
        inv.invoke(b"{}")
    assert type(res.payload) is (kind if transport == "direct" else bytes)
    assert bytes(res.payload) == PAYLOAD and res.record.received == len(PAYLOAD)
    res = inv.invoke(b"{}")
    assert type(res.payload) is bytes and res.payload == PAYLOAD


@pytest.mark.parametrize("answer", [
    (500, {"X-Amzn-ErrorType": "ServiceException"}, b'{"Message": "boom"}'),
    (200, {"X-Amz-Function-Error": "Unhandled"}, b'{"errorMessage": "bad", "errorType": "E"}'),
], ids=["service-error", "function-error"])
def test_failed_invocations_read_the_same_with_the_buffer(api, answer):
    """The errors' messages are made from bytes, as without the hand-over."""
    api.script += [reply(*answer), reply(*answer)]
    inv = invoker(api.url, "direct")
    errors = []
    for raw in (True, False):
        with pytest.raises(InvokeError) as e:
            direct.run(inv.invoke_gen(b"{}", raw_body=raw))
        errors.append((e.value.kind, str(e.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("transport", ["direct", "boto3"])
def test_handle_gen_gives_take_the_buffer_and_maps_it_in_python_when_not_taken(api, transport):
    api.script += [reply(200, {}, PAYLOAD)] * 2
    inv = invoker(api.url, transport)
    plain = fetch.parse_response("json", PAYLOAD)
    for takes in (True, False):
        taker = Taker(takes)
        r = direct.run(fetch.handle_gen(inv, NoHeaders(), b"{}", take=taker))
        assert taker.got == [(_netio.RawBody if transport == "direct" else bytes, PAYLOAD)]
        assert r.taken is takes
        if not takes:
            assert (r.status, r.headers, r.body) == (plain.status, plain.headers, plain.body)
