"""Hostile Lambda response payloads, each with the outcome vmod_lambda.vcc documents for it, in both
response formats.

Every case is one payload that a function (or whatever answers at the endpoint) returns. tests/
test_hostile.py feeds each payload through a real varnishd twice, once to an object with
response_format = "json" and once to one with response_format = "http", and checks the outcome
given here for that format:

* Fail(reason): the fetch fails (vcl_backend_error, a 503 made by Varnish) and a FetchError
  `lambda: <object>: ...` whose text matches *reason* (a regex) says why;
* Ok(status, ...): the response is served, sanitised as documented (hop-by-hop headers and
  Content-Length dropped, Content-Length set from the body), with the headers and body given.

Cases are grouped by what they attack. A payload meant for one format is still fed to the other:
a function that answers in the wrong format must fail cleanly too, never be served as garbage.
Payloads are built lazily (some are megabytes).
"""

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

__all__ = ["Case", "Fail", "Ok", "CASES"]


@dataclass
class Fail:
    reason: str                          # regex searched in the FetchError text


@dataclass
class Ok:
    status: int
    headers: dict = field(default_factory=dict)   # lower-case name -> value (str), or None: absent
    body: Optional[bytes] = None                  # exact body, when given
    body_len: Optional[int] = None
    reason: Optional[str] = None                  # exact reason phrase, when given


Expect = Union[Fail, Ok]


@dataclass
class Case:
    name: str
    payload: Union[bytes, Callable[[], bytes]]
    json: Expect
    http: Expect

    def data(self) -> bytes:
        return self.payload() if callable(self.payload) else self.payload


def J(obj, **kw) -> bytes:
    return json.dumps(obj, **kw).encode()


# What the "other" format says about a payload meant for one format.
NOT_JSON = Fail(r"invalid response: payload is not valid JSON")
NOT_UTF8 = Fail(r"invalid response: payload is not UTF-8")
NOT_HTTP = Fail(r"invalid response: bad status line")
# An answer beyond Lambda's 6 MB (limits.MAX_RESPONSE_BODY), refused by the transport whatever the
# response format (issue 22, point 11).
TOO_LARGE = Fail(r"the answer exceeds the 6 MB limit of synchronous invocations "
                 r"\(Content-Length [0-9]+; at most 6356992 bytes are read\): refused, "
                 r"connection closed")

CASES: list = []


def case(name, payload, json=None, http=None):
    if json is None:
        json = NOT_JSON
    if http is None:
        http = NOT_HTTP
    CASES.append(Case(name, payload, json, http))


def resp(**fields) -> bytes:
    """A JSON response object; statusCode 200 unless given."""
    obj = {"statusCode": 200}
    obj.update(fields)
    return J(obj)


# ---------------------------------------------------------------------------------------------
# 1. Malformed and truncated JSON

