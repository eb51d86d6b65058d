"""Security properties, checked against a real varnishd with a full varnishlog capture.

* The AWS credentials (access key id, secret, session token) and the SigV4 Authorization header
  never reach VSL or varnishd's output, on success nor on any failure path, even when the
  endpoint echoes the request's Authorization header back in its error message.
* Requests are signed with what boto3's credential chain gives (environment, or a shared
  credentials file when the environment has none), and nothing from the client request becomes an
  HTTP header of the Invoke request.
* Header injection is impossible in both directions: client header values are data inside the
  JSON event; function header values with CR/LF are refused (see also test_hostile.py).
* The emulator listens on loopback only by default.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from support.fake_lambda import Action, FakeLambda, event_path
from support.http_helpers import raw_request
from support import HANDLERS, ROOT
from support.varnish_harness import Varnishd, require_stage

AKID = "AKIDSECURITYTESTKEY1"
SECRET = "sEcReT/security+test/0123456789abcdefghij"
TOKEN = "SESSIONTOKEN-security-test-0123456789"
FILE_AKID = "AKIDFROMSHAREDFILE01"
FILE_SECRET = "file-secret-0123456789/abcdefghijklmnop"


class Echo:
    """Answers according to the path, and can echo the request's Authorization header back."""

    def __init__(self):
        self.fake = FakeLambda(self.route)
        self.fake.keep_events = True

    def route(self, name, event):
        path = event_path(event) if event.startswith(b"{") else ""
        auth = self.fake.events[-1][1].get("Authorization", "") if self.fake.events else ""
        if path.startswith("/echo-auth") or event == b"echo-auth":
            return Action("status", f"The request signature we calculated does not match. "
                          f"Authorization: {auth} Secret: {SECRET}".encode(), 403,
                          {"type": "InvalidSignatureException"})
        if path.startswith("/funcerr-auth"):
            return Action("payload", json.dumps({"errorMessage": f"saw {auth}",
                                                 "errorType": "Leak"}).encode(),
                          headers={"X-Amz-Function-Error": "Unhandled"})
        if path.startswith("/bad-response"):
            return Action("payload", json.dumps({"statusCode": 200, "headers": {
                "X-Leak": f"{auth}\r\nX-Injected: 1"}}).encode())
        if event == b"ping":
            return Action("payload", b"pong")
        return Action("payload", b'{"statusCode": 200, "body": "ok"}')


VCL = """vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new app = lambda.backend("sec", "us-east-1", "{url}", timeout = 5s);
}}
sub vcl_recv {{
    if (req.url ~ "^/invoke/") {{
        return (synth(200));
    }}
    set req.backend_hint = app.backend();
    return (pass);
}}
sub vcl_synth {{
    if (req.url == "/invoke/ok") {{
        set resp.http.X-R = app.invoke("ping");
    }} else {{
        set resp.http.X-R = app.invoke("echo-auth", fallback = "fallback");
    }}
}}
"""


def capture(v) -> str:
    """Everything in the VSL segment (all transactions, all tags) plus varnishd's own output."""
    vsl = subprocess.run(["varnishlog", "-n", v.workdir, "-d", "-g", "raw"], capture_output=True,
                         timeout=60).stdout.decode("utf-8", "replace")
    v.log.flush()
    v.log.seek(0)
    return vsl + v.log.read()


def secrets_in(text, *secrets):
    found = [s for s in secrets if s in text]
    found += re.findall(r"AWS4-HMAC-SHA256[^\n]{0,40}", text)
    found += re.findall(r"Signature=[0-9a-f]{8,}", text)
    found += re.findall(r"(?i)authorization:(?!\s*\[redacted\])[^\n]{0,40}", text)
    return found


@pytest.fixture(scope="module")
def env_creds():
    require_stage()
    echo = Echo()
    with Varnishd(VCL.format(url=echo.fake.url),
                  env={"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET,
                       "AWS_SESSION_TOKEN": TOKEN}) as v:
        yield v, echo
    echo.fake.stop()


