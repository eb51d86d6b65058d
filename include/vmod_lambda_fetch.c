/*
 * The C side of a backend fetch (the director's gethdrs/finish and the VFP), after the recipe in
 * DESIGN.md: the parts of a fetch that touch Varnish's structs (busyobj, http_conn, the VFP
 * stack), so that _director.pyx declares no Varnish struct beyond the fields it reads. Compiled
 * into the vmod_lambda._director extension (setup.py). Version differences stay in
 * vmod_lambda_compat.h.
 */

#include <stdio.h>

#include "vmod_lambda_fetch.h"

/* The request body of a fetch: cached (std.cache_req_body) or straight from the client request. */
int
lambda_bereq_body(struct busyobj *bo, objiterate_f *cb, void *priv)
{
	if (bo->bereq_body != NULL)
		return (ObjIterate(bo->wrk, bo->bereq_body, priv, cb, 0));
	if (bo->req != NULL && bo->req->req_body_status != BS_NONE)
		return (VRB_Iterate(bo->wrk, bo->vsl, bo->req, cb, priv) < 0 ? -1 : 0);
	return (0);
}

/* Give the fetch a body of len bytes read by vfp (priv in its priv1), or none when len is 0. */
int
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
int
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
enum vfp_status
lambda_vfp_error(struct vfp_ctx *vc, const char *msg)
{
	return (VFP_Error(vc, "%s", msg));
}

/* bereq.first_byte_timeout and bereq.between_bytes_timeout as the fetch has them: NAN (or 0 on
 * older Varnish) when neither VCL nor Varnish gave them a value. */
double
lambda_bo_first_byte_timeout(const struct busyobj *bo)
{
	return (bo->first_byte_timeout);
}

double
lambda_bo_between_bytes_timeout(const struct busyobj *bo)
{
	return (bo->between_bytes_timeout);
}

void *
lambda_htc_priv(const struct busyobj *bo)
{
	return (bo->htc != NULL ? bo->htc->priv : NULL);
}

void
lambda_htc_clear(struct busyobj *bo)
{
	bo->htc = NULL;
}

/* Add one "Name: value" header line to beresp (copied to the workspace). */
void
lambda_beresp_header(struct busyobj *bo, const char *line)
{
	http_PrintfHeader(bo->beresp, "%s", line);
}

/*
 * The reason is copied to the workspace: http_SetStatus() keeps the pointer it is given, and the
 * job that holds the function's reason is freed when the fetch finishes. Without room for it, the
 * standard reason (a static string) is used and the workspace is marked overflowed, which
 * lambda_beresp_overflowed() reports.
 */
void
lambda_beresp_status(struct busyobj *bo, unsigned status, const char *reason)
{
	if (reason != NULL)
		reason = WS_Copy(bo->ws, reason, -1);
	if (reason == NULL)
		reason = http_Status2Reason(status, NULL);
	http_PutResponse(bo->beresp, "HTTP/1.1", (uint16_t)status, reason);
}

/*
 * Whether a response head of nhdr header lines and head_bytes bytes (status line and CRLFs
 * included) fits in beresp, checked before anything is written. The limits are the ones Varnish
 * applies to a native backend's response head: http_max_hdr header lines (of which the request
 * line fields and the Content-Length and Date lines set here and by Varnish take their share) and
 * http_resp_size bytes. Past them http_PrintfHeader() would drop headers one by one (LostHeader)
 * and the response would be served without them. Returns 0 when it fits, else -1 with the reason
 * in err.
 */
int
lambda_beresp_fits(const struct busyobj *bo, unsigned nhdr, size_t head_bytes, char *err,
    size_t errlen)
{
	unsigned room, limit;

	room = bo->beresp->shd > bo->beresp->nhd ? bo->beresp->shd - bo->beresp->nhd : 0;
	room = room > 2 ? room - 2 : 0;		/* Content-Length, Date */
	if (nhdr > room) {
		snprintf(err, errlen, "too many headers: %u in the response, at most %u fit "
		    "(http_max_hdr = %u)", nhdr, room, (unsigned)cache_param->http_max_hdr);
		return (-1);
	}
	limit = cache_param->http_resp_size;
	if (head_bytes > limit) {
		snprintf(err, errlen, "response headers of %zu bytes exceed http_resp_size "
		    "(%u bytes)", head_bytes, limit);
		return (-1);
	}
	return (0);
}

/* The backend workspace ran out (a header or the reason could not be copied). */
int
lambda_beresp_overflowed(const struct busyobj *bo)
{
	return (WS_Overflowed(bo->ws));
}

/* The director callbacks, in the struct layout of this Varnish (fields were added in 7.3). */
const struct vdi_methods *
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
