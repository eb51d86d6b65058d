"""One backend fetch through a Lambda function: the Python side of obj.backend().

The director (_director.pyx) hands over the backend request as it stands in Varnish (a head block and
the body bytes); this module maps it to an event, invokes the function and maps its answer to the
backend response. Pure Python, so pytest runs it against real HTTP endpoints without varnishd.
"""

import time
import uuid
from random import getrandbits as _getrandbits
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .events import HttpRequest, ResponseError, build_event, parse_response
from .invoker import MAX_PAYLOAD, InvokeError, Invoker

__all__ = ["FetchResult", "handle", "parse_head"]


@dataclass
class FetchResult:
    status: int
    reason: Optional[str]
    headers: List[Tuple[str, str]]
    body: bytes
    note: Optional[str] = None          # a line for the log (SLT_Error) when Varnish answered itself
    request_id: Optional[str] = None


def parse_head(head: bytes):
    """`METHOD\\nURL\\nPROTO\\nName: value\\n...` as the director writes it, to its parts.

    Header bytes are decoded as UTF-8 (invalid sequences replaced): JSON events carry text.
    """
    lines = head.decode("utf-8", "replace").split("\n")
    method, url, proto = (lines + ["", "", ""])[:3]
    headers = []
    for line in lines[3:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name, value.strip(" \t")))
    return method, url, proto, headers


def client_ip(headers) -> str:
    """The client address as Varnish saw it: the last X-Forwarded-For entry, which Varnish appends
    (client.ip) in its built-in vcl_recv. Trusted proxies in front of Varnish are handled in VCL, by
    rewriting X-Forwarded-For before the fetch."""
    xff = None
    for name, value in headers:
        if name.lower() == "x-forwarded-for":
            xff = value
    if xff:
        return xff.rsplit(",", 1)[-1].strip()
    return "127.0.0.1"


def too_large(what: str, size: int) -> FetchResult:
    body = b"413 Request Entity Too Large: the Lambda event would exceed 6 MB\n"
    return FetchResult(413, None, [("Content-Type", "text/plain; charset=utf-8")], body,
                       note=f"{what} of {size} bytes exceeds the 6 MB limit of synchronous "
                            "invocations: answered 413 without invoking")


def _request_id() -> str:
    """A random version-4 UUID for the event's requestContext. Not uuid.uuid4(): os.urandom releases
    the GIL around getrandom(), and every GIL release in a worker is a possible hand-off to another
    worker and a context switch (BENCHMARKS.md). An identifier, not a secret: random is enough."""
    return str(uuid.UUID(int=_getrandbits(128), version=4))


def handle(invoker: Invoker, head: bytes, body: Optional[bytes], body_len: int) -> FetchResult:
    """Map, invoke, map back. body is None when it was larger than the limit (body_len bytes)."""
    cfg = invoker.cfg
    if body is None:
        return too_large("request body", body_len)
    method, url, proto, headers = parse_head(head)
    request_id = _request_id()
    req = HttpRequest(method=method, url=url, proto=proto, headers=headers, body=body,
                      client_ip=client_ip(headers), request_id=request_id, now=time.time())
    event = build_event(cfg.event_format, req, multi_value=cfg.multi_value)
    if len(event) > MAX_PAYLOAD:
        return too_large("event", len(event))
    res = invoker.invoke(event)
    try:
        resp = parse_response(cfg.response_format, res.payload)
    except ResponseError as e:
        raise InvokeError("invalid_response", f"invalid response: {e}", res.request_id) from None
    if resp.status < 200:
        # A 1xx is an interim response: delivered as final, a 101 would tell the client its
        # connection was upgraded. API Gateway answers 502 for these too.
        raise InvokeError("invalid_response", f"invalid response: status {resp.status} is an "
                          "interim (1xx) response, not a final one", res.request_id)
    return FetchResult(resp.status, resp.reason, resp.headers, resp.body,
                       request_id=res.request_id)
