# cython: language_level=3
"""One HTTP/1.1 request/response exchange on a connected plain-TCP or TLS socket, without the GIL.

The direct transport (direct.py) uses it for http:// and https:// endpoints. Done in Python, the same exchange
releases and re-takes the GIL at every socket call (the idle check, the send, each read); with the
pool's worker threads contending for the GIL, each of those hand-offs costs futex wake-ups and
context switches, which profiles showed to be most of the CPU of a Lambda fetch. Here an exchange is
a non-blocking state machine (struct xchg, _netio.pxd): check that an idle connection is still open,
send the request, read the response head and, when it has a Content-Length, the whole body.
Everything else (chunked bodies, bodies up to the end of the connection, status lines and headers)
stays in Python.

exchange() drives one exchange to its end (one GIL release); a worker of the pool drives the
exchanges of all the jobs it has in flight with one poll() (_handoff.pyx). Timeouts: a send or
receive that waits longer than the read timeout ends the exchange, as the socket timeouts of
botocore's connections do.

https:// (the second half of this file): TLS is OpenSSL's, called from here on the same
non-blocking sockets (SSL_read/SSL_write; SSL_ERROR_WANT_READ/WANT_WRITE become the poll events the
exchange waits for), so that TLS records cost no interpreter lock either. A TLSConn owns its socket
and its SSL; it registers the pair under its file descriptor, and xchg_begin() finds it there: the
exchanges that the worker pool yields and drives (_handoff.pyx) stay (fd, head, payload, ...). The
direct transport does the handshake of a new connection step by step before its first exchange
(TLSConn.do_handshake, each wait yielded to the worker's poll, bounded by the connect timeout);
where it has not, the first exchange does it (OpenSSL's implicit handshake in SSL_write), so it
never blocks the worker's other exchanges either; its failures end the exchange with TLS_FAILED
(nothing was sent) and the reason OpenSSL gives (TLSConn.detail). TLSContext is one
SSL_CTX, built here with botocore's verification settings (see TLSContext), shared by the
connections to one endpoint, with the session to resume for new connections.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport EAGAIN, EINTR, errno
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.string cimport memcpy
from posix.time cimport timespec
from posix_thread cimport clock_gettime, CLOCK_MONOTONIC
from posix_io cimport (EWOULDBLOCK, send, recv, MSG_NOSIGNAL, MSG_PEEK, MSG_DONTWAIT, memmem,
                       pollfd, poll, POLLIN, POLLOUT)
from posix_io cimport close as _close_fd
from posix_thread cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                           pthread_mutex_unlock, pthread_mutex_destroy)
from libc.errno cimport EPIPE, EPROTO
from libc.string cimport strlen, strncpy
from libc.limits cimport INT_MAX
cimport openssl as ossl

# Outcomes (exchange()'s first value).
cdef enum:
    C_OK = 0
    C_STALE = 1             # the idle connection was closed (or has unread data): nothing was sent
    C_SEND_TIMEOUT = 2
    C_SEND_ERROR = 3
    C_RECV_TIMEOUT = 4
    C_RECV_ERROR = 5
    C_EOF_BEFORE_HEAD = 6   # the endpoint closed the connection before a complete response head
    C_HEAD_TOO_LARGE = 7
    C_NO_MEMORY = 8
    C_TLS_FAILED = 9        # the TLS handshake failed (verification, protocol): nothing was sent
    C_TLS_TIMEOUT = 10      # the TLS handshake took longer than the timeout: nothing was sent
    C_TOO_LARGE = 11        # the head's Content-Length is beyond MAX_BODY (limits.py): not read

OK = C_OK
STALE = C_STALE
SEND_TIMEOUT = C_SEND_TIMEOUT
SEND_ERROR = C_SEND_ERROR
RECV_TIMEOUT = C_RECV_TIMEOUT
RECV_ERROR = C_RECV_ERROR
EOF_BEFORE_HEAD = C_EOF_BEFORE_HEAD
HEAD_TOO_LARGE = C_HEAD_TOO_LARGE
NO_MEMORY = C_NO_MEMORY
TLS_FAILED = C_TLS_FAILED
TLS_TIMEOUT = C_TLS_TIMEOUT
TOO_LARGE = C_TOO_LARGE

from vmod_lambda.limits import MAX_RESPONSE_HEAD as _MAX_RESPONSE_HEAD
from vmod_lambda.limits import MAX_RESPONSE_BODY as _MAX_RESPONSE_BODY


# --- TLS state (the functions are at the end of the file) ---

cdef struct tls_shared:
    # What the connections of one TLSContext share: the SSL_CTX, the session to resume, counters.
    ossl.SSL_CTX *ctx
    pthread_mutex_t mtx
    ossl.SSL_SESSION *session       # the newest resumable session the endpoint gave (or NULL)
    unsigned long handshakes        # handshakes done (full or resumed)
    unsigned long resumed           # of which resumed a session

cdef struct tls_conn:
    ossl.SSL *ssl
    int fd
    tls_shared *sh
    bint counted                    # its handshake is counted (done)
    bint fatal                      # OpenSSL failed on it: no close_notify, never reused
    bint hs_failed                  # the handshake failed (detail says why)
    char detail[240]

# The longest response head read (limits.py); no initializer on C globals (see DESIGN).
cdef size_t MAX_HEAD
MAX_HEAD = _MAX_RESPONSE_HEAD
# The longest response body of an exchange (limits.py: Lambda's 6 MB and framing): a longer
# Content-Length ends the exchange with TOO_LARGE before any of the body is read or allocated.
cdef long long MAX_BODY
MAX_BODY = _MAX_RESPONSE_BODY


cdef inline char _lower(char c) noexcept nogil:
    if c >= c'A' and c <= c'Z':
        return c + 32
    return c


cdef bint _is_name(const char *line, size_t n, const char *name) noexcept nogil:
    """line starts with name (lower case, ending in ':'), case-insensitively."""
    cdef size_t i = 0
    while name[i] != 0:
        if i >= n or _lower(line[i]) != name[i]:
            return False
        i += 1
    return True


cdef long long _framing(const char *buf, size_t head_len, bint *chunked) noexcept nogil:
    """Content-Length of a response head (-1: none or invalid), and whether it has a
    Transfer-Encoding. Status codes without a body (1xx, 204, 304) count as no Content-Length."""
    cdef size_t i, j, start
    cdef long long cl = -1, v
    cdef bint digits
    chunked[0] = False
    if head_len < 12:
        return -1
    if buf[9] == c'1' or (buf[9] == c'2' and buf[10] == c'0' and buf[11] == c'4') or \
            (buf[9] == c'3' and buf[10] == c'0' and buf[11] == c'4'):
        return -1
    i = 0
    while i < head_len:
        # Next line start.
        while i < head_len and buf[i] != c'\n':
            i += 1
        i += 1
        if i >= head_len:
            break
        if _is_name(buf + i, head_len - i, "transfer-encoding:"):
            chunked[0] = True
        elif _is_name(buf + i, head_len - i, "content-length:"):
            j = i + 15
            while j < head_len and (buf[j] == c' ' or buf[j] == c'\t'):
                j += 1
            start = j
            v = 0
            digits = False
            while j < head_len and buf[j] >= c'0' and buf[j] <= c'9' and v < (1LL << 40):
                v = v * 10 + (buf[j] - c'0')
                digits = True
                j += 1
            while j < head_len and (buf[j] == c' ' or buf[j] == c'\t'):
                j += 1
            if not digits or j >= head_len or buf[j] != c'\r' or (cl >= 0 and cl != v):
                return -2           # invalid or conflicting: Python reports it
            cl = v
    return cl


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline void _fail(xchg *x, int rc, int err) noexcept nogil:
    x.rc = rc
    x.err = err
    x.state = X_DONE


cdef inline double _until(const xchg *x, double t) noexcept nogil:
    """t, or the exchange's end when that comes first."""
    return x.end if x.end > 0 and x.end < t else t


