# The handoff between Varnish threads and Python worker threads: a C job queue under one pthread mutex.
#
# A Varnish thread (never holding the GIL) submits a job and waits on the job's futex (job.done, posted by
# the worker once the outcome is decided; no mutex taken on the way out) until the job is done or its
# deadline passes. A Python worker takes the job in nogil code, runs it (job.start)
# with the GIL, and completes it. A job whose waiter gave up while it ran is "abandoned": the worker frees it.
#
# Lock order: nobody takes the GIL while holding the queue mutex.

from libc.stdint cimport uint64_t
from posix.time cimport timespec
from posix_thread cimport pthread_cond_t
from vmod_lambda._stats cimport lambda_outcome

cdef enum:
    JOB_MAGIC = 0x6a6f6221

cdef enum job_state:
    JOB_NEW = 0
    JOB_QUEUED = 1
    JOB_RUNNING = 2
    JOB_DONE = 3
    JOB_ABANDONED = 4

# A job's outcome (lambda_job.outcome, C atomics): PENDING until the worker finishes it (DONE) or
# its caller's deadline passes first (ABANDONED). Whoever moves it from PENDING decides: DONE, the
# caller counts and logs the worker's result as it applies it; ABANDONED, the caller counts a
# timeout and the worker drops the answer, counting it in `late` only.
cdef enum:
    OUTCOME_PENDING = 0
    OUTCOME_DONE = 1
    OUTCOME_ABANDONED = 2

# What submit_wait() returns.
cdef enum submit_result:
    SUBMIT_DONE = 0          # the job ran; its results are the caller's
    SUBMIT_BUSY = 1          # the deadline passed while `limit` jobs of the limiter were in flight
    SUBMIT_TIMEOUT = 2       # the deadline passed while the job was queued (or before a worker
                             # started it): nothing was sent; the caller frees it
    SUBMIT_ABANDONED = 3     # the deadline passed while the job ran; the worker frees it
    SUBMIT_STOPPED = 4       # no worker pool runs

cdef struct lambda_job
cdef struct lambda_limiter

ctypedef object (*job_start_fn)(lambda_job *job)
ctypedef void (*job_free_fn)(lambda_job *job) noexcept nogil
ctypedef void (*limiter_idle_fn)(lambda_limiter *lim) noexcept

# Caps the jobs of one object in flight (queued or running). The limiter outlives its object until the
# last of its jobs is done: limiter_retire() hands the final release to on_idle.
cdef struct lambda_limiter:
    int inflight
    int limit
    int retired
    int pinned                 # probes about to wait or waiting for a slot (limiter_pin): the
                               # limiter stays alive until they leave
    limiter_idle_fn on_idle
    pthread_cond_t cond
    # The owner's counters (VSC gauges and the queue wait), or NULL: moved under the queue mutex.
    uint64_t *st_queued
    uint64_t *st_inflight
    uint64_t *st_wait_us
    uint64_t *st_late          # answers that came after their caller gave up
    double max_wait            # the longest wait for a slot (max_queue_wait), seconds; < 0: until
                               # the call's timeout (its send_by, else the deadline given)

cdef struct lambda_job:
    unsigned magic
    job_state state
    lambda_job *next
    lambda_limiter *limiter
    # The one way a job runs: called by a worker with the GIL, returns the job as a generator of
    # socket work (_netio.Op; vmod_lambda.transport.direct.run() documents it; it must not raise),
    # which the worker runs alongside the other such jobs it has in flight when mux is set, or
    # whole, with direct.run(), when it is not (_Worker). A job with no socket work of its own (a
    # streamed fetch, the selftest) is a generator that yields nothing.
    job_start_fn start
    int mux
    job_free_fn free_job       # frees an abandoned or detached job
    int detached               # submitted with submit_detached(): nobody waits, the worker frees it
    int done                   # posted by the worker when the job is done (lambda_done_post()):
                               # its caller waits for it without the pool's mutex (submit_wait)
    double t_queued            # monotonic time it was queued, for the queue wait
    double deadline            # monotonic time its caller gives up (submit_wait sets it); the
                               # worker hands it to the transport, which stops reading then
    double send_by             # monotonic time its timeout passes (set by the caller, 0: none):
                               # not sent after it (no slot yet, or no worker yet)
    int outcome                # OUTCOME_*, moved with lambda_state_cas()
    int skipped                # the worker found the deadline passed before it started: not sent

cdef int limiter_init(lambda_limiter *lim, int limit) noexcept nogil
cdef bint limiter_retire(lambda_limiter *lim) noexcept nogil
cdef void limiter_destroy(lambda_limiter *lim) noexcept nogil
# A slot of lim for work that runs outside the pool (a probe, on its prober thread): pin the limiter
# (with the GIL, while its owner is known to be alive), then limiter_acquire() waits without the GIL
# and unpins it; limiter_release() gives the slot back. Both return LIM_IDLE when the caller was the
# last user of a retired limiter: it must then call lim.on_idle(lim) with the GIL.
cdef enum:
    LIM_OK = 0
    LIM_BUSY = 1               # no slot before the deadline
    LIM_GONE = 2               # the owner retired meanwhile
    LIM_IDLE = 4               # (or'ed) the caller must call lim.on_idle
cdef void limiter_pin(lambda_limiter *lim) noexcept nogil
cdef int limiter_acquire(lambda_limiter *lim, double deadline) noexcept nogil
cdef int limiter_release(lambda_limiter *lim) noexcept nogil

cdef double monotonic_now() noexcept nogil
cdef void to_timespec(double t, timespec *ts) noexcept nogil    # monotonic seconds -> timespec
cdef submit_result submit_wait(lambda_job *job, lambda_limiter *lim, double deadline) noexcept nogil
cdef submit_result submit_detached(lambda_job *job, lambda_limiter *lim, double deadline) noexcept nogil
cdef void submit_failure(submit_result rc, lambda_outcome *oc, char *reason, size_t n, double waited,
                         const char *limit_name, double limit, const lambda_limiter *lim) noexcept nogil

cdef int pool_resize(int delta) except -1
cdef void pool_status(int *threads, int *wanted, int *queued) noexcept nogil
cdef int count_fds() noexcept nogil
