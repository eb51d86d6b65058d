# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""Invoking one Lambda function: the Python side of lambda.backend().invoke().

One Invoker per VCL object, created at vcl.load; its boto3 client is thread-safe and shared by the worker
threads. boto3 always does the configuration (credential chain, region, endpoint); the requests go
through the object's transport: "boto3" (botocore's whole request pipeline) or "direct" (direct.py:
our SigV4 signature and keep-alive HTTP/1.1 connections, several times cheaper per call). Both give the
same results and the same errors. Errors come back as InvokeError with a `kind` (for counters and tests)
and a one-line `reason` for the log, which never contains credentials or request headers.
"""

import contextlib
import json
import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Optional

import botocore
import botocore.parsers
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                 ReadTimeoutError)

from . import clients, direct
from .config import BackendConfig
from .limits import MAX_ASYNC_PAYLOAD, MAX_PAYLOAD
from .outcomes import payload_too_large

__all__ = ["Invoker", "InvokeError", "InvokeResult", "InvocationRecord", "StreamResult",
           "MAX_PAYLOAD", "clean_reason", "clean_token", "redact", "take_record"]

VERSION = "0.1.0"
MAX_REASON = 400

class InvokeError(Exception):
    """An invocation failed. kind: one of outcomes.KINDS (function_error, timeout, throttled, service,
    transport, invalid_response, payload, credentials, internal), which says how it is counted."""

    def __init__(self, kind: str, reason: str, request_id: Optional[str] = None,
                 status: Optional[int] = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = clean_reason(reason)
        self.request_id = clean_token(request_id) if request_id else None
        self.status = status

    def __str__(self):
        if self.request_id:
            return f"{self.reason} (RequestId: {self.request_id})"
        return self.reason


@dataclass
class InvokeResult:
    payload: bytes
    status: int
    request_id: Optional[str]
    executed_version: Optional[str]
    log_result: Optional[str]


@dataclass
class StreamResult:
    """An InvokeWithResponseStream answer whose body (the event stream) is still to be read."""
    raw: object                        # urllib3's HTTPResponse: read with read_stream()
    status: int
    request_id: Optional[str]
    executed_version: Optional[str]
    content_type: Optional[str]
    record: Optional["InvocationRecord"] = None   # completed by the reader (received, duration)
    started: float = 0.0


@dataclass
class InvocationRecord:
    """What one invocation sent and got, for counters and the varnishlog record (see take_record)."""
    invocation_type: str
    qualifier: Optional[str]
    sent: int
    received: int = 0
    duration: float = 0.0
    request_id: Optional[str] = None
    executed_version: Optional[str] = None
    status: Optional[int] = None
    log_result: Optional[str] = None


# The record of the last invocation made by this thread: a worker runs one job at a time, so the
# job that called invoke() takes it afterwards, whatever invoke() returned or raised.
_tls = threading.local()


def take_record() -> Optional[InvocationRecord]:
    """The record of this thread's last invocation since the last call (None: nothing was sent)."""
    rec = getattr(_tls, "record", None)
    _tls.record = None
    return rec


# Credential material that an endpoint (or a function) could echo back in an error message: a
# SigV4 Authorization header, a signature, a security token, an AWS access key id. The values of
# the credentials the clients sign with are redacted as well (see _known_secrets).
_SECRET_PATTERNS = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=[^\s,]*(?:[\s,]+SignedHeaders=[^\s,]*)?"
    r"(?:[\s,]+Signature=[0-9A-Fa-f]*)?"
    r"|(?<![A-Za-z0-9])Signature=[0-9A-Fa-f]{16,}"
    r"|(?i:x-amz-security-token)[\s:=]+[^\s,;\"']+"
    r"|(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}"
    r"(?![A-Z0-9])")
REDACTED = "[redacted]"
# The boto3 Credentials objects of live clients (weakly: they go with their Invoker).
_credentials = weakref.WeakSet()


def _known_secrets() -> list:
    """Access key ids, secrets and tokens of the credentials the clients of this process use."""
    out = []
    for creds in list(_credentials):
        try:
            frozen = creds.get_frozen_credentials()
        except Exception:       # refreshing failed: then nothing of it was sent either
            continue
        out.extend(v for v in (frozen.access_key, frozen.secret_key, frozen.token)
                   if v and len(v) >= 8)
    return out


