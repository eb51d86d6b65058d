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

cdef lambda_vsc *stats_acquire(str name) except NULL
cdef void stats_release(str name) noexcept
cdef void stats_busy(lambda_vsc *v) noexcept nogil
cdef void stats_account(lambda_vsc *v, int kind, object err, object rec) noexcept
cdef void stats_internal(lambda_vsc *v, const char *obj, str where, object exc) noexcept
cdef void stats_vsl(const char *obj, const char *function, int kind, object err, object rec,
                    lambda_lines *out) noexcept
