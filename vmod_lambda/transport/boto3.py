"""The "boto3" transport: boto3's Lambda client, botocore's whole request pipeline (the reference
implementation the direct transport is compared with).

Its calls never yield (they are not multiplexed): a worker runs one at a time. Errors are botocore's
exceptions mapped to InvokeError by errors(), with the same kinds and reasons as the direct
transport's.

Deadline: a call keeps its request.deadline for the whole answer, head included
(boto3_deadline.py: a watchdog thread shuts the call's connection down at the deadline, since
botocore's read timeout is per read), and a stream up to its head, as the direct transport does.

Response streaming: botocore returns the answer's body as an EventStream, whose public interface
yields events that botocore has already decoded. The VMOD decodes the event stream itself
(vmod_lambda.eventstream: every CRC, its limits and its messages, the same for both transports), so
this transport hands it the raw body under that EventStream: urllib3's response, which botocore
keeps as EventStream._raw_stream. That attribute is botocore's, not a public one; the direct
transport (the default) does not need it.
"""

import contextlib
import socket
import time

from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                 ReadTimeoutError)

from ..credentials import StsError
from . import boto3_deadline
from ..limits import MAX_RESPONSE_BODY
from ..outcomes import answer_too_large
from .base import (CLOSED_BEFORE_ANSWER, NO_CREDENTIALS, NO_HOOKS, InvokeError, InvokeRequest,
                   InvokeResult, ResponseStream, StreamResult, Transport, cannot_connect,
                   connect_timed_out, function_error_reason, read_timed_out, service_error,
                   stream_broke, stream_timed_out)

__all__ = ["Boto3Transport"]


def _kwargs(request: InvokeRequest) -> dict:
    """The boto3 call's parameters for request."""
    kwargs = {"FunctionName": request.function_name, "InvocationType": request.invocation_type,
              "Payload": request.payload}
    if request.qualifier:
        kwargs["Qualifier"] = request.qualifier
    if request.client_context:
        kwargs["ClientContext"] = request.client_context
    if request.log_type:
        kwargs["LogType"] = request.log_type
    if request.tenant_id:
        # A member of botocore's Invoke model (TenantId, header X-Amz-Tenant-Id), signed.
        kwargs["TenantId"] = request.tenant_id
    if request.trace_id:
        # Not a member of the model: taken out of the parameters and sent as a header by the
        # handlers invoker._setup_shared registers (trace_params, trace_header below).
        kwargs[TRACE_PARAM] = request.trace_id
    return kwargs


# The call parameter that carries an invocation's X-Amzn-Trace-Id to the handlers below.
TRACE_PARAM = "VmodLambdaTraceId"


def trace_params(params, context, **kwargs):
    """provide-client-params handler of Invoke calls: the trace id out of the parameters (botocore
    would refuse an unknown one) into the call's context. Returns None (keeps params)."""
    trace_id = params.pop(TRACE_PARAM, None)
    if trace_id:
        context[TRACE_PARAM] = trace_id


def trace_header(params, context, **kwargs):
    """before-call handler of Invoke calls: the context's trace id as the X-Amzn-Trace-Id header
    (botocore does not sign it: auth.py, SIGNED_HEADERS_BLACKLIST)."""
    trace_id = context.get(TRACE_PARAM)
    if trace_id:
        params.setdefault("headers", {})["X-Amzn-Trace-Id"] = trace_id


