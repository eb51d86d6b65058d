/*
 * The common Lambda answer mapped in C (declared in vmod_lambda_resp.h): a strict parser of the
 * JSON response object for the shapes it is sure of, and the body's decoder.
 *
 * What it takes (everything else is LAMBDA_RESP_FALLBACK, and events.py maps it):
 *   - one JSON object, JSON whitespace around tokens, keys without escapes, each key once, only
 *     statusCode, statusDescription, headers, multiValueHeaders, cookies, body, isBase64Encoded;
 *   - statusCode a JSON integer or a string of 1-9 digits, 200-599 but 204 and 304 (the 1xx and
 *     the bodiless statuses take Python's path);
 *   - headers {name: string}, multiValueHeaders {name: [string, ...]}, cookies [string, ...], each
 *     null or absent; names RFC 7230 tokens without escapes; header text printable ASCII with
 *     the escapes \" \\ \/ \t only; no Connection header (its tokens name headers to drop);
 *   - body a string or null, isBase64Encoded true, false or null; a text body with any JSON
 *     escape but a lone surrogate, and valid UTF-8; a base64 body of [A-Za-z0-9+/], at most two
 *     '=' at its end, a multiple of 4 long, without escapes.
 * The mapping is events.py's: headers first (but those a multiValueHeaders name overrides,
 * compared without case), then multiValueHeaders, then cookies as Set-Cookie; hop-by-hop headers
 * and Content-Length dropped; statusDescription (header text, or null) read as _json_reason()
 * reads it (lambda_resp_reason). tests/compiled/test_fastresponse.py checks both give the same bytes.
 */

#include <stdint.h>
#include <string.h>

#include "vmod_lambda_resp.h"

struct cur {
	const unsigned char	*p;
	const unsigned char	*e;
};

static void
ws(struct cur *c)
{
	while (c->p < c->e && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int
lit(struct cur *c, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(c->e - c->p) < n || memcmp(c->p, s, n) != 0)
		return (0);
	c->p += n;
	return (1);
}

/* A string of header text (a key, name or value): printable ASCII, escapes \" \\ \/ \t. */
static int
hstr(struct cur *c, struct lambda_resp_str *s)
{
	size_t len = 0;
	unsigned char ch, e;

	if (c->p >= c->e || *c->p != '"')
		return (-1);
	c->p++;
	s->p = (const char *)c->p;
	s->esc = 0;
	while (c->p < c->e) {
		ch = *c->p;
		if (ch == '"') {
			s->n = (size_t)((const char *)c->p - s->p);
			s->len = len;
			c->p++;
			return (0);
		}
		if (ch == '\\') {
			if (c->e - c->p < 2)
				return (-1);
			e = c->p[1];
			if (e != '"' && e != '\\' && e != '/' && e != 't')
				return (-1);
			s->esc = 1;
			len++;
			c->p += 2;
			continue;
		}
		if (ch < 0x20 || ch >= 0x7f)
			return (-1);
		len++;
		c->p++;
	}
	return (-1);
}

static int
is_token(const struct lambda_resp_str *s)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";
	size_t i;
	unsigned char ch;

	if (s->esc || s->n == 0)
		return (0);
	for (i = 0; i < s->n; i++) {
		ch = (unsigned char)s->p[i];
		if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
			continue;
		if (ch == 0 || strchr(tchar, ch) == NULL)
			return (0);
	}
	return (1);
}

static int
same_nocase(const struct lambda_resp_str *a, const char *b, size_t n)
{
	size_t i;
	unsigned char x, y;

	if (a->n != n)
		return (0);
	for (i = 0; i < n; i++) {
		x = (unsigned char)a->p[i];
		y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x += 32;
		if (y >= 'A' && y <= 'Z')
			y += 32;
		if (x != y)
			return (0);
	}
	return (1);
}

static int
dup_key(const struct lambda_resp_str *keys, unsigned n, const struct lambda_resp_str *k)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (keys[i].n == k->n && memcmp(keys[i].p, k->p, k->n) == 0)
			return (1);
	return (0);
}

