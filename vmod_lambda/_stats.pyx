# cython: language_level=3
"""Counters and varnishlog records of lambda.backend() objects (see _stats.pxd, vmod_lambda.vcc).

The VSC segment `lambda.<object>` is created with the first object of that name and destroyed with
the last (vcl.discard): objects of the same name in several loaded VCLs share it, so a reload neither
resets the counters nor shows them twice. Counters move with atomic adds: worker threads (with the
GIL) and Varnish threads (without) update them.
"""


from libc.stdio cimport snprintf
from libc.stdlib cimport malloc
from libc.string cimport memcpy, memset, strncpy

from cache cimport SLT_Error, WS_Alloc
from vrt cimport vrt_ctx, vmod_priv, VRT_priv_task, VRT_priv_task_get
from lambda_compat cimport lambda_log

from vmod_lambda._response cimport lambda_lines, lines_fill, lines_clear
from vmod_lambda.invoker import clean_reason, clean_token
from vmod_lambda.outcomes import counter as _counter_name, outcome as _outcome
from vmod_lambda._record cimport InvocationRecord
from vmod_lambda.stats import tail_lines

from vmod_lambda_stats cimport lambda_vsc_seg, VSC_lambda_New, VSC_lambda_Destroy


cdef class _Segment:
    cdef lambda_vsc *vsc
    cdef lambda_vsc_seg *seg
    cdef int refs


_segments = {}

KIND_NAMES = ("fetch", "invoke", "invoke_async", "probe")
cdef const char *KIND_C[4]
KIND_C[0] = "fetch"
KIND_C[1] = "invoke"
KIND_C[2] = "invoke_async"
KIND_C[3] = "probe"
_OC = {None: OC_NONE, "function_error": OC_FUNCTION_ERROR, "timeout": OC_TIMEOUT,
       "throttled": OC_THROTTLED, "err_4xx": OC_ERR_4XX, "err_5xx": OC_ERR_5XX,
       "conn_fail": OC_CONN_FAIL, "invalid": OC_INVALID, "too_large": OC_TOO_LARGE,
       "internal": OC_INTERNAL, "busy": OC_BUSY, "sts_fail": OC_STS_FAIL}

# The cause of each OC_* as lambda.error() says it: its counter's name (inverse of _OC).
cdef enum:
    OC_NAMES_MAX = 32
cdef const char *OC_NAMES[OC_NAMES_MAX]
_OC_KEEP = []


cdef void _oc_names_init() noexcept:
    cdef bytes b
    for name, oc in _OC.items():
        if name is not None and 0 <= oc < OC_NAMES_MAX:
            b = name.encode("ascii")
            _OC_KEEP.append(b)
            OC_NAMES[oc] = b


_oc_names_init()


cdef lambda_vsc *stats_acquire(str name) except NULL:
    """The counters of the object `name` (CLI thread, GIL held); release with stats_release."""
    cdef _Segment s = _segments.get(name)
    cdef bytes b
    if s is None:
        s = _Segment()
        b = name.encode("utf-8", "replace")
        s.vsc = VSC_lambda_New(NULL, &s.seg, "%s", <const char *>b)
        if s.vsc == NULL:
            raise MemoryError(f"cannot create the counters lambda.{name}.*")
        _segments[name] = s
    s.refs += 1
    return s.vsc


cdef void stats_release(str name) noexcept:
    cdef _Segment s
    try:
        s = _segments.get(name)
        if s is None:
            return
        s.refs -= 1
        if s.refs <= 0:
            del _segments[name]
            VSC_lambda_Destroy(&s.seg)
            s.vsc = NULL
    except BaseException as e:
        stats_internal(NULL, NULL, f"releasing the counters lambda.{name}.*", e)


cdef void stats_busy(lambda_vsc *v) noexcept nogil:
    if v != NULL:
        lambda_stat_add(&v.busy, 1)
        lambda_stat_add(&v.fail, 1)


