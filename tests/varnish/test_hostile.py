"""Hostile Lambda responses through a real varnishd, in both response formats.

Each payload of tests/support/hostile_corpus.py is returned by a local Invoke API
(tests/support/fake_lambda.py) to a varnishd running the fresh build, once through an object with response_format = "json" and once
through one with response_format = "http". Per case and format: the documented outcome (a failed
fetch, a 503 made by Varnish, and a FetchError line saying why; or the sanitised response), no
injected header ever reaches the client, and no header is silently lost. After the whole corpus: the
child never panicked or restarted, lost no header (MAIN.losthdr) and still serves.
"""

import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.fake_lambda import Action, FakeLambda, event_path
from support.http_helpers import raw_request
from support.hostile_corpus import CASES, Fail, Ok
from support.varnish_harness import Varnishd, require_stage

FORMATS = ("json", "http")
OBJECT = {"json": "hj", "http": "hh"}


def route(name, event):
    path = event_path(event)
    if path == "/ping":
        return Action("payload", b'{"statusCode": 200, "body": "pong"}')
    m = re.fullmatch(r"/(json|http)/([0-9]+)", path)
    if not m:
        return Action("status", f"no case for {path[:60]!r}".encode(), 404,
                      {"type": "ResourceNotFoundException"})
    return Action("payload", CASES[int(m.group(2))].data())


