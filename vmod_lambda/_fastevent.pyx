# cython: language_level=3
"""The event of a backend fetch in C, for the common case, on the fetch thread.

Mapping a request to its event in Python (events.build_event) is the largest part of the Python a
Lambda fetch runs, and all of that Python runs one job after another under the GIL on the worker
that carries the load; profiles put about a third of a Lambda pass's child CPU there
(BENCHMARKS.md). For the common request this module builds the same bytes in C without the GIL,
on the fetch thread (so in parallel on every CPU), reading the request record (_request.pxd):
payload format 1.0, no request body, a request head of printable ASCII with no percent-escape in
the URL and a URL in origin form ("/..."). For anything else fast_event_v1() returns NULL and
events.py maps the request (reading the same record), as before.

The output is byte for byte what events.build_event("1.0", ...) (or "1.0-compat", with compat)
produces for the same request, request id and time (tests/compiled/test_fastevent.py compares them on generated requests): key order,
compact separators, the JSON escapes of printable ASCII (only '"' and '\\'), header names
lower-cased and grouped in order of first appearance, "+" in the query as a space, the last
X-Forwarded-For entry as the source IP, null for no query / user agent / proxy path ("1.0-compat":
{} for no query, "" for no body).
"""

from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memchr, strlen
from libc.stdint cimport uint64_t
from libc.math cimport floor

from libc.stdio cimport snprintf
from posix_io cimport time_t, tm, gmtime_r, getrandom
from vmod_lambda_tls cimport lambda_rid_state
from vmod_lambda._request cimport lambda_request, Request

from vmod_lambda import events as _events

cdef enum:
    MAX_LINES = 256         # headers, or query pairs: more and Python maps the request

# The constants of the event (events.py), as C strings: set once below, kept alive by _KEEP.
cdef const char *ACCOUNT_ID
cdef const char *API_ID
cdef const char *STAGE
_KEEP = [_events.ACCOUNT_ID.encode("ascii"), _events.API_ID.encode("ascii"),
         _events.STAGE.encode("ascii")]
ACCOUNT_ID = _KEEP[0]
API_ID = _KEEP[1]
STAGE = _KEEP[2]

cdef const char *MONTHS[12]
_MONTHS = [m.encode("ascii") for m in _events._MONTHS]
for _i in range(12):
    MONTHS[_i] = _MONTHS[_i]


cdef struct span:
    const char *p
    size_t n


cdef struct buf:
    char *p
    size_t n
    size_t cap
    bint failed


cdef void _put(buf *b, const char *p, size_t n) noexcept nogil:
    cdef size_t want
    cdef char *np
    if b.failed:
        return
    if b.n + n > b.cap:
        want = b.cap * 2
        while want < b.n + n:
            want *= 2
        np = <char *>realloc(b.p, want)
        if np == NULL:
            b.failed = True
            return
        b.p = np
        b.cap = want
    memcpy(b.p + b.n, p, n)
    b.n += n


cdef inline void _lit(buf *b, const char *s) noexcept nogil:
    _put(b, s, strlen(s))


cdef void _str(buf *b, const char *p, size_t n, bint plus_is_space) noexcept nogil:
    """A JSON string of printable ASCII: only '"' and '\\' are escaped."""
    cdef size_t i, start = 0
    cdef char c
    _put(b, "\"", 1)
    for i in range(n):
        c = p[i]
        if c == c'"' or c == c'\\':
            _put(b, p + start, i - start)
            _put(b, "\\\"" if c == c'"' else "\\\\", 2)
            start = i + 1
        elif plus_is_space and c == c'+':
            _put(b, p + start, i - start)
            _put(b, " ", 1)
            start = i + 1
    _put(b, p + start, n - start)
    _put(b, "\"", 1)


cdef inline void _sstr(buf *b, span s) noexcept nogil:
    _str(b, s.p, s.n, False)


cdef inline void _cstr(buf *b, const char *s) noexcept nogil:
    _str(b, s, strlen(s), False)


cdef inline char _lower(char c) noexcept nogil:
    return c + 32 if c'A' <= c <= c'Z' else c


cdef bint _same_lower(span a, const char *lower_b, size_t bn) noexcept nogil:
    """a, lower-cased, equals lower_b (bn bytes, already lower case)."""
    cdef size_t i
    if a.n != bn:
        return False
    for i in range(bn):
        if _lower(a.p[i]) != lower_b[i]:
            return False
    return True


cdef bint _same_name(span a, span b) noexcept nogil:
    """Equal once lower-cased."""
    cdef size_t i
    if a.n != b.n:
        return False
    for i in range(a.n):
        if _lower(a.p[i]) != _lower(b.p[i]):
            return False
    return True