def redact(text: str) -> str:
    """*text* without credential material: SigV4 headers and signatures, security tokens, access
    key ids and the values of the credentials in use are replaced by "[redacted]"."""
    text = _SECRET_PATTERNS.sub(REDACTED, text)
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


_TOKEN = re.compile(r"[^A-Za-z0-9._:$/+=-]")


def clean_token(value) -> str:
    """An identifier an endpoint sent (request id, executed version) as a token fit for a log
    record: at most 128 characters of [A-Za-z0-9._:$/+=-], anything else "_" (no escape sequences,
    no spaces that would shift the record's fields); "-" when there is none."""
    return _TOKEN.sub("_", str(value))[:128] if value else "-"


def clean_reason(text) -> str:
    """One printable line of bounded length, without credential material: log records must not be
    split or forged by content, and must never carry what an endpoint echoed of a signature."""
    text = redact(str(text)[:MAX_REASON * 4])
    out = "".join(c if c.isprintable() else " " for c in text[:MAX_REASON * 2])
    out = " ".join(out.split())
    if len(out) > MAX_REASON:
        out = out[:MAX_REASON - 3] + "..."
    return out


def _function_error_reason(kind: str, payload: bytes) -> str:
    """`function error (Unhandled): ValueError: boom` from Lambda's {errorType, errorMessage}."""
    detail = ""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        etype, emsg = doc.get("errorType"), doc.get("errorMessage")
        detail = ": ".join(str(x) for x in (etype, emsg) if x)
    elif payload:
        detail = payload[:200].decode("utf-8", "replace")
    return f"function error ({kind})" + (f": {detail}" if detail else "")


def _proxied(url: str) -> bool:
    """Whether boto3 would reach url through a proxy from the environment."""
    from urllib.parse import urlsplit
    from botocore.utils import get_environ_proxies
    return bool(get_environ_proxies(url).get(urlsplit(url).scheme))


def _service_error(response: dict) -> "InvokeError":
    """InvokeError for an error answer of the service, as botocore parsed it (ClientError.response)."""
    err = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    code = err.get("Code") or "Error"
    kind = "throttled" if status == 429 or code == "TooManyRequestsException" else "service"
    msg = err.get("Message") or ""
    return InvokeError(kind, f"{code} (HTTP {status})" + (f": {msg}" if msg else ""),
                       meta.get("RequestId") or None, status)


def _content_type(params, **kwargs):
    """before-call handler of the boto3 transport's Invoke calls: the Content-Type of the blob
    payload, as the AWS SDKs send it and the direct transport does (direct.CONTENT_TYPE); set
    before the request is signed, so it is signed like the other headers. Returns None (a value
    would be taken for the answer)."""
    headers = params.setdefault("headers", {})
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = direct.CONTENT_TYPE


def _setup_shared(shared):
    """Once per shared boto3 client (clients.acquire): its credentials redacted from every log
    line, the Content-Type of its Invoke calls."""
    if shared.credentials is not None and not shared.anonymous:
        _credentials.add(shared.credentials)
    for op in ("Invoke", "InvokeWithResponseStream"):
        shared.client.meta.events.register(f"before-call.lambda.{op}", _content_type)


def _make_direct(shared):
    """The direct transport of a shared boto3 client, configured from it and its session, and
    botocore's parser and shape for its error answers: (DirectClient, parser, Invoke's shape)."""
    meta = shared.client.meta
    core = shared.session._session      # botocore session: the config chain boto3 uses
    ca_bundle = core.get_config_variable("ca_bundle")
    if ca_bundle is None:
        from botocore.httpsession import get_cert_path
        ca_bundle = get_cert_path(True)
    key = shared.key
    client = direct.DirectClient(
        meta.endpoint_url, meta.region_name, meta.service_model.signing_name,
        # The same provider chain the client uses; RefreshableCredentials refresh themselves.
        shared.credentials, key.connect_timeout, key.read_timeout, 0,
        f"{key.user_agent} transport/direct botocore/{botocore.__version__}",
        ca_bundle=ca_bundle, verify=True)
    # Error answers are parsed by botocore's own parser, as the boto3 transport does.
    parser = botocore.parsers.create_parser(meta.service_model.metadata["protocol"])
    return client, parser, meta.service_model.operation_model("Invoke").output_shape


