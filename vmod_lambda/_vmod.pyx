# cython: language_level=3
"""The VMOD implementation: constructors, methods and events of `lambda`, called by the thin C VMOD
through the entry-point table exported as the capsule `vmod_lambda._vmod._ops`.

Functions that run on Varnish worker threads are `noexcept nogil` and touch no Python object: they
copy their input into a job, hand it to the worker pool (_handoff) and wait. Functions that run on
the CLI thread (constructors, destructors) take the GIL. Nothing raised may escape to Varnish.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset, strcmp, strdup, strlen, strncmp
from libc.stdint cimport uint64_t

from vrt cimport vrt_ctx, VRT_CTX_MAGIC, director
from cache cimport WS_Copy, WS_ReserveAll, WS_Release, WS_Reservation, SLT_VCL_Error, SLT_VCL_Log, SLT_Notice
from lambda_compat cimport lambda_log, lambda_fail, VMOD_LAMBDA_BUILD_ID
from vmod_lambda_ops cimport (vmod_lambda_ops, vmod_lambda_backend_args, VMOD_LAMBDA_OPS_MAGIC,
                              VMOD_LAMBDA_OPS_VERSION)
from vmod_lambda._object cimport lambda_obj, OBJ_MAGIC
from posix_thread cimport pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock
from vmod_lambda._director cimport director_attach, director_detach
from posix_thread cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                           pthread_mutex_unlock)
from vmod_lambda._throttle cimport (throttle_attach, throttle_detach, throttle_held,
                                   throttle_reason, throttle_refused)
from vmod_lambda._response cimport lambda_lines, lines_clear
from vmod_lambda._stats cimport (lambda_stat_add, stats_acquire, stats_release, stats_internal,
                                 KIND_INVOKE, KIND_ASYNC, lambda_outcome, stats_prepare,
                                 stats_commit, outcome_set, outcome_clear, outcome_line,
                                 OC_TIMEOUT, OC_BUSY, OC_INVALID, OC_TOO_LARGE, OC_INTERNAL,
                                 task_note, task_error, task_retry_after,
                                 OC_THROTTLED)
from vmod_lambda._request cimport http_header_dup
from posix_thread cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                           pthread_mutex_unlock)
from cache cimport http, SLT_Error
from vmod_lambda._handoff cimport (lambda_job, job_start_fn, job_free_fn, lambda_limiter,
                                   limiter_init, limiter_retire,
                                   limiter_destroy, submit_wait, submit_result, submit_failure, monotonic_now,
                                   pool_resize, pool_status, count_fds, SUBMIT_DONE, SUBMIT_BUSY, SUBMIT_TIMEOUT,
                                   SUBMIT_ABANDONED)

from vmod_lambda.config import ConfigError, validate_backend
import os

from vmod_lambda.invoker import Hooks, InvokeError, Invoker
from vmod_lambda.trace import trace_header as _trace_header
from vmod_lambda._handoff import _blocking_begin, _blocking_end

# What the transports need from the worker pool (_handoff.pyx), handed to each object's Invoker.
_WORKER_HOOKS = Hooks(_blocking_begin, _blocking_end)

from vmod_lambda import limits as _limits
from vmod_lambda import outcomes as _outcomes

cdef enum:
    MSG_LEN = 1024
    LINE_LEN = 2048

# Lambda's payload limits (limits.py): a larger payload is refused before anything is sent, with
# the message of outcomes.payload_too_large(). Set once below (no initializers on C globals).
cdef size_t MAX_PAYLOAD
cdef size_t MAX_ASYNC_PAYLOAD
cdef const char *SYNC_TOO_LARGE
cdef const char *ASYNC_TOO_LARGE
_KEEP = [_outcomes.SYNC_TOO_LARGE.encode(), _outcomes.ASYNC_TOO_LARGE.encode()]
MAX_PAYLOAD = _limits.MAX_PAYLOAD
MAX_ASYNC_PAYLOAD = _limits.MAX_ASYNC_PAYLOAD
SYNC_TOO_LARGE = _KEEP[0]
ASYNC_TOO_LARGE = _KEEP[1]

# How long past its timeout a Varnish thread waits for the worker (vmod_lambda.vcc, "Timeouts"): the
# call's deadline is timeout + DEADLINE_MARGIN from its start, for the caller and for the transport
# alike (_handoff.pyx, lambda_job.deadline).
cdef double DEADLINE_MARGIN
cdef const char *EMPTY = ""
# A job that ended neither ok nor with a reason: a bug caught by the worker (logged there as an
# internal error), or no memory left for the reason.
cdef const char *NO_RESULT = "internal error: the invocation ended without a result or a reason"
DEADLINE_MARGIN = 0.1


# The jobs of calls from VCL. invoke() and invoke_async() each have a job type of their own
# (invoke_job, async_job) on one shared base (call_job); what differs between them is fixed per type
# in its call_type, which the job points to: how it starts on the worker (its generator), its
# payload limit, its counters and log word, and what it gives back to VCL. Nothing along the way
# asks which kind a job is.
cdef struct call_job

ctypedef const char *(*call_result_fn)(const vrt_ctx *ctx, call_job *job,
                                       char *reason) noexcept nogil

cdef struct call_type:
    int kind                    # KIND_INVOKE | KIND_ASYNC: its counters and log word
    size_t size                 # sizeof its job struct
    size_t max_payload          # Lambda's payload limit for it (limits.py)
    const char *too_large       # the message when the payload is larger (outcomes.py)
    job_start_fn start          # the job on the worker (lambda_job.start)
    job_free_fn free_job        # (lambda_job.free_job)
    call_result_fn result       # the result for VCL once done and ok (NULL, reason: failed)

cdef struct call_job:
    lambda_job base             # first, see lambda_limiter above
    const call_type *type
    lambda_obj *obj
    char *payload
    size_t payload_len
    char *qualifier             # NULL: the object's
    int ok
    char *err                   # reason when not ok
    lambda_outcome oc           # the outcome as the worker saw it, for the caller to decide
    char *trace_amzn            # the task's X-Amzn-Trace-Id and traceparent (NULL: none, or
    char *traceparent           # the object's trace is off)
    char *tenant_id             # X-Amz-Tenant-Id (NULL: none)

cdef struct invoke_job:         # invoke() (and selftest()): RequestResponse, the payload back
    call_job c
    char *out                   # NUL-terminated response payload when ok
    size_t out_len

cdef struct async_job:          # invoke_async(): Event, queued by Lambda (202), nothing back
    call_job c


cdef char *_cstr(str s) noexcept:
    """A malloc'd UTF-8 copy of s (NULL when out of memory)."""
    cdef bytes b = s.encode("utf-8", "replace")
    cdef char *p = <char *>malloc(len(b) + 1)
    if p != NULL:
        memcpy(p, <const char *>b, len(b))
        p[len(b)] = 0
    return p


