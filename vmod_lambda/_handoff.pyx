# cython: language_level=3
"""The job queue between Varnish threads and the Python worker pool (see _handoff.pxd)."""

import threading

from libc.string cimport memset
from libc.stdio cimport snprintf
from libc.stdint cimport uint64_t

from posix.time cimport timespec
from posix_thread cimport *
from posix_io cimport (eventfd, EFD_NONBLOCK, EFD_CLOEXEC, read, write, close, DIR, dirent,
                       opendir, readdir, closedir, pollfd, poll, POLLIN)
from vmod_lambda_atomic cimport (lambda_stat_add, lambda_stat_sub, lambda_state_cas, lambda_done_post,
                                 lambda_done_wait)
from vmod_lambda_tls cimport lambda_blocking_depth
from vmod_lambda._stats cimport (stats_internal, lambda_outcome, outcome_set, OC_TIMEOUT, OC_BUSY,
                                 OC_INTERNAL)
from vmod_lambda._netio cimport (Op, xchg, xchg_progress, xchg_events, xchg_expire, xchg_result,
                                 X_DONE, X_SEND)

from vmod_lambda.transport import direct as _direct

# The pool is shared by every object of every VCL in the child and follows the work in flight, not
# the number of objects (issue 21): POOL_REST workers while any object lives, one more started (by
# the grower thread) whenever a queued job finds no worker to take it, up to the sum of the limits
# (pool_size) of the live objects and at most MAX_THREADS; a worker idle for POOL_IDLE_EXIT seconds
# above POOL_REST exits. See vmod_lambda.vcc, "Threads".
cdef int MAX_THREADS
cdef int POOL_REST
cdef double POOL_IDLE_EXIT
MAX_THREADS = 1024
POOL_REST = 4
POOL_IDLE_EXIT = 10.0
THREAD_STACK = 8 << 20

# No initializers on C globals: see DESIGN ("module init re-executes them"). Set once below.
cdef pthread_mutex_t mtx
cdef pthread_cond_t work_cond
cdef pthread_condattr_t cond_attr
cdef lambda_job *q_head
cdef lambda_job *q_tail
cdef int q_len              # jobs in the queue
cdef int target             # the sum of the limits of the live limiters (pool_resize)
cdef int nthreads           # workers running or being started
# Workers asked of the grower thread, workers it started that have not looked at the queue yet,
# and whether the grower runs.
cdef pthread_cond_t grow_cond
cdef int grow_req
cdef int starting
cdef int grower_running
# Who takes a queued job (see _queue). awake: workers that will look at the queue before they
# sleep, including those woken for it and not running yet (a queued job that one of them can take
# wakes nobody). idle_waiting: workers waiting for a job in _take, pending of them already woken.
# listeners: workers waiting in poll() for the exchanges of their jobs that have room for more, the
# last one to start waiting first (a job wakes it through its eventfd rather than an idle worker:
# the load gathers on few workers, which then serve several jobs per wake-up and GIL hold).
cdef int awake
# Callers waiting for a slot of their limiter (pool_size) before their job is queued: counted in
# lambda.status()'s queued, and in their object's queued gauge.
cdef int slot_waiters
cdef int idle_waiting
cdef int pending

cdef struct mux_listener:
    int efd
    bint woken
    mux_listener *next

cdef mux_listener *listeners

cdef enum:
    # Jobs in flight at once in one worker (multiplexed jobs, see _worker_main).
    MUX_MAX = 32

_threads = []

cdef void _module_init() noexcept:
    global q_head, q_tail, target, nthreads, awake, idle_waiting, pending, listeners, slot_waiters
    pthread_mutex_init(&mtx, NULL)
    pthread_condattr_init(&cond_attr)
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC)
    pthread_cond_init(&work_cond, &cond_attr)
    pthread_cond_init(&grow_cond, &cond_attr)
    q_head = NULL
    q_tail = NULL
    q_len = 0
    starting = 0
    target = 0
    nthreads = 0
    grow_req = 0
    grower_running = 0
    awake = 0
    idle_waiting = 0
    pending = 0
    listeners = NULL
    slot_waiters = 0

_module_init()


cdef double monotonic_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef void to_timespec(double t, timespec *ts) noexcept nogil:
    ts.tv_sec = <long>t
    ts.tv_nsec = <long>((t - <double>ts.tv_sec) * 1e9)
    if ts.tv_nsec >= 1000000000:
        ts.tv_sec += 1
        ts.tv_nsec -= 1000000000
    elif ts.tv_nsec < 0:
        ts.tv_nsec = 0


