# The version-independent helpers of vmod_lambda_compat.h: the .pyx code calls these, never a Varnish
# function whose signature changed between 7.1 and 7.7.

from vrt cimport (vrt_ctx, vdi_methods, vdi_gethdrs_f, vdi_finish_f, vdi_healthy_f, vdi_list_f,
                 vdi_event_f)
from cache cimport VSL_tag_e, busyobj, objiterate_f
from cache_filter cimport vfp, vfp_ctx, vfp_status

cdef extern from "vmod_lambda_compat.h" nogil:
    void lambda_log(const vrt_ctx *ctx, VSL_tag_e tag, const char *msg)
    void lambda_fail(const vrt_ctx *ctx, const char *msg)

    int lambda_bereq_body(busyobj *bo, objiterate_f *cb, void *priv)
    int lambda_beresp_body(busyobj *bo, ssize_t length, const vfp *vfp, void *priv)
    int lambda_beresp_stream(busyobj *bo, const vfp *vfp, void *priv)
    vfp_status lambda_vfp_error(vfp_ctx *vc, const char *msg)
    double lambda_bo_first_byte_timeout(const busyobj *bo)
    double lambda_bo_between_bytes_timeout(const busyobj *bo)
    void *lambda_htc_priv(const busyobj *bo)
    void lambda_htc_clear(busyobj *bo)
    void lambda_beresp_header(busyobj *bo, const char *line)
    void lambda_beresp_status(busyobj *bo, unsigned status, const char *reason)
    const vdi_methods *lambda_vdi_methods(vdi_gethdrs_f *gethdrs, vdi_finish_f *finish,
                                          vdi_healthy_f *healthy, vdi_list_f *list,
                                          vdi_event_f *event)

cdef extern from "vmod_lambda_build.h" nogil:
    const char *VMOD_LAMBDA_BUILD_ID
