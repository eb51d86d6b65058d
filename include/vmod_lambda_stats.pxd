# The counters of lambda.backend() objects (vmod_lambda_stats.h): the struct VSC_lambda that vsctool
# generates from VSC_lambda.vsc (only the fields the code uses need be here; the C compiler sees
# the real header) and its segment's constructor and destructor.

from libc.stdint cimport uint64_t

cdef extern from "vmod_lambda_stats.h" nogil:
    ctypedef struct lambda_vsc:
        uint64_t happy
        uint64_t req
        uint64_t fetch
        uint64_t invoke
        uint64_t invoke_async
        uint64_t probe
        uint64_t fail
        uint64_t function_error
        uint64_t timeout
        uint64_t throttled
        uint64_t err_4xx
        uint64_t err_5xx
        uint64_t conn_fail
        uint64_t invalid
        uint64_t too_large
        uint64_t busy
        uint64_t sts_fail
        uint64_t internal
        uint64_t inflight
        uint64_t queued
        uint64_t queue_wait_us
        uint64_t invoke_time_ms
        uint64_t billed_ms
        uint64_t cold_start
        uint64_t bereq_hdrbytes
        uint64_t bereq_bodybytes
        uint64_t beresp_hdrbytes
        uint64_t beresp_bodybytes
        uint64_t payload_out
        uint64_t payload_in
        uint64_t fast_response
        uint64_t late
        uint64_t held

    ctypedef struct lambda_vsc_seg:
        pass
    lambda_vsc *VSC_lambda_New(void *vc, lambda_vsc_seg **sg, const char *fmt, ...)
    void VSC_lambda_Destroy(lambda_vsc_seg **sg)
