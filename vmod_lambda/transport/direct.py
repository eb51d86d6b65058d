# cython: annotation_typing=False
# (Compiled by setup.py as it is, as plain Python: type hints are hints, not checks.)
"""The "direct" transport: the Invoke API (Invoke and InvokeWithResponseStream) over keep-alive
HTTP/1.1 connections of our own, signed with SigV4 by this module, without botocore's request
pipeline.

boto3 still does the configuration: the Invoker creates its boto3 client as before and this transport
takes from it the endpoint (client.meta.endpoint_url), region and signing name, and from the boto3
session the credential chain (session.get_credentials(): refreshable credentials refresh themselves
on get_frozen_credentials()) and the CA bundle. Error responses are parsed by botocore's own parser
for the operation, so codes, messages and request ids are the ones the boto3 transport reports.

What it skips, per call: botocore's event hooks, parameter validation and serialisation, endpoint
rules, AWSRequest/urllib3/http.client objects and header parsing with the email package. What is left
is one SigV4 signature (two SHA-256 and one HMAC with the signing key cached per day), one send and the
reads of the answer. See BENCHMARKS.md for what it buys.

A call is a generator (invoke_gen) that yields its socket work: the whole exchange, which
_netio.pyx runs in C without the GIL, for http:// and https:// endpoints alike (TLS is OpenSSL's,
called from _netio: a _netio.TLSConn per connection, its handshake a step of the call, one
_netio.TLSContext per endpoint shared by every client of it, see tls_context()); the rest of an
answer (chunked, streamed) is read in Python, and each wait for a socket to be ready is yielded.
run() does that work in the calling thread; the worker pool (_handoff.pyx) runs the work of many
calls with one poll(). A build without _netio does TLS with Python's ssl module.

The signature is byte for byte the one botocore's SigV4Auth computes for the same request,
credentials and time (tests/compiled/test_direct.py checks it, with and without a session token). DirectClient
raises the exceptions below; DirectTransport (the interface of base.py) turns them into InvokeError
exactly like the boto3 transport's.

InvokeWithResponseStream (invoke_stream): the request is signed and sent like an Invoke; the head of
the answer is read, then the body (chunked, from the endpoint) is read from the socket as it comes,
its chunks decoded incrementally (ChunkedDecoder, also used for buffered chunked bodies), and handed
on raw: vmod_lambda.eventstream decodes the event stream. Streams run whole on a worker that the pool
already counts as blocked; their socket waits are done in place (run()).
"""

import errno
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

from botocore.credentials import Credentials as _StaticCredentials

from ..credentials import StsError
from ..limits import MAX_RESPONSE_BODY, MAX_RESPONSE_HEAD
from ..outcomes import answer_too_large
from .base import (CLOSED_BEFORE_ANSWER, NO_CREDENTIALS, NO_HOOKS, InvokeError, InvokeRequest,
                   InvokeResult, ResponseStream, StreamResult, Transport, cannot_connect,
                   connect_timed_out, function_error_reason, read_timed_out, service_error,
                   stream_broke, stream_timed_out)

try:
    from .. import _netio        # compiled: the exchange without the GIL (plain TCP)
except ImportError:             # pragma: no cover - a source tree without the build
    _netio = None
try:
    from .. import _sigv4        # compiled: the signed request head in C
except ImportError:             # pragma: no cover - a source tree without the build
    _sigv4 = None
try:
    from .. import _httphead     # compiled: the head of an answer parsed in C
except ImportError:             # pragma: no cover - a source tree without the build
    _httphead = None

__all__ = ["DirectTransport", "DirectClient", "ChunkedDecoder", "ConnectFailed", "ConnectTimeout", "ReadTimeout", "Closed",
           "BadResponse", "NoCredentials", "Response", "sigv4_headers"]

_SHA256 = hashlib.sha256
_HMAC = hmac.new
_HMAC_DIGEST = hmac.digest      # one-shot, in C
_EMPTY = b""
_CRLF2 = b"\r\n\r\n"
MAX_HEAD = MAX_RESPONSE_HEAD    # status line + headers of a response (limits.py)
MAX_BODY = MAX_RESPONSE_BODY    # the body of a RequestResponse answer (limits.py; not streams)
_ALGO = "AWS4-HMAC-SHA256"
# The Content-Type of every Invoke request: the payload is a blob (what the AWS SDKs send).
CONTENT_TYPE = "application/octet-stream"
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
# The paths of the two operations, around the quoted function name (botocore's service model).
_INVOKE_API = ("/2015-03-31/functions/", "/invocations")
_STREAM_API = ("/2021-11-15/functions/", "/response-streaming-invocations")


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