cdef inline void _init(xchg *x, int fd, xchg_state state, double timeout, double end) noexcept nogil:
    x.fd = fd
    x.state = state
    x.rc = C_OK
    x.err = 0
    x.buf = NULL
    x.is_wait = False
    x.check_idle = False
    x.timeout = timeout
    x.end = end
    x.deadline = _until(x, _now() + timeout)
    x.tls = NULL
    x.tls_events = 0
    x.raw = False
    x.body = NULL


cdef void xchg_begin(xchg *x, int fd, const char *h, size_t hn, const char *pl, size_t pn,
                     bint check_idle, double timeout, double end) noexcept nogil:
    """Set up an exchange (no system call: the caller may hold the GIL). Then xchg_progress()
    (at once: it checks that an idle connection is still open and sends what the socket takes)
    and again whenever poll() reports xchg_events()."""
    _init(x, fd, X_SEND, timeout, end)
    x.h = h
    x.hn = hn
    x.pl = pl
    x.pn = pn
    x.sent = 0
    x.buf = NULL
    x.cap = 16384
    x.have = 0
    x.head_len = 0
    x.want = 0
    x.complete = False
    x.check_idle = check_idle
    x.tls = _tls_for(fd)
    x.buf = <char *>PyMem_RawMalloc(x.cap)
    if x.buf == NULL:
        _fail(x, C_NO_MEMORY, 0)


cdef void xchg_wait(xchg *x, int fd, short events, double timeout, double end) noexcept nogil:
    """Not an exchange: wait until fd is ready for events (poll()), at most timeout seconds (the
    Python exchange of https:// endpoints yields these, see direct.py)."""
    _init(x, fd, X_WAIT, timeout, end)
    x.is_wait = True
    x.wait_events = events


cdef bint _send_some(xchg *x) noexcept nogil:
    """Send until done or the socket is full. True: all sent."""
    cdef ssize_t r
    cdef size_t total = x.hn + x.pn
    cdef size_t n
    while x.sent < total:
        if x.sent < x.hn:
            if x.pn <= 16384 and x.sent == 0 and x.hn + x.pn <= x.cap:
                # Small request: one segment (head and payload copied together).
                memcpy(x.buf, x.h, x.hn)
                memcpy(x.buf + x.hn, x.pl, x.pn)
                r = _tx(x, x.buf, total)
            else:
                r = _tx(x, x.h + x.sent, x.hn - x.sent)
        else:
            n = x.sent - x.hn
            r = _tx(x, x.pl + n, x.pn - n)
        if r < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return False
            _fail(x, _tls_rc(x, C_SEND_ERROR), errno)
            return False
        x.sent += <size_t>r
        x.deadline = _until(x, _now() + x.timeout)
    return True


