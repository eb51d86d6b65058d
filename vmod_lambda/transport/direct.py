# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""The "direct" transport: the Invoke API over keep-alive HTTP/1.1 connections of our own, signed
with SigV4 by this module, without botocore's request pipeline.

boto3 still does the configuration: the Invoker creates its boto3 client as before and this transport
takes from it the endpoint (client.meta.endpoint_url), region and signing name, and from the boto3
session the credential chain (session.get_credentials(): refreshable credentials refresh themselves
on get_frozen_credentials()) and the CA bundle. Error responses are parsed by botocore's own parser
for the Invoke operation, so codes, messages and request ids are the ones the boto3 transport reports.

What it skips, per call: botocore's event hooks, parameter validation and serialisation, endpoint
rules, AWSRequest/urllib3/http.client objects and header parsing with the email package. What is left
is one SigV4 signature (two SHA-256 and one HMAC with the signing key cached per day), one send and the
reads of the answer. See BENCHMARKS.md for what it buys.

A call is a generator (invoke_gen) that yields its socket work: for http:// endpoints the whole
exchange, which _netio.pyx runs in C without the GIL; for https:// endpoints, where the TLS records
are read and written in Python on non-blocking sockets, each wait for a socket to be ready. run()
does that work in the calling thread; the worker pool (_handoff.pyx) runs the work of many calls
with one poll().

The signature is byte for byte the one botocore's SigV4Auth computes for the same request,
credentials and time (tests/test_direct.py checks it, with and without a session token). Errors are
raised as the exceptions below; invoker.py turns them into InvokeError exactly like the boto3 ones.
"""

import hashlib
import hmac
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from typing import Optional
from urllib.parse import quote, urlsplit

from .limits import MAX_RESPONSE_HEAD

try:
    from . import _netio        # compiled: the exchange without the GIL (plain TCP)
except ImportError:             # pragma: no cover - a source tree without the build
    _netio = None

__all__ = ["DirectClient", "ConnectFailed", "ConnectTimeout", "ReadTimeout", "Closed",
           "BadResponse", "NoCredentials", "Response", "sigv4_headers"]

_SHA256 = hashlib.sha256
_HMAC = hmac.new
_HMAC_DIGEST = hmac.digest      # one-shot, in C
_EMPTY = b""
_CRLF2 = b"\r\n\r\n"
MAX_HEAD = MAX_RESPONSE_HEAD    # status line + headers of a response (limits.py)
_ALGO = "AWS4-HMAC-SHA256"
# The Content-Type of every Invoke request: the payload is a blob (what the AWS SDKs send).
CONTENT_TYPE = "application/octet-stream"
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


class ConnectFailed(Exception):
    """The connection could not be established: nothing was sent."""


class ConnectTimeout(Exception):
    """Connecting took longer than the connect timeout: nothing was sent."""


class ReadTimeout(Exception):
    """The request was sent; no answer (or no further bytes) within the read timeout."""


class Closed(Exception):
    """The connection broke or was closed after (part of) the request was sent, before the answer."""


class BadResponse(Exception):
    """The endpoint's answer is not valid HTTP/1.x."""


class NoCredentials(Exception):
    """The credential chain found nothing."""


class Response:
    __slots__ = ("status", "reason", "headers", "body")

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers          # lower-case name -> value (repeated names joined by ",")
        self.body = body


def _utcnow():
    """The signing time; tests replace it to compare signatures at a fixed time."""
    return time.gmtime()


class _Signer:
    """SigV4 for one service and region, with the derived signing key cached per (day, secret)."""

    def __init__(self, region, service):
        self.region = region
        self.service = service
        self._key_for = None
        self._key = None
        self._lock = threading.Lock()

    def signing_key(self, secret, day):
        cached = self._key_for, self._key
        if cached[0] == (day, secret):
            return cached[1]
        k = _HMAC(("AWS4" + secret).encode("utf-8"), day.encode("utf-8"), _SHA256).digest()
        for part in (self.region, self.service, "aws4_request"):
            k = _HMAC(k, part.encode("utf-8"), _SHA256).digest()
        with self._lock:
            self._key_for, self._key = (day, secret), k
        return k

    def sign(self, method, canonical_uri, canonical_query, headers, payload, creds, now):
        """The Authorization header value for a request with these signed headers (a list of
        (lower-case name, value) pairs, host included; values are already trimmed). Adds
        x-amz-date (and x-amz-security-token with a session token) to headers."""
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        headers.append(("x-amz-date", amz_date))
        if creds.token:
            headers.append(("x-amz-security-token", creds.token))
        headers.sort()
        signed = ";".join(h[0] for h in headers)
        canonical = "\n".join((
            method, canonical_uri, canonical_query,
            "".join(f"{k}:{v}\n" for k, v in headers),
            signed, _SHA256(payload).hexdigest()))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        sts = f"{_ALGO}\n{amz_date}\n{scope}\n{_SHA256(canonical.encode('utf-8')).hexdigest()}"
        sig = _HMAC_DIGEST(self.signing_key(creds.secret_key, day), sts.encode("utf-8"),
                           "sha256").hex()
        return f"{_ALGO} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"


