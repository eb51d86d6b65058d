"""The two mappings of a Lambda answer side by side (tests/compiled/test_fastresponse.py,
tests/varnish/test_fastresponse_varnish.py): the Python one as the director applies it, the C one
(_fastresponse), and the response corpora (corpus/response/)."""

import base64
import os
import random

from vmod_lambda import _fastresponse, _response, events, fetch

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "response")
# Storage chunk patterns: one large piece, tiny pieces that split escapes, quads and characters.
CHUNKS = [(1 << 20,), (1,), (2, 3), (7, 1, 4096), (3,), (5, 13, 1)]


def python_record(payload):
    """What the director writes today: parse_response, the 1xx check of fetch.py, response_fill."""
    try:
        r = events.parse_response("json", payload)
    except events.ResponseError:
        return None
    if r.status < 200:
        return None
    return _response.round_trip(fetch.FetchResult(r.status, r.reason, r.headers, r.body))


def compare(payloads, seed=1, tally=None):
    """(answers, taken by C); raises AssertionError at the first difference. tally: a dict
    that counts the answers left to Python by what Python made of them (mapped, rejected)."""
    rng = random.Random(seed)
    taken = 0
    n = 0
    for payload in payloads:
        n += 1
        chunks = rng.choice(CHUNKS)
        c = _fastresponse.map_c(payload, chunks=chunks)
        assert _fastresponse.check(payload) == (c is not None), payload[:200]
        # the fetch thread's fill reads the body the worker's check measured; alone, the same
        assert _fastresponse.map_c(payload, chunks=chunks, checked=False) == c, payload[:200]
        if c is None:
            if tally is not None:
                key = "python_mapped" if python_record(payload) is not None else "python_rejected"
                tally[key] = tally.get(key, 0) + 1
            continue
        taken += 1
        py = python_record(payload)
        assert c == py, (payload[:300], c and c[:4], py and py[:4])
    return n, taken


def lines(name):
    with open(os.path.join(CORPUS, name)) as f:
        return [base64.b64decode(line) for line in f if line.strip()]
