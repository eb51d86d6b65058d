/*
 * Everything Varnish that the C and Cython parts include, in the one order that works, and every
 * difference between the Varnish versions this VMOD supports (7.1 = VRT 15 ... 7.7 = VRT 21; Vinyl Cache
 * 9.0 = VRT 23 builds too). Nothing else: the fetch helpers are in vmod_lambda_fetch.c.
 * The .pyx code stays version-free: it logs through lambda_log() below.
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

/* VRT_fail() with a message that is never taken as a format (lambda_log's companion). */
static inline void
lambda_fail(const struct vrt_ctx *ctx, const char *msg)
{
	VRT_fail(ctx, "%s", msg);
}

#endif
