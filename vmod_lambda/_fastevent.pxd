# The payload-format 1.0 event of the common backend request, built in C on the fetch thread from the
# request record (see _fastevent.pyx); NULL when the request is not one of those and Python must
# map it (events.py).

from vmod_lambda._request cimport lambda_request

cdef char *fast_event_v1(const lambda_request *r, double now, bint compat,
                         size_t *out_len) noexcept nogil
