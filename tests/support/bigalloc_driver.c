/*
 * The python loader's bigalloc hook (include/vmod_lambda_loader.c) outside varnishd, for
 * tests/test_bigalloc_hook.py: the loader's source is compiled into this program, which is linked
 * like the loaders (jemalloc first, then libpython; or without jemalloc for the libc case).
 *
 * It installs the hook as the loader does, then checks through PyMem_Raw*: where blocks go (the
 * arena of each block, from jemalloc's arenas.lookup), realloc across the threshold both ways with
 * the contents kept, calloc zeroing (also of reused memory), overflow, alignment, the pages of freed
 * big blocks leaving RSS, 8 threads at once without the GIL, and an interpreter started on top.
 * Prints "state: <what the hook does>" first, "ok" last; a failed check aborts.
 */
#include "vmod_lambda_loader.c"

#include <stdint.h>
#include <sys/resource.h>

static long rss_mb(void);

#define MiB	((size_t)1 << 20)
/* CHECK() that NDEBUG cannot remove (the checks have side effects). */
#define CHECK(x) do {								\
	if (!(x)) {								\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);	\
		abort();							\
	}									\
} while (0)

static int (*mctl)(const char *, void *, size_t *, void *, size_t);
static unsigned ours;

static unsigned
arena_of(void *p)
{
	unsigned a = 0;
	size_t sz = sizeof a;

	CHECK(mctl("arenas.lookup", &a, &sz, &p, sizeof p) == 0);
	return (a);
}

static void
fill(void *p, size_t n, unsigned seed)
{
	unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		c[i] = (unsigned char)(i * 31 + seed);
}

static int
filled(const void *p, size_t n, unsigned seed)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i] != (unsigned char)(i * 31 + seed))
			return (0);
	return (1);
}

static int
zeroed(const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i] != 0)
			return (0);
	return (1);
}

static long
minflt(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_minflt);
}

static unsigned long
cache_stat(int i)
{
	unsigned long out[4];

	vmod_lambda_bigalloc_cache(out);
	return (out[i]);
}

/*
 * The warm cache (VMOD_LAMBDA_BIGALLOC_CACHE, default on): a freed big block is kept while
 * another is live and handed to the next big malloc it fits, its pages still there (no page
 * faults); the last live block's free empties the cache; a block kept over a second goes.
 */
static void
warm_cache(void)
{
	void *anchor, *p, *q, *r;
	long f0, rs0, rs1;

	if (getenv("VMOD_LAMBDA_BIGALLOC_CACHE") != NULL) {
		/* off: nothing kept */
		anchor = PyMem_RawMalloc(MiB);
		p = PyMem_RawMalloc(2 * MiB);
		PyMem_RawFree(p);
		CHECK(cache_stat(3) == 0);
		q = PyMem_RawMalloc(2 * MiB);
		CHECK(cache_stat(0) == 0);
		PyMem_RawFree(q);
		PyMem_RawFree(anchor);
		printf("warm cache: off\n");
		return;
	}
	CHECK(cache_stat(2) == 0 && cache_stat(3) == 0);
	anchor = PyMem_RawMalloc(MiB);
	p = PyMem_RawMalloc(4 * MiB);
	CHECK(p != NULL && anchor != NULL && cache_stat(2) == 2);
	fill(p, 4 * MiB, 5);
	PyMem_RawFree(p);
	CHECK(cache_stat(2) == 1 && cache_stat(3) == 1);
	/* The same block again, its pages resident: writing it all faults (almost) nothing. */
	f0 = minflt();
	q = PyMem_RawMalloc(4 * MiB - 100);
	CHECK(q == p && cache_stat(0) == 1 && cache_stat(3) == 0);
	memset(q, 7, 4 * MiB - 100);
	CHECK(minflt() - f0 < 64);
	/* Too big for it, or less than half of it: a new block. */
	PyMem_RawFree(q);
	r = PyMem_RawMalloc(5 * MiB);
	CHECK(r != q && cache_stat(3) == 1);
	PyMem_RawFree(r);
	r = PyMem_RawMalloc(MiB);
	CHECK(r != q && r != NULL);
	PyMem_RawFree(r);
	CHECK(cache_stat(3) <= 3);
	/* The last live block's free empties the cache, and its pages leave RSS. */
	rs0 = rss_mb();
	PyMem_RawFree(anchor);
	rs1 = rss_mb();
	CHECK(cache_stat(2) == 0 && cache_stat(3) == 0);
	printf("warm cache: RSS %ld MB with blocks kept, %ld MB after the last free\n", rs0, rs1);
	CHECK(rs0 - rs1 >= 3);		/* the 4 MiB block written above */
	/* Kept over a second: freed at the next allocation, even a small one. */
	anchor = PyMem_RawMalloc(MiB);
	p = PyMem_RawMalloc(2 * MiB);
	PyMem_RawFree(p);
	CHECK(cache_stat(3) == 1);
	usleep(1200 * 1000);
	q = PyMem_RawMalloc(100);		/* any allocation of the raw domain */
	CHECK(cache_stat(3) == 0);
	PyMem_RawFree(q);
	PyMem_RawFree(anchor);
	CHECK(cache_stat(2) == 0 && cache_stat(3) == 0);
}