def _resize_direct(extra, limits: int):
    """The shared direct transport keeps as many idle connections as its users' pool_size
    added up: the most they can have in flight."""
    extra[0].pool_size = max(limits, 0)


class _DirectExtra(tuple):
    """(DirectClient, parser, shape), closed with its client."""

    def close(self):
        self[0].close()


class Invoker:
    """anonymous: the credential chain found nothing and the object has an endpoint_url, so its
    requests are signed with empty credentials (as movableink's vmod-lambda does): a local
    endpoint (an emulator, LocalStack, a test server) needs no keys. Without endpoint_url the
    calls fail with "no AWS credentials found" instead."""

    def __init__(self, cfg: BackendConfig):
        self.cfg = cfg
        # The boto3 client (and the direct transport) are shared by every object with the same
        # region, endpoint and timeouts (clients.py): what is this object's own is cfg.
        key = clients.ClientKey(cfg.region, cfg.endpoint_url, cfg.connect_timeout, cfg.timeout,
                                f"vmod-lambda/{VERSION}")
        shared = clients.acquire(key, cfg.pool_size, _setup_shared)
        clients.track(self, shared, cfg.pool_size)
        self.client = shared.client
        self.anonymous = shared.anonymous
        # The credentials both transports sign with (None: every call fails "no AWS credentials").
        self.credentials = shared.credentials
        self.direct = None
        self.transport = cfg.transport
        if cfg.transport == "direct":
            if _proxied(self.client.meta.endpoint_url):
                # boto3 sends through HTTP(S)_PROXY (unless NO_PROXY says otherwise); the direct
                # transport does not speak to proxies, so such an object keeps boto3's transport.
                self.transport = "boto3"
            else:
                self.direct, self._parser, self._invoke_shape = shared.extra(
                    "direct", lambda: _DirectExtra(_make_direct(shared)), _resize_direct)

    def invoke(self, payload: bytes, invocation_type: str = "RequestResponse",
               qualifier: Optional[str] = None) -> InvokeResult:
        """Invoke the function (RequestResponse, or Event: queued, answered with 202) with the
        object's qualifier, or with qualifier when given."""
        return direct.run(self.invoke_gen(payload, invocation_type, qualifier))

    @property
    def multiplexed(self) -> bool:
        """True when invoke_gen() yields its socket work (the direct transport, http:// or
        https://): the worker pool then runs several invocations per thread (_handoff.pyx)."""
        return self.direct is not None and self.direct.yields_io

    def invoke_gen(self, payload: bytes, invocation_type: str = "RequestResponse",
                   qualifier: Optional[str] = None, timeout: Optional[float] = None):
        """invoke() as a generator of socket exchanges (see direct.run()). The record of the
        invocation is this thread's (take_record()) when it returns or raises. timeout: the read
        timeout of this call instead of the object's (a probe's .timeout), direct transport only:
        boto3's client has one read timeout for every call."""
        _tls.record = None
        if invocation_type == "Event":
            if len(payload) > MAX_ASYNC_PAYLOAD:
                raise InvokeError("payload", payload_too_large(len(payload), asynchronous=True))
        elif len(payload) > MAX_PAYLOAD:
            raise InvokeError("payload", payload_too_large(len(payload)))
        kwargs = {"FunctionName": self.cfg.base_name or self.cfg.function_name,
                  "InvocationType": invocation_type, "Payload": payload}
        qualifier = qualifier if qualifier is not None else self.cfg.qualifier
        if qualifier:
            kwargs["Qualifier"] = qualifier
        rec = _tls.record = InvocationRecord(invocation_type, qualifier or None, len(payload))
        t0 = time.monotonic()
        try:
            return (yield from self._invoke(kwargs, rec, timeout))
        finally:
            rec.duration = time.monotonic() - t0
            # Other invocations may have run on this thread while this one waited.
            _tls.record = rec

    def _invoke(self, kwargs: dict, rec: InvocationRecord, timeout: Optional[float] = None):
        if self.cfg.client_context:
            kwargs["ClientContext"] = self.cfg.client_context
        if self.cfg.log_tail and kwargs["InvocationType"] == "RequestResponse":
            kwargs["LogType"] = "Tail"
        if self.direct is not None:
            return (yield from self._invoke_direct(kwargs, rec, timeout))
        with self.errors(rec):
            try:
                resp = self._call(kwargs)
            except EndpointConnectionError:
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                resp = self._call(kwargs)

        meta = resp.get("ResponseMetadata", {})
        request_id = meta.get("RequestId") or None
        body = resp["_body"]
        rec.status, rec.request_id, rec.received = resp.get("StatusCode"), request_id, len(body)
        rec.executed_version, rec.log_result = resp.get("ExecutedVersion"), resp.get("LogResult")
        if resp.get("FunctionError"):
            raise InvokeError("function_error",
                              _function_error_reason(resp["FunctionError"], body), request_id,
                              resp.get("StatusCode"))
        return InvokeResult(body, resp.get("StatusCode", 200), request_id,
                            resp.get("ExecutedVersion"), resp.get("LogResult"))

    def _invoke_direct(self, kwargs: dict, rec: InvocationRecord, timeout: Optional[float] = None):
        """invoke() through the direct transport: the same outcomes as the boto3 path above."""
        args = (kwargs["FunctionName"], kwargs["Payload"], kwargs["InvocationType"],
                kwargs.get("Qualifier"), kwargs.get("LogType"), kwargs.get("ClientContext"),
                timeout)
        try:
            try:
                r = yield from self.direct.invoke_gen(*args)
            except direct.ConnectFailed:
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                r = yield from self.direct.invoke_gen(*args)
        except direct.ReadTimeout:
            raise InvokeError("timeout", f"timed out after {timeout or self.cfg.timeout:g}s "
                              "waiting for the function") from None
        except direct.ConnectTimeout:
            raise InvokeError("timeout", f"timed out after {self.cfg.connect_timeout:g}s "
                              "connecting to the endpoint") from None
        except direct.ConnectFailed:
            raise InvokeError("transport", "cannot connect to the Lambda endpoint "
                              f"{self.client.meta.endpoint_url}") from None
        except direct.Closed:
            raise InvokeError("transport", "the Lambda endpoint closed the connection before "
                              "it answered") from None
        except direct.NoCredentials:
            raise InvokeError("credentials", "no AWS credentials found (environment, shared "
                              "files, container or instance role)") from None
        except direct.BadResponse as e:
            raise InvokeError("transport", f"invalid HTTP response from the Lambda endpoint: "
                              f"{e}") from None
        headers = r.headers
        if r.status >= 300:
            # botocore raises ClientError for these, with what its parser made of the answer.
            parsed = self._parser.parse(
                {"status_code": r.status, "headers": headers, "body": r.body},
                self._invoke_shape)
            meta = parsed.get("ResponseMetadata", {})
            rec.status, rec.request_id = meta.get("HTTPStatusCode"), meta.get("RequestId") or None
            raise _service_error(parsed)
        request_id = headers.get("x-amzn-requestid") or headers.get("x-amz-request-id") or None
        rec.status, rec.request_id, rec.received = r.status, request_id, len(r.body)
        rec.executed_version = headers.get("x-amz-executed-version")
        rec.log_result = headers.get("x-amz-log-result")
        function_error = headers.get("x-amz-function-error")
        if function_error:
            raise InvokeError("function_error", _function_error_reason(function_error, r.body),
                              request_id, r.status)
        return InvokeResult(r.body, r.status, request_id, headers.get("x-amz-executed-version"),
                            headers.get("x-amz-log-result"))

    def _call(self, kwargs: dict) -> dict:
        resp = self.client.invoke(**kwargs)
        stream = resp.get("Payload")
        # Reading the body can time out or break as well: the same errors as the call.
        resp["_body"] = stream.read() if stream is not None else b""
        return resp

    # -- InvokeWithResponseStream

    def invoke_stream(self, payload: bytes, qualifier: Optional[str] = None) -> StreamResult:
        """Start an InvokeWithResponseStream call; the caller reads result.raw with
        read_stream() and closes it. Raises InvokeError as invoke() does."""
        if len(payload) > MAX_PAYLOAD:
            raise InvokeError("payload", payload_too_large(len(payload)))
        kwargs = {"FunctionName": self.cfg.base_name or self.cfg.function_name,
                  "InvocationType": "RequestResponse", "Payload": payload}
        qualifier = qualifier if qualifier is not None else self.cfg.qualifier
        if qualifier:
            kwargs["Qualifier"] = qualifier
        if self.cfg.client_context:
            kwargs["ClientContext"] = self.cfg.client_context
        if self.cfg.log_tail:
            kwargs["LogType"] = "Tail"
        rec = _tls.record = InvocationRecord("RequestResponse", qualifier or None, len(payload))
        t0 = time.monotonic()
        try:
            with self.errors(rec):
                try:
                    resp = self.client.invoke_with_response_stream(**kwargs)
                except EndpointConnectionError:
                    # Could not connect: nothing was sent, so one more try cannot invoke twice.
                    resp = self.client.invoke_with_response_stream(**kwargs)
        finally:
            rec.duration = time.monotonic() - t0
        meta = resp.get("ResponseMetadata", {})
        rec.status, rec.request_id = resp.get("StatusCode", 200), meta.get("RequestId") or None
        rec.executed_version = resp.get("ExecutedVersion")
        # The raw body: the event stream is decoded by vmod_lambda.eventstream, not botocore.
        raw = resp["EventStream"]._raw_stream
        return StreamResult(raw, resp.get("StatusCode", 200), meta.get("RequestId") or None,
                            resp.get("ExecutedVersion"), resp.get("ResponseStreamContentType"),
                            rec, t0)

    def read_stream(self, raw, amt: int = 65536):
        """Yield the body of a streamed answer as it arrives (an HTTP chunk, or what one read
        returns; at most amt bytes at a time). Raises InvokeError on timeouts and broken
        connections."""
        import urllib3.exceptions as u3
        try:
            if getattr(raw, "chunked", False) and raw.supports_chunked_reads():
                yield from raw.read_chunked(amt, decode_content=False)
                return
            read = raw.read1 if hasattr(raw, "read1") else raw.read
            while True:
                data = read(amt, decode_content=False)
                if not data:
                    return
                yield data
        except (u3.ReadTimeoutError, TimeoutError):
            raise InvokeError("timeout", f"timed out after {self.cfg.timeout:g}s waiting for "
                              "the next bytes of the response stream") from None
        except (u3.HTTPError, OSError, ValueError) as e:
            raise InvokeError("transport", "the response stream broke: "
                              f"{type(e).__name__}: {e}") from None

    @contextlib.contextmanager
    def errors(self, rec: Optional[InvocationRecord] = None):
        """Map botocore's exceptions to InvokeError (and note a service error's status and request
        id in rec): the boto3 transport's calls, plain and streamed."""
        try:
            yield
        except ClientError as e:
            if rec is not None:
                meta = e.response.get("ResponseMetadata", {})
                rec.status = meta.get("HTTPStatusCode")
                rec.request_id = meta.get("RequestId") or None
            raise _service_error(e.response) from None
        except ReadTimeoutError:
            raise InvokeError("timeout", f"timed out after {self.cfg.timeout:g}s waiting for "
                              "the function") from None
        except ConnectTimeoutError:
            raise InvokeError("timeout", f"timed out after {self.cfg.connect_timeout:g}s "
                              "connecting to the endpoint") from None
        except EndpointConnectionError:
            raise InvokeError("transport", "cannot connect to the Lambda endpoint "
                              f"{self.client.meta.endpoint_url}") from None
        except ConnectionClosedError:
            raise InvokeError("transport", "the Lambda endpoint closed the connection before "
                              "it answered") from None
        except NoCredentialsError:
            raise InvokeError("credentials", "no AWS credentials found (environment, shared "
                              "files, container or instance role)") from None
        except BotoCoreError as e:
            raise InvokeError("transport", f"{type(e).__name__}: {e}") from None
