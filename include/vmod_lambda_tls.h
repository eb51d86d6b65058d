/*
 * Per-thread state of the Cython modules, in C because Cython has no thread-local variables. Each
 * module that includes this header (through vmod_lambda_tls.pxd) has its own copy of each; each
 * variable is used by one module only.
 */
#ifndef VMOD_LAMBDA_TLS_H
#define VMOD_LAMBDA_TLS_H

/* _fastevent.pyx: the state of the generator of request ids (0: not seeded yet). */
static __thread unsigned long long lambda_rid_state[2] __attribute__((unused));

/* _handoff.pyx: -1 outside the pool's workers; in a worker, how deep it is in blocking calls. */
static __thread int lambda_blocking_depth __attribute__((unused)) = -1;

#endif
