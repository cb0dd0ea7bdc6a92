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
/* ALS solver (_core_als.c) */
extern PyMethodDef mls_als_methods[];

#endif /* MLS_BINDING_H */
