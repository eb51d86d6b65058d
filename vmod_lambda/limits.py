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

# What vmod-lambda reads of an endpoint's HTTP response head (status line and headers) before it
# gives up on it, in both parsers of the direct transport (direct.py, _netio.pyx).
MAX_RESPONSE_HEAD = 64 * 1024


def megabytes(n: int) -> str:
    """A limit as the messages write it: "6 MB"."""
    return f"{n // MB} MB"
