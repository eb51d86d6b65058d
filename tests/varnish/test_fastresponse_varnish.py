"""The common Lambda answer mapped in C (_fastresponse) through a real varnishd: the same
responses, byte for byte, as the Python mapping (a second varnishd with
VMOD_LAMBDA_FAST_RESPONSE=0), for answers of the seed corpus that C takes and answers it leaves to
Python, and for 1 MiB bodies (JSON text with escapes and UTF-8; base64), through both transports.
The fast_response counter says which fetches C mapped."""

import base64
import json
import os
import random
import re
import sys

import pytest

from support.fake_lambda import Action, FakeLambda, event_path, raw_request  # noqa: E402
from support.varnish_harness import Varnishd, require_stage, two_transport_vcl  # noqa: E402
from support.fastresponse import python_record, lines as _lines  # noqa: E402

from vmod_lambda import _fastresponse  # noqa: E402

VOLATILE = {b"date", b"x-varnish", b"age"}


def _payloads():
    fast, slow = [], []
    for p in _lines("seed.txt"):
        if python_record(p) is None:
            continue        # failed fetches: Varnish's own error page (with its XID), not the mapping
        (fast if _fastresponse.check(p) else slow).append(p)
    rng = random.Random(17)
    text = "".join(rng.choice("abcdef \u00e9\u20ac\n\t\"\\/<>") for _ in range(1 << 20))
    big = [json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"},
                       "body": text}).encode(),
           json.dumps({"statusCode": 200, "body": base64.b64encode(rng.randbytes(1 << 20)).decode(),
                       "isBase64Encoded": True, "cookies": ["a=1", "b=2"]}).encode()]
    return fast[:150] + big, slow[:40]


FAST, SLOW = _payloads()
ALL = FAST + SLOW


def route(name, event):
    m = re.fullmatch(r"/i/([0-9]+)", event_path(event))
    if not m:
        return Action("status", b"no such case", 404, {"type": "ResourceNotFoundException"})
    return Action("payload", ALL[int(m.group(1))])


def vcl(url):
    return two_transport_vcl("fr", url)


def _get(v, i, transport):
    status, _, body, head = raw_request(
        v.port, f"GET /i/{i} HTTP/1.1\r\nHost: x\r\nX-Transport: {transport}\r\n\r\n".encode())
    lines = [line for line in head.split(b"\r\n")
             if line.split(b":", 1)[0].lower() not in VOLATILE]
    return lines, body


def test_c_and_python_mappings_serve_the_same_responses():
    require_stage()
    assert len(FAST) > 100 and len(SLOW) > 10
    with FakeLambda(route) as fl, \
            Varnishd(vcl(fl.url)) as fast, \
            Varnishd(vcl(fl.url), env={"VMOD_LAMBDA_FAST_RESPONSE": "0"}) as slow:
        for transport in ("direct", "boto3"):
            for i in range(len(ALL)):
                got, want = _get(fast, i, transport), _get(slow, i, transport)
                assert got == want, (transport, i, ALL[i][:200])
                assert want[0][0].startswith(b"HTTP/1.1 "), want[0][:1]
        c_fast, c_slow = fast.counters(), slow.counters()
        assert c_fast["lambda.d.fast_response"] == len(FAST), c_fast
        assert c_fast["lambda.b.fast_response"] == len(FAST), c_fast
        assert c_slow["lambda.d.fast_response"] == 0 and c_slow["lambda.b.fast_response"] == 0
        assert c_fast["lambda.d.fail"] == 0 and c_fast["lambda.b.fail"] == 0, c_fast
        assert not fast.panicked() and not slow.panicked()
