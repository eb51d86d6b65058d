"""A hostile Lambda Invoke API on loopback, for the tests that put varnishd in front of bad endpoints.

It answers `POST /2015-03-31/functions/{name}/invocations` with whatever a test asks for, picked per
invocation by a `route(function_name, event_bytes) -> Action` callable: a payload (any bytes, any
size), a Lambda error status, or misbehaviour at the transport level (reset, close, trickle, hang,
garbage instead of HTTP). Stateless per request, so concurrent invocations are fine.

Listens on 127.0.0.1 only. Standard library only.
"""

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

__all__ = ["Action", "FakeLambda", "event_path"]


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
      "raw"      send `payload` verbatim (not HTTP, or broken HTTP), then close
    """
    kind: str = "payload"
    payload: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def event_path(event: bytes) -> str:
    """The request path an event carries (1.0/alb "path", 2.0 "rawPath"), "" when there is none."""
    try:
        doc = json.loads(event)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return doc.get("path") or doc.get("rawPath") or ""


class FakeLambda:
    def __init__(self, route: Callable[[str, bytes], Action], tls_context=None):
        self.route = route
        self.invocations = 0
        self.events: list = []            # (function name, headers dict, event bytes) of each call
        self.keep_events = False
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                event = self.rfile.read(length)
                parts = self.path.split("?")[0].split("/")
                name = parts[3] if len(parts) > 4 else ""
                with outer._lock:
                    outer.invocations += 1
                    if outer.keep_events:
                        outer.events.append((name, dict(self.headers), event))
                try:
                    action = outer.route(name, event)
                except Exception as e:     # a bug in a test's route: answer something visible
                    action = Action("status", f"route failed: {e}".encode(), 500)
                self._answer(action)

            def _answer(self, a: Action):
                sock = self.connection
                if a.kind == "payload":
                    self.send_response(a.status)
                    self.send_header("x-amzn-RequestId", "fake-request-id")
                    for k, v in a.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(a.payload)))
                    self.end_headers()
                    self.wfile.write(a.payload)
                elif a.kind == "status":
                    body = json.dumps({"Type": "User", "message": a.payload.decode()}).encode()
                    self.send_response(a.status)
                    self.send_header("x-amzn-RequestId", "fake-request-id")
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def raw_request(port: int, request: bytes, timeout: float = 60.0) -> tuple[int, list, bytes, bytes]:
    """Send raw bytes to 127.0.0.1:port, read one HTTP/1.1 response.

    Returns (status, [(name, value) as bytes], body, raw header block). status 0 when the connection
    closed (or was reset) without a response. Content-Length and chunked bodies are read; anything else until close.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass                # refused mid-request: the answer, if any, is still there to read
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if buf.startswith(b"HTTP/1.1 ") and b"\r\n" in buf:
                    return int(buf.split(b" ")[1]), [], b"", buf
                return 0, [], b"", buf
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        lower = {n.lower(): v for n, v in headers}
        if b"content-length" in lower:
            want = int(lower[b"content-length"])
            while len(rest) < want:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                rest += chunk
            body = rest[:want]
        elif lower.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += s.recv(1 << 20)
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        raise ConnectionError("chunked body truncated")
                    rest += chunk
                if size == 0:
                    break
                body += rest[:size]
                rest = rest[size + 2:]
        else:
            body = rest
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                body += chunk
        return status, headers, body, head
