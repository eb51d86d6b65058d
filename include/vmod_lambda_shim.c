/*
 * libvmod_lambda.so: the thin C part of the VMOD.
 *
 * It does not link libpython. On the first VCL_EVENT_LOAD in the varnishd child it opens the python
 * loader with RTLD_DEEPBIND (so that libpython binds zlib to the real libz and malloc to varnishd's
 * allocator, see vmod_lambda.vcc PITFALLS), checks those bindings, and asks the loader to start Python
 * and import the Cython implementation, which returns a table of entry points. Every vmod_* function
 * here forwards to that table.
 *
 * varnishd may dlclose this file when no VCL uses it any more and dlopen it again later: all state
 * lives in the loader and the implementation (linked -z nodelete); the table is fetched again on each
 * load.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmod_lambda_compat.h"
#include "vcc_if.h"
#include "vmod_lambda_build.h"

#if defined(__x86_64__)
#  define RELOC_JUMP_SLOT	R_X86_64_JUMP_SLOT
#  define RELOC_GLOB_DAT	R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#  define RELOC_JUMP_SLOT	R_AARCH64_JUMP_SLOT
#  define RELOC_GLOB_DAT	R_AARCH64_GLOB_DAT
#else
#  error "vmod-lambda's binding self-check knows x86_64 and aarch64 relocations only"
#endif

static const struct vmod_lambda_ops *ops;
static const char * const loaders[] = { "jemalloc", "libc" };

/* Where the python home is: VMOD_LAMBDA_HOME for the child, else the one `make install` filled. */
static const char *
lambda_home(void)
{
	const char *h = getenv("VMOD_LAMBDA_HOME");

	return (h != NULL && *h != '\0' ? h : VMOD_LAMBDA_DEFAULT_HOME);
}

static const char *
object_of(const void *addr)
{
	Dl_info info;

	if (addr == NULL)
		return ("(unresolved)");
	if (dladdr(addr, &info) == 0 || info.dli_fname == NULL)
		return ("(unknown object)");
	return (info.dli_fname);
}

/*
 * What did libpython's relocation for `name` actually resolve to? Read its GOT: the symbol's
 * JUMP_SLOT or GLOB_DAT relocation holds the address the dynamic linker bound (the loader is opened
 * RTLD_NOW, so all are bound). This is the real binding; dlsym() on a handle only shows what a fresh
 * lookup in that handle's scope would find, which differs when RTLD_DEEPBIND was not in effect.
 */
