/*
 * The python loader: libvmod_lambda_loader_{jemalloc,libc}.so.
 *
 * Its NEEDED entries are, in this order, the allocator varnishd uses (libjemalloc.so.2 for the
 * _jemalloc build) and libpython. The thin VMOD opens it with RTLD_NOW | RTLD_GLOBAL | RTLD_DEEPBIND,
 * so that libpython and the libz it needs are loaded here for the first time and bind zlib to the real
 * libz (not varnishd's exported copy) and malloc/free to varnishd's allocator (it is first in the
 * lookup scope). See vmod_lambda.vcc, PITFALLS.
 *
 * vmod_lambda_boot() starts the interpreter once per process and imports the Cython implementation,
 * which exports its entry-point table as a capsule. Linked -z nodelete: it is never unloaded.
 *
 * Before the interpreter starts, bigalloc_setup() hooks Python's raw allocator so that large blocks
 * go to a private jemalloc arena that gives freed pages back to the OS at once (see below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>		/* first: it defines _GNU_SOURCE (RTLD_DEFAULT, RTLD_NOLOAD) */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#  endif
#endif
#ifndef RUNNING_ON_VALGRIND
#  define RUNNING_ON_VALGRIND 0
#endif

#include "vmod_lambda_ops.h"

#define IMPL_MODULE	"vmod_lambda._vmod"
#define IMPL_CAPSULE	IMPL_MODULE "._ops"

/* Set by the thin VMOD when this loader failed its binding self-check: Python must never start. */
int vmod_lambda_refused;

static pthread_mutex_t boot_mtx = PTHREAD_MUTEX_INITIALIZER;
static int started;
static char started_home[4096];
static const struct vmod_lambda_ops *impl_ops;

/*
 * bigalloc: where Python's large raw allocations go.
 *
 * Python allocates with malloc (objects over 512 bytes go from pymalloc to the raw domain), which
 * in Debian's varnishd is jemalloc. jemalloc keeps the pages of freed blocks as dirty memory and
 * gives them back over dirty_decay_ms (10 s) and only when that arena sees more activity: a Lambda
 * fetch of a 5 MB body makes about six transient 5 MB buffers on a Python worker thread, and the
 * child's RSS grew by hundreds of MB per run of such fetches and never came back while idle.
 * Setting MALLOC_CONF for varnishd would change the policy for Varnish's own allocations too.
 *
 * So the raw domain is hooked: requests of BIG_THRESHOLD bytes or more are made with
 * mallocx()/rallocx() in a private arena whose dirty and muzzy decay are 0 (a freed block's pages
 * are purged when it is freed), without the thread cache; smaller ones go to the allocator that was
 * there (malloc). A block is ours when its usable size is over BIG_THRESHOLD (sallocx()): those are
 * freed with dallocx() without the thread cache (a tcache_max raised in MALLOC_CONF would otherwise
 * keep them), everything else with the original free(). jemalloc frees a block of any arena either
 * way, so memory that crosses between the two (realloc, or C code that frees with free()) is fine.
 *
 * BIG_THRESHOLD: 256 KiB. Far above pymalloc's 512 bytes, so the many small and medium blocks keep
 * jemalloc's thread caches and reuse; small enough to catch every big transient buffer of a fetch
 * (a response of 256 KiB and up, its str, bytes and copies), where purging (one madvise per free,
 * page faults on the next use, about 64 per 256 KiB) costs little next to producing and copying
 * the data. jemalloc does the same for its own "oversize" requests (8 MiB and up, an arena with
 * decay 0).
 *
 * Only when malloc in this process is jemalloc's (looked up with dlsym, so the libc build loads
 * without jemalloc). Otherwise (glibc) the allocator is left alone, with glibc's own policy: big
 * blocks are mapped with mmap and unmapped when freed until the first is freed, after which its
 * threshold grows to that size and they come from its per-thread arenas, which give back only
 * their top. A hook of our own there (mmap with a header) would have to tell its blocks from
 * glibc's in free(), and would crash on any of its blocks freed with plain free(), which jemalloc
 * forgives.
 *
 * Also off with VMOD_LAMBDA_BIGALLOC=0, under valgrind (memcheck replaces malloc and free but not
 * mallocx) and with PYTHONMALLOC set (make valgrind sets it; the isolated interpreter ignores it,
 * but should a debug allocator ever be set up under the hook, big blocks would bypass its headers).
 *
 * The hook runs without the GIL (raw domain): it only reads `big`, written once before Python
 * starts, and jemalloc's calls are thread-safe.
 */