class TooLarge(Exception):
    """The answer's body is beyond MAX_RESPONSE_BODY (limits.py): what gave it away (its
    Content-Length, or the bytes read), and the answer's request id when known. Not read further;
    the connection is closed."""

    def __init__(self, detail, request_id=None):
        super().__init__(detail)
        self.request_id = request_id


class NoCredentials(Exception):
    """The credential chain found nothing."""


class HandshakeTimeout(Exception):
    """The TLS handshake of a new connection took longer than the connect timeout (or the call's
    deadline came first): nothing was sent."""


if _netio is not None:
    TLSFailed = _netio.TLSError
else:                           # pragma: no cover - a source tree without the build
    class TLSFailed(Exception):
        """The TLS handshake failed (or the CA bundle could not be loaded): nothing was sent."""


# One _netio.TLSContext (an SSL_CTX and the session to resume) per endpoint and CA settings, shared
# by every client of it: every object of every VCL that uses the endpoint.
_tls_contexts = {}
_tls_contexts_lock = threading.Lock()


def tls_context(hostname, port, ca_bundle, verify):
    """The shared _netio.TLSContext of an https:// endpoint; raises TLSFailed when it cannot be
    made (a CA bundle that cannot be read)."""
    key = (hostname, port, ca_bundle, verify)
    with _tls_contexts_lock:
        ctx = _tls_contexts.get(key)
        if ctx is None:
            ctx = _tls_contexts[key] = _netio.TLSContext(ca_bundle, verify)
        return ctx


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


