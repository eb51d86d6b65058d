"""Credentials per object (issue 18; vmod_lambda.vcc, CREDENTIALS): role_arn, role_session_name,
external_id, sts_endpoint_url, profile.

Everything on loopback: STS is moto's server (behind a small counting proxy) or a tiny local STS
that answers AssumeRole with credentials of our choosing (a short expiry, AccessDenied); Lambda is
tests/support/fake_lambda.py's FakeLambda, which records each invocation's headers: the invoke must be
signed with the assumed key id (Authorization: ... Credential=<AKID>/...) and carry its
X-Amz-Security-Token. Both transports run every case.
"""

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.fake_lambda import Action, FakeLambda
from support.varnish_harness import Varnishd, require_stage
from vmod_lambda import clients, credentials
from vmod_lambda.config import ConfigError, validate_backend
from vmod_lambda.invoker import InvokeError, Invoker

ROLE = "arn:aws:iam::123456789012:role/app-invoker"
BASE_AKID = "AKIDVMODLAMBDATEST"            # varnish_harness's environment
BASE_SECRET = "vmod-lambda-test-secret"
OK = b'{"statusCode": 200, "body": "ok"}'
TRANSPORTS = ("direct", "boto3")


def header(headers: dict, name: str):
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def signed_with(headers: dict) -> str:
    """The access key id of the request's SigV4 Authorization header."""
    m = re.search(r"Credential=([^/]+)/", header(headers, "Authorization") or "")
    return m.group(1) if m else ""