GOOD = resp(headers={"content-type": "text/plain"}, body="hello")
case("empty payload", b"", json=NOT_JSON, http=NOT_HTTP)
for cut in (1, 2, 14, 15, 30, len(GOOD) // 2, len(GOOD) - 2, len(GOOD) - 1):
    case(f"JSON truncated at byte {cut}", GOOD[:cut])
case("JSON with trailing garbage", GOOD + b"garbage")
case("two JSON documents", GOOD + GOOD)
case("JSON with single quotes", b"{'statusCode': 200}")
case("JSON with a trailing comma", b'{"statusCode": 200,}')
case("JSON with a comment", b'{"statusCode": 200 /* c */}')
case("JSON with an unescaped control character in a string",
     b'{"statusCode": 200, "body": "a\x01b"}')
case("JSON with a bad escape", b'{"statusCode": 200, "body": "\\x41"}')
case("JSON with a truncated unicode escape", b'{"statusCode": 200, "body": "\\u12"}')
case("only whitespace", b" \r\n\t ")
case("a UTF-8 BOM before the JSON", b"\xef\xbb\xbf" + GOOD)
case("NUL bytes only", b"\x00" * 64)
case("binary junk", bytes(range(256)) * 4, json=NOT_UTF8)

# Valid JSON that is not a response object: the payload 2.0 rule serves it as application/json.
for text in (b'"just a string"', b"12345", b"null", b"true", b"[]", b"[1, 2, 3]",
             b'{"no": "statusCode"}', b'{"StatusCode": 500}'):
    case(f"JSON value without statusCode {text[:20]!r}", text,
         json=Ok(200, {"content-type": "application/json"}, body=text))
case("a JSON string that holds an HTTP response", J("HTTP/1.1 200 OK\r\nX-Injected: 1\r\n\r\nhi"),
     json=Ok(200, {"content-type": "application/json", "x-injected": None}),
     http=Fail(r"bad status line .*\(a JSON string: use response_format"))

# ---------------------------------------------------------------------------------------------
# 2. Wrong types and values for every field

for value, why in ((200.0, "not an integer"), ("200.5", "not an integer"), (True, "not an integer"),
                   (None, "not an integer"), ([], "not an integer"), ({}, "not an integer"),
                   ("abc", "not an integer"), ("", "not an integer"), ("-200", "not an integer"),
                   (" 200", "not an integer"), (1e3, "not an integer"), (99, "not in 100-599"),
                   (600, "not in 100-599"), (0, "not in 100-599"), (-1, "not in 100-599"),
                   (2 ** 64, "not in 100-599"), (10 ** 30, "not in 100-599"),
                   ("9999999999", "not an integer"), (100, "interim .1xx. response"),
                   (101, "interim .1xx. response"), ("103", "interim .1xx. response")):
    case(f"statusCode {value!r}", resp(statusCode=value, body="x"),
         json=Fail(rf"invalid response: (statusCode|status) .*{why}"))
case("statusCode NaN", b'{"statusCode": NaN, "body": "x"}',
     json=Fail(r"invalid response: statusCode nan is not an integer"))
case("statusCode Infinity", b'{"statusCode": Infinity}',
     json=Fail(r"invalid response: statusCode inf is not an integer"))
case("statusCode 1e400 (overflows to inf)", b'{"statusCode": 1e400}',
     json=Fail(r"invalid response: statusCode inf is not an integer"))
case("statusCode with 5000 digits", b'{"statusCode": ' + b"9" * 5000 + b"}",
     json=Fail(r"invalid response: payload is not valid JSON: .*(digits|limit)"))
case("statusCode numeric string \"0200\"", resp(statusCode="0200", body="x"),
     json=Ok(200, body=b"x"))
case("duplicate statusCode: the last one wins", b'{"statusCode": 200, "statusCode": 404}',
     json=Ok(404, body=b""))

for value in (123, [], {}, True):
    case(f"statusDescription {value!r}", resp(statusDescription=value, body="x"),
         json=Fail(r"invalid response: statusDescription .* is not a string"))
for value in ("OK\r\nX-Injected: 1", "OK\nX-Injected: 1", "OK\rX-Injected: 1", "OK\x00X",
              "OK\x1b[31m"):
    case(f"statusDescription with a control character {value!r}",
         resp(statusDescription=value, body="x"),
         json=Fail(r"invalid response: statusDescription .* has a control character"))
case("statusDescription in ALB form", resp(statusCode=404, statusDescription="HTTP 404 Gone Fishing",
                                           body="x"),
     json=Ok(404, reason="Gone Fishing", body=b"x"))

for value in ([], "x-a: 1", 1, True, [["x-a", "1"]]):
    case(f"headers is {type(value).__name__}", resp(headers=value, body="x"),
         json=Fail(r"invalid response: headers is .*, not an object"))
for value in ([], {}, [["a"]]):
    case(f"a header value is {type(value).__name__}", resp(headers={"x-a": value}, body="x"),
         json=Fail(r"invalid response: headers\['x-a'\] is a (list|object), not a string"))
case("header values of scalar types", resp(headers={"x-int": 1, "x-float": 1.5, "x-true": True,
                                                    "x-false": False, "x-null": None}, body="x"),
     json=Ok(200, {"x-int": "1", "x-float": "1.5", "x-true": "true", "x-false": "false",
                   "x-null": None}, body=b"x"))
for value in ([], "x", 1):
    case(f"multiValueHeaders is {type(value).__name__}", resp(multiValueHeaders=value, body="x"),
         json=Fail(r"invalid response: multiValueHeaders is .*, not an object"))
for value, why in (("notalist", "is a string, not a list"), ({"a": 1}, "is an object, not a list"),
                   ([[1]], "item is a list"), ([{}], "item is a object|item is an object")):
    case(f"multiValueHeaders entry {value!r}", resp(multiValueHeaders={"x-m": value}, body="x"),
         json=Fail(rf"invalid response: multiValueHeaders\['x-m'\] ({why})"))
case("multiValueHeaders null entry counts as absent",
     resp(headers={"x-m": "single"}, multiValueHeaders={"x-m": None}, body="x"),
     json=Ok(200, {"x-m": "single"}, body=b"x"))
for value in ("a=b", {"a": "b"}, 1):
    case(f"cookies is {type(value).__name__}", resp(cookies=value, body="x"),
         json=Fail(r"invalid response: cookies is .*, not a list"))
for value in ([1], [None], [["a=b"]], [{"a": "b"}]):
    case(f"cookies item {value!r}", resp(cookies=value, body="x"),
         json=Fail(r"invalid response: cookies item .* is not a string"))
for value in (123, [], {}, True):
    case(f"body is {type(value).__name__}", resp(body=value),
         json=Fail(r"invalid response: body is .*, not a string"))
for value in ("true", 1, [], {}):
    case(f"isBase64Encoded {value!r}", resp(body="eA==", isBase64Encoded=value),
         json=Fail(r"invalid response: isBase64Encoded .* is not a bool"))

# ---------------------------------------------------------------------------------------------
# 3. Header injection and bad header names or values (response splitting)

for name in ("X-Injected: 1\r\nX-A", "X-A\r\nX-Injected", "X-A\nX-Injected", "X A", "X-A:", ":X",
             "", "X\x00A", "X-Ünicode", "X-A\t", "(X)", "X/A", "X=A", "X\"A", "X@A", "\x7f"):
    case(f"header name {name!r}", resp(headers={name: "v"}, body="x"),
         json=Fail(r"invalid response: header name .* is not a valid token"))
for value in ("a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1", "a\x00b",
              "\r\n\r\n<html>injected body", "a\ud800b",
              # the other control characters Varnish refuses from a native backend (BogoHeader)
              "a\x01b", "a\x0bb", "\x1b[2J", "a\x7fb", "a\x1fb"):
    case(f"header value {value!r}", resp(headers={"X-A": value}, body="x"),
         json=Fail(r"invalid response: header X-A has a CR, LF, NUL, another control character "
                   r"or an invalid character"))
    case(f"multiValueHeaders value {value!r}", resp(multiValueHeaders={"X-A": ["ok", value]},
                                                   body="x"),
         json=Fail(r"invalid response: header X-A has a CR, LF, NUL, another control character "
                   r"or an invalid character"))
case("cookie with CRLF", resp(cookies=["a=b\r\nX-Injected: 1"], body="x"),
     json=Fail(r"invalid response: header Set-Cookie has a CR, LF, NUL"))
case("hop-by-hop and framing headers are dropped",
     resp(headers={"Connection": "close, X-Private", "X-Private": "secret", "Keep-Alive": "1",
                   "Transfer-Encoding": "chunked", "Content-Length": "99999", "Upgrade": "h2c",
                   "TE": "trailers", "Trailer": "X-T", "Proxy-Connection": "x", "X-Kept": "yes"},
          body="hello"),
     json=Ok(200, {"x-private": None, "keep-alive": None, "upgrade": None, "trailer": None,
                   "te": None, "proxy-connection": None, "x-kept": "yes", "content-length": "5"},
             body=b"hello"))
case("header values with a tab and non-ASCII are kept (Varnish's own rule)",
     resp(headers={"X-Tab": "a\tb", "X-Utf8": "caf\u00e9", "X-C1": "a\u0085b"}, body="x"),
     json=Ok(200, {"x-tab": "a\tb", "x-utf8": "caf\u00e9", "x-c1": "a\u0085b"}, body=b"x"))
case("a header value with another control character is refused, as from a native backend",
     resp(headers={"X-Tab": "a\tb", "X-Bell": "a\x07b"}, body="x"),
     json=Fail(r"invalid response: header X-Bell has a CR, LF, NUL, another control character"))
case("headers that differ only in case stay apart",
     resp(headers={"set-cookie": "a=1", "Set-cookie": "b=2", "SET-COOKIE": "c=3"}, body="x"),
     json=Ok(200, {"set-cookie": ["a=1", "b=2", "c=3"]}, body=b"x"))

# ---------------------------------------------------------------------------------------------
# 4. Base64

# The reason is the VMOD's own words (events._b64_problem), the same on every Python release:
# binascii's wording changes (3.13 says "Excess padding not allowed" where 3.11 said "Excess data").
for body, why in (("not base64!", "character ' ' at offset 3 is not in the base64 alphabet"),
                  ("eA", "length 2 is not a multiple of 4"),
                  ("eA===", "3 padding characters (at most 2)"),
                  ("eA= =", "character ' ' at offset 3 is not in the base64 alphabet"),
                  ("eA==\n", "character '\\n' at offset 4 is not in the base64 alphabet"),
                  ("e A==", "character ' ' at offset 1 is not in the base64 alphabet"),
                  ("-_-_", "character '-' at offset 0 is not in the base64 alphabet"),
                  ("eA=A", "data after the padding at offset 2"),
                  ("eA==eA==", "data after the padding at offset 2"),
                  ("=", "padding without data")):
    case(f"bad base64 body {body!r}", resp(body=body, isBase64Encoded=True),
         json=Fail(rf"invalid response: body is not valid base64: {re.escape(why)}(?: \(|$)"))
case("base64 of binary with NUL bytes", resp(body=base64.b64encode(b"\x00\xff\x00").decode(),
                                             isBase64Encoded=True),
     json=Ok(200, body=b"\x00\xff\x00"))
case("oversized base64 body (7.5 MB decoded, 10 MB answer)",
     lambda: resp(body=base64.b64encode(b"\xa5" * 7_500_000).decode(), isBase64Encoded=True),
     json=TOO_LARGE, http=TOO_LARGE)
case("large base64 body (4.5 MB decoded, 6 MB answer)",
     lambda: resp(body=base64.b64encode(b"\xa5" * 4_500_000).decode(), isBase64Encoded=True),
     json=Ok(200, body_len=4_500_000))
case("oversized base64 body with one bad character at the end",
     lambda: resp(body=base64.b64encode(b"\xa5" * 3_000_000).decode()[:-4] + "AA*=",
                  isBase64Encoded=True),
     json=Fail(r"invalid response: body is not valid base64"))

# ---------------------------------------------------------------------------------------------
# 5. Non-UTF-8 and odd Unicode

case("Latin-1 in the JSON", b'{"statusCode": 200, "body": "caf\xe9"}', json=NOT_UTF8)
case("overlong UTF-8 encoding of '/'", b'{"statusCode": 200, "body": "\xc0\xaf"}', json=NOT_UTF8)
case("UTF-8-encoded surrogate", b'{"statusCode": 200, "body": "\xed\xa0\x80"}', json=NOT_UTF8)
case("UTF-16 JSON", GOOD.decode().encode("utf-16"), json=NOT_UTF8)
case("body with a lone surrogate escape", b'{"statusCode": 200, "body": "a\\ud800b"}',
     json=Fail(r"invalid response: body has a lone surrogate"))
case("body with a valid surrogate pair and U+2028", resp(body="\U0001F600\u2028"),
     json=Ok(200, body="\U0001F600\u2028".encode()))
case("non-UTF-8 header value in http", b"HTTP/1.1 200 OK\r\nX-A: caf\xe9\r\n\r\nx",
     json=NOT_UTF8, http=Fail(r"invalid response: header X-A is not UTF-8"))
case("non-UTF-8 reason phrase in http", b"HTTP/1.1 200 \xff\xfe\r\n\r\nx",
     json=NOT_UTF8, http=Fail(r"invalid response: reason phrase is not UTF-8"))

# ---------------------------------------------------------------------------------------------
# 6. Deep nesting

case("100000 nested lists", lambda: b"[" * 100_000 + b"]" * 100_000,
     json=Fail(r"invalid response: payload is not valid JSON: .*(recursion|depth)"))
case("100000 nested objects", lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
     json=Fail(r"invalid response: payload is not valid JSON: .*(recursion|depth)"))
case("deep nesting inside a header value",
     lambda: b'{"statusCode": 200, "headers": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
     json=Fail(r"invalid response: payload is not valid JSON: .*(recursion|depth)"))
case("moderate nesting in an unused field is accepted",
     lambda: b'{"statusCode": 200, "body": "ok", "extra": ' + b"[" * 200 + b"]" * 200 + b"}",
     json=Ok(200, body=b"ok"))
case("unclosed nesting", lambda: b"[" * 100_000,
     json=Fail(r"invalid response: payload is not valid JSON"))

# ---------------------------------------------------------------------------------------------
# 7. Header counts and sizes beyond http_max_hdr, http_resp_size and the workspace

case("40 headers fit", resp(headers={f"x-h{i}": f"v{i}" for i in range(40)}, body="x"),
     json=Ok(200, {"x-h0": "v0", "x-h39": "v39"}, body=b"x"))
case("1000 headers", resp(headers={f"x-h{i}": "v" for i in range(1000)}, body="x"),
     json=Fail(r"too many headers: 1000 .*http_max_hdr"))
case("100000 headers", lambda: resp(headers={f"x-h{i}": "v" for i in range(100_000)}, body="x"),
     json=Fail(r"too many headers: 100000 .*http_max_hdr"))
case("1000 multiValueHeaders values", resp(multiValueHeaders={"x-m": ["v"] * 1000}, body="x"),
     json=Fail(r"too many headers: 1000 .*http_max_hdr"))
case("1000 cookies", resp(cookies=[f"c{i}=v" for i in range(1000)], body="x"),
     json=Fail(r"too many headers: 1000 .*http_max_hdr"))
case("one 200 KB header (beyond workspace_backend)", resp(headers={"x-big": "a" * 200_000},
                                                          body="x"),
     json=Fail(r"response headers of [0-9]+ bytes exceed http_resp_size"))
case("one 40 KB header (beyond http_resp_size)", resp(headers={"x-big": "a" * 40_000}, body="x"),
     json=Fail(r"response headers of [0-9]+ bytes exceed http_resp_size"))
case("one 16 KB header fits", resp(headers={"x-big": "a" * 16_000}, body="x"),
     json=Ok(200, {"x-big": "a" * 16_000}, body=b"x"))
case("50 headers of 3 KB (150 KB in all)", resp(headers={f"x-h{i}": "a" * 3000 for i in range(50)},
                                                body="x"),
     json=Fail(r"response headers of [0-9]+ bytes exceed http_resp_size"))
case("a 100 KB statusDescription", resp(statusDescription="r" * 100_000, body="x"),
     json=Fail(r"response headers of [0-9]+ bytes exceed http_resp_size"))
case("1000 headers in http", lambda: b"HTTP/1.1 200 OK\r\n" + b"".join(
    b"X-H%d: v\r\n" % i for i in range(1000)) + b"\r\nx",
     http=Fail(r"too many headers: 1000 .*http_max_hdr"))
case("one 200 KB header in http", lambda: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000
     + b"\r\n\r\nx", http=Fail(r"response headers of [0-9]+ bytes exceed http_resp_size"))

# ---------------------------------------------------------------------------------------------
# 8. Large payloads (Lambda's own limit is 6 MB; a hostile endpoint can send more: refused)

case("6 MB text body", lambda: resp(body="b" * 6_000_000), json=Ok(200, body_len=6_000_000))
case("7 MB text body", lambda: resp(body="b" * 7_000_000), json=TOO_LARGE, http=TOO_LARGE)
case("6 MB raw http body", lambda: b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
     b"\r\n\r\n" + b"\x00\xff" * 3_000_000, json=NOT_UTF8, http=Ok(200, body_len=6_000_000))
case("7 MB raw http body", lambda: b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
     b"\r\n\r\n" + b"\x00\xff" * 3_500_000, json=TOO_LARGE, http=TOO_LARGE)
case("20 MB raw http body, Content-Length framed", lambda: b"HTTP/1.1 200 OK\r\nContent-Length: "
     b"20000000\r\n\r\n" + b"z" * 20_000_000, json=TOO_LARGE, http=TOO_LARGE)
case("6 MB of JSON whitespace", lambda: b" " * 6_000_000 + GOOD + b" " * 10,
     json=Ok(200, {"content-type": "text/plain"}, body=b"hello"))
case("7 MB of JSON whitespace", lambda: b" " * 7_000_000 + GOOD + b" " * 10,
     json=TOO_LARGE, http=TOO_LARGE)

# ---------------------------------------------------------------------------------------------
# 9. Raw HTTP: status lines

case("valid http response", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
     http=Ok(200, {"content-type": "text/plain"}, body=b"hello", reason="OK"))
case("LF-only line ends", b"HTTP/1.1 201 Created\nX-A: 1\n\nhello",
     http=Ok(201, {"x-a": "1"}, body=b"hello"))
case("status line without a reason", b"HTTP/1.0 404\r\n\r\nnope", http=Ok(404, body=b"nope"))
for line in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 abc OK",
             b"HTTP/1.1  200 OK", b"http/1.1 200 OK", b"ICY 200 OK", b"HTTP/1.1 200OK",
             b" HTTP/1.1 200 OK", b"HTTP/1.1\t200 OK", b"HTTP/1.1 -20 OK", b"HTTP/1.1 0x1 OK"):
    case(f"status line {line!r}", line + b"\r\n\r\nbody", http=Fail(r"invalid response: bad status line"))
