# cython: language_level=3
"""The director behind obj.backend(): gethdrs, finish and healthy callbacks, and the VFP.

gethdrs runs on the fetch thread without the GIL: it copies the backend request (head and body) into a
job, hands it to the worker pool and waits. A worker maps the request to an event, invokes the
function and maps the answer back (vmod_lambda.fetch), then gethdrs writes beresp and pushes a VFP
that feeds the body from the job. finish frees the job. Any failure is a FetchError line
`lambda: <object>: <reason>` and a failed fetch (vcl_backend_error), never a malformed response.
Streaming objects (streaming = true) take another path, see "Streaming backends" below: the head
as soon as it is known, the body through a bounded window while the function still writes it.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from libc.string cimport memcpy, memset, strlen

from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from vrt cimport (vrt_ctx, VRT_CTX_MAGIC, VCL_BACKEND, VCL_BOOL, VCL_TIME, director, vdi_methods,
                 vrt_backend_probe, vsb, vcl_event_e, VCL_EVENT_WARM, VCL_EVENT_COLD,
                 VRT_AddDirector, VRT_DelDirector, VRT_Healthy, VRT_SetChanged, VTIM_real)
from vsb cimport VSB_cat, VSB_printf, VSB_indent
from cache cimport (busyobj, VSLb, SLT_FetchError, SLT_Error, SLT_Backend_health,
                    SLT_VCL_Log)
from cache_filter cimport vfp, vfp_ctx, vfp_entry, vfp_status, VFP_OK, VFP_END, VFP_ERROR
from lambda_compat cimport lambda_log
from vmod_lambda_fetch cimport (lambda_bereq_body, lambda_beresp_body, lambda_htc_priv,
                                lambda_htc_clear, lambda_beresp_header, lambda_beresp_status,
                                lambda_beresp_fits, lambda_beresp_overflowed, lambda_vdi_methods,
                                lambda_beresp_stream, lambda_vfp_error,
                                lambda_bo_first_byte_timeout, lambda_bo_between_bytes_timeout)
from libc.math cimport isnan
from posix.time cimport timespec
from posix_thread cimport (pthread_mutex_t, pthread_cond_t, pthread_condattr_t, pthread_mutex_init,
                           pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock,
                           pthread_cond_init, pthread_cond_destroy, pthread_cond_timedwait,
                           pthread_cond_broadcast, pthread_condattr_init,
                           pthread_condattr_setclock, CLOCK_MONOTONIC, ETIMEDOUT)
from vmod_lambda._object cimport lambda_obj, OBJ_MAGIC
from vmod_lambda._fastevent cimport fast_event_v1
from vmod_lambda._throttle cimport throttle_held, throttle_reason, throttle_refused
from vmod_lambda._stats cimport OC_THROTTLED
from vmod_lambda_atomic cimport lambda_time_load
from vmod_lambda._fastresponse cimport fast_response_check, fast_response_fill, fast_response_read
from vmod_lambda._netio cimport RawBody
from vmod_lambda_resp cimport lambda_resp_body
from vmod_lambda._request cimport (lambda_request, Request, request_collect, request_body_append,
                                   request_clear, request_view, request_unview)
from vmod_lambda._response cimport lambda_response, response_fill, response_clear
from vmod_lambda._stats cimport (lambda_stat_add, lambda_stat_happy, stats_account,
                                 stats_internal, KIND_FETCH, KIND_PROBE,
                                 lambda_outcome, stats_prepare, stats_commit, outcome_set,
                                 outcome_clear, outcome_line, OC_NONE, OC_TIMEOUT, OC_BUSY,
                                 OC_INVALID, OC_TOO_LARGE, OC_INTERNAL, task_note,
                                 task_note_cause)
from vmod_lambda._handoff cimport (lambda_job, lambda_limiter, submit_wait, submit_detached,
                                   submit_result, submit_failure, monotonic_now, to_timespec,
                                   SUBMIT_DONE, SUBMIT_BUSY, SUBMIT_TIMEOUT, SUBMIT_ABANDONED, limiter_pin,
                                   limiter_acquire, limiter_release, LIM_OK, LIM_BUSY, LIM_IDLE)

from vmod_lambda import fetch as _fetch
from vmod_lambda.invoker import InvokeError
from vmod_lambda.probe import Prober, ProbeSpec

cdef enum:
    MSG_LEN = 1024
    LINE_LEN = 2048
    FETCH_MAGIC = 0x66657463

# How long past the object's timeout a fetch thread waits for the worker (vmod_lambda.vcc,
# "Timeouts"): the call's deadline is timeout + DEADLINE_MARGIN from its start, for the caller and
# for the transport alike (_handoff.pyx, lambda_job.deadline).
cdef double DEADLINE_MARGIN
DEADLINE_MARGIN = 0.1
# A job that ended neither ok nor with a reason: a bug caught by the worker (logged there as an
# internal error), or no memory left for the reason.
cdef const char *NO_RESULT = "internal error: the invocation ended without a result or a reason"


cdef struct fetch_job:
    lambda_job base             # first: the pool hands this back as a lambda_job
    unsigned magic
    lambda_obj *obj
    lambda_request req          # the backend request, collected once (_request.pxd)
    # the backend response, or err
    int ok
    lambda_response resp        # the answer, mapped once (_response.pxd)
    size_t resp_off             # body bytes the VFP handed out
    char *err
    lambda_outcome oc           # the outcome as the worker saw it, for the fetch thread to decide
    char *event                 # the event, when the fetch thread built it (_fastevent), or NULL
    size_t event_len
    # The answer's payload when C maps it (_fastresponse): the worker checked it and keeps it
    # here (PyMem_Raw*), the fetch thread maps it into resp and the VFP decodes the body from it
    # (rbody) straight into storage. NULL: resp was mapped by Python (response_fill).
    char *raw
    size_t raw_len
    lambda_resp_body rbody


cdef void _job_free(lambda_job *j) noexcept nogil:
    cdef fetch_job *job = <fetch_job *>j
    if job == NULL:
        return
    job.magic = 0
    # Buffers that can be large come from PyMem_Raw*: the loader sends large blocks to an arena
    # that returns them to the system when freed (vmod_lambda.vcc, "Large responses and memory").
    request_clear(&job.req)
    response_clear(&job.resp)
    free(job.err)
    outcome_clear(&job.oc)
    free(job.event)
    PyMem_RawFree(job.raw)
    free(job)


cdef char *_dup(bytes b, size_t *length, bint raw=False) noexcept:
    """A NUL-terminated malloc'd copy of b; raw: from PyMem_RawMalloc (free with PyMem_RawFree),
    for buffers that can be large."""
    cdef size_t n = len(b)
    cdef char *p = <char *>(PyMem_RawMalloc(n + 1) if raw else malloc(n + 1))
    if p != NULL:
        memcpy(p, <const char *>b, n)
        p[n] = 0
        if length != NULL:
            length[0] = n
    return p


cdef void _set_err(fetch_job *job, str reason) noexcept:
    job.ok = 0
    free(job.err)
    job.err = _dup(reason.encode("utf-8", "replace"), NULL)


# Past this size the worker checks and copies an answer without the GIL (a GIL release is a
# possible hand-off to another worker: not worth it for the common small answer).
cdef size_t TAKE_NOGIL = 32768


cdef int _take_check(const char *p, size_t n, lambda_resp_body *body) noexcept:
    """The worker's check of an answer C can map (fast_response_check into a cleared body), without
    the GIL past TAKE_NOGIL: 1 when C takes it, 0 or less when Python maps it."""
    cdef int rc
    memset(body, 0, sizeof(body[0]))
    if n > TAKE_NOGIL:
        with nogil:
            rc = fast_response_check(p, n, body)
    else:
        rc = fast_response_check(p, n, body)
    return rc


cdef class _FetchRef:
    cdef fetch_job *job

    def take(self, payload):
        """fetch.handle_gen()'s take: when C can map the answer (_fastresponse), keep the payload
        in the job for the fetch thread and return True; else False (Python maps it). A RawBody
        (the direct transport's receive buffer) is taken over as it is; bytes are copied."""
        cdef fetch_job *job = self.job
        cdef const char *p
        cdef size_t n
        cdef int rc
        cdef char *copy
        cdef lambda_resp_body body
        if type(payload) is RawBody:
            return self._take_raw(<RawBody>payload)
        if type(payload) is not bytes:
            return False
        p = <const char *>(<bytes>payload)
        n = len(<bytes>payload)
        rc = _take_check(p, n, &body)
        if rc <= 0:
            return False        # out of memory too: Python's path says so if it is still so
        copy = <char *>PyMem_RawMalloc(n + 1)
        if copy == NULL:
            return False
        if n > TAKE_NOGIL:
            with nogil:
                memcpy(copy, p, n)
        else:
            memcpy(copy, p, n)
        copy[n] = 0
        if body.p != NULL:
            body.p = copy + (body.p - p)    # the body as measured, in the copy
        PyMem_RawFree(job.raw)
        job.raw = copy
        job.raw_len = n
        job.rbody = body
        return True

    cdef bint _take_raw(self, RawBody payload):
        """take() of a RawBody: checked where it is, then its buffer becomes the job's (no copy)."""
        cdef fetch_job *job = self.job
        cdef const char *p = payload.p
        cdef size_t n = payload.n
        cdef int rc
        cdef lambda_resp_body body
        if p == NULL or payload.exports:
            return False
        rc = _take_check(p, n, &body)
        if rc <= 0:
            return False        # (the RawBody keeps its buffer: Python maps it from there)
        PyMem_RawFree(job.raw)
        job.raw = payload.detach(&job.raw_len)      # PyMem_RawMalloc'd, NUL-terminated
        job.rbody = body
        return True


cdef object _start_fetch(lambda_job *j):
    """The whole Lambda round trip of one fetch (_fetch_gen), for a worker of the pool."""
    cdef _FetchRef ref = _FetchRef.__new__(_FetchRef)
    ref.job = <fetch_job *>j
    return _fetch_gen(ref)


def _fetch_gen(_FetchRef ref):
    """Map, invoke, map back into the job, then the outcome as it ended, for the fetch thread
    to decide and count (_fetch_done). Never raises."""
    cdef fetch_job *job = ref.job
    cdef lambda_obj *o = job.obj
    err, rec = yield from _fetch_call(ref)
    try:
        stats_prepare(&job.oc, err, rec, o.vcl_name, o.function_name)
        if rec is None and err is None and job.ok and job.resp.note != NULL:
            # answered locally (413) without invoking
            outcome_set(&job.oc, 1, OC_TOO_LARGE, "payload")
    except BaseException as e:
        stats_internal(o.vsc, o.vcl_name, "counting a fetch", e)


def _fetch_call(_FetchRef ref):
    """Map, invoke, map back into the job; returns (the InvokeError or None when ok, the
    invocation's record or None when nothing was sent)."""
    cdef fetch_job *job = ref.job
    cdef Request request = None
    rec = None
    try:
        request = request_view(&job.req)
        event = PyBytes_FromStringAndSize(job.event, job.event_len) if job.event != NULL \
            else None
        r = yield from _fetch.handle_gen(<object>job.obj.invoker, request, event,
                                         deadline=job.base.deadline,
                                         take=ref.take if job.obj.fast_response else None)
        rec = r.record
        if not r.taken:
            response_fill(&job.resp, r, False)
        job.ok = 1
        return None, rec
    except InvokeError as e:
        _set_err(job, str(e))
        return e, e.record
    except MemoryError:
        _set_err(job, "out of memory")
        return InvokeError("internal", "out of memory"), rec
    except BaseException as e:
        try:
            _set_err(job, f"internal error: {type(e).__name__}: {e}")
            return InvokeError("internal", str(e)), rec
        except BaseException:
            return None, rec    # no memory left even for the reason: the fetch fails without one
    finally:
        request_unview(request)     # the job, and its record, may be freed once this returns


cdef int _body_cb(void *priv, unsigned flush, const void *ptr, ssize_t length) noexcept nogil:
    cdef fetch_job *job = <fetch_job *>priv
    if length <= 0:
        return 0
    return request_body_append(&job.req, <const char *>ptr, <size_t>length)


cdef vfp_status _vfp_pull(vfp_ctx *vc, vfp_entry *vfe, void *p, ssize_t *lp) noexcept nogil:
    cdef fetch_job *job = <fetch_job *>vfe.priv1
    cdef size_t n
    if job == NULL or job.magic != FETCH_MAGIC or lp == NULL:
        return VFP_ERROR
    n = job.resp.body_len - job.resp_off
    if <ssize_t>n > lp[0]:
        n = <size_t>lp[0]
    if job.raw != NULL:
        # decoded from the payload straight into the storage (_fastresponse)
        if n > 0:
            n = fast_response_read(&job.rbody, <char *>p, n)
            if n == 0:          # (cannot happen: the parse measured the body)
                return lambda_vfp_error(vc, "lambda: the body ended before its length")
    else:
        memcpy(p, job.resp.body + job.resp_off, n)
    job.resp_off += n
    lp[0] = <ssize_t>n
    return VFP_END if job.resp_off >= job.resp.body_len else VFP_OK


cdef vfp LAMBDA_VFP


cdef void _fetch_error(busyobj *bo, lambda_obj *o, const char *reason) noexcept nogil:
    VSLb(bo.vsl, SLT_FetchError, "lambda: %s: %s", o.vcl_name, reason)


cdef int _write_head(busyobj *bo, lambda_obj *o, const lambda_response *r,
                     bint content_length) noexcept nogil:
    """The response record's status and headers into beresp (and its Content-Length): 0, or -1
    with the FetchError logged. The whole head must fit before any of it is written: a header
    dropped for lack of room would be served missing (a lost Set-Cookie, Cache-Control, Vary...)."""
    cdef char reason[MSG_LEN]
    cdef char line[64]
    cdef unsigned i
    cdef size_t head_bytes
    if r.note != NULL:
        VSLb(bo.vsl, SLT_Error, "lambda: %s: %s", o.vcl_name, r.note)
    head_bytes = (17 + r.head_bytes + r.nheaders + 20
                  + (strlen(r.reason) if r.reason != NULL else 0))
    if lambda_beresp_fits(bo, r.nheaders, head_bytes, reason, MSG_LEN) != 0:
        _fetch_error(bo, o, reason)
        return -1
    lambda_beresp_status(bo, <unsigned>r.status, r.reason)
    for i in range(r.nheaders):
        lambda_beresp_header(bo, r.headers[i].name.p)    # the "Name: value" line (_response.pxd)
    if content_length:
        snprintf(line, sizeof(line), "Content-Length: %zu", r.body_len)
        lambda_beresp_header(bo, line)
    if lambda_beresp_overflowed(bo):
        _fetch_error(bo, o, "out of workspace (workspace_backend) for the response headers")
        return -1
    return 0


cdef int _gethdrs(const vrt_ctx *ctx, VCL_BACKEND d) noexcept nogil:
    cdef lambda_obj *o
    cdef busyobj *bo
    cdef fetch_job *job
    cdef submit_result rc
    cdef char reason[MSG_LEN]
    cdef lambda_outcome oc
    cdef size_t head_bytes, body_len
    cdef double start, waited, left, limit
    cdef const char *limit_name

    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC or ctx.bo == NULL or d == NULL:
        return -1
    bo = ctx.bo
    o = <lambda_obj *>d.priv
    if o == NULL or o.magic != OBJ_MAGIC:
        VSLb(bo.vsl, SLT_FetchError, "lambda: backend of a discarded object")
        return -1
    if throttle_held(o, &left):
        # Holding off after a 429 (_throttle.pyx): fail at once, send nothing.
        memset(&oc, 0, sizeof(oc))
        outcome_set(&oc, 1, OC_THROTTLED, "throttled")
        oc.retry_after = left       # lambda.retry_after(): what is left of the hold
        throttle_refused(o)
        _fetch_done(ctx, bo, o, &oc, 0, 0, NULL)
        throttle_reason(o, left, reason, MSG_LEN)
        _fetch_error(bo, o, reason)
        return -1
    if not VRT_Healthy(ctx, d, NULL):
        # Sick by probe or by backend.set_health: fail at once, invoke nothing.
        _fetch_error(bo, o, "backend is sick: not invoked")
        task_note_cause(ctx, "sick")
        return -1
    if o.streaming:
        return _gethdrs_stream(ctx, bo, o)
    job = <fetch_job *>calloc(1, sizeof(fetch_job))
    if job == NULL:
        _fetch_error(bo, o, "out of memory")
        return -1
    job.magic = FETCH_MAGIC
    job.obj = o
    job.base.start = _start_fetch
    job.base.mux = o.mux
    job.base.free_job = _job_free
    if request_collect(&job.req, bo.bereq) != 0:
        _fetch_error(bo, o, "out of memory")
        _job_free(<lambda_job *>job)
        return -1
    if lambda_bereq_body(bo, _body_cb, job) != 0:
        _fetch_error(bo, o, "cannot read the request body")
        _job_free(<lambda_job *>job)
        return -1

    if o.fast_event and job.req.body_seen == 0:
        # The common request's event, here, in parallel with the other fetch threads (NULL:
        # the worker maps it in Python).
        job.event = fast_event_v1(&job.req, VTIM_real(), o.fast_event == 2, &job.event_len)
    head_bytes = job.req.head_bytes
    body_len = job.req.body_len
    limit = _fetch_limit(bo, o, &limit_name)
    start = monotonic_now()
    job.base.send_by = start + limit
    rc = submit_wait(&job.base, &o.lim, start + limit + DEADLINE_MARGIN)
    if rc == SUBMIT_DONE:
        if job.ok and job.raw != NULL and _fast_map(bo, o, job) != 0:
            outcome_set(&job.oc, 1, OC_INTERNAL, "internal")
            _fetch_done(ctx, bo, o, &job.oc, head_bytes, body_len, NULL)
            _job_free(<lambda_job *>job)
            return -1
        if job.ok:
            # Applied before it is counted: a head that does not fit is the outcome, not "ok".
            if _write_head(bo, o, &job.resp, True) != 0:
                outcome_set(&job.oc, 1, OC_INVALID, "invalid_response")
            elif lambda_beresp_body(bo, <ssize_t>job.resp.body_len, &LAMBDA_VFP, job) != 0:
                _fetch_error(bo, o, "out of workspace (workspace_backend) for the response")
                outcome_set(&job.oc, 1, OC_INVALID, "invalid_response")
            else:
                _fetch_done(ctx, bo, o, &job.oc, head_bytes, body_len, &job.resp)
                if job.raw != NULL and o.vsc != NULL:
                    lambda_stat_add(&o.vsc.fast_response, 1)
                return 0        # the VFP reads the job, finish() frees it
            _fetch_done(ctx, bo, o, &job.oc, head_bytes, body_len, NULL)
            _job_free(<lambda_job *>job)
            return -1
        _fetch_done(ctx, bo, o, &job.oc, head_bytes, body_len, NULL)
        waited = monotonic_now() - start
        if job.oc.counter == OC_TIMEOUT and limit < o.timeout and waited >= limit:
            # The worker's read stopped at the deadline set by first_byte_timeout, just before
            # the caller's wait did: its own message would name the object's timeout.
            snprintf(reason, MSG_LEN, "timed out after %.3fs (%s %gs), the function did not "
                     "answer", waited, limit_name, limit)
        else:
            snprintf(reason, MSG_LEN, "%s", <const char *>job.err if job.err != NULL
                     else NO_RESULT)
        _fetch_error(bo, o, reason)
        _job_free(<lambda_job *>job)
        return -1
    # The caller's own outcome: the worker's result, if any, is not looked at.
    submit_failure(rc, &oc, reason, MSG_LEN, monotonic_now() - start, limit_name, limit, &o.lim)
    if rc == SUBMIT_ABANDONED:
        job = NULL          # the worker still runs the job and frees it
    _fetch_done(ctx, bo, o, &oc, head_bytes, body_len, NULL)
    _fetch_error(bo, o, reason)
    if job != NULL:
        _job_free(<lambda_job *>job)
    return -1


cdef int _fast_map(busyobj *bo, lambda_obj *o, fetch_job *job) noexcept nogil:
    """On the fetch thread: the answer the worker took (job.raw) into job.resp, and the body's
    decoder into job.rbody (_fastresponse): 0, or -1 with the FetchError logged."""
    cdef int rc = fast_response_fill(&job.resp, job.raw, job.raw_len, &job.rbody)
    if rc == 1:
        return 0
    # 0 cannot happen (the worker checked the same bytes with the same parser): a bug, said so
    _fetch_error(bo, o, "out of memory" if rc < 0 else
                 "internal error: the answer checked by the worker did not map")
    return -1


cdef double _fetch_limit(busyobj *bo, lambda_obj *o, const char **name) noexcept nogil:
    """How long a buffered fetch may take, and the name of that limit for its messages: the
    object's timeout, or bereq.first_byte_timeout when VCL set a tighter one (a buffered answer
    is whole before its first byte goes to Varnish: the whole answer is the "first byte")."""
    cdef double fbt = lambda_bo_first_byte_timeout(bo)
    if not isnan(fbt) and fbt > 0.0 and fbt < o.timeout:
        name[0] = "first_byte_timeout"
        return fbt
    name[0] = "timeout"
    return o.timeout


cdef void _fetch_done(const vrt_ctx *ctx, busyobj *bo, lambda_obj *o, const lambda_outcome *oc,
                      size_t head_bytes, size_t body_len,
                      const lambda_response *resp) noexcept nogil:
    """On the fetch thread, once it applied the result: the fetch's one outcome, counted and
    logged (resp: the response delivered, whose bytes count; NULL: none), and the task's last
    (lambda.error())."""
    cdef char line[LINE_LEN]
    cdef unsigned i
    stats_commit(o.vsc, KIND_FETCH, oc)
    task_note(ctx, oc)
    if o.vsc != NULL and oc.sent:
        lambda_stat_add(&o.vsc.bereq_hdrbytes, head_bytes)
        lambda_stat_add(&o.vsc.bereq_bodybytes, body_len)
        if resp != NULL and not oc.failed:
            lambda_stat_add(&o.vsc.beresp_hdrbytes, resp.head_bytes)
            lambda_stat_add(&o.vsc.beresp_bodybytes, resp.body_len)
    outcome_line(line, LINE_LEN, o.vcl_name, o.function_name, KIND_FETCH, oc)
    VSLb(bo.vsl, SLT_VCL_Log, "%s", line)
    for i in range(1, oc.lines.n):
        VSLb(bo.vsl, SLT_VCL_Log, "%s", oc.lines.line[i].p)


cdef void _finish(const vrt_ctx *ctx, VCL_BACKEND d) noexcept nogil:
    cdef fetch_job *job
    if ctx == NULL or ctx.bo == NULL:
        return
    job = <fetch_job *>lambda_htc_priv(ctx.bo)
    if job != NULL and job.magic == FETCH_MAGIC:
        _job_free(<lambda_job *>job)
    elif job != NULL and job.magic == STREAM_MAGIC:
        _stream_commit(ctx.bo, <stream_job *>job, NULL)
        _stream_leave(<stream_job *>job)
    lambda_htc_clear(ctx.bo)


cdef VCL_BOOL _healthy(const vrt_ctx *ctx, VCL_BACKEND d, VCL_TIME *changed) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>d.priv if d != NULL else NULL
    cdef double left
    if o == NULL or o.magic != OBJ_MAGIC:
        return 0
    if throttle_held(o, &left):
        # Sick while it holds off after a 429: std.healthy(), fallback directors and grace see it.
        if changed != NULL:
            changed[0] = lambda_time_load(&o.held_since_real)
        return 0
    if o.prober == NULL:
        return 1
    if changed != NULL:
        changed[0] = o.probe_changed
    return o.probe_healthy


# ---------------------------------------------------------------------------------------------------
# Probes: a vmod_lambda.probe.Prober per object with a probe, running while the VCL is warm.

cdef class _ProbeReport:
    """What a Prober calls after each poke: the verdict, its log line; and the slot of the object's
    pool each poke takes (acquire/release). Dead once the object is."""
    cdef lambda_obj *obj
    cdef lambda_limiter *held       # the limiter of the slot the poke under way holds

    def acquire(self, double timeout):
        """Take one of the object's pool_size slots for a poke, like any invocation of the
        object, waiting at most timeout seconds: "ok", "busy", or "gone" (object discarded)."""
        cdef lambda_limiter *lim
        cdef int rc
        cdef double deadline = monotonic_now() + timeout
        if self.obj == NULL or self.held != NULL:
            return "gone"
        lim = &self.obj.lim
        limiter_pin(lim)            # with the GIL: the object cannot be released meanwhile
        with nogil:
            rc = limiter_acquire(lim, deadline)
        if rc & LIM_IDLE:
            lim.on_idle(lim)        # the object went while this poke waited: it was the last
        rc &= ~LIM_IDLE
        if rc == LIM_OK:
            self.held = lim
            return "ok"
        return "busy" if rc == LIM_BUSY else "gone"

    def release(self):
        """Give the slot of acquire() back."""
        cdef lambda_limiter *lim = self.held
        cdef int rc
        if lim == NULL:
            return
        self.held = NULL
        with nogil:
            rc = limiter_release(lim)
        if rc & LIM_IDLE:
            lim.on_idle(lim)

    def observe(self, bint good, err, rec):
        """One poke: its counters and the happy bitmap (the prober's thread, GIL held)."""
        if self.obj == NULL or self.obj.vsc == NULL:
            return
        stats_account(self.obj.vsc, KIND_PROBE, err, rec)
        lambda_stat_happy(&self.obj.vsc.happy, good)

    def __call__(self, bint healthy, bint went, str line):
        cdef bytes b = line.encode("utf-8", "replace")
        if self.obj == NULL:
            return
        self.obj.probe_healthy = healthy
        if went:
            self.obj.probe_changed = VTIM_real()
            if self.obj.dir != NULL:
                VRT_SetChanged(self.obj.dir, self.obj.probe_changed)
        lambda_log(NULL, SLT_Backend_health, b)


cdef object _probe_spec(const vrt_backend_probe *p):
    return ProbeSpec(url=p.url.decode("utf-8", "replace") if p.url != NULL else None,
                     request=p.request.decode("utf-8", "replace") if p.request != NULL else None,
                     timeout=p.timeout, interval=p.interval, exp_status=p.exp_status,
                     window=p.window, threshold=p.threshold, initial=p.initial)


cdef void _event(VCL_BACKEND d, vcl_event_e ev) noexcept with gil:
    cdef lambda_obj *o = <lambda_obj *>d.priv if d != NULL else NULL
    if o == NULL or o.magic != OBJ_MAGIC or o.prober == NULL:
        return
    try:
        if ev == VCL_EVENT_WARM:
            (<object>o.prober).start()
        elif ev == VCL_EVENT_COLD:
            (<object>o.prober).stop()
    except BaseException as e:
        lambda_log(NULL, SLT_Error, f"lambda: {o.vcl_name.decode()}: probe: {e}".encode(
            "utf-8", "replace"))


cdef void _list(const vrt_ctx *ctx, VCL_BACKEND d, vsb *v, int pflag, int jflag) noexcept with gil:
    cdef lambda_obj *o = <lambda_obj *>d.priv if d != NULL else NULL
    cdef const char *health
    cdef bytes text
    if o == NULL or o.magic != OBJ_MAGIC or v == NULL:
        return
    health = "healthy" if VRT_Healthy(ctx, d, NULL) else "sick"
    try:
        if o.prober == NULL:
            if pflag:
                if jflag:
                    VSB_cat(v, "{},\n")
            elif jflag:
                VSB_printf(v, "[0, 0, \"%s\"]", health)
            else:
                VSB_printf(v, "0/0\t%s", health)
        elif pflag:
            text = (<object>o.prober).list_text(True, bool(jflag)).encode()
            if jflag:
                VSB_cat(v, "{\n")
                VSB_indent(v, 2)
                VSB_cat(v, text)
                VSB_indent(v, -2)
                VSB_cat(v, "\n},\n")
            else:
                VSB_cat(v, text)
        else:
            good, window = (<object>o.prober).list_text(False, False)
            if jflag:
                VSB_printf(v, "[%u, %u, \"%s\"]", <unsigned>good, <unsigned>window, health)
            else:
                VSB_printf(v, "%u/%u\t%s", <unsigned>good, <unsigned>window, health)
    except BaseException:
        VSB_cat(v, "?")     # backend.list shows "?": a CLI listing has no log to write to


# ---------------------------------------------------------------------------------------------------
# Streaming backends (streaming = true): InvokeWithResponseStream, the body as it arrives.
#
# gethdrs submits a *detached* job (submit_detached: the worker owns it, nobody waits for it to end)
# and waits on the job's channel until the worker has the response head (the HTTP-integration
# prelude, or the first bytes of a plain payload), a failure, or the first-byte timeout. The worker
# then pushes the body into a ring of WINDOW bytes and blocks while it is full (backpressure); the
# VFP pulls from the ring on the fetch thread, waiting at most the between-bytes timeout for each
# piece. The job is freed by whichever side lets go last (refs: the worker and the fetch). Lock
# order: the GIL is never taken while a channel mutex is held.

cdef enum:
    STREAM_MAGIC = 0x7374726d
    WINDOW = 256 * 1024
    # A worker waiting for space in a full ring is woken once this much is free, not for every
    # piece the VFP takes (Varnish pulls in pieces of fetch_chunksize, 16 KiB by default): one
    # wake-up per half window instead of one per pull. An empty ring is always above it, so the
    # two sides never wait for each other.
    WINDOW_LOW = 128 * 1024     # half the window


cdef struct stream_job:
    fetch_job f                 # first: the request, the response head, err and note
    pthread_mutex_t mtx
    pthread_cond_t cond         # any change: head, data, space, end, failure, consumer gone
    int refs                    # 2 while both the worker and the fetch hold it
    int head_ready
    int eof
    int failed
    int consumer_gone
    char *ring
    size_t ring_rd
    size_t ring_len
    double between_bytes        # seconds the VFP waits for the next bytes
    double deadline             # monotonic: the whole stream must be in by then (obj timeout)
    double head_deadline        # monotonic: the transport stops waiting for the head then
    double start                # monotonic: when the fetch submitted it
    size_t body_bytes           # bytes the worker put into the ring
    size_t pulled               # bytes the VFP handed to Varnish
    int head_written            # the head went into beresp
    int stalled                 # the VFP gave up: no bytes for between_bytes
    int committed               # the fetch counted and logged its one outcome (_stream_commit)
    int writer_waits            # the worker waits for space in the ring (_chan_push)
    int reader_waits            # the VFP waits for bytes in the ring (_vfp_stream_pull)


cdef pthread_condattr_t STREAM_CONDATTR
cdef vfp LAMBDA_STREAM_VFP


cdef void _stream_release(stream_job *sj) noexcept nogil:
    """Drop one reference; the last one frees the job."""
    cdef int last
    pthread_mutex_lock(&sj.mtx)
    sj.refs -= 1
    last = sj.refs == 0
    pthread_mutex_unlock(&sj.mtx)
    if not last:
        return
    free(sj.ring)
    sj.ring = NULL
    pthread_cond_destroy(&sj.cond)
    pthread_mutex_destroy(&sj.mtx)
    _job_free(<lambda_job *>sj)        # the fetch_job fields and the block


cdef void _stream_leave(stream_job *sj) noexcept nogil:
    """The fetch side is done (finish, or gethdrs gave up): the worker stops at its next step."""
    pthread_mutex_lock(&sj.mtx)
    sj.consumer_gone = 1
    pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)
    _stream_release(sj)