#define BIG_THRESHOLD		((size_t)256 * 1024)

/* jemalloc.h's flags (stable ABI since jemalloc 4), so that no jemalloc header is needed. */
#define JE_MALLOCX_ZERO		0x40
#define JE_MALLOCX_TCACHE_NONE	(1 << 8)		/* MALLOCX_TCACHE(-1) */
#define JE_MALLOCX_ARENA(a)	(((int)(a) + 1) << 20)

static struct {
	void *(*mallocx)(size_t, int);
	void *(*rallocx)(void *, size_t, int);
	size_t (*sallocx)(const void *, int);
	void (*dallocx)(void *, int);
	int flags;			/* MALLOCX_ARENA(ours) | MALLOCX_TCACHE_NONE */
	PyMemAllocatorEx orig;		/* the raw allocator the hook wraps */
} big;

static char bigalloc_state[160] = "off:python-not-started";

/* What the hook does in this child, one word, for lambda.selftest() (which finds it with ctypes). */
const char *
vmod_lambda_bigalloc_state(void)
{
	return (bigalloc_state);
}

/*
 * The warm cache. Purging every freed block has a price under a steady stream of big answers
 * (issue 17): each new block is faulted in page by page and zeroed by the kernel (a 1 MiB answer
 * through the direct transport, whose receive buffer the job takes over: a quarter of the child's
 * CPU of the fetch, bench/ANALYSIS.md). So up to BIG_CACHE_SLOTS freed blocks, BIG_CACHE_BYTES in
 * all, are kept, their pages warm, for the next big malloc they fit (usable size from n to 2n),
 * but only while other big blocks are live (allocated and not yet freed): when the last live block
 * is freed the cache is emptied too, so a child with no big answer in flight holds none of it
 * (its RSS comes back as before, with no timer and no thread). A block kept longer than
 * BIG_CACHE_AGE_MS goes at the next allocation or free of the raw domain, big or small (long-lived
 * big blocks, a large dict's table, keep "live" above zero): an interpreter that allocates nothing
 * at all keeps at most BIG_CACHE_BYTES until it does. Under a mutex: big blocks only, a few per
 * fetch; the small blocks' path only reads the number of kept blocks.
 */
#define BIG_CACHE_SLOTS		4
#define BIG_CACHE_BYTES		((size_t)16 << 20)
#define BIG_CACHE_AGE_MS	1000

static struct {
	pthread_mutex_t mtx;
	unsigned long live;		/* our blocks allocated and not freed (cached ones excluded) */
	size_t bytes;			/* usable bytes cached */
	unsigned n;
	struct { void *p; size_t size; long long t; } slot[BIG_CACHE_SLOTS];
	unsigned long hits, misses;	/* for the tests (vmod_lambda_bigalloc_cache) */
} cache = { .mtx = PTHREAD_MUTEX_INITIALIZER };

static int big_cache_on = 1;		/* VMOD_LAMBDA_BIGALLOC_CACHE=0: off */

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Under cache.mtx: move slot i's block to out[] (to be freed after the lock). */
static void
cache_take_out(unsigned i, void **out, unsigned *nout)
{
	out[(*nout)++] = cache.slot[i].p;
	cache.bytes -= cache.slot[i].size;
	cache.slot[i] = cache.slot[--cache.n];
}

/* Under cache.mtx: the blocks kept too long, to out[]. */
static void
cache_expire(long long t, void **out, unsigned *nout)
{
	unsigned i = 0;

	while (i < cache.n) {
		if (t - cache.slot[i].t > BIG_CACHE_AGE_MS)
			cache_take_out(i, out, nout);
		else
			i++;
	}
}

static void
free_all(void **out, unsigned nout)
{
	while (nout > 0)
		big.dallocx(out[--nout], JE_MALLOCX_TCACHE_NONE);
}