cdef str _pystr(const char *s):
    return None if s == NULL else s.decode("utf-8", "replace")


def _log_error(str line):
    """An Error record outside any transaction (Invoker.warn_once: once per object)."""
    cdef bytes b = line.encode("utf-8", "replace")
    lambda_log(NULL, SLT_Error, b)


cdef void _fail_msg(const vrt_ctx *ctx, str msg) noexcept:
    cdef bytes b
    try:
        b = msg.encode("utf-8", "replace")
        lambda_fail(ctx, b)
    except BaseException:
        lambda_fail(ctx, "lambda: internal error while reporting an error")


# ---------------------------------------------------------------------------------------------------
# Objects

# The live objects, newest first, for lambda.status(): under OBJECTS_MTX (no initializers on C
# globals, see DESIGN: set in _fill_ops()).
cdef lambda_obj *OBJECTS
cdef pthread_mutex_t OBJECTS_MTX


cdef void _obj_register(lambda_obj *o) noexcept nogil:
    global OBJECTS
    pthread_mutex_lock(&OBJECTS_MTX)
    o.status_next = OBJECTS
    OBJECTS = o
    pthread_mutex_unlock(&OBJECTS_MTX)


cdef void _obj_unregister(lambda_obj *o) noexcept nogil:
    cdef lambda_obj **pp
    pthread_mutex_lock(&OBJECTS_MTX)
    pp = &OBJECTS
    while pp[0] != NULL and pp[0] != o:
        pp = &pp[0].status_next
    if pp[0] != NULL:
        pp[0] = o.status_next
    o.status_next = NULL
    pthread_mutex_unlock(&OBJECTS_MTX)


cdef void _obj_free(lambda_obj *o) noexcept:
    """Release an object (with the GIL): its Python client, its strings, its limiter."""
    throttle_detach(o)
    Py_XDECREF(o.invoker)
    o.invoker = NULL
    if o.vsc != NULL:
        o.vsc = NULL
        o.lim.st_queued = o.lim.st_inflight = o.lim.st_wait_us = o.lim.st_late = NULL
        stats_release(_pystr(o.vcl_name))
    limiter_destroy(&o.lim)
    free(o.vcl_name)
    free(o.function_name)
    free(o.region)
    o.magic = 0
    free(o)


cdef void _obj_idle(lambda_limiter *lim) noexcept:
    # The last abandoned job of a discarded object is done (worker thread, GIL held).
    _obj_free(<lambda_obj *>lim)


