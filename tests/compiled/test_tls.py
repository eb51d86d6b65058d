"""https:// endpoints (issue 23): both transports against a local TLS endpoint whose certificates
are made here (the cryptography package): verification failures (wrong name, untrusted CA, expired)
fail the call with a clear reason and are never tried again; AWS_CA_BUNDLE and the config file's
ca_bundle are honoured; keep-alive reuse, session resumption on new connections, one TLS context
per endpoint; an idle connection the endpoint closed is replaced without failing a call.

The direct transport's TLS is OpenSSL's, from vmod_lambda._netio (TLSContext, TLSConn): these tests
need the build; without _netio they test the Python ssl fallback where they can.
"""

import time

import pytest

from support.fake_lambda import answer as reply, scripted
from support.invokers import STREAM_BODY, make_invoker as invoker, read_stream
from support.tls import CA, DAY, NOW
from vmod_lambda.invoker import InvokeError
from vmod_lambda.transport import direct

@pytest.fixture
def ca(tmp_path, monkeypatch):
    for k in ("AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_PROFILE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    c = CA(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(c.bundle))
    return c


@pytest.fixture
def serve():
    servers = []

    def start(ctx):
        s = scripted(tls_context=ctx)
        servers.append(s)
        # Connections accepted, handshakes that fail included (the fake counts the others).
        s.accepted = 0
        accept = s.server.get_request

        def counted():
            s.accepted += 1
            return accept()
        s.server.get_request = counted
        return s
    yield start
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def fresh_contexts(monkeypatch):
    """Each test its own shared TLS contexts (no session of another test's endpoint)."""
    monkeypatch.setattr(direct, "_tls_contexts", {})


needs_netio = pytest.mark.skipif(direct._netio is None, reason="vmod_lambda._netio is not built")


def fails(url, transport):
    with pytest.raises(InvokeError) as e:
        invoker(url, transport).invoke(b"{}")
    assert e.value.kind == "transport"
    return e.value.reason


@pytest.mark.parametrize("transport", ["direct", "boto3"])
def test_https_invoke_and_stream_with_aws_ca_bundle(ca, serve, transport):
    srv = serve(ca.server_context())
    srv.script.append(reply(200, {}, b'{"tls":true}'))
    assert invoker(srv.url, transport).invoke(b"{}").payload == b'{"tls":true}'
    srv.script.append(reply(200, {}, STREAM_BODY))
    data, complete = read_stream(invoker(srv.url, transport))
    assert data == b"hello stream" and complete.error_code is None


@pytest.mark.parametrize("transport", ["direct", "boto3"])
def test_the_config_files_ca_bundle_is_honoured(ca, serve, transport, tmp_path, monkeypatch):
    srv = serve(ca.server_context())
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert "certificate verify failed" in fails(srv.url, transport)
    cfg = tmp_path / "config"
    cfg.write_text(f"[default]\nca_bundle = {ca.bundle}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg))
    srv.script.append(reply(200, {}, b'"ok"'))
    assert invoker(srv.url, transport).invoke(b"{}").payload == b'"ok"'


@pytest.mark.parametrize("transport", ["direct", "boto3"])
@pytest.mark.parametrize("case, why", [
    ("wrong name", "Hostname mismatch"),
    ("untrusted CA", "unable to get local issuer certificate"),
    ("expired", "certificate has expired"),
])
def test_verification_failures_fail_the_call_once(ca, serve, tmp_path, transport, case, why):
    if case == "wrong name":
        ctx = ca.server_context(names=("lambda.example.org",))
    elif case == "untrusted CA":
        ctx = CA(tmp_path, "another CA").server_context()
    else:
        ctx = ca.server_context(not_before=NOW - 3 * DAY, not_after=NOW - 2 * DAY)
    srv = serve(ctx)
    reason = fails(srv.url, transport)
    # A clear reason: the endpoint and what OpenSSL (or urllib3's host name check) says.
    if transport == "direct":
        assert reason == f"TLS with the Lambda endpoint {srv.url} failed: certificate verify " \
                         f"failed: {why.lower()}", reason
    else:
        assert reason.startswith(f"SSLError: SSL validation failed for {srv.url}/"), reason
        assert ("doesn't match" if case == "wrong name" else why) in reason, reason
    # Nothing sent, and not tried again: one connection (one handshake) for the call.
    assert srv.requests == []
    assert srv.accepted == 1


@needs_netio
def test_a_ca_bundle_that_cannot_be_read_fails_each_call(ca, serve, monkeypatch, tmp_path):
    srv = serve(ca.server_context())
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    reason = fails(srv.url, "direct")
    assert "cannot load the CA bundle" in reason and "missing.pem" in reason
    assert srv.accepted == 0


@needs_netio
def test_keep_alive_resumption_and_one_context_per_endpoint(ca, serve):
    srv = serve(ca.server_context())
    a, b = invoker(srv.url, "direct"), invoker(srv.url, "direct")
    ctx = a.transport.client._tls
    assert isinstance(ctx, direct._netio.TLSContext)
    assert b.transport.client._tls is ctx          # shared by every object of the endpoint
    for _ in range(5):
        a.invoke(b"{}")
    # Five calls, one connection, one handshake (keep-alive), in C.
    assert srv.connections == 1 and ctx.stats == (1, 0)
    # Objects of one endpoint share the transport and its connections (clients.py): b's calls
    # would reuse a's connection; with the idle one dropped, b's first call opens a new
    # connection, which resumes the session of the first.
    assert b.transport is a.transport
    a.close()
    for _ in range(3):
        b.invoke(b"{}")
    assert srv.connections == 2 and ctx.stats == (2, 1)


@pytest.mark.parametrize("transport", ["direct", "boto3"])
def test_an_idle_connection_the_endpoint_closed_is_replaced(ca, serve, transport):
    srv = serve(ca.server_context())
    inv = invoker(srv.url, transport)
    inv.invoke(b"{}")
    srv.close_after_answer = True
    inv.invoke(b"{}")       # answered, then the endpoint closes the idle connection
    srv.close_after_answer = False
    deadline = time.monotonic() + 10
    while srv.closed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)         # (the server closes the socket just after finish())
    for _ in range(3):
        assert inv.invoke(b'"x"').payload == b"null"
    assert len(srv.requests) == 5 and srv.connections == 2
    if transport == "direct" and direct._netio is not None:
        assert inv.transport.client._tls.stats == (2, 1)


@needs_netio
def test_ip_address_endpoints_are_checked_against_ip_names(ca, serve):
    srv = serve(ca.server_context(names=("localhost",)))     # no IP address in the certificate
    url = srv.url.replace("localhost", "127.0.0.1")
    assert "ip address mismatch" in fails(url, "direct").lower()
    srv2 = serve(ca.server_context(names=("127.0.0.1",)))
    srv2.script.append(reply(200, {}, b'"ip"'))
    assert invoker(srv2.url.replace("localhost", "127.0.0.1"), "direct").invoke(b"{}").payload == b'"ip"'
