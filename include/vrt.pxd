# Declarations from Varnish's vrt.h (the VMOD ABI), only the fields and functions vmod-lambda uses.
# The C compiler sees the real header; every Varnish header is reached through vmod_lambda_compat.h,
# which includes them in the one order that compiles (vrt.h must come before cache.h).

from libc.stdint cimport int64_t

cdef extern from "vmod_lambda_compat.h" nogil:
    ctypedef double vtim_real
    ctypedef double vtim_dur
    ctypedef double VCL_DURATION
    ctypedef int64_t VCL_INT
    ctypedef const char *VCL_STRING

    cdef unsigned VRT_CTX_MAGIC

    cdef struct vsb:
        pass
    cdef struct vsl_log:
        pass
    cdef struct ws:
        pass
    cdef struct vrt_backend_probe:
        const char *url
        const char *request
        vtim_dur timeout
        vtim_dur interval
        unsigned exp_status
        unsigned window
        unsigned threshold
        unsigned initial

    cdef struct busyobj
    cdef struct vrt_ctx:
        unsigned magic
        unsigned method
        vsb *msg
        vsl_log *vsl
        ws *ws
        busyobj *bo
        vtim_real now
        void *http_req          # struct http *: the client request (NULL outside client subs)
        void *http_bereq        # struct http *: the backend request (NULL outside backend subs)

    cdef enum vcl_event_e:
        VCL_EVENT_LOAD
        VCL_EVENT_WARM
        VCL_EVENT_COLD
        VCL_EVENT_DISCARD

    void VRT_fail(const vrt_ctx *ctx, const char *fmt, ...)

    cdef struct vmod_priv:
        void *priv
    vmod_priv *VRT_priv_task(const vrt_ctx *ctx, const void *vmod_id)
    vmod_priv *VRT_priv_task_get(const vrt_ctx *ctx, const void *vmod_id)

cdef extern from "vmod_lambda_compat.h" nogil:
    ctypedef double VCL_TIME
    ctypedef unsigned VCL_BOOL

    cdef struct director:
        unsigned magic
        void *priv
        char *vcl_name

    ctypedef const director *VCL_BACKEND

    ctypedef int vdi_gethdrs_f(const vrt_ctx *, VCL_BACKEND)
    ctypedef void vdi_finish_f(const vrt_ctx *, VCL_BACKEND)
    ctypedef VCL_BOOL vdi_healthy_f(const vrt_ctx *, VCL_BACKEND, VCL_TIME *)
    ctypedef void vdi_list_f(const vrt_ctx *, VCL_BACKEND, vsb *, int, int)
    ctypedef void vdi_event_f(VCL_BACKEND, vcl_event_e)

    cdef struct vdi_methods:
        pass

    VCL_BACKEND VRT_AddDirector(const vrt_ctx *ctx, const vdi_methods *m, void *priv,
                                const char *fmt, ...)
    void VRT_DelDirector(VCL_BACKEND *d)
    VCL_BOOL VRT_Healthy(const vrt_ctx *ctx, VCL_BACKEND d, VCL_TIME *changed)
    void VRT_SetChanged(VCL_BACKEND d, VCL_TIME changed)
    double VTIM_real()
