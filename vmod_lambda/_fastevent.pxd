# The payload-format 1.0 event of the common backend request, built in C on the fetch thread (see
# _fastevent.pyx); NULL when the request is not one of those and Python must map it (events.py).

cdef char *fast_event_v1(const char *head, size_t head_len, double now, bint compat,
                         size_t *out_len) noexcept nogil
