# The answer of a backend fetch, mapped once by the worker (fetch.FetchResult -> response_fill)
# into one typed record that the fetch thread writes into beresp (_director.pyx), and the
# varnishlog lines of an invocation (the record line, then the function's log tail), read by
# the thread that logs them. The status code, base64 and function errors are already decoded
# (fetch.py, invoker.py); counters take the duration and billing from the InvocationRecord (_record.pxd).

from vmod_lambda._request cimport lambda_span, lambda_header

cdef struct lambda_response:
    int status
    char *reason                # NUL-terminated, or NULL: Varnish's for the status
    # Headers in order, repeats kept. Each is stored as a NUL-terminated "Name: value" line, the
    # form http_SetHeader takes: name.p is the line, value.p points into it.
    lambda_header *headers
    unsigned nheaders
    size_t head_bytes           # the lines and their line ends: beresp_hdrbytes
    char *store                 # the one allocation behind the header array and lines
    char *body                  # PyMem_Raw*: can be large (vmod_lambda.vcc, "Large responses")
    size_t body_len
    char *note                  # a line for SLT_Error when Varnish answered itself (413), or NULL

cdef struct lambda_lines:
    lambda_span *line           # each NUL-terminated
    unsigned n
    char *store                 # the one allocation behind them

# With the GIL, from a fetch.FetchResult (status, reason, headers, body, note): 0; raises
# MemoryError. head_only: leave the body out (a streamed fetch sends it through its channel).
cdef int response_fill(lambda_response *r, object result, bint head_only) except -1
cdef void response_clear(lambda_response *r) noexcept nogil

# With the GIL, from a list of str: 0; raises MemoryError.
cdef int lines_fill(lambda_lines *l, list lines) except -1
cdef void lines_clear(lambda_lines *l) noexcept nogil