cdef void *ops_backend_init(const vrt_ctx *ctx, const char *vcl_name,
                            const vmod_lambda_backend_args *a) noexcept with gil:
    cdef lambda_obj *o = NULL
    cdef int rc
    name = _pystr(vcl_name) or "?"
    try:
        cfg = validate_backend(
            name, _pystr(a.function_name), _pystr(a.region), _pystr(a.endpoint_url),
            a.timeout if a.has_timeout else None, _pystr(a.response_format),
            a.pool_size if a.has_pool_size else None, _pystr(a.event_format),
            bool(a.multi_value), _pystr(a.transport), bool(a.log_tail), bool(a.streaming),
            _pystr(a.qualifier), _pystr(a.client_context),
            _pystr(a.role_arn), _pystr(a.role_session_name), _pystr(a.external_id),
            _pystr(a.sts_endpoint_url), _pystr(a.profile), bool(a.trace),
            _pystr(a.tenant_header), throttle_hold=a.throttle_hold,
            max_queue_wait=a.max_queue_wait if a.has_max_queue_wait else None)
    except ConfigError as e:
        _fail_msg(ctx, str(e))
        return NULL
    except BaseException as e:
        _fail_msg(ctx, f"lambda.backend(): {name}: internal error: {type(e).__name__}: {e}")
        return NULL
    try:
        inv = Invoker(cfg, _WORKER_HOOKS)
    except BaseException as e:
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot create the Lambda client: "
                       f"{type(e).__name__}: {e}")
        return NULL
    inv.log = _log_error
    if inv.anonymous:
        # Once per object, here: its invocations (probes included) then go out without a word.
        lambda_log(ctx, SLT_Notice, f"lambda: {name}: no AWS credentials found; endpoint_url is "
                   "set, so requests are signed with empty credentials".encode("utf-8", "replace"))

    o = <lambda_obj *>calloc(1, sizeof(lambda_obj))
    if o == NULL:
        _fail_msg(ctx, f"lambda.backend(): {name}: out of memory")
        return NULL
    o.magic = OBJ_MAGIC
    o.vcl_name = _cstr(name)
    o.function_name = _cstr(cfg.function_name)
    o.region = _cstr(cfg.region)
    o.timeout = cfg.timeout
    o.pool_size = cfg.pool_size
    o.streaming = cfg.streaming
    o.trace = cfg.trace
    _settings_set(<size_t>o, name, cfg)
    o.mux = inv.multiplexed
    # Payload format 1.0 ("1.0-compat", the default, or "1.0"): common requests mapped in C on the
    # fetch thread (_fastevent.pyx), unless VMOD_LAMBDA_FAST_EVENT=0 (FAST_EVENT below).
    o.fast_event = {"1.0": 1, "1.0-compat": 2}.get(cfg.event_format, 0) if FAST_EVENT else 0
    # response_format "json": the common answer mapped in C, its body decoded straight into
    # Varnish's storage (_fastresponse.pyx), unless VMOD_LAMBDA_FAST_RESPONSE=0.
    o.fast_response = FAST_RESPONSE and cfg.response_format == "json" and not cfg.streaming
    o.probe_spec = a.probe
    o.probe_healthy = 1
    o.throttle_hold = cfg.throttle_hold
    o.max_queue_wait = cfg.max_queue_wait if cfg.max_queue_wait is not None else -1.0
    rc = limiter_init(&o.lim, cfg.pool_size)
    if rc != 0:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot create the object's condition "
                       f"variable: {os.strerror(rc)}")
        return NULL
    if o.vcl_name == NULL or o.function_name == NULL or o.region == NULL:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: out of memory")
        return NULL
    o.lim.on_idle = _obj_idle
    o.lim.max_wait = o.max_queue_wait
    try:
        o.vsc = stats_acquire(name)
    except BaseException as e:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot create the counters: {e}")
        return NULL
    o.lim.st_queued = &o.vsc.queued
    o.lim.st_inflight = &o.vsc.inflight
    o.lim.st_wait_us = &o.vsc.queue_wait_us
    o.lim.st_late = &o.vsc.late
    Py_INCREF(inv)
    o.invoker = <PyObject *>inv
    try:
        throttle_attach(o)
    except BaseException as e:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot set up the throttle hold: {e}")
        return NULL
    try:
        director_attach(ctx, o)
    except BaseException as e:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot create the backend: {e}")
        return NULL
    try:
        pool_resize(cfg.pool_size)
    except BaseException as e:
        _obj_free(o)
        _fail_msg(ctx, f"lambda.backend(): {name}: cannot start worker threads: {e}")
        return NULL
    _obj_register(o)
    return o


cdef void ops_backend_fini(void *p) noexcept with gil:
    cdef lambda_obj *o = <lambda_obj *>p
    if o == NULL or o.magic != OBJ_MAGIC:
        return
    pool_size = o.pool_size
    _settings_set(<size_t>o, None, None)
    _obj_unregister(o)
    director_detach(o)
    if limiter_retire(&o.lim):
        _obj_free(o)
    # else: a worker still runs an abandoned job of this object; _obj_idle frees it afterwards.
    try:
        pool_resize(-pool_size)
    except BaseException:
        pass    # nothing to report to: __fini has no ctx; the pool shrinks on the next resize


cdef const char *ops_backend_get_function_name(const vrt_ctx *ctx, void *p) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>p
    return o.function_name if o != NULL and o.magic == OBJ_MAGIC else NULL


cdef const director *ops_backend_backend(const vrt_ctx *ctx, void *p) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>p
    return o.dir if o != NULL and o.magic == OBJ_MAGIC else NULL


cdef const char *ops_backend_get_region(const vrt_ctx *ctx, void *p) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>p
    return o.region if o != NULL and o.magic == OBJ_MAGIC else NULL



# ---------------------------------------------------------------------------------------------------
# invoke()

cdef void _call_job_clear(call_job *job) noexcept nogil:
    free(job.payload)
    free(job.qualifier)
    free(job.trace_amzn)
    free(job.traceparent)
    free(job.tenant_id)
    outcome_clear(&job.oc)
    free(job.err)


cdef void _invoke_job_free(lambda_job *j) noexcept nogil:
    cdef invoke_job *job = <invoke_job *>j
    _call_job_clear(&job.c)
    free(job.out)
    free(job)


cdef void _async_job_free(lambda_job *j) noexcept nogil:
    _call_job_clear(<call_job *>j)
    free(j)


cdef void _job_error(call_job *job, str reason) noexcept:
    job.ok = 0
    free(job.err)
    job.err = _cstr(reason)


cdef class _CallRef:
    cdef call_job *job


