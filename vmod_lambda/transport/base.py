# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""The interface every transport implements, and what its calls return or raise.

A transport carries the Lambda Invoke API calls of one object (one `Invoker`, invoker.py) to its
endpoint: `boto3` (botocore's whole request pipeline, boto3.py) or `direct` (our SigV4 signature
and keep-alive HTTP/1.1 connections, direct.py). Both give the same results and the same errors,
and tests/unit/test_transport.py runs one test body over both.

    invoke_gen(request, record)     RequestResponse (or Event), as a generator of socket work that
                                    the multiplexed worker drives (see `multiplexed`); returns an
                                    InvokeResult
    invoke(request, record)         the same, as a plain call
    invoke_async(request, record)   Event: queued by Lambda, answered with 202
    invoke_stream(request, record)  InvokeWithResponseStream: the response head, as a StreamResult
                                    whose `raw` (a ResponseStream) yields the event-stream body as
                                    it arrives
    close()                         drop the idle connections

What a transport needs from the worker pool that runs it comes in as a constructor argument,
`Hooks`: blocking_begin() / blocking_end() around the calls that may hold the thread for long
(connecting, refreshing credentials, reading a body of unknown length), so that the pool does not
count that worker as free to take the next queued job (_handoff.pyx). Nothing is patched into a
transport from above.