cdef int limiter_init(lambda_limiter *lim, int limit) noexcept nogil:
    memset(lim, 0, sizeof(lambda_limiter))
    lim.limit = limit
    lim.max_wait = -1.0
    return pthread_cond_init(&lim.cond, &cond_attr)


cdef bint limiter_retire(lambda_limiter *lim) noexcept nogil:
    """Mark the limiter's owner gone. True: nothing is in flight, the caller releases it now.
    False: a worker still runs an abandoned job; the last one to finish calls lim.on_idle."""
    cdef bint idle
    pthread_mutex_lock(&mtx)
    lim.retired = 1
    idle = lim.inflight == 0 and lim.pinned == 0
    pthread_cond_broadcast(&lim.cond)       # a probe waiting for a slot gives up
    pthread_mutex_unlock(&mtx)
    return idle


cdef void limiter_destroy(lambda_limiter *lim) noexcept nogil:
    pthread_cond_destroy(&lim.cond)


cdef void limiter_pin(lambda_limiter *lim) noexcept nogil:
    pthread_mutex_lock(&mtx)
    lim.pinned += 1
    pthread_mutex_unlock(&mtx)


cdef int limiter_acquire(lambda_limiter *lim, double deadline) noexcept nogil:
    """Take a slot of a pinned lim, waiting until deadline, and unpin it: LIM_OK, LIM_BUSY or
    LIM_GONE, with LIM_IDLE or'ed in when lim is retired and now unused. Like a queued job, the
    slot counts in the owner's inflight gauge."""
    cdef timespec ts
    cdef int r = LIM_OK
    to_timespec(deadline, &ts)
    pthread_mutex_lock(&mtx)
    while lim.inflight >= lim.limit and not lim.retired:
        if pthread_cond_timedwait(&lim.cond, &mtx, &ts) == ETIMEDOUT:
            break
    if lim.retired:
        r = LIM_GONE
    elif lim.inflight >= lim.limit:
        r = LIM_BUSY
    else:
        lim.inflight += 1
        lambda_stat_add(lim.st_inflight, 1)
    lim.pinned -= 1
    if r != LIM_OK and lim.retired and lim.inflight == 0 and lim.pinned == 0:
        r |= LIM_IDLE
    pthread_mutex_unlock(&mtx)
    return r


cdef int limiter_release(lambda_limiter *lim) noexcept nogil:
    """Give back a slot taken with limiter_acquire(): LIM_OK, or LIM_IDLE."""
    cdef int r = LIM_OK
    pthread_mutex_lock(&mtx)
    lim.inflight -= 1
    lambda_stat_sub(lim.st_inflight, 1)
    pthread_cond_signal(&lim.cond)
    if lim.retired and lim.inflight == 0 and lim.pinned == 0:
        r = LIM_IDLE
    pthread_mutex_unlock(&mtx)
    return r


cdef void _remove(lambda_job *job, lambda_job *prev) noexcept nogil:
    """Under mtx: take job (after prev, or the head) out of the queue."""
    global q_head, q_tail, q_len
    if prev == NULL:
        q_head = job.next
    else:
        prev.next = job.next
    if q_tail == job:
        q_tail = prev
    job.next = NULL
    lambda_stat_sub(job.limiter.st_queued, 1)
    q_len -= 1


cdef void _unlink(lambda_job *job) noexcept nogil:
    # Under mtx: take a queued job out of the queue (its waiter gave up).
    cdef lambda_job *p = q_head
    cdef lambda_job *prev = NULL
    while p != NULL and p != job:
        prev = p
        p = p.next
    if p != NULL:
        _remove(job, prev)


