/*
 * Everything Varnish that the C and Cython parts include, in the one order that works, and every
 * difference between the Varnish versions this VMOD supports (7.1 = VRT 15 ... 7.7 = VRT 21; Vinyl Cache
 * 9.0 = VRT 23 builds too).
 * The .pyx code stays version-free: it calls the lambda_* helpers below.
 */
#ifndef VMOD_LAMBDA_COMPAT_H
#define VMOD_LAMBDA_COMPAT_H

#include <stdarg.h>
#include <stdio.h>

/* Python.h may have defined assert() already; vas.h defines its own. */
#undef assert
/*
 * cache_varnishd.h pulls vdef.h, vrt.h and cache.h in the order they need (vrt.h errors after cache.h).
 * Vinyl Cache (Varnish renamed, 9.0 = VRT 23) calls it cache_vinyld.h.
 */
#if defined(__has_include) && __has_include("cache/cache_vinyld.h")
#  include "cache/cache_vinyld.h"
#else
#  include "cache/cache_varnishd.h"
#endif
#include "cache/cache_director.h"
#include "cache/cache_filter.h"
#include "vtim.h"

/* vas.h turns assert() into a statement; CPython's and Cython's macros use it as an expression. */
#undef assert
#include <assert.h>

#include "vmod_lambda_ops.h"

/* VSL() without a transaction: its vxid argument became a vxid_t in VRT 16 (7.3). */
#if VRT_MAJOR_VERSION >= 16U
#  define LAMBDA_NO_VXID NO_VXID
#else
#  define LAMBDA_NO_VXID 0
#endif

/*
 * Log a line for this task: in its transaction when there is one, without one otherwise (vcl_init on
 * the CLI thread has no vsl). The message goes through "%s" so that no text of a function, a client or
 * the network is ever taken as a format.
 */
static inline void
lambda_log(const struct vrt_ctx *ctx, enum VSL_tag_e tag, const char *msg)
{
	if (ctx != NULL && ctx->vsl != NULL)
		VSLb(ctx->vsl, tag, "%s", msg);
	else
		VSL(tag, LAMBDA_NO_VXID, "%s", msg);
}

static inline void
lambda_fail(const struct vrt_ctx *ctx, const char *msg)
{
	VRT_fail(ctx, "%s", msg);
}

/* ---------------------------------------------------------------------------------------------
 * Backend fetches (the director's gethdrs/finish and the VFP), after the recipe in DESIGN.md.
 */

/* The request body of a fetch: cached (std.cache_req_body) or straight from the client request. */
static inline int
lambda_bereq_body(struct busyobj *bo, objiterate_f *cb, void *priv)
{
	if (bo->bereq_body != NULL)
		return (ObjIterate(bo->wrk, bo->bereq_body, priv, cb, 0));
	if (bo->req != NULL && bo->req->req_body_status != BS_NONE)
		return (VRB_Iterate(bo->wrk, bo->vsl, bo->req, cb, priv) < 0 ? -1 : 0);
	return (0);
}

/* Give the fetch a body of len bytes read by vfp (priv in its priv1), or none when len is 0. */
static inline int
lambda_beresp_body(struct busyobj *bo, ssize_t len, const struct vfp *vfp, void *priv)
{
	struct http_conn *htc;
	struct vfp_entry *vfe;

	htc = WS_Alloc(bo->ws, sizeof *htc);
	if (htc == NULL)
		return (-1);
	INIT_OBJ(htc, HTTP_CONN_MAGIC);
	htc->doclose = SC_REM_CLOSE;	/* must be a valid stream_close; nothing is closed */
	htc->priv = priv;
	if (len > 0) {
		htc->body_status = BS_LENGTH;
		htc->content_length = len;
		vfe = VFP_Push(bo->vfc, vfp);
		if (vfe == NULL)
			return (-1);
		vfe->priv1 = priv;
	} else {
		htc->body_status = BS_NONE;
		htc->content_length = 0;
	}
	bo->htc = htc;
	return (0);
}

/*
 * Give the fetch a body of unknown length that vfp (priv in its priv1) produces as it arrives:
 * BS_CHUNKED with content_length -1, as a chunked backend response (Varnish streams it to clients).
 */
static inline int
lambda_beresp_stream(struct busyobj *bo, const struct vfp *vfp, void *priv)
{
	struct http_conn *htc;
	struct vfp_entry *vfe;

	htc = WS_Alloc(bo->ws, sizeof *htc);
	if (htc == NULL)
		return (-1);
	INIT_OBJ(htc, HTTP_CONN_MAGIC);
	htc->doclose = SC_REM_CLOSE;
	htc->priv = priv;
	htc->body_status = BS_CHUNKED;
	htc->content_length = -1;
	vfe = VFP_Push(bo->vfc, vfp);
	if (vfe == NULL)
		return (-1);
	vfe->priv1 = priv;
	bo->htc = htc;
	return (0);
}

/* Fail the fetch from a VFP: logs FetchError with msg (never taken as a format). */
static inline enum vfp_status
lambda_vfp_error(struct vfp_ctx *vc, const char *msg)
{
	return (VFP_Error(vc, "%s", msg));
}

/* bereq.first_byte_timeout and bereq.between_bytes_timeout as the fetch has them: NAN (or 0 on
 * older Varnish) when neither VCL nor Varnish gave them a value. */
static inline double
lambda_bo_first_byte_timeout(const struct busyobj *bo)
{
	return (bo->first_byte_timeout);
}

static inline double
lambda_bo_between_bytes_timeout(const struct busyobj *bo)
{
	return (bo->between_bytes_timeout);
}

static inline void *
lambda_htc_priv(const struct busyobj *bo)
{
	return (bo->htc != NULL ? bo->htc->priv : NULL);
}

static inline void
lambda_htc_clear(struct busyobj *bo)
{
	bo->htc = NULL;
}

/* Add one "Name: value" header line to beresp (copied to the workspace). */
static inline void
lambda_beresp_header(struct busyobj *bo, const char *line)
{
	http_PrintfHeader(bo->beresp, "%s", line);
}

static inline void
lambda_beresp_status(struct busyobj *bo, unsigned status, const char *reason)
{
	if (reason == NULL)
		reason = http_Status2Reason(status, NULL);
	http_PutResponse(bo->beresp, "HTTP/1.1", (uint16_t)status, reason);
}

/* The director callbacks, in the struct layout of this Varnish (fields were added in 7.3). */
static inline const struct vdi_methods *
lambda_vdi_methods(vdi_gethdrs_f *gethdrs, vdi_finish_f *finish, vdi_healthy_f *healthy,
    vdi_list_f *list, vdi_event_f *event)
{
	static struct vdi_methods m;

	m.magic = VDI_METHODS_MAGIC;
	m.type = "lambda";
	m.gethdrs = gethdrs;
	m.finish = finish;
	m.healthy = healthy;
	m.list = list;
	m.event = event;
	return (&m);
}

#endif
