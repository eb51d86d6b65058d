"""The worker process side: runs a handler as Lambda's Python runtime (awslambdaric) would.

A worker imports the handler module once (the cold start), then serves one invocation at a time,
sent down its pipe by workers.FunctionPool. What a handler writes to stdout/stderr (file descriptors
1 and 2, so C code and subprocesses too) and logs with `logging` goes to the invocation's log.

Handlers use streamify_response, ResponseStream and HttpResponseStream from here (also exported by
the lambda_emulator package): see the package docstring.
"""

import json
import logging
import os
import queue
import sys
import threading
import time
import traceback

from .config import split_handler
from .eventstream import HTTP_INTEGRATION_CONTENT_TYPE, PRELUDE_DELIMITER
from .faults import check_fault
from .limits import MAX_RESPONSE_BYTES, MAX_STREAM_BYTES, STREAM_CHUNK

__all__ = ["streamify_response", "ResponseStream", "HttpResponseStream", "LambdaContext"]


class _Fault(Exception):
    """A runtime error with a Lambda error type (Runtime.ImportModuleError, ...)."""

    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code",
                 "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


def _obj_from_dict(cls, data):
    if data is None:
        return None
    obj = cls()
    for name in cls.__slots__:
        setattr(obj, name, data.get(name) if isinstance(data, dict) else None)
    return obj


class LambdaContext:
    """The handler's context argument, with the attributes of Lambda's Python runtime (as there,
    memory_limit_in_mb is a string)."""

    def __init__(self, request_id, function_name, function_version, invoked_function_arn,
                 memory_limit_in_mb, log_group_name, log_stream_name, deadline_ms,
                 client_context=None, identity=None):
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.tenant_id = None
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, identity or {})
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))
        sys.stdout.flush()

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},function_name="
                f"{self.function_name},function_version={self.function_version}])")


def streamify_response(handler):
    """Mark handler(event, response_stream, context) as a response-streaming handler, as Node's
    awslambda.streamifyResponse does."""
    handler._vmod_lambda_streaming = True
    return handler


def _is_streaming(handler):
    return bool(getattr(handler, "_vmod_lambda_streaming", False))


class _StreamTooLarge(Exception):
    pass


class ResponseStream:
    """The response_stream of a streaming handler: write() sends bytes to the caller as they come.

    Streamed (InvokeWithResponseStream), each write goes to the emulator at once (in pieces of at
    most 64 KB) and blocks while the caller does not read. Buffered (plain Invoke), writes are
    collected into the payload.
    """

    def __init__(self, conn=None, limit=MAX_RESPONSE_BYTES):
        self._conn = conn              # None: buffered
        self._parts = []
        self._limit = limit
        self.bytes_written = 0
        self.content_type = "application/octet-stream"
        self.closed = False

    def set_content_type(self, content_type):
        self.content_type = str(content_type)

    setContentType = set_content_type

    def write(self, data):
        if self.closed:
            raise ValueError("write to a closed response stream")
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"response_stream.write() takes bytes or str, not "
                            f"{type(data).__name__}")
        data = bytes(data)
        self.bytes_written += len(data)
        if self.bytes_written > self._limit:
            raise _StreamTooLarge(self.bytes_written)
        if self._conn is None:
            self._parts.append(data)
            return len(data)
        for i in range(0, len(data), STREAM_CHUNK):
            self._conn.send(("chunk", data[i:i + STREAM_CHUNK]))
        return len(data)

    def close(self):
        self.closed = True

    end = close

    def fault(self, kind, **options):
        """Test hook of the emulator (no such thing in Lambda): see lambda_emulator/faults.py."""
        check_fault(kind)
        if self._conn is not None:
            self._conn.send(("fault", kind, options))

    def _payload(self):
        return b"".join(self._parts)


class HttpResponseStream:
    """awslambda.HttpResponseStream: from_(stream, prelude) starts an HTTP-integration response."""

    CONTENT_TYPE = HTTP_INTEGRATION_CONTENT_TYPE

    @classmethod
    def from_(cls, stream, prelude):
        """Write the prelude ({statusCode, headers, cookies} as JSON, then 8 NUL bytes) and return
        the stream, to which the handler then writes the body."""
        stream.set_content_type(cls.CONTENT_TYPE)
        stream.write(json.dumps(prelude, separators=(",", ":")).encode("utf-8") + PRELUDE_DELIMITER)
        return stream


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record):
        record.aws_request_id = self.request_id
        return True


def _decimal_serializer(o):
    import decimal
    if isinstance(o, decimal.Decimal):
        return float(o)
    raise TypeError(repr(o) + " is not JSON serializable")


