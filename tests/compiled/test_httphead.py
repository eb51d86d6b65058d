"""The head of an answer parsed in C (vmod_lambda/_httphead.pyx) gives what direct.py's Python parser
gives, over generated heads: plain ones (parsed in C) and ones that are not (tabs, bytes beyond
ASCII, malformed lines, odd status lines), which the C parser leaves to Python, whose outcome
(values or BadResponse) is then the same as before."""

import random

import pytest

from vmod_lambda.transport import direct

_httphead = pytest.importorskip("vmod_lambda._httphead")


def python_parse(head):
    """direct._parse_head without the C parser: the reference."""
    saved, direct._httphead = direct._httphead, None
    try:
        return direct._parse_head(head)
    except direct.BadResponse as e:
        return ("BadResponse", str(e))
    finally:
        direct._httphead = saved


def c_parse(head):
    try:
        return direct._parse_head(head)
    except direct.BadResponse as e:
        return ("BadResponse", str(e))


LAMBDA_ANSWER = (b"HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 19:00:00 GMT\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 70\r\nConnection: keep-alive\r\n"
                 b"x-amzn-RequestId: 0b7c1a5e-1111-2222-3333-444455556666\r\n"
                 b"X-Amz-Executed-Version: $LATEST\r\nX-Amzn-Trace-Id: root=1-abc;sampled=0")


def test_a_lambda_answer_is_parsed_in_c_as_in_python():
    parsed = _httphead.parse(LAMBDA_ANSWER)
    assert parsed is not None
    assert parsed == python_parse(LAMBDA_ANSWER)
    assert parsed[0] == 200 and parsed[1] == "OK" and parsed[3] is True
    assert parsed[2]["x-amzn-requestid"] == "0b7c1a5e-1111-2222-3333-444455556666"


STATUS_LINES = [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 200 ",
                b"HTTP/1.1 404 Not  Found ", b"HTTP/1.1  200 OK", b"HTTP/1.1 +20 OK", b"HTTP/1.1 2_0 OK",
                b"HTTP/1.1 099 X", b"HTTP/1.1 1000 X", b"HTTP/2 200 OK", b"HTTP/1.10 200 OK",
                b"HTTP/1.1 20 X", b"HTTP/1.1", b"", b"http/1.1 200 OK", b"HTTP/1.1 999 \xe9",
                b"HTTP/1.1\t200 OK", b"HTTP/1.1 200 OK\r"]
NAMES = [b"Content-Type", b"content-length", b"X-Amz-Function-Error", b"x-amzn-RequestId", b"A",
         b"Set-Cookie", b" Lead", b"Trail ", b"", b"N\xe9", b"Ta\tb", b"X" * 300, b"Col:on"]
VALUES = [b"v", b"", b"  padded  ", b"a, b", b"tab\there", b"\xe9t\xe9", b"x\x85", b"\x1c", b"q" * 50,
          b"with:colon", b"\r", b"a\rb", b"a\nb"]


def test_c_parse_equals_python_parse_over_generated_heads():
    rng = random.Random(16)
    in_c = 0
    for _ in range(30000):
        lines = [rng.choice(STATUS_LINES) if rng.random() < 0.3 else b"HTTP/1.1 200 OK"]
        for _ in range(rng.randrange(0, 9)):
            if rng.random() < 0.05:
                lines.append(rng.choice([b"", b"no colon", b":empty name", b" : x"]))
                continue
            plain = rng.random() < 0.7
            name = rng.choice(NAMES[:6]) if plain else rng.choice(NAMES)
            value = rng.choice(VALUES[:4] + VALUES[8:10]) if plain else rng.choice(VALUES)
            lines.append(name + b":" + (b" " if rng.random() < 0.8 else b"") + value)
        head = b"\r\n".join(lines)
        if rng.random() < 0.02:
            head += b"\r\n"
        expected = python_parse(head)
        assert c_parse(head) == expected, head
        in_c += _httphead.parse(head) is not None
    assert in_c > 5000      # (a third of them plain: parsed in C)