cdef inline void _count_call(lambda_vsc *v, int kind) noexcept nogil:
    """req and the counter of the call's kind (fetch, invoke, invoke_async, probe)."""
    lambda_stat_add(&v.req, 1)
    if kind == KIND_FETCH:
        lambda_stat_add(&v.fetch, 1)
    elif kind == KIND_INVOKE:
        lambda_stat_add(&v.invoke, 1)
    elif kind == KIND_ASYNC:
        lambda_stat_add(&v.invoke_async, 1)
    else:
        lambda_stat_add(&v.probe, 1)


cdef void stats_account(lambda_vsc *v, int kind, object err, object rec) noexcept:
    """One call's outcome: err is None or an InvokeError, rec the invoker's record of what was sent
    and got (an InvocationRecord, _record.pxd; None: nothing was sent)."""
    cdef uint64_t *which = NULL
    if v == NULL:
        return
    try:
        if rec is not None:
            _count_call(v, kind)
            lambda_stat_add(&v.payload_out, rec.sent)
            lambda_stat_add(&v.payload_in, rec.received)
            lambda_stat_add(&v.invoke_time_ms, <uint64_t>(rec.duration * 1000.0 + 0.5))
            lambda_stat_add(&v.billed_ms, (<InvocationRecord?>rec).billed_ms)
            if (<InvocationRecord>rec).cold:
                lambda_stat_add(&v.cold_start, 1)
        if err is None:
            return
        lambda_stat_add(&v.fail, 1)
        which = _oc_counter(v, _OC.get(_counter_name(getattr(err, "kind", "internal"),
                                                     getattr(err, "status", None),
                                                     rec is not None), OC_NONE))
        if which != NULL:
            lambda_stat_add(which, 1)
    except BaseException as e:
        stats_internal(v, NULL, "counting an invocation", e)


cdef uint64_t *_oc_counter(lambda_vsc *v, int oc) noexcept nogil:
    """The counter of a failure's cause (OC_*; _OC maps outcomes.counter()'s names), NULL for
    OC_NONE."""
    if oc == OC_FUNCTION_ERROR:
        return &v.function_error
    if oc == OC_TIMEOUT:
        return &v.timeout
    if oc == OC_THROTTLED:
        return &v.throttled
    if oc == OC_ERR_4XX:
        return &v.err_4xx
    if oc == OC_ERR_5XX:
        return &v.err_5xx
    if oc == OC_CONN_FAIL:
        return &v.conn_fail
    if oc == OC_INVALID:
        return &v.invalid
    if oc == OC_TOO_LARGE:
        return &v.too_large
    if oc == OC_INTERNAL:
        return &v.internal
    if oc == OC_BUSY:
        return &v.busy
    if oc == OC_STS_FAIL:
        return &v.sts_fail
    return NULL


cdef void stats_internal(lambda_vsc *v, const char *obj, str where, object exc) noexcept:
    """An exception where none was expected (a bug): an Error record without a transaction,
    `lambda: <object>: internal error in <where>: <type>: <message>`, and the object's internal
    counter (when v is not NULL). For the broad excepts of code that must not raise."""
    cdef bytes b
    try:
        if v != NULL:
            lambda_stat_add(&v.internal, 1)
        name = obj.decode("utf-8", "replace") if obj != NULL else "-"
        b = clean_reason(f"lambda: {name}: internal error in {where}: {type(exc).__name__}: "
                         f"{exc}").encode("utf-8", "replace")
        lambda_log(NULL, SLT_Error, b)
    except BaseException:
        # Logging itself failed (no memory): the counter above is all that can be left.
        lambda_log(NULL, SLT_Error, "lambda: internal error (its description failed too)")


