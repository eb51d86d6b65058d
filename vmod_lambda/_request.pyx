# cython: language_level=3
"""The request record of a backend fetch or a probe poke (see _request.pxd).

request_collect() runs on the fetch thread without the GIL and copies bo->bereq's head once; the
body comes after it, through request_body_append(). Request is the record as Python sees it (the
worker's mapping in fetch.py / events.py), and how Python builds one (a probe's poke, the tests).
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memchr, memset
from cache cimport http, txt, HTTP_HDR_METHOD, HTTP_HDR_URL, HTTP_HDR_PROTO, HTTP_HDR_FIRST

from vmod_lambda import limits as _limits
from vmod_lambda import headers as _policy

# limits.MAX_REQUEST_BODY, set once here (no initializers on C globals: see DESIGN).
cdef size_t MAX_BODY
MAX_BODY = _limits.MAX_REQUEST_BODY

# The request side of the header policy (headers.py, one table both ways), as C data, set once
# here: the names and name prefixes of the headers that never reach the event.
cdef enum:
    POLICY_MAX = 32
    CONNECTION_MAX = 16         # Connection headers looked at (more: only the first ones count)
cdef const char *DROP_NAME[POLICY_MAX]
cdef size_t DROP_LEN[POLICY_MAX]
cdef int NDROP
cdef const char *DROP_PREFIX[POLICY_MAX]
cdef size_t DROP_PREFIX_LEN[POLICY_MAX]
cdef int NDROP_PREFIX
_POLICY_KEEP = [n.encode("ascii") for n in sorted(_policy.REQUEST_DROP)] + \
    [n.encode("ascii") for n in _policy.REQUEST_DROP_PREFIXES]


cdef void _policy_init() noexcept:
    global NDROP, NDROP_PREFIX
    cdef bytes b
    cdef int i = 0
    NDROP = 0
    NDROP_PREFIX = 0
    for b in _POLICY_KEEP:
        if i < len(_policy.REQUEST_DROP):
            if NDROP < POLICY_MAX:
                DROP_NAME[NDROP] = b
                DROP_LEN[NDROP] = len(b)
                NDROP += 1
        elif NDROP_PREFIX < POLICY_MAX:
            DROP_PREFIX[NDROP_PREFIX] = b
            DROP_PREFIX_LEN[NDROP_PREFIX] = len(b)
            NDROP_PREFIX += 1
        i += 1


_policy_init()


cdef inline char _lower(char c) noexcept nogil:
    return c + 32 if c'A' <= c <= c'Z' else c


cdef bint _ieq(const char *a, size_t an, const char *b, size_t bn) noexcept nogil:
    """a and b (b lower case) equal, ignoring the case of a."""
    cdef size_t i
    if an != bn:
        return False
    for i in range(an):
        if _lower(a[i]) != b[i]:
            return False
    return True


cdef bint _ieq2(const char *a, size_t an, const char *b, size_t bn) noexcept nogil:
    """a and b equal, ignoring case on both sides."""
    cdef size_t i
    if an != bn:
        return False
    for i in range(an):
        if _lower(a[i]) != _lower(b[i]):
            return False
    return True


cdef bint _listed(lambda_span name, const lambda_span *conn, int nconn) noexcept nogil:
    """name is one of the comma-separated tokens of the Connection values conn."""
    cdef int k
    cdef const char *p
    cdef const char *e
    cdef const char *a
    cdef const char *z
    for k in range(nconn):
        p = conn[k].p
        e = p + conn[k].n
        while p < e:
            a = p
            while p < e and p[0] != c',':
                p += 1
            z = p
            while a < z and _blank(a[0]):
                a += 1
            while z > a and _blank(z[-1]):
                z -= 1
            if z > a and _ieq2(name.p, name.n, a, <size_t>(z - a)):
                return True
            p += 1
    return False


cdef bint _policy_drops(lambda_span name, const lambda_span *conn, int nconn) noexcept nogil:
    cdef int i
    for i in range(NDROP):
        if _ieq(name.p, name.n, DROP_NAME[i], DROP_LEN[i]):
            return True
    for i in range(NDROP_PREFIX):
        if name.n >= DROP_PREFIX_LEN[i] and _ieq(name.p, DROP_PREFIX_LEN[i], DROP_PREFIX[i],
                                                 DROP_PREFIX_LEN[i]):
            return True
    return nconn > 0 and _listed(name, conn, nconn)


cdef void _apply_policy(lambda_request *r) noexcept nogil:
    """Drop from the record the headers the header policy keeps from the event (headers.py):
    hop-by-hop ones, those named in Connection, Proxy-*. The order of the others is kept."""
    cdef lambda_span conn[CONNECTION_MAX]
    cdef int nconn = 0
    cdef unsigned i, k = 0
    for i in range(r.nheaders):
        if nconn < CONNECTION_MAX and _ieq(r.headers[i].name.p, r.headers[i].name.n,
                                           "connection", 10):
            conn[nconn] = r.headers[i].value
            nconn += 1
    for i in range(r.nheaders):
        if _policy_drops(r.headers[i].name, conn, nconn):
            continue
        if k != i:
            r.headers[k] = r.headers[i]
        k += 1
    r.nheaders = k


cdef inline bint _blank(char c) noexcept nogil:
    return c == c' ' or c == c'\t'


cdef void _line(lambda_request *r, const char *p, size_t n) noexcept nogil:
    """A copied "Name: value" line as the next header (a line without a colon is none)."""
    cdef const char *colon = <const char *>memchr(p, c':', n)
    cdef const char *a
    cdef const char *z
    cdef lambda_header *h
    if colon == NULL:
        return
    a = colon + 1
    z = p + n
    while a < z and _blank(a[0]):
        a += 1
    while z > a and _blank(z[-1]):
        z -= 1
    h = &r.headers[r.nheaders]
    r.nheaders += 1
    h.name.p = p
    h.name.n = <size_t>(colon - p)
    h.value.p = a
    h.value.n = <size_t>(z - a)


cdef int request_collect(lambda_request *r, const http *hp) noexcept nogil:
    cdef unsigned u, nh = 0
    cdef size_t text = 0, n
    cdef const txt *t
    cdef char *w
    cdef lambda_span *first[3]
    r.head_bytes = 0
    for u in range(hp.nhd):
        if HTTP_HDR_PROTO < u < HTTP_HDR_FIRST:
            continue        # status and reason: empty in a request
        t = &hp.hd[u]
        if t.b == NULL:
            if u < HTTP_HDR_FIRST:
                r.head_bytes += 1
            continue
        n = <size_t>(t.e - t.b)
        r.head_bytes += n + 1
        text += n
        if u >= HTTP_HDR_FIRST:
            nh += 1
    r.store = <char *>malloc(nh * sizeof(lambda_header) + text + 1)
    if r.store == NULL:
        return -1
    r.headers = <lambda_header *>r.store
    r.nheaders = 0
    w = r.store + nh * sizeof(lambda_header)
    first[0] = &r.method
    first[1] = &r.url
    first[2] = &r.proto
    for u in range(hp.nhd):
        if HTTP_HDR_PROTO < u < HTTP_HDR_FIRST:
            continue
        t = &hp.hd[u]
        if t.b == NULL:
            continue
        n = <size_t>(t.e - t.b)
        memcpy(w, t.b, n)
        if u < HTTP_HDR_FIRST:
            first[u - HTTP_HDR_METHOD].p = w
            first[u - HTTP_HDR_METHOD].n = n
        else:
            _line(r, w, n)
        w += n
    _apply_policy(r)
    return 0


cdef int request_body_append(lambda_request *r, const char *p, size_t n) noexcept nogil:
    cdef size_t want
    cdef char *nb
    r.body_seen += n
    if r.body_seen > MAX_BODY:
        return 0        # keep reading the client's body, keep none of it: answered with 413
    want = r.body_len + n + 1
    if want > r.body_cap:
        if want < 2 * r.body_cap:
            want = 2 * r.body_cap
        if want < 1024:
            want = 1024
        # PyMem_Raw*: the loader sends large blocks to an arena that returns them to the system
        # when freed (vmod_lambda.vcc, "Large responses and memory").
        nb = <char *>PyMem_RawRealloc(r.body, want)
        if nb == NULL:
            return -1
        r.body = nb
        r.body_cap = want
    memcpy(r.body + r.body_len, p, n)
    r.body_len += n
    r.body[r.body_len] = 0
    return 0


cdef int request_header(const lambda_request *r, const char *lname, size_t n,
                        lambda_span *out) noexcept nogil:
    """The value of the first header named lname (lower case, n bytes): 1, or 0 without one."""
    cdef unsigned i
    for i in range(r.nheaders):
        if _ieq(r.headers[i].name.p, r.headers[i].name.n, lname, n):
            out[0] = r.headers[i].value
            return 1
    return 0


cdef char *http_header_dup(const http *hp, const char *lname, size_t n) noexcept nogil:
    """A malloc'd copy of the value of the first header of hp named lname (lower case, n bytes;
    blanks around the value removed), or NULL without one (or out of memory): invoke() reads the
    trace headers of its task's req or bereq with it."""
    cdef unsigned u
    cdef const txt *t
    cdef const char *a
    cdef const char *z
    cdef const char *colon
    cdef char *out
    if hp == NULL:
        return NULL
    for u in range(HTTP_HDR_FIRST, hp.nhd):
        t = &hp.hd[u]
        if t.b == NULL:
            continue
        colon = <const char *>memchr(t.b, c':', <size_t>(t.e - t.b))
        if colon == NULL or not _ieq(t.b, <size_t>(colon - t.b), lname, n):
            continue
        a = colon + 1
        z = t.e
        while a < z and _blank(a[0]):
            a += 1
        while z > a and _blank(z[-1]):
            z -= 1
        out = <char *>malloc(<size_t>(z - a) + 1)
        if out != NULL:
            memcpy(out, a, <size_t>(z - a))
            out[z - a] = 0
        return out
    return NULL


