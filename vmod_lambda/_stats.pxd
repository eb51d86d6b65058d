# The counters (VSC) of lambda.backend() objects, lambda.<object>.<counter>: see vmod_lambda.vcc,
# STATISTICS. One segment per object name, shared by the objects of that name in every loaded VCL.

from libc.stdint cimport uint64_t

cdef extern from "vmod_lambda_atomic.h" nogil:
    void lambda_stat_add(uint64_t *p, uint64_t n)
    void lambda_stat_sub(uint64_t *p, uint64_t n)
    void lambda_stat_happy(uint64_t *p, int good)

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

cdef enum:
    KIND_FETCH = 0
    KIND_INVOKE = 1
    KIND_ASYNC = 2
    KIND_PROBE = 3

cdef lambda_vsc *stats_acquire(str name) except NULL
cdef void stats_release(str name) noexcept
cdef void stats_busy(lambda_vsc *v) noexcept nogil
cdef void stats_account(lambda_vsc *v, int kind, object err, object rec) noexcept
cdef char *stats_vsl(const char *obj, const char *function, int kind, object err, object rec,
                     size_t *length) noexcept