cdef void _stream_worker_done(lambda_job *j) noexcept nogil:
    """free_job of the detached job: called by the worker pool once _run_stream returned."""
    cdef stream_job *sj = <stream_job *>j
    pthread_mutex_lock(&sj.mtx)
    if not sj.eof and not sj.failed:
        sj.failed = 1           # cannot happen unless _run_stream lost its error: never hang
    pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)
    _stream_release(sj)


cdef int _chan_head(stream_job *sj) noexcept nogil:
    """Publish the head (already in sj.f). 0: nobody waits for it any more."""
    cdef int gone
    pthread_mutex_lock(&sj.mtx)
    sj.head_ready = 1
    gone = sj.consumer_gone
    pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)
    return 0 if gone else 1


cdef int _chan_push(stream_job *sj, const char *p, size_t n) noexcept nogil:
    """Copy n bytes into the ring, waiting while it is full. 1: done; 0: the fetch is gone;
    -1: the fetch took nothing until the stream's deadline."""
    cdef timespec ts
    cdef size_t space, k, wpos, first
    cdef int rc
    to_timespec(sj.deadline, &ts)
    pthread_mutex_lock(&sj.mtx)
    while n > 0:
        if sj.consumer_gone:
            pthread_mutex_unlock(&sj.mtx)
            return 0
        space = WINDOW - sj.ring_len
        if space == 0:
            sj.writer_waits = 1
            rc = pthread_cond_timedwait(&sj.cond, &sj.mtx, &ts)
            sj.writer_waits = 0
            if rc == ETIMEDOUT and sj.ring_len == WINDOW and not sj.consumer_gone:
                pthread_mutex_unlock(&sj.mtx)
                return -1
            continue
        k = n if n < space else space
        wpos = (sj.ring_rd + sj.ring_len) % WINDOW
        first = WINDOW - wpos
        if first > k:
            first = k
        memcpy(sj.ring + wpos, p, first)
        if k > first:
            memcpy(sj.ring, p + first, k - first)
        sj.ring_len += k
        sj.body_bytes += k
        p += k
        n -= k
        if sj.reader_waits:         # only the VFP waits for bytes; nobody else to wake
            pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)
    return 1