/* A big block of at least n bytes: a cached one that fits, or a new one from our arena. */
static void *
big_new(size_t n)
{
	void *out[BIG_CACHE_SLOTS], *p = NULL;
	unsigned i, best = BIG_CACHE_SLOTS, nout = 0;

	if (!big_cache_on) {
		p = big.mallocx(n, big.flags);
		return (p);
	}
	pthread_mutex_lock(&cache.mtx);
	cache_expire(now_ms(), out, &nout);
	for (i = 0; i < cache.n; i++) {
		if (cache.slot[i].size >= n && cache.slot[i].size / 2 <= n &&
		    (best == BIG_CACHE_SLOTS || cache.slot[i].size < cache.slot[best].size))
			best = i;
	}
	if (best < BIG_CACHE_SLOTS) {
		p = cache.slot[best].p;
		cache.bytes -= cache.slot[best].size;
		cache.slot[best] = cache.slot[--cache.n];
		cache.hits++;
		cache.live++;
	}
	pthread_mutex_unlock(&cache.mtx);
	free_all(out, nout);
	if (p != NULL)
		return (p);
	p = big.mallocx(n, big.flags);
	if (p != NULL && big.sallocx(p, 0) > BIG_THRESHOLD) {
		pthread_mutex_lock(&cache.mtx);
		cache.misses++;
		cache.live++;
		pthread_mutex_unlock(&cache.mtx);
	}
	return (p);
}

/* One of our blocks (usable size over BIG_THRESHOLD) is no longer live: keep it, or free it. */
static void
big_gone(void *p, size_t size)
{
	void *out[BIG_CACHE_SLOTS + 1];
	unsigned nout = 0;
	long long t;

	if (!big_cache_on) {
		big.dallocx(p, JE_MALLOCX_TCACHE_NONE);
		return;
	}
	t = now_ms();
	pthread_mutex_lock(&cache.mtx);
	if (cache.live > 0)
		cache.live--;
	cache_expire(t, out, &nout);
	if (cache.live == 0) {
		while (cache.n > 0)
			cache_take_out(0, out, &nout);
		out[nout++] = p;
	} else if (cache.n < BIG_CACHE_SLOTS && cache.bytes + size <= BIG_CACHE_BYTES) {
		cache.slot[cache.n].p = p;
		cache.slot[cache.n].size = size;
		cache.slot[cache.n].t = t;
		cache.n++;
		cache.bytes += size;
	} else {
		out[nout++] = p;
	}
	pthread_mutex_unlock(&cache.mtx);
	free_all(out, nout);
}

/* A block of ours was given to the original allocator's realloc: no longer counted live. */
static void
big_left(void)
{
	pthread_mutex_lock(&cache.mtx);
	if (cache.live > 0)
		cache.live--;
	pthread_mutex_unlock(&cache.mtx);
}

/* (cache hits, misses, live blocks, cached blocks) so far: for the tests (ctypes). */
void
vmod_lambda_bigalloc_cache(unsigned long out[4])
{
	pthread_mutex_lock(&cache.mtx);
	out[0] = cache.hits;
	out[1] = cache.misses;
	out[2] = cache.live;
	out[3] = cache.n;
	pthread_mutex_unlock(&cache.mtx);
}

/* Blocks are kept: free those kept too long (from the small blocks' path). */
static void
cache_tick(void)
{
	void *out[BIG_CACHE_SLOTS];
	unsigned nout = 0;

	pthread_mutex_lock(&cache.mtx);
	cache_expire(now_ms(), out, &nout);
	pthread_mutex_unlock(&cache.mtx);
	free_all(out, nout);
}

#define CACHE_TICK() do {						\
	if (__atomic_load_n(&cache.n, __ATOMIC_RELAXED) != 0)		\
		cache_tick();						\
} while (0)

static void *
big_malloc(void *ctx, size_t n)
{
	if (n >= BIG_THRESHOLD)
		return (big_new(n));
	CACHE_TICK();
	return (big.orig.malloc(big.orig.ctx, n));
}

static void *
big_calloc(void *ctx, size_t nelem, size_t elsize)
{
	size_t n;
	void *p;

	if (!__builtin_mul_overflow(nelem, elsize, &n) && n >= BIG_THRESHOLD) {
		/* Zeroed: a new block (its pages come zeroed), never a cached one. */
		p = big.mallocx(n, big.flags | JE_MALLOCX_ZERO);
		if (p != NULL && big_cache_on && big.sallocx(p, 0) > BIG_THRESHOLD) {
			pthread_mutex_lock(&cache.mtx);
			cache.live++;
			pthread_mutex_unlock(&cache.mtx);
		}
		return (p);
	}
	return (big.orig.calloc(big.orig.ctx, nelem, elsize));
}

