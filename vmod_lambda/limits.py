"""The limits of an invocation, each written once.

Every module that checks one of these takes it from here: the Python side (invoker.py, fetch.py,
direct.py) by import, the Cython modules (_vmod.pyx, _director.pyx, _netio.pyx) by copying it into a
C variable when they are imported. The messages that name a limit are built from it (outcomes.py).
"""

MB = 1024 * 1024

# Lambda's invocation payload quotas (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
MAX_PAYLOAD = 6 * MB                # synchronous (RequestResponse): the request and the response
MAX_ASYNC_PAYLOAD = 1 * MB          # asynchronous (Event)

# A backend fetch's request body beyond this is not kept: its event could not be sent anyway
# (answered 413 without invoking, see fetch.too_large()).
MAX_REQUEST_BODY = MAX_PAYLOAD

# The most of a RequestResponse answer's body either transport reads (Lambda answers at most 6 MB,
# 6291556 bytes in its own error message; the rest is room for framing, e.g. the JSON of an error
# answer): beyond it the answer is refused as soon as its Content-Length says so or the bytes read
# pass it (chunked, or up to the end of the connection), the connection is closed and the call
# fails (outcomes.py, "too_large"). Response streams (InvokeWithResponseStream) are not capped by it.
MAX_RESPONSE_BODY = MAX_PAYLOAD + 64 * 1024

# What vmod-lambda reads of an endpoint's HTTP response head (status line and headers) before it
# gives up on it, in both parsers of the direct transport (direct.py, _netio.pyx).
MAX_RESPONSE_HEAD = 64 * 1024


def megabytes(n: int) -> str:
    """A limit as the messages write it: "6 MB"."""
    return f"{n // MB} MB"
