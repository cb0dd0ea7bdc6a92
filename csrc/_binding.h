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

#endif /* MLS_BINDING_H */
