"""A steady stream of big Lambda answers through varnishd (issue 17, round 2): the direct transport
reads each body into a buffer of its own that the fetch takes over, and the loader's warm cache hands
freed big buffers to the next answers. Every answer is different (size and bytes), fetched 8 at a
time through both transports, so that a reused buffer whose old bytes leaked into an answer, or a
length taken from the wrong answer, shows; answers cut short or longer than their Content-Length
fail or are served as the Python path serves them, and varnishd never panics."""

import hashlib
import json
import random
import re
from concurrent.futures import ThreadPoolExecutor

from support.fake_lambda import Action, FakeLambda, event_path
from support.http_helpers import raw_request
from support.varnish_harness import Varnishd, require_stage, two_transport_vcl

N = 24
RNG = random.Random(1717)
TEXT = "abcdefghij \u00e9\"\\\n"


def _body(i):
    n = RNG.randrange(300_000, 3_000_000)
    return "".join(RNG.choice(TEXT) for _ in range(200)) * (n // 200) + str(i)


BODIES = [_body(i) for i in range(N)]
PAYLOADS = [json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"},
                        "body": b}).encode() for b in BODIES]


def route(name, event):
    path = event_path(event)
    m = re.fullmatch(r"/b/([0-9]+)", path)
    if m:
        return Action("payload", PAYLOADS[int(m.group(1))])
    if path == "/cut":
        return Action("partial", PAYLOADS[0])
    if path == "/extra":
        body = PAYLOADS[1]
        return Action("raw", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                      + b"TRAILING GARBAGE")
    return Action("status", b"no such case", 404, {"type": "ResourceNotFoundException"})


def vcl(url):
    return two_transport_vcl("big", url)


def get(v, path, transport="direct"):
    status, _, body, _ = raw_request(
        v.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Transport: {transport}\r\n\r\n".encode())
    return status, body


def test_a_stream_of_different_big_answers_keeps_every_byte():
    require_stage()
    want = [hashlib.sha256(b.encode()).hexdigest() for b in BODIES]
    with FakeLambda(route) as fl, Varnishd(vcl(fl.url)) as v:
        for transport in ("direct", "boto3"):
            order = list(range(N)) * 3
            random.Random(transport).shuffle(order)
            with ThreadPoolExecutor(8) as ex:
                got = list(ex.map(lambda i: (i, get(v, f"/b/{i}", transport)), order))
            for i, (status, body) in got:
                assert status == 200, (transport, i, status)
                assert hashlib.sha256(body).hexdigest() == want[i], (transport, i, len(body))
        # A body cut short fails the fetch; one longer than its Content-Length is served as
        # Content-Length says (the connection is not reused); the next answers are whole.
        assert get(v, "/cut")[0] == 503
        status, body = get(v, "/extra")
        assert status == 200 and body == BODIES[1].encode()
        for i in (2, 3):
            assert get(v, f"/b/{i}") == (200, BODIES[i].encode())
        c = v.counters()
        assert c["lambda.d.fast_response"] >= 3 * N + 3, c
        assert not v.panicked()