for code in (b"099", b"600", b"999", b"000"):
    case(f"status {code.decode()}", b"HTTP/1.1 " + code + b" X\r\n\r\nbody",
         http=Fail(rf"invalid response: status {int(code)} is not in 100-599"))
case("status 101 Switching Protocols", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
     http=Fail(r"invalid response: status 101 is an interim .1xx. response"))
case("reason with CR and an injected header", b"HTTP/1.1 200 OK\rX-Injected: 1\r\n\r\nx",
     http=Fail(r"invalid response: reason phrase .* has a control character"))
case("reason with NUL", b"HTTP/1.1 200 O\x00K\r\n\r\nx",
     http=Fail(r"invalid response: reason phrase .* has a control character"))

# ---------------------------------------------------------------------------------------------
# 10. Raw HTTP: header lines

for line, why in ((b"NoColonHere", "has no colon"), (b"X A: 1", "not a valid token"),
                  (b": empty name", "not a valid token"), (b"X@: 1", "not a valid token"),
                  (b"X-A : 1", "not a valid token"), (b"X-\x00A: 1", "not a valid token"),
                  (b"X-A: a\rX-Injected: 1", "has a CR, LF, NUL"),
                  (b"X-A: a\x00b", "has a CR, LF, NUL"), (b"\xffX: 1", "not a valid token"),
                  (b"X-A: a\x01b", "another control character"),
                  (b"X-A: \x1b]0;title\x07", "another control character"),
                  (b"X-A: a\x7fb", "another control character")):
    case(f"header line {line!r}", b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\nbody",
         json=NOT_UTF8 if b"\xff" in line else NOT_JSON,
         http=Fail(rf"invalid response: .*{why}"))
