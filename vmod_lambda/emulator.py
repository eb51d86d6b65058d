"""A local AWS Lambda emulator: the Invoke API on loopback, Python handlers in worker processes.

    python -m vmod_lambda.emulator [--port 9001] [--path DIR] --function NAME=module:handler ...
    python -m vmod_lambda.emulator --config functions.json

boto3 (endpoint_url=...), the AWS CLI (--endpoint-url ...) and the VMOD talk to it as to Lambda:

  POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=...]
       X-Amz-Invocation-Type: RequestResponse (200) | Event (202, runs in the background)
                              | DryRun (204)
       X-Amz-Log-Type: Tail (X-Amz-Log-Result: base64 of the last 4 KB of the invocation's log)
       X-Amz-Client-Context: base64 JSON, handed to the handler as context.client_context
  POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations[?Qualifier=...]
       InvokeWithResponseStream: 200 with an application/vnd.amazon.eventstream body of
       PayloadChunk events and a final InvokeComplete {ErrorCode, ErrorDetails, LogResult}

Signatures are not checked. Errors are sent in Lambda's wire format (status, x-amzn-ErrorType and
JSON body) so that botocore raises the same exceptions as against Lambda; function errors (handler
exception, timeout, crash, oversized response) answer 200 with X-Amz-Function-Error: Unhandled.

Response streaming: a handler decorated with @streamify_response is called as
handler(event, response_stream, context) and writes its response as it goes, like Node's
awslambda.streamifyResponse: response_stream.write(bytes or str), .set_content_type(),
.close(); HttpResponseStream.from_(response_stream, {"statusCode": .., "headers": {..},
"cookies": [..]}) writes the HTTP-integration prelude (JSON, 8 NUL bytes) that function URLs read.
Writes block while the client does not read (the pipe to the worker and the socket fill up), so a
handler can stream any amount from a generator in bounded memory. Invoked with the plain Invoke API,
a streaming handler's output is collected into one payload (6 MB limit). An ordinary handler
invoked with InvokeWithResponseStream has its return value streamed. A handler exception, a timeout
or a crash after the first bytes end the stream with InvokeComplete{ErrorCode, ErrorDetails}.
Fault injection for tests (not in Lambda): response_stream.fault("corrupt_crc", where="message" |
"prelude") damages the next frame's CRC; fault("stall", seconds=S) holds the next frame back;
fault("close") drops the connection without InvokeComplete.

Outside the AWS namespace, for tests: GET /emulator/stats (counters as JSON), POST /emulator/reset.

Each function has its own pool of worker processes (multiprocessing, "forkserver" where available,
else "spawn"), created on demand and reused, at most reserved_concurrency of them (default 10). A
worker imports the handler module once (the cold start), then serves one invocation at a time.
What a handler writes to stdout/stderr (file descriptors 1 and 2, so C code and subprocesses
too) and logs with `logging` goes to the invocation's log. A worker that times out is killed
(with its process group); one that dies is replaced. As with all multiprocessing code, a script
that creates an Emulator must guard its entry point with `if __name__ == "__main__":`.

From Python:

    from vmod_lambda.emulator import Emulator, FunctionConfig
    with Emulator({"echo": FunctionConfig("app:echo", path=["examples"])}) as emu:
        boto3.client("lambda", endpoint_url=emu.url, ...).invoke(FunctionName="echo", Payload=b"{}")

Only the standard library is used (and vmod_lambda.eventstream, which is standard library too).
"""

import argparse
import atexit
import base64
import binascii
import datetime
import ipaddress
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from vmod_lambda import eventstream

__all__ = ["Emulator", "FunctionConfig", "EmulatorConfigError", "load_config", "main",
           "streamify_response", "HttpResponseStream", "ResponseStream"]

log = logging.getLogger("vmod_lambda.emulator")
function_log = logging.getLogger("vmod_lambda.emulator.functions")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_SIZE = 128
DEFAULT_RESERVED_CONCURRENCY = 10

API_VERSION = "2015-03-31"
STREAM_API_VERSION = "2021-11-15"
MAX_REQUEST_BYTES = 6291456          # synchronous invocation payload (6 MB)
MAX_EVENT_REQUEST_BYTES = 1048576    # asynchronous invocation payload (1 MB)
MAX_RESPONSE_BYTES = 6291556         # what Lambda's error message names as the maximum
MAX_DRAIN_BYTES = 64 * 1024 * 1024   # larger request bodies are not even read: 413 and close
MAX_STREAM_BYTES = 200 * 1024 * 1024  # a streamed response (Lambda's maximum)
STREAM_CHUNK = 64 * 1024             # the largest PayloadChunk the emulator sends
TAIL_BYTES = 4096                    # X-Amz-Log-Result: the last 4 KB of the log
LOG_KEEP_BYTES = 1024 * 1024         # per invocation, what is kept of a handler's output
INIT_TIMEOUT = 10.0                  # Lambda's limit for the init phase (module import)
KEEPALIVE_IDLE_TIMEOUT = 300.0       # an idle client connection is closed after this
STOP_GRACE = 2.0                     # SIGTERM to a worker, then SIGKILL after this

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
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


