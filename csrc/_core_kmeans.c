/* _core_kmeans.c: the binding of the k-means fit (mls_kmeans.c).
 *
 * Registered from _core.c through mls_kmeans_methods (as _codec.c is); C
 * statuses become exceptions through mls_raise_from_error only. The fit runs
 * with the GIL released; a progress callable, when given, is called with
 * the GIL taken back after each Lloyd iteration, and an exception it raises
 * (KeyboardInterrupt included: signals are checked there too) stops the fit
 * and reaches the caller.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include "mls_kmeans.h"

/* The GIL is taken only when mls_py_progress_due says so (every iteration
 * for interval 0, else at most every `interval` seconds); then signals are
 * checked and the callable, if any, is called. */
static int call_progress(void *arg, int64_t init, int64_t iteration, double center_shift)
{
    mls_py_progress *ctx = arg;
    if (!mls_py_progress_due(ctx)) return 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    int stop = 0;
    if (PyErr_CheckSignals() < 0) {
        stop = 1;
    } else if (ctx->callable != NULL) {
        PyObject *r = PyObject_CallFunction(ctx->callable, "LLd", (long long)init,
                                            (long long)iteration, center_shift);
        if (r == NULL) stop = 1;
        Py_XDECREF(r);
    }
    if (stop) ctx->failed = 1; /* the exception stays set for the caller */
    PyGILState_Release(gil);
    return stop;
}

PyDoc_STRVAR(kmeans_fit_doc,
             "kmeans_fit(X, sample_weight, n_clusters, init, n_init, max_iter, tol, seed, "
             "n_threads, progress, interval=0.0, /)\n--\n\n"
             "k-means in C. X: C-contiguous float32 or float64 (n, d), finite; "
             "sample_weight: float64 (n,) or None; init: (n_clusters, d) of X's dtype or "
             "None for k-means++; tol: absolute; progress: None or a callable "
             "(init, iteration, center_shift), called with the GIL after an iteration when "
             "`interval` seconds have passed since the last call (0: every iteration); "
             "signals are checked then (Ctrl-C stops the fit). "
             "Returns (centers, labels, inertia, n_iter).\n");
static PyObject *kmeans_fit(PyObject *module, PyObject *args)
{
    PyObject *X_obj, *w_obj, *init_obj, *progress;
    long long n_clusters, n_init, max_iter;
    unsigned long long seed;
    double tol, interval = 0.0;
    int n_threads;
    if (!PyArg_ParseTuple(args, "OOLOLLdKiO|d:kmeans_fit", &X_obj, &w_obj, &n_clusters,
                          &init_obj, &n_init, &max_iter, &tol, &seed, &n_threads, &progress,
                          &interval))
        return NULL;
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
        return NULL;
    }
    if (!PyArray_Check(X_obj) || PyArray_NDIM((PyArrayObject *)X_obj) != 2 ||
        (PyArray_TYPE((PyArrayObject *)X_obj) != NPY_FLOAT64 &&
         PyArray_TYPE((PyArrayObject *)X_obj) != NPY_FLOAT32)) {
        PyErr_SetString(PyExc_TypeError, "X must be a 2-D float32 or float64 array");
        return NULL;
    }
    const int typenum = PyArray_TYPE((PyArrayObject *)X_obj);
    PyArrayObject *X = (PyArrayObject *)PyArray_FROMANY(X_obj, typenum, 2, 2,
                                                        NPY_ARRAY_IN_ARRAY);
    PyArrayObject *w = NULL, *init = NULL;
    PyObject *centers = NULL, *labels = NULL, *result = NULL;
    if (X == NULL) goto done;
    const npy_intp n = PyArray_DIM(X, 0), d = PyArray_DIM(X, 1);
    if (w_obj != Py_None) {
        w = (PyArrayObject *)PyArray_FROMANY(w_obj, NPY_FLOAT64, 1, 1,
                                             NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
        if (w == NULL) goto done;
        if (PyArray_DIM(w, 0) != n) {
            PyErr_Format(PyExc_ValueError, "sample_weight has %zd values, X has %zd rows",
                         (Py_ssize_t)PyArray_DIM(w, 0), (Py_ssize_t)n);
            goto done;
        }
    }
    if (n_clusters < 1) {
        PyErr_Format(PyExc_ValueError, "n_clusters must be >= 1, got %lld", n_clusters);
        goto done;
    }
    if (init_obj != Py_None) {
        init = (PyArrayObject *)PyArray_FROMANY(init_obj, typenum, 2, 2,
                                                NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
        if (init == NULL) goto done;
        if (PyArray_DIM(init, 0) != n_clusters || PyArray_DIM(init, 1) != d) {
            PyErr_Format(PyExc_ValueError,
                         "init must have shape (%lld, %zd) (n_clusters, n_features), got "
                         "(%zd, %zd)",
                         n_clusters, (Py_ssize_t)d, (Py_ssize_t)PyArray_DIM(init, 0),
                         (Py_ssize_t)PyArray_DIM(init, 1));
            goto done;
        }
    }
    npy_intp cdims[2] = {(npy_intp)n_clusters, d};
    centers = PyArray_SimpleNew(2, cdims, typenum);
    labels = PyArray_SimpleNew(1, (npy_intp *)&n, NPY_INT64);
    if (centers == NULL || labels == NULL) goto done;
    mls_py_progress ctx;
    mls_py_progress_init(&ctx, progress, interval);
    mls_kmeans_fit_params p = {
        .n_clusters = n_clusters,
        .max_iter = max_iter,
        .tol = tol,
        .n_init = n_init,
        .seed = (uint64_t)seed,
        .init = init ? PyArray_DATA(init) : NULL,
        .n_local_trials = 0,
        .n_threads = n_threads,
        .progress = call_progress, /* always: Ctrl-C is noticed even without a callable */
        .progress_ctx = &ctx,
    };
    const mls_dtype dtype = typenum == NPY_FLOAT64 ? MLS_DTYPE_FLOAT64 : MLS_DTYPE_FLOAT32;
    mls_tensor Xt = {PyArray_DATA(X), dtype, n, d, d};
    mls_error err = {0};
    mls_status status;
    double inertia = 0;
    int64_t n_iter = 0;
    Py_BEGIN_ALLOW_THREADS
    status = mls_kmeans_fit(&Xt, w ? PyArray_DATA(w) : NULL, &p,
                            PyArray_DATA((PyArrayObject *)centers),
                            PyArray_DATA((PyArrayObject *)labels), &inertia, &n_iter, &err);
    Py_END_ALLOW_THREADS
    if (ctx.failed) goto done; /* the progress callable's exception */
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = Py_BuildValue("(OOdL)", centers, labels, inertia, (long long)n_iter);
done:
    Py_XDECREF(X);
    Py_XDECREF(w);
    Py_XDECREF(init);
    Py_XDECREF(centers);
    Py_XDECREF(labels);
    return result;
}

PyMethodDef mls_kmeans_methods[] = {
    {"kmeans_fit", kmeans_fit, METH_VARARGS, kmeans_fit_doc},
    {NULL, NULL, 0, NULL},
};
