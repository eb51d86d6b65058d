# The counters (VSC) of lambda.backend() objects, lambda.<object>.<counter>: see vmod_lambda.vcc,
# STATISTICS. One segment per object name, shared by the objects of that name in every loaded VCL.

from libc.stdint cimport uint64_t

# Declared in include/ (vmod_lambda_atomic.pxd, vmod_lambda_stats.pxd); cimported from here too.
from vmod_lambda_atomic cimport lambda_stat_add, lambda_stat_sub, lambda_stat_happy
from vmod_lambda_stats cimport lambda_vsc

from vmod_lambda._response cimport lambda_lines

cdef enum:
    KIND_FETCH = 0
    KIND_INVOKE = 1
    KIND_ASYNC = 2
    KIND_PROBE = 3

# One call's outcome, decided once by its caller (the fetch thread or the VCL thread, without the
# GIL), which counts it with stats_commit() and logs its record (outcome_line()) after it applied the
# result. The worker that ran the call prepares it from the invocation record (stats_prepare(),
# with the GIL); the caller may then change it (outcome_set(): a head that does not fit, a
# workspace overflow) or make it whole (a timeout, no slot, refused before sending).
cdef enum:
    # The counter a failure moves besides fail (outcomes.counter()).
    OC_NONE = 0
    OC_FUNCTION_ERROR = 1
    OC_TIMEOUT = 2
    OC_THROTTLED = 3
    OC_ERR_4XX = 4
    OC_ERR_5XX = 5
    OC_CONN_FAIL = 6
    OC_INVALID = 7
    OC_TOO_LARGE = 8
    OC_INTERNAL = 9
    OC_BUSY = 10
    OC_STS_FAIL = 11
    OC_WORD = 24

cdef struct lambda_outcome:
    int prepared                # filled by stats_prepare (else only what the caller set)
    int sent                    # an invocation went out
    int failed
    int counter                 # OC_*
    char word[OC_WORD]          # the outcome word of the record: ok, timeout, ...
    uint64_t payload_out
    uint64_t payload_in
    uint64_t time_ms
    uint64_t billed_ms
    int cold
    double retry_after          # seconds of a throttled answer's Retry-After (0: none)
    # The record's fields after the outcome word ("function=... version=...") as lines.line[0],
    # then the function's log tail, one line each; empty when nothing was prepared.
    lambda_lines lines

cdef void stats_prepare(lambda_outcome *out, object err, object rec, const char *obj,
                        const char *function) noexcept
cdef void outcome_set(lambda_outcome *out, int failed, int counter, const char *word) noexcept nogil
cdef void outcome_clear(lambda_outcome *out) noexcept nogil
cdef void stats_commit(lambda_vsc *v, int kind, const lambda_outcome *out) noexcept nogil
cdef int outcome_line(char *buf, size_t n, const char *obj, const char *function, int kind,
                      const lambda_outcome *out) noexcept nogil

# The task's last outcome (lambda.error(), lambda.retry_after()): noted by the caller with its
# outcome, read by the VCL functions.
from vrt cimport vrt_ctx
cdef void task_note(const vrt_ctx *ctx, const lambda_outcome *out) noexcept nogil
cdef void task_note_cause(const vrt_ctx *ctx, const char *cause) noexcept nogil
cdef const char *task_error(const vrt_ctx *ctx) noexcept nogil
cdef double task_retry_after(const vrt_ctx *ctx) noexcept nogil

cdef lambda_vsc *stats_acquire(str name) except NULL
cdef void stats_release(str name) noexcept
cdef void stats_busy(lambda_vsc *v) noexcept nogil
cdef void stats_account(lambda_vsc *v, int kind, object err, object rec) noexcept
cdef void stats_internal(lambda_vsc *v, const char *obj, str where, object exc) noexcept
cdef void stats_vsl(const char *obj, const char *function, int kind, object err, object rec,
                    lambda_lines *out) noexcept