cdef void stats_vsl(const char *obj, const char *function, int kind, object err, object rec,
                    lambda_lines *out) noexcept:
    """The varnishlog lines of one invocation into out (empty, or left empty): the record, then
    the function's log tail. None when nothing was sent (or out of memory). For probes: calls
    from VCL are logged by their caller (outcome_line)."""
    cdef list lines
    try:
        if rec is None:
            return
        outcome = "ok" if err is None else _outcome(getattr(err, "kind", "internal"),
                                                     getattr(err, "status", None))
        lines = _vsl_lines(obj.decode("utf-8", "replace"), function.decode("utf-8", "replace"),
                           rec, err)
        lines[0] = f"lambda: {obj.decode('utf-8', 'replace')}: {KIND_NAMES[kind]} {outcome} " \
                   + lines[0]
        lines_fill(out, lines)
    except MemoryError:
        lines_clear(out)    # the invocation goes unlogged: no memory to log it with
    except BaseException as e:
        lines_clear(out)
        stats_internal(NULL, obj, "the varnishlog record of an invocation", e)


cdef list _vsl_lines(str obj_name, str function_name, InvocationRecord rec, object err):
    """The record's fields after its outcome word, then the log tail's lines, then the throttle
    hold's line when this failure started one (_throttle.pyx)."""
    fields = [f"function={function_name}",
              f"qualifier={rec.qualifier or '-'}",
              f"status={rec.status if rec.status is not None else '-'}",
              f"time={rec.duration * 1000.0:.3f}ms",
              f"request_id={clean_token(rec.request_id)}",
              f"version={clean_token(rec.executed_version)}"]
    trace_id = rec.trace_id
    if trace_id:
        # (trace.py lets only printable ASCII without spaces through: one field)
        fields.append(f"trace={trace_id[:256]}")
    lines = [" ".join(fields)]
    if rec.log_result:
        lines += [f"lambda: {obj_name}: log: {line}" for line in tail_lines(rec.log_result)]
    note = getattr(err, "hold_note", None)
    if note:
        lines.append(f"lambda: {obj_name}: {note}")
    return lines




cdef void outcome_set(lambda_outcome *out, int failed, int counter, const char *word) noexcept nogil:
    """The caller's decision: the call failed (or not) with the cause counter and word given."""
    out.failed = failed
    out.counter = counter
    strncpy(out.word, word, OC_WORD - 1)
    out.word[OC_WORD - 1] = 0


cdef void outcome_clear(lambda_outcome *out) noexcept nogil:
    lines_clear(&out.lines)


cdef void stats_prepare(lambda_outcome *out, object err, object rec, const char *obj,
                        const char *function) noexcept:
    """On the worker, with the GIL: the outcome as the invocation ended, for its caller to
    decide and count (err None or an InvokeError, rec the invoker's record, None: nothing sent)."""
    cdef bytes w
    try:
        out.sent = rec is not None
        if err is None:
            outcome_set(out, 0, OC_NONE, "ok")
        else:
            out.retry_after = float(getattr(err, "retry_after", 0.0) or 0.0)
            w = _outcome(getattr(err, "kind", "internal"),
                         getattr(err, "status", None)).encode("ascii", "replace")
            outcome_set(out, 1, _OC.get(_counter_name(getattr(err, "kind", "internal"),
                                                      getattr(err, "status", None),
                                                      rec is not None), OC_NONE), w)
        if rec is not None:
            out.payload_out = rec.sent
            out.payload_in = rec.received
            out.time_ms = <uint64_t>(rec.duration * 1000.0 + 0.5)
            out.billed_ms = (<InvocationRecord?>rec).billed_ms
            out.cold = 1 if (<InvocationRecord>rec).cold else 0
            lines_clear(&out.lines)
            lines_fill(&out.lines, _vsl_lines(obj.decode("utf-8", "replace"),
                                              function.decode("utf-8", "replace"), rec, err))
        out.prepared = 1
    except MemoryError:
        lines_clear(&out.lines)     # the record goes without its fields: no memory for them
        out.prepared = 1
    except BaseException as e:
        lines_clear(&out.lines)
        stats_internal(NULL, obj, "the outcome of an invocation", e)