def vcl(url):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new hj = lambda.backend("hostile", "us-east-1", "{url}", timeout = 30s,
                            response_format = "json");
    new hh = lambda.backend("hostile", "us-east-1", "{url}", timeout = 30s,
                            response_format = "http");
}}
sub vcl_recv {{
    if (req.url ~ "^/http/") {{
        set req.backend_hint = hh.backend();
    }} else {{
        set req.backend_hint = hj.backend();
    }}
    return (pass);
}}
sub vcl_backend_error {{
    set beresp.http.X-Fetch-Failed = "1";
}}
"""


def stat(v, name):
    out = subprocess.run(["varnishstat", "-n", v.workdir, "-1", "-f", name], capture_output=True,
                         text=True, timeout=30).stdout.split()
    return int(out[1]) if len(out) > 1 else None


class VarnishLog:
    """varnishlog -b for a few tags, text output to a file; parsed per backend request URL."""

    TAGS = "BereqURL,FetchError,Error,LostHeader"

    def __init__(self, v, path):
        self.path = path
        self.out = open(path, "w")
        self.proc = subprocess.Popen(["varnishlog", "-n", v.workdir, "-b", "-i", self.TAGS],
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def wait_for(self, url, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.out.flush()
            with open(self.path) as f:
                if f" {url}\n" in f.read():
                    return True
            time.sleep(0.2)
        return False

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()

    def records(self) -> dict:
        """BereqURL -> [(tag, text), ...] of its transaction."""
        out, url, recs = {}, None, []
        with open(self.path, errors="replace") as f:
            for line in f:
                if line.startswith("*"):
                    if url is not None:
                        out.setdefault(url, []).extend(recs)
                    url, recs = None, []
                    continue
                parts = line.rstrip("\n").split(None, 2)
                if len(parts) < 2 or parts[0] != "-":
                    continue
                tag, text = parts[1], parts[2] if len(parts) > 2 else ""
                if tag == "BereqURL":
                    url = text
                else:
                    recs.append((tag, text))
        if url is not None:
            out.setdefault(url, []).extend(recs)
        return out


@pytest.fixture(scope="module")
def run():
    """Feed the whole corpus through varnishd once; the tests below check the results."""
    require_stage()
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        log = VarnishLog(v, os.path.join(v.dir, "backend.log"))
        try:
            # The log is attached once a first transaction shows up in it.
            for _ in range(50):
                raw_request(v.port, b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n")
                if log.wait_for("/ping", timeout=0.5):
                    break
            else:
                pytest.fail("varnishlog never showed a transaction")
            starts = stat(v, "MGT.child_start")

            def one(key):
                fmt, i = key
                req = f"GET /{fmt}/{i} HTTP/1.1\r\nHost: hostile\r\n\r\n".encode()
                return key, raw_request(v.port, req)

            keys = [(fmt, i) for i in range(len(CASES)) for fmt in FORMATS]
            with ThreadPoolExecutor(4) as pool:
                responses = dict(pool.map(one, keys))
            after = raw_request(v.port, b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n")
            log.wait_for(f"/{FORMATS[-1]}/{len(CASES) - 1}")
            time.sleep(1)
            result = {
                "responses": responses,
                "after": after,
                "panic": v.adm("panic.show", check=False),
                "child_start": (starts, stat(v, "MGT.child_start")),
                "child_panic": stat(v, "MGT.child_panic"),
                "losthdr": stat(v, "MAIN.losthdr"),
                "invocations": fake.invocations,
            }
        finally:
            log.stop()
        result["log"] = log.records()
        yield result


def _headers(raw_headers):
    out = {}
    for name, value in raw_headers:
        out.setdefault(name.decode("latin-1").lower(), []).append(
            value.decode("utf-8", "surrogateescape"))
    return out


PARAMS = [pytest.param(i, fmt, id=f"{i:03d}-{fmt}-{c.name[:60]}")
          for i, c in enumerate(CASES) for fmt in FORMATS]


@pytest.mark.parametrize("index,fmt", PARAMS)
def test_hostile_response(run, index, fmt):
    case = CASES[index]
    expect = getattr(case, fmt)
    status, raw_headers, body, head = run["responses"][(fmt, index)]
    headers = _headers(raw_headers)
    records = run["log"].get(f"/{fmt}/{index}", [])
    errors = [text for tag, text in records if tag == "FetchError"]
    lost = [text for tag, text in records if tag == "LostHeader"]

    # Never, whatever the case: an injected header, a lost header.
    assert "x-injected" not in headers, head
    assert not lost, f"headers lost: {lost[:3]}"

    if isinstance(expect, Fail):
        assert status == 503 and headers.get("x-fetch-failed") == ["1"], \
            f"expected a failed fetch, got {status} {head[:300]!r}"
        assert errors, f"no FetchError logged; records: {records[:5]}"
        prefix = f"lambda: {OBJECT[fmt]}: "
        assert errors[0].startswith(prefix), errors
        assert re.search(expect.reason, errors[0]), errors
    else:
        assert isinstance(expect, Ok)
        assert "x-fetch-failed" not in headers, f"fetch failed: {errors}"
        assert status == expect.status, (head[:300], errors)
        if expect.reason is not None:
            assert head.split(b"\r\n", 1)[0].decode() == f"HTTP/1.1 {expect.status} {expect.reason}"
        for name, want in expect.headers.items():
            if want is None:
                assert name not in headers, f"{name} should have been dropped"
            elif isinstance(want, list):
                assert headers.get(name) == want
            else:
                assert headers.get(name) == [want], name
        if expect.body is not None:
            assert body == expect.body
        if expect.body_len is not None:
            assert len(body) == expect.body_len
        if status not in (204, 304):
            assert headers.get("content-length") == [str(len(body))] or \
                headers.get("transfer-encoding") == ["chunked"]


def test_corpus_is_large_enough():
    assert len(CASES) >= 100


def test_child_survived_the_corpus(run):
    assert "Child has not panicked" in run["panic"], run["panic"]
    assert run["child_start"][0] == run["child_start"][1] == 1
    assert run["child_panic"] == 0
    assert run["losthdr"] == 0
    status, headers, body, _ = run["after"]
    assert status == 200 and body == b"pong"
    # Every case was invoked exactly once per format (plus the pings): nothing retried or lost.
    assert run["invocations"] >= 2 * len(CASES)
