"""A seeded generator of Lambda JSON answers for tests/compiled/test_fastresponse.py: mostly the common
shapes that the C mapping takes (_fastresponse), each with a chance of what makes it rare or
wrong (odd status, non-string header values, repeated keys, hop-by-hop headers, escapes, lone
surrogates, bad base64, other keys, mutated or cut bytes), so that both mappings see both."""

import base64
import json
import random

NAMES = ["Content-Type", "content-type", "X-Foo", "x-foo", "Set-Cookie", "set-cookie", "Cache-Control",
         "Vary", "ETag", "Location", "Content-Length", "Transfer-Encoding", "Connection",
         "Keep-Alive", "TE", "Trailer", "Upgrade", "Proxy-Connection", "X-Y_z.1~", "bad name", "",
         "X-\u00e9", "X:colon"]
TEXT = ("abcXYZ019 -_.,;=/\\\"'{}[]:" + "\t\n\r\x00\x01\x1f\x7f" + "\u00e9\u20ac\u2028"
        + "\U0001F600" + "\ud800\udc00")
STATUS = [200, 200, 200, 201, 301, 302, 404, 500, 503, 599, "200", "0404", "404", 204, 304, 100, 199,
          600, 0, -1, 200.0, 2e2, True, None, "2x", "", "1234567890", [200]]


def _text(rng, n, common, body=False):
    if common and rng.random() < 0.8:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 =;/-_.,"
        if body and rng.random() < 0.5:     # what text bodies hold: escapes and UTF-8 in C too
            alphabet += "\n\t\"\\\u00e9\u20ac\U0001F600\x00<>"
        return "".join(rng.choice(alphabet) for _ in range(n))
    return "".join(rng.choice(TEXT) for _ in range(n))


def _scalar(rng, common):
    r = rng.random()
    if common or r < 0.85:
        return _text(rng, rng.randrange(0, 24), common)
    return rng.choice([1, 2.5, True, False, None, [], {}, ["a"]])


def _name(rng, common):
    if common and rng.random() < 0.9:
        return rng.choice(NAMES[:10])
    return rng.choice(NAMES)


def _reason(rng, common):
    """A statusDescription: ALB's "HTTP 200 OK" and its variants, pieces of them, or odd text."""
    if not common and rng.random() < 0.1:
        return rng.choice([None, 1, True, [], "caf\u00e9", "a\nb", "\x00"])
    parts = [rng.choice(["", "HTTP", "HTTP/1.1", "HTTP/2", "HTTP/1.x", "HTTP/", "HTTPS", "http"]),
             rng.choice(["", " ", "  ", "\t", " \t"]),
             rng.choice(["", "200", "404", "2000", "20", "999", "000"]),
             rng.choice(["", " ", "  ", "\t"]),
             rng.choice(["", "OK", "Not Found", "Moved  Permanently", "x", " \"q\" "]),
             rng.choice(["", " ", "\t"])]
    return "".join(parts)


def answer(rng: random.Random) -> bytes:
    """One generated payload (bytes)."""
    common = rng.random() < 0.6
    obj = {}
    keys = []
    if rng.random() < 0.97:
        keys.append(("statusCode", rng.choice(STATUS[:10]) if common else rng.choice(STATUS)))
    if rng.random() < 0.8:
        keys.append(("headers", None if rng.random() < 0.05 else
                     {_name(rng, common): _scalar(rng, common) for _ in range(rng.randrange(0, 6))}))
    if rng.random() < 0.3:
        keys.append(("multiValueHeaders", None if rng.random() < 0.05 else
                     {_name(rng, common): (None if not common and rng.random() < 0.1 else
                                           [_scalar(rng, common) for _ in range(rng.randrange(0, 3))])
                      for _ in range(rng.randrange(0, 4))}))
    if rng.random() < 0.3:
        keys.append(("cookies", None if rng.random() < 0.05 else
                     [_scalar(rng, common) for _ in range(rng.randrange(0, 4))]))
    b64 = rng.random() < 0.3
    if rng.random() < 0.9:
        if b64:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
            body = base64.b64encode(raw).decode()
            if not common and rng.random() < 0.5:
                body = rng.choice([body.rstrip("="), body + "=", body + "\n", "=" + body,
                                   body[:-1], body.replace("A", "-"), body + "===="])
        else:
            body = _text(rng, rng.randrange(0, 200), common, body=True)
        keys.append(("body", body if rng.random() > 0.03 else rng.choice([None, 5, [], {}])))
    if b64 or rng.random() < 0.2:
        keys.append(("isBase64Encoded", b64 if rng.random() > 0.05 else rng.choice([None, 1, "true"])))
    if rng.random() < 0.2:
        keys.append(("statusDescription", _reason(rng, common)))
    if not common and rng.random() < 0.2:
        keys.append((rng.choice(["foo", "Headers", "statusdescription"]),
                     rng.choice(["HTTP 200 OK", "404 Not Found", "Fine", None, 1])))
    rng.shuffle(keys)
    obj = dict(keys)
    ensure_ascii = rng.random() < 0.5
    try:
        text = json.dumps(obj, ensure_ascii=ensure_ascii,
                          separators=rng.choice([(",", ":"), (", ", ": ")]),
                          indent=rng.choice([None, None, None, 1, "\t"]))
        data = text.encode("utf-8")
    except UnicodeEncodeError:                  # a lone surrogate: only as an escape
        data = json.dumps(obj).encode()
    if rng.random() < 0.1:
        data = data.replace(b"/", b"\\/")       # as PHP and some others write JSON
    if not common and rng.random() < 0.05 and keys:
        k = json.dumps(keys[0][0]).encode()     # the same key twice
        data = data[:1] + k + b":" + json.dumps(keys[0][1] if keys[0][1] is not None else 1,
                                                  default=str).encode() + b"," + data[1:]
    if not common and rng.random() < 0.15:
        data = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(data) + 1)
            op = rng.randrange(3)
            if op == 0 and i < len(data):
                data[i] = rng.randrange(256)
            elif op == 1:
                data[i:i] = bytes([rng.choice(b'"\\{}[],: \t\nu0aA\x80\xc3\xff')])
            elif i < len(data):
                del data[i]
        data = bytes(data)
    if not common and rng.random() < 0.03:
        data = data[:rng.randrange(len(data) + 1)]
    return data


def corpus(seed: int, n: int):
    rng = random.Random(seed)
    for _ in range(n):
        yield answer(rng)
