# cython: language_level=3
"""The job queue between Varnish threads and the Python worker pool (see _handoff.pxd)."""

import threading
import time

from libc.string cimport memset
from libc.stdint cimport uint64_t

cdef extern from "vmod_lambda_atomic.h" nogil:
    void lambda_stat_add(uint64_t *p, uint64_t n)
    void lambda_stat_sub(uint64_t *p, uint64_t n)
from posix.time cimport timespec
from posix_thread cimport *

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        pass
    DIR *opendir(const char *)
    dirent *readdir(DIR *)
    int closedir(DIR *)

# The pool is shared by every object of every VCL in the child; its size is the sum of the limits of
# the live limiters, capped here. See vmod_lambda.vcc, "Threads".
cdef int MAX_THREADS
MAX_THREADS = 1024
THREAD_STACK = 8 << 20
JOIN_BUDGET = 2.0       # seconds vcl.discard may spend joining stopped workers (the CLI has a timeout)

# No initializers on C globals: see DESIGN ("module init re-executes them"). Set once below.
cdef pthread_mutex_t mtx
cdef pthread_cond_t work_cond
cdef pthread_condattr_t cond_attr
cdef lambda_job *q_head
cdef lambda_job *q_tail
cdef int target
cdef int nthreads

_threads = []

cdef void _module_init() noexcept:
    global q_head, q_tail, target, nthreads
    pthread_mutex_init(&mtx, NULL)
    pthread_condattr_init(&cond_attr)
    pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC)
    pthread_cond_init(&work_cond, &cond_attr)
    q_head = NULL
    q_tail = NULL
    target = 0
    nthreads = 0

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
    return pthread_cond_init(&lim.cond, &cond_attr)


cdef bint limiter_retire(lambda_limiter *lim) noexcept nogil:
    """Mark the limiter's owner gone. True: nothing is in flight, the caller releases it now.
    False: a worker still runs an abandoned job; the last one to finish calls lim.on_idle."""
    cdef bint idle
    pthread_mutex_lock(&mtx)
    lim.retired = 1
    idle = lim.inflight == 0
    pthread_mutex_unlock(&mtx)
    return idle


cdef int limiter_inflight(lambda_limiter *lim) noexcept nogil:
    cdef int n
    pthread_mutex_lock(&mtx)
    n = lim.inflight
    pthread_mutex_unlock(&mtx)
    return n


cdef void limiter_destroy(lambda_limiter *lim) noexcept nogil:
    pthread_cond_destroy(&lim.cond)


cdef void _unlink(lambda_job *job) noexcept nogil:
    # Under mtx: take a queued job out of the queue.
    global q_head, q_tail
    cdef lambda_job *p = q_head
    cdef lambda_job *prev = NULL
    while p != NULL and p != job:
        prev = p
        p = p.next
    if p == NULL:
        return
    if prev == NULL:
        q_head = job.next
    else:
        prev.next = job.next
    if q_tail == job:
        q_tail = prev
    job.next = NULL
    lambda_stat_sub(job.limiter.st_queued, 1)


cdef submit_result _queue(lambda_job *job, lambda_limiter *lim, timespec *ts,
                          int detached) noexcept nogil:
    """Take a slot of lim (waiting until ts) and queue job. SUBMIT_DONE: queued, mtx still held;
    otherwise mtx is released and the job is the caller's again."""
    global q_head, q_tail
    cdef int rc
    job.magic = JOB_MAGIC
    job.limiter = lim
    job.next = NULL
    job.state = JOB_NEW
    job.detached = detached
    pthread_cond_init(&job.cond, &cond_attr)

    pthread_mutex_lock(&mtx)
    if target == 0 or nthreads == 0:
        pthread_mutex_unlock(&mtx)
        pthread_cond_destroy(&job.cond)
        return SUBMIT_STOPPED
    while lim.inflight >= lim.limit:
        rc = pthread_cond_timedwait(&lim.cond, &mtx, ts)
        if rc == ETIMEDOUT and lim.inflight >= lim.limit:
            pthread_mutex_unlock(&mtx)
            pthread_cond_destroy(&job.cond)
            return SUBMIT_BUSY
    lim.inflight += 1
    job.state = JOB_QUEUED
    job.t_queued = monotonic_now()
    lambda_stat_add(lim.st_queued, 1)
    if q_tail == NULL:
        q_head = job
    else:
        q_tail.next = job
    q_tail = job
    pthread_cond_signal(&work_cond)
    return SUBMIT_DONE


cdef submit_result submit_wait(lambda_job *job, lambda_limiter *lim, double deadline) noexcept nogil:
    """Queue job and wait for it until deadline (monotonic seconds). Called without the GIL."""
    cdef timespec ts
    cdef int rc
    cdef submit_result r
    to_timespec(deadline, &ts)
    r = _queue(job, lim, &ts, 0)
    if r != SUBMIT_DONE:
        return r
    while job.state != JOB_DONE:
        rc = pthread_cond_timedwait(&job.cond, &mtx, &ts)
        if rc == ETIMEDOUT and job.state != JOB_DONE:
            if job.state == JOB_QUEUED:
                _unlink(job)
                lim.inflight -= 1
                pthread_cond_signal(&lim.cond)
                pthread_mutex_unlock(&mtx)
                pthread_cond_destroy(&job.cond)
                return SUBMIT_TIMEOUT
            # Running: the worker owns it from now on and frees it when it is done.
            job.state = JOB_ABANDONED
            pthread_mutex_unlock(&mtx)
            return SUBMIT_ABANDONED
    pthread_mutex_unlock(&mtx)
    pthread_cond_destroy(&job.cond)
    return SUBMIT_DONE


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


