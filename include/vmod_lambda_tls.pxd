# The per-thread variables of vmod_lambda_tls.h.

cdef extern from "vmod_lambda_tls.h" nogil:
    unsigned long long lambda_rid_state[2]
    int lambda_blocking_depth