class EmulatorConfigError(ValueError):
    """A function declaration, config file or option is invalid; str() says what to fix."""


# --------------------------------------------------------------------------------------------------
# Configuration

@dataclass
class FunctionConfig:
    """One emulated function; handler is "module:function" (or Lambda's "module.function")."""
    handler: str
    timeout: float = DEFAULT_TIMEOUT
    memory_size: int = DEFAULT_MEMORY_SIZE
    reserved_concurrency: int = DEFAULT_RESERVED_CONCURRENCY
    environment: dict = field(default_factory=dict)
    path: list = field(default_factory=list)

    _KEYS = ("handler", "timeout", "memory_size", "reserved_concurrency", "environment", "path")

    @classmethod
    def from_dict(cls, spec, base_dir=None):
        """From a config file entry (a dict, or just the handler string); relative path entries
        are taken relative to base_dir."""
        if isinstance(spec, str):
            spec = {"handler": spec}
        if not isinstance(spec, dict):
            raise EmulatorConfigError("a function must be an object or a handler string, "
                                      f"not {spec!r}")
        unknown = sorted(set(spec) - set(cls._KEYS))
        if unknown:
            raise EmulatorConfigError(f"unknown key(s) {', '.join(unknown)} "
                                      f"(known: {', '.join(cls._KEYS)})")
        if "handler" not in spec:
            raise EmulatorConfigError("\"handler\" is missing")
        kwargs = dict(spec)
        paths = kwargs.get("path", [])
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise EmulatorConfigError("\"path\" must be a list of directories")
        kwargs["path"] = [os.path.join(base_dir, p) if base_dir else p for p in paths]
        if "environment" in kwargs and kwargs["environment"] is None:
            kwargs["environment"] = {}
        return cls(**kwargs)

    def validated(self, name):
        """Return a checked, normalised copy; raise EmulatorConfigError naming the function."""
        def fail(what):
            raise EmulatorConfigError(f"function {name!r}: {what}")

        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise EmulatorConfigError(f"function name {name!r} must be 1 to 64 letters, digits, "
                                      "'-' or '_'")
        try:
            _split_handler(self.handler)
        except ValueError as e:
            fail(str(e))
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout <= 900:
            fail(f"timeout must be a number of seconds in (0, 900], not {timeout!r}")
        memory = self.memory_size
        if isinstance(memory, bool) or not isinstance(memory, int) or not 128 <= memory <= 10240:
            fail(f"memory_size must be an integer from 128 to 10240 (MB), not {memory!r}")
        conc = self.reserved_concurrency
        if isinstance(conc, bool) or not isinstance(conc, int) or not 0 <= conc <= 1000:
            fail(f"reserved_concurrency must be an integer from 0 to 1000, not {conc!r}")
        env = self.environment or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in env.items()):
            fail("environment must map names to string values")
        if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
            fail("environment has an invalid variable name or value")
        paths = [self.path] if isinstance(self.path, str) else list(self.path or [])
        if not all(isinstance(p, str) and p for p in paths):
            fail("path must be a list of directories")
        return FunctionConfig(handler=self.handler, timeout=float(timeout), memory_size=memory,
                              reserved_concurrency=conc, environment=dict(env),
                              path=[os.path.abspath(p) for p in paths])


def _split_handler(handler):
    """"module:attr" or Lambda's "module.attr" / "dir/module.attr" -> (module, attr)."""
    if not isinstance(handler, str):
        raise ValueError(f"handler must be a string like module:function, not {handler!r}")
    if ":" in handler:
        module, _, attr = handler.partition(":")
    else:
        module, _, attr = handler.rpartition(".")
    module = module.replace("/", ".")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not re.match(rf"^{ident}(\.{ident})*$", module) or not re.match(rf"^{ident}(\.{ident})*$",
                                                                       attr):
        raise ValueError(f"handler {handler!r} is not of the form module:function")
    return module, attr


