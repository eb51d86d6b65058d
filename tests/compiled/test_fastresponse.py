"""The common Lambda answer mapped in C (_fastresponse, include/vmod_lambda_resp.c) gives the
same record as the Python mapping (events.parse_response, then _response.response_fill), byte
for byte: status, reason, every header line in order with repeats, the head's byte count, and the
body as the director's VFP decodes it in the pieces Varnish's storage hands out. Over every
answer the tests already have (the corpus harvested from them, tests/support/corpus/response/
existing.txt, and tests/support/hostile_corpus.py), the committed seed corpus, and generated answers
(tests/support/response_fuzz.py; VMOD_LAMBDA_FUZZ_RESPONSE=N sets how many, `make fuzz-response` runs
100,000). An answer C does not take must be one Python maps (or rejects) itself: nothing is
lost, only slower."""

import base64
import json
import os
import random
import sys
import time

import pytest

from vmod_lambda import _fastresponse, _response, events, fetch

from support import hostile_corpus, response_fuzz
from support.fastresponse import CHUNKS, CORPUS, compare, lines as _lines, python_record  # noqa: F401

def test_existing_test_answers_map_the_same():
    payloads = _lines("existing.txt") + [c.data() for c in hostile_corpus.CASES]
    n, taken = compare(payloads)
    assert taken >= 100, f"C took only {taken} of {n} answers"


def test_seed_corpus_maps_the_same():
    payloads = _lines("seed.txt")
    n, taken = compare(payloads, seed=2)
    assert taken >= n // 5, f"C took only {taken} of {n} answers"


def test_generated_answers_map_the_same():
    count = int(os.environ.get("VMOD_LAMBDA_FUZZ_RESPONSE", "3000"))
    seed = int(os.environ.get("VMOD_LAMBDA_FUZZ_SEED", "17"))
    start = time.monotonic()
    tally = {}
    n, taken = compare(response_fuzz.corpus(seed, count), seed=seed, tally=tally)
    print(f"\nfuzz-response: seed {seed}: {n} answers, {taken} mapped by C, {n - taken} left to "
          f"Python ({tally.get('python_mapped', 0)} mapped, {tally.get('python_rejected', 0)} "
          f"rejected as invalid), 0 differences, {time.monotonic() - start:.1f} s")
    assert n == count
    assert taken >= count // 5