cdef void _chan_end(stream_job *sj) noexcept nogil:
    pthread_mutex_lock(&sj.mtx)
    sj.eof = 1
    pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)


cdef void _chan_fail(stream_job *sj, str reason) noexcept:
    """With the GIL: record the failure (the err text is set before the flag, under the lock)."""
    cdef bytes b
    cdef char *e = NULL
    try:
        b = reason.encode("utf-8", "replace")
        e = _dup(b, NULL)
    except BaseException:
        e = NULL            # no memory for the reason: the fetch still fails, without it
    with nogil:
        pthread_mutex_lock(&sj.mtx)
        if not sj.failed and not sj.eof:
            free(sj.f.err)
            sj.f.err = e
            e = NULL
            sj.failed = 1
        pthread_cond_broadcast(&sj.cond)
        pthread_mutex_unlock(&sj.mtx)
    free(e)


cdef int _push_bytes(stream_job *sj, bytes data) except -2:
    cdef const char *p = data
    cdef size_t n = len(data)
    cdef int rc
    if n == 0:
        return 1
    with nogil:
        rc = _chan_push(sj, p, n)
    return rc


cdef class _StreamRef:
    cdef stream_job *sj


cdef object _start_stream(lambda_job *j):
    """A streamed fetch, for a worker of the pool: a generator with no socket work of its own
    (the transport reads the stream itself), run whole (the job is not multiplexed)."""
    cdef _StreamRef ref = _StreamRef.__new__(_StreamRef)
    ref.sj = <stream_job *>j
    return _stream_gen(ref)