cdef bint _recv_some(xchg *x) noexcept nogil:
    """Read what is there into the buffer (growing it as the state allows). True: progress."""
    cdef ssize_t r
    cdef char *nb
    cdef void *end
    cdef size_t limit
    while True:
        if x.state == X_HEAD and x.have == x.cap:
            if x.cap >= MAX_HEAD:
                _fail(x, C_HEAD_TOO_LARGE, 0)
                return False
            nb = <char *>PyMem_RawRealloc(x.buf, x.cap * 2)
            if nb == NULL:
                _fail(x, C_NO_MEMORY, 0)
                return False
            x.buf = nb
            x.cap *= 2
        limit = (x.want if x.state == X_BODY else x.cap) - x.have
        if limit == 0:
            return True
        if x.body != NULL:
            r = _rx(x, x.body + (x.have - x.head_len), limit)   # (X_BODY only)
        else:
            r = _rx(x, x.buf + x.have, limit)
        if r < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return False
            _fail(x, _tls_rc(x, C_RECV_ERROR), errno)
            return False
        if r == 0:
            # Closed before the head, or in the middle of a body of known length.
            _fail(x, C_EOF_BEFORE_HEAD if x.state == X_HEAD else C_RECV_ERROR, 0)
            return False
        x.deadline = _until(x, _now() + x.timeout)
        if x.state == X_HEAD:
            end = memmem(x.buf + (x.have - 3 if x.have >= 3 else 0),
                         <size_t>r + (3 if x.have >= 3 else x.have), b"\r\n\r\n", 4)
            x.have += <size_t>r
            if end != NULL:
                x.head_len = <size_t>(<char *>end - x.buf) + 4
                return True
        else:
            x.have += <size_t>r
            if x.have >= x.want:
                return True


cdef bint _head_done(xchg *x) noexcept nogil:
    """The head is in: know the body's length, or leave the rest to Python. True: done."""
    cdef bint chunked = False
    cdef long long cl = _framing(x.buf, x.head_len, &chunked)
    cdef char *nb
    if cl < 0 or chunked:
        x.state = X_DONE          # chunked, to EOF or invalid: Python reads (or rejects) the rest
        return True
    if cl > MAX_BODY:
        x.rc = C_TOO_LARGE        # the head stays in the buffer, for Python to name the answer
        x.state = X_DONE
        return True
    x.want = x.head_len + <size_t>cl
    if x.raw and x.have <= x.want:
        # The body in a buffer of its own, sized from the Content-Length, that the caller can
        # take over (RawBody): no copy of it is made after it is received. What the head's
        # reads took of it moves there; the rest is read straight into it.
        x.body = <char *>PyMem_RawMalloc(<size_t>cl + 1)
        if x.body == NULL:
            _fail(x, C_NO_MEMORY, 0)
            return True
        memcpy(x.body, x.buf + x.head_len, x.have - x.head_len)
        x.body[cl] = 0
    elif x.want > x.cap:
        nb = <char *>PyMem_RawRealloc(x.buf, x.want)
        if nb == NULL:
            _fail(x, C_NO_MEMORY, 0)
            return True
        x.buf = nb
        x.cap = x.want
    x.state = X_BODY
    if x.have >= x.want:
        x.complete = x.have == x.want
        x.state = X_DONE
        return True
    return False


cdef bint xchg_progress(xchg *x) noexcept nogil:
    """Advance as far as the socket allows without blocking. True: the exchange is over."""
    cdef char probe
    cdef ssize_t r
    if x.state == X_WAIT:
        x.state = X_DONE        # poll() says it is ready
        return True
    x.tls_events = 0
    if x.check_idle and x.tls != NULL:
        x.check_idle = False
        if not _tls_idle_ok(<tls_conn *>x.tls):
            _fail(x, C_STALE, 0)
            return True
    if x.check_idle:
        x.check_idle = False
        # A healthy idle HTTP connection has nothing to read: readable means EOF or garbage.
        r = recv(x.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT)
        if not (r < 0 and (errno == EAGAIN or errno == EWOULDBLOCK)):
            _fail(x, C_STALE, 0)
            return True
    if x.state == X_SEND:
        if not _send_some(x):
            return x.state == X_DONE
        # All sent: the answer cannot be there yet; wait for it (poll) rather than try a read.
        x.state = X_HEAD
        return False
    if x.state == X_HEAD:
        if not _recv_some(x):
            return x.state == X_DONE
        if x.head_len == 0:
            return False
        if _head_done(x):
            return True
    if x.state == X_BODY:
        if _recv_some(x) and x.have >= x.want:
            x.complete = x.have == x.want
            x.state = X_DONE
    return x.state == X_DONE


cdef short xchg_events(const xchg *x) noexcept nogil:
    if x.state == X_WAIT:
        return x.wait_events
    if x.tls_events:
        return x.tls_events     # OpenSSL needs to read (a handshake, a record) or to write
    return POLLOUT if x.state == X_SEND else POLLIN


cdef void xchg_expire(xchg *x) noexcept nogil:
    """The current wait passed the read timeout."""
    if x.tls != NULL and not ossl.SSL_is_init_finished((<tls_conn *>x.tls).ssl):
        _fail(x, C_TLS_TIMEOUT, 0)
        return
    _fail(x, C_SEND_TIMEOUT if x.state == X_SEND else C_RECV_TIMEOUT, 0)


