# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""Invoking one Lambda function: the Python side of lambda.backend().invoke().

One Invoker per VCL object, created at vcl.load: a thin facade over the object's transport
(vmod_lambda/transport/: base.py is the interface). boto3 always does the configuration (credential
chain, region, endpoint) with one thread-safe client per object; the requests go through the
transport: "boto3" (botocore's whole request pipeline) or "direct" (our SigV4 signature and
keep-alive HTTP/1.1 connections, several times cheaper per call), for Invoke and
InvokeWithResponseStream alike. Both give the same results and the same errors. Errors come back
as InvokeError with a `kind` (for counters and tests) and a one-line `reason` for the log, which
never contains credentials or request headers.
"""

import time
from typing import Optional

import botocore

from . import clients
from ._record import InvocationRecord
from .config import BackendConfig
from .limits import MAX_ASYNC_PAYLOAD, MAX_PAYLOAD
from .outcomes import payload_too_large
from .trace import tenant_problem
from .transport.base import (NO_HOOKS, REDACTED, Hooks, InvokeError, InvokeRequest, InvokeResult,
                             StreamResult, clean_reason, clean_token, redact,
                             register_credentials)
from .transport.boto3 import Boto3Transport, trace_header, trace_params
from .transport.direct import CONTENT_TYPE, DirectTransport

__all__ = ["Invoker", "InvokeError", "InvokeResult", "InvocationRecord", "StreamResult",
           "MAX_PAYLOAD", "clean_reason", "clean_token", "redact", "Hooks", "REDACTED"]

VERSION = "0.1.0"


def _proxied(url: str) -> bool:
    """Whether boto3 would reach url through a proxy from the environment."""
    from urllib.parse import urlsplit
    from botocore.utils import get_environ_proxies
    return bool(get_environ_proxies(url).get(urlsplit(url).scheme))


def _content_type(params, **kwargs):
    """before-call handler of the boto3 client's Invoke calls: the Content-Type of the blob
    payload, as the AWS SDKs send it and the direct transport does (direct.CONTENT_TYPE); set
    before the request is signed, so it is signed like the other headers. Returns None (a value
    would be taken for the answer)."""
    headers = params.setdefault("headers", {})
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = CONTENT_TYPE



def _setup_shared(shared):
    """Once per shared boto3 client (clients.acquire): its credentials redacted from every log
    line, the Content-Type of its Invoke calls."""
    if shared.credentials is not None and not shared.anonymous:
        register_credentials(shared.credentials)
    for op in ("Invoke", "InvokeWithResponseStream"):
        shared.client.meta.events.register(f"before-call.lambda.{op}", _content_type)
        # X-Amzn-Trace-Id of a call (trace.py): botocore's model has no member for it.
        shared.client.meta.events.register(f"provide-client-params.lambda.{op}", trace_params)
        shared.client.meta.events.register(f"before-call.lambda.{op}", trace_header)


def _resize_direct(transport, limits: int):
    """The shared direct transport keeps as many idle connections as its users' pool_size added
    up: the most they can have in flight."""
    transport.client.pool_size = max(limits, 0)

class Invoker:
    """The object's calls, through self.transport (a transport.base.Transport, "direct" or
    "boto3" as cfg.transport says; "boto3" when boto3 would go through a proxy).

    hooks: what the transport needs from the worker pool that runs it (transport.base.Hooks;
    _vmod.pyx passes the pool's); none outside varnishd.

    anonymous: the credential chain found nothing and the object has an endpoint_url, so its
    requests are signed with empty credentials (as movableink's vmod-lambda does): a local
    endpoint (an emulator, LocalStack, a test server) needs no keys. Without endpoint_url the
    calls fail with "no AWS credentials found" instead."""

    def __init__(self, cfg: BackendConfig, hooks: Hooks = NO_HOOKS):
        self.cfg = cfg
        self.log = None             # a callable taking one log line (warn_once)
        self._warned = set()
        # The boto3 client and the transports are shared by every object with the same region,
        # endpoint, timeouts and hooks (clients.py): what is this object's own is cfg. The hooks
        # are one module-level object in varnishd (_vmod.pyx), so they never split a share there.
        key = clients.ClientKey(cfg.region, cfg.endpoint_url, cfg.connect_timeout, cfg.timeout,
                                f"vmod-lambda/{VERSION}", variant=(id(hooks),))
        shared = clients.acquire(key, cfg.pool_size, _setup_shared, cfg.credentials)
        clients.track(self, shared, cfg.pool_size)
        self.client = shared.client
        self.anonymous = shared.anonymous
        # The credentials both transports sign with (None: every call fails "no AWS credentials").
        self.credentials = shared.credentials
        name = cfg.transport
        if name == "direct" and _proxied(self.client.meta.endpoint_url):
            # boto3 sends through HTTP(S)_PROXY (unless NO_PROXY says otherwise); the direct
            # transport does not speak to proxies, so such an object keeps boto3's transport.
            name = "boto3"
        self._boto3 = shared.extra(
            "boto3", lambda: Boto3Transport(self.client, cfg.connect_timeout, cfg.timeout, hooks))
        if name == "direct":
            # One direct transport per share, its idle connections the users' pool_size added up.
            self.transport = shared.extra(
                "direct", lambda: DirectTransport(
                    self.client, shared.session, shared.credentials, cfg.connect_timeout,
                    cfg.timeout, 0,
                    f"vmod-lambda/{VERSION} transport/direct botocore/{botocore.__version__}",
                    hooks),
                _resize_direct)
        else:
            self.transport = self._boto3
        # Called with each throttled InvokeError (a 429) of this object's calls, before it is
        # raised: the object's throttle hold (_throttle.pyx). None outside varnishd.
        self.on_throttled = None

    def _throttled(self, e: InvokeError):
        if e.kind == "throttled" and self.on_throttled is not None:
            self.on_throttled(e)

    def warn_once(self, key: str, message: str):
        """Log message ("lambda: <object>: " before it) the first time this object meets the
        problem key (a malformed traceparent: once per object, not per request), through log
        (_vmod.pyx sets it: an Error record; None: not logged)."""
        if key in self._warned:
            return
        self._warned.add(key)
        if self.log is not None:
            self.log(f"lambda: {self.cfg.name}: {message}")

    @property
    def multiplexed(self) -> bool:
        """True when invoke_gen() yields its socket work (the direct transport, http:// or
        https://): the worker pool then runs several invocations per thread (_handoff.pyx)."""
        return self.transport.multiplexed

    def _request(self, payload: bytes, invocation_type: str, qualifier: Optional[str],
                 timeout: Optional[float] = None, deadline: Optional[float] = None,
                 trace_id: Optional[str] = None,
                 tenant_id: Optional[str] = None, raw_body: bool = False) -> InvokeRequest:
        """The call for payload with the object's settings (qualifier, when given, instead of
        the object's); raises InvokeError("payload") beyond Lambda's limits."""
        if invocation_type == "Event":
            if len(payload) > MAX_ASYNC_PAYLOAD:
                raise InvokeError("payload", payload_too_large(len(payload), asynchronous=True))
        elif len(payload) > MAX_PAYLOAD:
            raise InvokeError("payload", payload_too_large(len(payload)))
        if tenant_id is not None:
            problem = tenant_problem(tenant_id)
            if problem is not None:
                raise InvokeError("invalid_request", f"the tenant id {problem}; not sent")
        cfg = self.cfg
        return InvokeRequest(
            cfg.base_name or cfg.function_name, payload, invocation_type,
            (qualifier if qualifier is not None else cfg.qualifier) or None,
            "Tail" if cfg.log_tail and invocation_type == "RequestResponse" else None,
            cfg.client_context, timeout, deadline, trace_id, tenant_id, raw_body)

    def invoke(self, payload: bytes, invocation_type: str = "RequestResponse",
               qualifier: Optional[str] = None, trace_id: Optional[str] = None,
               tenant_id: Optional[str] = None) -> InvokeResult:
        """Invoke the function (RequestResponse, or Event: queued, answered with 202) with the
        object's qualifier, or with qualifier when given."""
        return self.transport.run(self.invoke_gen(payload, invocation_type, qualifier,
                                                   trace_id=trace_id, tenant_id=tenant_id))

    def invoke_gen(self, payload: bytes, invocation_type: str = "RequestResponse",
                   qualifier: Optional[str] = None, timeout: Optional[float] = None,
                   deadline: Optional[float] = None, trace_id: Optional[str] = None,
                   tenant_id: Optional[str] = None, raw_body: bool = False):
        """invoke() as a generator of socket exchanges (see transport/direct.run()). The record
        of the invocation comes with its outcome: InvokeResult.record, or InvokeError.record
        (None when nothing was sent). timeout: the read timeout of this call instead of the
        object's (a probe's .timeout), direct transport only: boto3's client has one read timeout
        for every call. deadline: the call's end (time.monotonic(); its caller's, see
        _handoff.pyx): both transports stop reading then (the boto3 one through
        transport/boto3_deadline.py), however the endpoint trickles, and the call fails with a
        timeout (the connection is closed). trace_id: the
        X-Amzn-Trace-Id to send (trace.trace_header()), None: none; tenant_id: the
        X-Amz-Tenant-Id, None: none (an invalid one fails the call before sending, "invalid_request").
        raw_body: the payload of the result may be a _netio.RawBody, not bytes (see InvokeRequest)."""
        request = self._request(payload, invocation_type, qualifier, timeout, deadline,
                                trace_id, tenant_id, raw_body)
        rec = InvocationRecord(invocation_type, request.qualifier, len(payload),
                               trace_id=trace_id)
        t0 = time.monotonic()
        try:
            res = yield from self.transport.invoke_gen(request, rec)
        except InvokeError as e:
            e.record = rec
            self._throttled(e)
            raise
        finally:
            rec.duration = time.monotonic() - t0
        res.record = rec
        return res

    # -- InvokeWithResponseStream

    def invoke_stream(self, payload: bytes, qualifier: Optional[str] = None,
                      trace_id: Optional[str] = None,
                      tenant_id: Optional[str] = None,
                      deadline: Optional[float] = None) -> StreamResult:
        """Start an InvokeWithResponseStream call; the caller reads result.raw with
        read_stream() and then calls its release_conn() (read to its end) or close(). Raises
        InvokeError as invoke() does. deadline (time.monotonic()): both transports stop waiting
        for the answer's head then (the body's reads keep the read timeout)."""
        request = self._request(payload, "RequestResponse", qualifier, deadline=deadline,
                                trace_id=trace_id, tenant_id=tenant_id)
        rec = InvocationRecord("RequestResponse", request.qualifier, len(payload),
                               trace_id=trace_id)
        t0 = time.monotonic()
        try:
            result = self.transport.invoke_stream(request, rec)
        except InvokeError as e:
            e.record = rec
            self._throttled(e)
            raise
        finally:
            rec.duration = time.monotonic() - t0
        result.record = rec
        result.started = t0
        return result

    def read_stream(self, raw, amt: int = 65536):
        """Yield the body of a streamed answer as it arrives (at most amt bytes at a time).
        Raises InvokeError on timeouts and broken connections."""
        return raw.chunks(amt)

    def errors(self, rec: Optional[InvocationRecord] = None):
        """Map botocore's exceptions to InvokeError (and note a service error's status and request
        id in rec), for calls made with self.client (the boto3 transport's mapping)."""
        return self._boto3.errors(rec)

    def close(self):
        """Drop the transport's idle connections."""
        self.transport.close()