static void *
bound_address(void *lib, const char *name)
{
	struct link_map *lm = NULL;
	const ElfW(Sym) *symtab = NULL;
	const char *strtab = NULL;
	const ElfW(Rela) *rel[2] = { NULL, NULL };
	size_t relsz[2] = { 0, 0 }, i;
	const ElfW(Dyn) *d;
	int t;

	if (dlinfo(lib, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL || lm->l_ld == NULL)
		return (NULL);
#define DYNPTR(v) ((v) < (ElfW(Addr))lm->l_addr ? (v) + lm->l_addr : (v))
	for (d = lm->l_ld; d->d_tag != DT_NULL; d++) {
		switch (d->d_tag) {
		case DT_SYMTAB: symtab = (const void *)DYNPTR(d->d_un.d_ptr); break;
		case DT_STRTAB: strtab = (const void *)DYNPTR(d->d_un.d_ptr); break;
		case DT_JMPREL: rel[0] = (const void *)DYNPTR(d->d_un.d_ptr); break;
		case DT_PLTRELSZ: relsz[0] = d->d_un.d_val; break;
		case DT_RELA: rel[1] = (const void *)DYNPTR(d->d_un.d_ptr); break;
		case DT_RELASZ: relsz[1] = d->d_un.d_val; break;
		default: break;
		}
	}
#undef DYNPTR
	if (symtab == NULL || strtab == NULL)
		return (NULL);
	for (t = 0; t < 2; t++) {
		if (rel[t] == NULL)
			continue;
		for (i = 0; i < relsz[t] / sizeof(ElfW(Rela)); i++) {
			const ElfW(Rela) *r = &rel[t][i];
			unsigned type = ELF64_R_TYPE(r->r_info);

			if (type != RELOC_JUMP_SLOT && type != RELOC_GLOB_DAT)
				continue;
			if (strcmp(strtab + symtab[ELF64_R_SYM(r->r_info)].st_name, name))
				continue;
			return (*(void **)(lm->l_addr + r->r_offset));
		}
	}
	return (NULL);
}

/*
 * The self-check: what libpython calls must be what varnishd uses for memory, and must not be
 * varnishd's zlib. A failure here leaves Python unstarted: the load fails instead of the heap breaking.
 */
static int
check_bindings(char *err, size_t errlen)
{
	void *py, *m_python, *m_varnishd, *z_python;
	Dl_info zi, vi;
	int r = 0;

	py = dlopen(VMOD_LAMBDA_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD);
	if (py == NULL) {
		snprintf(err, errlen, "the python loader did not load %s", VMOD_LAMBDA_LIBPYTHON);
		return (-1);
	}
	m_python = bound_address(py, "malloc");
	m_varnishd = dlsym(RTLD_DEFAULT, "malloc");
	z_python = bound_address(py, "inflateInit2_");
	if (m_python == NULL || z_python == NULL) {
		snprintf(err, errlen, "cannot read the symbol bindings of %s: refusing to start Python",
		    VMOD_LAMBDA_LIBPYTHON);
		r = -1;
	} else if (m_python != m_varnishd) {
		snprintf(err, errlen, "the python loader binds malloc to %s but varnishd allocates "
		    "with %s: refusing to start Python (mixing heaps corrupts memory)",
		    object_of(m_python), object_of(m_varnishd));
		r = -1;
	} else if (dladdr(z_python, &zi) != 0 && dladdr((void *)VRT_fail, &vi) != 0 &&
	    zi.dli_fbase == vi.dli_fbase) {
		/* VRT_fail lives in varnishd: a zlib function in the same object is its own copy. */
		snprintf(err, errlen, "the python loader binds zlib to varnishd's own copy, not to "
		    "libz: refusing to start Python (zlib would fail and adler32 abort the child)");
		r = -1;
	}
	dlclose(py);
	return (r);
}

static int
lambda_boot(VRT_CTX)
{
	char path[4096], err[1024];
	const char *home, *which;
	const struct vmod_lambda_ops *o;
	vmod_lambda_boot_f *boot;
	void *je, *py, *loader;
	int deep;

	home = lambda_home();
	/* A loader for the allocator varnishd actually uses (Debian's varnishd links jemalloc). */
	which = getenv("VMOD_LAMBDA_LOADER");
	if (which == NULL || *which == '\0') {
		je = dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_NOLOAD);
		which = je != NULL ? "jemalloc" : "libc";
		if (je != NULL)
			dlclose(je);
	}
	if (strcmp(which, "jemalloc") && strcmp(which, "libc")) {
		VRT_fail(ctx, "lambda: VMOD_LAMBDA_LOADER must be \"jemalloc\" or \"libc\", not \"%s\"",
		    which);
		return (1);
	}
	if (snprintf(path, sizeof path, "%s/lib/vmod_lambda/libvmod_lambda_loader_%s.so", home,
	    which) >= (int)sizeof path) {
		VRT_fail(ctx, "lambda: VMOD_LAMBDA_HOME is too long");
		return (1);
	}

	/* An earlier start in this child failed its self-check: libpython's bindings stay wrong. */
	for (unsigned u = 0; u < sizeof loaders / sizeof *loaders; u++) {
		char p2[4096];
		void *l;
		int *refused;

		snprintf(p2, sizeof p2, "%s/lib/vmod_lambda/libvmod_lambda_loader_%s.so", home,
		    loaders[u]);
		l = dlopen(p2, RTLD_NOW | RTLD_NOLOAD);
		if (l == NULL)
			continue;
		refused = dlsym(l, "vmod_lambda_refused");
		dlclose(l);
		if (refused != NULL && *refused) {
			VRT_fail(ctx, "lambda: an earlier start of Python in this varnishd child failed "
			    "its self-check (loader %s): restart varnishd", p2);
			return (1);
		}
	}

	/*
	 * libpython already in the process without our loader having booted it (another module embeds
	 * Python, or an earlier attempt failed its self-check): its bindings are not ours to trust.
	 */
	loader = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	py = dlopen(VMOD_LAMBDA_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD);
	if (py != NULL && loader == NULL) {
		dlclose(py);
		VRT_fail(ctx, "lambda: %s is already loaded in this varnishd child, but not by "
		    "vmod-lambda's python loader %s (another VMOD embeds Python, a different "
		    "home or loader was used, or an earlier start failed): restart varnishd",
		    VMOD_LAMBDA_LIBPYTHON, path);
		return (1);
	}
	if (py != NULL)
		dlclose(py);
	if (loader != NULL)
		dlclose(loader);

	deep = getenv("VMOD_LAMBDA_NO_DEEPBIND") == NULL ? RTLD_DEEPBIND : 0;
	loader = dlopen(path, RTLD_NOW | RTLD_GLOBAL | deep);
	if (loader == NULL) {
		VRT_fail(ctx, "lambda: cannot load the python loader: %s (is vmod-lambda installed in "
		    "%s? set VMOD_LAMBDA_HOME for another place)", dlerror(), home);
		return (1);
	}
	if (check_bindings(err, sizeof err)) {
		int *refused = dlsym(loader, "vmod_lambda_refused");

		if (refused != NULL)
			*refused = 1;
		VRT_fail(ctx, "lambda: %s", err);
		return (1);
	}
	boot = (vmod_lambda_boot_f *)dlsym(loader, VMOD_LAMBDA_BOOT_SYMBOL);
	if (boot == NULL) {
		VRT_fail(ctx, "lambda: %s has no %s", path, VMOD_LAMBDA_BOOT_SYMBOL);
		return (1);
	}
	err[0] = '\0';
	o = boot(home, err, sizeof err);
	if (o == NULL) {
		VRT_fail(ctx, "lambda: cannot start Python: %s", err);
		return (1);
	}
	if (o->magic != VMOD_LAMBDA_OPS_MAGIC || o->version != VMOD_LAMBDA_OPS_VERSION ||
	    strcmp(o->build_id, VMOD_LAMBDA_BUILD_ID)) {
		VRT_fail(ctx, "lambda: this varnishd child runs vmod-lambda build %s, but this VMOD "
		    "is build %s: restart varnishd to use a new build", o->build_id,
		    VMOD_LAMBDA_BUILD_ID);
		return (1);
	}
	ops = o;
	return (0);
}