cdef submit_result _queue(lambda_job *job, lambda_limiter *lim, timespec *ts,
                          int detached) noexcept nogil:
    """Take a slot of lim (waiting until ts) and queue job. SUBMIT_DONE: queued, mtx still held;
    otherwise mtx is released and the job is the caller's again."""
    global q_head, q_tail, q_len, slot_waiters
    cdef int rc
    cdef timespec slot_ts, wait_ts
    job.magic = JOB_MAGIC
    job.limiter = lim
    job.next = NULL
    job.state = JOB_NEW
    job.detached = detached
    job.outcome = OUTCOME_PENDING
    job.skipped = 0
    job.done = 0

    pthread_mutex_lock(&mtx)
    if target == 0 or nthreads == 0:
        pthread_mutex_unlock(&mtx)
        return SUBMIT_STOPPED
    if lim.inflight >= lim.limit:
        # Waiting for a slot: a queued call (the gauge and lambda.status()); never sent when
        # the deadline passes first.
        slot_waiters += 1
        lambda_stat_add(lim.st_queued, 1)
        if job.send_by > 0:
            to_timespec(job.send_by, &slot_ts)      # a slot after the timeout is of no use
        else:
            slot_ts = ts[0]
        if lim.max_wait >= 0:
            # max_queue_wait: give up sooner than the timeout (vmod_lambda.vcc, "Throttling").
            to_timespec(monotonic_now() + lim.max_wait, &wait_ts)
            if wait_ts.tv_sec < slot_ts.tv_sec or (wait_ts.tv_sec == slot_ts.tv_sec and
                                                   wait_ts.tv_nsec < slot_ts.tv_nsec):
                slot_ts = wait_ts
        while lim.inflight >= lim.limit:
            rc = pthread_cond_timedwait(&lim.cond, &mtx, &slot_ts)
            if rc == ETIMEDOUT and lim.inflight >= lim.limit:
                break
        slot_waiters -= 1
        lambda_stat_sub(lim.st_queued, 1)
        if lim.inflight >= lim.limit:
            pthread_mutex_unlock(&mtx)
            return SUBMIT_BUSY
    lim.inflight += 1
    job.state = JOB_QUEUED
    job.t_queued = monotonic_now()
    lambda_stat_add(lim.st_queued, 1)
    q_len += 1
    if q_tail == NULL:
        q_head = job
    else:
        q_tail.next = job
    q_tail = job
    if not job.mux:
        _wake_idle()        # only an idle worker takes a job that is not multiplexed
    elif awake == 0:
        # A worker that is awake takes a multiplexed job before it sleeps: waking another one
        # for it would cost a context switch and spread the jobs thin (one per worker).
        if not _wake_listener():
            _wake_idle()
    return SUBMIT_DONE


cdef inline int _cap() noexcept nogil:
    """Under mtx: the most workers the pool may have now."""
    return target if target < MAX_THREADS else MAX_THREADS


cdef inline int _rest() noexcept nogil:
    """Under mtx: the workers kept while idle."""
    return target if target < POOL_REST else POOL_REST


cdef bint _wake_idle() noexcept nogil:
    """Under mtx: wake a worker waiting in _take (one not woken already), if there is one; if
    there is none, ask the grower thread for one more worker (within the cap): the queued job is
    then taken by it, or by a worker that is done first."""
    global awake, pending, grow_req
    if idle_waiting <= pending:
        # One new worker per queued job that no worker is on its way to take.
        if q_len > pending + starting + grow_req and nthreads + grow_req < _cap():
            grow_req += 1
            pthread_cond_signal(&grow_cond)
        return False
    pending += 1
    awake += 1
    pthread_cond_signal(&work_cond)
    return True


cdef bint _wake_listener() noexcept nogil:
    """Under mtx: wake the listener that started waiting last, if any."""
    global awake, listeners
    cdef mux_listener *l = listeners
    cdef uint64_t one = 1
    if l == NULL:
        return False
    listeners = l.next
    l.next = NULL
    l.woken = True
    awake += 1
    write(l.efd, &one, sizeof(one))
    return True


cdef submit_result submit_wait(lambda_job *job, lambda_limiter *lim, double deadline) noexcept nogil:
    """Queue job and wait for it until deadline (monotonic seconds; also job.deadline, which the
    worker hands to the transport). Called without the GIL. SUBMIT_DONE: the worker finished first
    and the outcome is the caller's to count; SUBMIT_ABANDONED: the deadline came first (the
    caller counts a timeout, the worker a late answer); SUBMIT_BUSY, SUBMIT_TIMEOUT: nothing was
    sent."""
    cdef timespec ts
    cdef submit_result r
    job.deadline = deadline
    to_timespec(deadline, &ts)
    r = _queue(job, lim, &ts, 0)
    if r != SUBMIT_DONE:
        return r
    pthread_mutex_unlock(&mtx)
    # The worker posts job.done after it decided the outcome (_complete): waited for without the
    # pool's mutex, so that a woken caller does not queue up for the mutex the worker still holds.
    if lambda_done_wait(&job.done, &ts) == ETIMEDOUT:
        pthread_mutex_lock(&mtx)
        if job.state == JOB_QUEUED:
            _unlink(job)
            lim.inflight -= 1
            pthread_cond_signal(&lim.cond)
            pthread_mutex_unlock(&mtx)
            return SUBMIT_TIMEOUT
        if lambda_state_cas(&job.outcome, OUTCOME_PENDING, OUTCOME_ABANDONED):
            # Running: the worker owns it from now on, drops its answer and frees it. The
            # call is no longer in flight for its object's counters.
            job.state = JOB_ABANDONED
            lambda_stat_sub(lim.st_inflight, 1)
            pthread_mutex_unlock(&mtx)
            return SUBMIT_ABANDONED
        pthread_mutex_unlock(&mtx)
        # The worker decided first: its post follows at once.
        while lambda_done_wait(&job.done, &ts) == ETIMEDOUT:
            to_timespec(monotonic_now() + 1.0, &ts)
    if job.skipped:
        return SUBMIT_TIMEOUT
    return SUBMIT_DONE