def _max_rss_mb():
    try:
        import resource
        return max(1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    except (ImportError, OSError):
        return 0


def _fault_result(exc, request_id):
    """Lambda's error object for an exception raised by user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and frames[0].filename == __file__:
        frames = frames[1:]
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": request_id,
            "stackTrace": traceback.format_list(frames)}


def _error_log_lines(error):
    """What Lambda's Python runtime logs for an error result."""
    desc = "[ERROR]"
    if error.get("errorType"):
        desc += " " + error["errorType"]
    if error.get("errorMessage"):
        desc += (":" if error.get("errorType") else "") + " " + error["errorMessage"]
    lines = [desc]
    if error.get("stackTrace") is not None:
        lines.append("Traceback (most recent call last):")
        for element in error["stackTrace"]:
            lines.extend(element.splitlines() if element else [""])
    return "\n".join(lines) + "\n"


def _load_handler(handler):
    import importlib
    module_name, attr = split_handler(handler)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise _Fault("Runtime.ImportModuleError",
                     f"Unable to import module '{module_name}': {e}") from None
    except SyntaxError as e:
        raise _Fault("Runtime.UserCodeSyntaxError",
                     f"Syntax error in module '{module_name}': {e}") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if obj is None or not callable(obj):
        raise _Fault("Runtime.HandlerNotFound",
                     f"Handler '{attr}' missing on module '{module_name}'")
    return obj


class _WorkerRuntime:
    """Main loop of a worker process. Messages from the emulator: invocation dicts; answers:
    ("ready", init_ms, rss) | ("init_error", error, rss) once, then per invocation
    ("ok", payload bytes, rss) | ("error", error, rss) | ("too_large", limit, rss); a streaming
    invocation sends ("chunk", bytes) and ("fault", kind, options) messages before its answer."""

    def __init__(self, conn, spec):
        self.conn = conn
        self.spec = spec
        self.handler = None
        self.log_filter = _RequestIdFilter()

    def run(self):
        self._setup_process()
        start = time.perf_counter()
        try:
            self.handler = _load_handler(self.spec["handler"])
        except _Fault as f:
            self._init_failed({"errorMessage": f.message, "errorType": f.error_type,
                               "requestId": "", "stackTrace": []})
            return
        except Exception as e:
            self._init_failed(_fault_result(e, ""))
            return
        init_ms = (time.perf_counter() - start) * 1000.0
        self._flush()
        self.conn.send(("ready", init_ms, _max_rss_mb()))
        requests = queue.SimpleQueue()
        threading.Thread(target=self._read_requests, args=(requests,), name="emulator-reader",
                         daemon=True).start()
        while True:
            msg = requests.get()
            reply = self._invoke(msg)
            self._flush()
            self.conn.send(reply)

    def _read_requests(self, requests):
        # The emulator closing its end of the pipe (or dying) ends the worker, even mid-handler.
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)
            requests.put(msg)

    def _setup_process(self):
        spec = self.spec
        try:
            os.setsid()       # own process group: killed as a group, no terminal signals
        except (AttributeError, OSError):
            pass
        fd = os.open(spec["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                          closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                          closefd=False)
        os.environ.update(spec["environment"])
        for p in reversed(spec["sys_path"]):
            if p in sys.path:
                sys.path.remove(p)
            sys.path.insert(0, p)
        handler = logging.StreamHandler(sys.stdout)
        formatter = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
        handler.addFilter(self.log_filter)
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(handler)
        level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
        if level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"):
            root.setLevel({"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level))

    def _init_failed(self, error):
        sys.stdout.write(_error_log_lines(error))
        self._flush()
        self.conn.send(("init_error", error, _max_rss_mb()))

    @staticmethod
    def _flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass

    def _invoke(self, msg):
        spec = self.spec
        request_id = msg["request_id"]
        self.log_filter.request_id = request_id
        os.environ["AWS_LAMBDA_FUNCTION_VERSION"] = msg["version"]
        context = LambdaContext(
            request_id, spec["name"], msg["version"], msg["arn"], str(spec["memory_size"]),
            spec["environment"]["AWS_LAMBDA_LOG_GROUP_NAME"],
            spec["environment"]["AWS_LAMBDA_LOG_STREAM_NAME"], msg["deadline_ms"],
            client_context=msg.get("client_context"))
        stream = None
        try:
            event = json.loads(msg["payload"] or b"{}")
            if _is_streaming(self.handler):
                if msg.get("stream"):
                    stream = ResponseStream(self.conn, MAX_STREAM_BYTES)
                else:
                    stream = ResponseStream(None, MAX_RESPONSE_BYTES)
                self.handler(event, stream, context)
                stream.close()
                if msg.get("stream"):
                    return ("ok", b"", _max_rss_mb())
                return ("ok", stream._payload(), _max_rss_mb())
            result = self.handler(event, context)
        except _StreamTooLarge:
            return ("too_large", stream._limit, _max_rss_mb())
        except Exception as e:
            error = _fault_result(e, request_id)
            sys.stdout.write(_error_log_lines(error))
            return ("error", error, _max_rss_mb())
        try:
            # Python 3.12+ runtimes no longer escape non-ASCII characters in the response.
            payload = json.dumps(result, default=_decimal_serializer,
                                 ensure_ascii=sys.version_info < (3, 12)).encode("utf-8")
        except Exception as e:
            error = {"errorMessage": f"Unable to marshal response: {e}",
                     "errorType": "Runtime.MarshalError", "requestId": request_id,
                     "stackTrace": []}
            sys.stdout.write(_error_log_lines(error))
            return ("error", error, _max_rss_mb())
        if len(payload) > MAX_RESPONSE_BYTES:
            return ("too_large", MAX_RESPONSE_BYTES, _max_rss_mb())
        return ("ok", payload, _max_rss_mb())


def _worker_main(conn, spec):
    _WorkerRuntime(conn, spec).run()