static int
hex4(const unsigned char *p, unsigned *cp)
{
	unsigned v = 0, i, d;

	for (i = 0; i < 4; i++) {
		if (p[i] >= '0' && p[i] <= '9')
			d = p[i] - '0';
		else if (p[i] >= 'a' && p[i] <= 'f')
			d = p[i] - 'a' + 10;
		else if (p[i] >= 'A' && p[i] <= 'F')
			d = p[i] - 'A' + 10;
		else
			return (-1);
		v = v << 4 | d;
	}
	*cp = v;
	return (0);
}

/* The length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0 (what Python's strict
 * UTF-8 decoder refuses: overlong forms, surrogates, beyond U+10FFFF, truncated sequences). */
static size_t
utf8_len(const unsigned char *p, const unsigned char *e)
{
	unsigned char b0 = p[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (b0 >= 0xc2 && b0 <= 0xdf)
		n = 2;
	else if (b0 >= 0xe0 && b0 <= 0xef) {
		n = 3;
		if (b0 == 0xe0)
			lo = 0xa0;
		else if (b0 == 0xed)
			hi = 0x9f;
	} else if (b0 >= 0xf0 && b0 <= 0xf4) {
		n = 4;
		if (b0 == 0xf0)
			lo = 0x90;
		else if (b0 == 0xf4)
			hi = 0x8f;
	} else
		return (0);
	if ((size_t)(e - p) < n)
		return (0);
	if (p[1] < lo || p[1] > hi)
		return (0);
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return (0);
	return (n);
}

#define ONES	0x0101010101010101ULL
#define HIGHS	0x8080808080808080ULL
/* Whether any of the 8 bytes of w is below 0x20, from 0x80, '"' or '\\'. */
#define SPECIAL8(w) \
	((((w) - ONES * 0x20) & ~(w) & HIGHS) | ((w) & HIGHS) | \
	 ((((w) ^ (ONES * '"')) - ONES) & ~((w) ^ (ONES * '"')) & HIGHS) | \
	 ((((w) ^ (ONES * '\\')) - ONES) & ~((w) ^ (ONES * '\\')) & HIGHS))

typedef unsigned char lambda_v16 __attribute__((vector_size(16)));

/* How many of the first n bytes at p, in whole blocks of 32, are printable ASCII other than '"'
 * and '\\' (a JSON string's plain run), with the compiler's generic vectors (SSE2 on x86-64,
 * NEON on arm64); the caller goes on byte by byte from there. */
static size_t
plain_run(const unsigned char *p, size_t n)
{
	size_t i;
	lambda_v16 a, b, bad;
	uint64_t w[2];

	for (i = 0; i + 32 <= n; i += 32) {
		memcpy(&a, p + i, 16);
		memcpy(&b, p + i + 16, 16);
		bad = (lambda_v16)((lambda_v16)(a - 0x20) >= 0x60) | (lambda_v16)(a == '"') |
		    (lambda_v16)(a == '\\') | (lambda_v16)((lambda_v16)(b - 0x20) >= 0x60) |
		    (lambda_v16)(b == '"') | (lambda_v16)(b == '\\');
		memcpy(w, &bad, sizeof w);
		if ((w[0] | w[1]) != 0)
			break;
	}
	return (i);
}

/* The body string: checked, measured, and whether it needs unescaping. */
static int
bstr(struct cur *c, struct lambda_resp_body *b)
{
	size_t len = 0, k;
	unsigned char ch, e;
	unsigned cp, lo;
	uint64_t w;

	if (c->p >= c->e || *c->p != '"')
		return (-1);
	c->p++;
	b->p = (const char *)c->p;
	b->kind = LAMBDA_BODY_COPY;
	while (c->p < c->e) {
		/* plain ASCII, 32 then eight bytes at a time */
		{
			size_t plain = plain_run(c->p, (size_t)(c->e - c->p));
			c->p += plain;
			len += plain;
		}
		while (c->e - c->p >= 8) {
			memcpy(&w, c->p, 8);
			if (SPECIAL8(w))
				break;
			c->p += 8;
			len += 8;
		}
		if (c->p >= c->e)
			break;
		ch = *c->p;
		if (ch == '"') {
			b->n = (size_t)((const char *)c->p - b->p);
			b->len = len;
			c->p++;
			return (0);
		}
		if (ch == '\\') {
			b->kind = LAMBDA_BODY_JSON;
			if (c->e - c->p < 2)
				return (-1);
			e = c->p[1];
			if (strchr("\"\\/bfnrt", e) != NULL && e != 0) {
				len++;
				c->p += 2;
				continue;
			}
			if (e != 'u' || c->e - c->p < 6 || hex4(c->p + 2, &cp) != 0)
				return (-1);
			c->p += 6;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return (-1);		/* lone low surrogate: not UTF-8 text */
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (c->e - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
				    hex4(c->p + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
					return (-1);	/* lone high surrogate */
				c->p += 6;
				len += 4;
			} else
				len += cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3;
			continue;
		}
		if (ch < 0x20)
			return (-1);		/* a raw control character: not JSON */
		if (ch < 0x80) {
			len++;
			c->p++;
			continue;
		}
		k = utf8_len(c->p, c->e);
		if (k == 0)
			return (-1);
		len += k;
		c->p += k;
	}
	return (-1);
}

/* base64 digit values, -1 outside the alphabet (no branches per character: random data
 * would mispredict them) */
static const signed char b64tab[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

#define b64val(ch) ((int)b64tab[(unsigned char)(ch)])

/* The same digits shifted into place for the decoder (0 outside the alphabet: the body was checked
 * with b64tab before it is decoded), so that a quad is four loads and three ors. */
static const uint32_t b64sh[4][256] = {
	{
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0xf80000, 0, 0, 0, 0xfc0000,
	0xd00000, 0xd40000, 0xd80000, 0xdc0000, 0xe00000, 0xe40000, 0xe80000, 0xec0000,
	0xf00000, 0xf40000, 0, 0, 0, 0, 0, 0,
	0, 0x000000, 0x040000, 0x080000, 0x0c0000, 0x100000, 0x140000, 0x180000,
	0x1c0000, 0x200000, 0x240000, 0x280000, 0x2c0000, 0x300000, 0x340000, 0x380000,
	0x3c0000, 0x400000, 0x440000, 0x480000, 0x4c0000, 0x500000, 0x540000, 0x580000,
	0x5c0000, 0x600000, 0x640000, 0, 0, 0, 0, 0,
	0, 0x680000, 0x6c0000, 0x700000, 0x740000, 0x780000, 0x7c0000, 0x800000,
	0x840000, 0x880000, 0x8c0000, 0x900000, 0x940000, 0x980000, 0x9c0000, 0xa00000,
	0xa40000, 0xa80000, 0xac0000, 0xb00000, 0xb40000, 0xb80000, 0xbc0000, 0xc00000,
	0xc40000, 0xc80000, 0xcc0000, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	},
	{
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0x03e000, 0, 0, 0, 0x03f000,
	0x034000, 0x035000, 0x036000, 0x037000, 0x038000, 0x039000, 0x03a000, 0x03b000,
	0x03c000, 0x03d000, 0, 0, 0, 0, 0, 0,
	0, 0x000000, 0x001000, 0x002000, 0x003000, 0x004000, 0x005000, 0x006000,
	0x007000, 0x008000, 0x009000, 0x00a000, 0x00b000, 0x00c000, 0x00d000, 0x00e000,
	0x00f000, 0x010000, 0x011000, 0x012000, 0x013000, 0x014000, 0x015000, 0x016000,
	0x017000, 0x018000, 0x019000, 0, 0, 0, 0, 0,
	0, 0x01a000, 0x01b000, 0x01c000, 0x01d000, 0x01e000, 0x01f000, 0x020000,
	0x021000, 0x022000, 0x023000, 0x024000, 0x025000, 0x026000, 0x027000, 0x028000,
	0x029000, 0x02a000, 0x02b000, 0x02c000, 0x02d000, 0x02e000, 0x02f000, 0x030000,
	0x031000, 0x032000, 0x033000, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	},
	{
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0x000f80, 0, 0, 0, 0x000fc0,
	0x000d00, 0x000d40, 0x000d80, 0x000dc0, 0x000e00, 0x000e40, 0x000e80, 0x000ec0,
	0x000f00, 0x000f40, 0, 0, 0, 0, 0, 0,
	0, 0x000000, 0x000040, 0x000080, 0x0000c0, 0x000100, 0x000140, 0x000180,
	0x0001c0, 0x000200, 0x000240, 0x000280, 0x0002c0, 0x000300, 0x000340, 0x000380,
	0x0003c0, 0x000400, 0x000440, 0x000480, 0x0004c0, 0x000500, 0x000540, 0x000580,
	0x0005c0, 0x000600, 0x000640, 0, 0, 0, 0, 0,
	0, 0x000680, 0x0006c0, 0x000700, 0x000740, 0x000780, 0x0007c0, 0x000800,
	0x000840, 0x000880, 0x0008c0, 0x000900, 0x000940, 0x000980, 0x0009c0, 0x000a00,
	0x000a40, 0x000a80, 0x000ac0, 0x000b00, 0x000b40, 0x000b80, 0x000bc0, 0x000c00,
	0x000c40, 0x000c80, 0x000cc0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	},
	{
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0x00003e, 0, 0, 0, 0x00003f,
	0x000034, 0x000035, 0x000036, 0x000037, 0x000038, 0x000039, 0x00003a, 0x00003b,
	0x00003c, 0x00003d, 0, 0, 0, 0, 0, 0,
	0, 0x000000, 0x000001, 0x000002, 0x000003, 0x000004, 0x000005, 0x000006,
	0x000007, 0x000008, 0x000009, 0x00000a, 0x00000b, 0x00000c, 0x00000d, 0x00000e,
	0x00000f, 0x000010, 0x000011, 0x000012, 0x000013, 0x000014, 0x000015, 0x000016,
	0x000017, 0x000018, 0x000019, 0, 0, 0, 0, 0,
	0, 0x00001a, 0x00001b, 0x00001c, 0x00001d, 0x00001e, 0x00001f, 0x000020,
	0x000021, 0x000022, 0x000023, 0x000024, 0x000025, 0x000026, 0x000027, 0x000028,
	0x000029, 0x00002a, 0x00002b, 0x00002c, 0x00002d, 0x00002e, 0x00002f, 0x000030,
	0x000031, 0x000032, 0x000033, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	},
};

/* How many of the first n bytes at p, in whole blocks of 64, are base64 digits for sure (the rest is
 * for the table): 16 at a time with the compiler's generic vectors (SSE2 on x86-64, NEON on arm64),
 * each lane one range check per class; a block with anything else stops the run. */
static size_t
b64alpha_run(const unsigned char *p, size_t n)
{
	size_t i, j;
	lambda_v16 x, ok, all;
	uint64_t w[2];

	for (i = 0; i + 64 <= n; i += 64) {
		memset(&all, 0xff, sizeof all);
		for (j = 0; j < 64; j += 16) {
			memcpy(&x, p + i + j, 16);
			ok = (lambda_v16)((lambda_v16)(x - 'A') < 26) |
			    (lambda_v16)((lambda_v16)(x - 'a') < 26) |
			    (lambda_v16)((lambda_v16)(x - '0') < 10) |
			    (lambda_v16)(x == '+') | (lambda_v16)(x == '/');
			all &= ok;
		}
		memcpy(w, &all, sizeof w);
		if ((w[0] & w[1]) != ~(uint64_t)0)
			break;
	}
	return (i);
}

/* A base64 body the strict way: alphabet, at most two '=' at the end, whole quads. */
static int
b64check(struct lambda_resp_body *b)
{
	const unsigned char *p = (const unsigned char *)b->p;
	size_t n = b->n, i, data = n;
	signed char bad = 0;

	if (b->kind != LAMBDA_BODY_COPY || n % 4 != 0)
		return (-1);
	while (data > 0 && n - data < 2 && p[data - 1] == '=')
		data--;
	i = b64alpha_run(p, data);
	for (; i < data; i++)
		bad |= b64tab[p[i]];
	if (bad < 0)
		return (-1);
	b->kind = LAMBDA_BODY_BASE64;
	b->len = n / 4 * 3 - (n - data);
	return (0);
}

static int
status_digits(const struct lambda_resp_str *s, int *status)
{
	size_t i;
	int v = 0;

	if (s->esc || s->n < 1 || s->n > 9)
		return (-1);
	for (i = 0; i < s->n; i++) {
		if (s->p[i] < '0' || s->p[i] > '9')
			return (-1);
		v = v * 10 + (s->p[i] - '0');
	}
	*status = v;
	return (0);
}

static int
status_number(struct cur *c, int *status)
{
	int v = 0, n = 0;

	if (c->p < c->e && *c->p == '0')
		return (-1);		/* 0, or a leading zero: not a status */
	while (c->p < c->e && *c->p >= '0' && *c->p <= '9') {
		if (++n > 3)
			return (-1);
		v = v * 10 + (*c->p - '0');
		c->p++;
	}
	if (n == 0 || (c->p < c->e && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')))
		return (-1);
	*status = v;
	return (0);
}

/* {name: string, ...} (headers) or {name: [string, ...], ...} (multiValueHeaders) */
static int
hobj(struct cur *c, struct lambda_resp *r, int multi)
{
	struct lambda_resp_str k, v;
	unsigned *nkeys = multi ? &r->nmk : &r->nh;
	unsigned i;

	if (lit(c, "null"))
		return (0);
	if (c->p >= c->e || *c->p != '{')
		return (-1);
	c->p++;
	ws(c);
	if (c->p < c->e && *c->p == '}') {
		c->p++;
		return (0);
	}
	for (;;) {
		if (hstr(c, &k) != 0 || !is_token(&k))
			return (-1);
		if (*nkeys >= LAMBDA_RESP_MAX_HDR)
			return (-1);
		if (multi) {
			if (dup_key(r->mk, r->nmk, &k))
				return (-1);
			r->mk[r->nmk++] = k;
		} else {
			for (i = 0; i < r->nh; i++)
				if (r->h[i].name.n == k.n && memcmp(r->h[i].name.p, k.p, k.n) == 0)
					return (-1);
		}
		ws(c);
		if (c->p >= c->e || *c->p != ':')
			return (-1);
		c->p++;
		ws(c);
		if (!multi) {
			if (hstr(c, &v) != 0)
				return (-1);
			r->h[r->nh].name = k;
			r->h[r->nh].value = v;
			r->nh++;
		} else {
			if (c->p >= c->e || *c->p != '[')
				return (-1);
			c->p++;
			ws(c);
			if (c->p < c->e && *c->p == ']')
				c->p++;
			else for (;;) {
				if (hstr(c, &v) != 0 || r->nm >= LAMBDA_RESP_MAX_HDR)
					return (-1);
				r->m[r->nm].name = k;
				r->m[r->nm].value = v;
				r->nm++;
				ws(c);
				if (c->p < c->e && *c->p == ',') {
					c->p++;
					ws(c);
					continue;
				}
				if (c->p < c->e && *c->p == ']') {
					c->p++;
					break;
				}
				return (-1);
			}
		}
		ws(c);
		if (c->p < c->e && *c->p == ',') {
			c->p++;
			ws(c);
			continue;
		}
		if (c->p < c->e && *c->p == '}') {
			c->p++;
			return (0);
		}
		return (-1);
	}
}

static int
cookies(struct cur *c, struct lambda_resp *r)
{
	if (lit(c, "null"))
		return (0);
	if (c->p >= c->e || *c->p != '[')
		return (-1);
	c->p++;
	ws(c);
	if (c->p < c->e && *c->p == ']') {
		c->p++;
		return (0);
	}
	for (;;) {
		if (r->nc >= LAMBDA_RESP_MAX_HDR || hstr(c, &r->c[r->nc]) != 0)
			return (-1);
		r->nc++;
		ws(c);
		if (c->p < c->e && *c->p == ',') {
			c->p++;
			ws(c);
			continue;
		}
		if (c->p < c->e && *c->p == ']') {
			c->p++;
			return (0);
		}
		return (-1);
	}
}

/* The response side of the header policy (vmod_lambda/headers.py RESPONSE_DROP: hop-by-hop and
 * Content-Length; _fastresponse.pyx checks the two agree at import); Connection is not here:
 * its value names more headers to drop, and Python maps such an answer. */
static const char *const drop[] = { "keep-alive", "proxy-connection", "transfer-encoding",
    "te", "trailer", "upgrade", "content-length", "http2-settings", NULL };

const char *const *
lambda_resp_dropped(void)
{
	return (drop);
}

static int
dropped(const struct lambda_resp_str *name)
{
	unsigned i;

	for (i = 0; drop[i] != NULL; i++)
		if (same_nocase(name, drop[i], strlen(drop[i])))
			return (1);
	return (0);
}

static int
emit(struct lambda_resp *r, const struct lambda_resp_str *name, const struct lambda_resp_str *value)
{
	if (same_nocase(name, "connection", 10))
		return (-1);
	if (dropped(name))
		return (0);
	if (r->nhdr >= LAMBDA_RESP_MAX_HDR)
		return (-1);
	r->hdr[r->nhdr].name = *name;
	r->hdr[r->nhdr].value = *value;
	r->nhdr++;
	return (0);
}

enum {
	K_STATUS = 1, K_HEADERS = 2, K_MULTI = 4, K_COOKIES = 8, K_BODY = 16, K_B64 = 32,
	K_DESC = 64
};

int
lambda_resp_parse(const char *p, size_t n, struct lambda_resp *r)
{
	return (lambda_resp_reparse(p, n, r, NULL));
}

int
lambda_resp_reparse(const char *p, size_t n, struct lambda_resp *r,
    const struct lambda_resp_body *known)
{
	static const struct lambda_resp_str set_cookie = { "Set-Cookie", 10, 10, 0 };
	struct cur c;
	struct lambda_resp_str k, s;
	unsigned seen = 0, key, i, j;
	int b64 = 0, override;

	if (p == NULL || r == NULL)
		return (LAMBDA_RESP_FALLBACK);
	r->status = 0;
	memset(&r->desc, 0, sizeof r->desc);
	r->nhdr = r->nh = r->nm = r->nmk = r->nc = 0;
	memset(&r->body, 0, sizeof r->body);
	c.p = (const unsigned char *)p;
	c.e = c.p + n;
	ws(&c);
	if (c.p >= c.e || *c.p != '{')
		return (LAMBDA_RESP_FALLBACK);
	c.p++;
	ws(&c);
	if (c.p < c.e && *c.p == '}')
		return (LAMBDA_RESP_FALLBACK);		/* {}: the payload is the body */
	for (;;) {
		if (hstr(&c, &k) != 0 || k.esc)
			return (LAMBDA_RESP_FALLBACK);
#define IS(name) (k.n == sizeof(name) - 1 && memcmp(k.p, name, k.n) == 0)
		if (IS("statusCode"))
			key = K_STATUS;
		else if (IS("headers"))
			key = K_HEADERS;
		else if (IS("multiValueHeaders"))
			key = K_MULTI;
		else if (IS("cookies"))
			key = K_COOKIES;
		else if (IS("body"))
			key = K_BODY;
		else if (IS("isBase64Encoded"))
			key = K_B64;
		else if (IS("statusDescription"))
			key = K_DESC;
		else
			return (LAMBDA_RESP_FALLBACK);
#undef IS
		if (seen & key)
			return (LAMBDA_RESP_FALLBACK);	/* a repeated key: the last one wins */
		seen |= key;
		ws(&c);
		if (c.p >= c.e || *c.p != ':')
			return (LAMBDA_RESP_FALLBACK);
		c.p++;
		ws(&c);
		switch (key) {
		case K_STATUS:
			if (c.p < c.e && *c.p == '"') {
				if (hstr(&c, &s) != 0 || status_digits(&s, &r->status) != 0)
					return (LAMBDA_RESP_FALLBACK);
			} else if (status_number(&c, &r->status) != 0)
				return (LAMBDA_RESP_FALLBACK);
			break;
		case K_HEADERS:
		case K_MULTI:
			if (hobj(&c, r, key == K_MULTI) != 0)
				return (LAMBDA_RESP_FALLBACK);
			break;
		case K_COOKIES:
			if (cookies(&c, r) != 0)
				return (LAMBDA_RESP_FALLBACK);
			break;
		case K_BODY:
			if (lit(&c, "null"))
				break;
			if (known != NULL && known->p == (const char *)c.p + 1 &&
			    (size_t)(c.e - c.p) >= known->n + 2) {
				/* checked by the same parse before: taken as it was measured */
				r->body = *known;
				r->body.pos = r->body.npend = r->body.opend = 0;
				c.p += known->n + 2;
				break;
			}
			if (bstr(&c, &r->body) != 0)
				return (LAMBDA_RESP_FALLBACK);
			break;
		case K_DESC:
			if (!lit(&c, "null") && hstr(&c, &r->desc) != 0)
				return (LAMBDA_RESP_FALLBACK);
			break;
		case K_B64:
			if (lit(&c, "true"))
				b64 = 1;
			else if (!lit(&c, "false") && !lit(&c, "null"))
				return (LAMBDA_RESP_FALLBACK);
			break;
		}
		ws(&c);
		if (c.p < c.e && *c.p == ',') {
			c.p++;
			ws(&c);
			continue;
		}
		if (c.p < c.e && *c.p == '}') {
			c.p++;
			break;
		}
		return (LAMBDA_RESP_FALLBACK);
	}
	ws(&c);
	if (c.p != c.e || !(seen & K_STATUS))
		return (LAMBDA_RESP_FALLBACK);
	if (r->status < 200 || r->status > 599 || r->status == 204 || r->status == 304)
		return (LAMBDA_RESP_FALLBACK);
	if (b64 && r->body.p != NULL && r->body.kind != LAMBDA_BODY_BASE64 &&
	    b64check(&r->body) != 0)
		return (LAMBDA_RESP_FALLBACK);

	/* headers (but those multiValueHeaders gives), multiValueHeaders, cookies */
	for (i = 0; i < r->nh; i++) {
		override = 0;
		for (j = 0; j < r->nmk && !override; j++)
			override = same_nocase(&r->h[i].name, r->mk[j].p, r->mk[j].n);
		if (!override && emit(r, &r->h[i].name, &r->h[i].value) != 0)
			return (LAMBDA_RESP_FALLBACK);
	}
	for (i = 0; i < r->nm; i++)
		if (emit(r, &r->m[i].name, &r->m[i].value) != 0)
			return (LAMBDA_RESP_FALLBACK);
	for (i = 0; i < r->nc; i++)
		if (emit(r, &set_cookie, &r->c[i]) != 0)
			return (LAMBDA_RESP_FALLBACK);
	return (LAMBDA_RESP_OK);
}

size_t
lambda_resp_str_copy(const struct lambda_resp_str *s, char *out)
{
	size_t i, o = 0;
	char ch;

	if (!s->esc) {
		memcpy(out, s->p, s->n);
		return (s->n);
	}
	for (i = 0; i < s->n; i++) {
		ch = s->p[i];
		if (ch == '\\') {
			ch = s->p[++i];
			if (ch == 't')
				ch = '\t';
		}
		out[o++] = ch;
	}
	return (o);
}

static int
blank(char ch)
{
	return (ch == ' ' || ch == '\t');
}

static int
digit(char ch)
{
	return (ch >= '0' && ch <= '9');
}

size_t
lambda_resp_reason(const struct lambda_resp_str *d, char *out)
{
	size_t n, pos = 0, j, k;

	if (d->p == NULL)
		return (0);
	n = lambda_resp_str_copy(d, out);	/* printable ASCII and tabs (hstr) */
	/* (?:HTTP(?:/[0-9](?:\.[0-9])?)?[ \t]+)? : only its longest form can be followed by a blank */
	if (n >= 4 && memcmp(out, "HTTP", 4) == 0) {
		j = 4;
		if (j + 1 < n && out[j] == '/' && digit(out[j + 1])) {
			j += 2;
			if (j + 1 < n && out[j] == '.' && digit(out[j + 1]))
				j += 2;
		}
		for (k = j; k < n && blank(out[k]); k++)
			continue;
		if (k > j)
			pos = k;
	}
	/* (?:[0-9]{3}(?:[ \t]+|$))? */
	if (n - pos >= 3 && digit(out[pos]) && digit(out[pos + 1]) && digit(out[pos + 2])) {
		k = pos + 3;
		if (k == n)
			pos = k;
		else if (blank(out[k])) {
			while (k < n && blank(out[k]))
				k++;
			pos = k;
		}
	}
	/* (.*), then .strip(" \t") */
	while (pos < n && blank(out[pos]))
		pos++;
	while (n > pos && blank(out[n - 1]))
		n--;
	memmove(out, out + pos, n - pos);
	return (n - pos);
}

/* One unit of an escaped JSON body at b->pos into u: its byte count (1-4). */
static unsigned
json_unit(struct lambda_resp_body *b, unsigned char *u)
{
	const unsigned char *p = (const unsigned char *)b->p + b->pos;
	unsigned cp, lo;
	size_t k;

	if (p[0] != '\\') {
		k = p[0] < 0x80 ? 1 : utf8_len(p, (const unsigned char *)b->p + b->n);
		memcpy(u, p, k);
		b->pos += k;
		return ((unsigned)k);
	}
	b->pos += 2;
	switch (p[1]) {
	case 'b': u[0] = '\b'; return (1);
	case 'f': u[0] = '\f'; return (1);
	case 'n': u[0] = '\n'; return (1);
	case 'r': u[0] = '\r'; return (1);
	case 't': u[0] = '\t'; return (1);
	case 'u': break;
	default: u[0] = p[1]; return (1);
	}
	(void)hex4(p + 2, &cp);
	b->pos += 4;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		(void)hex4(p + 8, &lo);
		b->pos += 6;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		return (1);
	}
	if (cp < 0x800) {
		u[0] = (unsigned char)(0xc0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return (2);
	}
	if (cp < 0x10000) {
		u[0] = (unsigned char)(0xe0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return (3);
	}
	u[0] = (unsigned char)(0xf0 | cp >> 18);
	u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	u[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return (4);
}

/* One quad of a base64 body at b->pos into u: its byte count (1-3). */
static unsigned
b64_unit(struct lambda_resp_body *b, unsigned char *u)
{
	const unsigned char *p = (const unsigned char *)b->p + b->pos;
	unsigned v = 0, i, data = 4;

	b->pos += 4;
	while (data > 2 && p[data - 1] == '=')
		data--;
	for (i = 0; i < data; i++)
		v |= (unsigned)b64val(p[i]) << (18 - 6 * i);
	u[0] = (unsigned char)(v >> 16);
	u[1] = (unsigned char)(v >> 8);
	u[2] = (unsigned char)v;
	return (data - 1);
}

size_t
lambda_resp_body_read(struct lambda_resp_body *b, char *out, size_t room)
{
	size_t o = 0, k;
	unsigned char *q = (unsigned char *)out;

	if (b->kind == LAMBDA_BODY_COPY) {
		k = b->n - b->pos;
		if (k > room)
			k = room;
		if (k == 0)
			return (0);		/* (also no body at all: p is NULL) */
		memcpy(out, b->p + b->pos, k);
		b->pos += k;
		return (k);
	}
	for (;;) {
		while (b->opend < b->npend && o < room)
			q[o++] = b->pend[b->opend++];
		if (o == room || b->pos >= b->n)
			return (o);
		if (b->kind == LAMBDA_BODY_BASE64) {
			/* whole quads straight into out while they fit (in locals: the stores
			 * through out may alias *b, which would reload b->p and b->pos per quad) */
			const unsigned char *p = (const unsigned char *)b->p + b->pos;
			size_t quads = (b->n - b->pos - 1) / 4, fit = (room - o) / 3;

			if (quads > fit)
				quads = fit;
			for (k = 0; k < quads; k++, p += 4, o += 3) {
				uint32_t v = b64sh[0][p[0]] | b64sh[1][p[1]] | b64sh[2][p[2]] |
				    b64sh[3][p[3]];
				q[o] = (unsigned char)(v >> 16);
				q[o + 1] = (unsigned char)(v >> 8);
				q[o + 2] = (unsigned char)v;
			}
			b->pos += 4 * quads;
			if (o == room || b->pos >= b->n)
				continue;
			b->npend = b64_unit(b, b->pend);
		} else {
			/* runs without escapes straight into out */
			const unsigned char *p = (const unsigned char *)b->p + b->pos;
			const unsigned char *bs = memchr(p, '\\', b->n - b->pos);
			k = (bs != NULL ? (size_t)(bs - p) : b->n - b->pos);
			if (k > 0) {
				if (k > room - o) {
					/* stop at a character boundary; the rest as a unit */
					k = room - o;
					while (k > 0 && (p[k] & 0xc0) == 0x80)
						k--;
				}
				memcpy(q + o, p, k);
				o += k;
				b->pos += k;
				if (k > 0)
					continue;
			}
			b->npend = json_unit(b, b->pend);
		}
		b->opend = 0;
	}
}
