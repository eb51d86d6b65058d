"""Real Lambda web frameworks, unchanged, behind varnishd with this VMOD and the local emulator.

The apps in examples/frameworks/ are written as for AWS: Starlette through Mangum, Flask through
apig-wsgi, and AWS Lambda Powertools' event handler (one resolver per AWS front end). One varnishd
has one lambda.backend object per (framework, event_format, multi_value) combination, each invoking
its own emulated function, and routes to it by the first path segment (stripped before the fetch).
Every test goes through Varnish and checks what the client gets.

Not every combination is run, because of the frameworks, not of the VMOD:

* Powertools resolvers are tied to one front end each (APIGatewayRestResolver reads 1.0 events,
  APIGatewayHttpResolver and LambdaFunctionUrlResolver 2.0, ALBResolver ALB events), so each runs
  with its own format only (ALB with and without multi-value headers).
* Two Set-Cookie headers cannot go through an ALB target group without multi-value headers with
  Powertools or apig-wsgi: the response's "headers" object has one value per name, and Powertools
  (SingleValueHeadersSerializer: "Sending the last cookie only") and apig-wsgi (dict(headers)) keep
  the last cookie only, so for them the test checks that this one cookie arrives intact. Mangum
  works around it by varying the name's case ("set-cookie", "Set-cookie"): both must arrive.
* Without multi-value headers, an ALB passes the last value of a repeated query key only, and so
  does the VMOD's "alb" event: those combinations expect that one value.
"""

import json
import os
from email.message import Message
from urllib.parse import urlencode

import pytest

from support import ROOT
from support.varnish_harness import Varnishd, require_stage

pytest.importorskip("mangum")
pytest.importorskip("starlette")
pytest.importorskip("python_multipart")
pytest.importorskip("aws_lambda_powertools")
pytest.importorskip("pydantic")
pytest.importorskip("apig_wsgi")
pytest.importorskip("flask")

from lambda_emulator import Emulator, FunctionConfig  # noqa: E402

APPS = os.path.join(ROOT, "examples", "frameworks")

# Exactly what every app serves for /image.png.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\xff\xfe\x00"


class Combo:
    def __init__(self, name, handler, event_format, multi_value, not_found_type,
                 no_two_cookies=False):
        self.name = name                      # URL prefix, VCL object and emulator function name
        self.handler = handler
        self.event_format = event_format
        self.multi_value = multi_value
        self.not_found_type = not_found_type  # Content-Type of the framework's own 404
        self.no_two_cookies = no_two_cookies

    @property
    def last_query_value_only(self):
        # An ALB target group without multi-value headers passes the last value of a repeated
        # query key only ("the load balancer uses the last value"); the VMOD does the same.
        return self.event_format == "alb" and not self.multi_value

    def __repr__(self):
        return self.name


COMBOS = [
    Combo("mangum_v1", "starlette_app:handler", "1.0", False, "text/plain"),
    Combo("mangum_v2", "starlette_app:handler", "2.0", False, "text/plain"),
    Combo("mangum_alb", "starlette_app:handler", "alb", False, "text/plain"),
    Combo("mangum_albmv", "starlette_app:handler", "alb", True, "text/plain"),
    Combo("pt_rest", "powertools_app:rest_handler", "1.0", False, "application/json"),
    Combo("pt_http", "powertools_app:http_handler", "2.0", False, "application/json"),
    Combo("pt_url", "powertools_app:url_handler", "2.0", False, "application/json"),
    Combo("pt_alb", "powertools_app:alb_handler", "alb", False, "application/json",
          no_two_cookies=True),
    Combo("pt_albmv", "powertools_app:alb_handler", "alb", True, "application/json"),
    Combo("wsgi_v1", "flask_app:handler", "1.0", False, "text/html"),
    Combo("wsgi_v2", "flask_app:handler", "2.0", False, "text/html"),
    Combo("wsgi_alb", "flask_app:handler", "alb", False, "text/html", no_two_cookies=True),
    Combo("wsgi_albmv", "flask_app:handler", "alb", True, "text/html"),
]


def make_vcl(emulator_url):
    news = "\n".join(
        f'    new {c.name} = lambda.backend("{c.name}", "us-east-1", "{emulator_url}", '
        f'timeout = 20s, event_format = "{c.event_format}", '
        f'multi_value = {"true" if c.multi_value else "false"});' for c in COMBOS)
    routes = "\n    } els".join(
        f'if (req.url ~ "^/{c.name}(/|\\?|$)") {{\n'
        f'        set req.backend_hint = {c.name}.backend();' for c in COMBOS)
    return f"""vcl 4.1;
import lambda;
backend default none;
sub vcl_init {{
{news}
}}
sub vcl_recv {{
    {routes}
    }} else {{
        return (synth(421, "no such prefix"));
    }}
    set req.url = regsub(req.url, "^/[^/]+", "");
    return (pass);
}}
"""