cdef bint _same_key(span a, span b) noexcept nogil:
    """Equal query keys once "+" is read as a space (no other decoding happens here)."""
    cdef size_t i
    cdef char x, y
    if a.n != b.n:
        return False
    for i in range(a.n):
        x = a.p[i]
        y = b.p[i]
        if x == c'+':
            x = c' '
        if y == c'+':
            y = c' '
        if x != y:
            return False
    return True


cdef void _lname(buf *b, span s) noexcept nogil:
    """A header name as a JSON string, lower-cased (printable ASCII: no escape but '"', '\\')."""
    cdef char tmp[256]
    cdef size_t i
    if s.n > sizeof(tmp):
        b.failed = True
        return
    for i in range(s.n):
        tmp[i] = _lower(s.p[i])
    _str(b, tmp, s.n, False)


cdef void _group(span *keys, int n, int *first, int *last, bint query) noexcept nogil:
    """first[i]: the index of the first key equal to keys[i] (lower-cased names, or query keys);
    last[j] (for a first j): the index of the last one."""
    cdef int i, j
    for i in range(n):
        first[i] = i
        for j in range(i):
            if (_same_key(keys[i], keys[j]) if query else _same_name(keys[i], keys[j])):
                first[i] = first[j]
                break
        last[first[i]] = i


cdef void _key(buf *b, span k, bint comma, bint query) noexcept nogil:
    """[","] "key": -- a query key ("+" as a space) or a lower-cased header name."""
    if comma:
        _put(b, ",", 1)
    if query:
        _str(b, k.p, k.n, True)
    else:
        _lname(b, k)
    _put(b, ":", 1)


cdef void _objects(buf *b, const char *single, const char *multi, span *keys, span *vals, int n,
                   bint query, bint compat) noexcept nogil:
    """"single":{k:last value,...},"multi":{k:[values...],...} ({} or null when n == 0; compat:
    single is {} then, as "1.0-compat" has it)."""
    cdef int first[MAX_LINES]
    cdef int last[MAX_LINES]
    cdef int i, j
    cdef bint comma
    _group(keys, n, first, last, query)
    _lit(b, single)
    if n == 0:
        _lit(b, "null" if query and not compat else "{}")
    else:
        _put(b, "{", 1)
        comma = False
        for i in range(n):
            if first[i] != i:
                continue
            _key(b, keys[i], comma, query)
            comma = True
            _str(b, vals[last[i]].p, vals[last[i]].n, query)
        _put(b, "}", 1)
    _lit(b, multi)
    if n == 0:
        _lit(b, "null" if query else "{}")
        return
    _put(b, "{", 1)
    comma = False
    for i in range(n):
        if first[i] != i:
            continue
        _key(b, keys[i], comma, query)
        comma = True
        _put(b, "[", 1)
        for j in range(i, n):
            if first[j] == i:
                if j != i:
                    _put(b, ",", 1)
                _str(b, vals[j].p, vals[j].n, query)
        _put(b, "]", 1)
    _put(b, "}", 1)


cdef void _request_id(char *out) noexcept nogil:
    """A random version-4 UUID, 36 characters and a NUL (xorshift128+ per thread, seeded from
    getrandom(): an identifier, not a secret; events.py uses random.getrandbits likewise)."""
    cdef unsigned long long s0, s1
    cdef unsigned long long r[2]
    cdef unsigned char b[16]
    cdef int i, k
    cdef const char *hexd = "0123456789abcdef"
    if lambda_rid_state[0] == 0 and lambda_rid_state[1] == 0:
        if getrandom(lambda_rid_state, sizeof(lambda_rid_state), 0) != sizeof(lambda_rid_state) \
                or (lambda_rid_state[0] == 0 and lambda_rid_state[1] == 0):
            lambda_rid_state[0] = (<unsigned long long><size_t>&s0) ^ 0x9e3779b97f4a7c15ULL
            lambda_rid_state[1] = 0xbf58476d1ce4e5b9ULL
    for i in range(2):
        s1 = lambda_rid_state[0]
        s0 = lambda_rid_state[1]
        lambda_rid_state[0] = s0
        s1 ^= s1 << 23
        lambda_rid_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26)
        r[i] = lambda_rid_state[1] + s0
    memcpy(b, r, 16)
    b[6] = (b[6] & 0x0f) | 0x40
    b[8] = (b[8] & 0x3f) | 0x80
    k = 0
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[k] = c'-'
            k += 1
        out[k] = hexd[b[i] >> 4]
        out[k + 1] = hexd[b[i] & 15]
        k += 2
    out[k] = 0


