# cython: language_level=3
"""The throttle hold: after a 429 from Lambda, an object holds off (vmod_lambda.vcc, "Throttling").

A TooManyRequestsException (any call of the object: fetch, invoke(), invoke_async(), probe) makes
the Invoker call the object's hook (Invoker.on_throttled, on the worker thread, GIL held), which
raises the object's held_until to now + min(Retry-After, throttle_hold) (throttle_hold when the
answer has no Retry-After). Until then, on the callers' threads and without the GIL, one atomic
read of held_until (throttle_held) makes the backend sick (_director.pyx, healthy) and fails
fetches, invoke() and invoke_async() at once with the cause throttled, without sending anything
(counted in throttled, fail and held). Probes are still sent: they tell when the function is back.
"""

from libc.stdio cimport snprintf
from libc.string cimport strlen
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from posix.types cimport time_t

from vrt cimport VRT_SetChanged, VTIM_real
from lambda_time cimport tm, gmtime_r, strftime
from vmod_lambda_atomic cimport lambda_stat_add, lambda_time_load, lambda_time_store, lambda_time_raise
from vmod_lambda._object cimport lambda_obj
from vmod_lambda._handoff cimport monotonic_now
from vmod_lambda._stats cimport stats_internal


cdef bint throttle_held(lambda_obj *o, double *left) noexcept nogil:
    """Whether o holds off now (left: the seconds to go). One atomic read when it never was."""
    cdef double until = lambda_time_load(&o.held_until)
    cdef double now
    if until == 0.0:
        return False
    now = monotonic_now()
    if now >= until:
        return False
    left[0] = until - now
    return True


cdef int _fmt_time(double t, char *buf, size_t n) noexcept nogil:
    """t (VTIM_real() seconds) as 2026-12-07T16:30:00.123Z."""
    cdef time_t s = <time_t>t
    cdef tm parts
    cdef size_t k
    if n < 32 or gmtime_r(&s, &parts) == NULL:
        if n > 0:
            buf[0] = 0
        return -1
    k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &parts)
    snprintf(buf + k, n - k, ".%03dZ", <int>((t - <double>s) * 1000.0))
    return 0


cdef int throttle_reason(lambda_obj *o, double left, char *buf, size_t n) noexcept nogil:
    """The reason of a call refused by the hold: `throttled: held until <time> (<s>s more) after
    a 429 from Lambda; not sent`."""
    cdef char when[48]
    _fmt_time(lambda_time_load(&o.held_until_real), when, sizeof(when))
    return snprintf(buf, n, "throttled: held until %s (%.3fs more) after a 429 from Lambda "
                    "(throttle_hold %gs); not sent", when, left, o.throttle_hold)


cdef void throttle_refused(lambda_obj *o) noexcept nogil:
    """Count a call refused by the hold in held (the caller counts fail and throttled)."""
    if o.vsc != NULL:
        lambda_stat_add(&o.vsc.held, 1)


cdef class _Hold:
    """Invoker.on_throttled of one object: start or extend its hold (worker thread, GIL held)."""
    cdef lambda_obj *obj

    def __call__(self, err):
        cdef lambda_obj *o = self.obj
        cdef double hold, now, real
        cdef char when[48]
        cdef bint was_held
        if o == NULL or o.throttle_hold <= 0:
            return
        ra = getattr(err, "retry_after", None)
        hold = o.throttle_hold if ra is None else min(<double>ra, o.throttle_hold)
        if hold <= 0:
            return          # Retry-After: 0
        now = monotonic_now()
        real = VTIM_real()
        was_held = lambda_time_load(&o.held_until) > now
        if not lambda_time_raise(&o.held_until, now + hold):
            return          # a longer hold is on already
        lambda_time_store(&o.held_until_real, real + hold)
        if not was_held:
            lambda_time_store(&o.held_since_real, real)
            if o.dir != NULL:
                VRT_SetChanged(o.dir, real)     # backend.list, std.healthy()'s change time
        _fmt_time(real + hold, when, sizeof(when))
        err.hold_note = (
            f"throttled: holding off until {when.decode('ascii', 'replace')} ({hold:.3f}s: "
            f"Retry-After {'-' if ra is None else format(ra, 'g')}, throttle_hold "
            f"{o.throttle_hold:g}s, Reason {err.throttle_reason or '-'}): the backend is sick "
            f"and calls fail at once meanwhile")


cdef int throttle_attach(lambda_obj *o) except -1:
    """Give o's Invoker its hook (with the GIL, at vcl.load)."""
    cdef _Hold h = _Hold.__new__(_Hold)
    h.obj = o
    (<object>o.invoker).on_throttled = h
    Py_INCREF(h)
    o.throttle_hook = <PyObject *>h
    return 0


cdef void throttle_detach(lambda_obj *o) noexcept:
    """The hook lets go of o (with the GIL, before o is freed)."""
    cdef _Hold h
    if o.throttle_hook == NULL:
        return
    h = <_Hold>o.throttle_hook
    h.obj = NULL
    if o.invoker != NULL:
        try:
            (<object>o.invoker).on_throttled = None
        except BaseException as e:
            stats_internal(o.vsc, o.vcl_name, "detaching the throttle hold", e)
    Py_XDECREF(o.throttle_hook)
    o.throttle_hook = NULL
