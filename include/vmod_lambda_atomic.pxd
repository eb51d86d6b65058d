# The atomic counter updates of vmod_lambda_atomic.h (usable with or without the GIL).

from libc.stdint cimport uint64_t
from posix.time cimport timespec

cdef extern from "vmod_lambda_atomic.h" nogil:
    void lambda_stat_add(uint64_t *p, uint64_t n)
    void lambda_stat_sub(uint64_t *p, uint64_t n)
    void lambda_stat_happy(uint64_t *p, int good)
    int lambda_state_cas(int *p, int expect, int desired)
    int lambda_state_load(const int *p)
    double lambda_time_load(const double *p)
    void lambda_time_store(double *p, double v)
    int lambda_time_raise(double *p, double v)
    void lambda_done_post(int *p)
    int lambda_done_wait(int *p, const timespec *abs)