cdef void xchg_clear(xchg *x) noexcept nogil:
    PyMem_RawFree(x.buf)
    x.buf = NULL
    PyMem_RawFree(x.body)
    x.body = NULL


cdef class RawBody:
    """A response body in a buffer of its own (see _netio.pxd): bytes-like until detached."""

    def __dealloc__(self):
        PyMem_RawFree(self.p)
        self.p = NULL

    def __len__(self):
        return self.n

    def __bytes__(self):
        return PyBytes_FromStringAndSize(self.p, self.n)

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.p if self.p != NULL else <char *>"", self.n, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __repr__(self):
        return f"<RawBody of {self.n} bytes>"

    cdef char *detach(self, size_t *n) noexcept:
        """The buffer (PyMem_RawFree it; n: its length, NUL-terminated), now the caller's; NULL
        while a view of it is held (a memoryview: it would point into freed memory)."""
        cdef char *p = self.p
        if p == NULL or self.exports:
            return NULL
        n[0] = self.n
        self.p = NULL
        self.n = 0
        return p


def detach(RawBody body):
    """RawBody.detach() from Python, for the tests: (the bytes it handed over, whether they were
    NUL-terminated), the buffer then freed; None when it refused."""
    cdef size_t n = 0
    cdef char *p = body.detach(&n)
    if p == NULL:
        return None
    try:
        return PyBytes_FromStringAndSize(p, n), p[n] == 0
    finally:
        PyMem_RawFree(p)


cdef RawBody _raw_body(xchg *x):
    cdef RawBody b = RawBody.__new__(RawBody)
    b.n = x.want - x.head_len
    b.p = x.body
    x.body = NULL
    return b


cdef object xchg_result(xchg *x):
    """(outcome, errno, response head incl. the blank line, body or its start, complete), as
    exchange() returns it (TOO_LARGE: the head, and no body); frees the exchange's buffer. For a
    wait: whether it is ready."""
    if x.is_wait:
        return x.rc == C_OK
    try:
        if x.rc == C_TOO_LARGE:
            return x.rc, 0, PyBytes_FromStringAndSize(x.buf, x.head_len), None, False
        if x.rc != C_OK:
            return x.rc, x.err, None, None, False
        if x.body != NULL and x.complete:
            return x.rc, 0, PyBytes_FromStringAndSize(x.buf, x.head_len), _raw_body(x), True
        return (x.rc, 0, PyBytes_FromStringAndSize(x.buf, x.head_len),
                PyBytes_FromStringAndSize(x.buf + x.head_len, x.have - x.head_len), x.complete)
    finally:
        xchg_clear(x)


cdef void _drive(xchg *x) noexcept nogil:
    """Run x (an exchange or a wait) to its end here, polling its socket."""
    cdef pollfd pfd
    cdef double left
    cdef int r
    if x.state != X_DONE and not x.is_wait:
        xchg_progress(x)        # the idle check, and what the socket takes of the request now
    while x.state != X_DONE:
        left = x.deadline - _now()
        if left <= 0:
            xchg_expire(x)
            break
        pfd.fd = x.fd
        pfd.events = xchg_events(x)
        pfd.revents = 0
        r = poll(&pfd, 1, <int>(left * 1000) + 1)
        if r < 0 and errno != EINTR:
            _fail(x, C_RECV_ERROR, errno)
            break
        if r > 0:
            xchg_progress(x)


def exchange(int fd, bytes head, bytes payload, bint check_idle, double timeout, double end=0,
             bint raw=False):
    """(outcome, errno, response head incl. the blank line, body or its start, complete).

    raw: a complete body with a Content-Length comes as a RawBody (its receive buffer, which the
    caller may take over) instead of bytes.

    complete: the body is whole (Content-Length read); otherwise the caller reads the rest
    (chunked, to EOF) from the socket, starting with the bytes returned. A send or receive that
    waits longer than timeout seconds ends the exchange (SEND_TIMEOUT, RECV_TIMEOUT), and so does
    the end (monotonic time; 0: none), however the bytes trickle."""
    cdef xchg x
    cdef const char *h = head
    cdef size_t hn = len(head)
    cdef const char *pl = payload
    cdef size_t pn = len(payload)
    with nogil:
        xchg_begin(&x, fd, h, hn, pl, pn, check_idle, timeout, end)
        x.raw = raw
        _drive(&x)
    return xchg_result(&x)


def wait(int fd, short events, double timeout, double end=0):
    """Whether fd became ready for events (poll()) within timeout seconds, without the GIL (a
    failing poll() counts as ready: the next socket call reports the error)."""
    cdef xchg x
    with nogil:
        xchg_wait(&x, fd, events, timeout, end)
        _drive(&x)
    return x.rc != C_RECV_TIMEOUT


cdef class Op:
    """Socket work yielded by a job's generator (see _netio.pxd)."""

    cdef void begin(self, xchg *x) noexcept:
        xchg_wait(x, -1, 0, 0.0, 0.0)   # (never yielded as such: only its subclasses are)

    def run(self):
        raise NotImplementedError