@pytest.fixture(scope="module")
def emulator():
    require_stage()
    emu = Emulator({c.name: FunctionConfig(c.handler, timeout=20, reserved_concurrency=4)
                    for c in COMBOS}, paths=[APPS])
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def varnish(emulator):
    with Varnishd(make_vcl(emulator.url)) as v:
        yield v
        assert not v.panicked(), v.adm("panic.show", check=False)


@pytest.fixture(params=COMBOS, ids=repr)
def app(request, varnish, emulator):
    """Send requests to one combination; checks that each cost exactly one invocation of that
    combination's function (so the routing is right and nothing is retried) and no function
    error."""
    combo = request.param
    before = emulator.stats()
    calls = []

    def fetch(path, method="GET", data=None, headers=None):
        calls.append(path)
        return varnish.request(f"/{combo.name}{path}", method, data, headers)

    fetch.combo = combo
    yield fetch
    after = emulator.stats()
    invoked = after["invocations"].get(combo.name, 0) - before["invocations"].get(combo.name, 0)
    errors = after["errors"].get(combo.name, 0) - before["errors"].get(combo.name, 0)
    assert (invoked, errors) == (len(calls), 0), f"{combo.name}: {calls}"


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def content_type(headers):
    values = header_values(headers, "content-type")
    assert len(values) == 1, values
    msg = Message()
    msg["content-type"] = values[0]
    return msg.get_content_type()


def test_repeated_query_values(app):
    status, headers, body = app("/items?tag=a&tag=b")
    assert status == 200, body
    assert content_type(headers) == "application/json"
    expected = ["b"] if app.combo.last_query_value_only else ["a", "b"]
    assert json.loads(body) == {"tag": expected}


def test_repeated_query_values_percent_decoded(app):
    status, headers, body = app("/items?tag=z&other=1&tag=x%20y%2Fw")
    assert status == 200, body
    expected = ["x y/w"] if app.combo.last_query_value_only else ["z", "x y/w"]
    assert json.loads(body) == {"tag": expected}


def test_no_query(app):
    status, headers, body = app("/items")
    assert status == 200, body
    assert json.loads(body) == {"tag": []}


def test_two_cookies_arrive_as_two_set_cookie_headers(app):
    status, headers, body = app("/cookies")
    assert status == 200, body
    assert json.loads(body) == {"cookies": 2}
    cookies = header_values(headers, "set-cookie")
    pairs = [c.split(";", 1)[0].strip() for c in cookies]
    if app.combo.no_two_cookies:
        # The framework itself puts the last cookie only in an ALB single-value response (see the
        # module docstring): that one must arrive intact.
        assert pairs == ["theme=dark"], headers
        return
    assert len(cookies) == 2, headers
    assert sorted(pairs) == ["session=abc123", "theme=dark"]
    session = cookies[pairs.index("session=abc123")]
    assert "httponly" in session.lower()
    assert "path=/" in session.lower()


def test_binary_png_is_byte_exact(app):
    status, headers, body = app("/image.png")
    assert status == 200
    assert content_type(headers) == "image/png"
    assert body == PNG
    assert header_values(headers, "content-length") == [str(len(PNG))]


def test_json_post_echo(app):
    doc = {"name": "Jörg", "n": 3, "list": [1, "two", None, True], "nested": {"k": "v"}}
    status, headers, body = app("/echo", "POST", json.dumps(doc).encode(),
                                {"Content-Type": "application/json"})
    assert status == 200, body
    assert content_type(headers) == "application/json"
    assert json.loads(body) == doc


def test_form_post_echo(app):
    data = urlencode([("name", "Jörg X"), ("tag", "1"), ("tag", "2"), ("sym", "a&b=c")]).encode()
    status, headers, body = app("/form", "POST", data,
                                {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    assert json.loads(body) == {"name": ["Jörg X"], "tag": ["1", "2"], "sym": ["a&b=c"]}


def test_status_418(app):
    status, headers, body = app("/status/418")
    assert status == 418
    assert body == b"I'm a teapot"
    assert content_type(headers) == "text/plain"


def test_unknown_route_is_the_frameworks_404(app):
    status, headers, body = app("/no/such/route")
    assert status == 404
    # The framework's own page (not a Varnish error page).
    assert content_type(headers) == app.combo.not_found_type
    assert b"not found" in body.lower()
    assert b"Guru Meditation" not in body


def test_varnishd_did_not_panic(varnish, emulator):
    # Last in the module: after every request above, no function error and no panic.
    errors = {c.name: emulator.stats()["errors"].get(c.name, 0) for c in COMBOS}
    assert not any(errors.values()), errors
    assert not varnish.panicked(), varnish.adm("panic.show", check=False)