/*
 * The "lambda_guard" delivery processor (set resp.filters = "lambda_guard " + resp.filters).
 *
 * Varnish's window (varnish-cache #3560, 7.1 to 7.7 at least): a client leaves VBF_Fetch() once the
 * fetch streams and takes the busy object (boc) again only in cnt_transmit(). When the fetch fails
 * and ends in between, cnt_transmit() finds a failed object without a boc and delivers what was
 * stored as a complete object: the final chunk is written, and a short body looks whole. Pushed
 * in cnt_transmit(), after that boc lookup, this filter sees the case (OC_F_FAILED and no boc; the
 * boc never comes back) and makes the delivery fail: with its last stored byte (the object no
 * longer changes: a first pass counts its bytes), or before anything when nothing was stored. V1D_Deliver()
 * then leaves out the final chunk and closes the connection: the client sees the body cut, as
 * when the failure comes during the delivery. Everything else passes through untouched.
 */
struct lambda_guard {
	unsigned		magic;
#define LAMBDA_GUARD_MAGIC	0x6c677264
	ssize_t			left;		/* bytes before the cut */
};

static int v_matchproto_(objiterate_f)
guard_count(void *priv, unsigned flush, const void *ptr, ssize_t len)
{
	(void)flush;
	(void)ptr;
	*(ssize_t *)priv += len;
	return (0);
}