case("first header line is a continuation", b"HTTP/1.1 200 OK\r\n  folded\r\n\r\nx",
     http=Fail(r"invalid response: header line .* continues nothing"))
case("obs-fold continuation is joined", b"HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\n\r\nx",
     http=Ok(200, {"x-a": "one two"}, body=b"x"))
case("header section without an end", b"HTTP/1.1 200 OK\r\nX-A: 1",
     http=Ok(200, {"x-a": "1"}, body=b""))
case("hop-by-hop headers in http are dropped",
     b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: s\r\nKeep-Alive: 5\r\n"
     b"Upgrade: websocket\r\nX-Kept: yes\r\n\r\nhi",
     http=Ok(200, {"x-private": None, "keep-alive": None, "upgrade": None, "x-kept": "yes",
                   "content-length": "2"}, body=b"hi"))

# ---------------------------------------------------------------------------------------------
# 11. Raw HTTP: framing, chunked encoding errors

H = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
case("valid chunked body", H + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
     http=Ok(200, {"transfer-encoding": None}, body=b"hello world"))
case("chunked with a trailer", H + b"2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n",
     http=Ok(200, {"x-trailer": None}, body=b"hi"))
for body, why in ((b"zz\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
                  (b"-1\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
                  (b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
                  (b"11111111111111111\r\nx\r\n0\r\n\r\n", "bad chunk size line"),
                  (b"ffffffffffffffff\r\nx\r\n", "chunked body is truncated"),
                  (b"\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
                  (b"5\r\nhel", "chunked body is truncated"),
                  (b"5\r\nhello\r\n", "chunked body is truncated .no last chunk"),
                  (b"5\r\nhelloXX0\r\n\r\n", "chunk data is not followed by a line end"),
                  (b"3\r\nhello\r\n0\r\n\r\n", "chunk data is not followed by a line end"),
                  (b"", "chunked body is truncated .no last chunk"),
                  (b"2\r\nhi\r\n0\r\nbad trailer\r\n\r\n", "bad trailer line"),
                  (b"2\r\nhi\r\n0\r\nX\x00: t\r\n\r\n", "bad trailer line")):
    case(f"chunked body {body[:24]!r}", H + body, http=Fail(rf"invalid response: {why}"))
for te in (b"gzip, chunked", b"chunked, chunked", b"identity", b"chunked, gzip", b"x"):
    case(f"Transfer-Encoding {te.decode()}",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
         http=Fail(r"invalid response: Transfer-Encoding .* is not supported"))
case("Transfer-Encoding and Content-Length: chunked wins",
     b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"
     b"0\r\n\r\n", http=Ok(200, {"content-length": "2"}, body=b"hi"))
for cl, why in ((b"abc", "is not a length"), (b"-1", "is not a length"), (b"5, 6", "is not a length"),
                (b"99999999999999999999", "is not a length"), (b"1e3", "is not a length"),
                (b"100", "body is truncated: Content-Length 100")):
    case(f"Content-Length {cl.decode()}", b"HTTP/1.1 200 OK\r\nContent-Length: " + cl + b"\r\n\r\nhello",
         http=Fail(rf"invalid response: .*{why}"))
case("Content-Length shorter than the body", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello",
     http=Ok(200, body=b"he"))
case("repeated equal Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5"
     b"\r\n\r\nhello", http=Ok(200, body=b"hello"))
case("204 with a body: the body is dropped", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
     b"hello", http=Ok(204, body=b""))
case("304 with a bad framing header", b"HTTP/1.1 304 Not Modified\r\nContent-Length: xyz\r\n\r\n",
     http=Ok(304, body=b""))
case("JSON 204 with a body", resp(statusCode=204, body="dropped"), json=Ok(204, body=b""))
