/*
 * benchutil.h - the small helpers the benchmarks in bench/ (and the GPU test
 * client, tests/gpu/gpu_client.c) share: a monotonic clock, a comparison for
 * sorting timings, CU(), the check of a CUDA driver call, and a timed copy.
 * Header only; owns no state.
 */
#ifndef PINPOOL_BENCHUTIL_H
#define PINPOOL_BENCHUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* For qsort of doubles, ascending. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#ifdef PINPOOL_HAVE_CUDA
#include "cudaload.h"

/* CU(call): a CUDA driver call (through ipc_cu) that must succeed.  On failure
 * the message ("call: CUDA_ERROR_...: text") goes to CU_FAIL(msg), which the
 * including file defines: how that program reports a failure and exits. */
#define CU(call)                                                                               \
    do {                                                                                       \
        CUresult r_ = (call);                                                                  \
        char b_[160];                                                                          \
        if (r_ != CUDA_SUCCESS)                                                                \
            CU_FAIL(ipc_cuda_strerror(r_, #call, b_, sizeof(b_)));                             \
    } while (0)

/* One copy of n bytes between host and dev on stream st (h2d: to the device),
 * timed with the events e0 and e1: milliseconds in *ms.  Returns the first
 * failing call's result (CU() it). */
static inline CUresult cu_timed_copy(CUstream st, CUevent e0, CUevent e1, CUdeviceptr dev, void *host,
                                     size_t n, bool h2d, float *ms)
{
    CUresult r = ipc_cu.cuEventRecord(e0, st);

    if (r == CUDA_SUCCESS)
        r = h2d ? ipc_cu.cuMemcpyHtoDAsync(dev, host, n, st) : ipc_cu.cuMemcpyDtoHAsync(host, dev, n, st);
    if (r == CUDA_SUCCESS)
        r = ipc_cu.cuEventRecord(e1, st);
    if (r == CUDA_SUCCESS)
        r = ipc_cu.cuEventSynchronize(e1);
    return r == CUDA_SUCCESS ? ipc_cu.cuEventElapsedTime(ms, e0, e1) : r;
}
#endif

#endif
