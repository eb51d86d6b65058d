"""An Invoker (vmod_lambda.invoker) of a local endpoint, and reading a response stream to its end:
what the transport tests (unit/test_invoker.py, compiled/test_direct.py, compiled/test_tls.py, ...)
share."""

from lambda_emulator.eventstream import invoke_complete, payload_chunk
from vmod_lambda import eventstream
from vmod_lambda.config import TRANSPORTS, validate_backend
from vmod_lambda.invoker import Invoker

__all__ = ["STREAM_BODY", "make_invoker", "read_stream"]

# An InvokeWithResponseStream body: two payload chunks, then the end.
STREAM_BODY = payload_chunk(b"hello ") + payload_chunk(b"stream") + invoke_complete()


def make_invoker(url, transport=TRANSPORTS[0], **kw) -> Invoker:
    """The Invoker of a backend object "fn" for function my-fn (or function_name=) at url."""
    return Invoker(validate_backend("fn", kw.pop("function_name", "my-fn"), "us-east-1",
                                    endpoint_url=url, transport=transport, **kw))


def read_stream(inv, payload=b"{}"):
    """(payload bytes, InvokeComplete event) of an InvokeWithResponseStream call of inv."""
    res = inv.invoke_stream(payload)
    decoder = eventstream.LambdaStream()
    data, complete = bytearray(), None
    for raw in inv.read_stream(res.raw, 7):
        for ev in decoder.feed(raw):
            if ev.kind == "chunk":
                data += ev.data
            else:
                complete = ev
    decoder.close()
    res.raw.release_conn()
    return bytes(data), complete