_gmtime = _utcnow       # (when _utcnow is still this, _sigv4 reads the clock itself)


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
                 ca_bundle=None, verify: bool = True, hooks=NO_HOOKS):
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
        # The head built in C (_sigv4.pyx); request_head() in Python when None (a build without it).
        self._head = _sigv4.HeadSigner(region, service, host, user_agent) \
            if _sigv4 is not None else None
        # Around the calls that may block this thread for long (connecting, refreshing credentials,
        # reading a body of unknown length): the worker pool's hooks (base.Hooks), so that a worker
        # waiting there is not counted on to take the next queued job.
        self._blocking_begin = hooks.blocking_begin
        self._blocking_end = hooks.blocking_end
        self._idle = deque()
        self._timeval = struct.pack("ll", int(read_timeout), int((read_timeout % 1) * 1e6))
        self._ssl = None
        self._tls = None
        self._tls_error = None
        if self.tls and _netio is not None:
            # OpenSSL from _netio (see tls_context()); the exchange stays in C (_exchange_c).
            try:
                self._tls = tls_context(self.hostname, self.port, ca_bundle, verify)
            except TLSFailed as e:
                self._tls_error = str(e)        # every call fails with it, as boto3's would
        elif self.tls:
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

    def _path(self, function_name, qualifier, stream=False):
        """(path and query as sent, canonical URI, canonical query) for a function's Invoke (or
        InvokeWithResponseStream when stream), cached."""
        key = (function_name, qualifier, stream)
        p = self._paths.get(key)
        if p is None:
            from botocore.utils import normalize_url_path
            # botocore's rest serializer: the URI label percent-encoded with safe="-_.~".
            api = _STREAM_API if stream else _INVOKE_API
            path = f"{self.base_path}{api[0]}{quote(function_name, safe='-_.~')}{api[1]}"
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
                   read_timeout: Optional[float] = None, deadline: Optional[float] = None,
                   trace_id: Optional[str] = None, tenant_id: Optional[str] = None,
                   raw: bool = False):
        """One Invoke call, as a generator: it yields each piece of socket work it needs (a
        _netio.Exchange or _netio.Wait), and takes its result back; see run(). The worker pool drives several
        of these at once, each exchange without the GIL (_handoff.pyx). read_timeout: for this
        call instead of the client's (a probe's .timeout; a blocking socket, in a build without
        _netio, keeps the client's). deadline: the call's end (time.monotonic()): no read waits
        past it, whatever the endpoint trickles (ReadTimeout; the connection is closed). raw: the
        Response's body may be a _netio.RawBody (the buffer it was received into, which the
        caller can take over) instead of bytes."""
        if type(payload) is not bytes:
            payload = bytes(payload)
        head = self.request_head(function_name, payload, invocation_type, qualifier, log_type,
                                 client_context, trace_id=trace_id, tenant_id=tenant_id)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        if self._ssl is None and _netio is not None:
            return (yield from self._exchange_c(head, payload, timeout, deadline or 0.0, raw))
        return (yield from self._exchange_py(head, payload, timeout, deadline or 0.0))

    def request_head(self, function_name: str, payload: bytes,
                     invocation_type: str = "RequestResponse", qualifier: Optional[str] = None,
                     log_type: Optional[str] = None, client_context: Optional[str] = None,
                     stream: bool = False, trace_id: Optional[str] = None,
                     tenant_id: Optional[str] = None) -> bytes:
        """The signed request line and headers of an Invoke call (InvokeWithResponseStream when
        stream: the same headers, another path), as sent. tenant_id: X-Amz-Tenant-Id, signed
        (botocore's TenantId member); trace_id: X-Amzn-Trace-Id, not signed, as botocore does
        (auth.py, SIGNED_HEADERS_BLACKLIST)."""
        creds = self.credentials
        if creds is None:
            raise NoCredentials()
        # Static credentials (botocore's Credentials itself) are never refreshed, so never wait:
        # read as they are, their attributes being what get_frozen_credentials() would copy into
        # a new tuple, and without the blocking hooks (each takes the pool's queue mutex, and may
        # wake another worker).
        if type(creds) is not _StaticCredentials:
            self._blocking_begin()      # refreshing credentials may wait for the network
            try:
                creds = creds.get_frozen_credentials()
            finally:
                self._blocking_end()
        if creds is None or creds.access_key is None:
            raise NoCredentials()
        target, curi, cquery = self._path(function_name, qualifier, stream)
        if self._head is not None:
            # The same bytes, built in C (_sigv4.pyx); None: not a plain request, built below.
            head = self._head.head(target, curi, cquery, log_type, client_context,
                                   invocation_type, tenant_id, trace_id, payload,
                                   creds.access_key, creds.secret_key, creds.token,
                                   None if _utcnow is _gmtime else _utcnow())
            if head is not None:
                return head
        # The headers botocore's Invoke serialisation sends (same names, same order of addition),
        # and the Content-Type of the blob payload that the AWS SDKs send (the boto3 transport adds
        # it too, invoker._content_type): signed like the others.
        extra = []
        if log_type:
            extra.append(("X-Amz-Log-Type", log_type))
        if client_context:
            extra.append(("X-Amz-Client-Context", client_context))
        extra.append(("X-Amz-Invocation-Type", invocation_type))
        if tenant_id:
            extra.append(("X-Amz-Tenant-Id", tenant_id))
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
        if trace_id:
            lines.append(f"X-Amzn-Trace-Id: {trace_id}")
        lines.append(f"User-Agent: {self.user_agent}")
        lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # --------------------------------------------------------------------------- connections

    def _connect(self):
        self._blocking_begin()
        try:
            return self._connect_now()
        finally:
            self._blocking_end()

    def _connect_now(self):
        if self._tls_error is not None:
            raise TLSFailed(self._tls_error)
        try:
            sock = socket.create_connection((self.hostname, self.port), self.connect_timeout)
        except socket.timeout:
            raise ConnectTimeout() from None
        except OSError as e:
            raise ConnectFailed(str(e)) from None
        return self._connected(sock)

    def _connect_gen(self, deadline=0.0):
        """A new connection, as a generator (_exchange_c): the connect does not block the
        thread. Each address is tried as socket.create_connection() tries them, in getaddrinfo's
        order, on a non-blocking socket: connect() says EINPROGRESS, and the wait for it to be
        writable is yielded (a _netio.Wait for POLLOUT: the worker polls it with its other jobs'
        exchanges, so a blackholed endpoint no longer holds them up), then SO_ERROR says how the
        connect ended. Each wait is bounded by the connect timeout and by the call's deadline;
        the first error is the one raised (create_connection's choice): ConnectTimeout for a
        wait that expired, ConnectFailed for the others. A name lookup (not an address literal)
        still blocks, inside the blocking hooks as before. For https:// the TLS handshake
        follows, its waits yielded the same way (_handshake)."""
        if self._tls_error is not None:
            raise TLSFailed(self._tls_error)
        infos = self._addresses()
        first = None
        for family, kind, proto, _name, addr in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as e:
                first = first or ConnectFailed(str(e))
                continue
            try:
                sock.setblocking(False)
                rc = sock.connect_ex(addr)
                if rc in (errno.EINPROGRESS, errno.EINTR, errno.EAGAIN):
                    if not (yield _netio.Wait(sock.fileno(), _POLLOUT, self.connect_timeout,
                                              deadline)):
                        raise socket.timeout()
                    rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    raise OSError(rc, os.strerror(rc))
            except socket.timeout:
                sock.close()
                first = first or ConnectTimeout()
                continue
            except OSError as e:
                sock.close()
                first = first or ConnectFailed(str(e))
                continue
            except BaseException:
                sock.close()            # (the generator closed while it waited)
                raise
            conn = self._connected(sock)
            if self._tls is not None:
                try:
                    yield from self._handshake(conn, deadline)
                except BaseException:
                    conn.close()
                    raise
            return conn
        raise first or ConnectFailed("getaddrinfo returns an empty list")

    def _handshake(self, conn, deadline):
        """The TLS handshake of a new connection (a _netio.TLSConn), step by step: each wait for
        the socket is yielded (a _netio.Wait), bounded by the connect timeout (as urllib3 bounds
        botocore's handshake) and by the call's deadline: HandshakeTimeout; a failed
        verification or handshake raises TLSFailed (never tried again)."""
        while True:
            try:
                conn.do_handshake()
                return
            except ssl.SSLWantReadError:
                events = _POLLIN
            except ssl.SSLWantWriteError:
                events = _POLLOUT
            except OSError as e:
                raise TLSFailed(f"the TLS handshake failed: {e}") from None
            if not (yield _netio.Wait(conn.fileno(), events, self.connect_timeout, deadline)):
                raise HandshakeTimeout(self.connect_timeout)

    def _addresses(self):
        """getaddrinfo() of the endpoint as create_connection() asks it; the lookup of a name
        (not of an address literal, which needs none) inside the blocking hooks."""
        try:
            return socket.getaddrinfo(self.hostname, self.port, 0, socket.SOCK_STREAM, 0,
                                      socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        self._blocking_begin()
        try:
            return socket.getaddrinfo(self.hostname, self.port, 0, socket.SOCK_STREAM)
        except OSError as e:
            raise ConnectFailed(str(e)) from None
        finally:
            self._blocking_end()

    def _connected(self, sock):
        """A connected socket (blocking or not), set up for its exchanges: a TLSConn for
        https:// (non-blocking), else the socket, blocking with the read timeout."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._tls is not None:
                # The handshake: _handshake() (_connect_gen), or else the first exchange's or
                # send's (SSL_write's implicit one), in C, never blocking the worker.
                sock.setblocking(False)
                return _netio.TLSConn(self._tls, sock.detach(), self.hostname)
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
        except ssl.SSLError as e:
            sock.close()
            raise TLSFailed(getattr(e, "verify_message", None) or str(e)) from None
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
            if self._tls is not None:
                readable = not sock.idle_ok()   # TLS: records that are not data are fine
            else:
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

    def _exchange_c(self, head: bytes, payload: bytes, timeout: float, deadline=0.0, raw=False):
        """The same exchange, its socket calls without the GIL (_netio.pyx): it yields them as
        a _netio.Exchange and takes the result back (see run()). raw: a body of known length
        comes as a _netio.RawBody."""
        idle = self._idle
        while True:
            try:
                sock, check = idle.pop(), True
            except IndexError:
                sock, check = (yield from self._connect_gen(deadline)), False
            rc, err, rhead, rest, complete = yield _netio.Exchange(sock.fileno(), head, payload,
                                                                   check, timeout, deadline, raw)
            if rc != _netio.STALE:
                break
            sock.close()
        keep = False
        try:
            if rc != _netio.OK:
                if rc == _netio.TLS_FAILED:
                    raise TLSFailed(sock.detail)
                if rc == _netio.TLS_TIMEOUT:
                    raise HandshakeTimeout(timeout)
                if rc in (_netio.SEND_TIMEOUT, _netio.RECV_TIMEOUT):
                    raise ReadTimeout()
                if rc == _netio.HEAD_TOO_LARGE:
                    raise BadResponse("response header section too large")
                if rc == _netio.TOO_LARGE:
                    _status, _reason, headers, _v11 = _parse_head(rhead[:-4])
                    raise TooLarge(f"Content-Length {headers.get('content-length', '?')}",
                                   _request_id(headers))
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
            self._blocking_begin()  # a chunked body, or one up to the end: read here, blocking
            try:
                resp, keep = yield from _reading(
                    self._finish_response(sock, rhead[:-4], bytearray(rest), timeout, deadline))
            finally:
                self._blocking_end()
            return resp
        finally:
            self._release(sock, keep)

    def _exchange_py(self, head: bytes, payload: bytes, timeout: float, deadline=0.0):
        """The exchange in Python: https:// endpoints (and http:// in a build without _netio).
        With _netio the sockets do not block: where one would, this generator yields the wait
        (file descriptor, poll events, timeout) and takes back whether the socket is ready."""
        sock, _reused = self._checkout()
        keep = False
        try:
            yield from _send_request(sock, head, payload, timeout, deadline)
            resp, keep = yield from _reading(self._read_response(sock, timeout, deadline))
            return resp
        finally:
            self._release(sock, keep)

    def _read_response(self, sock, timeout, deadline=0.0):
        head, rest = yield from _read_head(sock, timeout, deadline)
        return (yield from self._finish_response(sock, head, rest, timeout, deadline))

    def _finish_response(self, sock, head, rest, timeout, deadline=0.0):
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
            body, complete = yield from _bounded(
                _read_chunked(sock, rest, timeout, deadline), headers)
        elif cl is not None:
            try:
                n = int(cl)
                if n < 0:
                    raise ValueError
            except ValueError:
                raise BadResponse(f"invalid Content-Length {cl[:40]!r}") from None
            if n > MAX_BODY:
                raise TooLarge(f"Content-Length {n}", _request_id(headers))
            body, complete = yield from _read_exact(sock, rest, n, timeout, deadline)
        else:
            body, complete = (yield from _bounded(
                _read_to_eof(sock, rest, timeout, deadline), headers)), False
        conn = headers.get("connection", "").lower()
        keep = complete and ("close" not in conn) and (version11 or "keep-alive" in conn)
        return Response(status, reason, headers, body), keep


    # ------------------------------------------------------------------ InvokeWithResponseStream

    def stream_gen(self, function_name: str, payload: bytes, qualifier: Optional[str] = None,
                   log_type: Optional[str] = None, client_context: Optional[str] = None,
                   trace_id: Optional[str] = None, tenant_id: Optional[str] = None,
                   read_timeout: Optional[float] = None, deadline: Optional[float] = None):
        """One InvokeWithResponseStream call up to the head of its answer, as a generator (of the
        socket waits of https:// endpoints; see run()). Returns (Response, DirectStream): an
        answer of status 300 or more has its whole body in the Response and no stream; otherwise
        the Response has no body and the DirectStream reads it. deadline (time.monotonic()): no
        wait for the head goes past it (ReadTimeout)."""
        deadline = deadline or 0.0
        if type(payload) is not bytes:
            payload = bytes(payload)
        head = self.request_head(function_name, payload, "RequestResponse", qualifier, log_type,
                                 client_context, stream=True, trace_id=trace_id,
                                 tenant_id=tenant_id)
        timeout = self.read_timeout if read_timeout is None else read_timeout
        sock, _reused = self._checkout()
        try:
            yield from _send_request(sock, head, payload, timeout, deadline)
            rhead, rest = yield from _reading(_read_head(sock, timeout, deadline))
            status, reason, headers, version11 = _parse_head(rhead)
            if status < 200:
                raise BadResponse(f"unexpected interim response {status}")
            if status >= 300:
                resp, keep = yield from _reading(
                    self._finish_response(sock, rhead, rest, timeout, deadline))
                self._release(sock, keep)
                sock = None
                return resp, None
            body = DirectStream(self, sock, status, headers, version11, rest, timeout)
            sock = None         # the stream's from here on
            return Response(status, reason, headers, _EMPTY), body
        finally:
            if sock is not None:
                sock.close()


class DirectStream(ResponseStream):
    """The body of a streamed answer, read from its connection as it arrives (chunked, as Lambda
    sends it; or delimited by Content-Length, or by the end of the connection). Its reads block
    (SO_RCVTIMEO: the read timeout) or, on https:// sockets that do not, wait in place (run())."""

    def __init__(self, client, sock, status, headers, version11, rest, timeout):
        self.client = client
        self.sock = sock
        self.timeout = timeout
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        conn = headers.get("connection", "").lower()
        self.reusable = ("close" not in conn) and (version11 or "keep-alive" in conn)
        self.complete = False       # read to its end, and nothing after it
        self._rest = bytes(rest)
        self._decoder = None
        self._left = None
        if status in (204, 304):
            self._left = 0
        elif te is not None and "chunked" in te.lower():
            self._decoder = ChunkedDecoder()
        elif cl is not None:
            try:
                self._left = int(cl)
                if self._left < 0:
                    raise ValueError
            except ValueError:
                raise BadResponse(f"invalid Content-Length {cl[:40]!r}") from None
        else:
            self.reusable = False   # delimited by the end of the connection

    def _pieces(self, amt):
        """The body's bytes as they are read; raises this module's exceptions."""
        sock = self.sock
        data = self._rest
        self._rest = b""
        dec = self._decoder
        while True:
            if data:
                if dec is not None:
                    for piece in dec.feed(data):
                        yield piece
                    if dec.done:
                        self.complete = dec.extra == 0
                        return
                elif self._left is not None:
                    if len(data) > self._left:
                        data = data[:self._left]
                        self.reusable = False
                    self._left -= len(data)
                    yield data
                else:
                    yield data
            if self._left == 0:
                self.complete = True
                return
            data = run(_reading(_recv(sock, amt, self.timeout)))
            if not data:
                if self._left is None and dec is None:
                    self.complete = True
                    return
                raise Closed("connection closed in the middle of the response stream")

    def chunks(self, amt: int = 65536):
        if self.sock is None:
            return
        try:
            yield from self._pieces(amt)
        except ReadTimeout:
            raise InvokeError("timeout", stream_timed_out(self.timeout)) from None
        except (Closed, BadResponse) as e:
            raise InvokeError("transport", stream_broke(str(e))) from None
        except OSError as e:
            raise InvokeError("transport", stream_broke(f"{type(e).__name__}: {e}")) from None

    def release_conn(self):
        """Done with the body: the connection goes back to the pool if it was read to its end."""
        sock, self.sock = self.sock, None
        if sock is not None:
            self.client._release(sock, self.complete and self.reusable)

    def close(self):
        """The body was not (all) read: the connection is dropped, never reused."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class DirectTransport(Transport):
    """The interface (base.Transport) over a DirectClient: the same outcomes as the boto3
    transport's for the same answers (tests/unit/test_transport.py)."""

    name = "direct"

    def __init__(self, boto_client, boto_session, credentials, connect_timeout: float,
                 read_timeout: float, pool_size: int, user_agent: str, hooks=NO_HOOKS):
        """Configured from the boto3 client (endpoint, region, signing name, service model) and
        session (CA bundle); credentials: the chain's (None: every call fails "no AWS
        credentials")."""
        meta = boto_client.meta
        core = boto_session._session    # botocore session: the config chain boto3 uses
        ca_bundle = core.get_config_variable("ca_bundle")
        if ca_bundle is None:
            from botocore.httpsession import get_cert_path
            ca_bundle = get_cert_path(True)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.client = DirectClient(
            meta.endpoint_url, meta.region_name, meta.service_model.signing_name,
            # The same provider chain the client uses; RefreshableCredentials refresh themselves.
            credentials, connect_timeout, read_timeout, pool_size, user_agent,
            ca_bundle=ca_bundle, verify=True, hooks=hooks)
        # invoke_gen() yields its socket work (http:// exchanges, https:// waits).
        self.multiplexed = self.client.yields_io
        # Error answers are parsed by botocore's own parser, as the boto3 transport does.
        import botocore.parsers
        self._parser = botocore.parsers.create_parser(meta.service_model.metadata["protocol"])
        self._shapes = {op: meta.service_model.operation_model(op).output_shape
                        for op in ("Invoke", "InvokeWithResponseStream")}

    def run(self, gen):
        return run(gen)

    def close(self):
        self.client.close()

    def _call(self, start, timeout):
        """yield from start() (a DirectClient generator), tried once more when it could not
        connect, its exceptions turned into InvokeError."""
        try:
            try:
                return (yield from start())
            except ConnectFailed:
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                return (yield from start())
        except ReadTimeout:
            raise InvokeError("timeout", read_timed_out(timeout or self.read_timeout)) from None
        except ConnectTimeout:
            raise InvokeError("timeout", connect_timed_out(self.connect_timeout)) from None
        except ConnectFailed:
            raise InvokeError("transport", cannot_connect(self.client.endpoint_url)) from None
        except HandshakeTimeout as e:
            raise InvokeError("timeout", f"timed out after {e.args[0]:g}s in the TLS handshake "
                              f"with the Lambda endpoint") from None
        except TLSFailed as e:
            # Certificate verification or the handshake failed: never tried again.
            raise InvokeError("transport", f"TLS with the Lambda endpoint "
                              f"{self.client.endpoint_url} failed: {e}") from None
        except Closed:
            raise InvokeError("transport", CLOSED_BEFORE_ANSWER) from None
        except NoCredentials:
            raise InvokeError("credentials", NO_CREDENTIALS) from None
        except StsError as e:
            # The object's role could not be assumed (credentials.py): nothing was sent.
            raise InvokeError("sts", str(e)) from None
        except BadResponse as e:
            raise InvokeError("transport", f"invalid HTTP response from the Lambda endpoint: "
                              f"{e}") from None
        except TooLarge as e:
            raise InvokeError("too_large", answer_too_large(e.args[0]), e.request_id) from None

    def _service_error(self, r, op, rec):
        """InvokeError for an answer of status 300 or more (botocore raises ClientError for
        these, with what its parser made of the answer)."""
        parsed = self._parser.parse({"status_code": r.status, "headers": r.headers,
                                     "body": r.body}, self._shapes[op])
        meta = parsed.get("ResponseMetadata", {})
        rec.status, rec.request_id = meta.get("HTTPStatusCode"), meta.get("RequestId") or None
        return service_error(parsed, r.body)

    def invoke_gen(self, request: InvokeRequest, rec):
        client = self.client
        r = yield from self._call(
            lambda: client.invoke_gen(request.function_name, request.payload,
                                      request.invocation_type, request.qualifier,
                                      request.log_type, request.client_context, request.timeout,
                                      request.deadline, request.trace_id, request.tenant_id,
                                      request.raw_body),
            request.timeout)
        if r.status >= 300:
            if type(r.body) is not bytes:
                r.body = bytes(r.body)
            raise self._service_error(r, "Invoke", rec)
        function_error = rec.answer(r.status, r.headers, len(r.body))
        if function_error:
            if type(r.body) is not bytes:
                r.body = bytes(r.body)
            raise InvokeError("function_error", function_error_reason(function_error, r.body),
                              rec.request_id, r.status)
        return InvokeResult(r.body, r.status, rec)

    def invoke_stream(self, request: InvokeRequest, rec) -> StreamResult:
        client = self.client
        r, body = run(self._call(
            lambda: client.stream_gen(request.function_name, request.payload, request.qualifier,
                                      request.log_type, request.client_context,
                                      request.trace_id, request.tenant_id, request.timeout,
                                      request.deadline),
            request.timeout))
        if body is None:
            raise self._service_error(r, "InvokeWithResponseStream", rec)
        rec.answer(r.status, r.headers, 0)     # (the body's bytes: counted by its reader)
        return StreamResult(body, r.status, r.headers.get("content-type"), rec)


def run(gen):
    """Run an invoke_gen() generator to its end in this thread, each piece of socket work it
    yields (a _netio.Exchange or _netio.Wait) done here with its run(); returns what it returns."""
    try:
        op = next(gen)
        while True:
            op = gen.send(op.run())
    except StopIteration as e:
        return e.value


def _await(sock, events, timeout, deadline=0.0):
    """A socket call would block: on a non-blocking socket, yield the wait for it to be ready for
    events; on a blocking one its own timeout (SO_RCVTIMEO/SO_SNDTIMEO) has expired."""
    if sock.getblocking() or not (yield _netio.Wait(sock.fileno(), events, timeout, deadline)):
        raise ReadTimeout() from None


def _send_request(sock, head: bytes, payload: bytes, timeout: float, deadline: float):
    """Send a request's head and payload (one write when the payload is small), as a generator of
    the socket waits (see _send_all); a send that cannot finish is ReadTimeout, a broken socket
    Closed."""
    try:
        if len(payload) <= 16384:
            yield from _send_all(sock, head + payload, timeout, deadline)
        else:
            yield from _send_all(sock, head, timeout, deadline)
            yield from _send_all(sock, payload, timeout, deadline)
    except (BlockingIOError, ssl.SSLWantWriteError, socket.timeout, ReadTimeout):
        raise ReadTimeout() from None
    except OSError as e:
        raise Closed(str(e)) from None


def _send_all(sock, data, timeout, deadline=0.0):
    """Send data on a blocking socket, or on a non-blocking one, yielding its waits."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except (BlockingIOError, ssl.SSLWantWriteError):
            yield from _await(sock, _POLLOUT, timeout, deadline)
            continue
        except ssl.SSLWantReadError:
            yield from _await(sock, _POLLIN, timeout, deadline)
            continue
        view = view[n:]


def _check_deadline(sock, timeout, deadline):
    """Before a read of a blocking socket (whose own timeout is per read): ReadTimeout when the
    call's deadline has passed, or nothing arrives before it."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ReadTimeout()
    if left < timeout and sock.getblocking() and not (hasattr(sock, "pending") and sock.pending()):
        if not select.select((sock,), (), (), left)[0]:
            raise ReadTimeout()


def _recv(sock, n, timeout, deadline=0.0):
    """sock.recv(n), on a blocking socket, or on a non-blocking one, yielding its waits."""
    if deadline:
        _check_deadline(sock, timeout, deadline)
    while True:
        try:
            return sock.recv(n)
        except (BlockingIOError, ssl.SSLWantReadError):
            yield from _await(sock, _POLLIN, timeout, deadline)
        except ssl.SSLWantWriteError:
            yield from _await(sock, _POLLOUT, timeout, deadline)


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


def _request_id(headers):
    return headers.get("x-amzn-requestid") or headers.get("x-amz-request-id") or None


def _bounded(gen, headers):
    """yield from gen (a body reader), its TooLarge given the answer's request id."""
    try:
        return (yield from gen)
    except TooLarge as e:
        raise TooLarge(e.args[0], _request_id(headers)) from None


def _parse_head(head: bytes):
    if _httphead is not None and type(head) is bytes:
        parsed = _httphead.parse(head)     # the plain head, in C; None: parsed here
        if parsed is not None:
            return parsed
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


def _read_exact(sock, rest, n, timeout, deadline=0.0):
    """(body, clean): clean is False when the endpoint sent more than Content-Length (the
    connection is then not reused, as urllib3 would drop it at its next use)."""
    if len(rest) >= n:
        return bytes(rest[:n]), len(rest) == n
    body = bytearray(n)
    view = memoryview(body)
    have = len(rest)
    view[:have] = rest
    while have < n:
        if deadline:
            _check_deadline(sock, timeout, deadline)
        try:
            got = sock.recv_into(view[have:])
        except (BlockingIOError, ssl.SSLWantReadError):
            yield from _await(sock, _POLLIN, timeout, deadline)
            continue
        except ssl.SSLWantWriteError:
            yield from _await(sock, _POLLOUT, timeout, deadline)
            continue
        if not got:
            raise Closed("connection closed in the middle of the response body")
        have += got
    return bytes(body), True


def _read_to_eof(sock, rest, timeout, deadline=0.0):
    body = bytearray(rest)
    while True:
        if len(body) > MAX_BODY:
            raise TooLarge(f"more than {MAX_BODY} bytes")
        chunk = yield from _recv(sock, 262144, timeout, deadline)
        if not chunk:
            return bytes(body)
        body += chunk


def _read_head(sock, timeout, deadline=0.0):
    """(head without its final CRLFCRLF, the bytes read after it) of a response."""
    buf = bytearray()
    while True:
        end = buf.find(_CRLF2)
        if end >= 0:
            return bytes(buf[:end]), buf[end + 4:]
        if len(buf) > MAX_HEAD:
            raise BadResponse("response header section too large")
        chunk = yield from _recv(sock, 65536, timeout, deadline)
        if not chunk:
            raise Closed("connection closed before the response")
        buf += chunk


def _read_chunked(sock, rest, timeout, deadline=0.0):
    """(body, clean) of a chunked body; trailers are read and ignored."""
    dec = ChunkedDecoder()
    body = bytearray()
    for piece in dec.feed(rest):
        body += piece
    while not dec.done:
        if len(body) > MAX_BODY:
            raise TooLarge(f"more than {MAX_BODY} bytes")
        chunk = yield from _recv(sock, 262144, timeout, deadline)
        if not chunk:
            raise Closed("connection closed in the middle of a chunked body")
        for piece in dec.feed(chunk):
            body += piece
    if len(body) > MAX_BODY:
        raise TooLarge(f"more than {MAX_BODY} bytes")
    return bytes(body), dec.extra == 0


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """An incremental decoder of a chunked body (RFC 9112, 7.1): feed() takes the bytes as they
    are read and returns the body's bytes decoded so far; done once the last chunk and the trailers
    (ignored) are in; extra counts the bytes that came after them. Raises BadResponse."""

    __slots__ = ("_buf", "_state", "_left", "done", "extra")

    def __init__(self):
        self._buf = bytearray()
        self._state = _SIZE
        self._left = 0
        self.done = False
        self.extra = 0

    def feed(self, data) -> list:
        out = []
        if self.done:
            self.extra += len(data)
            return out
        # The bytes are read where they came: a piece of chunk data is one copy of them (none when
        # the whole read is chunk data). Only an unfinished size line, CRLF or trailer section
        # waits in _buf for the next read (chunk data never does), and is joined to it.
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)
        pos = 0
        n = len(data)
        view = memoryview(data)
        try:
            while True:
                state = self._state
                if state == _DATA:
                    k = min(self._left, n - pos)
                    if k:
                        out.append(data if k == n and type(data) is bytes
                                   else bytes(view[pos:pos + k]))
                        pos += k
                        self._left -= k
                    if self._left:
                        break
                    self._state = _DATA_END
                elif state == _DATA_END:
                    if n - pos < 2:
                        break
                    if data[pos:pos + 2] != b"\r\n":
                        raise BadResponse("chunk not terminated by CRLF")
                    pos += 2
                    self._state = _SIZE
                else:
                    i = data.find(b"\r\n", pos)
                    if i < 0:
                        if state == _SIZE and n - pos > 4096:
                            raise BadResponse("chunk size line too long")
                        if state == _TRAILER and n - pos > 65536:
                            raise BadResponse("trailer section too large")
                        break
                    line = bytes(view[pos:i])
                    pos = i + 2
                    if state == _TRAILER:
                        if not line:            # the empty line after the trailers (ignored)
                            self._state = _DONE
                            self.done = True
                            self.extra = n - pos
                            pos = n
                            break
                        continue
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                        if size < 0:
                            raise ValueError
                    except ValueError:
                        raise BadResponse(f"invalid chunk size {size_text[:20]!r}") from None
                    if size == 0:
                        self._state = _TRAILER
                    else:
                        self._left = size
                        self._state = _DATA
            if pos < n:
                buf += view[pos:]
        finally:
            view.release()
        return out
