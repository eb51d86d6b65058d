# The common Lambda answer (a JSON response object) mapped in C, without the interpreter lock
# (include/vmod_lambda_resp.c; see _fastresponse.pyx). The worker checks the payload and keeps a
# copy; the fetch thread maps it into the response record and its VFP decodes the body straight
# into Varnish's storage. Every other answer takes Python's path (events.py, response_fill).

from vmod_lambda_resp cimport lambda_resp_body
from vmod_lambda._response cimport lambda_response

# Whether C maps payload p[0..n) (1) or Python must (0); -1: out of memory. body (or NULL): the
# body as measured, for fast_response_fill() (its p points into p[]: rebase it on a copy).
cdef int fast_response_check(const char *p, size_t n, lambda_resp_body *body) noexcept nogil
# Map p[0..n) into out (zeroed: status, headers, body_len; body stays NULL) and body (the
# decoder of the body, which reads p: keep it until the body is read): 1, 0 (Python must map
# it), or -1 (out of memory). body: zeroed, or what fast_response_check() measured on the same
# bytes (then the body is not scanned again).
cdef int fast_response_fill(lambda_response *out, const char *p, size_t n,
                            lambda_resp_body *body) noexcept nogil
# The next body bytes into out (at most room): how many; 0 only at the end.
cdef size_t fast_response_read(lambda_resp_body *body, char *out, size_t room) noexcept nogil
