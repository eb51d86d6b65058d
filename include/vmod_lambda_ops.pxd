# The entry-point table the implementation hands to the thin VMOD (vmod_lambda_ops.h).

from vrt cimport vrt_ctx, vrt_backend_probe, director

cdef extern from "vmod_lambda_ops.h" nogil:
    cdef unsigned VMOD_LAMBDA_OPS_MAGIC
    cdef unsigned VMOD_LAMBDA_OPS_VERSION

    cdef struct vmod_lambda_backend_args:
        const char *function_name
        const char *region
        const char *endpoint_url
        double timeout
        int has_timeout
        int has_pool_size
        long long pool_size
        const vrt_backend_probe *probe
        const char *response_format
        const char *event_format
        int multi_value
        const char *transport
        int log_tail
        int streaming
        const char *qualifier
        const char *client_context
        const char *role_arn
        const char *role_session_name
        const char *external_id
        const char *sts_endpoint_url
        const char *profile
        int trace
        const char *tenant_header
        double throttle_hold
        int has_max_queue_wait
        double max_queue_wait

    cdef struct vmod_lambda_ops:
        unsigned magic
        unsigned version
        const char *build_id
        void *(*backend_init)(const vrt_ctx *, const char *, const vmod_lambda_backend_args *) noexcept
        void (*backend_fini)(void *) noexcept
        const char *(*backend_invoke)(const vrt_ctx *, void *, const char *, const char *,
                                      const char *, const char *) noexcept
        int (*backend_invoke_async)(const vrt_ctx *, void *, const char *, const char *,
                                    const char *) noexcept
        const char *(*backend_get_function_name)(const vrt_ctx *, void *) noexcept
        const char *(*backend_get_region)(const vrt_ctx *, void *) noexcept
        const director *(*backend_backend)(const vrt_ctx *, void *) noexcept
        const char *(*selftest)(const vrt_ctx *) noexcept
        const char *(*status)(const vrt_ctx *) noexcept
        const char *(*error)(const vrt_ctx *) noexcept
        double (*retry_after)(const vrt_ctx *) noexcept
