/* _core_progress.c: the Python side of a fit's progress/cancel callback
 * (mls_progress.h).
 *
 * The C fit runs with the GIL released and reports after each unit of work.
 * Reading the monotonic clock costs nanoseconds and needs no GIL, so a report
 * takes the GIL only when `interval` seconds have passed since the last time
 * it did (0.1 s: at most ten times a second), or on every report when the
 * user passed a callable that asked for every iteration (interval 0). With
 * the GIL it checks for signals (Ctrl-C raises KeyboardInterrupt here) and
 * calls the Python callable, if any; an exception from either stops the fit
 * and stays set for the binding to return.
 */
#include "_binding.h"

#include <time.h>

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void mls_py_progress_init(mls_py_progress *p, PyObject *callable, double interval)
{
    p->callable = callable == Py_None ? NULL : callable;
    p->interval = interval;
    p->last = monotonic_seconds();
    p->failed = 0;
}

int mls_py_progress_due(mls_py_progress *p)
{
    if (p->interval <= 0) return 1;
    const double now = monotonic_seconds();
    if (now - p->last < p->interval) return 0;
    p->last = now;
    return 1;
}

int mls_py_progress_report(void *ctx, int64_t done, int64_t total)
{
    mls_py_progress *p = ctx;
    if (!mls_py_progress_due(p)) return 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() < 0;
    if (!stop && p->callable != NULL) {
        PyObject *r = PyObject_CallFunction(p->callable, "LL", (long long)done, (long long)total);
        stop = r == NULL;
        Py_XDECREF(r);
    }
    if (stop) p->failed = 1; /* the exception stays set for the caller */
    PyGILState_Release(gil);
    return stop;
}
