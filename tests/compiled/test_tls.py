"""https:// endpoints (issue 23): both transports against a local TLS endpoint whose certificates
are made here (the cryptography package): verification failures (wrong name, untrusted CA, expired)
fail the call with a clear reason and are never tried again; AWS_CA_BUNDLE and the config file's
ca_bundle are honoured; keep-alive reuse, session resumption on new connections, one TLS context
per endpoint; an idle connection the endpoint closed is replaced without failing a call.

The direct transport's TLS is OpenSSL's, from vmod_lambda._netio (TLSContext, TLSConn): these tests
need the build; without _netio they test the Python ssl fallback where they can.
"""

import datetime
import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ssl

from test_direct import STREAM_BODY, Scripted, invoker, read_stream
from vmod_lambda.invoker import InvokeError
from vmod_lambda.transport import direct

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    """A certificate authority, and server certificates it signs."""

    def __init__(self, tmp_path, cn="vmod-lambda test CA"):
        self.dir = tmp_path
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = tmp_path / f"ca-{cn.replace(' ', '_')}.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_context(self, names=("localhost", "127.0.0.1"), not_after=None, not_before=None):
        key = ec.generate_private_key(ec.SECP256R1())
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + DAY)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path = self.dir / f"server-{x509.random_serial_number()}.pem"
        key_path = cert_path.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx


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
        s = Scripted(tls_context=ctx)
        servers.append(s)
        # Connections accepted, handshakes that fail included (Scripted counts the others).
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
    srv.answers.append((200, {}, b'{"tls":true}'))
    assert invoker(srv.url, transport).invoke(b"{}").payload == b'{"tls":true}'
    srv.answers.append((200, {}, STREAM_BODY))
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
    srv.answers.append((200, {}, b'"ok"'))
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
    srv2.answers.append((200, {}, b'"ip"'))
    assert invoker(srv2.url.replace("localhost", "127.0.0.1"), "direct").invoke(b"{}").payload == b'"ip"'


# ------------------------------------------------------------------------------ through varnishd

def _fetch_answer(name, event):
    from fake_lambda import Action, event_path
    path = event_path(event)
    if not path:            # invoke(): the payload back
        return Action("payload", b'{"invoked":' + event + b'}')
    return Action("payload", json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"},
                                         "body": f"https answer for {path}"}).encode())


def test_https_fetch_and_invoke_through_varnishd():
    """A backend fetch and invoke() over https:// (TLS in C, the CA trusted through AWS_CA_BUNDLE),
    for both transports; an endpoint whose certificate names another host fails the fetch and the
    invoke() with the reason in the log, and the endpoint is never asked."""
    from varnish_harness import require_stage
    require_stage()
    # The jailed child reads the CA bundle: a world-readable folder (pytest's tmp_path is not).
    certdir = tempfile.mkdtemp(prefix="vmod-lambda-tls-")
    os.chmod(certdir, 0o755)
    try:
        _through_varnishd(pathlib.Path(certdir))
    finally:
        shutil.rmtree(certdir, ignore_errors=True)


def _through_varnishd(certdir):
    from fake_lambda import FakeLambda
    from varnish_harness import Varnishd
    ca = CA(certdir)
    os.chmod(ca.bundle, 0o644)
    with FakeLambda(_fetch_answer, tls_context=ca.server_context()) as good, \
            FakeLambda(_fetch_answer, tls_context=ca.server_context(names=("elsewhere.example",))) as bad:
        vcl = f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new fn = lambda.backend("tls-fn", "us-east-1", "{good.url}", timeout = 5s);
    new b3 = lambda.backend("tls-fn", "us-east-1", "{good.url}", timeout = 5s, transport = "boto3");
    new wrong = lambda.backend("tls-fn", "us-east-1", "{bad.url}", timeout = 5s);
}}
sub vcl_recv {{
    if (req.url ~ "^/invoke/") {{
        return (synth(200));
    }}
    if (req.url ~ "^/wrong/") {{
        set req.backend_hint = wrong.backend();
    }} elsif (req.url ~ "^/boto3/") {{
        set req.backend_hint = b3.backend();
    }} else {{
        set req.backend_hint = fn.backend();
    }}
    return (pass);
}}
sub vcl_synth {{
    if (req.url ~ "^/invoke/wrong") {{
        set resp.body = wrong.invoke("1");
    }} elsif (req.url ~ "^/invoke/boto3") {{
        set resp.body = b3.invoke("2");
    }} else {{
        set resp.body = fn.invoke("3");
    }}
    return (deliver);
}}
"""
        with Varnishd(vcl, env={"AWS_CA_BUNDLE": str(ca.bundle)}) as v:
            for path in ("/direct/a", "/boto3/b", "/direct/c"):
                status, _h, body = v.request(path)
                assert (status, body) == (200, f"https answer for {path}".encode())
            assert v.request("/invoke/direct")[2] == b'{"invoked":3}'
            assert v.request("/invoke/boto3")[2] == b'{"invoked":2}'
            assert v.request("/wrong/x")[0] == 503
            assert v.request("/invoke/wrong")[0] == 500     # invoke() failed the VCL
            log = subprocess.run(["varnishlog", "-d", "-n", v.workdir, "-g", "raw",
                                  "-i", "FetchError,VCL_Error,VCL_Log"],
                                 capture_output=True, text=True, timeout=30).stdout
            assert not v.panicked()
        expected = (f"TLS with the Lambda endpoint {bad.url} failed: certificate verify failed: "
                    f"hostname mismatch")
        lines = [line for line in log.splitlines() if expected in line]
        assert len(lines) >= 2, log[-3000:]         # the fetch's and the invoke()'s
        assert bad.invocations == 0
        assert good.invocations == 5