cdef class Exchange(Op):

    def __cinit__(self, int fd, bytes head, bytes payload, bint check_idle, double timeout,
                  double end=0, bint raw=False):
        self.fd = fd
        self.raw = raw
        self.head = head
        self.payload = payload
        self.check_idle = check_idle
        self.timeout = timeout
        self.end = end

    cdef void begin(self, xchg *x) noexcept:
        xchg_begin(x, self.fd, self.head, len(self.head), self.payload, len(self.payload),
                   self.check_idle, self.timeout, self.end)
        x.raw = self.raw

    def run(self):
        return exchange(self.fd, self.head, self.payload, self.check_idle, self.timeout, self.end,
                        self.raw)


cdef class Wait(Op):

    def __cinit__(self, int fd, short events, double timeout, double end=0):
        self.fd = fd
        self.events = events
        self.timeout = timeout
        self.end = end

    cdef void begin(self, xchg *x) noexcept:
        xchg_wait(x, self.fd, self.events, self.timeout, self.end)

    def run(self):
        return wait(self.fd, self.events, self.timeout, self.end)


# ------------------------------------------------------------------------------------------- TLS

cimport libc.errno as _errno
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE

import ipaddress as _ipaddress
import os as _os
import ssl as _ssl


class TLSError(Exception):
    """A TLS handshake failed (certificate verification, protocol, a cut during the handshake),
    or a CA bundle could not be loaded: the request was not sent. Not an OSError, so that no
    caller takes it for a connection that broke and tries again."""


# fd -> tls_conn of the live TLSConns (xchg_begin looks exchanges up here). Registered and
# unregistered with the GIL held; looked up with or without it: under reg_mtx. No lock at all
# while no TLS connection exists (plain http:// only). No initializers on C globals (DESIGN).
cdef pthread_mutex_t reg_mtx
cdef tls_conn **reg
cdef size_t reg_cap
cdef int reg_count
pthread_mutex_init(&reg_mtx, NULL)
reg = NULL
reg_cap = 0
reg_count = 0


cdef tls_conn *_tls_for(int fd) noexcept nogil:
    cdef tls_conn *c = NULL
    if reg_count == 0 or fd < 0:
        return NULL
    pthread_mutex_lock(&reg_mtx)
    if <size_t>fd < reg_cap:
        c = reg[fd]
    pthread_mutex_unlock(&reg_mtx)
    return c


cdef int _register(tls_conn *c) except -1:
    global reg, reg_cap, reg_count
    cdef size_t cap, i
    cdef tls_conn **nr
    pthread_mutex_lock(&reg_mtx)
    try:
        if <size_t>c.fd >= reg_cap:
            cap = reg_cap * 2 if reg_cap else 1024
            while cap <= <size_t>c.fd:
                cap *= 2
            nr = <tls_conn **>PyMem_RawRealloc(reg, cap * sizeof(tls_conn *))
            if nr == NULL:
                raise MemoryError()
            for i in range(reg_cap, cap):
                nr[i] = NULL
            reg = nr
            reg_cap = cap
        reg[c.fd] = c
        reg_count += 1
    finally:
        pthread_mutex_unlock(&reg_mtx)
    return 0


cdef void _unregister(tls_conn *c) noexcept nogil:
    global reg_count
    pthread_mutex_lock(&reg_mtx)
    if <size_t>c.fd < reg_cap and reg[c.fd] == c:
        reg[c.fd] = NULL
        reg_count -= 1
    pthread_mutex_unlock(&reg_mtx)


cdef void _set_detail(tls_conn *c, const char *text) noexcept nogil:
    strncpy(c.detail, text, sizeof(c.detail) - 1)
    c.detail[sizeof(c.detail) - 1] = 0


cdef void _note_handshake(tls_conn *c) noexcept nogil:
    """Count c's handshake once it is done (TLSContext.stats)."""
    if c.counted or not ossl.SSL_is_init_finished(c.ssl):
        return
    c.counted = True
    pthread_mutex_lock(&c.sh.mtx)
    c.sh.handshakes += 1
    if ossl.SSL_session_reused(c.ssl):
        c.sh.resumed += 1
    pthread_mutex_unlock(&c.sh.mtx)


cdef ssize_t _tls_result(tls_conn *c, int r, short *events) noexcept nogil:
    """What an SSL_read/SSL_write that returned r <= 0 means, as recv()/send() would say it: -1
    with errno EAGAIN (and *events: what to poll for), 0 for the end of the connection, -1 with
    another errno for a failure (EPROTO when the handshake failed: c.detail says why)."""
    cdef int e = ossl.SSL_get_error(c.ssl, r)
    cdef int saved = errno
    cdef long vr
    cdef unsigned long code
    cdef char buf[200]
    if e == ossl.SSL_ERROR_WANT_READ:
        events[0] = POLLIN
        _errno.errno = EAGAIN
        return -1
    if e == ossl.SSL_ERROR_WANT_WRITE:
        events[0] = POLLOUT
        _errno.errno = EAGAIN
        return -1
    if e == ossl.SSL_ERROR_ZERO_RETURN:
        return 0                # close_notify (or an EOF: SSL_OP_IGNORE_UNEXPECTED_EOF)
    c.fatal = True
    if not ossl.SSL_is_init_finished(c.ssl):
        c.hs_failed = True
        vr = ossl.SSL_get_verify_result(c.ssl)
        if vr != ossl.X509_V_OK:
            _set_detail(c, b"certificate verify failed: ")
            strncpy(c.detail + strlen(c.detail), ossl.X509_verify_cert_error_string(vr),
                    sizeof(c.detail) - 1 - strlen(c.detail))
        elif e == ossl.SSL_ERROR_SSL:
            code = ossl.ERR_peek_last_error()
            ossl.ERR_error_string_n(code, buf, sizeof(buf))
            _set_detail(c, buf)
        else:
            _set_detail(c, b"the connection was closed during the TLS handshake")
        ossl.ERR_clear_error()
        _errno.errno = EPROTO
        return -1
    if e == ossl.SSL_ERROR_SYSCALL:
        ossl.ERR_clear_error()
        if saved == 0:
            return 0            # an EOF without close_notify
        _errno.errno = saved
        return -1
    code = ossl.ERR_peek_last_error()
    ossl.ERR_error_string_n(code, buf, sizeof(buf))
    _set_detail(c, buf)
    ossl.ERR_clear_error()
    _errno.errno = EPROTO
    return -1


