/*
 * The fetch helpers of include/vmod_lambda_fetch.c: what the director (_director.pyx, through
 * vmod_lambda_fetch.pxd) calls instead of a Varnish function or struct field. Linked into the
 * vmod_lambda._director extension only, and hidden there: no other object sees these names.
 */
#ifndef VMOD_LAMBDA_FETCH_H
#define VMOD_LAMBDA_FETCH_H

#include "vmod_lambda_compat.h"

#define LAMBDA_FETCH_API __attribute__((visibility("hidden")))

LAMBDA_FETCH_API int lambda_bereq_body(struct busyobj *bo, objiterate_f *cb, void *priv);
LAMBDA_FETCH_API int lambda_beresp_body(struct busyobj *bo, ssize_t len, const struct vfp *vfp,
    void *priv);
LAMBDA_FETCH_API int lambda_beresp_stream(struct busyobj *bo, const struct vfp *vfp, void *priv);
LAMBDA_FETCH_API enum vfp_status lambda_vfp_error(struct vfp_ctx *vc, const char *msg);
LAMBDA_FETCH_API double lambda_bo_first_byte_timeout(const struct busyobj *bo);
LAMBDA_FETCH_API double lambda_bo_between_bytes_timeout(const struct busyobj *bo);
LAMBDA_FETCH_API void *lambda_htc_priv(const struct busyobj *bo);
LAMBDA_FETCH_API void lambda_htc_clear(struct busyobj *bo);
LAMBDA_FETCH_API void lambda_beresp_header(struct busyobj *bo, const char *line);
LAMBDA_FETCH_API void lambda_beresp_status(struct busyobj *bo, unsigned status, const char *reason);
LAMBDA_FETCH_API int lambda_beresp_fits(const struct busyobj *bo, unsigned nhdr, size_t head_bytes,
    char *err, size_t errlen);
LAMBDA_FETCH_API int lambda_beresp_overflowed(const struct busyobj *bo);
LAMBDA_FETCH_API const struct vdi_methods *lambda_vdi_methods(vdi_gethdrs_f *gethdrs,
    vdi_finish_f *finish, vdi_healthy_f *healthy, vdi_list_f *list, vdi_event_f *event);

#endif