Errors are InvokeError with a `kind` (outcomes.KINDS: how it is counted) and a one-line `reason`
for the log, which never carries credentials or request headers (clean_reason, redact).
"""

import re
import weakref
from dataclasses import dataclass, replace
from typing import Optional

__all__ = ["Hooks", "NO_HOOKS", "InvokeRequest", "InvokeResult", "StreamResult", "ResponseStream",
           "Transport", "InvokeError", "clean_reason", "clean_token", "redact",
           "register_credentials",
           "MAX_REASON", "REDACTED"]

MAX_REASON = 400


def _no_hook():
    pass


class Hooks:
    """What a transport needs from the worker that runs it: blocking_begin() before and
    blocking_end() after a call that may block the thread for long. The worker pool passes its
    own (_vmod.pyx, from _handoff.pyx); outside varnishd (tests, tools) they do nothing."""

    __slots__ = ("blocking_begin", "blocking_end")

    def __init__(self, blocking_begin=_no_hook, blocking_end=_no_hook):
        self.blocking_begin = blocking_begin
        self.blocking_end = blocking_end


NO_HOOKS = Hooks()


class InvokeError(Exception):
    """An invocation failed. kind: one of outcomes.KINDS (function_error, timeout, throttled, service,
    transport, invalid_response, payload, credentials, internal), which says how it is counted.
    record: the invoker.InvocationRecord of the invocation that failed, None when nothing was sent
    (the Invoker sets it on the errors of its calls)."""

    def __init__(self, kind: str, reason: str, request_id: Optional[str] = None,
                 status: Optional[int] = None, record: Optional[object] = None,
                 retry_after: Optional[float] = None, throttle_reason: Optional[str] = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = clean_reason(reason)
        self.request_id = clean_token(request_id) if request_id else None
        self.status = status
        self.record = record
        # A 429's Retry-After (seconds; None when absent or not a number) and its Reason (a
        # token, e.g. ReservedFunctionConcurrentInvocationLimitExceeded): the object's throttle
        # hold (vmod_lambda.vcc, "Throttling") is min(Retry-After, throttle_hold); lambda.retry_after()
        # says it (0s when None).
        self.retry_after = retry_after
        self.throttle_reason = clean_token(throttle_reason)[:64] if throttle_reason else None
        # Set by the hold when this error started or extended one: the log line saying so.
        self.hold_note = None

    def __str__(self):
        if self.request_id:
            return f"{self.reason} (RequestId: {self.request_id})"
        return self.reason


@dataclass(init=False)
class InvokeRequest:
    """One call as the Invoke API takes it (the object's settings already applied)."""
    function_name: str
    payload: bytes
    invocation_type: str = "RequestResponse"      # RequestResponse | Event
    qualifier: Optional[str] = None
    log_type: Optional[str] = None                # "Tail" or None
    client_context: Optional[str] = None          # X-Amz-Client-Context, base64
    timeout: Optional[float] = None               # this call's read timeout (None: the object's)
    deadline: Optional[float] = None              # time.monotonic() the call ends (None: none)
    trace_id: Optional[str] = None                # X-Amzn-Trace-Id, unsigned (trace.py)
    tenant_id: Optional[str] = None               # X-Amz-Tenant-Id (TenantId), validated
    # The direct transport may answer with the payload as a _netio.RawBody (the buffer it was
    # received into, which the director's job takes over) instead of bytes; the boto3 transport
    # answers bytes whatever this says. Only for a caller that handles both (fetch.handle_gen).
    raw_body: bool = False

    # By hand, not generated: one is made per call on the worker, under the GIL, and a frozen
    # dataclass's generated __init__ (interpreted, object.__setattr__ per field) cost 0.7 us of
    # it; this one is compiled (setup.py, COMPILED_PY). Fields, eq, repr and replace() stay the
    # dataclass's; nothing sets a field after __init__.
    def __init__(self, function_name, payload, invocation_type="RequestResponse", qualifier=None,
                 log_type=None, client_context=None, timeout=None, deadline=None, trace_id=None,
                 tenant_id=None, raw_body=False):
        self.function_name = function_name
        self.payload = payload
        self.invocation_type = invocation_type
        self.qualifier = qualifier
        self.log_type = log_type
        self.client_context = client_context
        self.timeout = timeout
        self.deadline = deadline
        self.trace_id = trace_id
        self.tenant_id = tenant_id
        self.raw_body = raw_body


class _Answer:
    """What an answer says about itself, read from its record (invoker.InvocationRecord, filled
    by the transport with record.answer()): one place holds it."""
    __slots__ = ()

    @property
    def request_id(self) -> Optional[str]:
        return self.record.request_id

    @property
    def executed_version(self) -> Optional[str]:
        return self.record.executed_version

    @property
    def log_result(self) -> Optional[str]:
        return self.record.log_result


class InvokeResult(_Answer):
    """The answer of a call: its payload and status; the rest is in its record."""
    __slots__ = ("payload", "status", "record")

    def __init__(self, payload: bytes, status: int, record):
        self.payload = payload
        self.status = status
        self.record = record    # the InvocationRecord: what the invocation sent and got


class ResponseStream:
    """The body of an InvokeWithResponseStream answer, read as it arrives (the raw event stream,
    application/vnd.amazon.eventstream; vmod_lambda.eventstream decodes it).

    chunks(amt) yields the bytes as they come, at most amt at a time, and raises InvokeError
    (timeout, transport) when the connection stalls beyond the read timeout or breaks.
    release_conn() once the body was read to its end (the connection may carry the next call);
    close() otherwise: the connection is dropped, never reused."""

    def chunks(self, amt: int = 65536):
        raise NotImplementedError

    def release_conn(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError


class StreamResult(_Answer):
    """An InvokeWithResponseStream answer whose body (the event stream) is still to be read."""
    __slots__ = ("raw", "status", "content_type", "record", "started")

    def __init__(self, raw: ResponseStream, status: int, content_type: Optional[str], record):
        self.raw = raw                  # read with raw.chunks() (Invoker.read_stream)
        self.status = status
        self.content_type = content_type
        self.record = record            # the InvocationRecord, completed by the reader
        self.started = 0.0


class Transport:
    """One object's way to the Invoke API (see the module's docstring)."""

    name = "?"
    # True when invoke_gen() yields socket work (the worker pool then runs several invocations per
    # thread, _handoff.pyx); False when it does all of it before it returns (it never yields).
    multiplexed = False

    def invoke_gen(self, request: InvokeRequest, rec):
        """The call as a generator; rec (invoker.InvocationRecord) gets the status, request id,
        received bytes, executed version, function error and log of the answer (rec.answer()),
        whatever the outcome."""
        raise NotImplementedError

    def run(self, gen):
        """Run one of this transport's generators to its end in this thread."""
        try:
            next(gen)
        except StopIteration as e:
            return e.value
        raise RuntimeError(f"the {self.name} transport's call yielded")   # pragma: no cover

    def invoke(self, request: InvokeRequest, rec) -> InvokeResult:
        return self.run(self.invoke_gen(request, rec))

    def invoke_async(self, request: InvokeRequest, rec) -> InvokeResult:
        return self.invoke(replace(request, invocation_type="Event", log_type=None), rec)

    def invoke_stream(self, request: InvokeRequest, rec) -> StreamResult:
        raise NotImplementedError

    def close(self):
        pass


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


def register_credentials(creds):
    """Redact the keys of creds (botocore Credentials) from every reason from now on."""
    _credentials.add(creds)


def _known_secrets() -> list:
    """Access key ids, secrets and tokens of the credentials the clients of this process use."""
    out = []
    for creds in list(_credentials):
        try:
            # An assumed role's credentials (credentials.py) as held: redacting never calls STS.
            peek = getattr(creds, "peek", None)
            frozen = peek() if peek is not None else creds.get_frozen_credentials()
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
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:$/+=-"


def clean_token(value) -> str:
    """An identifier an endpoint sent (request id, executed version) as a token fit for a log
    record: at most 128 characters of [A-Za-z0-9._:$/+=-], anything else "_" (no escape sequences,
    no spaces that would shift the record's fields); "-" when there is none."""
    if not value:
        return "-"
    if type(value) is str and not value.strip(_TOKEN_CHARS):
        return value[:128]      # (the common case, already clean: no regular expression)
    return _TOKEN.sub("_", str(value))[:128]


def clean_reason(text) -> str:
    """One printable line of bounded length, without credential material: log records must not be
    split or forged by content, and must never carry what an endpoint echoed of a signature."""
    text = redact(str(text)[:MAX_REASON * 4])
    out = "".join(c if c.isprintable() else " " for c in text[:MAX_REASON * 2])
    out = " ".join(out.split())
    if len(out) > MAX_REASON:
        out = out[:MAX_REASON - 3] + "..."
    return out


def function_error_reason(kind: str, payload: bytes) -> str:
    """`function error (Unhandled): ValueError: boom` from Lambda's {errorType, errorMessage}."""
    import json
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


def retry_after(value) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds, as Lambda sends it; an HTTP date is not
    used by Lambda and counts as absent), None when absent or not a number >= 0."""
    if value is None:
        return None
    try:
        v = float(str(value).strip())
    except ValueError:
        return None
    return v if 0 <= v < 1e9 else None


def _throttle_reason(response: dict, body: Optional[bytes]) -> Optional[str]:
    """The Reason of a TooManyRequestsException: botocore's modeled field (boto3 transport), or
    the JSON body's (the direct transport parses the answer with the operation's shape only)."""
    reason = response.get("Reason") or response.get("Error", {}).get("Reason")
    if reason or not body:
        return reason or None
    import json
    try:
        doc = json.loads(body[:4096])
    except (ValueError, UnicodeDecodeError):
        return None
    return doc.get("Reason") or None if isinstance(doc, dict) else None


def service_error(response: dict, body: Optional[bytes] = None) -> InvokeError:
    """InvokeError for an error answer of the service, as botocore parsed it (ClientError.response,
    or botocore's parser on the direct transport's answer, whose raw body is *body*). A 429 carries
    its Retry-After and Reason (InvokeError.retry_after, .throttle_reason)."""
    err = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    code = err.get("Code") or "Error"
    kind = "throttled" if status == 429 or code == "TooManyRequestsException" else "service"
    msg = err.get("Message") or ""
    e = InvokeError(kind, f"{code} (HTTP {status})" + (f": {msg}" if msg else ""),
                    meta.get("RequestId") or None, status)
    if kind == "throttled":
        headers = meta.get("HTTPHeaders") or {}
        e.retry_after = retry_after(next((v for k, v in headers.items()
                                          if k.lower() == "retry-after"), None))
        reason = _throttle_reason(response, body)
        e.throttle_reason = clean_token(reason)[:64] if reason else None
    return e


# Reasons shared by both transports (tests pin them).
NO_CREDENTIALS = "no AWS credentials found (environment, shared files, container or instance role)"
CLOSED_BEFORE_ANSWER = "the Lambda endpoint closed the connection before it answered"


def cannot_connect(endpoint_url) -> str:
    return f"cannot connect to the Lambda endpoint {endpoint_url}"


def read_timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s waiting for the function"


def connect_timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s connecting to the endpoint"


def stream_timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s waiting for the next bytes of the response stream"


def stream_broke(detail: str) -> str:
    return f"the response stream broke: {detail}"
