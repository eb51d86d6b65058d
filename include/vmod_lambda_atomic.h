/*
 * Atomic updates of shared uint64_t counters (the VSC counters of lambda.backend() objects), usable
 * from any thread with or without the GIL. No Varnish header needed.
 */
#ifndef VMOD_LAMBDA_ATOMIC_H
#define VMOD_LAMBDA_ATOMIC_H

#include <stdint.h>
#include <stddef.h>

static inline void
lambda_stat_add(uint64_t *p, uint64_t n)
{
	if (p != NULL && n != 0)
		(void)__atomic_add_fetch(p, n, __ATOMIC_RELAXED);
}

static inline void
lambda_stat_sub(uint64_t *p, uint64_t n)
{
	if (p != NULL && n != 0)
		(void)__atomic_sub_fetch(p, n, __ATOMIC_RELAXED);
}

/* The probe's bitmap: shift in one result, newest in the lowest bit (as VBE.*.happy). */
static inline void
lambda_stat_happy(uint64_t *p, int good)
{
	uint64_t old, nw;

	if (p == NULL)
		return;
	old = __atomic_load_n(p, __ATOMIC_RELAXED);
	do {
		nw = (old << 1) | (good ? 1 : 0);
	} while (!__atomic_compare_exchange_n(p, &old, nw, 0, __ATOMIC_RELAXED,
	    __ATOMIC_RELAXED));
}

/* A job's outcome state (_handoff.pyx): moved once from PENDING, by whoever comes first. */
static inline int
lambda_state_cas(int *p, int expect, int desired)
{
	return (__atomic_compare_exchange_n(p, &expect, desired, 0, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE));
}

static inline int
lambda_state_load(const int *p)
{
	return (__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

/* A time (double, seconds) read and raised by any thread: the throttle hold (_throttle.pyx). */
static inline double
lambda_time_load(const double *p)
{
	double v;

	__atomic_load(p, &v, __ATOMIC_ACQUIRE);
	return (v);
}

static inline void
lambda_time_store(double *p, double v)
{
	__atomic_store(p, &v, __ATOMIC_RELEASE);
}

/* *p = max(*p, v); true when v raised it. */
static inline int
lambda_time_raise(double *p, double v)
{
	double old;

	__atomic_load(p, &old, __ATOMIC_ACQUIRE);
	while (v > old) {
		if (__atomic_compare_exchange(p, &old, &v, 0, __ATOMIC_ACQ_REL,
		    __ATOMIC_ACQUIRE))
			return (1);
	}
	return (0);
}

/*
 * A job's completion (lambda_job.done, _handoff.pyx): the worker posts it once, the job's caller waits
 * for it until an absolute CLOCK_MONOTONIC time, on a private futex, without the worker pool's mutex.
 * lambda_done_post() touches the job only with the one release store: the futex wake that follows
 * takes the word's address, never reads it (FUTEX_PRIVATE_FLAG), so the caller may free the job as
 * soon as it sees the word set. A wake that reaches a new job at the same address is spurious: its
 * waiter checks its own word again.
 */
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

static inline void
lambda_done_post(int *p)
{
	__atomic_store_n(p, 1, __ATOMIC_RELEASE);
	(void)syscall(SYS_futex, p, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

/* 0: posted; ETIMEDOUT: not posted by *abs (CLOCK_MONOTONIC). */
static inline int
lambda_done_wait(int *p, const struct timespec *abs)
{
	long r;

	while (__atomic_load_n(p, __ATOMIC_ACQUIRE) == 0) {
		r = syscall(SYS_futex, p, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, abs, NULL,
		    FUTEX_BITSET_MATCH_ANY);
		if (r == -1 && errno == ETIMEDOUT)
			return (__atomic_load_n(p, __ATOMIC_ACQUIRE) ? 0 : ETIMEDOUT);
		/* 0 (woken, perhaps spuriously), EAGAIN (already posted), EINTR: look again */
	}
	return (0);
}

#endif