static void *
big_realloc(void *ctx, void *p, size_t n)
{
	size_t old;
	void *q;

	if (p == NULL)
		return (big_malloc(ctx, n));
	old = big.sallocx(p, 0);
	if (n < BIG_THRESHOLD) {
		q = big.orig.realloc(big.orig.ctx, p, n);
		/* (jemalloc moves a shrunk block of ours out of our arena: it is no longer ours) */
		if (q != NULL && old > BIG_THRESHOLD && big.sallocx(q, 0) <= BIG_THRESHOLD &&
		    big_cache_on)
			big_left();
		return (q);
	}
	/*
	 * A block of more than BIG_THRESHOLD usable bytes came from our arena (the original
	 * allocator is only asked for less, and jemalloc's size classes put those at 256 KiB at
	 * most): rallocx() keeps it there, in place or moved (still one live block). Anything
	 * smaller is copied into a big block: rallocx() could grow it in place in the arena it is in.
	 */
	if (old > BIG_THRESHOLD)
		return (big.rallocx(p, n, big.flags));
	q = big_new(n);
	if (q == NULL)
		return (NULL);
	memcpy(q, p, old < n ? old : n);
	big.orig.free(big.orig.ctx, p);
	return (q);
}

static void
big_free(void *ctx, void *p)
{
	size_t size;

	if (p == NULL)
		return;
	size = big.sallocx(p, 0);
	if (size > BIG_THRESHOLD) {
		big_gone(p, size);
	} else {
		big.orig.free(big.orig.ctx, p);
		CACHE_TICK();
	}
}

/* After Py_PreInitialize() (which sets up the allocators), before Py_InitializeFromConfig(). */
static void
bigalloc_setup(void)
{
	const char *e = getenv("VMOD_LAMBDA_BIGALLOC"), *pm = getenv("PYTHONMALLOC");
	int (*mallctl)(const char *, void *, size_t *, void *, size_t);
	PyMemAllocatorEx hook = { NULL, big_malloc, big_calloc, big_realloc, big_free };
	unsigned arena;
	size_t sz = sizeof arena;
	ssize_t zero = 0;
	char name[64];
	void *je;
	static int done;

	if (done++)
		return;		/* an earlier start got this far: the hook must not wrap itself */
	if (e != NULL && strcmp(e, "0") == 0) {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:VMOD_LAMBDA_BIGALLOC=0");
		return;
	}
	if (pm != NULL && *pm != '\0') {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:PYTHONMALLOC");
		return;
	}
	if (RUNNING_ON_VALGRIND) {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:valgrind");
		return;
	}
	je = dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_NOLOAD);
	if (je == NULL || dlsym(je, "malloc") != dlsym(RTLD_DEFAULT, "malloc") ||
	    dlsym(je, "free") != dlsym(RTLD_DEFAULT, "free")) {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:malloc-is-not-jemalloc");
		if (je != NULL)
			dlclose(je);
		return;
	}
	/* je stays open: jemalloc is varnishd's allocator, it is never unloaded anyway. */
	big.mallocx = (void *(*)(size_t, int))dlsym(je, "mallocx");
	big.rallocx = (void *(*)(void *, size_t, int))dlsym(je, "rallocx");
	big.sallocx = (size_t (*)(const void *, int))dlsym(je, "sallocx");
	big.dallocx = (void (*)(void *, int))dlsym(je, "dallocx");
	mallctl = (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(je, "mallctl");
	if (big.mallocx == NULL || big.rallocx == NULL || big.sallocx == NULL || big.dallocx == NULL ||
	    mallctl == NULL) {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:jemalloc-without-mallocx");
		return;
	}
	if (mallctl("arenas.create", &arena, &sz, NULL, 0) != 0) {
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:jemalloc-arenas.create-failed");
		return;
	}
	snprintf(name, sizeof name, "arena.%u.dirty_decay_ms", arena);
	if (mallctl(name, NULL, NULL, &zero, sizeof zero) == 0) {
		snprintf(name, sizeof name, "arena.%u.muzzy_decay_ms", arena);
		if (mallctl(name, NULL, NULL, &zero, sizeof zero) != 0)
			name[0] = '\0';
	} else {
		name[0] = '\0';
	}
	if (name[0] == '\0') {
		/* The arena exists but would keep its pages: not worth the hook. */
		snprintf(bigalloc_state, sizeof bigalloc_state, "off:jemalloc-arena-decay-failed");
		return;
	}
	big.flags = JE_MALLOCX_ARENA(arena) | JE_MALLOCX_TCACHE_NONE;
	e = getenv("VMOD_LAMBDA_BIGALLOC_CACHE");
	big_cache_on = !(e != NULL && strcmp(e, "0") == 0);
	PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &big.orig);
	PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &hook);
	snprintf(bigalloc_state, sizeof bigalloc_state, "jemalloc-arena:%u,>=%zuKiB%s", arena,
	    BIG_THRESHOLD / 1024, big_cache_on ? ",warm" : "");
}

