# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""HTTP <-> Lambda: the event a backend fetch sends to the function, and the HTTP response read back.

Runs in the varnishd child, on a worker thread, once per backend fetch (called by the Cython director),
and in pytest. Pure Python, standard library only.

Request -> event (`build_event`), in the shape of one of three AWS front ends, so that the usual
adapters (Mangum, AWS Lambda Powertools, aws-serverless-express, the Lambda Web Adapter...) take the
event as if AWS had sent it:

* ``"1.0"``: API Gateway REST API, Lambda proxy integration (payload format 1.0). A superset of the
  event of movableink's vmod-lambda (httpMethod, path, queryStringParameters, headers, body,
  isBase64Encoded), except that an absent query or body is null, as API Gateway sends them.
* ``"1.0-compat"`` (the default of lambda.backend()): the same event with the empty values of
  movableink's vmod-lambda, so that functions written for it see what it sends: an absent body is
  ``""`` and an absent query ``{}`` (queryStringParameters) instead of null.
* ``"2.0"``: API Gateway HTTP API / Lambda function URL (payload format 2.0).
* ``"alb"``: Application Load Balancer target group, optionally with multi-value headers.

Lambda response payload -> HTTP response (`parse_response`):

* ``"json"``: the API Gateway / ALB / function URL response object (statusCode, headers,
  multiValueHeaders, cookies, body, isBase64Encoded), or any other JSON value (payload format 2.0 rule).
* ``"http"``: a raw HTTP/1.x response message.

Nothing here raises on bad input but what is documented: `build_event` raises ValueError only for an
unknown format; `parse_response` raises ResponseError (a ValueError) for a bad payload, ValueError for
an unknown format.
"""

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from . import headers as _policy

__all__ = ["HttpRequest", "HttpResponse", "ResponseError", "build_event", "parse_response",
           "EVENT_FORMATS", "RESPONSE_FORMATS"]

EVENT_FORMATS = ("1.0-compat", "1.0", "2.0", "alb")
RESPONSE_FORMATS = ("json", "http")

# Fixed identity of the fake API / load balancer in the events.
ACCOUNT_ID = "123456789012"
API_ID = "vmod-lambda"
STAGE = "$default"
TARGET_GROUP_ARN = ("arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                    "targetgroup/vmod-lambda/0000000000000000")


@dataclass
class HttpRequest:
    method: str                       # "GET"
    url: str                          # raw request target as in bereq.url: "/a%20b/c?x=1&x=2&y"
    proto: str                        # "HTTP/1.1"
    headers: list[tuple[str, str]]    # in arrival order, original case, repeated names allowed
    body: bytes                       # b"" when none
    client_ip: str                    # the client address Varnish saw (sourceIp)
    request_id: str                   # unique per fetch
    now: float                        # epoch seconds (time.time())


@dataclass
class HttpResponse:
    status: int
    reason: str | None                # None: Varnish uses the standard reason phrase
    headers: list[tuple[str, str]]    # in order, repeated headers as separate entries; no hop-by-hop
    body: bytes                       # headers and no Content-Length (the caller sets it from body)


class ResponseError(ValueError):
    """The function's response payload cannot be turned into an HTTP response; str() is a one-line
    reason for the log, e.g. "statusCode 700 is not in 100-599"."""


# --------------------------------------------------------------------------------------------------
# Request -> event

# Compact output. The ASCII encoder is the faster one and always succeeds (\uXXXX escapes); a
# non-ASCII text body is encoded as UTF-8 instead, to keep it at its UTF-8 size (Lambda's request
# limit is 6 MB), unless some string cannot be UTF-8 (a lone surrogate). check_circular is useless
# for the trees built here.
def _encoder(ensure_ascii: bool):
    """JSONEncoder(...).encode, or the same C encoder made once: encode() makes a new one at every
    call (a third of the cost of a small event). Checked against encode() on a sample; the plain
    encode() when this Python's json module differs."""
    encode = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"),
                              check_circular=False).encode
    try:
        import _json
        from json.encoder import encode_basestring, encode_basestring_ascii
        c_encode = _json.make_encoder(None, None,
                                      encode_basestring_ascii if ensure_ascii else encode_basestring,
                                      None, ":", ",", False, False, True)
        join = "".join

        def fast(obj):
            return join(c_encode(obj, 0))

        sample = {"a": [1, -2.5, None, True, False, "\u00e9\"\n"], "b": {"c": ""}, "d\u2028": 10 ** 20}
        if fast(sample) == encode(sample):
            return fast
    except Exception:               # pragma: no cover - another json implementation
        pass
    return encode                   # pragma: no cover