cdef void submit_failure(submit_result rc, lambda_outcome *oc, char *reason, size_t n, double waited,
                         const char *limit_name, double limit, const lambda_limiter *lim) noexcept nogil:
    """The one outcome (into oc, cleared first) and message (into reason, n bytes) of a call that
    submit_wait() or submit_detached() did not run to its end (rc is not SUBMIT_DONE): the same words
    for a fetch, a streamed fetch and invoke(). waited: seconds since the call was submitted;
    limit_name, limit: the bound that applied (timeout, first_byte_timeout); lim: the object's
    limiter (its pool_size and max_queue_wait)."""
    memset(oc, 0, sizeof(oc[0]))
    if rc == SUBMIT_ABANDONED:
        oc.sent = 1
        oc.time_ms = <uint64_t>(waited * 1000.0 + 0.5)
        outcome_set(oc, 1, OC_TIMEOUT, "timeout")
        snprintf(reason, n, "timed out after %.3fs (%s %gs), the function did not answer",
                 waited, limit_name, limit)
    elif rc == SUBMIT_TIMEOUT:
        outcome_set(oc, 1, OC_BUSY, "busy")
        snprintf(reason, n, "timed out after %.3fs (%s %gs) waiting for a worker thread; not sent",
                 waited, limit_name, limit)
    elif rc == SUBMIT_BUSY and 0 <= lim.max_wait < limit:
        outcome_set(oc, 1, OC_BUSY, "busy")
        snprintf(reason, n, "gave up after %.3fs (max_queue_wait %gs) waiting for one of the %d "
                 "invocations in flight (pool_size) to finish; not sent", waited, lim.max_wait,
                 lim.limit)
    elif rc == SUBMIT_BUSY:
        outcome_set(oc, 1, OC_BUSY, "busy")
        snprintf(reason, n, "timed out after %.3fs (%s %gs) waiting for one of the %d invocations "
                 "in flight (pool_size) to finish; not sent", waited, limit_name, limit, lim.limit)
    else:
        outcome_set(oc, 1, OC_INTERNAL, "internal")
        snprintf(reason, n, "the worker pool is not running")


cdef submit_result submit_detached(lambda_job *job, lambda_limiter *lim,
                                   double deadline) noexcept nogil:
    """Queue job without waiting for it to run: SUBMIT_DONE means queued, and from then on the
    worker owns it and calls job.free_job when it is done (a streaming fetch talks to its job
    through its own channel). It still counts against lim while queued or running. SUBMIT_BUSY
    (no slot of lim before deadline) and SUBMIT_STOPPED leave the job to the caller."""
    cdef timespec ts
    cdef submit_result r
    to_timespec(deadline, &ts)
    r = _queue(job, lim, &ts, 1)
    if r == SUBMIT_DONE:
        pthread_mutex_unlock(&mtx)
    return r


cdef void _pop(lambda_job *job, lambda_job *prev) noexcept nogil:
    """Under mtx: take job (after prev, or the head) out of the queue; it runs from now on."""
    _remove(job, prev)
    job.state = JOB_RUNNING
    lambda_stat_add(job.limiter.st_inflight, 1)
    lambda_stat_add(job.limiter.st_wait_us, <uint64_t>((monotonic_now() - job.t_queued) * 1e6))