cdef char *fast_event_v1(const lambda_request *r, double now, bint compat,
                         size_t *out_len) noexcept nogil:
    """The payload-format 1.0 event of a request record (_request.pxd) without a body, whose
    head is printable ASCII and its URL in origin form without a "%": a malloc'd JSON document of
    *out_len bytes, or NULL (not such a request, or out of memory): then Python maps it. compat:
    the "1.0-compat" event (its empty values)."""
    cdef char rid[37]
    return _event_v1(r, now, compat, NULL, out_len, rid)


cdef bint _printable(span s) noexcept nogil:
    cdef size_t k
    cdef char c
    for k in range(s.n):
        c = s.p[k]
        if c < 0x20 or c > 0x7e:
            return False
    return True


cdef char *_event_v1(const lambda_request *r, double now, bint compat, const char *given_rid,
                     size_t *out_len, char *rid) noexcept nogil:
    cdef span line[3]
    cdef span hname[MAX_LINES]
    cdef span hval[MAX_LINES]
    cdef span qkey[MAX_LINES]
    cdef span qval[MAX_LINES]
    cdef int nh = 0, nq = 0, i
    cdef size_t pos = 0, end, k
    cdef const char *colon
    cdef const char *nl_p
    cdef span path, query, host, ua, xff, ip, s
    cdef bint has_query = False, has_host = False, has_ua = False, has_xff = False
    cdef buf b
    cdef char timebuf[64]
    cdef char num[32]
    cdef time_t secs
    cdef tm t
    host.p = ua.p = xff.p = NULL
    host.n = ua.n = xff.n = 0

    # Printable ASCII only; at most MAX_LINES headers.
    if r.nheaders > MAX_LINES or r.proto.n == 0:
        return NULL
    line[0].p = r.method.p
    line[0].n = r.method.n
    line[1].p = r.url.p
    line[1].n = r.url.n
    line[2].p = r.proto.p
    line[2].n = r.proto.n
    for i in range(3):
        if not _printable(line[i]):
            return NULL
    for i in range(<int>r.nheaders):
        hname[i].p = r.headers[i].name.p
        hname[i].n = r.headers[i].name.n
        hval[i].p = r.headers[i].value.p
        hval[i].n = r.headers[i].value.n
        if not _printable(hname[i]) or not _printable(hval[i]):
            return NULL
    nh = <int>r.nheaders
    # The URL: origin form, no percent-escape (decoding is left to Python).
    if line[1].n == 0 or line[1].p[0] != c'/' or memchr(line[1].p, c'%', line[1].n) != NULL:
        return NULL
    path = line[1]
    nl_p = <const char *>memchr(path.p, c'?', path.n)
    if nl_p != NULL:
        has_query = True
        query.p = nl_p + 1
        query.n = path.n - <size_t>(nl_p - path.p) - 1
        path.n = <size_t>(nl_p - path.p)
    if has_query:
        pos = 0
        while pos <= query.n and query.n > 0:
            nl_p = <const char *>memchr(query.p + pos, c'&', query.n - pos)
            end = <size_t>(nl_p - query.p) if nl_p != NULL else query.n
            if end > pos:
                if nq == MAX_LINES:
                    return NULL
                s.p = query.p + pos
                s.n = end - pos
                colon = <const char *>memchr(s.p, c'=', s.n)
                qkey[nq].p = s.p
                if colon == NULL:
                    qkey[nq].n = s.n
                    qval[nq].p = s.p + s.n
                    qval[nq].n = 0
                else:
                    qkey[nq].n = <size_t>(colon - s.p)
                    qval[nq].p = colon + 1
                    qval[nq].n = s.n - qkey[nq].n - 1
                nq += 1
            pos = end + 1
    # Host (the last), User-Agent (the last), X-Forwarded-For (the last).
    for i in range(nh):
        if _same_lower(hname[i], "host", 4):
            host = hval[i]
            has_host = True
        elif _same_lower(hname[i], "user-agent", 10):
            ua = hval[i]
            has_ua = True
        elif _same_lower(hname[i], "x-forwarded-for", 15):
            xff = hval[i]
            has_xff = True
    if has_xff and xff.n > 0:
        ip = xff
        nl_p = NULL
        for k in range(xff.n):
            if xff.p[k] == c',':
                nl_p = xff.p + k
        if nl_p != NULL:
            ip.p = nl_p + 1
            ip.n = xff.n - <size_t>(nl_p - xff.p) - 1
        while ip.n > 0 and ip.p[0] == c' ':
            ip.p += 1
            ip.n -= 1
        while ip.n > 0 and ip.p[ip.n - 1] == c' ':
            ip.n -= 1
    else:
        ip.p = "127.0.0.1"
        ip.n = 9
    # Time and request id.
    secs = <time_t>floor(now)
    if gmtime_r(&secs, &t) == NULL or t.tm_year + 1900 > 9999 or t.tm_year + 1900 < 0:
        return NULL
    snprintf(timebuf, sizeof(timebuf), "%02d/%s/%04d:%02d:%02d:%02d +0000", t.tm_mday,
             MONTHS[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec)
    snprintf(num, sizeof(num), "%lld", <long long>(now * 1000.0))
    if given_rid != NULL:
        memcpy(rid, given_rid, 36)
        rid[36] = 0
    else:
        _request_id(rid)

    b.cap = 1024
    b.n = 0
    b.failed = False
    b.p = <char *>malloc(b.cap)
    if b.p == NULL:
        return NULL
    _lit(&b, "{\"version\":\"1.0\",\"resource\":\"/{proxy+}\",\"path\":")
    _sstr(&b, path)
    _lit(&b, ",\"httpMethod\":")
    _sstr(&b, line[0])
    _objects(&b, ",\"headers\":", ",\"multiValueHeaders\":", hname, hval, nh, False, False)
    _objects(&b, ",\"queryStringParameters\":", ",\"multiValueQueryStringParameters\":", qkey,
             qval, nq, True, compat)
    _lit(&b, ",\"requestContext\":{\"accountId\":")
    _cstr(&b, ACCOUNT_ID)
    _lit(&b, ",\"apiId\":")
    _cstr(&b, API_ID)
    _lit(&b, ",\"domainName\":")
    if has_host:
        _sstr(&b, host)
        s = host
        nl_p = <const char *>memchr(host.p, c'.', host.n)
        if nl_p != NULL:
            s.n = <size_t>(nl_p - host.p)
        _lit(&b, ",\"domainPrefix\":")
        _sstr(&b, s)
    else:
        _lit(&b, "\"\",\"domainPrefix\":\"\"")
    _lit(&b, ",\"extendedRequestId\":")
    _cstr(&b, rid)
    _lit(&b, ",\"httpMethod\":")
    _sstr(&b, line[0])
    _lit(&b, ",\"identity\":{\"sourceIp\":")
    _sstr(&b, ip)
    _lit(&b, ",\"userAgent\":")
    if has_ua:
        _sstr(&b, ua)
    else:
        _lit(&b, "null")
    _lit(&b, "},\"path\":")
    _sstr(&b, path)
    _lit(&b, ",\"protocol\":")
    _sstr(&b, line[2])
    _lit(&b, ",\"requestId\":")
    _cstr(&b, rid)
    _lit(&b, ",\"requestTime\":")
    _cstr(&b, timebuf)
    _lit(&b, ",\"requestTimeEpoch\":")
    _lit(&b, num)
    _lit(&b, ",\"resourceId\":")
    _cstr(&b, API_ID)
    _lit(&b, ",\"resourcePath\":\"/{proxy+}\",\"stage\":")
    _cstr(&b, STAGE)
    _lit(&b, "},\"pathParameters\":")
    if path.n > 1:
        s.p = path.p + 1
        s.n = path.n - 1
        _lit(&b, "{\"proxy\":")
        _sstr(&b, s)
        _lit(&b, "}")
    else:
        _lit(&b, "null")
    if compat:
        _lit(&b, ",\"stageVariables\":null,\"body\":\"\",\"isBase64Encoded\":false}")
    else:
        _lit(&b, ",\"stageVariables\":null,\"body\":null,\"isBase64Encoded\":false}")
    if b.failed:
        free(b.p)
        return NULL
    out_len[0] = b.n
    return b.p


def build_v1(Request req, str request_id, double now, bint compat=False):
    """fast_event_v1() of a request record with a given request id (36 characters) and time,
    for the tests: the event as bytes, or None when the request is left to Python."""
    cdef size_t n = 0
    cdef char rid[37]
    cdef bytes rb = request_id.encode("ascii")
    cdef char *p
    if len(rb) != 36:
        raise ValueError("a request id is 36 characters")
    p = _event_v1(req._get(), now, compat, rb, &n, rid)
    if p == NULL:
        return None
    try:
        return p[:n]
    finally:
        free(p)


def request_id():
    """A request id as fast_event_v1() makes them (for the tests)."""
    cdef char rid[37]
    _request_id(rid)
    return rid.decode("ascii")