/* The pending Python exception as "Type: message" (GIL held); clears it. */
static void
describe_exception(const char *what, char *err, size_t errlen)
{
	PyObject *type, *value, *tb, *s = NULL;
	const char *text = NULL, *tname = "error";

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (type != NULL)
		tname = ((PyTypeObject *)type)->tp_name;
	if (value != NULL)
		s = PyObject_Str(value);
	if (s != NULL)
		text = PyUnicode_AsUTF8(s);
	if (text == NULL) {
		PyErr_Clear();
		text = "";
	}
	snprintf(err, errlen, "%s: %s: %s", what, tname, text);
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

static int
start_interpreter(const char *home, char *err, size_t errlen)
{
	char exe[4200];
	PyStatus st;
	PyPreConfig preconfig;
	PyConfig config;

	if (snprintf(exe, sizeof exe, "%s/bin/python3", home) >= (int)sizeof exe) {
		snprintf(err, errlen, "the home path is too long");
		return (-1);
	}
	if (access(exe, X_OK) != 0) {
		snprintf(err, errlen, "%s is missing or not executable for this user (uid %d): is "
		    "vmod-lambda installed there, and readable by the varnishd child?", exe,
		    (int)getuid());
		return (-1);
	}

	/*
	 * Pre-initialization first (isolated too: PYTHONMALLOC is ignored), then the allocator hook:
	 * that is where Python allows a raw allocator to be installed.
	 */
	PyPreConfig_InitIsolatedConfig(&preconfig);
	st = Py_PreInitialize(&preconfig);
	if (PyStatus_Exception(st)) {
		snprintf(err, errlen, "Python pre-initialization failed: %s%s%s",
		    st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "");
		return (-1);
	}
	bigalloc_setup();

	/*
	 * Isolated: no PYTHON* variables, no user site, nothing from the command line; the venv's
	 * pyvenv.cfg (found from program_name) gives sys.prefix and site-packages.
	 * Varnish owns the signals, stdio and the process: Python must not install handlers.
	 */
	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 0;
	config.parse_argv = 0;
	config.configure_c_stdio = 0;
	config.faulthandler = 0;
	config.tracemalloc = 0;
	config.write_bytecode = 0;
	config.pathconfig_warnings = 0;
	config.site_import = 1;
	st = PyConfig_SetBytesString(&config, &config.program_name, exe);
	if (!PyStatus_Exception(st))
		st = PyConfig_SetBytesString(&config, &config.executable, exe);
	if (!PyStatus_Exception(st))
		st = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	if (PyStatus_Exception(st)) {
		snprintf(err, errlen, "Python initialization failed: %s%s%s",
		    st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "");
		return (-1);
	}
	return (0);
}

/* Import the implementation and take its table (GIL held). */
static const struct vmod_lambda_ops *
import_impl(char *err, size_t errlen)
{
	PyObject *m;
	const struct vmod_lambda_ops *o;

	m = PyImport_ImportModule(IMPL_MODULE);
	if (m == NULL) {
		describe_exception("cannot import " IMPL_MODULE, err, errlen);
		return (NULL);
	}
	Py_DECREF(m);
	o = PyCapsule_Import(IMPL_CAPSULE, 0);
	if (o == NULL)
		describe_exception("cannot get " IMPL_CAPSULE, err, errlen);
	return (o);
}

const struct vmod_lambda_ops *
vmod_lambda_boot(const char *home, char *err, size_t errlen)
{
	const struct vmod_lambda_ops *o = NULL;
	PyGILState_STATE gs;

	pthread_mutex_lock(&boot_mtx);
	if (started && strcmp(home, started_home)) {
		snprintf(err, errlen, "Python already runs in this varnishd child with home %s, "
		    "not %s: restart varnishd", started_home, home);
	} else if (impl_ops != NULL) {
		o = impl_ops;
	} else if (!started) {
		if (start_interpreter(home, err, errlen) == 0) {
			started = 1;
			snprintf(started_home, sizeof started_home, "%s", home);
			o = impl_ops = import_impl(err, errlen);
			/* Varnish threads never hold the GIL: give it up for good. */
			(void)PyEval_SaveThread();
		}
	} else {
		/* Started, but the import failed earlier: the installation may have been fixed. */
		gs = PyGILState_Ensure();
		o = impl_ops = import_impl(err, errlen);
		PyGILState_Release(gs);
	}
	pthread_mutex_unlock(&boot_mtx);
	return (o);
}