_encode_utf8 = _encoder(False)
_encode_ascii = _encoder(True)

# Media types sent as text when the body is valid UTF-8 (besides text/* and +json / +xml suffixes).
_TEXT_TYPES = frozenset(("application/json", "application/javascript", "application/xml",
                         "application/x-www-form-urlencoded"))
_TEXT_SUFFIXES = ("+json", "+xml")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_EPOCH = 253402300800.0           # 10000-01-01: beyond it, CLF's 4-digit year breaks
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*")


def build_event(fmt: str, req: HttpRequest, *, multi_value: bool = False) -> bytes:
    """Return the Lambda event for *req* in format *fmt* ("1.0-compat", "1.0", "2.0" or "alb") as
    compact UTF-8 JSON.

    *multi_value* matters for "alb" only: the target group's multi-value headers setting. The JSON
    is ASCII (non-ASCII as \\uXXXX escapes) except for a non-ASCII text body, which is sent as UTF-8.

    Common rules:

    * The URL is split at the first "?". An absolute-form target ("http://host/p?q") loses its scheme
      and authority; an empty path becomes "/".
    * Query strings are split on "&"; empty pieces ("a=1&&b=2") are skipped, a piece without "=" is a
      key with the value "" (as API Gateway and ALB do), repeated keys keep every value in order.
    * Header names are lower-cased (API Gateway HTTP APIs and ALB do; REST APIs keep the case, but
      adapters lower-case them anyway); values are sent as given.
    * The body is text (isBase64Encoded false) when the Content-Type (the last one) is text/*,
      application/json, application/javascript, application/xml,
      application/x-www-form-urlencoded or has a +json / +xml suffix, whatever its charset
      parameter, and the bytes are valid UTF-8; base64 otherwise, also when there is no
      Content-Type. Either way the function gets the exact bytes back.
    * domainName is the (last) Host header as given, port included, "" without one; domainPrefix is
      its first dot-separated label.
    * requestTime / time are in the CLF form AWS uses ("09/Apr/2015:12:34:56 +0000", UTC, English
      month names whatever the locale); the epoch fields are integer milliseconds.

    Raises ValueError for an unknown *fmt*, and nothing else for any request.
    """
    if fmt == "1.0":
        event = _event_v1(req, False)
    elif fmt == "1.0-compat":
        event = _event_v1(req, True)
    elif fmt == "2.0":
        event = _event_v2(req)
    elif fmt == "alb":
        event = _event_alb(req, multi_value)
    else:
        raise ValueError(f"unknown event format {str(fmt)[:20]!r} (expected \"1.0-compat\", "
                         "\"1.0\", \"2.0\" or \"alb\")")
    body = event.get("body")
    if body and not body.isascii():                  # non-ASCII text body: keep it at UTF-8 size
        try:
            return _encode_utf8(event).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return _encode_ascii(event).encode("ascii")


def _split_url(url: str) -> tuple[str, str | None]:
    """(raw path, raw query or None when the target has no "?")."""
    path, sep, query = url.partition("?")
    if not path.startswith("/"):
        m = _ABSOLUTE_FORM.match(path)
        if m:
            path = path[m.end():]
    return (path or "/"), (query if sep else None)


def _query_pairs(query: str | None) -> list[tuple[str, str]]:
    """Raw (undecoded) key/value pairs in order."""
    if not query:
        return []
    pairs = []
    for piece in query.split("&"):
        if piece:
            key, _, value = piece.partition("=")
            pairs.append((key, value))
    return pairs