cdef ssize_t _tls_write(tls_conn *c, const char *p, size_t n, short *events) noexcept nogil:
    cdef int r
    ossl.ERR_clear_error()
    r = ossl.SSL_write(c.ssl, p, <int>(n if n < <size_t>INT_MAX else <size_t>INT_MAX))
    _note_handshake(c)
    if r > 0:
        return r
    r = <int>_tls_result(c, r, events)
    if r == 0:
        _errno.errno = EPIPE
        return -1
    return r


cdef ssize_t _tls_read(tls_conn *c, char *p, size_t n, short *events) noexcept nogil:
    cdef int r
    ossl.ERR_clear_error()
    r = ossl.SSL_read(c.ssl, p, <int>(n if n < <size_t>INT_MAX else <size_t>INT_MAX))
    _note_handshake(c)
    if r > 0:
        return r
    return _tls_result(c, r, events)


cdef inline ssize_t _tx(xchg *x, const char *p, size_t n) noexcept nogil:
    """send() of the exchange: on the socket, or through its TLS connection."""
    if x.tls == NULL:
        return send(x.fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT)
    return _tls_write(<tls_conn *>x.tls, p, n, &x.tls_events)


cdef inline ssize_t _rx(xchg *x, char *p, size_t n) noexcept nogil:
    """recv() of the exchange: from the socket, or through its TLS connection."""
    if x.tls == NULL:
        return recv(x.fd, p, n, MSG_DONTWAIT)
    return _tls_read(<tls_conn *>x.tls, p, n, &x.tls_events)


cdef inline int _tls_rc(xchg *x, int rc) noexcept nogil:
    """The outcome of a failed send or receive: TLS_FAILED when it was the handshake."""
    if x.tls != NULL and (<tls_conn *>x.tls).hs_failed:
        return C_TLS_FAILED
    return rc


cdef bint _tls_idle_ok(tls_conn *c) noexcept nogil:
    """An idle TLS connection can carry a request: nothing to read but records that are not data
    (a TLS 1.3 session ticket, a key update), no close_notify, no EOF."""
    cdef char probe
    cdef ssize_t r
    cdef short events = 0
    if c.fatal or ossl.SSL_pending(c.ssl) > 0:
        return False
    r = recv(c.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT)
    if r < 0 and (errno == EAGAIN or errno == EWOULDBLOCK):
        return True
    if r < 0:
        return False
    # Something came: let OpenSSL read it; only "wants more" means it was no data and no end.
    r = _tls_read(c, &probe, 1, &events)
    return r < 0 and errno == EAGAIN and events == POLLIN


cdef int _new_session(ossl.SSL *ssl, ossl.SSL_SESSION *sess) noexcept nogil:
    """OpenSSL's new-session callback (after a handshake, or a TLS 1.3 ticket): keep the newest
    resumable one for the next connection (we take the reference: return 1)."""
    cdef tls_shared *sh = <tls_shared *>ossl.SSL_CTX_get_app_data(ossl.SSL_get_SSL_CTX(ssl))
    if sh == NULL or not ossl.SSL_SESSION_is_resumable(sess):
        return 0
    pthread_mutex_lock(&sh.mtx)
    if sh.session != NULL:
        ossl.SSL_SESSION_free(sh.session)
    sh.session = sess
    pthread_mutex_unlock(&sh.mtx)
    return 1


cdef str _ossl_error(str what):
    cdef char buf[200]
    cdef unsigned long code = ossl.ERR_peek_last_error()
    ossl.ERR_clear_error()
    if code == 0:
        return what
    ossl.ERR_error_string_n(code, buf, sizeof(buf))
    return f"{what}: {buf.decode('latin-1')}"


