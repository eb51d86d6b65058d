# The director of obj.backend(): a Lambda function as a Varnish backend.

from vrt cimport vrt_ctx
from vmod_lambda._object cimport lambda_obj

cdef int director_attach(const vrt_ctx *ctx, lambda_obj *o) except -1
cdef void director_detach(lambda_obj *o) noexcept
