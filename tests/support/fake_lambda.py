"""The one scriptable fake Lambda Invoke API on loopback, for the tests of every layer.

It answers `POST /2015-03-31/functions/{name}/invocations` (and any other POST path) with whatever a
test asks for: a payload (any bytes, any size, any status and headers, after a delay), a Lambda error
status, or misbehaviour at the transport level (reset, close, trickle, hang, garbage instead of HTTP,
canned bytes on a kept connection). The answer to each invocation is the next Action of `script`
(a queue, for tests that script a sequence), else what `route(function_name, event_bytes)` picks
(stateless per request, so concurrent invocations are fine), else a 200 with `null`.

It counts invocations, connections accepted (`connections`) and closed (`closed`); with keep_events
it records each request as `events` (function name, headers, body) and `requests` (path, headers,
body). Listens on 127.0.0.1 only (https://localhost with a tls_context). Standard library only.
"""

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from support.http_helpers import raw_request  # noqa: F401 (a client: re-exported for older imports)

__all__ = ["Action", "FakeLambda", "answer", "event_path"]


@dataclass
class Action:
    """What to answer one invocation with.

    kind:
      "payload"  200 with body=payload (extra headers allowed, e.g. X-Amz-Function-Error)
      "status"   an error status with Lambda's x-amzn-ErrorType and a JSON message
      "reset"    read the request, then close with RST (SO_LINGER 0), nothing sent
      "close"    read the request, then close cleanly, nothing sent
      "partial"  send the status line, headers with Content-Length of payload, half the body, RST
      "trickle"  send the whole response one byte every `delay` seconds
      "hang"     read the request, send nothing for `delay` seconds, then close
      "raw"      send `payload` verbatim (not HTTP, or broken HTTP), then close; with keep=True
                 leave the connection open for the next request instead (canned HTTP answers)
    A "payload" waits `delay` seconds before it answers; a Connection: close header among its
    headers closes the connection after the answer.
    """
    kind: str = "payload"
    payload: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    keep: bool = False


def event_path(event: bytes) -> str:
    """The request path an event carries (1.0/alb "path", 2.0 "rawPath"), "" when there is none."""
    try:
        doc = json.loads(event)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return doc.get("path") or doc.get("rawPath") or ""


def answer(status: int, headers: Optional[dict], body: bytes) -> Action:
    """A plain HTTP answer: status, headers (x-amzn-RequestId added unless given), body."""
    return Action("payload", body, status, dict(headers or {}))


class FakeLambda:
    def __init__(self, route: Optional[Callable[[str, bytes], Action]] = None, tls_context=None,
                 keep_events: bool = False, request_id: str = "fake-request-id"):
        """route: picks the Action of an invocation when the script is empty (default: 200 null).
        request_id: the x-amzn-RequestId of the answers; "{n}" in it is the invocation's number
        (1 for the first)."""
        self.route = route
        self.script: list = []            # Actions, answered in order before route is asked
        self.request_id = request_id
        self.invocations = 0
        self.connections = 0              # connections accepted (TLS handshakes that failed too)
        self.closed = 0                   # connections that ended
        self.events: list = []            # (function name, headers dict, event bytes) of each call
        self.requests: list = []          # (path, headers dict, body bytes) of each call
        self.keep_events = keep_events
        self.close_after_answer = False   # close each connection after its answer (no header)
        self._lock = threading.Lock()
        self._open: set = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with outer._lock:
                    outer.connections += 1
                    outer._open.add(self.connection)

            def finish(self):
                try:
                    super().finish()
                finally:
                    with outer._lock:
                        outer.closed += 1
                        outer._open.discard(self.connection)

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                event = self.rfile.read(length)
                parts = self.path.split("?")[0].split("/")
                name = parts[3] if len(parts) > 4 else ""
                with outer._lock:
                    outer.invocations += 1
                    self.number = outer.invocations
                    if outer.keep_events:
                        outer.events.append((name, dict(self.headers), event))
                        outer.requests.append((self.path, dict(self.headers), event))
                    action = outer.script.pop(0) if outer.script else None
                try:
                    if action is None:
                        action = outer.route(name, event) if outer.route else Action("payload", b"null")
                except Exception as e:     # a bug in a test's route: answer something visible
                    action = Action("status", f"route failed: {e}".encode(), 500)
                self._answer(action)

            def _request_id(self):
                return outer.request_id.format(n=self.number)

            def _answer(self, a: Action):
                sock = self.connection
                if a.kind == "payload":
                    if a.delay:
                        time.sleep(a.delay)
                    self.send_response(a.status)
                    if not any(k.lower() == "x-amzn-requestid" for k in a.headers):
                        self.send_header("x-amzn-RequestId", self._request_id())
                    for k, v in a.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(a.payload)))
                    self.end_headers()
                    self.wfile.write(a.payload)
                    if outer.close_after_answer:
                        self.close_connection = True
                elif a.kind == "status":
                    body = json.dumps({"Type": "User", "message": a.payload.decode()}).encode()
                    self.send_response(a.status)
                    self.send_header("x-amzn-RequestId", self._request_id())
                    self.send_header("x-amzn-ErrorType", a.headers.get("type", "ServiceException"))
                    if "Retry-After" in a.headers:
                        self.send_header("Retry-After", a.headers["Retry-After"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif a.kind in ("reset", "partial"):
                    if a.kind == "partial":
                        head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(a.payload)}\r\n"
                                "x-amzn-RequestId: fake-request-id\r\n\r\n").encode()
                        sock.sendall(head + a.payload[:len(a.payload) // 2])
                        time.sleep(0.05)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    sock.close()
                elif a.kind == "close":
                    self.close_connection = True
                    sock.shutdown(socket.SHUT_RDWR)
                elif a.kind == "trickle":
                    # Connection: close, so that the client does not pool a connection this
                    # server closes once the trickle is over (a keep-alive race of the test's
                    # own making).
                    data = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(a.payload)}\r\n"
                            "Connection: close\r\n"
                            "x-amzn-RequestId: fake-request-id\r\n\r\n").encode() + a.payload
                    try:
                        for i in range(len(data)):
                            sock.sendall(data[i:i + 1])
                            time.sleep(a.delay)
                    except OSError:
                        pass
                    self.close_connection = True
                elif a.kind == "hang":
                    time.sleep(a.delay)
                    self.close_connection = True
                elif a.kind == "raw" and a.keep:
                    self.wfile.write(a.payload)
                    self.wfile.flush()
                elif a.kind == "raw":
                    try:
                        sock.sendall(a.payload)
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self.close_connection = True
                else:
                    raise ValueError(f"unknown action {a.kind}")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request, client_address):
                pass            # a client that went away mid-answer is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        if tls_context is not None:
            # https://localhost:PORT (the test certificate's name); handshakes at accept().
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        # Wake the handlers still reading a kept connection: nothing of this server outlives the test.
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def scripted(**kw) -> FakeLambda:
    """A FakeLambda for scripted tests: records every request, numbers its request ids (req-1, ...).
    Script it with `fake.script.append(Action(...))`; unscripted calls get 200 `null`."""
    kw.setdefault("keep_events", True)
    kw.setdefault("request_id", "req-{n}")
    return FakeLambda(**kw)
