/* _binding.h: what the binding files (_core.c and the per-concern files
 * next to it, e.g. _codec.c) share. Only binding files include Python.h. */
#ifndef MLS_BINDING_H
#define MLS_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mls_status.h"

/* The one place a C status becomes a Python exception (defined in _core.c).
 * Always returns NULL. */
PyObject *mls_raise_from_error(PyObject *module, const mls_error *err);

/* Functions other binding files add to the module (NULL-terminated). */
extern PyMethodDef mls_codec_methods[];
extern PyMethodDef mls_kmeans_methods[]; /* _core_kmeans.c */
/* ALS solver (_core_als.c) */
extern PyMethodDef mls_als_methods[];

/* The mls_model inside an mlserve.Model `obj` (borrowed, lives as long as
 * obj), or NULL with a TypeError set. Defined in _core.c. */
struct mls_model;
const struct mls_model *mls_model_of_object(PyObject *module, PyObject *obj);

/* The recommender's functions (_core_topk.c). */
extern PyMethodDef mls_topk_methods[];

/* Pipeline column transforms (_core_transform.c). */
extern PyMethodDef mls_transform_methods[];

/* TreeSHAP (_core_treeshap.c). */
extern PyMethodDef mls_treeshap_methods[];

/* A fit's progress/cancel callback for mls_progress (_core_progress.c): set
 * up with the GIL, reported without it (mls_py_progress_report is an
 * mls_progress_fn). It takes the GIL when `interval` seconds have passed
 * since it last did (every report for 0), checks signals (Ctrl-C) and calls
 * `callable(done, total)` (borrowed; None or NULL: signals only). After the
 * fit, `failed` set means an exception is set: return NULL. */
typedef struct mls_py_progress {
    PyObject *callable;
    double interval;
    double last;
    int failed;
} mls_py_progress;
#define MLS_PY_PROGRESS_INTERVAL 0.1 /* seconds: at most ten GIL takes a second */
void mls_py_progress_init(mls_py_progress *p, PyObject *callable, double interval);
/* 1 when the GIL may be taken now (and the clock restarts), else 0. No GIL needed. */
int mls_py_progress_due(mls_py_progress *p);
int mls_py_progress_report(void *ctx, int64_t done, int64_t total);

#endif /* MLS_BINDING_H */