def _stream_gen(_StreamRef ref):
    _run_stream(ref.sj)
    yield from ()       # (a generator, the one shape of a job, with nothing to yield)


cdef void _run_stream(stream_job *sj) noexcept:
    """Worker thread, GIL held: the whole streamed invocation of one fetch, then its outcome for
    the fetch (prepared before the end is published: the fetch counts and logs it when it sees
    the end, _stream_commit)."""
    cdef lambda_obj *o = sj.f.obj
    cdef int rc
    with nogil:
        pthread_mutex_lock(&sj.mtx)
        rc = sj.consumer_gone
        pthread_mutex_unlock(&sj.mtx)
    if rc:
        return          # the fetch gave up while this job was queued: nothing was sent
    rc, err, rec = _stream_call(sj)
    try:
        # The outcome as the stream ended, for the fetch to decide and count (_stream_commit):
        # ready before the end is published, never touched after.
        stats_prepare(&sj.f.oc, err, rec, o.vcl_name, o.function_name)
        if rec is None and err is None and sj.f.resp.note != NULL:
            outcome_set(&sj.f.oc, 1, OC_TOO_LARGE, "payload")  # answered 413, not invoked
    except BaseException as e:
        stats_internal(o.vsc, o.vcl_name, "the outcome of a streamed fetch", e)
    if err is not None:
        # The cause, for lambda.error() in vcl_backend_error (read once the failure is published).
        stats_prepare(&sj.f.oc, err, rec, o.vcl_name, o.function_name)
        _chan_fail(sj, str(err))
    elif rc == 1:
        with nogil:
            _chan_end(sj)


