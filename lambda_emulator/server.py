"""The Invoke API server: Lambda's HTTP API on loopback, in Lambda's wire format.

  POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=...]          Invoke
  POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations[?Qualifier=...]
                                                                    InvokeWithResponseStream
  GET /emulator/stats, POST /emulator/reset                                     (tests only)

Requests are validated as Lambda does (invocation and log types, payload limits, function name and
qualifier, JSON payload, client context); errors answer with Lambda's status, x-amzn-ErrorType and
JSON body, so that botocore raises the same exceptions. Running the invocation is the Emulator's
(emulator.py); the event stream of a streamed answer is written by eventstream.StreamSender.
"""

import base64
import binascii
import json
import logging
import re
import socket
import socketserver
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .eventstream import EVENTSTREAM_CONTENT_TYPE, StreamAborted, StreamSender, invoke_complete
from .limits import (KEEPALIVE_IDLE_TIMEOUT, MAX_DRAIN_BYTES, MAX_EVENT_REQUEST_BYTES,
                     MAX_REQUEST_BYTES, STREAM_CHUNK, TAIL_BYTES)
from .workers import Invocation

__all__ = ["Server", "Server6", "API_VERSION", "STREAM_API_VERSION"]

log = logging.getLogger("lambda_emulator")

API_VERSION = "2015-03-31"
STREAM_API_VERSION = "2021-11-15"
# FunctionName as the Invoke API accepts it: name, name:qualifier, partial or full ARN.
_INVOKE_NAME = re.compile(
    r"^(?:arn:(?:aws[a-zA-Z-]*)?:lambda:)?(?:(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d:)?"
    r"(?:\d{12}:)?(?:function:)?(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9_-]+))?$")
_QUALIFIER = re.compile(r"^(?:\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9_$-]{1,128})$")
_INVOKE_PATH = re.compile(rf"^/{API_VERSION}/functions/(?P<name>[^/]+)/invocations/?$")
_STREAM_PATH = re.compile(
    rf"^/{STREAM_API_VERSION}/functions/(?P<name>[^/]+)/response-streaming-invocations/?$")
_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_STREAM_INVOCATION_TYPES = ("RequestResponse", "DryRun")
_LOG_TYPES = ("None", "Tail")


class _ClientError(Exception):
    """Answer with a Lambda API error (status, x-amzn-ErrorType, JSON body)."""

    def __init__(self, status, code, message, message_key="message", close=False, headers=(),
                 **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = {"Type": "User", message_key: message, **extra}
        self.close = close
        self.headers = list(headers)


def _error_body(status, code, message, message_key="message"):
    kind = "Service" if status >= 500 else "User"
    return {"Type": kind, message_key: message}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, emulator):
        self.emulator = emulator
        super().__init__(address, _RequestHandler)

    def server_bind(self):
        # HTTPServer.server_bind() would look the name up (getfqdn): not needed, not wanted.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)) or \
                (isinstance(exc, OSError) and self.emulator._stopping):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.exception("error serving %s", client_address)


