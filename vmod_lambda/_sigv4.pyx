# cython: language_level=3, boundscheck=False, wraparound=False
"""The signed head of an Invoke request of the direct transport, built in C (transport/direct.py,
DirectClient.request_head): the request line, the headers, their SigV4 signature (libcrypto's
SHA-256 and HMAC-SHA256, the signing key cached per (day, secret)), in one buffer.

It gives the bytes that the Python builder of direct.py gives for the same request, credentials and
time (tests/compiled/test_sigv4.py compares them over generated requests, and
tests/compiled/test_direct.py compares the signature with botocore's): the same headers in the same
order. The signed headers of an Invoke call are a fixed set, so their sorted order is fixed too:
content-type, host, x-amz-client-context, x-amz-date, x-amz-invocation-type, x-amz-log-type,
x-amz-security-token, x-amz-tenant-id (the ones that are set).

It takes only what is plain: every string ASCII, and the values that SigV4 trims (Trimall) free of
white space and control characters, so that there is nothing to trim and the canonical request
holds them as sent. Anything else (rare: a tenant id with spaces, non-ASCII credentials) makes
head() return None and direct.py builds the head in Python, as before.

Why: the worker runs each job's Python under the GIL, one job after another (_handoff.pyx); the
Python builder cost about 6 us of that per call (list and tuple building, sort, f-strings, three
hashlib/hmac calls, strftime), this one about 1.7 us for a 1 KB event, most of it the two SHA-256
and the HMAC. The hash of a large payload (64 KiB and more)
is done without the GIL, as hashlib does for large data; for the common small event a GIL release
would cost more than the hash (a possible hand-off to another worker).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp, memcpy, strlen
from posix.time cimport clock_gettime, CLOCK_REALTIME, timespec

from openssl cimport (EVP_DigestFinal_ex, EVP_DigestInit_ex2, EVP_DigestUpdate, EVP_MD,
                     EVP_MD_CTX, EVP_MD_CTX_copy_ex, EVP_MD_CTX_free, EVP_MD_CTX_new,
                     EVP_MD_fetch, EVP_sha256, HMAC, SHA256)
from posix_io cimport gmtime_r, time_t, tm
from py_ascii cimport PyUnicode_AsUTF8AndSize, PyUnicode_IS_ASCII

cdef const char *_HEX = b"0123456789abcdef"
cdef Py_ssize_t NOGIL_HASH = 65536     # hashlib releases the GIL from 2 KiB; a worker, from here
# SHA-256 fetched once: OpenSSL 3's one-shot SHA256() and HMAC() look the algorithm up and make a
# context on every call (about 0.4 and 1.5 us here); digests of reused contexts do neither.
cdef EVP_MD *_MD = EVP_MD_fetch(NULL, b"SHA256", NULL)

# One string argument, read in place (ASCII: its characters are its bytes).
cdef struct text:
    const char *p
    Py_ssize_t n

cdef struct outbuf:
    char *p
    Py_ssize_t n


cdef inline void put(outbuf *b, const char *s, Py_ssize_t n) noexcept nogil:
    memcpy(b.p + b.n, s, n)
    b.n += n


cdef inline void puts(outbuf *b, const char *s) noexcept nogil:
    put(b, s, <Py_ssize_t>strlen(s))


cdef inline void putt(outbuf *b, text t) noexcept nogil:
    put(b, t.p, t.n)


cdef inline void puthex(outbuf *b, const unsigned char *d, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        b.p[b.n] = _HEX[d[i] >> 4]
        b.p[b.n + 1] = _HEX[d[i] & 15]
        b.n += 2


cdef int _text(object s, text *t, bint trimmed) except -1:
    """t from s (a str, or None/"" for not set: t.n = 0). 1: usable; 0: not (not ASCII, or a value
    SigV4 trims that has white space or control characters in it)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    t.p = NULL
    t.n = 0
    if s is None:
        return 1
    if type(s) is not str or not PyUnicode_IS_ASCII(s):
        return 0
    t.p = PyUnicode_AsUTF8AndSize(s, &t.n)
    if trimmed:
        for i in range(t.n):
            c = <unsigned char>t.p[i]
            if c <= 32 or c >= 127:
                return 0
    return 1


cdef inline void _digits(char *p, int v, int n) noexcept nogil:
    """v in n decimal digits, zero-padded (v < 10**n)."""
    while n > 0:
        n -= 1
        p[n] = <char>(48 + v % 10)
        v //= 10