cdef object _stream_rec(sf, err):
    """The record of a streamed invocation: the stream's, or the failed start's (or None)."""
    rec = sf.record if sf is not None else None
    return rec if rec is not None or err is None else err.record


cdef tuple _stream_call(stream_job *sj):
    """Invoke and move the stream into the channel: (1, None, record) when all of it went
    through, (0, None, record) when the fetch let go first, (rc, InvokeError, record) on failure;
    the record is None when nothing was sent (close() completes it in the finally clause)."""
    cdef int rc = 0
    cdef Request request = None
    sf = None
    try:
        request = request_view(&sj.f.req)
        sf = _fetch.StreamedFetch(<object>sj.f.obj.invoker, request,
                                  head_deadline=sj.head_deadline)
        r = sf.start()
        response_fill(&sj.f.resp, r, True)      # the body goes through the channel
        with nogil:
            rc = _chan_head(sj)
        if rc == 0:
            return 0, None, _stream_rec(sf, None)
        rc = _push_bytes(sj, r.body)
        if rc == 1:
            for data in sf.body():
                rc = _push_bytes(sj, data)
                if rc != 1:
                    break
                if monotonic_now() > sj.deadline:
                    rc = -1
                    break
        if rc == -1:
            return rc, InvokeError("timeout", f"the response stream took longer than the "
                                   f"timeout ({sj.f.obj.timeout:g}s)"), _stream_rec(sf, None)
        return rc, None, _stream_rec(sf, None)
    except InvokeError as e:
        return rc, e, _stream_rec(sf, e)
    except MemoryError:
        return rc, InvokeError("internal", "out of memory"), _stream_rec(sf, None)
    except BaseException as e:
        try:
            return rc, InvokeError("internal", f"internal error: {type(e).__name__}: {e}"), \
                _stream_rec(sf, None)
        except BaseException:
            return rc, InvokeError("internal", "internal error"), None
    finally:
        if sf is not None:
            try:
                sf.close()
            except BaseException as e:
                stats_internal(sj.f.obj.vsc, sj.f.obj.vcl_name, "closing a response stream", e)
        request_unview(request)


