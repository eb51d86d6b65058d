"""HTTP client helpers of the tests and the benchmarks: raw bytes to a port and one response back
(raw_request), one exchange on an http.client connection (exchange), and one timed GET (timed_get).
Loopback only. Standard library only."""

import http.client
import socket
import time

__all__ = ["exchange", "raw_request", "timed_get"]


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


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body=None, headers=None):
    """(response, body bytes) of one request on an open http.client connection."""
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def timed_get(port, path, method="GET", body=None, headers=None, timeout=180):
    """One request on a new connection: status, ms to the response head, to the first byte of the
    body, to its end, and the body's size (chunked decoding by http.client)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        t_head = time.monotonic()
        data = resp.read1(65536)
        t_first = time.monotonic() if data else None
        n = len(data)
        while data:
            data = resp.read1(1 << 20)
            n += len(data)
        t_end = time.monotonic()
        status = resp.status
    finally:
        conn.close()
    ms = lambda t: None if t is None else (t - t0) * 1000.0      # noqa: E731
    return {"status": status, "head_ms": ms(t_head), "first_byte_ms": ms(t_first),
            "total_ms": ms(t_end), "bytes": n}