def test_credentials_and_authorization_never_reach_the_log(env_creds):
    v, echo = env_creds
    results = {}
    for path in ("/ok", "/echo-auth", "/funcerr-auth", "/bad-response", "/invoke/ok",
                 "/invoke/echo"):
        status, headers, body, head = raw_request(
            v.port, f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        results[path] = status
        assert b"X-Injected" not in head
        assert AKID.encode() not in head + body and SECRET.encode() not in head + body
    assert results == {"/ok": 200, "/echo-auth": 503, "/funcerr-auth": 503, "/bad-response": 503,
                       "/invoke/ok": 200, "/invoke/echo": 200}
    # The endpoint really did receive signed requests with these credentials...
    auths = [h.get("Authorization", "") for _, h, _ in echo.fake.events]
    assert auths and all(a.startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/") for a in auths)
    assert all(h.get("X-Amz-Security-Token") == TOKEN for _, h, _ in echo.fake.events)
    # ...and none of it was written anywhere by varnishd.
    time.sleep(1)
    text = capture(v)
    assert "FetchError" in text and "VCL_Error" in text      # the failure paths were logged
    assert secrets_in(text, AKID, SECRET, TOKEN) == []
    assert "[redacted]" in text
    assert not v.panicked()


def test_signing_uses_the_boto3_chain_shared_credentials_file():
    require_stage()
    echo = Echo()
    d = tempfile.mkdtemp(prefix="vmod-lambda-creds-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "credentials")
    with open(path, "w") as f:
        f.write(f"[default]\naws_access_key_id = {FILE_AKID}\n"
                f"aws_secret_access_key = {FILE_SECRET}\n")
    os.chmod(path, 0o644)
    try:
        with Varnishd(VCL.format(url=echo.fake.url),
                      env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                           "AWS_SHARED_CREDENTIALS_FILE": path}) as v:
            status, *_ = raw_request(v.port, b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
            assert status == 200
            raw_request(v.port, b"GET /echo-auth HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(1)
            assert secrets_in(capture(v), FILE_AKID, FILE_SECRET) == []
    finally:
        echo.fake.stop()
        os.unlink(path)
        os.rmdir(d)
    auth = echo.fake.events[0][1]["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={FILE_AKID}/")
    assert "X-Amz-Security-Token" not in echo.fake.events[0][1]


def test_client_headers_are_data_in_the_event_never_invoke_headers(env_creds):
    v, echo = env_creds
    evil = '","injected":"yes","x":"\\"}'
    raw = (b"GET /ok/inject HTTP/1.1\r\nHost: h\r\nX-Evil: " + evil.encode() + b"\r\n"
           b"X-Amz-Invocation-Type: Event\r\nAuthorization: Bearer client-token\r\n"
           b"X-Amz-Security-Token: client-supplied\r\n\r\n")
    status, *_ = raw_request(v.port, raw)
    assert status == 200
    name, headers, event = [e for e in echo.fake.events if b"/ok/inject" in e[2]][-1]
    doc = json.loads(event)
    assert doc["headers"]["x-evil"] == evil and "injected" not in doc
    assert doc["headers"]["authorization"] == "Bearer client-token"     # data for the function
    # The Invoke request itself: signed by the VMOD, nothing taken from the client.
    assert headers["X-Amz-Invocation-Type"] == "RequestResponse"
    assert headers["X-Amz-Security-Token"] == TOKEN
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert not any(k.lower() == "x-evil" for k in headers)


def test_emulator_listens_on_loopback_only_by_default():
    proc = subprocess.Popen([sys.executable, "-m", "lambda_emulator", "--port", "0", "-q",
                             "--path", HANDLERS, "info=handlers_emulator:context_info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"127.0.0.1"}
        # and a connection to a non-loopback address of this host is refused
        other = _non_loopback_address()
        if other:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(20)


def _listening_addresses(port):
    """The local addresses of the TCP sockets listening on *port*, from the kernel's tables (no `ss`:
    a minimal Debian has no iproute2)."""
    addrs = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:   # 0A: TCP_LISTEN
                continue
            raw = bytes.fromhex(addr)   # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addrs.add(socket.inet_ntop(family, raw))
    return addrs


def _non_loopback_address():
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    except OSError:
        return None
    return next((a for a in out if ":" not in a and not a.startswith("127.")), None)