cdef bint request_body_dropped(const lambda_request *r) noexcept nogil:
    return r.body_seen > MAX_BODY


cdef void request_clear(lambda_request *r) noexcept nogil:
    free(r.store)
    PyMem_RawFree(r.body)
    memset(r, 0, sizeof(lambda_request))


cdef Request request_view(lambda_request *r):
    cdef Request v = Request.__new__(Request)
    v.r = r
    v.borrowed = True
    return v


cdef void request_unview(Request v) noexcept:
    if v is not None:
        v.r = NULL


cdef str _text(lambda_span s):
    # JSON events carry text: invalid UTF-8 is replaced.
    return s.p[:s.n].decode("utf-8", "replace") if s.n else ""


cdef class Request:
    """Request(method, url, proto, headers, body, body_len): a request record built in Python (a
    probe's poke, the tests); the director's come from bo->bereq. headers: (name, value) pairs in
    order, repeats kept. body None: the client's body (body_len bytes) was larger than
    limits.MAX_REQUEST_BODY and was not kept."""

    def __cinit__(self):
        memset(&self.own, 0, sizeof(lambda_request))
        self.r = &self.own
        self.borrowed = False

    def __init__(self, str method="GET", str url="/", str proto="HTTP/1.1", headers=(),
                 body=b"", body_len=None):
        cdef list fields = [s.encode("utf-8", "replace") for s in (method, url, proto)]
        cdef list lines = [f"{k}: {v}".encode("utf-8", "replace") for k, v in headers]
        cdef size_t text = 0, n
        cdef bytes b
        cdef char *w
        cdef lambda_span *first[3]
        cdef int i
        cdef const char *data
        if body is None and (body_len is None or body_len <= MAX_BODY):
            raise ValueError(f"a dropped body (None) is one larger than {MAX_BODY} bytes")
        request_clear(&self.own)
        for b in fields + lines:
            text += len(b)
        self.own.store = <char *>malloc(len(lines) * sizeof(lambda_header) + text + 1)
        if self.own.store == NULL:
            raise MemoryError()
        self.own.headers = <lambda_header *>self.own.store
        w = self.own.store + len(lines) * sizeof(lambda_header)
        first[0] = &self.own.method
        first[1] = &self.own.url
        first[2] = &self.own.proto
        for i in range(3):
            b = fields[i]
            n = len(b)
            memcpy(w, <const char *>b, n)
            first[i].p = w
            first[i].n = n
            self.own.head_bytes += n + 1
            w += n
        for b in lines:
            n = len(b)
            memcpy(w, <const char *>b, n)
            _line(&self.own, w, n)
            self.own.head_bytes += n + 1
            w += n
        _apply_policy(&self.own)
        if body is None:
            self.own.body_seen = body_len
        elif len(body):
            data = body
            if request_body_append(&self.own, data, len(body)) != 0:
                raise MemoryError()

    def __dealloc__(self):
        if not self.borrowed:
            request_clear(&self.own)

    cdef lambda_request *_get(self) except NULL:
        if self.r == NULL:
            raise ValueError("the request record is gone (its fetch is over)")
        return self.r

    @property
    def method(self):
        return _text(self._get().method)

    @property
    def url(self):
        return _text(self._get().url)

    @property
    def proto(self):
        return _text(self._get().proto)

    @property
    def headers(self):
        """[(name, value), ...] in order, repeats kept."""
        cdef lambda_request *r = self._get()
        cdef unsigned i
        return [(_text(r.headers[i].name), _text(r.headers[i].value))
                for i in range(r.nheaders)]

    def header(self, str name):
        """The value of the first header called name (any case), or None: read from the record,
        as collected (the trace and tenant headers of a fetch, fetch.py)."""
        cdef bytes b = name.lower().encode("ascii", "replace")
        cdef lambda_span v
        if not request_header(self._get(), b, len(b), &v):
            return None
        return _text(v)

    @property
    def body(self):
        """The body bytes (b"" without one), or None when it was too large to keep."""
        cdef lambda_request *r = self._get()
        if request_body_dropped(r):
            return None
        return r.body[:r.body_len] if r.body_len else b""

    @property
    def body_len(self):
        """Bytes of body the client sent (also those not kept)."""
        return self._get().body_seen

    @property
    def head_bytes(self):
        return self._get().head_bytes

    def __repr__(self):
        return f"Request({self.method!r}, {self.url!r}, {self.proto!r}, {self.headers!r})"
