# cython: language_level=3
"""One HTTP/1.1 request/response exchange on a connected plain-TCP socket, without the GIL.

The direct transport (direct.py) uses it for http:// endpoints. Done in Python, the same exchange
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
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.string cimport memcpy
from posix.time cimport timespec
from posix_thread cimport clock_gettime, CLOCK_MONOTONIC
from posix_io cimport (EWOULDBLOCK, send, recv, MSG_NOSIGNAL, MSG_PEEK, MSG_DONTWAIT, memmem,
                       pollfd, poll, POLLIN, POLLOUT)

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

OK = C_OK
STALE = C_STALE
SEND_TIMEOUT = C_SEND_TIMEOUT
SEND_ERROR = C_SEND_ERROR
RECV_TIMEOUT = C_RECV_TIMEOUT
RECV_ERROR = C_RECV_ERROR
EOF_BEFORE_HEAD = C_EOF_BEFORE_HEAD
HEAD_TOO_LARGE = C_HEAD_TOO_LARGE
NO_MEMORY = C_NO_MEMORY

from vmod_lambda.limits import MAX_RESPONSE_HEAD as _MAX_RESPONSE_HEAD

# The longest response head read (limits.py); no initializer on C globals (see DESIGN).
cdef size_t MAX_HEAD
MAX_HEAD = _MAX_RESPONSE_HEAD


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


cdef inline void _init(xchg *x, int fd, xchg_state state, double timeout) noexcept nogil:
    x.fd = fd
    x.state = state
    x.rc = C_OK
    x.err = 0
    x.buf = NULL
    x.is_wait = False
    x.check_idle = False
    x.timeout = timeout
    x.deadline = _now() + timeout


cdef void xchg_begin(xchg *x, int fd, const char *h, size_t hn, const char *pl, size_t pn,
                     bint check_idle, double timeout) noexcept nogil:
    """Set up an exchange (no system call: the caller may hold the GIL). Then xchg_progress()
    (at once: it checks that an idle connection is still open and sends what the socket takes)
    and again whenever poll() reports xchg_events()."""
    _init(x, fd, X_SEND, timeout)
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
    x.buf = <char *>PyMem_RawMalloc(x.cap)
    if x.buf == NULL:
        _fail(x, C_NO_MEMORY, 0)


cdef void xchg_wait(xchg *x, int fd, short events, double timeout) noexcept nogil:
    """Not an exchange: wait until fd is ready for events (poll()), at most timeout seconds (the
    Python exchange of https:// endpoints yields these, see direct.py)."""
    _init(x, fd, X_WAIT, timeout)
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
                r = send(x.fd, x.buf, total, MSG_NOSIGNAL | MSG_DONTWAIT)
            else:
                r = send(x.fd, x.h + x.sent, x.hn - x.sent, MSG_NOSIGNAL | MSG_DONTWAIT)
        else:
            n = x.sent - x.hn
            r = send(x.fd, x.pl + n, x.pn - n, MSG_NOSIGNAL | MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return False
            _fail(x, C_SEND_ERROR, errno)
            return False
        x.sent += <size_t>r
        x.deadline = _now() + x.timeout
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
        r = recv(x.fd, x.buf + x.have, limit, MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return False
            _fail(x, C_RECV_ERROR, errno)
            return False
        if r == 0:
            # Closed before the head, or in the middle of a body of known length.
            _fail(x, C_EOF_BEFORE_HEAD if x.state == X_HEAD else C_RECV_ERROR, 0)
            return False
        x.deadline = _now() + x.timeout
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
    x.want = x.head_len + <size_t>cl
    if x.want > x.cap:
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
    return POLLOUT if x.state == X_SEND else POLLIN


cdef void xchg_expire(xchg *x) noexcept nogil:
    """The current wait passed the read timeout."""
    _fail(x, C_SEND_TIMEOUT if x.state == X_SEND else C_RECV_TIMEOUT, 0)


cdef void xchg_clear(xchg *x) noexcept nogil:
    PyMem_RawFree(x.buf)
    x.buf = NULL


cdef object xchg_result(xchg *x):
    """(outcome, errno, response head incl. the blank line, body or its start, complete), as
    exchange() returns it; frees the exchange's buffer. For a wait: whether it is ready."""
    if x.is_wait:
        return x.rc == C_OK
    try:
        if x.rc != C_OK:
            return x.rc, x.err, None, None, False
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


def exchange(int fd, bytes head, bytes payload, bint check_idle, double timeout):
    """(outcome, errno, response head incl. the blank line, body or its start, complete).

    complete: the body is whole (Content-Length read); otherwise the caller reads the rest
    (chunked, to EOF) from the socket, starting with the bytes returned. A send or receive that
    waits longer than timeout seconds ends the exchange (SEND_TIMEOUT, RECV_TIMEOUT)."""
    cdef xchg x
    cdef const char *h = head
    cdef size_t hn = len(head)
    cdef const char *pl = payload
    cdef size_t pn = len(payload)
    with nogil:
        xchg_begin(&x, fd, h, hn, pl, pn, check_idle, timeout)
        _drive(&x)
    return xchg_result(&x)


def wait(int fd, short events, double timeout):
    """Whether fd became ready for events (poll()) within timeout seconds, without the GIL (a
    failing poll() counts as ready: the next socket call reports the error)."""
    cdef xchg x
    with nogil:
        xchg_wait(&x, fd, events, timeout)
        _drive(&x)
    return x.rc != C_RECV_TIMEOUT


cdef class Op:
    """Socket work yielded by a job's generator (see _netio.pxd)."""

    cdef void begin(self, xchg *x) noexcept:
        xchg_wait(x, -1, 0, 0.0)        # (never yielded as such: only its subclasses are)

    def run(self):
        raise NotImplementedError


cdef class Exchange(Op):

    def __cinit__(self, int fd, bytes head, bytes payload, bint check_idle, double timeout):
        self.fd = fd
        self.head = head
        self.payload = payload
        self.check_idle = check_idle
        self.timeout = timeout

    cdef void begin(self, xchg *x) noexcept:
        xchg_begin(x, self.fd, self.head, len(self.head), self.payload, len(self.payload),
                   self.check_idle, self.timeout)

    def run(self):
        return exchange(self.fd, self.head, self.payload, self.check_idle, self.timeout)


cdef class Wait(Op):

    def __cinit__(self, int fd, short events, double timeout):
        self.fd = fd
        self.events = events
        self.timeout = timeout

    cdef void begin(self, xchg *x) noexcept:
        xchg_wait(x, self.fd, self.events, self.timeout)

    def run(self):
        return wait(self.fd, self.events, self.timeout)
