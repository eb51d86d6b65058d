# The throttle hold of lambda.backend() objects (_throttle.pyx; vmod_lambda.vcc, "Throttling").

from vmod_lambda._object cimport lambda_obj

cdef bint throttle_held(lambda_obj *o, double *left) noexcept nogil
cdef int throttle_reason(lambda_obj *o, double left, char *buf, size_t n) noexcept nogil
cdef void throttle_refused(lambda_obj *o) noexcept nogil
cdef int throttle_attach(lambda_obj *o) except -1
cdef void throttle_detach(lambda_obj *o) noexcept