cdef void _stream_commit(busyobj *bo, stream_job *sj, const lambda_outcome *own) noexcept nogil:
    """On the fetch thread, once, when it lets go of the stream: the fetch's one outcome, counted
    and logged (as _fetch_done for buffered fetches). own: the fetch's own outcome (no slot, no
    head in time, a head that does not fit), or NULL to decide here: the worker's, when it
    published the end (eof or a failure) first; a timeout when the VFP gave up on a stall; else
    "abandoned" (Varnish stopped reading the body first, e.g. the pass client left: not a
    failure). After this the worker's end, if it comes, changes nothing."""
    cdef lambda_obj *o = sj.f.obj
    cdef lambda_outcome mine
    cdef const lambda_outcome *oc = own
    cdef char line[LINE_LEN]
    cdef unsigned i
    cdef int delivered = 0
    cdef timespec ts
    memset(&mine, 0, sizeof(mine))
    pthread_mutex_lock(&sj.mtx)
    if sj.committed:
        pthread_mutex_unlock(&sj.mtx)
        return
    sj.committed = 1
    if own == NULL and sj.head_written and (sj.f.resp.status == 204 or sj.f.resp.status == 304):
        # No body for Varnish to read: the stream's end (InvokeComplete) comes right after the
        # head, wait for it rather than call the fetch abandoned.
        to_timespec(sj.deadline, &ts)
        while not sj.eof and not sj.failed:
            if pthread_cond_timedwait(&sj.cond, &sj.mtx, &ts) == ETIMEDOUT:
                break
    if oc == NULL:
        if sj.stalled:
            # First: the worker, told to stop by the stall, may end its invocation with
            # nothing wrong on its side (and its pool marks that end failed)
            outcome_set(&mine, 1, OC_TIMEOUT, "timeout")
        elif (sj.eof or sj.failed) and sj.f.oc.prepared:
            oc = &sj.f.oc
            delivered = sj.eof and sj.head_written
        elif sj.failed:
            outcome_set(&mine, 1, OC_INTERNAL, "internal")
        else:
            outcome_set(&mine, 0, OC_NONE, "abandoned")
    if oc == NULL:
        mine.sent = 1
        mine.time_ms = <uint64_t>((monotonic_now() - sj.start) * 1000.0 + 0.5)
        delivered = not mine.failed and sj.head_written
        oc = &mine
    sj.consumer_gone = 1            # the worker stops at its next step
    pthread_cond_broadcast(&sj.cond)
    pthread_mutex_unlock(&sj.mtx)
    stats_commit(o.vsc, KIND_FETCH, oc)
    if o.vsc != NULL and oc.sent:
        lambda_stat_add(&o.vsc.bereq_hdrbytes, sj.f.req.head_bytes)
        lambda_stat_add(&o.vsc.bereq_bodybytes, sj.f.req.body_len)
        if delivered and not oc.failed:
            lambda_stat_add(&o.vsc.beresp_hdrbytes, sj.f.resp.head_bytes)
            lambda_stat_add(&o.vsc.beresp_bodybytes, sj.pulled)
    outcome_line(line, LINE_LEN, o.vcl_name, o.function_name, KIND_FETCH, oc)
    VSLb(bo.vsl, SLT_VCL_Log, "%s", line)
    for i in range(1, oc.lines.n):
        VSLb(bo.vsl, SLT_VCL_Log, "%s", oc.lines.line[i].p)