cdef class HeadSigner:
    """The head builder of one DirectClient: its region, service, Host and User-Agent, and the
    signing key of the last (day, secret) it signed with. Used under the GIL (its key cache is
    read and written with it held)."""

    cdef bytes region
    cdef bytes service
    cdef bytes host
    cdef bytes user_agent
    cdef object key_secret
    cdef char key_day[9]
    cdef unsigned char key[32]
    cdef public bint usable
    # A context to digest with, and HMAC-SHA256's inner and outer contexts of the cached key (its
    # padded key block absorbed): an HMAC is then two copies, two updates and two finals.
    cdef EVP_MD_CTX *work
    cdef EVP_MD_CTX *inner
    cdef EVP_MD_CTX *outer

    def __cinit__(self):
        self.work = EVP_MD_CTX_new()
        self.inner = EVP_MD_CTX_new()
        self.outer = EVP_MD_CTX_new()
        if self.work == NULL or self.inner == NULL or self.outer == NULL:
            raise MemoryError()

    def __dealloc__(self):
        EVP_MD_CTX_free(self.work)
        EVP_MD_CTX_free(self.inner)
        EVP_MD_CTX_free(self.outer)

    cdef void _scope(self, outbuf *b, const char *amz_date) noexcept:
        """The credential scope, day/region/service/aws4_request (the string to sign's and the
        Authorization header's)."""
        put(b, amz_date, 8)
        puts(b, "/")
        put(b, PyBytes_AS_STRING(self.region), PyBytes_GET_SIZE(self.region))
        puts(b, "/")
        put(b, PyBytes_AS_STRING(self.service), PyBytes_GET_SIZE(self.service))
        puts(b, "/aws4_request")

    cdef bint _digest(self, const void *d, size_t n, unsigned char *out) noexcept:
        cdef unsigned int olen = 32
        return (EVP_DigestInit_ex2(self.work, _MD, NULL) == 1
                and EVP_DigestUpdate(self.work, d, n) == 1
                and EVP_DigestFinal_ex(self.work, out, &olen) == 1)

    cdef bint _hmac_key(self, const unsigned char *key) noexcept:
        """The inner and outer contexts of HMAC-SHA256 with this 32-byte key (RFC 2104)."""
        cdef unsigned char ipad[64]
        cdef unsigned char opad[64]
        cdef int i
        for i in range(64):
            ipad[i] = 0x36 ^ (key[i] if i < 32 else 0)
            opad[i] = 0x5c ^ (key[i] if i < 32 else 0)
        return (EVP_DigestInit_ex2(self.inner, _MD, NULL) == 1
                and EVP_DigestUpdate(self.inner, ipad, 64) == 1
                and EVP_DigestInit_ex2(self.outer, _MD, NULL) == 1
                and EVP_DigestUpdate(self.outer, opad, 64) == 1)

    cdef bint _hmac(self, const void *d, size_t n, unsigned char *out) noexcept:
        """HMAC-SHA256 of d with the cached signing key."""
        cdef unsigned char h[32]
        cdef unsigned int olen = 32
        return (EVP_MD_CTX_copy_ex(self.work, self.inner) == 1
                and EVP_DigestUpdate(self.work, d, n) == 1
                and EVP_DigestFinal_ex(self.work, h, &olen) == 1
                and EVP_MD_CTX_copy_ex(self.work, self.outer) == 1
                and EVP_DigestUpdate(self.work, h, 32) == 1
                and EVP_DigestFinal_ex(self.work, out, &olen) == 1)

    def __init__(self, str region, str service, str host, str user_agent):
        self.usable = _MD != NULL and all(x.isascii() for x in (region, service, host, user_agent))
        self.region = region.encode("ascii", "replace")
        self.service = service.encode("ascii", "replace")
        self.host = host.encode("ascii", "replace")
        self.user_agent = user_agent.encode("ascii", "replace")
        self.key_secret = None
        self.key_day[0] = 0

    cdef int _signing_key(self, str secret, const char *day, text sec) except -1:
        """The HMAC contexts of the signing key of (day, secret), derived when they change.
        1: ready; 0: OpenSSL failed (the head is built in Python then)."""
        cdef unsigned char k[32]
        cdef unsigned int klen = 32
        cdef char *kbuf
        cdef Py_ssize_t n
        if self.key_secret is not None and memcmp(self.key_day, day, 8) == 0 \
                and self.key_secret == secret:
            return 1
        self.key_secret = None
        n = sec.n + 4
        kbuf = <char *>PyMem_Malloc(n)
        if kbuf == NULL:
            raise MemoryError()
        memcpy(kbuf, b"AWS4", 4)
        memcpy(kbuf + 4, sec.p, sec.n)
        HMAC(EVP_sha256(), kbuf, <int>n, <const unsigned char *>day, 8, k, &klen)
        PyMem_Free(kbuf)
        HMAC(EVP_sha256(), k, 32, <const unsigned char *>PyBytes_AS_STRING(self.region),
             PyBytes_GET_SIZE(self.region), k, &klen)
        HMAC(EVP_sha256(), k, 32, <const unsigned char *>PyBytes_AS_STRING(self.service),
             PyBytes_GET_SIZE(self.service), k, &klen)
        HMAC(EVP_sha256(), k, 32, <const unsigned char *>b"aws4_request", 12, k, &klen)
        if not self._hmac_key(k):
            return 0
        memcpy(self.key, k, 32)
        memcpy(self.key_day, day, 8)
        self.key_day[8] = 0
        self.key_secret = secret
        return 1

    def head(self, str target, str curi, str cquery, log_type, client_context,
             str invocation_type, tenant_id, trace_id, bytes payload, str access_key,
             str secret_key, token, now):
        """The head (bytes) of one request, as DirectClient.request_head() sends it; None when
        the request is not plain (see the module's docstring): build it in Python then.
        Empty strings count as not set, as there. now: a time.struct_time (tests), or None for
        the current time."""
        cdef text t_target, t_curi, t_cquery, t_log, t_ctx, t_itype, t_tenant, t_trace
        cdef text t_ak, t_sk, t_token, t_host, t_ua
        cdef char amz_date[32]
        cdef char num[32]
        cdef unsigned char phash[32]
        cdef unsigned char chash[32]
        cdef unsigned char sig[32]
        cdef timespec ts
        cdef time_t secs
        cdef tm g
        cdef int year, mon, mday, hour, minute, sec
        cdef Py_ssize_t cap, plen
        cdef int i
        cdef outbuf b
        cdef char *buf
        cdef char *canon
        cdef char *sts
        cdef Py_ssize_t canon_n, sts_n, signed_at, signed_n
        cdef const unsigned char *pdata
        cdef bytes out
        if not self.usable:
            return None
        if not (_text(target, &t_target, False) and _text(curi, &t_curi, False)
                and _text(cquery, &t_cquery, False) and _text(log_type, &t_log, True)
                and _text(client_context, &t_ctx, True)
                and _text(invocation_type, &t_itype, True)
                and _text(tenant_id, &t_tenant, True) and _text(trace_id, &t_trace, False)
                and _text(access_key, &t_ak, False) and _text(secret_key, &t_sk, False)
                and _text(token, &t_token, False)):
            return None
        t_host.p = PyBytes_AS_STRING(self.host)
        t_host.n = PyBytes_GET_SIZE(self.host)
        t_ua.p = PyBytes_AS_STRING(self.user_agent)
        t_ua.n = PyBytes_GET_SIZE(self.user_agent)
        if now is None:
            clock_gettime(CLOCK_REALTIME, &ts)
            secs = ts.tv_sec
            gmtime_r(&secs, &g)
            year, mon, mday = g.tm_year + 1900, g.tm_mon + 1, g.tm_mday
            hour, minute, sec = g.tm_hour, g.tm_min, g.tm_sec
        else:
            year, mon, mday, hour, minute, sec = now[0], now[1], now[2], now[3], now[4], now[5]
        if not (0 <= year <= 9999 and 1 <= mon <= 12 and 1 <= mday <= 31 and 0 <= hour <= 23
                and 0 <= minute <= 59 and 0 <= sec <= 61):
            return None
        _digits(amz_date, year, 4)
        _digits(amz_date + 4, mon, 2)
        _digits(amz_date + 6, mday, 2)
        amz_date[8] = b'T'
        _digits(amz_date + 9, hour, 2)
        _digits(amz_date + 11, minute, 2)
        _digits(amz_date + 13, sec, 2)
        amz_date[15] = b'Z'
        amz_date[16] = 0
        if not self._signing_key(secret_key, amz_date, t_sk):
            return None

        plen = PyBytes_GET_SIZE(payload)
        pdata = <const unsigned char *>PyBytes_AS_STRING(payload)
        if plen >= NOGIL_HASH:
            # (its own context: another worker may use this signer's meanwhile)
            with nogil:
                if SHA256(pdata, <size_t>plen, phash) == NULL:
                    plen = -1
            if plen < 0:
                return None
        elif not self._digest(pdata, <size_t>plen, phash):
            return None

        # Room for everything below: the variable parts (each at most twice: canonical request
        # and head) and 1 KiB for the constant ones.
        cap = 2 * (t_target.n + t_curi.n + t_cquery.n + t_log.n + t_ctx.n + t_itype.n
                   + t_tenant.n + t_trace.n + t_ak.n + t_token.n + t_host.n + t_ua.n
                   + PyBytes_GET_SIZE(self.region) + PyBytes_GET_SIZE(self.service)) + 1024
        buf = <char *>PyMem_Malloc(2 * cap)
        if buf == NULL:
            raise MemoryError()
        try:
            # The canonical request (SigV4: method, URI, query, headers, signed names, hash).
            canon = buf
            b.p = canon
            b.n = 0
            puts(&b, "POST\n")
            putt(&b, t_curi)
            puts(&b, "\n")
            putt(&b, t_cquery)
            puts(&b, "\ncontent-type:application/octet-stream\nhost:")
            putt(&b, t_host)
            if t_ctx.n:
                puts(&b, "\nx-amz-client-context:")
                putt(&b, t_ctx)
            puts(&b, "\nx-amz-date:")
            puts(&b, amz_date)
            puts(&b, "\nx-amz-invocation-type:")
            putt(&b, t_itype)
            if t_log.n:
                puts(&b, "\nx-amz-log-type:")
                putt(&b, t_log)
            if t_token.n:
                puts(&b, "\nx-amz-security-token:")
                putt(&b, t_token)
            if t_tenant.n:
                puts(&b, "\nx-amz-tenant-id:")
                putt(&b, t_tenant)
            puts(&b, "\n\n")
            signed_at = b.n
            puts(&b, "content-type;host")
            if t_ctx.n:
                puts(&b, ";x-amz-client-context")
            puts(&b, ";x-amz-date;x-amz-invocation-type")
            if t_log.n:
                puts(&b, ";x-amz-log-type")
            if t_token.n:
                puts(&b, ";x-amz-security-token")
            if t_tenant.n:
                puts(&b, ";x-amz-tenant-id")
            signed_n = b.n - signed_at
            puts(&b, "\n")
            puthex(&b, phash, 32)
            canon_n = b.n
            if not self._digest(canon, <size_t>canon_n, chash):
                return None

            # The string to sign, after the canonical request in the same buffer.
            sts = canon + canon_n
            b.p = sts
            b.n = 0
            puts(&b, "AWS4-HMAC-SHA256\n")
            puts(&b, amz_date)
            puts(&b, "\n")
            self._scope(&b, amz_date)
            puts(&b, "\n")
            puthex(&b, chash, 32)
            sts_n = b.n
            if not self._hmac(sts, <size_t>sts_n, sig):
                return None

            # The head, in the second half of the buffer, in the order direct.py sends it.
            b.p = buf + cap
            b.n = 0
            puts(&b, "POST ")
            putt(&b, t_target)
            puts(&b, " HTTP/1.1\r\nHost: ")
            putt(&b, t_host)
            if t_log.n:
                puts(&b, "\r\nX-Amz-Log-Type: ")
                putt(&b, t_log)
            if t_ctx.n:
                puts(&b, "\r\nX-Amz-Client-Context: ")
                putt(&b, t_ctx)
            puts(&b, "\r\nX-Amz-Invocation-Type: ")
            putt(&b, t_itype)
            if t_tenant.n:
                puts(&b, "\r\nX-Amz-Tenant-Id: ")
                putt(&b, t_tenant)
            puts(&b, "\r\nContent-Type: application/octet-stream\r\nX-Amz-Date: ")
            puts(&b, amz_date)
            if t_token.n:
                puts(&b, "\r\nX-Amz-Security-Token: ")
                putt(&b, t_token)
            puts(&b, "\r\nAuthorization: AWS4-HMAC-SHA256 Credential=")
            putt(&b, t_ak)
            puts(&b, "/")
            self._scope(&b, amz_date)
            puts(&b, ", SignedHeaders=")
            put(&b, canon + signed_at, signed_n)
            puts(&b, ", Signature=")
            puthex(&b, sig, 32)
            if t_trace.n:
                puts(&b, "\r\nX-Amzn-Trace-Id: ")
                putt(&b, t_trace)
            puts(&b, "\r\nUser-Agent: ")
            putt(&b, t_ua)
            puts(&b, "\r\nContent-Length: ")
            i = 31
            num[i] = 0
            while True:
                i -= 1
                num[i] = <char>(48 + plen % 10)
                plen //= 10
                if plen == 0:
                    break
            puts(&b, num + i)
            puts(&b, "\r\n\r\n")
            out = PyBytes_FromStringAndSize(b.p, b.n)
        finally:
            PyMem_Free(buf)
        return out
