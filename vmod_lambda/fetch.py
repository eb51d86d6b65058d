# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""One backend fetch through a Lambda function: the Python side of obj.backend().

The director (_director.pyx) hands over the backend request as it collected it, once, from Varnish:
the request record (_request.pxd; its Python view has method, url, proto, headers, body and
body_len). This module maps it to an event, invokes the function and maps its answer to the
backend response. Pure Python, so pytest runs it against real HTTP endpoints without varnishd.
"""

import time
import uuid
from random import getrandbits as _getrandbits
from dataclasses import dataclass
from typing import List, Optional, Tuple

from . import eventstream
from .transport import direct
from .events import HttpRequest, ResponseError, build_event, parse_response
from .invoker import InvocationRecord, InvokeError, Invoker
from .transport.base import function_error_reason as _function_error_reason
from .limits import MAX_PAYLOAD
from .outcomes import event_too_large
from .trace import trace_header

__all__ = ["FetchResult", "handle", "StreamedFetch"]


@dataclass
class FetchResult:
    status: int
    reason: Optional[str]
    headers: List[Tuple[str, str]]
    body: bytes
    note: Optional[str] = None          # a line for the log (SLT_Error) when Varnish answered itself
    request_id: Optional[str] = None
    record: Optional[InvocationRecord] = None   # the invocation's (None: nothing was sent)
    taken: bool = False     # the payload went to handle_gen()'s take (mapped in C): the rest is unset


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
    body, note = event_too_large(what, size)
    return FetchResult(413, None, [("Content-Type", "text/plain; charset=utf-8")], body, note=note)


def _request_id() -> str:
    """A random version-4 UUID for the event's requestContext. Not uuid.uuid4(): os.urandom releases
    the GIL around getrandom(), and every GIL release in a worker is a possible hand-off to another
    worker and a context switch (BENCHMARKS.md). An identifier, not a secret: random is enough."""
    return str(uuid.UUID(int=_getrandbits(128), version=4))


def _event(cfg, request, body: bytes) -> bytes:
    headers = request.headers
    req = HttpRequest(method=request.method, url=request.url, proto=request.proto,
                      headers=headers, body=body, client_ip=client_ip(headers),
                      request_id=_request_id(), now=time.time())
    return build_event(cfg.event_format, req, multi_value=cfg.multi_value)


def call_headers(invoker: Invoker, request):
    """(trace_id, tenant_id) of a fetch, read from its request record (vmod_lambda.vcc: *trace*,
    *tenant_header*). Raises InvokeError("invalid_request") when the object has a tenant_header
    and the request does not (nothing is sent); an invalid value fails in Invoker._request."""
    cfg = invoker.cfg
    trace_id = tenant_id = None
    if cfg.trace:
        trace_id, problem = trace_header(request.header("x-amzn-trace-id"),
                                         request.header("traceparent"))
        if problem is not None:
            invoker.warn_once("trace", f"trace: {problem}")
    if cfg.tenant_header is not None:
        tenant_id = request.header(cfg.tenant_header)
        if tenant_id is None:
            raise InvokeError("invalid_request", f"the request has no {cfg.tenant_header} "
                              "header (tenant_header): no tenant id; not sent")
    return trace_id, tenant_id


def handle(invoker: Invoker, request, timeout: Optional[float] = None) -> FetchResult:
    """Map, invoke, map back. request: the request record (_request.Request); its body is None
    when it was larger than the limit (body_len bytes). timeout: the read timeout instead of the
    object's (see Invoker.invoke_gen)."""
    return direct.run(handle_gen(invoker, request, timeout=timeout))


def handle_gen(invoker: Invoker, request, event: Optional[bytes] = None,
               timeout: Optional[float] = None, deadline: Optional[float] = None, take=None):
    """handle() as a generator of socket exchanges (see direct.run() and Invoker.invoke_gen()).
    event: the event already built from the same record (_fastevent.pyx does it for common
    requests on the fetch thread), or None to build it here. deadline: the call's (monotonic
    time), see Invoker.invoke_gen(). take: for response_format "json", a callable given the
    payload that returns True when it maps it itself (the director's C mapping of the common
    answer, _fastresponse.pyx); then the result has taken=True and no status, headers or body."""
    cfg = invoker.cfg
    trace_id, tenant_id = call_headers(invoker, request)
    if event is None:
        body = request.body         # (a copy: read once)
        if body is None:
            return too_large("request body", request.body_len)
        event = _event(cfg, request, body)
    if len(event) > MAX_PAYLOAD:
        return too_large("event", len(event))
    if take is not None and cfg.response_format == "json":
        # The payload may come as the buffer it was received into (_netio.RawBody), which take
        # keeps without a copy (direct transport; the boto3 transport answers bytes).
        res = yield from invoker.invoke_gen(event, timeout=timeout, deadline=deadline,
                                            trace_id=trace_id, tenant_id=tenant_id, raw_body=True)
        if take(res.payload):
            return FetchResult(0, None, [], b"", request_id=res.request_id, record=res.record,
                               taken=True)
    else:
        res = yield from invoker.invoke_gen(event, timeout=timeout, deadline=deadline,
                                            trace_id=trace_id, tenant_id=tenant_id)
    payload = res.payload if type(res.payload) is bytes else bytes(res.payload)
    try:
        resp = parse_response(cfg.response_format, payload)
    except ResponseError as e:
        raise InvokeError("invalid_response", f"invalid response: {e}", res.request_id,
                          record=res.record) from None
    if resp.status < 200:
        # A 1xx is an interim response: delivered as final, a 101 would tell the client its
        # connection was upgraded. API Gateway answers 502 for these too.
        raise InvokeError("invalid_response", f"invalid response: status {resp.status} is an "
                          "interim (1xx) response, not a final one", res.request_id,
                          record=res.record)
    return FetchResult(resp.status, resp.reason, resp.headers, resp.body,
                       request_id=res.request_id, record=res.record)


