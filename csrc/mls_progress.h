/* mls_progress.h: the progress/cancel callback of a long fit. Pure C.
 *
 * A fit that can run for seconds takes an optional `const mls_progress *`
 * and reports through it after each unit of work (an L-BFGS iteration, a
 * Lloyd iteration, a pass over the data, ...; the same count may come more
 * than once), always from the thread that called the fit, never
 * from a worker thread. The callback decides how often it does anything
 * costly (the Python binding takes the GIL at most ten times a second, to
 * draw a bar and to notice Ctrl-C). A non-zero return stops the fit: it
 * frees what it allocated and returns MLS_STATUS_ERR_ARGUMENT with the
 * message "the fit was stopped by its progress callback", leaving the
 * caller's outputs unspecified (the caller must not use them).
 */
#ifndef MLS_PROGRESS_H
#define MLS_PROGRESS_H

#include <stdint.h>

/* done: units finished so far (from 1); total: the most there can be (a
 * fit may stop earlier), or 0 when unknown. */
typedef int (*mls_progress_fn)(void *ctx, int64_t done, int64_t total);

typedef struct mls_progress {
    mls_progress_fn fn; /* NULL: no reports */
    void *ctx;
} mls_progress;

/* Reports through p (p or p->fn NULL: nothing); non-zero means stop. */
static inline int mls_progress_report(const mls_progress *p, int64_t done, int64_t total)
{
    return p != NULL && p->fn != NULL ? p->fn(p->ctx, done, total) : 0;
}

#define MLS_PROGRESS_STOPPED_MESSAGE "the fit was stopped by its progress callback"

#endif /* MLS_PROGRESS_H */
