# cython: language_level=3, boundscheck=False, wraparound=False
"""The head of an Invoke answer parsed in C, for the direct transport (transport/direct.py,
_parse_head): (status, reason, headers, version11), the same values the Python parser gives.

It takes only the plain head: printable ASCII lines, a status of three digits from 100, header names
without white space around them and values without tabs; anything else (rare: a tab, a byte beyond
ASCII, a malformed line) makes parse() return None and _parse_head() parses it in Python, which
also raises BadResponse for the malformed ones. tests/compiled/test_httphead.py compares both
over generated heads.

Why: the worker runs each job's Python under the GIL, one job after another (_handoff.pyx); the
Python parser (decode, split, partition, lower, strip per line) cost about 1.4 us of that for a
Lambda answer's seven headers.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII


cdef inline bint _plain(unsigned char c) noexcept nogil:
    return 32 <= c <= 126


def parse(bytes head):
    """(status, reason, headers, version11) of head (without its final CRLFCRLF), headers a dict
    of lower-case name -> value (repeated names joined by ","); None when head is not plain."""
    cdef const char *p = PyBytes_AS_STRING(head)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(head)
    cdef Py_ssize_t i = 0, end, s1 = -1, s2 = -1, colon, a, b, k
    cdef int status
    cdef char lower[256]
    cdef PyObject *old
    # The status line: version, status, reason.
    while i < n and p[i] != b'\r':
        if not _plain(<unsigned char>p[i]):
            return None
        if p[i] == b' ':
            if s1 < 0:
                s1 = i
            elif s2 < 0:
                s2 = i
        i += 1
    end = i
    if s1 < 7 or p[0] != b'H' or p[1] != b'T' or p[2] != b'T' or p[3] != b'P' or p[4] != b'/' \
            or p[5] != b'1' or p[6] != b'.':
        return None
    b = s2 if s2 >= 0 else end
    if b - s1 - 1 != 3:
        return None
    status = 0
    for k in range(s1 + 1, b):
        if not (b'0' <= p[k] <= b'9'):
            return None
        status = status * 10 + (p[k] - 48)
    if status < 100:
        return None
    reason = PyUnicode_DecodeASCII(p + s2 + 1, end - s2 - 1, NULL) if s2 >= 0 else ""
    version11 = s1 == 8 and p[7] == b'1'
    headers = {}
    while i < n:
        # i is at the CR that ends the previous line
        if i + 1 >= n or p[i + 1] != b'\n':
            return None
        i += 2
        a = i
        colon = -1
        while i < n and p[i] != b'\r':
            if not _plain(<unsigned char>p[i]):
                return None
            if colon < 0 and p[i] == b':':
                colon = i
            i += 1
        if colon <= a or p[a] == b' ' or p[colon - 1] == b' ' or colon - a > 255:
            return None     # (Python: BadResponse, or a name it would strip)
        for k in range(colon - a):
            lower[k] = p[a + k] + 32 if b'A' <= p[a + k] <= b'Z' else p[a + k]
        name = PyUnicode_DecodeASCII(lower, colon - a, NULL)
        a = colon + 1
        b = i
        while a < b and p[a] == b' ':
            a += 1
        while b > a and p[b - 1] == b' ':
            b -= 1
        value = PyUnicode_DecodeASCII(p + a, b - a, NULL)
        old = PyDict_GetItem(headers, name)
        if old != NULL:
            value = f"{<object>old},{value}"
        PyDict_SetItem(headers, name, value)
    return status, reason, headers, version11