# --------------------------------------------------------------------------------------------------
# Streaming backends (streaming = true): InvokeWithResponseStream

# A read holds whole 64 KiB frames (decoded where they are, fewer reads); below the 256 KiB from
# which the loader's bigalloc purges a freed block (include/vmod_lambda_loader.c): page faults.
STREAM_READ = 192 * 1024


class StreamedFetch:
    """One fetch through InvokeWithResponseStream, read as it arrives.

    start() sends the invocation and reads until the response head is known: the HTTP-integration
    prelude (statusCode, headers, cookies; see vmod_lambda.eventstream.PreludeParser), or else the
    first bytes of a plain payload (a 200 with the payload as the body). It returns a FetchResult
    whose body is the part of the body read so far. Then body() yields the rest as it comes.
    Everything that goes wrong raises InvokeError (kind function_error, invalid_response, timeout,
    transport, ...): before the head, the fetch fails; after it, the body is cut. close() ends the
    HTTP exchange (an unfinished one is dropped, never reused). Memory: one event stream message
    and one read at a time, plus the prelude (at most 64 KB) while the head is undecided.
    """

    def __init__(self, invoker: Invoker, request, head_deadline: Optional[float] = None):
        self.invoker = invoker
        self.request = request          # the request record (_request.Request)
        # time.monotonic() by which the head must be in (the fetch's first-byte limit, see
        # _director.pyx): the direct transport stops waiting for it then (None: no limit).
        self.head_deadline = head_deadline
        self.result = None
        self.request_id = None
        self.log_result = None
        self._reader = None
        self._stream = eventstream.LambdaStream()
        self._pending = []            # body bytes decoded but not handed out yet
        self._done = False
        self._eof = False             # the HTTP body was read to its end
        self.received = 0             # payload bytes received

    def start(self) -> FetchResult:
        cfg = self.invoker.cfg
        trace_id, tenant_id = call_headers(self.invoker, self.request)
        body = self.request.body
        if body is None:
            self._done = True
            return too_large("request body", self.request.body_len)
        event = _event(cfg, self.request, body)
        if len(event) > MAX_PAYLOAD:
            self._done = True
            return too_large("event", len(event))
        self.result = self.invoker.invoke_stream(event, trace_id=trace_id, tenant_id=tenant_id,
                                                 deadline=self.head_deadline)
        self.request_id = self.result.request_id
        self._reader = self.invoker.read_stream(self.result.raw, STREAM_READ)
        expect = (self.result.content_type or "").split(";")[0].strip().lower() \
            == eventstream.HTTP_INTEGRATION_CONTENT_TYPE or None
        prelude_parser = eventstream.PreludeParser(expect=expect)
        decided = None
        while decided is None:
            data = self._next_data()
            if data is None:
                decided = self._wrap(prelude_parser.finish)
                break
            decided = self._wrap(lambda: prelude_parser.feed(data))
        prelude, first = decided
        if prelude is None:
            return FetchResult(200, None, [("Content-Type", "application/octet-stream")], first,
                               request_id=self.request_id)
        return FetchResult(prelude.status, None, prelude.headers, first,
                           request_id=self.request_id)

    @property
    def record(self) -> Optional[InvocationRecord]:
        """The invocation's record (None: nothing was sent), complete once close() returned."""
        return self.result.record if self.result is not None else None

    def _wrap(self, fn):
        try:
            return fn()
        except eventstream.PreludeError as e:
            raise InvokeError("invalid_response", f"invalid response: {e}",
                              self.request_id, record=self.record) from None

    def _next_data(self):
        """The next payload bytes of the function, or None at the (checked) end."""
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._done:
                return None
            try:
                raw = next(self._reader)
            except StopIteration:
                raw = None
            try:
                if raw is None:
                    self._done = True
                    self._eof = True
                    self._stream.close()
                    return None
                events = self._stream.feed(raw)
            except eventstream.EventStreamError as e:
                self._done = True
                raise InvokeError("invalid_response", f"broken response stream: {e}",
                                  self.request_id, record=self.record) from None
            for ev in events:
                if ev.kind == "chunk":
                    self.received += len(ev.data)
                    self._pending.append(ev.data)
                else:
                    self.log_result = ev.log_result
                    if ev.error_code:
                        if self.record is not None:
                            # (a stream's function error comes in its last event, not a header)
                            self.record.function_error = ev.error_code
                        self._done = True
                        self._pending.clear()
                        raise InvokeError("function_error", _stream_error_reason(ev),
                                          self.request_id, record=self.record)

    def body(self):
        """Yield the rest of the body as it arrives."""
        while True:
            data = self._next_data()
            if data is None:
                return
            yield data

    def close(self):
        """End the exchange; complete the invocation record (received bytes, duration, log)."""
        raw = self.result.raw if self.result is not None else None
        if raw is None:
            return
        rec = self.result.record
        if rec is not None:
            rec.received = self.received
            rec.duration = time.monotonic() - self.result.started
            rec.log_result = self.log_result
        try:
            if self._eof:
                raw.release_conn()
            else:
                raw.close()     # not read to its end: the connection is dropped, never reused
        except Exception:
            pass                # the exchange is over either way; its socket goes with raw


def _stream_error_reason(ev) -> str:
    details = (ev.error_details or "").encode("utf-8", "replace")
    return _function_error_reason(ev.error_code, details)
