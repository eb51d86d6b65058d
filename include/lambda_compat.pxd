# The version-independent helpers of vmod_lambda_compat.h: the .pyx code calls these, never a Varnish
# function whose signature changed between 7.1 and 7.7.

from vrt cimport vrt_ctx
from cache cimport VSL_tag_e

cdef extern from "vmod_lambda_compat.h" nogil:
    void lambda_log(const vrt_ctx *ctx, VSL_tag_e tag, const char *msg)
    void lambda_fail(const vrt_ctx *ctx, const char *msg)

cdef extern from "vmod_lambda_build.h" nogil:
    const char *VMOD_LAMBDA_BUILD_ID