cdef class TLSContext:
    """One SSL_CTX for the connections to one endpoint, set up as botocore's is for an https://
    endpoint (botocore.httpsession: create_urllib3_context, then urllib3 with cert_reqs
    CERT_REQUIRED and ca_certs = the CA bundle): TLS 1.2 or newer, CPython's default ciphers,
    OP_ALL and no compression, the certificate chain verified against cafile (AWS_CA_BUNDLE, the
    config's ca_bundle, or certifi's bundle: direct.py asks botocore which), X509 trusted-first,
    and the host name checked against the certificate's subjectAltName (DNS names without partial
    wildcards, or IP addresses; never the subject's common name, as urllib3 2) per connection
    (TLSConn). verify=False: no verification at all (botocore's verify=False).

    It differs from botocore's in one point, on purpose: it keeps the endpoint's newest session
    (TLS 1.3 tickets, TLS 1.2 tickets and ids) and resumes it on new connections; botocore asks for
    no TLS 1.2 tickets (OP_NO_TICKET). Resumption skips the certificate exchange of a session that
    was verified when it was made; it changes nothing in what is verified."""
    cdef tls_shared *sh
    cdef readonly object cafile
    cdef readonly bint verify

    def __cinit__(self, cafile=None, bint verify=True):
        cdef tls_shared *sh = <tls_shared *>PyMem_RawMalloc(sizeof(tls_shared))
        if sh == NULL:
            raise MemoryError()
        sh.session = NULL
        sh.handshakes = sh.resumed = 0
        pthread_mutex_init(&sh.mtx, NULL)
        sh.ctx = ossl.SSL_CTX_new(ossl.TLS_client_method())
        self.sh = sh
        self.cafile = cafile
        self.verify = verify
        if sh.ctx == NULL:
            raise TLSError(_ossl_error("cannot create a TLS context"))
        ossl.SSL_CTX_set_app_data(sh.ctx, sh)
        ossl.SSL_CTX_set_min_proto_version(sh.ctx, ossl.TLS1_2_VERSION)
        ossl.SSL_CTX_set_options(sh.ctx, ossl.SSL_OP_ALL | ossl.SSL_OP_NO_COMPRESSION |
                                 ossl.SSL_OP_IGNORE_UNEXPECTED_EOF)
        # The cipher list of CPython's ssl module (PY_SSL_DEFAULT_CIPHER_STRING, Python 3.10+):
        # what botocore's SSLContext(PROTOCOL_TLS_CLIENT) uses.
        if ossl.SSL_CTX_set_cipher_list(sh.ctx, b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:"
                                        b"DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM") != 1:
            raise TLSError(_ossl_error("cannot set the TLS ciphers"))
        ossl.X509_VERIFY_PARAM_set_flags(ossl.SSL_CTX_get0_param(sh.ctx),
                                         ossl.X509_V_FLAG_TRUSTED_FIRST)
        if verify:
            if cafile is not None:
                path = _os.fsencode(cafile)
                if ossl.SSL_CTX_load_verify_locations(sh.ctx, path, NULL) != 1:
                    raise TLSError(_ossl_error(f"cannot load the CA bundle {cafile}"))
            elif ossl.SSL_CTX_set_default_verify_paths(sh.ctx) != 1:
                raise TLSError(_ossl_error("cannot load the system's CA certificates"))
            ossl.SSL_CTX_set_verify(sh.ctx, ossl.SSL_VERIFY_PEER, NULL)
        else:
            ossl.SSL_CTX_set_verify(sh.ctx, ossl.SSL_VERIFY_NONE, NULL)
        # A client cache: OpenSSL hands each new session to _new_session, which keeps one.
        ossl.SSL_CTX_set_session_cache_mode(sh.ctx, ossl.SSL_SESS_CACHE_CLIENT |
                                            ossl.SSL_SESS_CACHE_NO_INTERNAL_STORE)
        ossl.SSL_CTX_sess_set_new_cb(sh.ctx, _new_session)

    def __dealloc__(self):
        cdef tls_shared *sh = self.sh
        if sh == NULL:
            return
        self.sh = NULL
        if sh.session != NULL:
            ossl.SSL_SESSION_free(sh.session)
        if sh.ctx != NULL:
            ossl.SSL_CTX_free(sh.ctx)
        pthread_mutex_destroy(&sh.mtx)
        PyMem_RawFree(sh)

    @property
    def stats(self):
        """(handshakes, of which resumed) of this context's connections so far."""
        pthread_mutex_lock(&self.sh.mtx)
        out = (self.sh.handshakes, self.sh.resumed)
        pthread_mutex_unlock(&self.sh.mtx)
        return out

    def forget_session(self):
        """No session to resume for the next connection (tests)."""
        pthread_mutex_lock(&self.sh.mtx)
        if self.sh.session != NULL:
            ossl.SSL_SESSION_free(self.sh.session)
            self.sh.session = NULL
        pthread_mutex_unlock(&self.sh.mtx)


