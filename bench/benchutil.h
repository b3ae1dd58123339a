/*
 * benchutil.h - the small helpers every benchmark in bench/ uses: a monotonic
 * clock and a comparison for sorting timings.
 */
#ifndef PINPOOL_BENCHUTIL_H
#define PINPOOL_BENCHUTIL_H

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

#endif