static int
guard_setup(VRT_CTX, struct vdp_ctx *vdc, void **priv, struct objcore *oc)
{
	struct lambda_guard *g;
	ssize_t len;

	CHECK_OBJ_NOTNULL(vdc, VDP_CTX_MAGIC);
	AN(priv);
	if (oc == NULL && ctx != NULL && ctx->req != NULL)
		oc = ctx->req->objcore;
	if (oc == NULL || !(oc->flags & OC_F_FAILED) || oc->boc != NULL)
		return (1);		/* not the window: not pushed */
	/* (ObjGetLen() would assert: a failed object has no OA_LEN.) */
	len = 0;
	if (ObjIterate(vdc->wrk, oc, &len, guard_count, 0) != 0)
		return (-1);
	VSLb(vdc->vsl, SLT_Error, "lambda_guard: the object's fetch failed before its delivery "
	    "began: the delivery is cut after the %zd bytes stored", len);
	if (len <= 0)
		return (-1);		/* nothing to deliver before the cut */
	if (ctx == NULL || ctx->ws == NULL)
		return (-1);
	g = WS_Alloc(ctx->ws, sizeof *g);
	if (g == NULL)
		return (-1);
	INIT_OBJ(g, LAMBDA_GUARD_MAGIC);
	g->left = len;
	*priv = g;
	return (0);
}

#if VRT_MAJOR_VERSION >= 20U
static int v_matchproto_(vdp_init_f)
guard_init(VRT_CTX, struct vdp_ctx *vdc, void **priv)
{
	return (guard_setup(ctx, vdc, priv, vdc->oc));
}
#else
static int v_matchproto_(vdp_init_f)
guard_init(VRT_CTX, struct vdp_ctx *vdc, void **priv, struct objcore *oc)
{
	return (guard_setup(ctx, vdc, priv, oc));
}
#endif

static int v_matchproto_(vdp_bytes_f)
guard_bytes(struct vdp_ctx *vdc, enum vdp_action act, void **priv, const void *ptr, ssize_t len)
{
	struct lambda_guard *g;
	int r;

	CAST_OBJ_NOTNULL(g, *priv, LAMBDA_GUARD_MAGIC);
	if (len > 0)
		g->left -= len;
	if (g->left > 0)
		return (VDP_bytes(vdc, act == VDP_END ? VDP_FLUSH : act, ptr, len));
	r = VDP_bytes(vdc, VDP_FLUSH, ptr, len);
	return (r != 0 ? r : -1);
}

/* VDP_Close() asserts that a filter's priv is NULL after its fini (the struct is in the workspace). */
static int v_matchproto_(vdp_fini_f)
guard_fini(struct vdp_ctx *vdc, void **priv)
{
	(void)vdc;
	AN(priv);
	*priv = NULL;
	return (0);
}

static const struct vdp lambda_guard_vdp = {
	.name =		"lambda_guard",
	.init =		guard_init,
	.bytes =	guard_bytes,
	.fini =		guard_fini,
};

/*
 * The VCL's vmod priv notes that lambda_guard is registered in it: VRT_RemoveFilter() asserts
 * that the filter is there. (VRT_AddFilter/VRT_RemoveFilter: the same from 7.1 to 7.7, where
 * VRT_AddVDP is deprecated.)
 */
int v_matchproto_(vmod_event_f)
vmod_event(VRT_CTX, struct vmod_priv *priv, enum vcl_event_e e)
{
	AN(priv);
	if (e == VCL_EVENT_LOAD && ops == NULL && lambda_boot(ctx))
		return (1);
	if (ops == NULL)
		return (e == VCL_EVENT_LOAD ? 1 : 0);
	if (e == VCL_EVENT_LOAD && priv->priv == NULL) {
		if (VRT_AddFilter(ctx, NULL, &lambda_guard_vdp) != NULL)
			return (1);		/* VRT_fail()ed: the name is taken */
		priv->priv = TRUST_ME(&lambda_guard_vdp);
	}
	if (e == VCL_EVENT_DISCARD && priv->priv != NULL) {
		VRT_RemoveFilter(ctx, NULL, &lambda_guard_vdp);
		priv->priv = NULL;
	}
	return (0);
}

VCL_VOID
vmod_backend__init(VRT_CTX, struct vmod_lambda_backend **objp, const char *vcl_name,
    struct VARGS(backend__init) *a)
{
	struct vmod_lambda_backend_args args;