def load_config(path):
    """Read a JSON config file: {"functions": {NAME: {...} or "module:handler"}, "path": [...]}.
    Returns (functions, paths); relative directories are relative to the file's directory."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise EmulatorConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise EmulatorConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("functions", {}), dict):
        raise EmulatorConfigError(f"config file {path}: expected "
                                  '{"functions": {NAME: {...}}}')
    unknown = sorted(set(data) - {"functions", "path"})
    if unknown:
        raise EmulatorConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    base = os.path.dirname(os.path.abspath(path))
    functions = {}
    for name, spec in data.get("functions", {}).items():
        try:
            functions[name] = FunctionConfig.from_dict(spec, base_dir=base).validated(name)
        except (EmulatorConfigError, TypeError) as e:
            msg = str(e) if str(e).startswith("function ") else f"function {name!r}: {e}"
            raise EmulatorConfigError(f"config file {path}: {msg}") from None
    paths = data.get("path", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise EmulatorConfigError(f"config file {path}: \"path\" must be a list of directories")
    return functions, [os.path.join(base, p) for p in paths]


def _loopback_host(host):
    """The address to bind for host, which must be a loopback address (or "localhost")."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host.strip("[]") if isinstance(host, str) else host)
    except ValueError:
        raise EmulatorConfigError(f"host {host!r} is not an IP address; the emulator only listens "
                                  "on loopback (127.0.0.1, ::1)") from None
    if not addr.is_loopback:
        raise EmulatorConfigError(f"host {host} is not a loopback address; the emulator only "
                                  "listens on loopback (127.0.0.1, ::1)")
    return str(addr)


# --------------------------------------------------------------------------------------------------
# Worker process side: runs the handler, as Lambda's Python runtime (awslambdaric) would.

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
        """Test hook of the emulator (no such thing in Lambda): see the module docstring."""
        if kind not in ("corrupt_crc", "stall", "close"):
            raise ValueError(f"unknown fault {kind!r}")
        if self._conn is not None:
            self._conn.send(("fault", kind, options))

    def _payload(self):
        return b"".join(self._parts)


class HttpResponseStream:
    """awslambda.HttpResponseStream: from_(stream, prelude) starts an HTTP-integration response."""

    CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"

    @classmethod
    def from_(cls, stream, prelude):
        """Write the prelude ({statusCode, headers, cookies} as JSON, then 8 NUL bytes) and return
        the stream, to which the handler then writes the body."""
        stream.set_content_type(cls.CONTENT_TYPE)
        stream.write(json.dumps(prelude, separators=(",", ":")).encode("utf-8") + b"\0" * 8)
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
    module_name, attr = _split_handler(handler)
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


# --------------------------------------------------------------------------------------------------
# Emulator side: worker pools

# Starting, polling and reaping worker processes is serialised: multiprocessing's Process.start()
# polls every child, and two threads reading one forkserver child's exit status would garble it.
_process_lock = threading.Lock()