cdef const char *_err_text(stream_job *sj) noexcept nogil:
    cdef const char *e = sj.f.err
    if e == NULL:
        e = "the stream failed"
    return e


cdef double _tmo(double v, double fallback) noexcept nogil:
    if isnan(v) or v <= 0.0:
        return fallback
    return v


cdef int _gethdrs_stream(const vrt_ctx *ctx, busyobj *bo, lambda_obj *o) noexcept nogil:
    cdef stream_job *sj
    cdef submit_result rc
    cdef char reason[MSG_LEN]
    cdef timespec ts
    cdef double first_byte, start
    cdef const char *first_byte_name
    cdef lambda_outcome oc
    cdef int ok = 0
    cdef int wfailed = 0
    cdef int w

    sj = <stream_job *>calloc(1, sizeof(stream_job))
    if sj == NULL:
        _fetch_error(bo, o, "out of memory")
        return -1
    sj.ring = <char *>malloc(WINDOW)
    if sj.ring == NULL:
        free(sj)
        _fetch_error(bo, o, "out of memory")
        return -1
    pthread_mutex_init(&sj.mtx, NULL)
    pthread_cond_init(&sj.cond, &STREAM_CONDATTR)
    sj.refs = 1
    sj.f.magic = STREAM_MAGIC
    sj.f.obj = o
    sj.f.base.start = _start_stream
    sj.f.base.mux = 0
    sj.f.base.free_job = _stream_worker_done
    if request_collect(&sj.f.req, bo.bereq) != 0:
        _fetch_error(bo, o, "out of memory")
        _stream_release(sj)
        return -1
    if lambda_bereq_body(bo, _body_cb, &sj.f) != 0:
        _fetch_error(bo, o, "cannot read the request body")
        _stream_release(sj)
        return -1

    # The head within the tighter of first_byte_timeout and timeout (the same rule as buffered
    # fetches, _fetch_limit); the whole stream within timeout.
    first_byte = _fetch_limit(bo, o, &first_byte_name)
    sj.between_bytes = _tmo(lambda_bo_between_bytes_timeout(bo), o.timeout)
    start = monotonic_now()
    sj.start = start
    sj.deadline = start + o.timeout
    sj.head_deadline = start + first_byte + DEADLINE_MARGIN
    sj.refs = 2
    rc = submit_detached(&sj.f.base, &o.lim, start + first_byte)
    if rc != SUBMIT_DONE:
        submit_failure(rc, &oc, reason, MSG_LEN, monotonic_now() - start, first_byte_name,
                       first_byte, &o.lim)
        sj.refs = 1
        _stream_commit(bo, sj, &oc)
        task_note(ctx, &oc)
        _fetch_error(bo, o, reason)
        _stream_release(sj)
        return -1

    to_timespec(start + first_byte, &ts)
    reason[0] = 0
    pthread_mutex_lock(&sj.mtx)
    while not sj.head_ready and not sj.failed:
        w = pthread_cond_timedwait(&sj.cond, &sj.mtx, &ts)
        if w == ETIMEDOUT and not sj.head_ready and not sj.failed:
            break
    if sj.head_ready:
        ok = 1
    elif sj.failed:
        wfailed = 1
        snprintf(reason, MSG_LEN, "%s", _err_text(sj))
        task_note(ctx, &sj.f.oc)    # the worker's, written before it published the failure
    else:
        snprintf(reason, MSG_LEN, "timed out after %.3fs (%s %gs) waiting for the first byte "
                 "of the response stream", monotonic_now() - start, first_byte_name, first_byte)
    pthread_mutex_unlock(&sj.mtx)
    if not ok:
        memset(&oc, 0, sizeof(oc))
        outcome_set(&oc, 1, OC_TIMEOUT, "timeout")
        oc.sent = 1
        oc.time_ms = <uint64_t>((monotonic_now() - start) * 1000.0 + 0.5)
        # A failure the worker published is its outcome (NULL); no head in time is the fetch's.
        _stream_commit(bo, sj, NULL if wfailed else &oc)
        if not wfailed:
            task_note(ctx, &oc)
        _fetch_error(bo, o, reason)
        _stream_leave(sj)
        return -1

    # The head is the fetch's to read: the worker never touches it after publishing it. As for
    # buffered fetches: the whole head fits, or the fetch fails (no header is dropped).
    memset(&oc, 0, sizeof(oc))
    outcome_set(&oc, 1, OC_INVALID, "invalid_response")
    oc.sent = 1
    if _write_head(bo, o, &sj.f.resp, False) != 0:
        oc.time_ms = <uint64_t>((monotonic_now() - start) * 1000.0 + 0.5)
        _stream_commit(bo, sj, &oc)
        task_note(ctx, &oc)
        _stream_leave(sj)
        return -1
    sj.head_written = 1
    if sj.f.resp.status == 204 or sj.f.resp.status == 304:
        w = lambda_beresp_body(bo, 0, &LAMBDA_STREAM_VFP, sj)     # no body; finish() lets go
    else:
        w = lambda_beresp_stream(bo, &LAMBDA_STREAM_VFP, sj)
    if w != 0:
        _fetch_error(bo, o, "out of workspace (workspace_backend) for the response")
        sj.head_written = 0
        oc.time_ms = <uint64_t>((monotonic_now() - start) * 1000.0 + 0.5)
        _stream_commit(bo, sj, &oc)
        _stream_leave(sj)
        return -1
    return 0