cdef lambda_job *_take() noexcept nogil:
    """Next job for an idle worker (counted awake), or NULL when the pool shrank (its cap, or this
    worker was idle for POOL_IDLE_EXIT above POOL_REST) and this worker must exit."""
    global nthreads, awake, idle_waiting, pending
    cdef lambda_job *job
    cdef timespec ts
    cdef int rc
    cdef bint expired = False
    pthread_mutex_lock(&mtx)
    while q_head == NULL and nthreads <= _cap() and not expired:
        awake -= 1
        idle_waiting += 1
        if nthreads > _rest():
            to_timespec(monotonic_now() + POOL_IDLE_EXIT, &ts)
            rc = pthread_cond_timedwait(&work_cond, &mtx, &ts)
        else:
            rc = pthread_cond_wait(&work_cond, &mtx)
        idle_waiting -= 1
        if pending > 0:
            pending -= 1        # counted awake by _wake_idle
        else:
            awake += 1
            expired = rc == ETIMEDOUT and nthreads > _rest()
    if q_head == NULL:
        nthreads -= 1
        awake -= 1
        pthread_mutex_unlock(&mtx)
        return NULL
    job = q_head
    _pop(job, NULL)
    pthread_mutex_unlock(&mtx)
    return job


cdef int _take_more(lambda_job **out, int room) noexcept nogil:
    """Under mtx: up to room queued multiplexed jobs for a worker that has some in flight."""
    cdef lambda_job *job = q_head
    cdef lambda_job *prev = NULL
    cdef lambda_job *nxt
    cdef int n = 0
    while job != NULL and n < room:
        nxt = job.next
        if job.mux:
            _pop(job, prev)
            out[n] = job
            n += 1
        else:
            prev = job
        job = nxt
    return n


cdef lambda_limiter *_complete(lambda_job *job) noexcept nogil:
    """Hand a finished job back. Returns the job's limiter when it went idle after its owner retired."""
    cdef lambda_limiter *lim = job.limiter
    cdef bint abandoned
    pthread_mutex_lock(&mtx)
    lim.inflight -= 1
    pthread_cond_signal(&lim.cond)
    if job.detached:
        abandoned = True
        lambda_stat_sub(lim.st_inflight, 1)
    elif lambda_state_cas(&job.outcome, OUTCOME_PENDING, OUTCOME_DONE):
        abandoned = False
        lambda_stat_sub(lim.st_inflight, 1)
        job.state = JOB_DONE
    else:
        # The caller gave up first and counted a timeout: this answer is dropped.
        abandoned = True
        if not job.skipped:
            lambda_stat_add(lim.st_late, 1)
    if not (lim.retired and lim.inflight == 0 and lim.pinned == 0):
        lim = NULL
    pthread_mutex_unlock(&mtx)
    if abandoned:
        job.free_job(job)
    else:
        lambda_done_post(&job.done)     # the last touch: the caller may free the job from now on
    return lim


def name_thread(str name):
    """Give the calling thread an OS-level name (15 bytes at most) for top -H, ps -L and gdb."""
    cdef bytes b = name.encode()[:15]
    pthread_setname_np(pthread_self(), b)


def _blocking_begin():
    """This worker is about to wait for long (the transports call it around connects,
    credential refreshes and reads of bodies of unknown length): not counted awake meanwhile, and
    a queued job wakes another worker."""
    global awake, lambda_blocking_depth
    if lambda_blocking_depth < 0:
        return
    lambda_blocking_depth += 1
    if lambda_blocking_depth == 1:
        # With the GIL: releasing it here would be a hand-off to another worker, for nothing (the
        # queue mutex is never held by anyone waiting for the GIL).
        pthread_mutex_lock(&mtx)
        awake -= 1
        if q_head != NULL and awake == 0 and not _wake_listener():
            _wake_idle()
        pthread_mutex_unlock(&mtx)


def _blocking_end():
    global awake, lambda_blocking_depth
    if lambda_blocking_depth <= 0:
        return
    lambda_blocking_depth -= 1
    if lambda_blocking_depth == 0:
        pthread_mutex_lock(&mtx)
        awake += 1
        pthread_mutex_unlock(&mtx)


cdef struct mux_slot:
    lambda_job *job             # NULL: free
    xchg x


