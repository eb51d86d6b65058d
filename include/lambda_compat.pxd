# The helpers of vmod_lambda_compat.h that hide a difference between Varnish versions: the .pyx code
# logs through these, never through VSL() whose vxid argument changed type in 7.3. (The fetch
# helpers are in vmod_lambda_fetch.pxd.)

from vrt cimport vrt_ctx
from cache cimport VSL_tag_e

cdef extern from "vmod_lambda_compat.h" nogil:
    void lambda_log(const vrt_ctx *ctx, VSL_tag_e tag, const char *msg)
    void lambda_fail(const vrt_ctx *ctx, const char *msg)

cdef extern from "vmod_lambda_build.h" nogil:
    const char *VMOD_LAMBDA_BUILD_ID
