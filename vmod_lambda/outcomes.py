"""Each kind of failure, written once: its counter, its word in the log record, its messages.

An invocation that fails raises invoker.InvokeError with a *kind* from KINDS. The kind decides the
counter it moves (lambda.<object>.<counter>, besides ``fail``; vmod_lambda.vcc, STATISTICS) and the
outcome word of the varnishlog record ``lambda: <object>: <call> <outcome> ...`` (_stats.pyx). The
reason of the failure (the rest of the FetchError or VCL_Error line ``lambda: <object>: ...``) is
written where the failure happens; those used in more than one place are built here.

Each call has one outcome, decided once by its caller (the fetch or VCL thread) after it applied
the result, and counted and logged there (_stats.pyx: stats_commit, outcome_line). Some outcomes
have no InvokeError: ``busy`` (no slot or worker before the timeout: never sent), ``timeout`` when
the call's deadline passed before the worker finished, ``too_large`` for a payload refused before it
was queued (_vmod.pyx) or a fetch answered 413 without invoking (_director.pyx), ``invalid`` for an
answer the caller could not apply (a head that does not fit, an invoke() answer beyond the
workspace).

An answer that arrives after its caller gave up is dropped and counted in LATE only.
"""

from dataclasses import dataclass
from typing import Optional

from .limits import MAX_ASYNC_PAYLOAD, MAX_PAYLOAD, MAX_RESPONSE_BODY, megabytes

__all__ = ["Kind", "KINDS", "LATE", "counter", "outcome", "payload_too_large", "SYNC_TOO_LARGE",
           "ASYNC_TOO_LARGE", "event_too_large", "answer_too_large"]


# The counter of answers that came after their caller gave up (not a failure: the call itself
# counts in timeout).
LATE = "late"


@dataclass(frozen=True)
class Kind:
    name: str                   # InvokeError.kind
    counter: Optional[str]      # the counter it moves besides fail (None: fail only)
    meaning: str


KINDS = {k.name: k for k in (
    Kind("function_error", "function_error", "the function raised (X-Amz-Function-Error)"),
    Kind("timeout", "timeout", "no answer within the timeout (connect or read)"),
    Kind("throttled", "throttled", "HTTP 429 (TooManyRequestsException) from Lambda"),
    Kind("service", "err_5xx", "another error answer of the Lambda service: err_5xx, or err_4xx "
                               "for a status below 500 (outcome service_5xx / service_4xx)"),
    Kind("transport", "conn_fail", "the endpoint could not be reached, closed the connection or "
                                   "answered something that is not HTTP"),
    Kind("invalid_response", "invalid", "the answer is not a valid response for the object"),
    Kind("payload", "invalid", "a payload that cannot be used: a response VCL cannot hold "
                               "(invalid), or one refused before it was sent (too_large)"),
    Kind("invalid_request", "invalid", "a call that cannot be sent as it is: a missing or invalid "
                                       "tenant id (tenant_header, invoke(tenant_id)); not sent"),
    Kind("too_large", "too_large", "the answer is beyond Lambda's limit of synchronous responses "
                                   "(limits.MAX_RESPONSE_BODY): refused, its connection closed"),
    Kind("credentials", None, "no AWS credentials found"),
    Kind("sts", "sts_fail", "the object's role_arn could not be assumed (STS AssumeRole failed): "
                            "nothing was sent"),
    Kind("busy", "busy", "a probe found no free slot of the object's pool (pool_size) within its "
                         ".timeout"),
    Kind("internal", "internal", "a failure of vmod-lambda itself (also logged as an Error "
                                 "record `lambda: <object>: internal error ...`)"),
)}


def counter(kind: Optional[str], status: Optional[int] = None, sent: bool = True) -> Optional[str]:
    """The counter a failure of *kind* moves besides fail (None: none). status: the HTTP status of
    a service error; sent: whether anything was sent."""
    if kind == "service" and (status or 500) < 500:
        return "err_4xx"
    if kind == "payload" and not sent:
        return "too_large"
    k = KINDS.get(kind)
    return k.counter if k is not None else None


def outcome(kind: Optional[str], status: Optional[int] = None) -> str:
    """The outcome word of the varnishlog record: ok, a kind, or service_5xx / service_4xx."""
    if kind is None:
        return "ok"
    if kind == "service":
        return "service_5xx" if (status or 500) >= 500 else "service_4xx"
    return kind


# A payload beyond Lambda's quota, refused before anything is sent (InvokeError kind "payload"; the
# C check in _vmod.pyx writes the same line with "payload of %zu bytes %s").
SYNC_TOO_LARGE = (f"exceeds the {megabytes(MAX_PAYLOAD)} limit of synchronous invocations; "
                  "not sent")
ASYNC_TOO_LARGE = (f"exceeds the {megabytes(MAX_ASYNC_PAYLOAD)} limit of asynchronous "
                   "invocations; not sent")


def payload_too_large(size: int, asynchronous: bool = False) -> str:
    return f"payload of {size} bytes {ASYNC_TOO_LARGE if asynchronous else SYNC_TOO_LARGE}"


def event_too_large(what: str, size: int):
    """(body, log note) of the 413 a fetch is answered with when its request body or its event is
    beyond the synchronous limit (nothing is invoked; counted as too_large)."""
    limit = megabytes(MAX_PAYLOAD)
    return (f"413 Request Entity Too Large: the Lambda event would exceed {limit}\n".encode(),
            f"{what} of {size} bytes exceeds the {limit} limit of synchronous invocations: "
            "answered 413 without invoking")


def answer_too_large(detail: str) -> str:
    """The reason of an answer refused for its size (kind "too_large"); detail: what gave it away,
    "Content-Length 1073741824" or "more than 6356992 bytes"."""
    return (f"the answer exceeds the {megabytes(MAX_PAYLOAD)} limit of synchronous invocations "
            f"({detail}; at most {MAX_RESPONSE_BODY} bytes are read): refused, connection closed")