class _Worker:
    def __init__(self, ctx, spec):
        self.log_path = spec["log_path"]
        self.ready = False
        self.init_ms = None
        self.max_rss_mb = 0
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, spec),
                                   name=f"lambda:{spec['name']}")
        with _process_lock:
            self.process.start()
        child_conn.close()
        self.conn = parent_conn

    def receive(self, timeout):
        """The worker's next message, None on timeout, or ("died", exitcode)."""
        ready = multiprocessing.connection.wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return None
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        return ("died", self.wait_exit(STOP_GRACE))

    def send(self, msg):
        try:
            self.conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def wait_exit(self, timeout):
        """The exit code once the process ended (None if still running after timeout)."""
        if not multiprocessing.connection.wait([self.process.sentinel], timeout):
            return None
        # The sentinel fires as the process exits, a moment before it can be reaped: join.
        with _process_lock:
            self.process.join(STOP_GRACE)
            return self.process.exitcode

    def alive(self):
        return self.wait_exit(0) is None

    def take_log(self):
        """What the worker wrote since the last call (at most LOG_KEEP_BYTES of it)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - LOG_KEEP_BYTES)
                f.seek(start)
                data = f.read()
            os.truncate(self.log_path, 0)
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if start:
            text = f"[... {start} bytes of output not shown ...]\n" + text
        return text

    def terminate(self, grace=0.0):
        """End the worker and its process group: SIGTERM, and SIGKILL after grace seconds."""
        if grace > 0 and self.wait_exit(0) is None:
            self._signal(signal.SIGTERM)
            self.wait_exit(grace)
        self._signal(signal.SIGKILL)      # also whatever the handler started in the group
        self.wait_exit(STOP_GRACE)

    def _signal(self, sig):
        pid = self.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, sig)           # the worker leads its own process group (setsid)
            return
        except (OSError, AttributeError):
            pass
        if self.wait_exit(0) is None:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def close(self):
        """Once terminated: release the pipe and the log file."""
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class _FunctionPool:
    def __init__(self, emulator, name, config):
        self.emulator = emulator
        self.name = name
        self.config = config
        self.slots = threading.Semaphore(config.reserved_concurrency)
        self.lock = threading.Lock()
        self.idle = []            # LIFO: the most recently used worker is reused first
        self.workers = set()
        self.closed = False
        self.seq = 0

    def checkout(self):
        """An idle worker or, if none, a new one (not yet ready). None once the pool is closed."""
        while True:
            with self.lock:
                if self.closed:
                    return None
                worker = self.idle.pop() if self.idle else None
                if worker is None:
                    self.seq += 1
                    seq = self.seq
                    break
            if worker.alive():
                return worker
            self.retire(worker)           # died while idle (a thread of the handler exited?)
        worker = _Worker(self.emulator._mp_context, self.emulator._worker_spec(self, seq))
        with self.lock:
            closed = self.closed
            if not closed:
                self.workers.add(worker)
        if closed:
            self.retire(worker)
            return None
        return worker

    def checkin(self, worker):
        with self.lock:
            if not self.closed and worker in self.workers:
                self.idle.append(worker)
                return
        self.retire(worker)

    def retire(self, worker, grace=0.0):
        """Take a worker out of the pool and end it; returns what it wrote last."""
        with self.lock:
            self.workers.discard(worker)
            if worker in self.idle:
                self.idle.remove(worker)
        worker.terminate(grace)
        output = worker.take_log()
        worker.close()
        return output

    def close(self):
        with self.lock:
            self.closed = True
            idle, busy = list(self.idle), list(self.workers - set(self.idle))
            self.workers.clear()
            self.idle.clear()
        for worker in idle:
            worker.close()                # an idle worker exits on its own when its pipe closes
        # Busy workers are terminated; the invocations waiting for them then clean them up.
        threads = [threading.Thread(target=w.terminate, args=(STOP_GRACE,), daemon=True)
                   for w in idle + busy]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def worker_count(self):
        with self.lock:
            return len(self.workers)


@dataclass
class _Invocation:
    request_id: str
    pool: _FunctionPool
    payload: bytes
    version: str
    arn: str
    client_context: object = None


@dataclass
class _Outcome:
    payload: bytes
    function_error: bool
    log: str


def _lambda_time(t=None):
    """2019-04-04T13:41:31.811Z"""
    dt = datetime.datetime.fromtimestamp(time.time() if t is None else t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _exit_description(exitcode):
    """As Lambda (Go) words a runtime's exit: "exit status 1", "signal: segmentation fault"."""
    if exitcode is None:
        return "unknown"
    if exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        name = signal.strsignal(-exitcode) or f"signal {-exitcode}"
    except (ValueError, AttributeError):
        name = f"signal {-exitcode}"
    return "signal: " + name.lower()


# --------------------------------------------------------------------------------------------------
# HTTP

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


class _Server(ThreadingHTTPServer):
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


class _Server6(_Server):
    address_family = socket.AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vmod-lambda-emulator/0.1"
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
            self.send_header("Content-Type", eventstream.EVENTSTREAM_CONTENT_TYPE)
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in version_header:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()
            sender = _StreamSender(self)
            outcome = emulator._execute(inv, sink=sender.on_message)
            if outcome.function_error:
                try:
                    err = json.loads(outcome.payload)
                except ValueError:
                    err = {}
                code = err.get("errorType") if isinstance(err, dict) else None
                if not code:
                    code = ("Sandbox.Timedout" if "Task timed out" in str(err) else "Unhandled")
                complete = eventstream.invoke_complete(
                    code, outcome.payload.decode("utf-8", "replace"),
                    _log_tail(outcome.log) if log_type == "Tail" else None,
                    corrupt=sender.take_corruption())
            else:
                for i in range(0, len(outcome.payload), STREAM_CHUNK):
                    sender.on_message(("chunk", outcome.payload[i:i + STREAM_CHUNK]))
                complete = eventstream.invoke_complete(
                    None, None, _log_tail(outcome.log) if log_type == "Tail" else None,
                    corrupt=sender.take_corruption())
            sender.send_frame(complete)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _StreamAborted:
            self.close_connection = True
        except Exception:
            # The head is out: a 500 cannot follow. Cut the stream (the client sees it truncated).
            log.exception("internal error streaming %s", self.requestline)
            self.close_connection = True
        finally:
            emulator._end(pool)

    def _prepare(self, function_name, query, body, invocation_types):
        """Validate an invocation request as Lambda does; (type, log type, _Invocation)."""
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

        inv = _Invocation(request_id=self.request_id, pool=pool, payload=body, version=version,
                          arn=arn, client_context=client_context)
        return inv_type, log_type, inv


