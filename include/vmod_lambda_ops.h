/*
 * The table of entry points that the Cython implementation (vmod_lambda._vmod) hands to the thin VMOD
 * (libvmod_lambda.so) through the python loader. Shared by the three parts; see vmod_lambda.vcc, PITFALLS.
 *
 * Only plain C types cross this boundary, so the implementation does not depend on the generated
 * vcc_if.h. Bump VMOD_LAMBDA_OPS_VERSION on any change; the build id ties the parts of one build
 * together (a child that runs another build's implementation refuses new VCLs: restart varnishd).
 */
#ifndef VMOD_LAMBDA_OPS_H
#define VMOD_LAMBDA_OPS_H

#define VMOD_LAMBDA_OPS_MAGIC	0x4c6d4264u
#define VMOD_LAMBDA_OPS_VERSION	7u

struct vrt_ctx;
struct vrt_backend_probe;
struct director;

/* Constructor arguments, as VCL gave them (NULL / has_* = 0 when absent). */
struct vmod_lambda_backend_args {
	const char			*function_name;
	const char			*region;
	const char			*endpoint_url;
	double				timeout;
	int				has_timeout;
	int				has_pool_size;
	long long			pool_size;
	const struct vrt_backend_probe	*probe;
	const char			*response_format;
	const char			*event_format;
	int				multi_value;
	const char			*transport;
	int				log_tail;
	int				streaming;
	const char			*qualifier;
	const char			*client_context;
	/* Credentials per object */
	const char			*role_arn;
	const char			*role_session_name;
	const char			*external_id;
	const char			*sts_endpoint_url;
	const char			*profile;
	int				trace;
	const char			*tenant_header;
	double				throttle_hold;
	int				has_max_queue_wait;
	double				max_queue_wait;
};

struct vmod_lambda_ops {
	unsigned	magic;
	unsigned	version;
	const char	*build_id;

	/* lambda.backend(): returns the object, or NULL after VRT_fail. */
	void		*(*backend_init)(const struct vrt_ctx *, const char *vcl_name,
			    const struct vmod_lambda_backend_args *);
	void		(*backend_fini)(void *obj);
	const char	*(*backend_invoke)(const struct vrt_ctx *, void *obj, const char *payload,
			    const char *fallback, const char *qualifier, const char *tenant_id);
	int		(*backend_invoke_async)(const struct vrt_ctx *, void *obj, const char *payload,
			    const char *qualifier, const char *tenant_id);
	const char	*(*backend_get_function_name)(const struct vrt_ctx *, void *obj);
	const char	*(*backend_get_region)(const struct vrt_ctx *, void *obj);
	const struct director *(*backend_backend)(const struct vrt_ctx *, void *obj);

	/* lambda.selftest(), lambda.status() */
	const char	*(*selftest)(const struct vrt_ctx *);
	const char	*(*status)(const struct vrt_ctx *);

	/* lambda.error(), lambda.retry_after(): the task's last call */
	const char	*(*error)(const struct vrt_ctx *);
	double		(*retry_after)(const struct vrt_ctx *);
};

/* Exported by the python loader. Returns NULL and writes a message to err on failure. */
typedef const struct vmod_lambda_ops *vmod_lambda_boot_f(const char *home, char *err, size_t errlen);
#define VMOD_LAMBDA_BOOT_SYMBOL	"vmod_lambda_boot"

#endif
