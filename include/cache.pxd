# Declarations from Varnish's cache/cache.h that vmod-lambda uses: workspaces, the shared memory log,
# HTTP objects and the busyobj of a backend fetch. Reached through vmod_lambda_compat.h, see vrt.pxd.

from libc.stdint cimport uint16_t
from vrt cimport ws, vsl_log

cdef extern from "vmod_lambda_compat.h" nogil:
    cdef enum VSL_tag_e:
        SLT_Debug
        SLT_Error
        SLT_VCL_Error
        SLT_VCL_Log
        SLT_FetchError
        SLT_Backend_health
        SLT_Notice

    ctypedef struct txt:
        const char *b
        const char *e

    cdef struct http:
        txt *hd
        uint16_t nhd

    cdef enum:
        HTTP_HDR_METHOD
        HTTP_HDR_URL
        HTTP_HDR_PROTO
        HTTP_HDR_FIRST

    cdef struct busyobj:
        vsl_log *vsl
        http *bereq
        http *beresp

    ctypedef int objiterate_f(void *priv, unsigned flush, const void *ptr, ssize_t length)

    void *WS_Copy(ws *ws, const void *src, int length)
    void *WS_Alloc(ws *ws, unsigned nbytes)
    unsigned WS_ReserveAll(ws *ws)
    void WS_Release(ws *ws, unsigned nbytes)
    void *WS_Reservation(const ws *ws)

    void VSLb(vsl_log *vsl, VSL_tag_e tag, const char *fmt, ...)
