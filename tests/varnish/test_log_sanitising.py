"""What an endpoint sends back never writes terminal escape sequences into varnishlog: a request id and
an executed version holding ESC [2J (clear screen) and ESC ]0;...BEL (set the terminal's title) reach
the VCL_Error / FetchError / VCL_Log records only as printable tokens, for a failed invoke(), a failed
fetch and a successful one, on both transports."""

import subprocess

import pytest

from support.fake_lambda import Action, FakeLambda, event_path
from support.varnish_harness import Varnishd, require_stage
from vmod_lambda.invoker import InvokeError

EVIL_ID = "\x1b[2J\x1b]0;pwned\x07req-1"
EVIL_VERSION = "\x1b[31m7\x1b[0m"


def answer(function_error: bool) -> bytes:
    body = b'{"errorMessage": "boom", "errorType": "Exception"}' if function_error else \
        b'{"statusCode": 200, "body": "fine"}'
    head = ("HTTP/1.1 200 OK\r\n"
            f"x-amzn-RequestId: {EVIL_ID}\r\n"
            f"X-Amz-Executed-Version: {EVIL_VERSION}\r\n"
            + ("X-Amz-Function-Error: Unhandled\r\n" if function_error else "")
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


def route(name, event):
    return Action("raw", answer(event_path(event) == "/fail" or b'"fail"' in event))


def vcl(url, transport):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new fn = lambda.backend("evil", "us-east-1", "{url}", timeout = 5s, transport = "{transport}");
}}
sub vcl_recv {{
    if (req.url == "/invoke") {{
        return (synth(200, fn.invoke({{"{{"fail": 1}}"}}, fallback = "fallback")));
    }}
    set req.backend_hint = fn.backend();
    return (pass);
}}
"""


def test_invoke_error_keeps_only_a_printable_request_id():
    e = InvokeError("function_error", "boom", request_id=EVIL_ID)
    assert "\x1b" not in str(e) and "\x07" not in str(e)
    assert "req-1" in str(e)


@pytest.mark.parametrize("transport", ["direct", "boto3"])
def test_request_id_and_version_are_logged_as_tokens(transport):
    require_stage()
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url, transport)) as v:
        assert v.request("/invoke")[0] == 200
        assert v.request("/fail")[0] == 503
        assert v.request("/ok")[0] == 200
        log = subprocess.run(["varnishlog", "-n", v.workdir, "-d", "-i",
                              "VCL_Error,VCL_Log,FetchError"], capture_output=True,
                             timeout=30).stdout
    text = log.decode("utf-8", "replace")
    assert b"\x1b" not in log and b"\x07" not in log, text
    # each of the three calls left its record, with the id reduced to a token
    assert text.count("req-1") >= 3, text
    assert "lambda: fn: invoke function_error" in text, text
    assert "lambda: fn: fetch ok" in text, text
