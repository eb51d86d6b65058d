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
    void *tls                   # https://: the connection's TLS state (a tls_conn of _netio.pyx,
                                # found by fd in xchg_begin; NULL for plain TCP)
    short tls_events            # what OpenSSL waits for (SSL_ERROR_WANT_READ/WRITE), 0: none

cdef void xchg_begin(xchg *x, int fd, const char *h, size_t hn, const char *pl, size_t pn,
                     bint check_idle, double timeout) noexcept nogil
cdef void xchg_wait(xchg *x, int fd, short events, double timeout) noexcept nogil
cdef bint xchg_progress(xchg *x) noexcept nogil
cdef short xchg_events(const xchg *x) noexcept nogil
cdef void xchg_expire(xchg *x) noexcept nogil
cdef object xchg_result(xchg *x)
cdef void xchg_clear(xchg *x) noexcept nogil