cdef class _Worker:
    """One worker thread of the pool (_worker_main).

    Multiplexed jobs (job.mux: fetches and invoke() through the direct transport) are generators
    of socket work (exchanges for http://, waits for https://); a worker runs up to MUX_MAX of them
    at once: it takes every queued job it can when it is awake, runs their Python parts back to
    back with the GIL, then waits for all their socket work with one poll() without it. Under load
    one wake-up and one GIL acquisition serve several jobs, where one job per thread cost several
    of each (context switches were most of the CPU of a Lambda fetch, BENCHMARKS.md). Other jobs
    (boto3 transport, streaming, selftest) run whole, one at a time, when the worker has nothing
    else in flight."""
    cdef mux_slot slots[MUX_MAX]
    cdef int pmap[MUX_MAX]
    cdef lambda_job *fresh[MUX_MAX]
    cdef int nfresh
    cdef lambda_job *done[MUX_MAX]
    cdef int ndone
    cdef int nactive
    cdef list gens
    cdef list ops
    cdef mux_listener listener
    cdef pollfd pfds_all[MUX_MAX + 1]

    def __cinit__(self):
        cdef int i
        self.listener.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.listener.efd < 0:
            raise OSError("eventfd() failed")
        self.listener.woken = False
        self.listener.next = NULL
        for i in range(MUX_MAX):
            self.slots[i].job = NULL
        self.gens = [None] * MUX_MAX
        self.ops = [None] * MUX_MAX
        self.nfresh = self.ndone = self.nactive = 0

    cdef void _finish(self, int i) noexcept:
        """Slot i's job is done (its generator ended): complete it in the next nogil phase."""
        self.done[self.ndone] = self.slots[i].job
        self.ndone += 1
        self.slots[i].job = NULL
        self.gens[i] = None
        self.ops[i] = None
        self.nactive -= 1

    cdef void _advance(self, int i, object value) noexcept:
        """Resume slot i's generator with value (an exchange's result; None to start it): it
        yields its next socket work (a _netio.Op), which begins at once in the slot, or ends."""
        cdef Op op
        gen = self.gens[i]
        try:
            op = <Op?>gen.send(value)
        except StopIteration:
            self._finish(i)         # done: the results are in the job
            return
        except BaseException as e:
            # A bug of the generator (they catch everything): the job fails with what it has.
            stats_internal(NULL, NULL, "a worker's job", e)
            self._finish(i)
            return
        self.ops[i] = op           # (keeps the bytes the exchange points into alive)
        op.begin(&self.slots[i].x)

    cdef void _start(self, lambda_job *job) noexcept:
        cdef int i
        if not job.detached and job.send_by > 0 and monotonic_now() >= job.send_by:
            # Its timeout passed before a worker took it: never sent (its caller counts it so).
            job.skipped = 1
            self.done[self.ndone] = job
            self.ndone += 1
            return
        if not job.mux:
            # Whole, here: not counted awake meanwhile (the queued jobs go to other workers).
            _blocking_begin()
            try:
                _direct.run(job.start(job))
            except BaseException as e:
                # A bug of the job (they catch everything): it is done with what it has.
                stats_internal(NULL, NULL, "a worker's job", e)
            finally:
                _blocking_end()
            self.done[self.ndone] = job
            self.ndone += 1
            return
        for i in range(MUX_MAX):
            if self.slots[i].job == NULL:
                break
        self.slots[i].job = job
        self.nactive += 1
        try:
            self.gens[i] = job.start(job)
        except BaseException as e:
            stats_internal(NULL, NULL, "starting a worker's job", e)
            self._finish(i)
            return
        self._advance(i, None)

    cdef void _resume_ready(self) noexcept:
        """Resume every job whose exchange is over (a new exchange may end at once: again)."""
        cdef int i
        cdef bint again = True
        while again:
            again = False
            for i in range(MUX_MAX):
                if self.slots[i].job != NULL and self.slots[i].x.state == X_DONE:
                    self._advance(i, xchg_result(&self.slots[i].x))
                    again = True

    cdef void _wait(self) noexcept nogil:
        """Wait for the exchanges in flight, and for new jobs while there is room (as a listener;
        not counted awake meanwhile), then advance the exchanges that can."""
        global awake, listeners
        cdef int i, n = 0, timeout_ms
        cdef double now, first = 0
        cdef bint listen
        cdef uint64_t count
        cdef mux_listener **pp
        cdef pollfd *pfds = self.pfds_all
        cdef bint ready = False
        for i in range(MUX_MAX):
            if self.slots[i].job != NULL and self.slots[i].x.state == X_SEND and \
                    self.slots[i].x.sent == 0:
                # Exchanges started in the last GIL phase: send them now, without the GIL.
                if xchg_progress(&self.slots[i].x):
                    ready = True        # (a stale connection, a failed send)
        if ready:
            return
        for i in range(MUX_MAX):
            if self.slots[i].job != NULL and self.slots[i].x.state != X_DONE:
                pfds[n].fd = self.slots[i].x.fd
                pfds[n].events = xchg_events(&self.slots[i].x)
                pfds[n].revents = 0
                self.pmap[n] = i
                if n == 0 or self.slots[i].x.deadline < first:
                    first = self.slots[i].x.deadline
                n += 1
        if n == 0:
            return
        listen = self.nactive < MUX_MAX
        pthread_mutex_lock(&mtx)
        self.nfresh = _take_more(self.fresh, MUX_MAX - self.nactive)
        if self.nfresh:
            pthread_mutex_unlock(&mtx)
            return
        awake -= 1
        if q_head != NULL and awake == 0:
            # Queued jobs this worker does not take (plain ones, or it is full).
            if not _wake_listener():
                _wake_idle()
        if listen:
            self.listener.woken = False
            self.listener.next = listeners
            listeners = &self.listener
        pthread_mutex_unlock(&mtx)
        pfds[n].fd = self.listener.efd
        pfds[n].events = POLLIN
        pfds[n].revents = 0
        now = monotonic_now()
        timeout_ms = <int>((first - now) * 1000) + 1 if first > now else 0
        poll(pfds, n + 1 if listen else n, timeout_ms)
        pthread_mutex_lock(&mtx)
        if listen and not self.listener.woken:
            pp = &listeners
            while pp[0] != NULL and pp[0] != &self.listener:
                pp = &pp[0].next
            if pp[0] != NULL:
                pp[0] = self.listener.next
            self.listener.next = NULL
            awake += 1
        elif not listen:
            awake += 1
        # (woken: _wake_listener counted this worker awake already)
        self.nfresh = _take_more(self.fresh, MUX_MAX - self.nactive)
        pthread_mutex_unlock(&mtx)
        if listen and self.listener.woken:
            read(self.listener.efd, &count, sizeof(count))
        now = monotonic_now()
        for i in range(n):
            if pfds[i].revents:
                xchg_progress(&self.slots[self.pmap[i]].x)
            if self.slots[self.pmap[i]].x.state != X_DONE and \
                    self.slots[self.pmap[i]].x.deadline <= now:
                xchg_expire(&self.slots[self.pmap[i]].x)

    def run(self):
        cdef lambda_limiter *idle[MUX_MAX]
        cdef int nidle, i
        cdef lambda_limiter *lim
        global awake
        with nogil:
            pthread_mutex_lock(&mtx)
            awake += 1
            pthread_mutex_unlock(&mtx)
            self.fresh[0] = _take()
            self.nfresh = 1 if self.fresh[0] != NULL else 0
        while self.nfresh or self.nactive:
            for i in range(self.nfresh):
                self._start(self.fresh[i])
            self.nfresh = 0
            self._resume_ready()
            nidle = 0
            with nogil:
                for i in range(self.ndone):
                    lim = _complete(self.done[i])
                    if lim != NULL:
                        idle[nidle] = lim
                        nidle += 1
                self.ndone = 0
                if self.nactive == 0:
                    if nidle == 0:
                        self.fresh[0] = _take()
                        self.nfresh = 1 if self.fresh[0] != NULL else 0
                else:
                    self._wait()
            for i in range(nidle):
                idle[i].on_idle(idle[i])
            if self.nactive == 0 and self.nfresh == 0 and nidle:
                with nogil:
                    self.fresh[0] = _take()
                    self.nfresh = 1 if self.fresh[0] != NULL else 0


