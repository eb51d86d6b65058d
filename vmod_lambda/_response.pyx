# cython: language_level=3
"""The response record of a backend fetch and the log lines of an invocation (_response.pxd)."""

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef char *_cdup(bytes b) except? NULL:
    cdef size_t n = len(b)
    cdef char *p = <char *>malloc(n + 1)
    if p == NULL:
        raise MemoryError()
    memcpy(p, <const char *>b, n)
    p[n] = 0
    return p


cdef int response_fill(lambda_response *r, object result, bint head_only) except -1:
    # (formatted as text: a mapping may hand over a value that is not a str, e.g. an int)
    cdef list lines = [(f"{n_}".encode("utf-8"), f"{v_}".encode("utf-8"))
                       for n_, v_ in result.headers]
    cdef size_t text = 0, n
    cdef bytes k, v, body
    cdef char *w
    cdef lambda_header *h
    for k, v in lines:
        text += len(k) + 2 + len(v) + 1
    r.store = <char *>malloc(len(lines) * sizeof(lambda_header) + text + 1)
    if r.store == NULL:
        raise MemoryError()
    r.headers = <lambda_header *>r.store
    w = r.store + len(lines) * sizeof(lambda_header)
    for k, v in lines:
        h = &r.headers[r.nheaders]
        r.nheaders += 1
        h.name.p = w
        h.name.n = len(k)
        memcpy(w, <const char *>k, len(k))
        w += len(k)
        w[0] = c':'
        w[1] = c' '
        w += 2
        h.value.p = w
        h.value.n = len(v)
        memcpy(w, <const char *>v, len(v))
        w += len(v)
        w[0] = 0
        w += 1
        r.head_bytes += len(k) + 2 + len(v) + 1
    if result.reason:
        r.reason = _cdup(result.reason.encode("utf-8", "replace"))
    if result.note:
        r.note = _cdup(result.note.encode("utf-8", "replace"))
    if not head_only:
        body = result.body
        n = len(body)
        r.body = <char *>PyMem_RawMalloc(n + 1)
        if r.body == NULL:
            raise MemoryError()
        memcpy(r.body, <const char *>body, n)
        r.body[n] = 0
        r.body_len = n
    r.status = result.status
    return 0


cdef void response_clear(lambda_response *r) noexcept nogil:
    free(r.store)
    free(r.reason)
    free(r.note)
    PyMem_RawFree(r.body)
    memset(r, 0, sizeof(lambda_response))


cdef int lines_fill(lambda_lines *l, list lines) except -1:
    cdef list enc = [s.encode("utf-8", "replace") for s in lines]
    cdef size_t text = 0
    cdef bytes b
    cdef char *w
    for b in enc:
        text += len(b) + 1
    l.store = <char *>malloc(len(enc) * sizeof(lambda_span) + text + 1)
    if l.store == NULL:
        raise MemoryError()
    l.line = <lambda_span *>l.store
    w = l.store + len(enc) * sizeof(lambda_span)
    for b in enc:
        memcpy(w, <const char *>b, len(b))
        w[len(b)] = 0
        l.line[l.n].p = w
        l.line[l.n].n = len(b)
        l.n += 1
        w += len(b) + 1
    return 0


cdef void lines_clear(lambda_lines *l) noexcept nogil:
    free(l.store)
    memset(l, 0, sizeof(lambda_lines))


def round_trip(result, bint head_only=False):
    """response_fill() then the record read back, as (status, reason, [(name, value, line)],
    head_bytes, body): for the tests."""
    cdef lambda_response r
    cdef unsigned i
    memset(&r, 0, sizeof(lambda_response))
    try:
        response_fill(&r, result, head_only)
        return (r.status, r.reason.decode() if r.reason != NULL else None,
                [(r.headers[i].name.p[:r.headers[i].name.n].decode(),
                  r.headers[i].value.p[:r.headers[i].value.n].decode(),
                  (<bytes>r.headers[i].name.p).decode()) for i in range(r.nheaders)],
                r.head_bytes, r.body[:r.body_len] if r.body != NULL else None)
    finally:
        response_clear(&r)