class TinySTS:
    """AssumeRole over the query protocol, on 127.0.0.1: answers credentials numbered by the call
    (AKID ASIATINYSTS000<n>) valid for `lifetime` seconds, or `deny` -> 403 AccessDenied. Records
    each call's form and the key id that signed it."""

    def __init__(self, lifetime=3600.0, deny=False):
        self.lifetime = lifetime
        self.deny = deny
        self.calls = []             # (form dict, signing key id)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(urllib.parse.parse_qsl(body.decode()))
                outer.calls.append((form, signed_with(dict(self.headers))))
                n = len(outer.calls)
                if outer.deny:
                    status, xml = 403, (
                        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                        "<Type>Sender</Type><Code>AccessDenied</Code><Message>User: "
                        "arn:aws:iam::123456789012:user/edge is not authorized to perform: "
                        f"sts:AssumeRole on resource: {ROLE}</Message></Error>"
                        "<RequestId>tiny-sts-req</RequestId></ErrorResponse>")
                else:
                    exp = datetime.now(timezone.utc) + timedelta(seconds=outer.lifetime)
                    status, xml = 200, (
                        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                        "<AssumeRoleResult><Credentials>"
                        f"<AccessKeyId>ASIATINYSTS{n:06d}</AccessKeyId>"
                        f"<SecretAccessKey>tiny-sts-secret-{n}</SecretAccessKey>"
                        f"<SessionToken>tiny-sts-token-{n}</SessionToken>"
                        f"<Expiration>{exp.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
                        "</Credentials><AssumedRoleUser><AssumedRoleId>AROATINY:s</AssumedRoleId>"
                        f"<Arn>{ROLE}</Arn></AssumedRoleUser></AssumeRoleResult>"
                        "<ResponseMetadata><RequestId>tiny-sts-req</RequestId></ResponseMetadata>"
                        "</AssumeRoleResponse>")
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class CountingProxy:
    """Forwards every POST to moto's server and counts them: moto has no request counter. Keeps
    the access key ids moto's AssumeRole / AssumeRoleWithWebIdentity answers gave."""

    def __init__(self, target):
        self.calls = []             # (Action, signing key id)
        self.keys = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(urllib.parse.parse_qsl(body.decode()))
                outer.calls.append((form.get("Action"), signed_with(dict(self.headers))))
                fwd = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
                req = urllib.request.Request(target + self.path, data=body, headers=fwd,
                                             method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                outer.keys += re.findall(r"<AccessKeyId>([^<]+)</AccessKeyId>", data.decode())
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def moto_sts():
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = CountingProxy(f"http://{host}:{port}")
    yield proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def fake():
    with FakeLambda(lambda name, event: Action("payload", OK)) as f:
        f.keep_events = True
        yield f


def _vcl(fake_url, transport, args):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new app = lambda.backend("app", "us-east-1", "{fake_url}", transport = "{transport}",
        timeout = 5s{args});
}}
sub vcl_recv {{
    if (req.url ~ "^/invoke") {{
        set req.http.x-r = app.invoke("{{}}", fallback = "FALLBACK");
        return (synth(200));
    }}
    if (req.url == "/status") {{ set req.http.x-r = lambda.status(); return (synth(200)); }}
    set req.backend_hint = app.backend();
    return (pass);
}}
sub vcl_synth {{ set resp.http.x-r = req.http.x-r; }}
"""


def _counters(v):
    return {k[len("lambda.app."):]: val for k, val in v.counters("lambda.app.*").items()}


def _log(v, tags="FetchError,VCL_Error,VCL_Log,Error"):
    return subprocess.run(["varnishlog", "-d", "-n", v.workdir, "-g", "raw", "-i", tags],
                          capture_output=True, text=True, timeout=30).stdout


# ------------------------------------------------------------------------------ configuration

def _cfg(**kw):
    return validate_backend("app", "fn", "eu-west-1", **kw)


@pytest.mark.parametrize("kw, message", [
    ({"role_arn": "arn:aws:iam::12345:role/x"}, "role_arn 'arn:aws:iam::12345:role/x' is not an IAM role ARN"),
    ({"role_arn": "arn:aws:iam::123456789012:user/x"}, "is not an IAM role ARN"),
    ({"role_arn": "my-role"}, "is not an IAM role ARN"),
    ({"role_arn": ROLE, "role_session_name": "a"}, "role_session_name 'a' must be 2 to 64"),
    ({"role_arn": ROLE, "role_session_name": "x" * 65}, "must be 2 to 64 characters"),
    ({"role_arn": ROLE, "role_session_name": "has space"}, "must be 2 to 64 characters"),
    ({"role_arn": ROLE, "external_id": "sec ret"}, "external_id must be 2 to 1224 characters"),
    ({"role_arn": ROLE, "sts_endpoint_url": "ftp://sts"}, "sts_endpoint_url 'ftp://sts' is not"),
    ({"role_session_name": "abc"}, "role_session_name needs role_arn"),
    ({"external_id": "abc"}, "external_id needs role_arn"),
    ({"sts_endpoint_url": "http://127.0.0.1:1"}, "sts_endpoint_url needs role_arn"),
    ({"profile": "nosuch"}, "profile 'nosuch' is not in the shared config or credentials file"),
])
def test_bad_credential_arguments_fail_naming_the_object_and_argument(kw, message, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with pytest.raises(ConfigError) as e:
        _cfg(**kw)
    assert str(e.value).startswith("lambda.backend(): app: ")
    assert message in str(e.value)
    if "external_id" in kw:
        assert kw["external_id"] not in str(e.value)     # possibly a secret: never echoed


def test_credential_arguments_give_one_spec_and_status_never_shows_the_external_id(tmp_path,
                                                                                   monkeypatch):
    conf = tmp_path / "config"
    conf.write_text("[profile edge]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(conf))
    assert _cfg().credentials is None
    cfg = _cfg(role_arn=ROLE, external_id="shared-secret-id", sts_endpoint_url="http://127.0.0.1:9",
               profile="edge")
    assert cfg.credentials == credentials.CredentialSpec(
        "edge", ROLE, "vmod-lambda", "shared-secret-id", "http://127.0.0.1:9", "eu-west-1")
    text = credentials.describe(cfg.credentials)
    assert text == (f"(role={ROLE},session=vmod-lambda,external_id=set,"
                    "sts=http://127.0.0.1:9,profile=edge)")
    assert _cfg(profile="edge").credentials == credentials.CredentialSpec(profile="edge")


# ------------------------------------------------------------------------------ in Python

@pytest.fixture
def base_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": BASE_AKID, "AWS_SECRET_ACCESS_KEY": BASE_SECRET,
                 "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_are_refreshed_before_they_expire(transport, fake, base_env):
    # Credentials for 8 s: refreshed a quarter of their life before expiry (2 s), so within
    # about 6 s a second AssumeRole, whose key then signs; never one per call.
    with TinySTS(lifetime=8) as sts:
        inv = Invoker(_cfg(endpoint_url=fake.url, transport=transport, role_arn=ROLE,
                           sts_endpoint_url=sts.url))
        keys = []
        end = time.monotonic() + 20
        while len(sts.calls) < 2 and time.monotonic() < end:
            inv.invoke(b"{}")
            keys.append(signed_with(fake.events[-1][1]))
            time.sleep(0.05)
        assert len(sts.calls) == 2, sts.calls
        assert len(keys) > 10
        assert keys[0] == "ASIATINYSTS000001" and keys[-1] == "ASIATINYSTS000002"
        assert all(signer == BASE_AKID for _, signer in sts.calls)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_objects_with_the_same_role_share_one_credential_set(transport, fake, base_env):
    with TinySTS() as sts:
        a = Invoker(_cfg(endpoint_url=fake.url, transport=transport, role_arn=ROLE,
                         sts_endpoint_url=sts.url, timeout=3))
        b = Invoker(validate_backend("other", "fn2", "eu-west-1", fake.url, transport=transport,
                                     role_arn=ROLE, sts_endpoint_url=sts.url, timeout=4))
        c = Invoker(_cfg(endpoint_url=fake.url, transport=transport, role_arn=ROLE,
                         role_session_name="other-session", sts_endpoint_url=sts.url))
        assert a.credentials is b.credentials and a.credentials is not c.credentials
        for inv in (a, b, a, b, c, c):
            inv.invoke(b"{}")
        assert [form["RoleSessionName"] for form, _ in sts.calls] == \
            ["vmod-lambda", "other-session"]
        assert f"(role={ROLE},session=other-session,sts={sts.url})" in clients.in_use()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_sts_outage_costs_one_sts_call_per_second_not_one_per_invoke(transport, fake,
                                                                        base_env):
    with TinySTS(deny=True) as sts:
        inv = Invoker(_cfg(endpoint_url=fake.url, transport=transport, role_arn=ROLE,
                           external_id="ext-secret-42", sts_endpoint_url=sts.url))
        for _ in range(5):
            with pytest.raises(InvokeError) as e:
                inv.invoke(b"{}")
            assert e.value.kind == "sts"
        assert len(sts.calls) == 1 and fake.invocations == 0
        assert str(e.value) == (f"STS AssumeRole of {ROLE} failed: AccessDenied (HTTP 403): "
                                "User: arn:aws:iam::123456789012:user/edge is not authorized to "
                                f"perform: sts:AssumeRole on resource: {ROLE}")
        assert sts.calls[0][0]["ExternalId"] == "ext-secret-42"


# ------------------------------------------------------------------------------ through varnishd

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_varnishd_signs_with_the_assumed_role_and_asks_sts_once(transport, moto_sts, fake):
    before = len(moto_sts.calls)
    vcl = _vcl(fake.url, transport, f',\n        role_arn = "{ROLE}", '
               f'role_session_name = "edge-{transport}", external_id = "ext-id-1",\n'
               f'        sts_endpoint_url = "{moto_sts.url}"')
    with Varnishd(vcl) as v:
        for i in range(10):
            status, _, _ = v.request(f"/fetch/{i}")
            assert status == 200
            status, headers, _ = v.request(f"/invoke/{i}")
            assert status == 200 and dict(headers)["x-r"] == OK.decode()
        calls = moto_sts.calls[before:]
        assert [(action, signer) for action, signer in calls] == [("AssumeRole", BASE_AKID)], \
            [signed_with(h) for _, h, _ in fake.events]
        assumed = moto_sts.keys[-1]
        assert assumed.startswith("ASIA") and assumed != BASE_AKID
        assert len(fake.events) == 20
        for _, h, _ in fake.events:
            assert signed_with(h) == assumed
            assert header(h, "X-Amz-Security-Token")
        c = _counters(v)
        assert (c["req"], c["fail"], c["sts_fail"]) == (20, 0, 0)
        status, headers, _ = v.request("/status")
        st = dict(headers)["x-r"]
        assert (f"credentials=(role={ROLE},session=edge-{transport},external_id=set,"
                f"sts={moto_sts.url})") in st
        assert "ext-id-1" not in st
        assert not v.panicked()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_varnishd_sts_failure_is_a_503_and_an_invoke_fallback_counted_in_sts_fail(transport,
                                                                                  fake):
    with TinySTS(deny=True) as sts:
        vcl = _vcl(fake.url, transport, f', role_arn = "{ROLE}", sts_endpoint_url = "{sts.url}"')
        with Varnishd(vcl) as v:
            status, _, _ = v.request("/fetch/1")
            assert status == 503
            time.sleep(1.2)             # past STS_RETRY_HOLD: STS is asked again
            status, headers, _ = v.request("/invoke/1")
            assert status == 200 and dict(headers)["x-r"] == "FALLBACK"
            c = _counters(v)
            assert (c["fail"], c["sts_fail"], c["conn_fail"]) == (2, 2, 0)
            assert fake.invocations == 0 and len(sts.calls) == 2
            log = _log(v)
            why = (f"STS AssumeRole of {ROLE} failed: AccessDenied (HTTP 403): "
                   "User: arn:aws:iam::123456789012:user/edge is not authorized")
            assert re.search(r"FetchError\s+b lambda: app: " + re.escape(why), log), log
            assert re.search(r"VCL_Error\s+c lambda: app: invoke: " + re.escape(why), log), log
            assert re.search(r"VCL_Log\s+b lambda: app: fetch sts ", log), log
            assert re.search(r"VCL_Log\s+c lambda: app: invoke sts ", log), log
            assert BASE_SECRET not in log and BASE_AKID not in log
            assert not v.panicked()


def test_varnishd_sts_down_fails_the_fetch_as_sts_fail(fake):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    vcl = _vcl(fake.url, "direct", f', role_arn = "{ROLE}", sts_endpoint_url = "{dead}"')
    with Varnishd(vcl) as v:
        status, _, _ = v.request("/fetch/1")
        assert status == 503
        c = _counters(v)
        assert (c["sts_fail"], c["conn_fail"]) == (1, 0)
        assert f"STS AssumeRole of {ROLE} failed: EndpointConnectionError" in _log(v)


def test_varnishd_refuses_a_bad_role_arn_at_vcl_load(fake):
    with Varnishd(_vcl(fake.url, "direct", "")) as v:
        path = os.path.join(v.dir, "bad.vcl")
        with open(path, "w") as f:
            f.write(_vcl(fake.url, "direct", ', role_arn = "arn:aws:iam::1:role/x"'))
        os.chmod(path, 0o644)
        out = v.adm("vcl.load", "bad", path, check=False)
        assert ("lambda.backend(): app: role_arn 'arn:aws:iam::1:role/x' is not an IAM role "
                "ARN") in out, out


def test_varnishd_profile_of_the_shared_config(fake, tmp_path):
    # A profile with keys of its own in the credentials file: the object signs with them.
    d = tempfile.mkdtemp(prefix="vmod-lambda-creds-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "credentials")
    with open(path, "w") as f:
        f.write("[edge]\naws_access_key_id = AKIDPROFILEEDGE01\n"
                "aws_secret_access_key = profile-edge-secret\n")
    os.chmod(path, 0o644)
    with Varnishd(_vcl(fake.url, "direct", ', profile = "edge"'),
                  env={"AWS_SHARED_CREDENTIALS_FILE": path}) as v:
        assert v.request("/fetch/1")[0] == 200
        assert signed_with(fake.events[-1][1]) == "AKIDPROFILEEDGE01"
        assert "credentials=(profile=edge)" in dict(v.request("/status")[1])["x-r"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_varnishd_web_identity_through_the_chain(transport, moto_sts, fake):
    # EKS IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, STS at AWS_ENDPOINT_URL_STS; no keys.
    d = tempfile.mkdtemp(prefix="vmod-lambda-webid-")
    os.chmod(d, 0o755)
    token = os.path.join(d, "token")
    with open(token, "w") as f:
        f.write("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    os.chmod(token, 0o644)
    before = len(moto_sts.calls)
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ROLE_ARN": ROLE,
           "AWS_WEB_IDENTITY_TOKEN_FILE": token, "AWS_ROLE_SESSION_NAME": "irsa",
           "AWS_REGION": "us-east-1", "AWS_STS_REGIONAL_ENDPOINTS": "regional",
           "AWS_ENDPOINT_URL_STS": moto_sts.url}
    with Varnishd(_vcl(fake.url, transport, ""), env=env) as v:
        for i in range(3):
            assert v.request(f"/fetch/{i}")[0] == 200
        calls = moto_sts.calls[before:]
        assert [a for a, _ in calls] == ["AssumeRoleWithWebIdentity"]
        assumed = moto_sts.keys[-1]
        for _, h, _ in fake.events:
            assert signed_with(h) == assumed and header(h, "X-Amz-Security-Token")


class ContainerCredentials:
    """The ECS / EKS Pod Identity credential endpoint on 127.0.0.1: JSON credentials; checks the
    Authorization token when one is configured."""

    def __init__(self):
        self.calls = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.calls.append((self.path, self.headers.get("Authorization")))
                exp = datetime.now(timezone.utc) + timedelta(hours=1)
                data = json.dumps({"AccessKeyId": "ASIACONTAINER0001",
                                   "SecretAccessKey": "container-secret",
                                   "Token": "container-token",
                                   "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_varnishd_container_credentials_through_the_chain(transport, fake):
    # ECS task role / EKS Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI (+ its token).
    ecs = ContainerCredentials()
    try:
        env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
               "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{ecs.url}/v1/credentials",
               "AWS_CONTAINER_AUTHORIZATION_TOKEN": "pod-identity-token"}
        with Varnishd(_vcl(fake.url, transport, ""), env=env) as v:
            for i in range(3):
                assert v.request(f"/fetch/{i}")[0] == 200
            assert ecs.calls == [("/v1/credentials", "pod-identity-token")]
            for _, h, _ in fake.events:
                assert signed_with(h) == "ASIACONTAINER0001"
                assert header(h, "X-Amz-Security-Token") == "container-token"
    finally:
        ecs.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_assumed_credentials_are_redacted_and_redacting_never_calls_sts(transport, fake,
                                                                          base_env):
    from vmod_lambda.transport.base import REDACTED, redact
    with TinySTS() as sts:
        inv = Invoker(_cfg(endpoint_url=fake.url, transport=transport, role_arn=ROLE,
                           role_session_name=f"redact-{transport}", sts_endpoint_url=sts.url))
        # Before the first call nothing is held: redacting must not fetch (no STS call).
        redact("nothing to see")
        assert sts.calls == []
        inv.invoke(b"{}")
        n = len(sts.calls)
        text = redact(f"echo tiny-sts-secret-{n} and tiny-sts-token-{n} back")
        assert f"tiny-sts-secret-{n}" not in text and f"tiny-sts-token-{n}" not in text
        assert text.count(REDACTED) == 2
        assert len(sts.calls) == n


def test_a_role_that_no_object_uses_any_more_is_dropped(fake, base_env):
    import gc
    with TinySTS() as sts:
        inv = Invoker(_cfg(endpoint_url=fake.url, role_arn=ROLE, role_session_name="dropped",
                           sts_endpoint_url=sts.url))
        inv.invoke(b"{}")
        sessions = clients.stats()["sessions"]
        assert "session=dropped" in clients.in_use()
        del inv
        gc.collect()
        assert clients.stats()["sessions"] == sessions - 1
        assert "session=dropped" not in clients.in_use()


def test_varnishd_a_reload_with_the_same_role_keeps_its_credentials(fake):
    with TinySTS() as sts:
        args = f', role_arn = "{ROLE}", sts_endpoint_url = "{sts.url}"'
        with Varnishd(_vcl(fake.url, "direct", args)) as v:
            assert v.request("/fetch/1")[0] == 200
            path = os.path.join(v.dir, "next.vcl")
            with open(path, "w") as f:
                f.write(_vcl(fake.url, "boto3", args))
            os.chmod(path, 0o644)
            v.adm("vcl.load", "next", path)
            v.adm("vcl.use", "next")
            v.adm("vcl.discard", "boot")
            for i in range(3):
                assert v.request(f"/fetch/{i + 2}")[0] == 200
            assert len(sts.calls) == 1
            assert {signed_with(h) for _, h, _ in fake.events} == {"ASIATINYSTS000001"}
