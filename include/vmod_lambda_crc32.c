/*
 * CRC-32 of the event stream framing (vmod_lambda_crc32.h).
 *
 * A streamed fetch checks a CRC over every byte of the body (each message's CRC, AWS event
 * stream framing): with zlib's crc32() (binascii) that was about 0.2 ms of CPU per MB here, the
 * largest cost of decoding the stream (bench/ANALYSIS.md, issue 17). This folds 64 bytes per step
 * with carry-less multiplication (Intel, "Fast CRC Computation for Generic Polynomials Using
 * PCLMULQDQ Instruction", 2009; the constants are those of Linux's crc32-pclmul and Chromium's
 * zlib crc32_simd.c for the reflected polynomial 0xEDB88320), and does what is left (under 64
 * bytes, the last 15 bytes) with a table. Chosen at run time: CPUs without PCLMULQDQ/SSE4.1 use
 * the table only. No zlib: a C extension that links libz would bind to varnishd's zlib
 * (docs: the zlib clash, DESIGN.md).
 */
#include <pthread.h>

#include "vmod_lambda_crc32.h"

static uint32_t crc_table[256];
static int have_fold;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
	uint32_t c;
	unsigned i, k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	have_fold = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
}

/* The bit-inverted state (crc ^ 0xffffffff) in and out, as the folding needs it. */
static uint32_t
table_raw(uint32_t c, const unsigned char *p, size_t n)
{
	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return (c);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* n >= 64 and a multiple of 16; c the inverted state. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t
fold_raw(uint32_t c, const unsigned char *buf, size_t n)
{
	static const uint64_t k1k2[2] __attribute__((aligned(16))) = {0x0154442bd4, 0x01c6e41596};
	static const uint64_t k3k4[2] __attribute__((aligned(16))) = {0x01751997d0, 0x00ccaa009e};
	static const uint64_t k5[2] __attribute__((aligned(16))) = {0x0163cd6124, 0x0000000000};
	static const uint64_t poly[2] __attribute__((aligned(16))) = {0x01db710641, 0x01f7011641};
	__m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

	x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
	x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
	x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
	x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
	x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)c));
	x0 = _mm_load_si128((const __m128i *)k1k2);
	buf += 64;
	n -= 64;
	while (n >= 64) {
		x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
		x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
		x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
		x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
		x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
		x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
		x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
		x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
		y5 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
		y6 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
		y7 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
		y8 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
		x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
		x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
		x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
		buf += 64;
		n -= 64;
	}
	/* Fold the four lanes into one. */
	x0 = _mm_load_si128((const __m128i *)k3k4);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
	/* Then 16 bytes at a time. */
	while (n >= 16) {
		x2 = _mm_loadu_si128((const __m128i *)buf);
		x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
		x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
		buf += 16;
		n -= 16;
	}
	/* 128 bits to 64. */
	x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
	x3 = _mm_setr_epi32(~0, 0, ~0, 0);
	x1 = _mm_srli_si128(x1, 8);
	x1 = _mm_xor_si128(x1, x2);
	x0 = _mm_loadl_epi64((const __m128i *)k5);
	x2 = _mm_srli_si128(x1, 4);
	x1 = _mm_and_si128(x1, x3);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	/* Barrett reduction to 32 bits. */
	x0 = _mm_load_si128((const __m128i *)poly);
	x2 = _mm_and_si128(x1, x3);
	x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
	x2 = _mm_and_si128(x2, x3);
	x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	return ((uint32_t)_mm_extract_epi32(x1, 1));
}
#endif

uint32_t
lambda_crc32(uint32_t crc, const unsigned char *p, size_t n)
{
	uint32_t c;
	size_t k;

	(void)pthread_once(&crc_once, crc_init);
	c = crc ^ 0xffffffffU;
#if defined(__x86_64__) && defined(__GNUC__)
	if (have_fold && n >= 64) {
		k = n & ~(size_t)15;
		c = fold_raw(c, p, k);
		p += k;
		n -= k;
	}
#else
	(void)k;
#endif
	return (table_raw(c, p, n) ^ 0xffffffffU);
}

/* The table alone, for the tests (the folding must agree with it at every length). */
uint32_t
lambda_crc32_table(uint32_t crc, const unsigned char *p, size_t n)
{
	(void)pthread_once(&crc_once, crc_init);
	return (table_raw(crc ^ 0xffffffffU, p, n) ^ 0xffffffffU);
}

int
lambda_crc32_folds(void)
{
	(void)pthread_once(&crc_once, crc_init);
	return (have_fold);
}
