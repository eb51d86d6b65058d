/*
 * The counters of lambda.backend() objects: VSC_lambda.h, generated into the build directory by the
 * installed Varnish's vsctool from include/VSC_lambda.vsc, and the atomic updates.
 */
#ifndef VMOD_LAMBDA_STATS_H
#define VMOD_LAMBDA_STATS_H

#include "vmod_lambda_compat.h"
#include "VSC_lambda.h"
#include "vmod_lambda_atomic.h"

typedef struct VSC_lambda lambda_vsc;
typedef struct vsc_seg lambda_vsc_seg;

#endif