def _decode_query(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Percent-decode keys and values, "+" as a space, like API Gateway (REST and HTTP APIs) does for
    queryStringParameters: "?q=a+b%2Bc" gives "a b+c". Invalid UTF-8 becomes U+FFFD."""
    return [(unquote_plus(k) if ("%" in k or "+" in k) else k,
             unquote_plus(v) if ("%" in v or "+" in v) else v) for k, v in pairs]


def _multi(pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        values = out.get(key)
        if values is None:
            out[key] = [value]
        else:
            values.append(value)
    return out


def _headers(req: HttpRequest) -> dict[str, list[str]]:
    """Lower-cased name -> values in arrival order (names in order of first appearance)."""
    return _multi((name.lower(), value) for name, value in req.headers)


def _is_text(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (media_type.startswith("text/") or media_type in _TEXT_TYPES
            or media_type.endswith(_TEXT_SUFFIXES))


def _body(req: HttpRequest, headers: dict[str, list[str]]) -> tuple[str | None, bool]:
    """(body as the event carries it, isBase64Encoded); None for an empty body."""
    body = req.body
    if not body:
        return None, False
    if not isinstance(body, bytes):
        body = bytes(body)
    content_type = headers.get("content-type")
    if content_type is not None and _is_text(content_type[-1]):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def _times(now) -> tuple[str, int]:
    """(CLF time, epoch milliseconds); a nonsensical *now* is replaced by the current time."""
    try:
        if not 0.0 <= now < _MAX_EPOCH:       # also False for NaN
            now = time.time()
    except TypeError:
        now = time.time()
    t = time.gmtime(now)
    clf = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
           f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
    return clf, int(now * 1000)


def _domain(headers: dict[str, list[str]]) -> tuple[str, str]:
    host = headers.get("host")
    domain = host[-1] if host else ""
    return domain, domain.split(".", 1)[0]


def _event_v1(req: HttpRequest, compat: bool) -> dict:
    """API Gateway REST API proxy event (payload format 1.0); compat: with the empty values of
    movableink's vmod-lambda ("1.0-compat"): queryStringParameters {} and body "" instead of null.

    path, requestContext.path and pathParameters.proxy are percent-decoded ("+" stays a "+" in a
    path); queryStringParameters / multiValueQueryStringParameters are decoded, null when there is
    no query; headers / multiValueHeaders include Cookie and are {} (not null) when there are no
    headers, as the AWS Powertools model requires; body is null when empty.
    """
    raw_path, query = _split_url(req.url)
    path = unquote(raw_path) if "%" in raw_path else raw_path
    mquery = _multi(_decode_query(_query_pairs(query)))
    mheaders = _headers(req)
    body, is_b64 = _body(req, mheaders)
    request_time, epoch_ms = _times(req.now)
    domain, prefix = _domain(mheaders)
    user_agent = mheaders.get("user-agent")
    proxy = path[1:] if path.startswith("/") else path
    return {
        "version": "1.0",
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": req.method,
        "headers": {k: v[-1] for k, v in mheaders.items()},
        "multiValueHeaders": mheaders,
        "queryStringParameters": {k: v[-1] for k, v in mquery.items()} or ({} if compat else None),
        "multiValueQueryStringParameters": mquery or None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": req.request_id,
            "httpMethod": req.method,
            "identity": {
                "sourceIp": req.client_ip,
                "userAgent": user_agent[-1] if user_agent else None,
            },
            "path": path,
            "protocol": req.proto,
            "requestId": req.request_id,
            "requestTime": request_time,
            "requestTimeEpoch": epoch_ms,
            "resourceId": API_ID,
            "resourcePath": "/{proxy+}",
            "stage": STAGE,
        },
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "body": "" if body is None and compat else body,
        "isBase64Encoded": is_b64,
    }


def _event_v2(req: HttpRequest) -> dict:
    """API Gateway HTTP API / function URL event (payload format 2.0).

    rawPath and rawQueryString are as received; requestContext.http.path and queryStringParameters
    are decoded, repeated query keys and repeated headers comma-joined (as API Gateway does). Cookie
    headers go to "cookies" (split on ";", pieces stripped, empty pieces dropped), not to "headers".
    Always present, as the AWS Powertools v2 model requires: version, routeKey, rawPath,
    rawQueryString, headers ({} when none), requestContext with its http part, isBase64Encoded.
    cookies, queryStringParameters and body are omitted when there are none.
    """
    raw_path, query = _split_url(req.url)
    mheaders = _headers(req)
    body, is_b64 = _body(req, mheaders)
    time_clf, epoch_ms = _times(req.now)
    domain, prefix = _domain(mheaders)
    cookie_headers = mheaders.pop("cookie", None)
    headers = {k: (v[0] if len(v) == 1 else ",".join(v)) for k, v in mheaders.items()}
    user_agent = headers.get("user-agent", "")
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query or "",
    }
    if cookie_headers:
        cookies = [c for header in cookie_headers for c in (p.strip(" \t") for p in header.split(";"))
                   if c]
        if cookies:
            event["cookies"] = cookies
    event["headers"] = headers
    mquery = _multi(_decode_query(_query_pairs(query)))
    if mquery:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in mquery.items()}
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": req.method,
            "path": unquote(raw_path) if "%" in raw_path else raw_path,
            "protocol": req.proto,
            "sourceIp": req.client_ip,
            "userAgent": user_agent,
        },
        "requestId": req.request_id,
        "routeKey": "$default",
        "stage": STAGE,
        "time": time_clf,
        "timeEpoch": epoch_ms,
    }
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = is_b64
    return event


def _event_alb(req: HttpRequest, multi_value: bool) -> dict:
    """Application Load Balancer event.

    path and the query keys and values are as received, not decoded (ALB: "If the query parameters
    are URL-encoded, the load balancer does not decode them"). Without multi-value headers:
    queryStringParameters and headers with the last value of each name ({} when none); with them:
    multiValueQueryStringParameters and multiValueHeaders instead. body is "" when empty.
    """
    raw_path, query = _split_url(req.url)
    mquery = _multi(_query_pairs(query))
    mheaders = _headers(req)
    body, is_b64 = _body(req, mheaders)
    event = {
        "requestContext": {"elb": {"targetGroupArn": TARGET_GROUP_ARN}},
        "httpMethod": req.method,
        "path": raw_path,
    }
    if multi_value:
        event["multiValueQueryStringParameters"] = mquery
        event["multiValueHeaders"] = mheaders
    else:
        event["queryStringParameters"] = {k: v[-1] for k, v in mquery.items()}
        event["headers"] = {k: v[-1] for k, v in mheaders.items()}
    event["body"] = "" if body is None else body
    event["isBase64Encoded"] = is_b64
    return event


# --------------------------------------------------------------------------------------------------
# Response payload -> HTTP response

_decode_json = json.JSONDecoder().decode

# RFC 7230 token (header field name).
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_is_token_b = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# What may never be in a header value or a reason phrase: Varnish's own rule for what it reads from a
# backend (vct_ishdrval() in include/vct.h: HTAB, 0x20-0x7e, 0x80 and up; anything else is a
# BogoHeader), so a function's header is refused where a native backend's would be: line ends
# (injection), NUL, every other control character, DEL; and lone surrogates (not UTF-8).
_bad_value = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]").search
_bad_reason = _bad_value
# statusDescription as ALB sends it ("HTTP 404 Not Found", "200 OK") or a bare phrase.
_description = re.compile(r"(?:HTTP(?:/[0-9](?:\.[0-9])?)?[ \t]+)?(?:[0-9]{3}(?:[ \t]+|$))?(.*)",
                          re.DOTALL).fullmatch
_status_digits = re.compile(r"[0-9]{1,9}").fullmatch
_status_line = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: (.*))?", re.DOTALL).fullmatch
_chunk_size = re.compile(rb"[0-9A-Fa-f]{1,16}").fullmatch

# What of the function's headers never reaches beresp: the header policy, one table both ways
# (headers.py; Content-Length is recomputed from the body by the caller).
_HOP_BY_HOP = _policy.RESPONSE_DROP
_JSON_CONTENT_TYPE = ("Content-Type", "application/json")


def parse_response(fmt: str, payload: bytes) -> HttpResponse:
    """Turn the function's response *payload* into an HttpResponse; *fmt* is "json" or "http".

    "json" (API Gateway / ALB / function URL responses):

    * The payload must be UTF-8 JSON. An object with a "statusCode" key is a response object; any
      other JSON value (an object without statusCode, a list, a string, a number...) is the body of
      a 200 with Content-Type application/json, byte for byte (the payload format 2.0 rule).
    * statusCode: an integer or a string of digits, 100-599. A float, a bool or null is an error.
    * statusDescription: "HTTP 404 Not Found", "404 Not Found" or a bare "Not Found"; the reason
      phrase is what follows the status; null or "" leaves the reason to Varnish.
    * headers: object of name -> string or number (numbers with str()); true/false become "true"/
      "false" as in JSON; a null value drops the header; a list or object is an error. Keys differing
      only in case ("set-cookie", "Set-cookie", as Mangum sends repeated headers to ALB) stay separate
      entries with their own names.
    * multiValueHeaders: object of name -> list of scalars (same conversions), each a separate entry.
      A name in both (compared case-insensitively) takes its values from multiValueHeaders only; a
      null list counts as absent. Order: headers first, then multiValueHeaders, then cookies.
    * cookies: list of strings, each a Set-Cookie header.
    * body: string or null; isBase64Encoded: bool or null. A base64 body is decoded strictly
      (alphabet and padding, no whitespace).

    "http" (a raw HTTP/1.x response message, binary-safe):

    * Status line "HTTP/1.x NNN reason" (reason optional), header lines ending in CRLF or LF, an empty
      line, the body. End of payload also ends the header section (then the body is empty).
      Continuation lines (obs-fold) are joined to the previous value with a space. Header text must
      be UTF-8 (ASCII in practice).
    * Body: Transfer-Encoding chunked is decoded (chunk extensions ignored, trailer fields checked and
      dropped; a missing final empty line is tolerated); other transfer codings are an error. Else
      Content-Length bytes (repeated equal values allowed; fewer bytes is an error, extra bytes are
      ignored). Else the rest of the payload.

    Both: 1xx, 204 and 304 responses have an empty body (and their framing is not checked: a 304
    may carry the Content-Length of the representation). Hop-by-hop headers (Connection, Keep-Alive,
    Proxy-Connection, Transfer-Encoding, TE, Trailer, Upgrade and those Connection names) and
    Content-Length are dropped. A header name that is not an RFC 7230 token, or a value with CR, LF,
    NUL or another control character (Varnish's rule), is an error, so nothing can inject a header.

    Raises ResponseError (one-line str()) for a bad payload, ValueError for an unknown *fmt*.
    """
    if payload is None:
        payload = b""
    elif not isinstance(payload, bytes):
        payload = bytes(payload)
    if fmt == "json":
        return _parse_json(payload)
    if fmt == "http":
        return _parse_http(payload)
    raise ValueError(f"unknown response format {str(fmt)[:20]!r} (expected \"json\" or \"http\")")


def _short(value, limit: int = 40) -> str:
    """A bounded, one-line repr for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_body(status: int) -> bool:
    return status < 200 or status == 204 or status == 304


def _finish_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Check every name and value, then drop what the header policy drops (headers.py: hop-by-hop
    headers, those named in Connection, Content-Length)."""
    lowered = []
    connection = None
    for name, value in headers:
        if not _is_token(name):
            raise ResponseError(f"header name {_short(name)} is not a valid token")
        if _bad_value(value):
            raise ResponseError(f"header {name[:40]} has a CR, LF, NUL, another control character "
                                "or an invalid character in its value")
        lname = name.lower()
        lowered.append(lname)
        if lname == "connection":
            if connection is None:
                connection = set()
            connection.update(t.strip(" \t").lower() for t in value.split(","))
    drop = _HOP_BY_HOP if connection is None else _HOP_BY_HOP | connection
    return [h for h, lname in zip(headers, lowered) if lname not in drop]


# ---- json


def _parse_json(payload: bytes) -> HttpResponse:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResponseError(f"payload is not UTF-8 (invalid byte at offset {e.start})") from None
    try:
        obj = _decode_json(text)
    except json.JSONDecodeError as e:
        raise ResponseError(f"payload is not valid JSON: {e.msg} at offset {e.pos}") from None
    except (ValueError, RecursionError) as e:     # int too long to convert, nesting too deep
        raise ResponseError(f"payload is not valid JSON: {_short(str(e), 80)}") from None
    if type(obj) is not dict or "statusCode" not in obj:
        return HttpResponse(200, None, [_JSON_CONTENT_TYPE], payload)

    status = _json_status(obj["statusCode"])
    reason = _json_reason(obj.get("statusDescription"))
    headers = _json_headers(obj)
    if _no_body(status):
        return HttpResponse(status, reason, headers, b"")
    return HttpResponse(status, reason, headers, _json_body(obj))


def _json_status(value) -> int:
    if type(value) is int:
        status = value
    elif type(value) is str and _status_digits(value):
        status = int(value)
    else:
        raise ResponseError(f"statusCode {_short(value)} is not an integer")
    if not 100 <= status <= 599:
        raise ResponseError(f"statusCode {_short(status)} is not in 100-599")
    return status


def _json_reason(value) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise ResponseError(f"statusDescription {_short(value)} is not a string")
    reason = _description(value).group(1).strip(" \t")
    if _bad_reason(reason):
        raise ResponseError(f"statusDescription {_short(value)} has a control character")
    return reason or None


def _scalar(value, where: str) -> str | None:
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    if value is None:
        return None
    raise ResponseError(f"{where} is a {'list' if kind is list else 'object'}, not a string or number")


def _json_headers(obj: dict) -> list[tuple[str, str]]:
    headers = obj.get("headers")
    multi = obj.get("multiValueHeaders")
    cookies = obj.get("cookies")
    if headers is not None and type(headers) is not dict:
        raise ResponseError(f"headers is {_json_kind(headers)}, not an object")
    if multi is not None and type(multi) is not dict:
        raise ResponseError(f"multiValueHeaders is {_json_kind(multi)}, not an object")
    if cookies is not None and type(cookies) is not list:
        raise ResponseError(f"cookies is {_json_kind(cookies)}, not a list")

    out: list[tuple[str, str]] = []
    if headers:
        override = ({name.lower() for name, values in multi.items() if values is not None}
                    if multi else ())
        for name, value in headers.items():
            if override and name.lower() in override:
                continue
            value = _scalar(value, f"headers[{name[:40]!r}]")
            if value is not None:
                out.append((name, value))
    if multi:
        for name, values in multi.items():
            if values is None:
                continue
            if type(values) is not list:
                raise ResponseError(f"multiValueHeaders[{name[:40]!r}] is {_json_kind(values)}, "
                                    "not a list")
            for value in values:
                value = _scalar(value, f"multiValueHeaders[{name[:40]!r}] item")
                if value is not None:
                    out.append((name, value))
    if cookies:
        for cookie in cookies:
            if type(cookie) is not str:
                raise ResponseError(f"cookies item {_short(cookie)} is not a string")
            out.append(("Set-Cookie", cookie))
    return _finish_headers(out)


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool", int: "a number",
            float: "a number"}.get(type(value), "null")


_B64_OUTSIDE = re.compile(r"[^A-Za-z0-9+/=]")


def _b64_problem(text: str) -> str:
    """Why *text* (which binascii refused) is not base64, in our own words: binascii's wording
    changes between Python releases (3.13: "Excess padding not allowed")."""
    bad = _B64_OUTSIDE.search(text)
    if bad:
        return f"character {_short(bad.group())} at offset {bad.start()} is not in the base64 alphabet"
    pad = text.find("=")
    if pad >= 0:
        if text.rstrip("=") != text[:pad]:
            return f"data after the padding at offset {pad}"
        if pad == 0:
            return "padding without data"
        if len(text) - pad > 2:
            return f"{len(text) - pad} padding characters (at most 2)"
    if len(text) % 4:
        return f"length {len(text)} is not a multiple of 4"
    return "malformed"


def _json_body(obj: dict) -> bytes:
    body = obj.get("body")
    is_b64 = obj.get("isBase64Encoded")
    if is_b64 is not None and type(is_b64) is not bool:
        raise ResponseError(f"isBase64Encoded {_short(is_b64)} is not a bool")
    if body is None:
        return b""
    if type(body) is not str:
        raise ResponseError(f"body is {_json_kind(body)}, not a string")
    if is_b64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ResponseError(f"body is not valid base64: {_b64_problem(body)}") from None
    try:
        return body.encode("utf-8")
    except UnicodeEncodeError:
        raise ResponseError("body has a lone surrogate (\\ud800-\\udfff escape): not UTF-8 "
                            "text") from None


# ---- http


def _line(payload: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """(the line at *pos* without its CRLF or LF, the position after it); a last line may lack one."""
    eol = payload.find(b"\n", pos, end)
    if eol < 0:
        return payload[pos:end], end
    stop = eol - 1 if eol > pos and payload[eol - 1] == 13 else eol
    return payload[pos:stop], eol + 1


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ResponseError(f"{what} is not UTF-8: {_short(raw)}") from None


def _parse_http(payload: bytes) -> HttpResponse:
    end = len(payload)
    line, pos = _line(payload, 0, end)
    m = _status_line(line)
    if m is None:
        hint = " (a JSON string: use response_format \"json\" or return raw bytes)" \
            if payload[:1] == b'"' else ""
        raise ResponseError(f"bad status line {_short(line[:60])}{hint}")
    status = int(m.group(1))
    if not 100 <= status <= 599:
        raise ResponseError(f"status {status} is not in 100-599")
    reason = _text(m.group(2) or b"", "reason phrase").strip(" \t")
    if _bad_reason(reason):
        raise ResponseError(f"reason phrase {_short(reason)} has a control character")

    headers: list[tuple[str, str]] = []
    te = cl = None
    while pos < end:
        line, pos = _line(payload, pos, end)
        if not line:
            break
        if line[0] in (32, 9):                      # obs-fold: continues the previous value
            if not headers:
                raise ResponseError(f"header line {_short(line)} continues nothing")
            name, value = headers[-1]
            more = _text(line.strip(b" \t"), f"header {name}")
            headers[-1] = (name, f"{value} {more}" if value and more else value or more)
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise ResponseError(f"header line {_short(line)} has no colon")
        if not _is_token_b(name):
            raise ResponseError(f"header name {_short(name)} is not a valid token")
        name = name.decode("ascii")
        headers.append((name, _text(value.strip(b" \t"), f"header {name}")))

    for name, value in headers:
        lname = name.lower()
        if lname == "transfer-encoding":
            te = f"{te},{value}" if te else value
        elif lname == "content-length":
            cl = f"{cl},{value}" if cl else value
    headers = _finish_headers(headers)

    if _no_body(status):
        body = b""
    elif te is not None and te.strip(" \t,"):
        codings = [c.strip(" \t").lower() for c in te.split(",") if c.strip(" \t")]
        if codings != ["chunked"]:
            raise ResponseError(f"Transfer-Encoding {_short(te)} is not supported (only chunked)")
        body = _dechunk(payload, pos, end)
    elif cl is not None:
        values = {v.strip(" \t") for v in cl.split(",")}
        length = values.pop() if len(values) == 1 else ""
        if not (length.isascii() and length.isdigit() and len(length) <= 18):
            raise ResponseError(f"Content-Length {_short(cl)} is not a length")
        length = int(length)
        if end - pos < length:
            raise ResponseError(f"body is truncated: Content-Length {length}, {end - pos} bytes "
                                "follow")
        body = payload[pos:pos + length]
    else:
        body = payload[pos:] if pos else payload
    return HttpResponse(status, reason or None, headers, body)


def _dechunk(payload: bytes, pos: int, end: int) -> bytes:
    view = memoryview(payload)
    chunks = []
    while True:
        if pos >= end:
            raise ResponseError("chunked body is truncated (no last chunk)")
        line, pos = _line(payload, pos, end)
        size = line.split(b";", 1)[0].strip(b" \t")
        if not _chunk_size(size):
            raise ResponseError(f"bad chunk size line {_short(line[:40])}")
        size = int(size, 16)
        if size == 0:
            break
        stop = pos + size
        if stop > end:
            raise ResponseError(f"chunked body is truncated: chunk of {size} bytes, "
                                f"{end - pos} follow")
        chunks.append(view[pos:stop])
        if payload.startswith(b"\r\n", stop):
            pos = stop + 2
        elif payload.startswith(b"\n", stop):
            pos = stop + 1
        else:
            raise ResponseError("chunk data is not followed by a line end")
    while pos < end:                                # trailer section: checked, then dropped
        line, pos = _line(payload, pos, end)
        if not line:
            break
        name, colon, _ = line.partition(b":")
        if not colon or not _is_token_b(name):
            raise ResponseError(f"bad trailer line {_short(line[:40])}")
    return b"".join(chunks)