class _StreamAborted(Exception):
    """The streamed response ended early: the client went away, or a "close" fault."""


class _StreamSender:
    """Writes the event stream of one InvokeWithResponseStream answer (HTTP chunked framing), and
    applies the test faults the handler asked for."""

    def __init__(self, handler):
        self.handler = handler
        self.corrupt = None
        self.stall = 0.0

    def take_corruption(self):
        corrupt, self.corrupt = self.corrupt, None
        return corrupt

    def on_message(self, msg):
        if msg[0] == "fault":
            kind, options = msg[1], msg[2] or {}
            if kind == "corrupt_crc":
                self.corrupt = "prelude" if options.get("where") == "prelude" else "message"
            elif kind == "stall":
                self.stall = float(options.get("seconds", 1.0))
            elif kind == "close":
                try:
                    self.handler.wfile.flush()
                    self.handler.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise _StreamAborted("closed by a fault")
            return
        self.send_frame(eventstream.payload_chunk(msg[1], corrupt=self.take_corruption()))

    def send_frame(self, frame):
        if self.stall:
            stall, self.stall = self.stall, 0.0
            time.sleep(stall)
        try:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.handler.wfile.flush()
        except OSError as e:
            raise _StreamAborted(f"the client went away: {e}") from None


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


# --------------------------------------------------------------------------------------------------
# The emulator

_live_emulators = weakref.WeakSet()


@atexit.register
def _stop_all():
    # Registered after multiprocessing's own exit hook, so it runs first: workers are not daemonic
    # (handlers may start processes) and multiprocessing would otherwise wait for them.
    for emulator in list(_live_emulators):
        try:
            emulator.stop()
        except Exception:
            pass


