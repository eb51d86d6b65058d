/*
 * The common Lambda answer (a JSON response object) mapped in C, without the interpreter lock
 * (include/vmod_lambda_resp.c, compiled into the vmod_lambda._fastresponse extension).
 *
 * lambda_resp_parse() accepts only the shapes it is sure of and maps them exactly as
 * vmod_lambda/events.py parse_response("json", ...) does; for anything else it answers
 * LAMBDA_RESP_FALLBACK and the caller maps the payload in Python. Nothing here allocates: the
 * result points into the payload, which must outlive it.
 */
#ifndef VMOD_LAMBDA_RESP_H
#define VMOD_LAMBDA_RESP_H

#include <stddef.h>

#define LAMBDA_RESP_API __attribute__((visibility("hidden")))

/* More entries than this in one of headers, multiValueHeaders or cookies, or in all of them
 * together: Python maps the answer (and Varnish's own limits apply there). */
#define LAMBDA_RESP_MAX_HDR 64

#define LAMBDA_RESP_OK		1
#define LAMBDA_RESP_FALLBACK	0

/* How the body string becomes bytes. */
#define LAMBDA_BODY_COPY	0	/* no escapes: the bytes as they are (ASCII or valid UTF-8) */
#define LAMBDA_BODY_JSON	1	/* a JSON string with escapes: unescaped, UTF-8 */
#define LAMBDA_BODY_BASE64	2	/* isBase64Encoded: decoded */

struct lambda_resp_str {
	const char	*p;		/* the string's content between its quotes, as in the payload */
	size_t		n;
	size_t		len;		/* its length once unescaped */
	int		esc;		/* it has escapes (header text: \" \\ \/ \t only) */
};

struct lambda_resp_hdr {
	struct lambda_resp_str	name;
	struct lambda_resp_str	value;
};

struct lambda_resp_body {
	const char	*p;		/* the body string's content in the payload */
	size_t		n;
	size_t		len;		/* the decoded body's length (Content-Length) */
	int		kind;		/* LAMBDA_BODY_* */
	/* The decoder's state (lambda_resp_body_read): input consumed, the bytes of the last
	 * decoded unit not handed out yet. */
	size_t		pos;
	unsigned char	pend[4];
	unsigned	npend;
	unsigned	opend;
};

struct lambda_resp {
	int			status;
	struct lambda_resp_str	desc;		/* statusDescription (p NULL: none or null) */
	unsigned		nhdr;		/* in beresp order: headers, multiValueHeaders, cookies */
	struct lambda_resp_hdr	hdr[LAMBDA_RESP_MAX_HDR];
	struct lambda_resp_body	body;
	/* scratch of the parse: each container's entries in payload order */
	unsigned		nh, nm, nmk, nc;
	struct lambda_resp_hdr	h[LAMBDA_RESP_MAX_HDR];		/* headers */
	struct lambda_resp_hdr	m[LAMBDA_RESP_MAX_HDR];		/* multiValueHeaders, one per value */
	struct lambda_resp_str	mk[LAMBDA_RESP_MAX_HDR];	/* multiValueHeaders' names */
	struct lambda_resp_str	c[LAMBDA_RESP_MAX_HDR];		/* cookies */
};

/* Parse payload p[0..n): LAMBDA_RESP_OK with r filled, or LAMBDA_RESP_FALLBACK. */
LAMBDA_RESP_API int lambda_resp_parse(const char *p, size_t n, struct lambda_resp *r);
/* The same, for a payload this parse accepted before with the body known (its r->body then, with
 * p rebased if the payload was copied): the body is not scanned again. */
LAMBDA_RESP_API int lambda_resp_reparse(const char *p, size_t n, struct lambda_resp *r,
    const struct lambda_resp_body *known);
/* The header names dropped (lower case, NULL-terminated; Connection is never mapped here). */
LAMBDA_RESP_API const char *const *lambda_resp_dropped(void);
/* The reason phrase of statusDescription d, unescaped into out (room for d->len bytes), as
 * events._json_reason() takes it ("HTTP/1.1 404 Not Found", "404 Not Found" or "Not Found"): its
 * length, 0 for none (Varnish's own reason). */
LAMBDA_RESP_API size_t lambda_resp_reason(const struct lambda_resp_str *d, char *out);
/* Copy a header string unescaped into out (room for s->len bytes): the bytes written. */
LAMBDA_RESP_API size_t lambda_resp_str_copy(const struct lambda_resp_str *s, char *out);
/* The next body bytes into out (at most room): how many; 0 only at the end. */
LAMBDA_RESP_API size_t lambda_resp_body_read(struct lambda_resp_body *b, char *out, size_t room);

#endif
