/*
 * For tests/compiled/test_fastresponse_asan.py: include/vmod_lambda_resp.c built with AddressSanitizer and
 * UBSan, fed payloads on stdin (a 4-byte little-endian length, then the bytes), each copied into
 * an allocation of exactly its size so that a read past its end is caught. Every payload is
 * parsed, its head copied out and its body decoded in pieces of 1 to 7 bytes; prints one line of
 * totals. Exit 0, or ASan/UBSan abort.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmod_lambda_resp.h"

int
main(void)
{
	struct lambda_resp *r = malloc(sizeof *r);
	struct lambda_resp_body known;
	unsigned char len4[4];
	unsigned long n_in = 0, n_ok = 0, bytes = 0;
	size_t n, i, k, got, room, total;
	char *p, *out, reason[4096];

	if (r == NULL)
		return (2);
	while (fread(len4, 1, 4, stdin) == 4) {
		n = len4[0] | len4[1] << 8 | len4[2] << 16 | (size_t)len4[3] << 24;
		p = malloc(n ? n : 1);
		if (p == NULL || fread(p, 1, n, stdin) != n)
			return (2);
		n_in++;
		if (lambda_resp_parse(p, n, r) == LAMBDA_RESP_OK) {
			known = r->body;
			if (lambda_resp_reparse(p, n, r, known.p != NULL ? &known : NULL) !=
			    LAMBDA_RESP_OK)
				return (3);
			n_ok++;
			for (i = 0; i < r->nhdr; i++) {
				out = malloc(r->hdr[i].name.len + r->hdr[i].value.len + 1);
				k = lambda_resp_str_copy(&r->hdr[i].name, out);
				k += lambda_resp_str_copy(&r->hdr[i].value, out + k);
				if (k != r->hdr[i].name.len + r->hdr[i].value.len)
					return (4);
				free(out);
			}
			if (r->desc.p != NULL && r->desc.len < sizeof reason)
				(void)lambda_resp_reason(&r->desc, reason);
			out = malloc(r->body.len + 1);
			total = 0;
			for (i = 0;; i++) {
				room = 1 + (i * 7 + n) % 7;
				if (room > r->body.len + 1 - total)
					room = r->body.len + 1 - total;
				got = lambda_resp_body_read(&r->body, out + total, room);
				if (got == 0)
					break;
				total += got;
				if (total > r->body.len)
					return (5);
			}
			if (total != r->body.len)
				return (6);
			bytes += total;
			free(out);
		}
		free(p);
	}
	printf("%lu payloads, %lu mapped, %lu body bytes\n", n_in, n_ok, bytes);
	free(r);
	return (0);
}