def _default_start_method():
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class Emulator:
    """The Lambda emulator, in a background thread of this process.

    functions maps names to FunctionConfig (or a "module:handler" string, or a config dict);
    paths are directories added to every function's module search path (before the current
    directory). start() binds and serves; stop() ends everything; also a context manager.
    """

    def __init__(self, functions, host=DEFAULT_HOST, port=0, *, paths=(), region=DEFAULT_REGION,
                 account_id=DEFAULT_ACCOUNT_ID, start_method=None, echo_logs=False):
        self.host = _loopback_host(host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise EmulatorConfigError(f"port must be an integer from 0 to 65535, not {port!r}")
        self._requested_port = port
        self.region = region
        self.account_id = account_id
        self.echo_logs = echo_logs
        self.paths = [os.path.abspath(p) for p in paths] + [os.getcwd()]
        self.functions = {}
        for name, cfg in (functions or {}).items():
            if isinstance(cfg, str):
                cfg = FunctionConfig(handler=cfg)
            elif isinstance(cfg, dict):
                cfg = FunctionConfig.from_dict(cfg)
            elif not isinstance(cfg, FunctionConfig):
                raise EmulatorConfigError(f"function {name!r}: expected a FunctionConfig, not "
                                          f"{type(cfg).__name__}")
            self.functions[name] = cfg.validated(name)
        method = start_method or _default_start_method()
        if method not in ("spawn", "forkserver"):
            raise EmulatorConfigError(f"start_method must be spawn or forkserver, not {method!r}")
        self._mp_context = multiprocessing.get_context(method)
        self._pools = {name: _FunctionPool(self, name, cfg) for name, cfg in self.functions.items()}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counters = self._zero_counters()
        self._in_flight = {name: 0 for name in self.functions}
        self._pending_events = {name: 0 for name in self.functions}
        self._connections = set()
        self._server = None
        self._thread = None
        self._stopping = False
        self._log_dir = None

    # -- public API

    def start(self):
        if self._server is not None:
            return self
        if self._stopping:
            raise RuntimeError("a stopped Emulator cannot be restarted")
        server_cls = _Server6 if ":" in self.host else _Server
        self._server = server_cls((self.host, self._requested_port), self)
        self._log_dir = tempfile.mkdtemp(prefix="vmod-lambda-emulator-")
        _live_emulators.add(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"lambda-emulator:{self.port}", daemon=True)
        self._thread.start()
        log.info("Lambda emulator listening on %s", self.url)
        return self

    def stop(self):
        """Stop serving, close client connections, end all workers. Idempotent."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._idle.notify_all()
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for pool in self._pools.values():
            pool.close()
        if self._thread is not None:
            self._thread.join(5)
        if self._log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)
        _live_emulators.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1] if self._server else self._requested_port

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def function_arn(self, name):
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def stats(self):
        """Counters per function: invocations (accepted to run: synchronous ones past the
        concurrency check, Event ones when queued), errors (function errors), throttles (429s);
        gauges: in_flight, pending_events, workers; connections (TCP connections accepted)."""
        with self._lock:
            out = {key: dict(value) if isinstance(value, dict) else value
                   for key, value in self._counters.items()}
            out["in_flight"] = dict(self._in_flight)
            out["pending_events"] = dict(self._pending_events)
        out["workers"] = {name: pool.worker_count() for name, pool in self._pools.items()}
        return out

    def reset(self):
        """Zero the counters (not the gauges)."""
        with self._lock:
            self._counters = self._zero_counters()

    def wait_idle(self, timeout=30.0):
        """Wait until no invocation runs or is queued; True if so within timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(self._in_flight.values()) or any(self._pending_events.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._idle.wait(remaining)
        return True

    # -- internals

    def _zero_counters(self):
        return {"invocations": {n: 0 for n in self.functions},
                "errors": {n: 0 for n in self.functions},
                "throttles": {n: 0 for n in self.functions},
                "connections": 0}

    def _connection_opened(self, conn):
        with self._lock:
            self._connections.add(conn)
            self._counters["connections"] += 1
            stopping = self._stopping
        if stopping:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connection_closed(self, conn):
        with self._lock:
            self._connections.discard(conn)

    def _try_begin(self, pool):
        """Take a concurrency slot for a synchronous invocation, or count a throttle."""
        if pool.slots.acquire(blocking=False):
            with self._lock:
                self._in_flight[pool.name] += 1
                self._counters["invocations"][pool.name] += 1
            return True
        with self._lock:
            self._counters["throttles"][pool.name] += 1
        return False

    def _end(self, pool):
        pool.slots.release()
        with self._lock:
            self._in_flight[pool.name] -= 1
            self._idle.notify_all()

    def _submit_event(self, inv):
        pool = inv.pool
        with self._lock:
            self._counters["invocations"][pool.name] += 1
            if pool.config.reserved_concurrency == 0:
                self._counters["throttles"][pool.name] += 1
                log.warning("%s: Event invocation %s dropped: reserved concurrency is 0",
                            pool.name, inv.request_id)
                return
            self._pending_events[pool.name] += 1
        threading.Thread(target=self._run_event, args=(inv,), daemon=True,
                         name=f"lambda-event:{pool.name}").start()

    def _run_event(self, inv):
        pool = inv.pool
        acquired = False
        try:
            while not self._stopping:
                if pool.slots.acquire(timeout=0.2):
                    acquired = True
                    break
            with self._lock:
                self._pending_events[pool.name] -= 1
                if acquired:
                    self._in_flight[pool.name] += 1
                self._idle.notify_all()
            if acquired:
                self._execute(inv)
        except Exception:
            log.exception("%s: Event invocation %s failed", pool.name, inv.request_id)
        finally:
            if acquired:
                self._end(pool)

    def _worker_spec(self, pool, seq):
        cfg = pool.config
        name = pool.name
        now = datetime.datetime.now(datetime.timezone.utc)
        stream = f"{now:%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{cfg.timeout:g}",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{py}",
            "LAMBDA_TASK_ROOT": os.getcwd(),
            "_HANDLER": cfg.handler,
        }
        env.update(cfg.environment)
        return {"name": name, "handler": cfg.handler, "memory_size": cfg.memory_size,
                "environment": env, "sys_path": list(cfg.path) + self.paths,
                "log_path": os.path.join(self._log_dir, f"{name}-{seq}.log")}

    def _execute(self, inv, sink=None):
        """Run one invocation on a worker of its pool (a concurrency slot is held). With a sink,
        the invocation streams: sink(message) gets the worker's ("chunk", bytes) and ("fault",
        kind, options) messages as they come; what it raises ends the invocation (the worker is
        killed) and propagates."""
        pool, cfg, rid = inv.pool, inv.pool.config, inv.request_id
        outcome = self._run_on_worker(inv, sink)
        with self._lock:
            if outcome.function_error:
                self._counters["errors"][pool.name] += 1
        if self.echo_logs and outcome.log:
            for line in outcome.log.rstrip("\n").split("\n"):
                function_log.info("[%s] %s", pool.name, line)
        log.debug("%s: invocation %s done (error=%s, timeout %gs)", pool.name, rid,
                  outcome.function_error, cfg.timeout)
        return outcome

    def _run_on_worker(self, inv, sink=None):
        pool, cfg, rid = inv.pool, inv.pool.config, inv.request_id
        worker = pool.checkout()
        if worker is None:
            return self._service_unavailable(inv)
        prefix = ""
        if not worker.ready:                         # cold start: the worker imports the handler
            msg = worker.receive(INIT_TIMEOUT)
            prefix = (f"INIT_START Runtime Version: python:{sys.version_info[0]}."
                      f"{sys.version_info[1]}\n" + worker.take_log())
            if msg is None or msg[0] != "ready":
                prefix += pool.retire(worker)
                return self._failed_init(inv, msg, prefix)
            worker.ready = True
            worker.init_ms, worker.max_rss_mb = msg[1], msg[2]
        init_ms, worker.init_ms = worker.init_ms, None        # reported once, on the cold start
        start = time.monotonic()
        sent = worker.send({"request_id": rid, "payload": inv.payload, "version": inv.version,
                            "arn": inv.arn, "client_context": inv.client_context,
                            "deadline_ms": int(time.time() * 1000 + cfg.timeout * 1000),
                            "stream": sink is not None})
        deadline = start + cfg.timeout
        while True:
            if not sent:
                msg = ("died", worker.wait_exit(STOP_GRACE))
                break
            msg = worker.receive(max(0.0, deadline - time.monotonic()))
            if msg is None or msg[0] not in ("chunk", "fault") or sink is None:
                break
            try:
                sink(msg)       # blocks while the client does not read: so does the worker
            except BaseException:
                pool.retire(worker)
                raise
        duration_ms = (time.monotonic() - start) * 1000.0
        if msg is None:                              # timed out: the worker is killed
            output = pool.retire(worker)
            message = f"{_lambda_time()} {rid} Task timed out after {cfg.timeout:.2f} seconds"
            log_text = self._compose_log(inv, prefix, output, duration_ms, worker.max_rss_mb,
                                         init_ms, after=message + "\n")
            return _Outcome(json.dumps({"errorMessage": message}).encode(), True, log_text)
        if msg[0] == "died":                         # crashed: replaced at the next invocation
            output = pool.retire(worker)
            if self._stopping:
                return self._service_unavailable(inv)
            message = (f"RequestId: {rid} Error: Runtime exited with error: "
                       f"{_exit_description(msg[1])}")
            log_text = self._compose_log(inv, prefix, output + message + "\nRuntime.ExitError\n",
                                         duration_ms, worker.max_rss_mb, init_ms)
            body = {"errorType": "Runtime.ExitError", "errorMessage": message}
            return _Outcome(json.dumps(body).encode(), True, log_text)
        kind, value, worker.max_rss_mb = msg
        output = worker.take_log()
        pool.checkin(worker)
        if kind == "ok":
            payload, error = value, False
        elif kind == "too_large":
            limit = value               # the limit that was exceeded
            payload, error = json.dumps({
                "errorMessage": "Response payload size exceeded maximum allowed payload size "
                                f"({limit} bytes).",
                "errorType": "Function.ResponseSizeTooLarge"}).encode(), True
        else:
            payload, error = json.dumps(value).encode(), True
        log_text = self._compose_log(inv, prefix, output, duration_ms, worker.max_rss_mb, init_ms)
        return _Outcome(payload, error, log_text)

    def _failed_init(self, inv, msg, prefix):
        rid = inv.request_id
        if msg is None:
            message = f"{_lambda_time()} {rid} Task timed out after {INIT_TIMEOUT:.2f} seconds"
            body = {"errorMessage": message}
            extra = message + "\n"
        elif msg[0] == "died":
            message = (f"RequestId: {rid} Error: Runtime exited with error: "
                       f"{_exit_description(msg[1])}")
            body = {"errorType": "Runtime.ExitError", "errorMessage": message}
            extra = message + "\nRuntime.ExitError\n"
        else:
            body = dict(msg[1], requestId=rid)
            extra = ""
        log_text = self._compose_log(inv, prefix + extra, "", 0.0, 0, None)
        return _Outcome(json.dumps(body).encode(), True, log_text)

    def _service_unavailable(self, inv):
        body = {"errorType": "Runtime.Unknown",
                "errorMessage": f"RequestId: {inv.request_id} Error: the emulator is stopping"}
        return _Outcome(json.dumps(body).encode(), True, "")

    @staticmethod
    def _compose_log(inv, prefix, output, duration_ms, max_rss_mb, init_ms, after=""):
        rid = inv.request_id
        if output and not output.endswith("\n"):
            output += "\n"
        billed = max(1, math.ceil(duration_ms))
        report = (f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {billed} ms\tMemory Size: {inv.pool.config.memory_size} MB\t"
                  f"Max Memory Used: {max_rss_mb} MB\t")
        if init_ms is not None:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        return (f"{prefix}START RequestId: {rid} Version: {inv.version}\n{output}"
                f"END RequestId: {rid}\n{report}\n{after}")


# --------------------------------------------------------------------------------------------------
# Command line

def _parse_function_arg(text):
    name, sep, handler = text.partition("=")
    if not sep or not name or not handler:
        raise EmulatorConfigError(f"function {text!r} must be given as NAME=module:handler")
    return name, handler


def _build_arg_parser():
    p = argparse.ArgumentParser(
        prog="python -m vmod_lambda.emulator",
        description="Serve the AWS Lambda Invoke API on loopback, running Python handlers locally.",
        epilog="Example: python -m vmod_lambda.emulator --path examples echo=app:echo "
               "hello=app:hello  (then: aws lambda invoke --endpoint-url http://127.0.0.1:9001 "
               "--function-name echo --payload '{}' out.json)")
    p.add_argument("functions", nargs="*", metavar="NAME=module:handler",
                   help="a function to serve (same as --function)")
    p.add_argument("-f", "--function", action="append", default=[], metavar="NAME=module:handler",
                   help="a function to serve (repeatable)")
    p.add_argument("-c", "--config", metavar="FILE.json",
                   help='functions from a JSON file: {"functions": {"NAME": {"handler": '
                        '"module:handler", "timeout": 3, "memory_size": 128, '
                        '"reserved_concurrency": 10, "environment": {}, "path": []}}}')
    p.add_argument("-p", "--path", action="append", default=[], metavar="DIR",
                   help="a directory to search for handler modules (repeatable; the current "
                        "directory is always searched last)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="loopback address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="port (default %(default)s; 0 picks a free one)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="timeout in seconds of the command-line functions (default %(default)g)")
    p.add_argument("--memory-size", type=int, default=DEFAULT_MEMORY_SIZE,
                   help="memory size in MB of the command-line functions (default %(default)s)")
    p.add_argument("--reserved-concurrency", type=int, default=DEFAULT_RESERVED_CONCURRENCY,
                   help="reserved concurrency of the command-line functions (default "
                        "%(default)s)")
    p.add_argument("--region", default=DEFAULT_REGION, help="region in ARNs and AWS_REGION "
                                                           "(default %(default)s)")
    p.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID,
                   help="account ID in ARNs (default %(default)s)")
    p.add_argument("--start-method", choices=("forkserver", "spawn"), default=None,
                   help="multiprocessing start method of the workers (default: forkserver where "
                        "available)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log requests and function output to stderr")
    return p


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = _build_arg_parser()
    args = parser.parse_args(argv)
    try:
        functions, paths = {}, []
        if args.config:
            functions, paths = load_config(args.config)
        for text in args.functions + args.function:
            name, handler = _parse_function_arg(text)
            functions[name] = FunctionConfig(
                handler=handler, timeout=args.timeout, memory_size=args.memory_size,
                reserved_concurrency=args.reserved_concurrency).validated(name)
        if not functions:
            raise EmulatorConfigError("no functions: give NAME=module:handler or --config FILE")
        emulator = Emulator(functions, host=args.host, port=args.port,
                            paths=args.path + paths, region=args.region,
                            account_id=args.account_id, start_method=args.start_method,
                            echo_logs=not args.quiet)
    except EmulatorConfigError as e:
        parser.error(str(e))     # exits with status 2

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", stream=sys.stderr)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as e:
            print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: "
                  f"{e.strerror or e}", file=sys.stderr)
            return 1
        print(emulator.url, flush=True)
        for name, cfg in emulator.functions.items():
            log.info("function %s: %s (timeout %gs, memory %d MB, reserved concurrency %d)",
                     name, cfg.handler, cfg.timeout, cfg.memory_size, cfg.reserved_concurrency)
        while not stop.wait(0.5):
            if not emulator._thread.is_alive():
                log.error("the server thread ended unexpectedly")
                return 1
        log.info("stopping")
        return 0
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    # Run main() from the importable module, so that workers and this process share its classes.
    from vmod_lambda.emulator import main as _main
    sys.exit(_main())