class Server6(Server):
    address_family = socket.AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vmod-lambda-emulator/0.1"
    # TCP_NODELAY (socketserver sets it in setup()): a streamed answer goes out as the function
    # writes it, in small pieces; with Nagle's algorithm a piece written while the previous one
    # is unacknowledged waits for the client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    timeout = KEEPALIVE_IDLE_TIMEOUT
    request_id = None

    # -- plumbing

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        self.server.emulator._connection_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.emulator._connection_closed(self.connection)

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        log.info("%s \"%s\" %s", self.address_string(), self.requestline, code)

    def send_error(self, code, message=None, explain=None):
        """BaseHTTPRequestHandler's own errors (malformed request, unsupported method), as JSON."""
        self.request_id = str(uuid.uuid4())
        if self.request_version == "HTTP/0.9":     # unparsable request line: still a status line
            self.request_version = "HTTP/1.0"
        short = self.responses.get(code, ("Error",))[0]
        name = re.sub(r"[^A-Za-z]", "", short) + "Exception"
        try:
            self._send(code, _error_body(code, name, message or short),
                       headers=[("x-amzn-ErrorType", name)], close=True)
        except OSError:
            self.close_connection = True

    def _send(self, status, body=b"", headers=(), content_type="application/json", close=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("x-amzn-RequestId", self.request_id)
        if status != 204 and status >= 200:
            if body or content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and self.command != "HEAD" and status != 204:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_client_error(self, err):
        self._send(err.status, err.body, headers=[("x-amzn-ErrorType", err.code)] + err.headers,
                   close=err.close)

    def _read_body(self):
        """The request body (b"" if none). Over MAX_DRAIN_BYTES: 413 and close."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise _ClientError(501, "NotImplementedException",
                                   f"Transfer-Encoding {te} is not supported", close=True)
            return self._read_chunked()
        cl = self.headers.get("Content-Length")
        if cl is None:
            if self.command in ("POST", "PUT", "PATCH"):
                raise _ClientError(411, "LengthRequiredException",
                                   "A Content-Length header is required", close=True)
            return b""
        try:
            length = int(cl)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _ClientError(400, "BadRequestException", f"Invalid Content-Length {cl[:40]!r}",
                               close=True) from None
        if length > MAX_DRAIN_BYTES:
            raise _ClientError(413, "RequestTooLargeException", _too_large_message(
                MAX_REQUEST_BYTES, "InvokeFunction"), close=True)
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise ConnectionResetError("client closed the connection before sending the body")
        return data

    def _read_chunked(self):
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ClientError(400, "BadRequestException", "Malformed chunked body",
                                   close=True) from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass           # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_DRAIN_BYTES:
                raise _ClientError(413, "RequestTooLargeException", _too_large_message(
                    MAX_REQUEST_BYTES, "InvokeFunction"), close=True)
            data = self.rfile.read(size)
            if len(data) < size:
                self.close_connection = True
                raise ConnectionResetError("client closed the connection mid-body")
            chunks.append(data)
            self.rfile.readline(3)

    # -- dispatch

    def _dispatch(self):
        self.request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
            self._route(body)
        except _ClientError as err:
            self._send_client_error(err)
        except (ConnectionError, socket.timeout, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("internal error answering %s", self.requestline)
            self.close_connection = True
            try:
                self._send(500, _error_body(500, "ServiceException", "Internal emulator error",
                                            "Message"),
                           headers=[("x-amzn-ErrorType", "ServiceException")], close=True)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _dispatch

    def _route(self, body):
        parts = urlsplit(self.path)
        path = parts.path
        emulator = self.server.emulator
        if path in ("/emulator/stats", "/emulator/reset"):
            wanted = "GET" if path == "/emulator/stats" else "POST"
            if self.command != wanted and not (wanted == "GET" and self.command == "HEAD"):
                raise _ClientError(405, "MethodNotAllowedException",
                                   f"{path} only accepts {wanted}", headers=[("Allow", wanted)])
            if path == "/emulator/reset":
                emulator.reset()
            self._send(200, emulator.stats())
            return
        match = _INVOKE_PATH.match(path)
        if match and self.command == "POST":
            self._invoke(unquote(match.group("name")), parse_qs(parts.query), body)
            return
        if not match:
            match = _STREAM_PATH.match(path)
            if match and self.command == "POST":
                self._invoke_stream(unquote(match.group("name")), parse_qs(parts.query), body)
                return
        if match:
            raise _ClientError(405, "MethodNotAllowedException",
                               f"{self.command} is not supported on {path}",
                               headers=[("Allow", "POST")])
        raise _ClientError(404, "UnknownOperationException",
                           f"Unknown operation {self.command} {path[:200]}")

    def _invoke(self, function_name, query, body):
        inv_type, log_type, inv = self._prepare(function_name, query, body, _INVOCATION_TYPES)
        emulator = self.server.emulator
        pool = inv.pool
        version_header = [("X-Amz-Executed-Version", inv.version)]
        if inv_type == "DryRun":
            self._send(204, headers=version_header)
            return
        if inv_type == "Event":
            inv.client_context = None
            emulator._submit_event(inv)
            self._send(202, b"", headers=version_header, content_type=None)
            return
        if not emulator._try_begin(pool):
            raise _throttled()
        try:
            outcome = emulator._execute(inv)
        finally:
            emulator._end(pool)
        headers = list(version_header)
        if outcome.function_error:
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        if log_type == "Tail":
            headers.append(("X-Amz-Log-Result", _log_tail(outcome.log)))
        self._send(200, outcome.payload, headers=headers)

    def _invoke_stream(self, function_name, query, body):
        """InvokeWithResponseStream: a chunked 200 of event stream messages, written as the
        function produces its output."""
        inv_type, log_type, inv = self._prepare(function_name, query, body,
                                                _STREAM_INVOCATION_TYPES)
        emulator = self.server.emulator
        pool = inv.pool
        version_header = [("X-Amz-Executed-Version", inv.version)]
        if inv_type == "DryRun":
            self._send(204, headers=version_header)
            return
        if not emulator._try_begin(pool):
            raise _throttled()
        try:
            self.send_response(200)
            self.send_header("x-amzn-RequestId", self.request_id)
            self.send_header("Content-Type", EVENTSTREAM_CONTENT_TYPE)
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in version_header:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()
            sender = StreamSender(self.wfile, self.connection)
            outcome = emulator._execute(inv, sink=sender.on_message)
            if outcome.function_error:
                try:
                    err = json.loads(outcome.payload)
                except ValueError:
                    err = {}
                code = err.get("errorType") if isinstance(err, dict) else None
                if not code:
                    code = ("Sandbox.Timedout" if "Task timed out" in str(err) else "Unhandled")
                complete = invoke_complete(
                    code, outcome.payload.decode("utf-8", "replace"),
                    _log_tail(outcome.log) if log_type == "Tail" else None,
                    corrupt=sender.take_corruption())
            else:
                for i in range(0, len(outcome.payload), STREAM_CHUNK):
                    sender.on_message(("chunk", outcome.payload[i:i + STREAM_CHUNK]))
                complete = invoke_complete(
                    None, None, _log_tail(outcome.log) if log_type == "Tail" else None,
                    corrupt=sender.take_corruption())
            sender.send_frame(complete)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except StreamAborted:
            self.close_connection = True
        except Exception:
            # The head is out: a 500 cannot follow. Cut the stream (the client sees it truncated).
            log.exception("internal error streaming %s", self.requestline)
            self.close_connection = True
        finally:
            emulator._end(pool)

    def _prepare(self, function_name, query, body, invocation_types):
        """Validate an invocation request as Lambda does; (type, log type, Invocation)."""
        emulator = self.server.emulator
        inv_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        log_type = self.headers.get("X-Amz-Log-Type") or "None"
        if inv_type not in invocation_types:
            raise _ClientError(400, "ValidationException", _enum_message(
                inv_type, "invocationType", invocation_types))
        if log_type not in _LOG_TYPES:
            raise _ClientError(400, "ValidationException", _enum_message(
                log_type, "logType", _LOG_TYPES))
        limit, operation = ((MAX_EVENT_REQUEST_BYTES, "InvokeAsync") if inv_type == "Event"
                            else (MAX_REQUEST_BYTES, "InvokeFunction"))
        if len(body) > limit:
            raise _ClientError(413, "RequestTooLargeException",
                               _too_large_message(limit, operation))

        match = _INVOKE_NAME.match(function_name) if len(function_name) <= 256 else None
        if not match:
            raise _ClientError(400, "ValidationException", (
                f"1 validation error detected: Value '{function_name[:256]}' at 'functionName' "
                "failed to satisfy constraint: Member must satisfy regular expression pattern: "
                + _INVOKE_NAME.pattern))
        name, qualifier = match.group("name"), match.group("qualifier")
        query_qualifier = (query.get("Qualifier") or [None])[-1] or None
        if query_qualifier is not None and not _QUALIFIER.match(query_qualifier):
            raise _ClientError(400, "ValidationException", (
                f"1 validation error detected: Value '{query_qualifier[:128]}' at 'qualifier' "
                "failed to satisfy constraint: Member must satisfy regular expression pattern: "
                + _QUALIFIER.pattern))
        if qualifier and query_qualifier and qualifier != query_qualifier:
            raise _ClientError(400, "InvalidParameterValueException",
                               "The derived qualifier from the function name does not match the "
                               "specified qualifier.")
        qualifier = qualifier or query_qualifier
        pool = emulator._pools.get(name)
        arn = emulator.function_arn(name)
        if pool is None:
            missing = arn + (f":{qualifier}" if qualifier else "")
            raise _ClientError(404, "ResourceNotFoundException", f"Function not found: {missing}",
                               message_key="Message")
        version = qualifier if qualifier and qualifier.isdigit() else "$LATEST"
        if qualifier:
            arn += f":{qualifier}"

        if body.strip():
            try:
                json.loads(body)
            except ValueError as e:
                raise _ClientError(400, "InvalidRequestContentException",
                                   "Could not parse request body into json: Could not parse "
                                   f"payload into json: {e}") from None
        client_context = None
        raw_cc = self.headers.get("X-Amz-Client-Context")
        if raw_cc:
            try:
                client_context = json.loads(base64.b64decode(raw_cc, validate=True))
                if not isinstance(client_context, dict):
                    raise ValueError("not an object")
            except (ValueError, binascii.Error):
                raise _ClientError(400, "InvalidRequestContentException",
                                   "Client context must be a valid Base64-encoded JSON object."
                                   ) from None

        inv = Invocation(request_id=self.request_id, pool=pool, payload=body, version=version,
                         arn=arn, client_context=client_context)
        return inv_type, log_type, inv


def _throttled():
    return _ClientError(429, "TooManyRequestsException", "Rate Exceeded.",
                        headers=[("Retry-After", "1")],
                        Reason="ReservedFunctionConcurrentInvocationLimitExceeded")


def _log_tail(log_text):
    return base64.b64encode(log_text.encode("utf-8")[-TAIL_BYTES:]).decode("ascii")


def _too_large_message(limit, operation):
    return f"Request must be smaller than {limit} bytes for the {operation} operation"


def _enum_message(value, member, allowed):
    return (f"1 validation error detected: Value '{value[:64]}' at '{member}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]")
