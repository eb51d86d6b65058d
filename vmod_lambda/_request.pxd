# The request of a backend fetch (or of a probe poke): collected once, on the fetch thread, from
# bo->bereq (request_collect) into one typed record that every later stage reads: the C event
# builder (_fastevent) reads the struct, the Python mapping (fetch.py, events.py) reads it through
# the Request view. The strings and the header array are copies in one allocation owned by the
# record (bereq's pointers are only valid during gethdrs); the body is a buffer of its own.

from cache cimport http

cdef struct lambda_span:
    const char *p
    size_t n

cdef struct lambda_header:
    lambda_span name            # as Varnish holds it (case kept)
    lambda_span value           # blanks and tabs around it removed
    # (in the order of bereq, repeats kept)

cdef struct lambda_request:
    lambda_span method
    lambda_span url
    lambda_span proto
    lambda_header *headers
    unsigned nheaders
    size_t head_bytes           # bytes of the head as sent (lines and line ends): bereq_hdrbytes
    char *store                 # the one allocation behind the spans and the header array
    char *body                  # PyMem_Raw*: at most limits.MAX_REQUEST_BODY bytes are kept
    size_t body_len
    size_t body_cap
    size_t body_seen            # bytes the client sent, also beyond the limit (then body is dropped)

# Copy the head of hp into r (r zeroed, or cleared): 0, or -1 out of memory. The request side of
# the header policy (headers.py) applies here: the headers it drops are not in the record.
cdef int request_collect(lambda_request *r, const http *hp) noexcept nogil
# Append body bytes (a VRB_Iterate/ObjIterate callback's data): 0, or -1 out of memory. Beyond
# MAX_REQUEST_BODY nothing more is kept, only counted (body_seen): the fetch answers 413.
cdef int request_body_append(lambda_request *r, const char *p, size_t n) noexcept nogil
# The value of the first header named lname (lower case, n bytes): 1, or 0 without one.
cdef int request_header(const lambda_request *r, const char *lname, size_t n,
                        lambda_span *out) noexcept nogil
# A malloc'd copy of the first value of the header lname (lower case, n bytes) of hp, or NULL.
cdef char *http_header_dup(const http *hp, const char *lname, size_t n) noexcept nogil
cdef bint request_body_dropped(const lambda_request *r) noexcept nogil
cdef void request_clear(lambda_request *r) noexcept nogil


cdef class Request:
    """The Python view of a lambda_request: method, url, proto, headers, body, body_len."""
    cdef lambda_request *r      # what it shows: its own (own) or a job's (borrowed), NULL: gone
    cdef lambda_request own
    cdef bint borrowed
    cdef lambda_request *_get(self) except NULL

# A view of a job's record, valid until request_unview(): the job outlives it.
cdef Request request_view(lambda_request *r)
cdef void request_unview(Request v) noexcept