	AN(objp);
	AZ(*objp);
	AN(a);
	if (ops == NULL) {
		VRT_fail(ctx, "lambda.backend(): %s: the VMOD did not start", vcl_name);
		return;
	}
	memset(&args, 0, sizeof args);
	args.function_name = a->function_name;
	args.region = a->region;
	args.endpoint_url = a->valid_endpoint_url ? a->endpoint_url : NULL;
	args.has_timeout = a->valid_timeout;
	args.timeout = a->valid_timeout ? a->timeout : 0.0;
	args.probe = a->valid_probe ? a->probe : NULL;
	args.response_format = a->response_format;
	args.event_format = a->event_format;
	args.multi_value = a->multi_value;
	args.has_pool_size = a->valid_pool_size;
	args.pool_size = a->valid_pool_size ? a->pool_size : 0;
	args.transport = a->valid_transport ? a->transport : NULL;
	args.log_tail = a->log_tail;
	args.streaming = a->streaming;
	args.qualifier = a->valid_qualifier ? a->qualifier : NULL;
	args.client_context = a->valid_client_context ? a->client_context : NULL;
	/* Credentials per object */
	args.role_arn = a->valid_role_arn ? a->role_arn : NULL;
	args.role_session_name = a->valid_role_session_name ? a->role_session_name : NULL;
	args.external_id = a->valid_external_id ? a->external_id : NULL;
	args.sts_endpoint_url = a->valid_sts_endpoint_url ? a->sts_endpoint_url : NULL;
	args.profile = a->valid_profile ? a->profile : NULL;
	args.trace = a->trace;
	args.tenant_header = a->valid_tenant_header ? a->tenant_header : NULL;
	args.throttle_hold = a->throttle_hold;
	args.has_max_queue_wait = a->valid_max_queue_wait;
	args.max_queue_wait = a->valid_max_queue_wait ? a->max_queue_wait : 0.0;
	*objp = ops->backend_init(ctx, vcl_name, &args);
}

VCL_VOID
vmod_backend__fini(struct vmod_lambda_backend **objp)
{
	void *o;

	if (objp == NULL || *objp == NULL)
		return;
	o = *objp;
	*objp = NULL;
	if (ops != NULL)
		ops->backend_fini(o);
}

VCL_STRING
vmod_backend_invoke(VRT_CTX, struct vmod_lambda_backend *o, struct VARGS(backend_invoke) *a)
{
	AN(a);
	if (ops == NULL || o == NULL) {
		VRT_fail(ctx, "lambda: invoke: the VMOD did not start");
		return (NULL);
	}
	return (ops->backend_invoke(ctx, o, a->payload, a->valid_fallback ? a->fallback : NULL,
	    a->valid_qualifier ? a->qualifier : NULL, a->valid_tenant_id ? a->tenant_id : NULL));
}

VCL_BOOL
vmod_backend_invoke_async(VRT_CTX, struct vmod_lambda_backend *o,
    struct VARGS(backend_invoke_async) *a)
{
	AN(a);
	if (ops == NULL || o == NULL) {
		VRT_fail(ctx, "lambda: invoke_async: the VMOD did not start");
		return (0);
	}
	return (ops->backend_invoke_async(ctx, o, a->payload,
	    a->valid_qualifier ? a->qualifier : NULL,
	    a->valid_tenant_id ? a->tenant_id : NULL) != 0);
}

VCL_STRING
vmod_backend_get_function_name(VRT_CTX, struct vmod_lambda_backend *o)
{
	if (ops == NULL || o == NULL)
		return (NULL);
	return (ops->backend_get_function_name(ctx, o));
}

VCL_BACKEND
vmod_backend_backend(VRT_CTX, struct vmod_lambda_backend *o)
{
	if (ops == NULL || o == NULL)
		return (NULL);
	return (ops->backend_backend(ctx, o));
}

VCL_STRING
vmod_backend_get_region(VRT_CTX, struct vmod_lambda_backend *o)
{
	if (ops == NULL || o == NULL)
		return (NULL);
	return (ops->backend_get_region(ctx, o));
}

VCL_STRING
vmod_selftest(VRT_CTX)
{
	if (ops == NULL) {
		VRT_fail(ctx, "lambda: selftest: the VMOD did not start");
		return (NULL);
	}
	return (ops->selftest(ctx));
}

VCL_STRING
vmod_status(VRT_CTX)
{
	if (ops == NULL)
		return ("not started");
	return (ops->status(ctx));
}

VCL_STRING
vmod_error(VRT_CTX)
{
	if (ops == NULL)
		return ("");
	return (ops->error(ctx));
}

VCL_DURATION
vmod_retry_after(VRT_CTX)
{
	if (ops == NULL)
		return (0.0);
	return (ops->retry_after(ctx));
}