cdef object _start_invoke(lambda_job *j):
    """The invocation of one invoke() (_invoke_call), for a worker of the pool."""
    cdef _CallRef ref = _CallRef.__new__(_CallRef)
    ref.job = <call_job *>j
    return _call_gen(ref, _invoke_call)


cdef object _start_async(lambda_job *j):
    """The invocation of one invoke_async() (_async_call), for a worker of the pool."""
    cdef _CallRef ref = _CallRef.__new__(_CallRef)
    ref.job = <call_job *>j
    return _call_gen(ref, _async_call)


def _call_gen(_CallRef ref, call):
    """Invoke (call: _invoke_call or _async_call), then the outcome as it ended, for the caller to
    decide and count (_run_call_job). Never raises."""
    cdef call_job *job = ref.job
    err, rec = yield from call(ref)
    try:
        stats_prepare(&job.oc, err, rec, job.obj.vcl_name, job.obj.function_name)
    except BaseException as e:
        stats_internal(job.obj.vsc, job.obj.vcl_name, "counting an invocation", e)


def _send(_CallRef ref, str invocation_type):
    """The invocation of a call job, its InvokeResult (raises InvokeError)."""
    cdef call_job *job = ref.job
    inv = <object>job.obj.invoker
    trace_id = None
    if job.trace_amzn != NULL or job.traceparent != NULL:
        trace_id, problem = _trace_header(_pystr(job.trace_amzn), _pystr(job.traceparent))
        if problem is not None:
            inv.warn_once("trace", f"trace: {problem}")
    return (yield from inv.invoke_gen(
        PyBytes_FromStringAndSize(job.payload, job.payload_len), invocation_type,
        _pystr(job.qualifier), deadline=job.base.deadline, trace_id=trace_id,
        tenant_id=_pystr(job.tenant_id)))


cdef tuple _call_failed(call_job *job, object e, object rec):
    """A call that raised e: its reason stored; (the InvokeError, the invocation's record or None
    when nothing was sent)."""
    try:
        if isinstance(e, InvokeError):
            _job_error(job, str(e))
            return e, (rec if rec is not None else e.record)
        if isinstance(e, MemoryError):
            _job_error(job, "out of memory")
            return InvokeError("internal", "out of memory"), rec
        _job_error(job, f"internal error: {type(e).__name__}: {e}")
        return InvokeError("internal", str(e)), rec
    except BaseException:
        return None, rec    # no memory left even for the reason: the call fails without one


def _invoke_call(_CallRef ref):
    """invoke(): invoke and store the payload or the reason; returns (the InvokeError or None
    when ok, the invocation's record or None when nothing was sent)."""
    cdef invoke_job *job = <invoke_job *>ref.job
    cdef bytes data
    rec = None
    try:
        res = yield from _send(ref, "RequestResponse")
        rec = res.record
        data = res.payload
        if b"\0" in data:
            raise InvokeError("payload", f"the response payload contains a NUL byte (offset "
                                         f"{data.index(0)}), which VCL strings cannot hold",
                              rec.request_id)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvokeError("payload", f"the response payload is not UTF-8 text (byte "
                                         f"0x{data[e.start]:02x} at offset {e.start})",
                              rec.request_id) from None
        job.out = <char *>malloc(len(data) + 1)
        if job.out == NULL:
            raise MemoryError()
        memcpy(job.out, <const char *>data, len(data))
        job.out[len(data)] = 0
        job.out_len = len(data)
        job.c.ok = 1
        return None, rec
    except BaseException as e:
        return _call_failed(ref.job, e, rec)


def _async_call(_CallRef ref):
    """invoke_async(): invoke with InvocationType Event; Lambda must have queued it (202).
    Returns as _invoke_call does."""
    rec = None
    try:
        res = yield from _send(ref, "Event")
        rec = res.record
        if res.status != 202:
            raise InvokeError("service", f"Lambda answered HTTP {res.status} instead of 202 "
                              "Accepted", rec.request_id, res.status)
        ref.job.ok = 1
        return None, rec
    except BaseException as e:
        return _call_failed(ref.job, e, rec)


cdef const char *_ws_copy(const vrt_ctx *ctx, const char *src, size_t n) noexcept nogil:
    """src copied into the task's workspace, or NULL when it does not fit; unlike WS_Copy, a
    copy that does not fit does not mark the workspace overflowed (which would fail the whole
    request, where invoke() returns its fallback)."""
    cdef unsigned room = WS_ReserveAll(ctx.ws)
    cdef char *p
    if room < n:
        WS_Release(ctx.ws, 0)
        return NULL
    p = <char *>WS_Reservation(ctx.ws)
    memcpy(p, src, n)
    WS_Release(ctx.ws, <unsigned>n)
    return p


cdef void _invoke_done(const vrt_ctx *ctx, lambda_obj *o, int kind,
                       const lambda_outcome *oc) noexcept nogil:
    """On the VCL thread, once it applied the result: the call's one outcome, counted and logged,
    and the task's last (lambda.error())."""
    cdef char line[LINE_LEN]
    cdef unsigned i
    stats_commit(o.vsc, kind, oc)
    task_note(ctx, oc)
    outcome_line(line, LINE_LEN, o.vcl_name, o.function_name, kind, oc)
    lambda_log(ctx, SLT_VCL_Log, line)
    for i in range(1, oc.lines.n):
        lambda_log(ctx, SLT_VCL_Log, oc.lines.line[i].p)


