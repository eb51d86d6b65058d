"""The direct transport's connect is a step of the call, not a wait of the thread (issue 17).

With _netio, a new connection's connect is made on a non-blocking socket and its wait for the
connect to finish is yielded as a _netio.Wait (POLLOUT), which the worker pool polls with its other
jobs' exchanges (tests/varnish/test_nonblocking_connect.py checks that through varnishd); SO_ERROR
then says how it ended. Checked here without varnishd: the wait is yielded, not done in the
generator; it is bounded by the connect timeout and by the call's deadline; the errors are what
they were with the blocking connect (a timeout: "timed out after ...s connecting to the endpoint";
refused: "cannot connect to the Lambda endpoint ...", tried once more); a name that resolves to
several addresses is tried address after address, as socket.create_connection() does.
"""

import select
import time

import pytest

from support.fake_lambda import FakeLambda
from support.hung_endpoints import FullBacklog, SilentTLS, closed_port
from support.invokers import make_invoker
from support.listeners import stop_listening
from vmod_lambda.invoker import InvokeError
from vmod_lambda.transport import direct


@pytest.fixture(autouse=True)
def need_netio():
    if direct._netio is None:
        pytest.skip("vmod_lambda._netio is not built")


def client(url, connect_timeout=0.5, read_timeout=5.0):
    return direct.DirectClient(url, "us-east-1", "lambda", _Creds(), connect_timeout,
                               read_timeout, 4, "test")


class _Creds:
    def get_frozen_credentials(self):
        from botocore.credentials import ReadOnlyCredentials
        return ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)


def test_the_connect_wait_is_yielded_not_done():
    """The first work a call on a new connection yields is the connect's wait: a Wait for POLLOUT
    on the connecting socket, with the connect timeout; the generator never waited itself."""
    with FullBacklog() as hung:
        gen = client(hung.url, connect_timeout=0.5).invoke_gen("fn", b"{}")
        op = next(gen)
        assert type(op) is direct._netio.Wait
        assert op.events == select.POLLOUT and op.timeout == 0.5 and op.end == 0.0
        assert op.run() is False            # the connect got no answer within 0.5 s
        with pytest.raises(direct.ConnectTimeout):
            gen.send(False)


def test_the_call_deadline_bounds_the_connect_wait():
    with FullBacklog() as hung:
        deadline = time.monotonic() + 0.3
        gen = client(hung.url, connect_timeout=5.0).invoke_gen("fn", b"{}", deadline=deadline)
        op = next(gen)
        assert op.timeout == 5.0 and op.end == deadline
        assert op.run() is False
        assert time.monotonic() < deadline + 2.0    # (not the 5 s connect timeout)
        with pytest.raises(direct.ConnectTimeout):
            gen.send(False)


def test_a_connect_timeout_is_a_timeout_with_the_same_message():
    with FullBacklog() as hung:
        with pytest.raises(InvokeError) as e:
            make_invoker(hung.url, "direct", timeout=0.4).invoke(b"{}")
    assert e.value.kind == "timeout"
    assert str(e.value) == "timed out after 0.4s connecting to the endpoint"


def test_a_refused_connect_is_a_transport_failure_tried_once_more():
    url = f"http://127.0.0.1:{closed_port()}"
    inv = make_invoker(url, "direct", timeout=1.0)
    tries = []
    real = inv.transport.client._connect_gen

    def counting(deadline=0.0):
        tries.append(1)
        return (yield from real(deadline))

    inv.transport.client._connect_gen = counting
    with pytest.raises(InvokeError) as e:
        inv.invoke(b"{}")
    assert e.value.kind == "transport"
    assert str(e.value) == f"cannot connect to the Lambda endpoint {url}"
    assert len(tries) == 2


def test_every_address_of_a_name_is_tried_in_turn(monkeypatch):
    """A name whose first address refuses connects to the next one, as create_connection does
    (its lookup is a name's, not an address literal's)."""
    import socket
    with FakeLambda() as api:
        port = int(api.url.rsplit(":", 1)[1])
        real = socket.getaddrinfo
        refused = closed_port()

        def two(host, port_, *a):
            if host != "lambda.test":
                return real(host, port_, *a)
            if len(a) >= 4 and a[3] & socket.AI_NUMERICHOST:
                raise socket.gaierror(socket.EAI_NONAME, "not an address")
            return (real("127.0.0.1", refused, 0, socket.SOCK_STREAM) +
                    real("127.0.0.1", port, 0, socket.SOCK_STREAM))

        monkeypatch.setattr(direct.socket, "getaddrinfo", two)
        c = direct.DirectClient(f"http://lambda.test:{port}", "us-east-1", "lambda", _Creds(),
                                1.0, 5.0, 4, "test")
        r = direct.run(c.invoke_gen("fn", b"{}"))
    assert r.status == 200 and r.body == b"null"


def test_the_tls_handshake_waits_are_yielded_and_bounded_by_the_connect_timeout():
    """A new https:// connection to an endpoint that accepts it and never answers the ClientHello:
    after the connect, the handshake's wait is yielded (a Wait for POLLIN: the ClientHello was
    sent), with the connect timeout; when it expires the call fails as the TLS handshake's
    timeout, with the message it had before."""
    with SilentTLS() as hung:
        gen = client(hung.url, connect_timeout=0.4, read_timeout=5.0).invoke_gen("fn", b"{}")
        op = next(gen)
        if op.events == select.POLLOUT:         # (the connect's wait, when it did not end at once)
            op = gen.send(op.run())
        assert type(op) is direct._netio.Wait
        assert op.events == select.POLLIN and op.timeout == 0.4
        assert op.run() is False
        with pytest.raises(direct.HandshakeTimeout):
            gen.send(False)
        with pytest.raises(InvokeError) as e:
            make_invoker(hung.url, "direct", timeout=0.4).invoke(b"{}")
    assert e.value.kind == "timeout"
    assert str(e.value) == "timed out after 0.4s in the TLS handshake with the Lambda endpoint"


def test_a_handshake_the_endpoint_cuts_is_a_tls_failure():
    """An endpoint that accepts and closes at once: TLSFailed with OpenSSL's reason, not tried
    again (as the exchange's TLS_FAILED was)."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(1)
            c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        url = f"https://127.0.0.1:{srv.getsockname()[1]}"
        with pytest.raises(InvokeError) as e:
            make_invoker(url, "direct", timeout=2.0).invoke(b"{}")
    finally:
        stop_listening(srv, t)      # never close() under the accept() (support.listeners)
    assert e.value.kind == "transport"
    assert str(e.value).startswith(f"TLS with the Lambda endpoint {url} failed: ")
    assert len(accepted) == 1
