# Declarations from Varnish's cache/cache_filter.h: the fetch processor (VFP) that feeds a Lambda
# response body to Varnish. Reached through vmod_lambda_compat.h, see vrt.pxd.

cdef extern from "vmod_lambda_compat.h" nogil:
    cdef enum vfp_status:
        VFP_ERROR
        VFP_OK
        VFP_END

    cdef struct vfp_ctx:
        pass

    cdef struct vfp_entry:
        void *priv1

    ctypedef vfp_status vfp_pull_f(vfp_ctx *, vfp_entry *, void *ptr, ssize_t *length)

    cdef struct vfp:
        const char *name
        vfp_pull_f *pull