static long
rss_mb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char l[256];
	long v = -1;

	while (f != NULL && fgets(l, sizeof l, f))
		if (!strncmp(l, "VmRSS:", 6))
			v = atol(l + 6) / 1024;
	if (f != NULL)
		fclose(f);
	return (v);
}

/* Without the GIL, as the raw domain allows: a chain of reallocs over sizes on both sides. */
static void *
worker(void *arg)
{
	static const size_t sizes[] = { 1, 100, 4096, 200000, 262143, 262144, 262145, 300000,
	    5 * MiB, 64 };
	const size_t nsizes = sizeof sizes / sizeof *sizes;
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (unsigned it = 0; it < 20; it++) {
		void *p = NULL, *q;
		size_t have = 0;

		for (unsigned k = 0; k < nsizes; k++) {
			size_t n = sizes[(k + it + seed) % nsizes];

			q = PyMem_RawRealloc(p, n);
			CHECK(q != NULL);
			CHECK(n < 16 || ((uintptr_t)q & 15) == 0);
			CHECK(filled(q, have < n ? have : n, seed));
			fill(q, n, seed);
			p = q;
			have = n;
		}
		PyMem_RawFree(p);
		q = PyMem_RawCalloc(1, 700000);
		CHECK(q != NULL && zeroed(q, 700000));
		memset(q, 0xff, 700000);
		PyMem_RawFree(q);
	}
	return (NULL);
}