cdef const char *_invoke_result(const vrt_ctx *ctx, call_job *j, char *reason) noexcept nogil:
    """invoke()'s result: its payload copied to the workspace (NULL with reason: no room)."""
    cdef invoke_job *job = <invoke_job *>j
    cdef const char *r = _ws_copy(ctx, job.out, job.out_len + 1)
    if r == NULL:
        snprintf(reason, MSG_LEN, "the response payload of %zu bytes does not fit in "
                 "the workspace", job.out_len)
        outcome_set(&j.oc, 1, OC_INVALID, "payload")
    return r


cdef const char *_async_result(const vrt_ctx *ctx, call_job *j, char *reason) noexcept nogil:
    """invoke_async()'s result: nothing but success."""
    return EMPTY


cdef const char *_run_call_job(const vrt_ctx *ctx, call_job *job, lambda_limiter *lim,
                               double timeout, const char *payload, char *reason) noexcept nogil:
    """Hand job to the pool with payload as its input and wait; its result (job.type.result),
    or NULL with reason filled (MSG_LEN bytes). Frees job, or leaves it to the worker.
    A call of an object (job.obj) is counted and logged here, once its result is applied."""
    cdef const char *r = NULL
    cdef size_t n = strlen(payload)
    cdef submit_result rc
    cdef lambda_obj *o = job.obj
    cdef const call_type *t = job.type
    cdef int kind = t.kind
    cdef lambda_outcome oc
    cdef double start, waited
    reason[0] = 0
    memset(&oc, 0, sizeof(oc))
    if n > t.max_payload:
        snprintf(reason, MSG_LEN, "payload of %zu bytes %s", n, t.too_large)
        if o != NULL:
            outcome_set(&oc, 1, OC_TOO_LARGE, "payload")
            _invoke_done(ctx, o, kind, &oc)
        t.free_job(&job.base)
        return NULL
    job.payload = <char *>malloc(n + 1)
    if job.payload == NULL:
        snprintf(reason, MSG_LEN, "out of memory")
        t.free_job(&job.base)
        return NULL
    memcpy(job.payload, payload, n)
    job.payload_len = n
    start = monotonic_now()
    job.base.send_by = start + timeout
    rc = submit_wait(&job.base, lim, start + timeout + DEADLINE_MARGIN)
    waited = monotonic_now() - start
    if rc == SUBMIT_DONE:
        if job.ok:
            r = t.result(ctx, job, reason)
        else:
            if job.err != NULL:
                snprintf(reason, MSG_LEN, "%s", job.err)
            else:
                snprintf(reason, MSG_LEN, "%s", NO_RESULT)
        if o != NULL:
            _invoke_done(ctx, o, kind, &job.oc)
        t.free_job(&job.base)
        return r
    submit_failure(rc, &oc, reason, MSG_LEN, waited, "timeout", timeout, lim)
    if rc == SUBMIT_ABANDONED:
        job = NULL      # the worker still runs it, drops its answer and frees it
    if o != NULL:
        _invoke_done(ctx, o, kind, &oc)
    if job != NULL:
        t.free_job(&job.base)
    return r


cdef call_job *_call_job_new(const call_type *t) noexcept nogil:
    """A new job of type t (NULL: no memory)."""
    cdef call_job *job = <call_job *>calloc(1, t.size)
    if job != NULL:
        job.type = t
        job.base.start = t.start
        job.base.free_job = t.free_job
    return job


cdef int _qualifier_ok(const char *q) noexcept nogil:
    """A version, $LATEST or an alias name (1-128 of [A-Za-z0-9_-]), as the Invoke API wants."""
    cdef size_t i, n = strlen(q)
    cdef char c
    if n == 7 and strncmp(q, "$LATEST", 7) == 0:
        return 1
    if n == 0 or n > 128:
        return 0
    for i in range(n):
        c = q[i]
        if not ((c >= c'a' and c <= c'z') or (c >= c'A' and c <= c'Z') or
                (c >= c'0' and c <= c'9') or c == c'-' or c == c'_'):
            return 0
    return 1


cdef const char *_invoke(const vrt_ctx *ctx, lambda_obj *o, const char *payload,
                         const char *qualifier, const call_type *t, char *reason,
                         const char *tenant_id) noexcept nogil:
    """One invocation from VCL, a job of type t: the result (EMPTY for async), or NULL with
    reason filled."""
    cdef call_job *job
    cdef const http *hp
    cdef lambda_outcome oc
    cdef double left
    reason[0] = 0
    if qualifier != NULL and not _qualifier_ok(qualifier):
        snprintf(reason, MSG_LEN, "qualifier \"%.128s\" is not a version, $LATEST or an alias "
                 "name; not sent", qualifier)
        return NULL
    if throttle_held(o, &left):
        # Holding off after a 429 (_throttle.pyx): fail at once, send nothing.
        memset(&oc, 0, sizeof(oc))
        outcome_set(&oc, 1, OC_THROTTLED, "throttled")
        oc.retry_after = left       # lambda.retry_after(): what is left of the hold
        throttle_refused(o)
        _invoke_done(ctx, o, t.kind, &oc)
        throttle_reason(o, left, reason, MSG_LEN)
        return NULL
    job = _call_job_new(t)
    if job == NULL:
        snprintf(reason, MSG_LEN, "out of memory")
        return NULL
    job.obj = o
    job.base.mux = o.mux
    if qualifier != NULL:
        job.qualifier = strdup(qualifier)
        if job.qualifier == NULL:
            snprintf(reason, MSG_LEN, "out of memory")
            t.free_job(&job.base)
            return NULL
    if tenant_id != NULL:
        job.tenant_id = strdup(tenant_id)     # checked on the worker (trace.tenant_problem)
        if job.tenant_id == NULL:
            snprintf(reason, MSG_LEN, "out of memory")
            t.free_job(&job.base)
            return NULL
    if o.trace:
        # The trace headers of the task's request: bereq in backend subroutines, req in client
        # ones, none in vcl_init (trace.py makes the X-Amzn-Trace-Id on the worker).
        hp = <const http *>(ctx.http_bereq if ctx.http_bereq != NULL else ctx.http_req)
        job.trace_amzn = http_header_dup(hp, "x-amzn-trace-id", 15)
        if job.trace_amzn == NULL:
            job.traceparent = http_header_dup(hp, "traceparent", 11)
    return _run_call_job(ctx, job, &o.lim, o.timeout, payload if payload != NULL else EMPTY,
                         reason)


