# cython: language_level=3
"""Counters and varnishlog records of lambda.backend() objects (see _stats.pxd, vmod_lambda.vcc).

The VSC segment `lambda.<object>` is created with the first object of that name and destroyed with
the last (vcl.discard): objects of the same name in several loaded VCLs share it, so a reload neither
resets the counters nor shows them twice. Counters move with atomic adds: worker threads (with the
GIL) and Varnish threads (without) update them.
"""


from libc.stdlib cimport malloc
from libc.string cimport memcpy

from cache cimport SLT_Error
from lambda_compat cimport lambda_log

from vmod_lambda._response cimport lambda_lines, lines_fill, lines_clear
from vmod_lambda.invoker import clean_reason, clean_token
from vmod_lambda.outcomes import counter as _counter_name, outcome as _outcome
from vmod_lambda.stats import parse_tail, tail_lines

from vmod_lambda_stats cimport lambda_vsc_seg, VSC_lambda_New, VSC_lambda_Destroy


cdef class _Segment:
    cdef lambda_vsc *vsc
    cdef lambda_vsc_seg *seg
    cdef int refs


_segments = {}

KIND_NAMES = ("fetch", "invoke", "invoke_async", "probe")


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


cdef void stats_account(lambda_vsc *v, int kind, object err, object rec) noexcept:
    """One call's outcome: err is None or an InvokeError, rec the invoker's record of what was sent
    (None: nothing was)."""
    cdef uint64_t *which = NULL
    if v == NULL:
        return
    try:
        if rec is not None:
            lambda_stat_add(&v.req, 1)
            if kind == KIND_FETCH:
                lambda_stat_add(&v.fetch, 1)
            elif kind == KIND_INVOKE:
                lambda_stat_add(&v.invoke, 1)
            elif kind == KIND_ASYNC:
                lambda_stat_add(&v.invoke_async, 1)
            else:
                lambda_stat_add(&v.probe, 1)
            lambda_stat_add(&v.payload_out, rec.sent)
            lambda_stat_add(&v.payload_in, rec.received)
            lambda_stat_add(&v.invoke_time_ms, <uint64_t>(rec.duration * 1000.0 + 0.5))
            if rec.log_result:
                billed, cold = parse_tail(rec.log_result)
                lambda_stat_add(&v.billed_ms, billed)
                if cold:
                    lambda_stat_add(&v.cold_start, 1)
        if err is None:
            return
        lambda_stat_add(&v.fail, 1)
        which = _counter(v, _counter_name(getattr(err, "kind", "internal"),
                                          getattr(err, "status", None), rec is not None))
        if which != NULL:
            lambda_stat_add(which, 1)
    except BaseException as e:
        stats_internal(v, NULL, "counting an invocation", e)


cdef uint64_t *_counter(lambda_vsc *v, str name):
    """The counter of that name (outcomes.counter()), NULL for None."""
    if name is None:
        return NULL
    if name == "function_error":
        return &v.function_error
    if name == "timeout":
        return &v.timeout
    if name == "throttled":
        return &v.throttled
    if name == "err_4xx":
        return &v.err_4xx
    if name == "err_5xx":
        return &v.err_5xx
    if name == "conn_fail":
        return &v.conn_fail
    if name == "invalid":
        return &v.invalid
    if name == "too_large":
        return &v.too_large
    if name == "internal":
        return &v.internal
    if name == "busy":
        return &v.busy
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
    the function's log tail. None when nothing was sent (or out of memory)."""
    try:
        if rec is None:
            return
        lines_fill(out, _vsl_lines(obj.decode("utf-8", "replace"),
                                   function.decode("utf-8", "replace"), kind, err, rec))
    except MemoryError:
        lines_clear(out)    # the invocation goes unlogged: no memory to log it with
    except BaseException as e:
        lines_clear(out)
        stats_internal(NULL, obj, "the varnishlog record of an invocation", e)


cdef list _vsl_lines(str obj_name, str function_name, int kind, object err, object rec):
    outcome = "ok" if err is None else _outcome(getattr(err, "kind", "internal"),
                                                 getattr(err, "status", None))
    fields = [f"lambda: {obj_name}: {KIND_NAMES[kind]} {outcome}",
              f"function={function_name}",
              f"qualifier={rec.qualifier or '-'}",
              f"status={rec.status if rec.status is not None else '-'}",
              f"time={rec.duration * 1000.0:.3f}ms",
              f"request_id={clean_token(rec.request_id)}",
              f"version={clean_token(rec.executed_version)}"]
    lines = [" ".join(fields)]
    if rec.log_result:
        lines += [f"lambda: {obj_name}: log: {line}" for line in tail_lines(rec.log_result)]
    return lines