cdef vfp_status _vfp_stream_pull(vfp_ctx *vc, vfp_entry *vfe, void *p,
                                 ssize_t *lp) noexcept nogil:
    cdef stream_job *sj = <stream_job *>vfe.priv1
    cdef char msg[MSG_LEN + 128]
    cdef timespec ts
    cdef size_t want, n, first
    cdef int w, done
    if sj == NULL or sj.f.magic != STREAM_MAGIC or lp == NULL or lp[0] <= 0:
        return lambda_vfp_error(vc, "lambda: streaming fetch: invalid state")
    want = <size_t>lp[0]
    lp[0] = 0
    to_timespec(monotonic_now() + sj.between_bytes, &ts)
    pthread_mutex_lock(&sj.mtx)
    while sj.ring_len == 0 and not sj.eof and not sj.failed:
        sj.reader_waits = 1
        w = pthread_cond_timedwait(&sj.cond, &sj.mtx, &ts)
        sj.reader_waits = 0
        if w == ETIMEDOUT and sj.ring_len == 0 and not sj.eof and not sj.failed:
            sj.consumer_gone = 1            # the worker stops at its next step
            sj.stalled = 1                  # the fetch's outcome: a timeout (_stream_commit)
            pthread_cond_broadcast(&sj.cond)
            pthread_mutex_unlock(&sj.mtx)
            snprintf(msg, sizeof(msg), "lambda: %s: the response stream stalled: no bytes for "
                     "%.3gs (between_bytes_timeout) after %zu bytes", sj.f.obj.vcl_name,
                     sj.between_bytes, sj.body_bytes)
            return lambda_vfp_error(vc, msg)
    if sj.ring_len > 0:
        n = sj.ring_len if sj.ring_len < want else want
        first = WINDOW - sj.ring_rd
        if first > n:
            first = n
        memcpy(p, sj.ring + sj.ring_rd, first)
        if n > first:
            memcpy(<char *>p + first, sj.ring, n - first)
        sj.ring_rd = (sj.ring_rd + n) % WINDOW
        sj.ring_len -= n
        sj.pulled += n
        done = sj.ring_len == 0 and sj.eof
        if sj.writer_waits and WINDOW - sj.ring_len >= WINDOW_LOW:
            pthread_cond_broadcast(&sj.cond)
        pthread_mutex_unlock(&sj.mtx)
        lp[0] = <ssize_t>n
        return VFP_END if done else VFP_OK
    if sj.failed:
        snprintf(msg, sizeof(msg), "lambda: %s: %s after %zu bytes of the body",
                 sj.f.obj.vcl_name, _err_text(sj), sj.body_bytes)
        pthread_mutex_unlock(&sj.mtx)
        return lambda_vfp_error(vc, msg)
    pthread_mutex_unlock(&sj.mtx)
    return VFP_END


cdef const vdi_methods *METHODS


cdef void _module_init() noexcept:
    global METHODS
    LAMBDA_VFP.name = "lambda"
    LAMBDA_VFP.pull = _vfp_pull
    LAMBDA_STREAM_VFP.name = "lambda_stream"
    LAMBDA_STREAM_VFP.pull = _vfp_stream_pull
    pthread_condattr_init(&STREAM_CONDATTR)
    pthread_condattr_setclock(&STREAM_CONDATTR, CLOCK_MONOTONIC)
    METHODS = lambda_vdi_methods(_gethdrs, _finish, _healthy, _list, _event)


_module_init()


cdef int director_attach(const vrt_ctx *ctx, lambda_obj *o) except -1:
    """Create the director, and the prober when the object has a probe (with the GIL)."""
    cdef _ProbeReport report
    o.dir = VRT_AddDirector(ctx, METHODS, o, "%s", o.vcl_name)
    if o.dir == NULL:
        raise RuntimeError("VRT_AddDirector failed")
    if o.probe_spec == NULL:
        return 0
    try:
        report = _ProbeReport()
        report.obj = o
        prober = Prober(o.vcl_name.decode("utf-8", "replace"), <object>o.invoker,
                        _probe_spec(o.probe_spec), report, observe=report.observe, slot=report)
    except BaseException as e:
        VRT_DelDirector(&o.dir)
        raise RuntimeError(f"cannot create the probe: {type(e).__name__}: {e}") from None
    Py_INCREF(prober)
    o.prober = <PyObject *>prober
    Py_INCREF(report)
    o.probe_report = <PyObject *>report
    return 0


cdef void director_detach(lambda_obj *o) noexcept:
    """Stop the prober and delete the director (with the GIL, on the CLI thread)."""
    cdef _ProbeReport report
    if o.probe_report != NULL:
        report = <_ProbeReport>o.probe_report
        report.obj = NULL
        Py_XDECREF(o.probe_report)
        o.probe_report = NULL
    if o.prober != NULL:
        try:
            (<object>o.prober).stop()
        except BaseException as e:
            stats_internal(o.vsc, o.vcl_name, "stopping the probe", e)
        Py_XDECREF(o.prober)
        o.prober = NULL
    if o.dir != NULL:
        VRT_DelDirector(&o.dir)