cdef void stats_commit(lambda_vsc *v, int kind, const lambda_outcome *out) noexcept nogil:
    """The caller counts the one outcome of its call: req and its kind, the bytes and time of
    what was sent, fail and its cause."""
    cdef uint64_t *c = NULL
    if v == NULL:
        return
    _count_call(v, kind)
    if out.sent:
        lambda_stat_add(&v.payload_out, out.payload_out)
        lambda_stat_add(&v.payload_in, out.payload_in)
        lambda_stat_add(&v.invoke_time_ms, out.time_ms)
        lambda_stat_add(&v.billed_ms, out.billed_ms)
        if out.cold:
            lambda_stat_add(&v.cold_start, 1)
    if not out.failed:
        return
    lambda_stat_add(&v.fail, 1)
    c = _oc_counter(v, out.counter)
    if c != NULL:
        lambda_stat_add(c, 1)


cdef int outcome_line(char *buf, size_t n, const char *obj, const char *function, int kind,
                      const lambda_outcome *out) noexcept nogil:
    """The record line `lambda: <object>: <call> <outcome> function=... ` of the outcome."""
    if out.lines.n > 0:
        return snprintf(buf, n, "lambda: %s: %s %s %s", obj, KIND_C[kind], out.word,
                        out.lines.line[0].p)
    return snprintf(buf, n, "lambda: %s: %s %s function=%s qualifier=- status=- time=%.3fms "
                    "request_id=- version=-", obj, KIND_C[kind], out.word, function,
                    <double>out.time_ms if out.sent else 0.0)


# ---------------------------------------------------------------------------------------------------
# The task's last outcome, for lambda.error() and lambda.retry_after() (vmod_lambda.vcc): kept in
# the task's PRIV_TASK under a key of this module (the same in the fetch's gethdrs and in
# vcl_backend_error, which share the busyobj's task; in a client task, the req's), on the task's
# workspace: nothing to free.

cdef struct task_state:
    char cause[OC_WORD]
    double retry_after

cdef char TASK_KEY          # its address is the key
cdef const char *NO_CAUSE = ""


cdef task_state *_task(const vrt_ctx *ctx, bint create) noexcept nogil:
    cdef vmod_priv *p
    cdef task_state *t
    if ctx == NULL or ctx.ws == NULL:
        return NULL
    p = VRT_priv_task(ctx, &TASK_KEY) if create else VRT_priv_task_get(ctx, &TASK_KEY)
    if p == NULL:
        return NULL
    t = <task_state *>p.priv
    if t == NULL and create:
        t = <task_state *>WS_Alloc(ctx.ws, sizeof(task_state))
        if t != NULL:
            memset(t, 0, sizeof(task_state))
            p.priv = t
    return t


cdef void task_note(const vrt_ctx *ctx, const lambda_outcome *out) noexcept nogil:
    """The caller's outcome of a call is the task's last (stats_commit's callers)."""
    cdef task_state *t = _task(ctx, True)
    cdef const char *cause
    if t == NULL:
        return
    if not out.failed:
        t.cause[0] = 0
        return
    cause = OC_NAMES[out.counter] if 0 < out.counter < OC_NAMES_MAX else NULL
    if cause == NULL:
        cause = <const char *>out.word      # a failure without a counter of its own
    strncpy(t.cause, cause, OC_WORD - 1)
    t.cause[OC_WORD - 1] = 0
    if out.counter == OC_THROTTLED:
        t.retry_after = out.retry_after


cdef void task_note_cause(const vrt_ctx *ctx, const char *cause) noexcept nogil:
    """A call that failed before it had an outcome to count (a sick backend)."""
    cdef lambda_outcome oc
    memset(&oc, 0, sizeof(oc))
    outcome_set(&oc, 1, OC_NONE, cause)
    task_note(ctx, &oc)


cdef const char *task_error(const vrt_ctx *ctx) noexcept nogil:
    """lambda.error(): the cause of the task's last call through this VMOD, "" when it succeeded
    (or there was none). Points into the task's workspace."""
    cdef task_state *t = _task(ctx, False)
    if t == NULL:
        return NO_CAUSE
    return t.cause


cdef double task_retry_after(const vrt_ctx *ctx) noexcept nogil:
    """lambda.retry_after(): seconds of the last throttled answer's Retry-After in this task."""
    cdef task_state *t = _task(ctx, False)
    return t.retry_after if t != NULL else 0.0
