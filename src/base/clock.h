/* A monotonic clock for stage timings. */
#ifndef LP_CLOCK_H
#define LP_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double lp_seconds(void);

#endif