class Boto3Transport(Transport):
    name = "boto3"
    multiplexed = False

    def __init__(self, client, connect_timeout: float, read_timeout: float, hooks=NO_HOOKS):
        self.client = client            # boto3's Lambda client, thread-safe
        # Its connections attach to the call's deadline (boto3_deadline.watch): the watchdog
        # shuts one down at the deadline, however slowly the answer's head trickles.
        boto3_deadline.install(client)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # Not used: every call of this transport runs whole on a worker that the pool already
        # counts as blocked (_handoff.pyx runs non-multiplexed jobs that way).
        self.hooks = hooks

    def invoke_gen(self, request: InvokeRequest, rec):
        """The call; a generator for the interface's sake: it never yields. boto3's client has one
        read timeout for every call: request.timeout is not applied; request.deadline is (see
        _deadline())."""
        return self._invoke(request, rec)
        yield   # pragma: no cover - a generator

    def _invoke(self, request: InvokeRequest, rec) -> InvokeResult:
        kwargs = _kwargs(request)
        with self.errors(rec), self._deadline(request.deadline) as call:
            try:
                resp = self._call(kwargs, request.deadline)
            except EndpointConnectionError:
                if call is not None and call.expired:
                    raise
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                resp = self._call(kwargs, request.deadline)
        body = resp["_body"]
        function_error = rec.answer(resp.get("StatusCode"), _headers(resp), len(body))
        if function_error:
            raise InvokeError("function_error", function_error_reason(function_error, body),
                              rec.request_id, resp.get("StatusCode"))
        return InvokeResult(body, resp.get("StatusCode", 200), rec)

    def _call(self, kwargs: dict, deadline=None) -> dict:
        resp = self.client.invoke(**kwargs)
        stream = resp.get("Payload")
        resp["_body"] = self._read_payload(resp, stream, deadline) if stream is not None else b""
        return resp

    def _read_payload(self, resp: dict, stream, deadline) -> bytes:
        """The answer's body, read as the direct transport reads it: refused beyond
        MAX_RESPONSE_BODY (limits.py) as soon as its Content-Length says so or the bytes read pass
        it, and never read past the call's deadline (time.monotonic(); None: none), however slowly
        it trickles: botocore's read timeout is per read, so each read here waits at most until
        the deadline, and takes what has come (read1). Either way the connection is closed (not
        returned to urllib3's pool). botocore's StreamingBody.read() has neither bound: its
        urllib3 response (StreamingBody._raw_stream, botocore's attribute) is read instead. Errors
        are InvokeError, or botocore's and urllib3's exceptions for errors() to map."""
        import urllib3.exceptions as u3
        meta = resp.get("ResponseMetadata", {})
        request_id = meta.get("RequestId") or None
        raw = getattr(stream, "_raw_stream", None)
        length = meta.get("HTTPHeaders", {}).get("content-length")
        try:
            length = int(length) if length is not None else None
        except ValueError:
            length = None
        if length is not None and length > MAX_RESPONSE_BODY:
            stream.close()
            raise InvokeError("too_large", answer_too_large(f"Content-Length {length}"),
                              request_id)
        if raw is None:         # pragma: no cover - another botocore
            return stream.read()
        # read1: what has come, one read (urllib3 2); urllib3 1 has none: its read() fills amt.
        read = getattr(raw, "read1", None) or raw.read
        body = bytearray()
        done = False
        try:
            while True:
                if deadline:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise InvokeError("timeout", read_timed_out(self.read_timeout),
                                          request_id)
                    # (urllib3 sets its read timeout on the socket again for the next request)
                    try:
                        stream.set_socket_timeout(min(left, self.read_timeout))
                    except AttributeError:      # pragma: no cover - another urllib3
                        pass
                data = read(65536)
                if not data:
                    break
                body += data
                if len(body) > MAX_RESPONSE_BODY:
                    raise InvokeError("too_large",
                                      answer_too_large(f"more than {MAX_RESPONSE_BODY} bytes"),
                                      request_id)
            done = True
        except (u3.ReadTimeoutError, socket.timeout):
            raise InvokeError("timeout", read_timed_out(self.read_timeout), request_id) from None
        except (u3.HTTPError, OSError) as e:
            raise InvokeError("transport", f"{type(e).__name__}: {e}", request_id) from None
        finally:
            # A connection whose socket the deadline's watchdog may have shut down (the body
            # then looks complete but is cut: urllib3 does not enforce its length for botocore)
            # is dropped too: _deadline() makes the call's outcome its timeout.
            call = boto3_deadline.current()
            if done and (call is None or call.let_go(getattr(raw, "connection", None))):
                raw.release_conn()
            else:
                raw.close()     # not read to its end: the connection is dropped, never reused
        return bytes(body)

    def invoke_stream(self, request: InvokeRequest, rec) -> StreamResult:
        kwargs = _kwargs(request)
        # The deadline holds up to the answer's head (as the direct transport's does); the
        # stream's reads have the read timeout between two of its bytes.
        with self.errors(rec), self._deadline(request.deadline) as call:
            try:
                resp = self.client.invoke_with_response_stream(**kwargs)
            except EndpointConnectionError:
                if call is not None and call.expired:
                    raise
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                resp = self.client.invoke_with_response_stream(**kwargs)
            if call is not None and call.expired:
                # Its head came as the deadline passed: the connection is shut down, dropped.
                resp["EventStream"]._raw_stream.close()
        rec.answer(resp.get("StatusCode", 200), _headers(resp), 0)   # (body: by its reader)
        # The raw body: the event stream is decoded by vmod_lambda.eventstream (see above).
        raw = _Urllib3Stream(resp["EventStream"]._raw_stream, self.read_timeout)
        return StreamResult(raw, resp.get("StatusCode", 200), resp.get("ResponseStreamContentType"),
                            rec)

    @contextlib.contextmanager
    def _deadline(self, deadline):
        """The call under it keeps deadline (time.monotonic(); None: none), its answer's head
        included: boto3_deadline's watchdog shuts its connection down at the deadline, and
        whatever that made botocore or urllib3 raise becomes the call's timeout. Yields the
        boto3_deadline.Call (None without a deadline)."""
        with boto3_deadline.watch(deadline) as call:
            try:
                yield call
            except Exception as e:
                if call is None or not call.expired:
                    raise
                if isinstance(e, InvokeError) and e.kind == "timeout":
                    raise
                raise InvokeError("timeout", read_timed_out(self.read_timeout),
                                  getattr(e, "request_id", None)) from None
            if call is not None and call.expired:
                # The deadline came before the call ended: whatever was read may be cut short
                # by the shutdown (a body read "to its end" included).
                raise InvokeError("timeout", read_timed_out(self.read_timeout))

    @contextlib.contextmanager
    def errors(self, rec=None):
        """Map botocore's exceptions to InvokeError (and note a service error's status and request
        id in rec): this transport's calls, plain and streamed."""
        try:
            yield
        except ClientError as e:
            if rec is not None:
                meta = e.response.get("ResponseMetadata", {})
                rec.status = meta.get("HTTPStatusCode")
                rec.request_id = meta.get("RequestId") or None
            raise service_error(e.response) from None
        except ReadTimeoutError:
            raise InvokeError("timeout", read_timed_out(self.read_timeout)) from None
        except ConnectTimeoutError:
            raise InvokeError("timeout", connect_timed_out(self.connect_timeout)) from None
        except EndpointConnectionError:
            raise InvokeError("transport",
                              cannot_connect(self.client.meta.endpoint_url)) from None
        except ConnectionClosedError:
            raise InvokeError("transport", CLOSED_BEFORE_ANSWER) from None
        except NoCredentialsError:
            raise InvokeError("credentials", NO_CREDENTIALS) from None
        except StsError as e:
            # The object's role could not be assumed (credentials.py): nothing was sent.
            raise InvokeError("sts", str(e)) from None
        except BotoCoreError as e:
            raise InvokeError("transport", f"{type(e).__name__}: {e}") from None


class _Urllib3Stream(ResponseStream):
    """The event-stream body under botocore's EventStream: urllib3's HTTPResponse."""

    def __init__(self, raw, read_timeout: float):
        self.raw = raw
        self.read_timeout = read_timeout

    def chunks(self, amt: int = 65536):
        import urllib3.exceptions as u3
        raw = self.raw
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
            raise InvokeError("timeout", stream_timed_out(self.read_timeout)) from None
        except (u3.HTTPError, OSError, ValueError) as e:
            raise InvokeError("transport", stream_broke(f"{type(e).__name__}: {e}")) from None

    def release_conn(self):
        self.raw.release_conn()

    def close(self):
        self.raw.close()


def _headers(resp: dict) -> dict:
    """The answer's headers as botocore got them, by lower-case name (InvocationRecord.answer()
    reads its x-amz-* headers from them, as it does for the direct transport)."""
    return {k.lower(): v for k, v in resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).items()}