def _worker_main():
    # Named for top -H, ps -L and gdb: these threads are vmod-lambda's, not Varnish's.
    global lambda_blocking_depth, nthreads, starting
    cdef _Worker w
    pthread_setname_np(pthread_self(), "vmod-lambda")
    lambda_blocking_depth = 0
    with nogil:
        pthread_mutex_lock(&mtx)
        starting -= 1           # (it takes a job, if there is one, next: _Worker.run)
        pthread_mutex_unlock(&mtx)
    try:
        w = _Worker()
    except BaseException as e:
        stats_internal(NULL, NULL, "starting a worker thread", e)
        with nogil:
            pthread_mutex_lock(&mtx)
            nthreads -= 1
            pthread_mutex_unlock(&mtx)
        return
    try:
        w.run()
    finally:
        close(w.listener.efd)


cdef void pool_status(int *threads, int *wanted, int *queued) noexcept nogil:
    cdef lambda_job *p
    pthread_mutex_lock(&mtx)
    threads[0] = nthreads
    wanted[0] = _cap()
    queued[0] = slot_waiters
    p = q_head
    while p != NULL:
        queued[0] += 1
        p = p.next
    pthread_mutex_unlock(&mtx)


cdef int count_fds() noexcept nogil:
    """Open file descriptors of this process (for leak checks), -1 if /proc is not there."""
    cdef DIR *d = opendir("/proc/self/fd")
    cdef int n = 0
    if d == NULL:
        return -1
    while readdir(d) != NULL:
        n += 1
    closedir(d)
    return n - 3        # ".", ".." and the directory's own descriptor