cdef const char *ops_backend_invoke(const vrt_ctx *ctx, void *p, const char *payload,
                                    const char *fallback, const char *qualifier,
                                    const char *tenant_id) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>p
    cdef char reason[MSG_LEN]
    cdef char msg[MSG_LEN + 128]
    cdef const char *r

    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC:
        return NULL
    if o == NULL or o.magic != OBJ_MAGIC:
        lambda_fail(ctx, "lambda: invoke: called on an object that does not exist")
        return NULL
    r = _invoke(ctx, o, payload, qualifier, &INVOKE_TYPE, reason, tenant_id)
    if r != NULL:
        return r
    snprintf(msg, sizeof(msg), "lambda: %s: invoke: %s", o.vcl_name, reason)
    if fallback != NULL:
        lambda_log(ctx, SLT_VCL_Error, msg)
        return fallback
    lambda_fail(ctx, msg)
    return NULL


cdef int ops_backend_invoke_async(const vrt_ctx *ctx, void *p, const char *payload,
                                  const char *qualifier, const char *tenant_id) noexcept nogil:
    cdef lambda_obj *o = <lambda_obj *>p
    cdef char reason[MSG_LEN]
    cdef char msg[MSG_LEN + 128]

    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC:
        return 0
    if o == NULL or o.magic != OBJ_MAGIC:
        lambda_log(ctx, SLT_VCL_Error, "lambda: invoke_async: called on an object that does not exist")
        return 0
    if _invoke(ctx, o, payload, qualifier, &ASYNC_TYPE, reason, tenant_id) != NULL:
        return 1
    snprintf(msg, sizeof(msg), "lambda: %s: invoke_async: %s", o.vcl_name, reason)
    lambda_log(ctx, SLT_VCL_Error, msg)
    return 0


# ---------------------------------------------------------------------------------------------------
# lambda.selftest() and lambda.status(): diagnostics of the Python side

cdef lambda_limiter SELFTEST_LIM
cdef double SELFTEST_TIMEOUT
SELFTEST_TIMEOUT = 30.0


cdef object _start_selftest(lambda_job *j):
    """lambda.selftest(), for a worker of the pool: a generator with no socket work, run whole."""
    cdef _CallRef ref = _CallRef.__new__(_CallRef)
    ref.job = <call_job *>j
    return _selftest_gen(ref)


def _selftest_gen(_CallRef ref):
    _run_selftest(<invoke_job *>ref.job)
    yield from ()       # (a generator, the one shape of a job, with nothing to yield)


cdef void _run_selftest(invoke_job *job) noexcept:
    cdef bytes data
    try:
        from vmod_lambda import selftest
        data = selftest.run().encode("utf-8", "replace").replace(b"\0", b" ")
        job.out = <char *>malloc(len(data) + 1)
        if job.out == NULL:
            raise MemoryError()
        memcpy(job.out, <const char *>data, len(data))
        job.out[len(data)] = 0
        job.out_len = len(data)
        job.c.ok = 1
    except BaseException as e:
        try:
            _job_error(&job.c, f"internal error: {type(e).__name__}: {e}")
        except BaseException:
            pass            # no memory left even for the reason: selftest() fails without one


cdef const char *ops_selftest(const vrt_ctx *ctx) noexcept nogil:
    cdef call_job *job
    cdef char reason[MSG_LEN]
    cdef char msg[MSG_LEN + 128]
    cdef const char *r = NULL
    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC:
        return NULL
    job = _call_job_new(&SELFTEST_TYPE)
    if job == NULL:
        snprintf(reason, MSG_LEN, "out of memory")
    else:
        job.base.mux = 0
        r = _run_call_job(ctx, job, &SELFTEST_LIM, SELFTEST_TIMEOUT, "", reason)
    if r != NULL:
        return r
    # The checks could not run: that is the report (a FAIL line, as for a check that failed), and
    # a VCL_Error record; the VCL goes on. Only a report that does not fit the workspace fails it.
    if strcmp(reason, "the worker pool is not running") == 0:
        snprintf(reason, MSG_LEN, "the worker pool is not running: no lambda.backend object is "
                 "loaded, and the checks run on its threads")
    snprintf(msg, sizeof(msg), "lambda: selftest: %s", reason)
    lambda_log(ctx, SLT_VCL_Error, msg)
    snprintf(msg, sizeof(msg), "FAIL selftest: %s", reason)
    r = <const char *>WS_Copy(ctx.ws, msg, -1)
    if r == NULL:
        snprintf(msg, sizeof(msg), "lambda: selftest: %s (and no workspace for the report)", reason)
        lambda_fail(ctx, msg)
    return r


