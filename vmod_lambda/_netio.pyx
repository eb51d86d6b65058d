# cython: language_level=3
"""One HTTP/1.1 request/response exchange on a connected plain-TCP socket, without the GIL.

The direct transport (direct.py) calls exchange() for http:// endpoints. Done in Python, the same
exchange releases and re-takes the GIL at every socket call (the idle check, the send, each read);
with the pool's worker threads contending for the GIL, each of those hand-offs costs futex wake-ups
and context switches, which profiles showed to be most of the CPU of a Lambda fetch. Here the whole
exchange is one GIL release: check that an idle connection is still open, send the request, read the
response head and, when it has a Content-Length, the whole body. Everything else (chunked bodies,
bodies up to the end of the connection, status lines and headers) stays in Python.

Timeouts are the socket's SO_RCVTIMEO/SO_SNDTIMEO (set by direct.py): a read or write that waits
longer fails with EAGAIN.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int sockfd, const void *buf, size_t length, int flags)
    ssize_t recv(int sockfd, void *buf, size_t length, int flags)
    int MSG_NOSIGNAL
    int MSG_PEEK
    int MSG_DONTWAIT

cdef extern from "<string.h>" nogil:
    void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen)

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

cdef size_t MAX_HEAD = 65536


cdef int _send_all(int fd, const char *p, size_t n, int *err) noexcept nogil:
    cdef ssize_t r
    while n > 0:
        r = send(fd, p, n, MSG_NOSIGNAL)
        if r < 0:
            if errno == EINTR:
                continue
            err[0] = errno
            return C_SEND_TIMEOUT if (errno == EAGAIN or errno == EWOULDBLOCK) else C_SEND_ERROR
        p += r
        n -= <size_t>r
    return C_OK


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


def exchange(int fd, bytes head, bytes payload, bint check_idle):
    """(outcome, errno, response head incl. the blank line, body or its start, complete).

    complete: the body is whole (Content-Length read); otherwise the caller reads the rest
    (chunked, to EOF) from the socket, starting with the bytes returned."""
    cdef const char *h = head
    cdef size_t hn = len(head)
    cdef const char *pl = payload
    cdef size_t pn = len(payload)
    cdef int rc = C_OK, err = 0
    cdef char probe
    cdef ssize_t r
    cdef char *buf = NULL
    cdef char *nb
    cdef size_t cap = 16384, have = 0, head_len = 0, want = 0
    cdef long long cl = -1
    cdef bint chunked = False, complete = False
    cdef void *end
    with nogil:
        if check_idle:
            # A healthy idle HTTP connection has nothing to read: readable means EOF or garbage.
            r = recv(fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT)
            if not (r < 0 and (errno == EAGAIN or errno == EWOULDBLOCK)):
                rc = C_STALE
        if rc == C_OK:
            buf = <char *>malloc(cap)
            if buf == NULL:
                rc = C_NO_MEMORY
        if rc == C_OK:
            if pn <= 16384 and hn + pn <= cap:
                memcpy(buf, h, hn)
                memcpy(buf + hn, pl, pn)
                rc = _send_all(fd, buf, hn + pn, &err)
            else:
                rc = _send_all(fd, h, hn, &err)
                if rc == C_OK:
                    rc = _send_all(fd, pl, pn, &err)
        # The head.
        while rc == C_OK and head_len == 0:
            if have == cap:
                if cap >= MAX_HEAD:
                    rc = C_HEAD_TOO_LARGE
                    break
                nb = <char *>realloc(buf, cap * 2)
                if nb == NULL:
                    rc = C_NO_MEMORY
                    break
                buf = nb
                cap *= 2
            r = recv(fd, buf + have, cap - have, 0)
            if r < 0:
                if errno == EINTR:
                    continue
                err = errno
                rc = C_RECV_TIMEOUT if (errno == EAGAIN or errno == EWOULDBLOCK) else C_RECV_ERROR
                break
            if r == 0:
                rc = C_EOF_BEFORE_HEAD
                break
            end = memmem(buf + (have - 3 if have >= 3 else 0), <size_t>r + (3 if have >= 3 else have),
                         b"\r\n\r\n", 4)
            have += <size_t>r
            if end != NULL:
                head_len = <size_t>(<char *>end - buf) + 4
        # The body, when its length is known.
        if rc == C_OK:
            cl = _framing(buf, head_len, &chunked)
            if cl >= 0 and not chunked:
                want = head_len + <size_t>cl
                if want > cap:
                    nb = <char *>realloc(buf, want)
                    if nb == NULL:
                        rc = C_NO_MEMORY
                    else:
                        buf = nb
                        cap = want
                while rc == C_OK and have < want:
                    r = recv(fd, buf + have, want - have, 0)
                    if r < 0:
                        if errno == EINTR:
                            continue
                        err = errno
                        rc = C_RECV_TIMEOUT if (errno == EAGAIN or errno == EWOULDBLOCK) \
                            else C_RECV_ERROR
                        break
                    if r == 0:
                        rc = C_RECV_ERROR     # closed in the middle of the body
                        break
                    have += <size_t>r
                if rc == C_OK:
                    complete = have == want
    try:
        if rc != C_OK:
            return rc, err, None, None, False
        return (rc, 0, PyBytes_FromStringAndSize(buf, head_len),
                PyBytes_FromStringAndSize(buf + head_len, have - head_len), complete)
    finally:
        free(buf)