cdef lambda_job *_take() noexcept nogil:
    """Next job for a worker, or NULL when the pool shrank and this worker must exit."""
    global q_head, q_tail, nthreads
    cdef lambda_job *job
    pthread_mutex_lock(&mtx)
    while q_head == NULL and nthreads <= target:
        pthread_cond_wait(&work_cond, &mtx)
    if q_head == NULL:
        nthreads -= 1
        pthread_mutex_unlock(&mtx)
        return NULL
    job = q_head
    q_head = job.next
    if q_head == NULL:
        q_tail = NULL
    job.next = NULL
    job.state = JOB_RUNNING
    lambda_stat_sub(job.limiter.st_queued, 1)
    lambda_stat_add(job.limiter.st_inflight, 1)
    lambda_stat_add(job.limiter.st_wait_us, <uint64_t>((monotonic_now() - job.t_queued) * 1e6))
    pthread_mutex_unlock(&mtx)
    return job


cdef lambda_limiter *_complete(lambda_job *job) noexcept nogil:
    """Hand a finished job back. Returns the job's limiter when it went idle after its owner retired."""
    cdef lambda_limiter *lim = job.limiter
    cdef bint abandoned
    pthread_mutex_lock(&mtx)
    lim.inflight -= 1
    lambda_stat_sub(lim.st_inflight, 1)
    pthread_cond_signal(&lim.cond)
    abandoned = job.state == JOB_ABANDONED or job.detached
    if not abandoned:
        job.state = JOB_DONE
        pthread_cond_signal(&job.cond)
    if not (lim.retired and lim.inflight == 0):
        lim = NULL
    pthread_mutex_unlock(&mtx)
    if abandoned:
        pthread_cond_destroy(&job.cond)
        job.free_job(job)
    return lim


def name_thread(str name):
    """Give the calling thread an OS-level name (15 bytes at most) for top -H, ps -L and gdb."""
    cdef bytes b = name.encode()[:15]
    pthread_setname_np(pthread_self(), b)


def _worker_main():
    cdef lambda_job *job
    cdef lambda_limiter *idle
    # Named for top -H, ps -L and gdb: these threads are vmod-lambda's, not Varnish's.
    pthread_setname_np(pthread_self(), "vmod-lambda")
    with nogil:
        job = _take()
    while job != NULL:
        job.run(job)
        # Hand the job back and take the next one in one GIL release: every release and re-take
        # of the GIL is a possible futex wake-up and context switch with the other workers
        # (BENCHMARKS.md, profile).
        with nogil:
            idle = _complete(job)
            job = NULL
            if idle == NULL:
                job = _take()
        if idle != NULL:
            idle.on_idle(idle)
            with nogil:
                job = _take()


cdef void pool_status(int *threads, int *wanted, int *queued) noexcept nogil:
    cdef lambda_job *p
    pthread_mutex_lock(&mtx)
    threads[0] = nthreads
    wanted[0] = target if target < MAX_THREADS else MAX_THREADS
    queued[0] = 0
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
    """Grow or shrink the pool by delta threads' worth of limits (called with the GIL)."""
    global target, nthreads
    cdef int want, i, start = 0
    with nogil:
        pthread_mutex_lock(&mtx)
        target += delta
        if target < 0:
            target = 0
        want = target if target < MAX_THREADS else MAX_THREADS
        if nthreads < want:
            start = want - nthreads
            nthreads = want
        elif nthreads > want:
            pthread_cond_broadcast(&work_cond)
        pthread_mutex_unlock(&mtx)
    if start:
        threading.stack_size(THREAD_STACK)
        for i in range(start):
            t = threading.Thread(target=_worker_main, name="vmod-lambda-worker", daemon=True)
            try:
                t.start()
            except BaseException:
                with nogil:
                    pthread_mutex_lock(&mtx)
                    nthreads -= start - i
                    pthread_mutex_unlock(&mtx)
                raise
            _threads.append(t)
    _reap(JOIN_BUDGET if delta < 0 else 0.0)
    return 0


def _reap(double budget):
    """Join the workers that exited, waiting at most budget seconds for those told to exit."""
    cdef int running
    end = time.monotonic() + budget
    while True:
        for t in _threads:
            if not t.is_alive():
                t.join()
        _threads[:] = [t for t in _threads if t.is_alive()]
        with nogil:
            pthread_mutex_lock(&mtx)
            running = nthreads
            pthread_mutex_unlock(&mtx)
        if len(_threads) <= running or time.monotonic() >= end:
            return
        time.sleep(0.005)