def _trim(value: str) -> str:
    """SigV4's Trimall: strip, and collapse runs of white space."""
    return " ".join(value.split())


def sigv4_headers(signer, method, host, canonical_uri, canonical_query, extra, payload, creds,
                  now):
    """The headers to send (name, value) for a request: the signed ones and Authorization."""
    signed = [("host", host)] + [(k.lower(), _trim(v)) for k, v in extra]
    auth = signer.sign(method, canonical_uri, canonical_query, signed, payload, creds, now)
    return signed, auth


class DirectClient:
    """Invoke API calls for one endpoint; thread-safe, a pool of keep-alive connections."""

    def __init__(self, endpoint_url: str, region: str, service: str, credentials,
                 connect_timeout: float, read_timeout: float, pool_size: int, user_agent: str,
                 ca_bundle=None, verify: bool = True):
        parts = urlsplit(endpoint_url)
        self.endpoint_url = endpoint_url
        self.tls = parts.scheme == "https"
        self.hostname = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        # The Host header as botocore's SigV4 derives it: lower case, no default port, IPv6 in [].
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None and parts.port != (443 if self.tls else 80):
            host = f"{host}:{parts.port}"
        self.host = host
        self.base_path = parts.path.rstrip("/")
        self.credentials = credentials
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self.user_agent = user_agent
        self.signer = _Signer(region, service)
        self._idle = deque()
        self._timeval = struct.pack("ll", int(read_timeout), int((read_timeout % 1) * 1e6))
        self._ssl = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=ca_bundle if verify else None)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        self._paths = {}
        # invoke_gen() yields its socket exchanges (http://) or waits (https://) to the caller,
        # which runs them without the GIL; the sockets of https:// endpoints do not block then.
        self.yields_io = _netio is not None

    # ------------------------------------------------------------------------------ requests

    def _path(self, function_name, qualifier):
        """(path and query as sent, canonical URI, canonical query) for a function, cached."""
        key = (function_name, qualifier)
        p = self._paths.get(key)
        if p is None:
            from botocore.utils import normalize_url_path
            # botocore's rest serializer: the URI label percent-encoded with safe="-_.~".
            path = (f"{self.base_path}/2015-03-31/functions/"
                    f"{quote(function_name, safe='-_.~')}/invocations")
            query = f"Qualifier={quote(qualifier, safe='-_.~')}" if qualifier else ""
            # SigV4Auth: the path normalised and encoded once more (non-S3 services).
            canonical_uri = quote(normalize_url_path(path), safe="/~")
            p = (path + ("?" + query if query else ""), canonical_uri, query)
            if len(self._paths) < 64:
                self._paths[key] = p
        return p

    def invoke_gen(self, function_name: str, payload: bytes,
                   invocation_type: str = "RequestResponse", qualifier: Optional[str] = None,
                   log_type: Optional[str] = None, client_context: Optional[str] = None,
                   read_timeout: Optional[float] = None):
        """One Invoke call, as a generator: it yields each socket exchange it needs, as the arguments of
        _netio.exchange(), and takes its result back; see run(). The worker pool drives several
        of these at once, each exchange without the GIL (_handoff.pyx). read_timeout: for this
        call instead of the client's (a probe's .timeout; a blocking socket, in a build without
        _netio, keeps the client's)."""
        if type(payload) is not bytes:
            payload = bytes(payload)
        head = self.request_head(function_name, payload, invocation_type, qualifier, log_type,
                                 client_context)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        if self._ssl is None and _netio is not None:
            return (yield from self._exchange_c(head, payload, timeout))
        return (yield from self._exchange_py(head, payload, timeout))

    def request_head(self, function_name: str, payload: bytes,
                     invocation_type: str = "RequestResponse", qualifier: Optional[str] = None,
                     log_type: Optional[str] = None, client_context: Optional[str] = None) -> bytes:
        """The signed request line and headers of an Invoke call, as sent."""
        creds = self.credentials
        if creds is None:
            raise NoCredentials()
        blocking_begin()            # refreshing credentials may wait for the network
        try:
            creds = creds.get_frozen_credentials()
        finally:
            blocking_end()
        if creds is None or creds.access_key is None:
            raise NoCredentials()
        target, curi, cquery = self._path(function_name, qualifier)
        # The headers botocore's Invoke serialisation sends (same names, same order of addition),
        # and the Content-Type of the blob payload that the AWS SDKs send (the boto3 transport adds
        # it too, invoker._content_type): signed like the others.
        extra = []
        if log_type:
            extra.append(("X-Amz-Log-Type", log_type))
        if client_context:
            extra.append(("X-Amz-Client-Context", client_context))
        extra.append(("X-Amz-Invocation-Type", invocation_type))
        extra.append(("Content-Type", CONTENT_TYPE))
        signed, auth = sigv4_headers(self.signer, "POST", self.host, curi, cquery, extra, payload,
                                     creds, _utcnow())
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.host}"]
        for k, v in extra:
            lines.append(f"{k}: {v}")
        for k, v in signed:
            if k == "x-amz-date":
                lines.append(f"X-Amz-Date: {v}")
            elif k == "x-amz-security-token":
                lines.append(f"X-Amz-Security-Token: {v}")
        lines.append(f"Authorization: {auth}")
        lines.append(f"User-Agent: {self.user_agent}")
        lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # --------------------------------------------------------------------------- connections

    def _connect(self):
        blocking_begin()
        try:
            return self._connect_now()
        finally:
            blocking_end()

    def _connect_now(self):
        try:
            sock = socket.create_connection((self.hostname, self.port), self.connect_timeout)
        except socket.timeout:
            raise ConnectTimeout() from None
        except OSError as e:
            raise ConnectFailed(str(e)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.hostname)
            # From here on the socket blocks, and the kernel enforces the read timeout on every
            # read and write (SO_RCVTIMEO/SO_SNDTIMEO): like botocore's read_timeout, per socket
            # operation, and without a poll() before each of them.
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._timeval)
            if self._ssl is not None and self.yields_io:
                # TLS in Python, its waits yielded (_exchange_py): reads and writes never block.
                sock.setblocking(False)
        except socket.timeout:
            sock.close()
            raise ConnectTimeout() from None
        except OSError as e:
            sock.close()
            raise ConnectFailed(str(e)) from None
        return sock

    def _checkout(self):
        """An idle connection that the endpoint has not closed, or a new one."""
        idle = self._idle
        while True:
            try:
                sock = idle.pop()
            except IndexError:
                return self._connect(), False
            # A healthy idle HTTP connection has nothing to read: readable means closed (EOF) or
            # garbage; either way it must not carry a request (urllib3 does the same check).
            try:
                readable = select.select((sock,), (), (), 0)[0]
            except (OSError, ValueError):
                readable = True
            if not readable:
                return sock, True
            sock.close()

    def _release(self, sock, keep):
        """Back to the idle connections when keep (and there is room), else closed."""
        if keep and len(self._idle) < self.pool_size:
            self._idle.append(sock)
        else:
            sock.close()

    def close(self):
        while self._idle:
            try:
                self._idle.pop().close()
            except (IndexError, OSError):
                pass

    def _exchange_c(self, head: bytes, payload: bytes, timeout: float):
        """The same exchange, its socket calls without the GIL (_netio.pyx): it yields them as
        the arguments of _netio.exchange() and takes the result back (see run())."""
        idle = self._idle
        while True:
            try:
                sock, check = idle.pop(), True
            except IndexError:
                sock, check = self._connect(), False
            rc, err, rhead, rest, complete = yield (sock.fileno(), head, payload, check,
                                                    timeout)
            if rc != _netio.STALE:
                break
            sock.close()
        keep = False
        try:
            if rc != _netio.OK:
                if rc in (_netio.SEND_TIMEOUT, _netio.RECV_TIMEOUT):
                    raise ReadTimeout()
                if rc == _netio.HEAD_TOO_LARGE:
                    raise BadResponse("response header section too large")
                if rc == _netio.NO_MEMORY:
                    raise MemoryError()
                raise Closed(os.strerror(err) if err else "connection closed before the response")
            if complete:
                status, reason, headers, version11 = _parse_head(rhead[:-4])
                if status < 200:
                    raise BadResponse(f"unexpected interim response {status}")
                conn = headers.get("connection", "")
                keep = "close" not in conn.lower() and (version11 or "keep-alive" in conn.lower())
                return Response(status, reason, headers, rest)
            blocking_begin()        # a chunked body, or one up to the end: read here, blocking
            try:
                resp, keep = yield from _reading(
                    self._finish_response(sock, rhead[:-4], bytearray(rest), timeout))
            finally:
                blocking_end()
            return resp
        finally:
            self._release(sock, keep)

    def _exchange_py(self, head: bytes, payload: bytes, timeout: float):
        """The exchange in Python: https:// endpoints (and http:// in a build without _netio).
        With _netio the sockets do not block: where one would, this generator yields the wait
        (file descriptor, poll events, timeout) and takes back whether the socket is ready."""
        sock, _reused = self._checkout()
        keep = False
        try:
            try:
                if len(payload) <= 16384:
                    yield from _send_all(sock, head + payload, timeout)
                else:
                    yield from _send_all(sock, head, timeout)
                    yield from _send_all(sock, payload, timeout)
            except (BlockingIOError, ssl.SSLWantWriteError, socket.timeout, ReadTimeout):
                raise ReadTimeout() from None
            except OSError as e:
                raise Closed(str(e)) from None
            resp, keep = yield from _reading(self._read_response(sock, timeout))
            return resp
        finally:
            self._release(sock, keep)

    def _read_response(self, sock, timeout):
        buf = bytearray()
        while True:
            end = buf.find(_CRLF2)
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise BadResponse("response header section too large")
            chunk = yield from _recv(sock, 65536, timeout)
            if not chunk:
                raise Closed("connection closed before the response")
            buf += chunk
        return (yield from self._finish_response(sock, bytes(buf[:end]), buf[end + 4:], timeout))

    def _finish_response(self, sock, head, rest, timeout):
        """(Response, reusable) from the head and the bytes read after it; reads the rest."""
        status, reason, headers, version11 = _parse_head(head)
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if status < 200 or status in (204, 304):
            # 1xx are never final answers to this request; treat them as invalid.
            if status < 200:
                raise BadResponse(f"unexpected interim response {status}")
            body, complete = _EMPTY, not rest
        elif te is not None and "chunked" in te.lower():
            body, complete = yield from _read_chunked(sock, rest, timeout)
        elif cl is not None:
            try:
                n = int(cl)
                if n < 0:
                    raise ValueError
            except ValueError:
                raise BadResponse(f"invalid Content-Length {cl[:40]!r}") from None
            body, complete = yield from _read_exact(sock, rest, n, timeout)
        else:
            body, complete = (yield from _read_to_eof(sock, rest, timeout)), False
        conn = headers.get("connection", "").lower()
        keep = complete and ("close" not in conn) and (version11 or "keep-alive" in conn)
        return Response(status, reason, headers, body), keep


