# One HTTP/1.1 request/response exchange on a plain-TCP or TLS socket as a non-blocking state machine
# (see _netio.pyx): exchange() drives one to its end with poll(); the pool's workers (_handoff.pyx)
# drive several at once, one poll() for all of them.

cdef enum xchg_state:
    X_SEND = 0
    X_HEAD = 1
    X_BODY = 2
    X_DONE = 3
    X_WAIT = 4                  # not an exchange: a wait for a socket to be ready (xchg_wait)

cdef struct xchg:
    int fd
    xchg_state state
    int rc                      # outcome (C_OK...) once X_DONE
    int err                     # errno of a failure
    const char *h               # the request head and payload: pointers into bytes objects that
    size_t hn                   # the caller keeps alive until the exchange is done
    const char *pl
    size_t pn
    size_t sent
    char *buf                   # the response read so far
    size_t cap
    size_t have
    size_t head_len
    size_t want
    bint complete
    bint check_idle             # not checked yet that the (idle) connection is still open
    bint is_wait                # made by xchg_wait
    short wait_events
    double timeout              # seconds a single send or receive may wait (the read timeout)
    double deadline             # monotonic time the current wait ends
    double end                  # monotonic time the whole exchange ends (the call's deadline),
                                # 0: none; no wait goes past it
    void *tls                   # https://: the connection's TLS state (a tls_conn of _netio.pyx,
                                # found by fd in xchg_begin; NULL for plain TCP)
    short tls_events            # what OpenSSL waits for (SSL_ERROR_WANT_READ/WRITE), 0: none
    bint raw                    # read a Content-Length body into a buffer of its own (body),
    char *body                  # handed over as a RawBody (see xchg_result), or NULL

cdef void xchg_begin(xchg *x, int fd, const char *h, size_t hn, const char *pl, size_t pn,
                     bint check_idle, double timeout, double end) noexcept nogil
cdef void xchg_wait(xchg *x, int fd, short events, double timeout, double end) noexcept nogil
cdef bint xchg_progress(xchg *x) noexcept nogil
cdef short xchg_events(const xchg *x) noexcept nogil
cdef void xchg_expire(xchg *x) noexcept nogil
cdef object xchg_result(xchg *x)
cdef void xchg_clear(xchg *x) noexcept nogil


# A response body read into a buffer of its own (PyMem_RawMalloc, its length + 1 bytes, NUL at the
# end), which its owner can take over (detach()) instead of copying it: the director's job keeps
# the buffer the answer was received into (_director.pyx, _FetchRef.take). Until then it reads as
# a bytes-like object (buffer protocol, len(), bytes()); after, it is empty.
cdef class RawBody:
    cdef char *p
    cdef size_t n
    cdef int exports
    cdef char *detach(self, size_t *n) noexcept


# The socket work a job's generator yields (transport/direct.py): one type per kind of work, each
# knowing how it begins in a worker's slot (begin(): the worker pool, _handoff.pyx, then drives it
# with the slot's other work) and how it is done here, whole (run(): direct.run()). Either way the
# generator is sent xchg_result()'s answer.
cdef class Op:
    cdef void begin(self, xchg *x) noexcept

cdef class Exchange(Op):
    """One HTTP/1.1 request/response exchange on a connected socket (http:// endpoints)."""
    cdef readonly int fd
    cdef readonly bytes head
    cdef readonly bytes payload
    cdef readonly bint check_idle
    cdef readonly double timeout
    cdef readonly double end
    cdef readonly bint raw

cdef class Wait(Op):
    """A wait for a socket to be ready for events (the Python exchange of https://)."""
    cdef readonly int fd
    cdef readonly short events
    cdef readonly double timeout
    cdef readonly double end