# The job types (call_type), set once: no initializers on C globals.
cdef call_type INVOKE_TYPE
cdef call_type ASYNC_TYPE
cdef call_type SELFTEST_TYPE
INVOKE_TYPE.kind = KIND_INVOKE
INVOKE_TYPE.size = sizeof(invoke_job)
INVOKE_TYPE.max_payload = MAX_PAYLOAD
INVOKE_TYPE.too_large = SYNC_TOO_LARGE
INVOKE_TYPE.start = _start_invoke
INVOKE_TYPE.free_job = _invoke_job_free
INVOKE_TYPE.result = _invoke_result
ASYNC_TYPE.kind = KIND_ASYNC
ASYNC_TYPE.size = sizeof(async_job)
ASYNC_TYPE.max_payload = MAX_ASYNC_PAYLOAD
ASYNC_TYPE.too_large = ASYNC_TOO_LARGE
ASYNC_TYPE.start = _start_async
ASYNC_TYPE.free_job = _async_job_free
ASYNC_TYPE.result = _async_result
SELFTEST_TYPE = INVOKE_TYPE         # the checks' report comes back as invoke()'s payload does
SELFTEST_TYPE.start = _start_selftest


# The environment knobs (vmod_lambda.vcc, ENVIRONMENT), read once when the implementation is
# imported, as the shim and the loader read theirs once when Python starts: varnishd's environment
# does not change while its child runs. lambda.status() shows each one in force (KNOBS).

