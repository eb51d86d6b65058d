"""https:// endpoints through varnishd (issue 23; split from compiled/test_tls.py): a backend fetch and
invoke() over TLS for both transports, and an endpoint whose certificate names another host."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

from support.fake_lambda import Action, FakeLambda, event_path
from support.tls import CA
from support.varnish_harness import Varnishd, require_stage


def _fetch_answer(name, event):
    path = event_path(event)
    if not path:            # invoke(): the payload back
        return Action("payload", b'{"invoked":' + event + b'}')
    return Action("payload", json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"},
                                         "body": f"https answer for {path}"}).encode())


def test_https_fetch_and_invoke_through_varnishd():
    """A backend fetch and invoke() over https:// (TLS in C, the CA trusted through AWS_CA_BUNDLE),
    for both transports; an endpoint whose certificate names another host fails the fetch and the
    invoke() with the reason in the log, and the endpoint is never asked."""
    require_stage()
    # The jailed child reads the CA bundle: a world-readable folder (pytest's tmp_path is not).
    certdir = tempfile.mkdtemp(prefix="vmod-lambda-tls-")
    os.chmod(certdir, 0o755)
    try:
        _through_varnishd(pathlib.Path(certdir))
    finally:
        shutil.rmtree(certdir, ignore_errors=True)


def _through_varnishd(certdir):
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
