# cython: language_level=3
"""The common Lambda answer mapped in C, on the fetch thread, without the interpreter lock.

The JSON response object that nearly every function returns (statusCode, headers,
multiValueHeaders, cookies, body, isBase64Encoded) is parsed by include/vmod_lambda_resp.c for
the shapes it is sure of; everything else, and every answer it is not sure of (unusual keys,
non-string header values, repeated keys, a Connection header, an escape it does not take, bodies
of 1xx/204/304...), is mapped by events.parse_response() as before. Both give the same record, byte
for byte: tests/compiled/test_fastresponse.py runs the test corpora and a generated fuzz corpus through
both (map_c() below against events.parse_response() + _response.round_trip()).

The worker checks the payload (fast_response_check) and keeps a copy; the fetch thread maps it
(fast_response_fill), and the director's VFP decodes the body (JSON unescaping, base64) straight
into Varnish's storage (lambda_resp_body_read): no Python object of the body is ever made.
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memset

from vmod_lambda._request cimport lambda_header
from vmod_lambda._response cimport lambda_response, response_clear
from vmod_lambda_resp cimport (lambda_resp, lambda_resp_body, lambda_resp_parse, lambda_resp_reparse,
                               lambda_resp_str_copy, lambda_resp_reason,
                               lambda_resp_body_read, lambda_resp_dropped, LAMBDA_RESP_OK)

from vmod_lambda import headers as _headers


cdef bint ENABLED


cdef bint _same_policy():
    """Whether the C parser drops the response headers the header policy drops (headers.py's one
    table, RESPONSE_DROP, plus Connection, which C leaves to Python): if that table changes and
    include/vmod_lambda_resp.c does not, C maps nothing (tests/compiled/test_fastresponse.py then
    fails: C takes no answer) rather than differ."""
    cdef const char *const *d = lambda_resp_dropped()
    cdef set names = {"connection"}
    cdef int i = 0
    while d[i] != NULL:
        names.add((<bytes>d[i]).decode())
        i += 1
    return set(_headers.RESPONSE_DROP) == names


ENABLED = _same_policy()


cdef int fast_response_check(const char *p, size_t n, lambda_resp_body *body) noexcept nogil:
    cdef lambda_resp *r
    cdef int rc
    if not ENABLED:
        return 0
    r = <lambda_resp *>malloc(sizeof(lambda_resp))
    if r == NULL:
        return -1
    rc = lambda_resp_parse(p, n, r) == LAMBDA_RESP_OK
    if rc and body != NULL:
        body[0] = r.body
    free(r)
    return rc


cdef int fast_response_fill(lambda_response *out, const char *p, size_t n,
                            lambda_resp_body *body) noexcept nogil:
    # The same record as _response.response_fill(): one allocation, the header array then each
    # header as a NUL-terminated "Name: value" line.
    cdef lambda_resp *r = <lambda_resp *>malloc(sizeof(lambda_resp))
    cdef size_t text = 0, k
    cdef unsigned i
    cdef char *w
    cdef lambda_header *h
    if r == NULL:
        return -1
    if not ENABLED or lambda_resp_reparse(p, n, r, body if body.p != NULL else NULL) \
            != LAMBDA_RESP_OK:
        free(r)
        return 0
    for i in range(r.nhdr):
        text += r.hdr[i].name.len + 2 + r.hdr[i].value.len + 1
    out.store = <char *>malloc(r.nhdr * sizeof(lambda_header) + text + 1)
    if out.store == NULL:
        free(r)
        return -1
    out.headers = <lambda_header *>out.store
    w = out.store + r.nhdr * sizeof(lambda_header)
    for i in range(r.nhdr):
        h = &out.headers[i]
        h.name.p = w
        k = lambda_resp_str_copy(&r.hdr[i].name, w)
        h.name.n = k
        w += k
        w[0] = c':'
        w[1] = c' '
        w += 2
        h.value.p = w
        k = lambda_resp_str_copy(&r.hdr[i].value, w)
        h.value.n = k
        w += k
        w[0] = 0
        w += 1
        out.head_bytes += h.name.n + 2 + h.value.n + 1
    out.nheaders = r.nhdr
    if r.desc.p != NULL:
        out.reason = <char *>malloc(r.desc.len + 1)
        if out.reason == NULL:
            free(r)
            return -1       # (out.store: freed by the caller's response_clear)
        k = lambda_resp_reason(&r.desc, out.reason)
        out.reason[k] = 0
        if k == 0:
            free(out.reason)
            out.reason = NULL
    out.status = r.status
    out.body_len = r.body.len
    body[0] = r.body
    free(r)
    return 1


cdef size_t fast_response_read(lambda_resp_body *body, char *out, size_t room) noexcept nogil:
    return lambda_resp_body_read(body, out, room)


def check(payload):
    """Whether C maps this payload (bytes): for the tests."""
    cdef bytes b = bytes(payload)
    cdef int rc = fast_response_check(b, len(b), NULL)
    if rc < 0:
        raise MemoryError()
    return rc == 1


def map_c(payload, chunks=(65536,), bint checked=True):
    """The record C maps from payload (bytes), read back as _response.round_trip() reads
    Python's: (status, reason, [(name, value, line)], head_bytes, body), or None when Python
    must map it. The body is decoded through the VFP's decoder in pieces of the sizes in
    chunks (repeated), as Varnish's storage hands them out; checked: as the director does it
    (fast_response_check() on the worker, then the fill with the body it measured), else the fill
    alone: for the tests."""
    cdef bytes b = bytes(payload)
    cdef lambda_response r
    cdef lambda_resp_body body
    cdef unsigned i
    cdef int rc
    cdef size_t got, room, total = 0
    cdef bytearray out
    cdef list sizes = [int(c) for c in chunks]
    cdef int turn = 0
    memset(&r, 0, sizeof(lambda_response))
    memset(&body, 0, sizeof(lambda_resp_body))
    try:
        if checked:
            rc = fast_response_check(b, len(b), &body)
            if rc < 0:
                raise MemoryError()
            if rc == 0:
                return None
        rc = fast_response_fill(&r, b, len(b), &body)
        if rc < 0:
            raise MemoryError()
        if rc == 0:
            return None
        out = bytearray(r.body_len + 1)
        while True:
            room = min(<size_t>sizes[turn % len(sizes)], r.body_len + 1 - total)
            turn += 1
            got = fast_response_read(&body, <char *>out + total, room)
            if got == 0:
                if room == 0:
                    raise AssertionError("the decoder wrote past the Content-Length")
                break
            total += got
        if total != r.body_len:
            raise AssertionError(f"decoded {total} bytes, Content-Length {r.body_len}")
        return (r.status, r.reason.decode() if r.reason != NULL else None,
                [(r.headers[i].name.p[:r.headers[i].name.n].decode(),
                  r.headers[i].value.p[:r.headers[i].value.n].decode(),
                  (<bytes>r.headers[i].name.p).decode()) for i in range(r.nheaders)],
                r.head_bytes, bytes(out[:total]))
    finally:
        response_clear(&r)
