"""A new connection does not hold up its worker's other invocations (issue 17), through a real varnishd.

With the direct transport a worker runs several invocations at once (_handoff.pyx). Opening a
connection is a step of the invocation polled with the others: the connect (a non-blocking socket,
its wait for writability yielded to the worker's poll, SO_ERROR) and the TLS handshake (part of the
first exchange). Checked here, with the objects' pool_size adding up to 2 (so two workers, and a
job that comes while one has an invocation in flight goes to that one, its listener): an invocation
whose connect gets no answer (a listening socket whose accept queue is full: its SYNs are dropped,
as a blackholed address's are), or whose endpoint accepts the connection but never speaks TLS,
does not delay a healthy invocation already in flight on the same worker; it fails on its own,
as a timeout with the message it had before ("timed out after 3s connecting to the endpoint", "...
in the TLS handshake with the Lambda endpoint"), when the connect timeout (or the handshake's)
passes.
"""

import json
import subprocess
import threading
import time

from support.fake_lambda import Action, FakeLambda
from support.hung_endpoints import FullBacklog, SilentTLS
from support.varnish_harness import Varnishd, require_stage

SLOW = 1.0              # the healthy function's answer comes after this long
HUNG_TIMEOUT = 3        # the hung objects' timeout (and connect timeout: timeout capped at 10 s)


def route(name, event):
    if name == "slow":
        time.sleep(SLOW)
    return Action("payload", json.dumps({"statusCode": 200, "body": f"answer of {name}"}).encode())


def vcl(url, hung_url):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new healthy = lambda.backend("slow", "us-east-1", "{url}", timeout = 10s, pool_size = 1);
    new hung = lambda.backend("hung", "us-east-1", "{hung_url}", timeout = {HUNG_TIMEOUT}s,
                              pool_size = 1);
}}
sub vcl_recv {{
    if (req.url ~ "^/hung/") {{
        set req.backend_hint = hung.backend();
    }} else {{
        set req.backend_hint = healthy.backend();
    }}
    return (pass);
}}
sub vcl_backend_error {{
    set beresp.http.x-error = lambda.error();
}}
"""


def fetch_errors(v, url):
    out = subprocess.run(["varnishlog", "-d", "-n", v.workdir, "-g", "request", "-q",
                          f'ReqURL eq "{url}"', "-i", "FetchError"], capture_output=True,
                         text=True, timeout=30).stdout
    return [ln for ln in out.splitlines() if "FetchError" in ln]


def healthy_beside_hung(hung_url, message):
    """The healthy fetch (SLOW) is in flight on a worker when the hung one comes to that worker:
    the healthy one is answered in about SLOW, while the hung one still waits; the hung one then
    fails as a timeout with message in its FetchError record."""
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url, hung_url)) as v:
        assert v.request("/warm/1")[0] == 200      # the healthy object's connection, kept alive
        out = {}

        def call(key, path):
            t0 = time.monotonic()
            r = v.request(path)
            out[key] = (r, time.monotonic() - t0)

        healthy = threading.Thread(target=call, args=("healthy", "/slow/1"))
        hung = threading.Thread(target=call, args=("hung", "/hung/1"))
        healthy.start()
        time.sleep(0.3)             # the healthy invocation is in flight (its exchange polled)
        hung.start()
        healthy.join(30)
        hung_in_flight = hung.is_alive()
        hung.join(30)
        errors = fetch_errors(v, "/hung/1")
        assert not v.panicked()
    (status, _h, body), took = out["healthy"]
    assert status == 200 and b"answer of slow" in body
    assert hung_in_flight, "the healthy fetch waited for the hung one"
    # Without the non-blocking connect it took the hung one's connect timeout (3 s) and more.
    assert took < SLOW + 1.5, f"the healthy fetch took {took:.2f}s"
    (status, headers, _b), took = out["hung"]
    assert status == 503
    assert dict((k.lower(), x) for k, x in headers).get("x-error") == "timeout"
    assert HUNG_TIMEOUT - 0.2 <= took, took
    assert any(message in ln for ln in errors), errors


def setup_module():
    require_stage()


def test_a_hanging_connect_does_not_hold_up_its_worker():
    with FullBacklog() as hung:
        healthy_beside_hung(hung.url, f"timed out after {HUNG_TIMEOUT}s connecting to the endpoint")


def test_a_silent_tls_endpoint_does_not_hold_up_its_worker():
    with SilentTLS() as hung:
        healthy_beside_hung(hung.url, f"timed out after {HUNG_TIMEOUT}s in the TLS handshake")