int
main(void)
{
	PyPreConfig pre;
	PyConfig config;
	PyStatus st;
	pthread_t t[8];
	void *blocks[40], *s, *m, *b, *e;
	long r0, r1, r2;
	int rc;

	setvbuf(stdout, NULL, _IONBF, 0);
	PyPreConfig_InitIsolatedConfig(&pre);
	st = Py_PreInitialize(&pre);
	CHECK(!PyStatus_Exception(st));
	bigalloc_setup();
	printf("state: %s\n", vmod_lambda_bigalloc_state());

	if (!strncmp(vmod_lambda_bigalloc_state(), "jemalloc-arena:", 15)) {
		mctl = (int (*)(const char *, void *, size_t *, void *, size_t))
		    dlsym(RTLD_DEFAULT, "mallctl");
		CHECK(mctl != NULL);
		ours = (unsigned)atoi(vmod_lambda_bigalloc_state() + 15);

		/* Routing: small blocks stay in the thread's arena, big ones go to ours. */
		s = PyMem_RawMalloc(1000);
		m = PyMem_RawMalloc(100000);
		b = PyMem_RawMalloc(MiB);
		e = PyMem_RawMalloc(BIG_THRESHOLD);
		CHECK(arena_of(s) != ours && arena_of(m) != ours);
		CHECK(arena_of(b) == ours && arena_of(e) == ours);
		CHECK(((uintptr_t)b & 15) == 0 && ((uintptr_t)e & 15) == 0);

		/* Growing across the threshold moves into ours, the contents kept. */
		fill(s, 1000, 7);
		s = PyMem_RawRealloc(s, 3 * MiB);
		CHECK(s != NULL && arena_of(s) == ours && filled(s, 1000, 7));
		fill(m, 100000, 3);
		m = PyMem_RawRealloc(m, MiB);
		CHECK(m != NULL && arena_of(m) == ours && filled(m, 100000, 3));
		/* Big to big stays ours; shrinking below the threshold keeps the contents. */
		fill(b, MiB, 9);
		b = PyMem_RawRealloc(b, 8 * MiB);
		CHECK(b != NULL && arena_of(b) == ours && filled(b, MiB, 9));
		b = PyMem_RawRealloc(b, 300000);
		CHECK(b != NULL && arena_of(b) == ours && filled(b, 300000, 9));
		b = PyMem_RawRealloc(b, 5000);
		CHECK(b != NULL && filled(b, 5000, 9));
		PyMem_RawFree(s);
		PyMem_RawFree(m);
		PyMem_RawFree(b);
		PyMem_RawFree(e);
		PyMem_RawFree(NULL);

		/* calloc zeroes, also where a freed block's memory is reused. */
		for (int i = 0; i < 3; i++) {
			s = PyMem_RawCalloc(3, MiB);
			CHECK(s != NULL && arena_of(s) == ours && zeroed(s, 3 * MiB));
			memset(s, 0xaa, 3 * MiB);
			PyMem_RawFree(s);
		}
		CHECK(PyMem_RawCalloc((size_t)1 << 62, 8) == NULL);
		CHECK(PyMem_RawMalloc((size_t)1 << 62) == NULL);

		warm_cache();

		/* The pages of freed big blocks leave RSS at once (once none is live). */
		r0 = rss_mb();
		for (int i = 0; i < 40; i++) {
			blocks[i] = PyMem_RawMalloc(5 * MiB);
			CHECK(blocks[i] != NULL);
			memset(blocks[i], 1, 5 * MiB);
		}
		r1 = rss_mb();
		for (int i = 0; i < 40; i++)
			PyMem_RawFree(blocks[i]);
		r2 = rss_mb();
		printf("rss: %ld MB, %ld MB with 40 x 5 MiB, %ld MB after freeing them\n", r0, r1, r2);
		CHECK(r1 - r0 >= 150 && r2 - r0 < 20);
	}

	for (int i = 0; i < 8; i++)
		CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) == 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	printf("rss after the threads: %ld MB\n", rss_mb());

	/* An interpreter on top: big str, bytes, bytearray growth, json, threads. */
	PyConfig_InitIsolatedConfig(&config);
	st = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	CHECK(!PyStatus_Exception(st));
	rc = PyRun_SimpleString(
	    "import json, threading\n"
	    "body = 'x' * (5 << 20)\n"
	    "doc = json.dumps({'statusCode': 200, 'body': body}).encode()\n"
	    "errors = []\n"
	    "def work():\n"
	    "    try:\n"
	    "        for i in range(5):\n"
	    "            assert json.loads(doc)['body'].encode() == body.encode()\n"
	    "            ba = bytearray()\n"
	    "            for k in range(100):\n"
	    "                ba += bytes([k]) * 100000\n"
	    "            assert len(ba) == 10**7 and ba[-1] == 99 and ba[0] == 0\n"
	    "    except BaseException as e:\n"
	    "        errors.append(e)\n"
	    "ts = [threading.Thread(target=work) for _ in range(4)]\n"
	    "[t.start() for t in ts]\n"
	    "[t.join() for t in ts]\n"
	    "assert not errors, errors\n");
	CHECK(rc == 0);
	printf("rss at the end: %ld MB\nok\n", rss_mb());
	return (0);
}
