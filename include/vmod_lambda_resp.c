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
		/* plain ASCII, eight bytes at a time */
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
	for (i = 0; i < data; i++)
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
			/* whole quads straight into out while they fit */
			while (room - o >= 3 && b->n - b->pos > 4) {
				const unsigned char *p = (const unsigned char *)b->p + b->pos;
				unsigned v = (unsigned)b64val(p[0]) << 18 | (unsigned)b64val(p[1]) << 12 |
				    (unsigned)b64val(p[2]) << 6 | (unsigned)b64val(p[3]);
				q[o] = (unsigned char)(v >> 16);
				q[o + 1] = (unsigned char)(v >> 8);
				q[o + 2] = (unsigned char)v;
				o += 3;
				b->pos += 4;
			}
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
