# Declarations from Varnish's cache/cache.h (workspaces and the shared memory log) that vmod-lambda uses.
# Reached through vmod_lambda_compat.h, see vrt.pxd.

from vrt cimport ws, vsl_log

cdef extern from "vmod_lambda_compat.h" nogil:
    cdef enum VSL_tag_e:
        SLT_Debug
        SLT_Error
        SLT_VCL_Error
        SLT_VCL_Log
        SLT_FetchError

    void *WS_Copy(ws *ws, const void *src, int length)
    void *WS_Alloc(ws *ws, unsigned nbytes)

    void VSLb(vsl_log *vsl, VSL_tag_e tag, const char *fmt, ...)