def run(gen):
    """Run an invoke_gen() generator to its end in this thread, each exchange it yields with
    _netio.exchange() and each wait with _netio.wait(); returns what it returns."""
    try:
        op = next(gen)
        while True:
            op = gen.send(_netio.exchange(*op) if len(op) == 5 else _netio.wait(*op))
    except StopIteration as e:
        return e.value


def _await(sock, events, timeout):
    """A socket call would block: on a non-blocking socket, yield the wait for it to be ready for
    events; on a blocking one its own timeout (SO_RCVTIMEO/SO_SNDTIMEO) has expired."""
    if sock.getblocking() or not (yield (sock.fileno(), events, timeout)):
        raise ReadTimeout() from None


def _send_all(sock, data, timeout):
    """Send data on a blocking socket, or on a non-blocking one, yielding its waits."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except (BlockingIOError, ssl.SSLWantWriteError):
            yield from _await(sock, _POLLOUT, timeout)
            continue
        except ssl.SSLWantReadError:
            yield from _await(sock, _POLLIN, timeout)
            continue
        view = view[n:]


def _recv(sock, n, timeout):
    """sock.recv(n), on a blocking socket, or on a non-blocking one, yielding its waits."""
    while True:
        try:
            return sock.recv(n)
        except (BlockingIOError, ssl.SSLWantReadError):
            yield from _await(sock, _POLLIN, timeout)
        except ssl.SSLWantWriteError:
            yield from _await(sock, _POLLOUT, timeout)


def _no_hook():
    pass


# Called around the calls that may block this thread for long (connecting, refreshing credentials,
# reading a body of unknown length): the worker pool sets them (_handoff.pyx) so that a worker
# that waits there is not counted on to take the next queued job.
blocking_begin = blocking_end = _no_hook


def _reading(gen):
    """yield from gen (a reader of this module), its socket errors turned into this module's
    exceptions."""
    try:
        return (yield from gen)
    except (BlockingIOError, ssl.SSLWantReadError, socket.timeout):
        raise ReadTimeout() from None
    except (BadResponse, Closed, ReadTimeout):
        raise
    except OSError as e:
        raise Closed(str(e)) from None


def _parse_head(head: bytes):
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:      # pragma: no cover - latin-1 decodes everything
        raise BadResponse("undecodable header section") from None
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise BadResponse(f"invalid status line {lines[0][:60]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise BadResponse(f"invalid status line {lines[0][:60]!r}") from None
    if not 100 <= status <= 999:
        raise BadResponse(f"invalid status {status}")
    reason = status_line[2] if len(status_line) > 2 else ""
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadResponse(f"invalid header line {line[:60]!r}")
        name = name.lower()
        value = value.strip()
        if name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    return status, reason, headers, status_line[0] == "HTTP/1.1"


def _read_exact(sock, rest, n, timeout):
    """(body, clean): clean is False when the endpoint sent more than Content-Length (the
    connection is then not reused, as urllib3 would drop it at its next use)."""
    if len(rest) >= n:
        return bytes(rest[:n]), len(rest) == n
    body = bytearray(n)
    view = memoryview(body)
    have = len(rest)
    view[:have] = rest
    while have < n:
        try:
            got = sock.recv_into(view[have:])
        except (BlockingIOError, ssl.SSLWantReadError):
            yield from _await(sock, _POLLIN, timeout)
            continue
        except ssl.SSLWantWriteError:
            yield from _await(sock, _POLLOUT, timeout)
            continue
        if not got:
            raise Closed("connection closed in the middle of the response body")
        have += got
    return bytes(body), True


def _read_to_eof(sock, rest, timeout):
    body = bytearray(rest)
    while True:
        chunk = yield from _recv(sock, 262144, timeout)
        if not chunk:
            return bytes(body)
        body += chunk


def _read_chunked(sock, rest, timeout):
    """(body, clean) of a chunked body; trailers are read and ignored."""
    buf = bytearray(rest)
    body = bytearray()
    pos = 0

    def fill(need_pos):
        nonlocal buf
        while len(buf) < need_pos:
            chunk = yield from _recv(sock, 262144, timeout)
            if not chunk:
                raise Closed("connection closed in the middle of a chunked body")
            buf += chunk

    def line_end(limit, what):
        """Where the line at pos ends (its CR), reading more as needed, at most limit bytes."""
        while True:
            i = buf.find(b"\r\n", pos)
            if i >= 0:
                return i
            if len(buf) - pos > limit:
                raise BadResponse(what)
            yield from fill(len(buf) + 1)

    while True:
        i = yield from line_end(4096, "chunk size line too long")
        size_text = bytes(buf[pos:i]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadResponse(f"invalid chunk size {size_text[:20]!r}") from None
        pos = i + 2
        if size == 0:
            # Trailers (ignored) up to the empty line.
            while True:
                i = yield from line_end(65536, "trailer section too large")
                line = buf[pos:i]
                pos = i + 2
                if not line:
                    return bytes(body), pos == len(buf)
        yield from fill(pos + size + 2)
        body += buf[pos:pos + size]
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise BadResponse("chunk not terminated by CRLF")
        pos += size + 2
        if pos > 1048576:
            del buf[:pos]
            pos = 0