cdef int pool_resize(int delta) except -1:
    """Add delta to the sum of the limits of the live objects (called with the GIL, by their
    constructors and destructors): start the resting workers and the grower with the first object,
    tell workers beyond the cap (all of them, with the last object) to exit.

    Never waits for them: a destructor runs on the CLI thread (vcl.discard), and a worker told to
    exit first ends the calls it has in flight, each within its own deadline (up to the object's
    timeout, 62 s by default). Joining them here blocked the CLI for up to 2 s per object (a VCL
    of 50 objects with calls stuck on an unreachable endpoint: over a minute, and varnishd kills a
    child whose CLI does not answer within cli_timeout). They exit on their own (CPython's threads
    are detached: a finished one holds no OS thread), and the next resize joins them."""
    global target, nthreads, grower_running, starting
    cdef int start = 0
    cdef bint grower = False
    with nogil:
        pthread_mutex_lock(&mtx)
        target += delta
        if target < 0:
            target = 0
        if nthreads < _rest():
            start = _rest() - nthreads
            nthreads += start
            starting += start
        elif nthreads > _cap():
            pthread_cond_broadcast(&work_cond)
        if target > 0 and not grower_running:
            grower_running = 1
            grower = True
        elif target == 0:
            pthread_cond_signal(&grow_cond)     # the grower exits
        pthread_mutex_unlock(&mtx)
    if grower:
        t = threading.Thread(target=_grower_main, name="vmod-lambda-grower", daemon=True)
        try:
            t.start()
        except BaseException:
            with nogil:
                pthread_mutex_lock(&mtx)
                grower_running = 0
                pthread_mutex_unlock(&mtx)
            raise
    if start:
        _start_workers(start)
    _reap()
    return 0


cdef int _start_workers(int n) except -1:
    """Start n workers, already counted in nthreads and starting (those that cannot start are
    uncounted)."""
    global nthreads, starting
    cdef int i
    threading.stack_size(THREAD_STACK)
    _threads[:] = [t for t in _threads if t.is_alive()]
    for i in range(n):
        t = threading.Thread(target=_worker_main, name="vmod-lambda-worker", daemon=True)
        try:
            t.start()
        except BaseException:
            with nogil:
                pthread_mutex_lock(&mtx)
                nthreads -= n - i
                starting -= n - i
                pthread_mutex_unlock(&mtx)
            raise
        _threads.append(t)
    return 0


def _grower_main():
    """Start the workers that _wake_idle asked for, while any object lives. One thread for the
    whole pool: the Varnish threads that queue jobs never run Python."""
    global grow_req, nthreads, grower_running, starting
    cdef int n
    pthread_setname_np(pthread_self(), "vmod-lambda-gro")
    while True:
        with nogil:
            pthread_mutex_lock(&mtx)
            while grow_req == 0 and target > 0:
                pthread_cond_wait(&grow_cond, &mtx)
            if target == 0:
                grow_req = 0
                grower_running = 0
                pthread_mutex_unlock(&mtx)
                break
            n = grow_req
            if nthreads + n > _cap():
                n = _cap() - nthreads
            if n < 0:
                n = 0
            nthreads += n
            starting += n
            grow_req = 0
            pthread_mutex_unlock(&mtx)
        try:
            _start_workers(n)
        except BaseException as e:
            # No thread could start (out of memory, RLIMIT_NPROC): the queued jobs wait for the
            # workers there are (within their deadlines); the next job asks again.
            stats_internal(NULL, NULL, "starting a worker thread", e)


def _reap():
    """Join the workers that have exited (at once: never waits for those told to exit)."""
    for t in _threads:
        if not t.is_alive():
            t.join()
    _threads[:] = [t for t in _threads if t.is_alive()]