cdef class TLSConn:
    """A TLS client connection over a connected socket, which it owns (fd, non-blocking; closed by
    close()). The exchanges on fd (exchange(), the worker pool) go through it; for the rest of the
    direct transport (streams, chunked bodies, https:// waits) it reads and writes like a
    non-blocking ssl.SSLSocket: recv()/recv_into()/send() raise ssl.SSLWantReadError or
    SSLWantWriteError when they would block, TLSError when the handshake fails."""
    cdef tls_conn *c
    cdef TLSContext context

    def __cinit__(self, TLSContext context, int fd, str server_hostname):
        cdef tls_conn *c = <tls_conn *>PyMem_RawMalloc(sizeof(tls_conn))
        cdef ossl.X509_VERIFY_PARAM *param
        if c == NULL:
            _close_fd(fd)
            raise MemoryError()
        c.fd = fd
        c.sh = context.sh
        c.counted = c.fatal = c.hs_failed = False
        c.detail[0] = 0
        c.ssl = ossl.SSL_new(context.sh.ctx)
        self.c = c
        self.context = context
        if c.ssl == NULL or ossl.SSL_set_fd(c.ssl, fd) != 1:
            raise TLSError(_ossl_error("cannot create a TLS connection"))
        ossl.SSL_set_connect_state(c.ssl)
        # Partial writes: a non-blocking SSL_write reports what it took, and may be retried with
        # the rest from another buffer holding the same bytes (_send_some copies small requests).
        ossl.SSL_set_mode(c.ssl, ossl.SSL_MODE_ENABLE_PARTIAL_WRITE |
                          ossl.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        name = server_hostname.encode("idna") if server_hostname else b""
        try:
            ip = _ipaddress.ip_address(server_hostname)
        except ValueError:
            ip = None
        if ip is None and name:
            # SNI (never for an address literal, RFC 6066 section 3), and the name to check.
            ossl.SSL_set_tlsext_host_name(c.ssl, name)
        if context.verify and name:
            param = ossl.SSL_get0_param(c.ssl)
            ossl.X509_VERIFY_PARAM_set_hostflags(param, ossl.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                                 ossl.X509_CHECK_FLAG_NEVER_CHECK_SUBJECT)
            if ip is not None:
                r = ossl.X509_VERIFY_PARAM_set1_ip_asc(param, name)
            else:
                r = ossl.X509_VERIFY_PARAM_set1_host(param, name, len(name))
            if r != 1:
                raise TLSError(_ossl_error(f"cannot check the host name {server_hostname!r}"))
        pthread_mutex_lock(&c.sh.mtx)
        if c.sh.session != NULL:
            ossl.SSL_set_session(c.ssl, c.sh.session)
        pthread_mutex_unlock(&c.sh.mtx)
        _register(c)

    def __dealloc__(self):
        self._close()

    cdef void _close(self) noexcept:
        cdef tls_conn *c = self.c
        if c == NULL:
            return
        self.c = NULL
        _unregister(c)
        if c.ssl != NULL:
            if not c.fatal and ossl.SSL_is_init_finished(c.ssl):
                ossl.SSL_shutdown(c.ssl)      # close_notify, not waiting for the answer
            ossl.ERR_clear_error()
            ossl.SSL_free(c.ssl)
        _close_fd(c.fd)
        PyMem_RawFree(c)

    def close(self):
        self._close()

    def fileno(self):
        return self.c.fd if self.c != NULL else -1

    def getblocking(self):
        return False

    @property
    def detail(self):
        """Why the handshake (or the last failed call) failed, as OpenSSL says it."""
        if self.c == NULL or self.c.detail[0] == 0:
            return "TLS failure"
        return self.c.detail.decode("latin-1")

    @property
    def handshake_done(self):
        return self.c != NULL and bool(ossl.SSL_is_init_finished(self.c.ssl))

    @property
    def session_reused(self):
        return self.c != NULL and bool(ossl.SSL_session_reused(self.c.ssl))

    def idle_ok(self):
        """An idle connection that can carry a request (see _tls_idle_ok)."""
        return self.c != NULL and _tls_idle_ok(self.c)

    cdef _raise(self, short events):
        if errno == EAGAIN:
            if events == POLLOUT:
                raise _ssl.SSLWantWriteError()
            raise _ssl.SSLWantReadError()
        if self.c.hs_failed:
            raise TLSError(self.detail)
        if errno == EPROTO:
            raise ConnectionResetError(EPROTO, self.detail)
        raise OSError(errno, _os.strerror(errno))

    def do_handshake(self):
        """The next step of the handshake, without the GIL (SSL_do_handshake): returns when it is
        done; raises ssl.SSLWantReadError or SSLWantWriteError when it waits for the socket,
        TLSError when it failed (c.detail, as the exchange's TLS_FAILED says it). The direct
        transport does this before the first exchange of a new connection, yielding each wait to
        the worker's poll, bounded by the connect timeout (direct.py, _handshake)."""
        cdef int r
        cdef short events = 0
        if self.c == NULL:
            raise OSError(9, "closed TLS connection")
        with nogil:
            ossl.ERR_clear_error()
            r = ossl.SSL_do_handshake(self.c.ssl)
            _note_handshake(self.c)
            if r != 1:
                r = <int>_tls_result(self.c, r, &events)
        if r == 1:
            return
        if r == 0:
            self.c.fatal = self.c.hs_failed = True
            _set_detail(self.c, b"the connection was closed during the TLS handshake")
            raise TLSError(self.detail)
        self._raise(events)

    def recv_into(self, buffer, Py_ssize_t nbytes=0):
        cdef Py_buffer view
        cdef ssize_t r
        cdef short events = 0
        if self.c == NULL:
            raise OSError(9, "closed TLS connection")
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if nbytes <= 0 or nbytes > view.len:
                nbytes = view.len
            with nogil:
                r = _tls_read(self.c, <char *>view.buf, <size_t>nbytes, &events)
            if r < 0:
                self._raise(events)
            return r
        finally:
            PyBuffer_Release(&view)

    def recv(self, Py_ssize_t n):
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf[:got])

    def send(self, data):
        cdef const unsigned char[:] mv = memoryview(data).cast("B")
        cdef ssize_t r
        cdef short events = 0
        if self.c == NULL:
            raise OSError(9, "closed TLS connection")
        if mv.shape[0] == 0:
            return 0
        with nogil:
            r = _tls_write(self.c, <const char *>&mv[0], <size_t>mv.shape[0], &events)
        if r < 0:
            self._raise(events)
        return r

