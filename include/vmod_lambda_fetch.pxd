# The fetch helpers of vmod_lambda_fetch.c (declared in vmod_lambda_fetch.h): what the director calls
# instead of a Varnish function whose signature changed between 7.1 and 7.7, or a struct field it
# does not declare.

from vrt cimport (vdi_methods, vdi_gethdrs_f, vdi_finish_f, vdi_healthy_f, vdi_list_f,
                 vdi_event_f)
from cache cimport busyobj, objiterate_f
from cache_filter cimport vfp, vfp_ctx, vfp_status

cdef extern from "vmod_lambda_fetch.h" nogil:
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
    int lambda_beresp_fits(const busyobj *bo, unsigned nhdr, size_t head_bytes, char *err,
                           size_t errlen)
    int lambda_beresp_overflowed(const busyobj *bo)
    const vdi_methods *lambda_vdi_methods(vdi_gethdrs_f *gethdrs, vdi_finish_f *finish,
                                          vdi_healthy_f *healthy, vdi_list_f *list,
                                          vdi_event_f *event)