@pytest.mark.parametrize("obj", [
    {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello"},
    {"statusCode": "404", "headers": {"X-A": "a\"b\\c/d\te"}, "body": "caf\u00e9 \U0001F600 \n\u0000"},
    {"statusCode": 200, "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
     "headers": {"Set-Cookie": "dropped", "X": "kept", "Content-Length": "99", "TE": "x"},
     "cookies": ["c=3"]},
    {"statusCode": 200, "body": base64.b64encode(bytes(range(256))).decode(),
     "isBase64Encoded": True},
    {"body": "QQ==", "isBase64Encoded": True, "statusCode": 503, "headers": None,
     "multiValueHeaders": None, "cookies": None},
    {"statusCode": 302, "headers": {"Location": "/x"}, "body": None, "isBase64Encoded": False},
    {"statusCode": 404, "statusDescription": "404 Not Found", "body": "no"},
    {"statusCode": 200, "statusDescription": "HTTP/1.1 200 OK", "isBase64Encoded": False,
     "headers": {"Content-Type": "text/html; charset=utf-8"}, "body": "<p>hi</p>"},
    {"statusCode": 201, "statusDescription": None},
])
def test_the_common_shapes_are_mapped_by_c(obj):
    for ensure_ascii in (True, False):
        payload = json.dumps(obj, ensure_ascii=ensure_ascii).encode()
        assert _fastresponse.check(payload)
        assert _fastresponse.map_c(payload, chunks=(1,)) == python_record(payload)


REASONS = ["HTTP 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1  301   Moved Permanently ", "200 OK", "OK",
           "Not Found", "HTTP 404", "HTTP/2 200 OK", "HTTP/1.x 200 OK", "HTTP/1.1", "HTTP/", "HTTP",
           "HTTPS 200 OK", "HTTP/1.1\t200\tOK\t", "200", "200 ", "2000 OK", "20 OK", "", " ", "\t",
           "  spaced  out  ", "HTTP 200", "HTTP  ", "HTTP/1.1 20 OK", "HTTP/11 200",
           "OK \"quoted\" \\ /", "999 Whatever", "HTTP/1.1 200OK", "HTTP/9.9 000"]


@pytest.mark.parametrize("desc", REASONS)
def test_status_description_reads_as_python_reads_it(desc):
    payload = json.dumps({"statusCode": 200, "statusDescription": desc, "body": "x"}).encode()
    assert _fastresponse.check(payload)
    assert _fastresponse.map_c(payload) == python_record(payload)


@pytest.mark.parametrize("payload", [
    b'{"statusCode": 200, "statusCode": 201}',                 # repeated key: the last wins
    b'{"statusCode": 200, "headers": {"X": 1}}',               # a number as a header value
    b'{"statusCode": 200, "headers": {"Connection": "x", "X": "y"}}',
    b'{"statusCode": 200, "body": "\\ud800"}',                 # lone surrogate: Python rejects it
    b'{"statusCode": 200, "body": "QQ", "isBase64Encoded": true}',
    b'{"statusCode": 204, "body": "x"}',
    b'{"statusCode": 200, "statusDescription": "\\u00e9"}',    # not printable ASCII
    b'{"statusCode": 200, "Body": ""}',                        # another key
    b'[200]',
    b'{"statusCode": 200, "body": "\xff"}',
])
def test_doubtful_answers_are_left_to_python(payload):
    assert not _fastresponse.check(payload)
    assert _fastresponse.map_c(payload) is None


def _bodies_with_one_special_byte():
    """Text and base64 bodies across the vector scans' block sizes (32 bytes for a JSON string's
    plain run, 64 for the base64 alphabet), each with one byte that ends the fast run (a quote, a
    backslash escape, a control character, DEL, a UTF-8 sequence, a base64 digit out of the
    alphabet, '=' inside the data) at every offset of the first blocks."""
    import json as _json
    rng = random.Random(5)
    text_specials = ['\\"', "\\\\", "\\n", "\\u00e9", "\x7f", "é", "\x01", '"']
    for n in (31, 32, 33, 63, 64, 65, 96, 130, 257):
        plain = "".join(rng.choice("abcXYZ0189 -_.~!#{}") for _ in range(n))
        yield _json.dumps({"statusCode": 200, "body": plain}).encode()
        for pos in range(0, min(n, 70)):
            for sp in text_specials:
                body = plain[:pos] + sp + plain[pos:]
                yield (b'{"statusCode": 200, "body": "' + body.encode("utf-8") + b'"}')
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for n in (60, 64, 68, 128, 132, 200, 256, 260):
        data = "".join(rng.choice(b64) for _ in range(n))
        yield _json.dumps({"statusCode": 200, "isBase64Encoded": True, "body": data}).encode()
        for pos in range(0, min(n, 140)):
            for sp in ("=", "-", "_", " ", "\\n", "\x00", "\x7f", "é", "*", "@", "[", "`", "{"):
                body = data[:pos] + sp + data[pos + 1:]
                yield (b'{"statusCode": 200, "isBase64Encoded": true, "body": "'
                       + body.encode("utf-8", "surrogatepass") + b'"}')


def test_bodies_across_the_vector_blocks_map_the_same():
    tally = {}
    n, taken = compare(_bodies_with_one_special_byte(), seed=9, tally=tally)
    assert n > 10000 and taken > 2000, (n, taken, tally)
    assert tally.get("python_rejected", 0) > 1000, tally      # the bad bytes were seen