def _loader():
    """The python loader the shim opened (VMOD_LAMBDA_LOADER, or the allocator varnishd uses)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                i = line.find("libvmod_lambda_loader_")
                if i >= 0:
                    return line[i + 22:].split(".so")[0]
    except OSError:
        pass            # no /proc: say so below rather than guess
    return "unknown"


def _knobs():
    import sys
    from vmod_lambda.selftest import bigalloc
    env = os.environ
    return (f"fast_event={'on' if FAST_EVENT else 'off'} "
            f"fast_response={'on' if FAST_RESPONSE else 'off'} loader={_loader()} "
            f"deepbind={'off' if 'VMOD_LAMBDA_NO_DEEPBIND' in env else 'on'} "
            f"bigalloc={bigalloc()} home={sys.prefix}")


cdef bint FAST_EVENT, FAST_RESPONSE
cdef const char *KNOBS
FAST_EVENT = os.environ.get("VMOD_LAMBDA_FAST_EVENT") != "0"
FAST_RESPONSE = os.environ.get("VMOD_LAMBDA_FAST_RESPONSE") != "0"
_KEEP.append(_knobs().encode("utf-8", "replace"))
KNOBS = _KEEP[2]


# The credential sets the live objects sign with (clients.in_use(): never a secret), for
# lambda.status(): rewritten by clients.py whenever the set changes (with the GIL), read without it.
cdef pthread_mutex_t CREDS_MTX
cdef char CREDS[MSG_LEN]
pthread_mutex_init(&CREDS_MTX, NULL)
CREDS[0] = 0


def _creds_changed():
    from vmod_lambda import clients
    cdef bytes b = ("credentials=" + clients.in_use()).encode("utf-8", "replace")
    cdef size_t n
    cdef const char *p
    if len(b) >= MSG_LEN:
        b = b[:MSG_LEN - 4] + b"..."
    n = len(b)
    p = b
    with nogil:
        pthread_mutex_lock(&CREDS_MTX)
        memcpy(CREDS, p, n)
        CREDS[n] = 0
        pthread_mutex_unlock(&CREDS_MTX)


def _listen_creds():
    from vmod_lambda import clients
    clients.listeners.append(_creds_changed)
    _creds_changed()


_listen_creds()


# The live objects' settings that status() shows (trace off, tenant_header), as one line kept up to
# date by the constructor and the destructor (CLI thread, GIL held) and read by status() under
# SETTINGS_MTX. Objects with the defaults are not listed.
cdef enum:
    SETTINGS_LEN = 1024
cdef pthread_mutex_t SETTINGS_MTX
cdef char SETTINGS[SETTINGS_LEN]
_SETTINGS = {}          # object address -> (name, its words)
pthread_mutex_init(&SETTINGS_MTX, NULL)
SETTINGS[0] = 0


cdef void _settings_set(size_t key, str name, cfg) noexcept:
    """Note (or, name None: forget) the settings of the object at key and rebuild the line:
    ` trace=off:<names>` and ` tenant_header=<name>:<header>,...` (cut at SETTINGS_LEN)."""
    cdef bytes b
    try:
        if name is None:
            _SETTINGS.pop(key, None)
        else:
            _SETTINGS[key] = (name, cfg.trace, cfg.tenant_header)
        items = sorted(_SETTINGS.values())
        off = ",".join(n for n, t, _ in items if not t)
        tenants = ",".join(f"{n}:{h}" for n, _, h in items if h)
        line = (f" trace=off:{off}" if off else "") + \
               (f" tenant_header={tenants}" if tenants else "")
        b = line.encode("utf-8", "replace")[:SETTINGS_LEN - 4]
        if len(b) == SETTINGS_LEN - 4:
            b += b"..."
        with nogil:
            pthread_mutex_lock(&SETTINGS_MTX)
        memcpy(SETTINGS, <const char *>b, len(b))
        SETTINGS[len(b)] = 0
        pthread_mutex_unlock(&SETTINGS_MTX)
    except BaseException as e:
        stats_internal(NULL, NULL, "the settings line of lambda.status()", e)


cdef enum:
    STATUS_MAX = 4096


cdef const char *ops_status(const vrt_ctx *ctx) noexcept nogil:
    cdef char buf[3 * MSG_LEN + SETTINGS_LEN]
    cdef int threads, wanted, queued, k
    cdef unsigned room, n
    cdef char *p
    cdef lambda_obj *o
    cdef double left
    pool_status(&threads, &wanted, &queued)
    snprintf(buf, sizeof(buf), "threads=%d wanted=%d queued=%d fds=%d %s", threads, wanted, queued,
             count_fds(), KNOBS)
    # Then each live object's throttling settings, and the hold it is in, if any (newest first;
    # cut with "..." at STATUS_MAX bytes, or where the workspace ends: a VCL that sets a header
    # from it needs room for a copy).
    room = WS_ReserveAll(ctx.ws)
    if room > STATUS_MAX:
        room = STATUS_MAX
    n = strlen(buf)
    if room < n + 8:
        WS_Release(ctx.ws, 0)
        return <const char *>WS_Copy(ctx.ws, buf, -1)
    p = <char *>WS_Reservation(ctx.ws)
    memcpy(p, buf, n)
    pthread_mutex_lock(&OBJECTS_MTX)
    o = OBJECTS
    while o != NULL:
        if o.max_queue_wait >= 0:
            k = snprintf(buf, sizeof(buf), " %s:throttle_hold=%gs,max_queue_wait=%gs",
                         o.vcl_name, o.throttle_hold, o.max_queue_wait)
        else:
            k = snprintf(buf, sizeof(buf), " %s:throttle_hold=%gs,max_queue_wait=timeout",
                         o.vcl_name, o.throttle_hold)
        if throttle_held(o, &left) and 0 < k < <int>sizeof(buf):
            k += snprintf(buf + k, sizeof(buf) - k, ",held=%.3fs", left)
        if k <= 0 or k >= <int>sizeof(buf) or n + <unsigned>k + 5 > room:
            memcpy(p + n, " ...", 4)
            n += 4
            break
        memcpy(p + n, buf, <size_t>k)
        n += <unsigned>k
        o = o.status_next
    pthread_mutex_unlock(&OBJECTS_MTX)
    # Last, the live objects' settings that differ from the defaults (trace, tenant_header) and
    # the credential sets they sign with (unless the list was cut).
    if o == NULL:
        pthread_mutex_lock(&CREDS_MTX)
        pthread_mutex_lock(&SETTINGS_MTX)
        k = snprintf(buf, sizeof(buf), "%s %s", SETTINGS, CREDS)
        pthread_mutex_unlock(&SETTINGS_MTX)
        pthread_mutex_unlock(&CREDS_MTX)
        if 0 < k < <int>sizeof(buf) and n + <unsigned>k + 1 <= room:
            memcpy(p + n, buf, <size_t>k)
            n += <unsigned>k
        elif n + 5 <= room:
            memcpy(p + n, " ...", 4)
            n += 4
    p[n] = 0
    WS_Release(ctx.ws, n + 1)
    return p


cdef const char *ops_error(const vrt_ctx *ctx) noexcept nogil:
    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC:
        return EMPTY
    return task_error(ctx)


cdef double ops_retry_after(const vrt_ctx *ctx) noexcept nogil:
    if ctx == NULL or ctx.magic != VRT_CTX_MAGIC:
        return 0.0
    return task_retry_after(ctx)


# ---------------------------------------------------------------------------------------------------
# The table

# No initializer on module-level C data (see DESIGN): filled once when the module is imported.
cdef vmod_lambda_ops OPS


cdef void _fill_ops() noexcept:
    OPS.magic = VMOD_LAMBDA_OPS_MAGIC
    OPS.version = VMOD_LAMBDA_OPS_VERSION
    OPS.build_id = VMOD_LAMBDA_BUILD_ID
    OPS.backend_init = ops_backend_init
    OPS.backend_fini = ops_backend_fini
    OPS.backend_invoke = ops_backend_invoke
    OPS.backend_invoke_async = ops_backend_invoke_async
    OPS.backend_get_function_name = ops_backend_get_function_name
    OPS.backend_get_region = ops_backend_get_region
    OPS.backend_backend = ops_backend_backend
    OPS.selftest = ops_selftest
    OPS.status = ops_status
    OPS.error = ops_error
    OPS.retry_after = ops_retry_after
    limiter_init(&SELFTEST_LIM, 4)
    OBJECTS = NULL
    pthread_mutex_init(&OBJECTS_MTX, NULL)


_fill_ops()
_ops = PyCapsule_New(&OPS, "vmod_lambda._vmod._ops", NULL)
BUILD_ID = (<bytes>VMOD_LAMBDA_BUILD_ID).decode()
