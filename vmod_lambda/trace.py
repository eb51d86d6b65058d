"""The X-Amzn-Trace-Id and X-Amz-Tenant-Id headers of an invocation (vmod_lambda.vcc: *trace*,
*tenant_header*, ``invoke(tenant_id)``).

Trace propagation: the request's own X-Amzn-Trace-Id is sent unchanged when it is a header-safe
value; else one is derived from a W3C traceparent (``00-<32 hex>-<16 hex>-<2 hex>``); else none.
A malformed traceparent (or X-Amzn-Trace-Id) is never sent. Like botocore (auth.py,
SIGNED_HEADERS_BLACKLIST), neither transport signs X-Amzn-Trace-Id: the X-Ray daemon and proxies
may rewrite it.

Tenant ids: what the Invoke API's TenantId member accepts (botocore's Lambda service model,
shape TenantId: 1 to 256 characters of ``[a-zA-Z0-9._:/=+\\-@ ]``).
"""

import re
from typing import Optional, Tuple

__all__ = ["trace_header", "tenant_problem", "TRACE_HEADER", "TENANT_HEADER", "TENANT_MAX"]

TRACE_HEADER = "X-Amzn-Trace-Id"
TENANT_HEADER = "X-Amz-Tenant-Id"
TENANT_MAX = 256
MAX_TRACE = 1024                # a trace header beyond this is not a trace header

_traceparent = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})").fullmatch
# Printable ASCII without the characters that would break the header or the log record.
_safe = re.compile(r"[\x21-\x7e]+").fullmatch
_tenant = re.compile(r"[a-zA-Z0-9._:/=+\-@ ]+").fullmatch


def trace_header(amzn: Optional[str], traceparent: Optional[str]) -> Tuple[Optional[str],
                                                                           Optional[str]]:
    """(the X-Amzn-Trace-Id value to send or None, the problem to log or None) for a request
    whose X-Amzn-Trace-Id and traceparent headers are these (None: absent)."""
    if amzn is not None:
        if 0 < len(amzn) <= MAX_TRACE and _safe(amzn):
            return amzn, None
        return None, "X-Amzn-Trace-Id is not a header-safe value: not sent"
    if traceparent is None:
        return None, None
    tp = traceparent.strip(" \t")
    m = _traceparent(tp) if len(tp) == 55 else None
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        shown = "".join(c if "\x20" <= c <= "\x7e" else "?" for c in traceparent[:64])
        return None, f"malformed traceparent \"{shown}\" ignored (no X-Amzn-Trace-Id sent)"
    trace_id, parent, flags = m.groups()
    return (f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={parent};"
            f"Sampled={int(flags, 16) & 1}"), None


def tenant_problem(value: Optional[str]) -> Optional[str]:
    """Why value cannot be sent as a tenant id (None: it can)."""
    if value is None or value == "":
        return "is empty"
    if len(value) > TENANT_MAX:
        return f"is {len(value)} characters long (at most {TENANT_MAX})"
    if not _tenant(value):
        return ("has a character Lambda does not accept (letters, digits, space and "
                "._:/=+-@ only)")
    return None
