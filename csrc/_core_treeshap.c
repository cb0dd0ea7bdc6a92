/* _core_treeshap.c: the binding of TreeSHAP (mls_treeshap.h).
 *
 * _core.tree_shap(arrays, X, n_threads) -> float64 (n, n_outputs, n_features + 1).
 * arrays: the tree_ensemble sections (Model.arrays()) plus "node_cover";
 * this layer checks types and lengths (the C side checks every index) and
 * releases the GIL for the one C call.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include "mls_treeshap.h"

static PyArrayObject *get(PyObject *d, const char *name, int typenum, int ndim)
{
    PyObject *obj = PyDict_GetItemString(d, name);
    if (obj == NULL) {
        PyErr_Format(PyExc_ValueError, "tree_shap needs the section '%s'", name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, typenum, ndim, ndim,
                                                        NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (a == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "section '%s' must be a %d-D array", name, ndim);
    }
    return a;
}

#define N_ARR 10
static const char *names[N_ARR] = {"config", "tree_offsets", "tree_output", "node_feature",
                                   "node_threshold", "node_child", "node_flags",
                                   "leaf_values", "base_score", "node_cover"};
static const int types[N_ARR] = {NPY_INT64, NPY_INT64, NPY_INT32, NPY_INT32, NPY_FLOAT64,
                                 NPY_INT32, NPY_UINT8, NPY_FLOAT64, NPY_FLOAT64, NPY_FLOAT64};

PyDoc_STRVAR(core_tree_shap_doc,
             "tree_shap(arrays, X, n_threads, /)\n--\n\n"
             "Path-dependent TreeSHAP contributions (see csrc/mls_treeshap.h).\n");
static PyObject *core_tree_shap(PyObject *module, PyObject *args)
{
    PyObject *d, *x_obj;
    int n_threads;
    if (!PyArg_ParseTuple(args, "O!Oi:tree_shap", &PyDict_Type, &d, &x_obj, &n_threads))
        return NULL;
    PyArrayObject *a[N_ARR] = {0}, *X = NULL;
    PyObject *out = NULL;
    for (int i = 0; i < N_ARR; i++) {
        a[i] = get(d, names[i], types[i], i == 7 ? 2 : 1);
        if (a[i] == NULL) goto done;
    }
    const int64_t *cfg = PyArray_DATA(a[0]);
    if (PyArray_DIM(a[0], 0) < 8) { /* the tree loader's CFG_SIZE_ */
        PyErr_SetString(PyExc_ValueError, "config must have 8 values");
        goto done;
    }
    mls_treeshap_model m = {0};
    m.n_features = cfg[0];
    m.n_outputs = cfg[1];
    m.aggregate_mean = cfg[3] == 1;
    m.compare = cfg[5] == 1;
    PyObject *thr = PyDict_GetItemString(d, "node_threshold");
    m.threshold_f32 = PyArray_Check(thr) && PyArray_TYPE((PyArrayObject *)thr) == NPY_FLOAT32;
    m.n_trees = PyArray_DIM(a[1], 0) - 1;
    m.n_nodes = PyArray_DIM(a[3], 0);
    m.n_leaves = PyArray_DIM(a[7], 0);
    m.leaf_width = PyArray_DIM(a[7], 1);
    if (m.n_trees < 1 || PyArray_DIM(a[2], 0) != m.n_trees || PyArray_DIM(a[4], 0) != m.n_nodes ||
        PyArray_DIM(a[5], 0) != m.n_nodes || PyArray_DIM(a[6], 0) != m.n_nodes ||
        PyArray_DIM(a[9], 0) != m.n_nodes || PyArray_DIM(a[8], 0) != m.n_outputs) {
        PyErr_SetString(PyExc_ValueError, "tree_shap: the sections' lengths do not agree");
        goto done;
    }
    m.tree_offsets = PyArray_DATA(a[1]);
    m.tree_output = PyArray_DATA(a[2]);
    m.node_feature = PyArray_DATA(a[3]);
    m.node_threshold = PyArray_DATA(a[4]);
    m.node_child = PyArray_DATA(a[5]);
    m.node_flags = PyArray_DATA(a[6]);
    m.leaf_values = PyArray_DATA(a[7]);
    m.base_score = PyArray_DATA(a[8]);
    m.node_cover = PyArray_DATA(a[9]);
    X = (PyArrayObject *)PyArray_FROMANY(x_obj, NPY_FLOAT64, 2, 2,
                                         NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (X == NULL) goto done;
    if (PyArray_DIM(X, 1) != m.n_features) {
        PyErr_Format(PyExc_ValueError, "X has %zd features, but the model expects %lld",
                     (Py_ssize_t)PyArray_DIM(X, 1), (long long)m.n_features);
        goto done;
    }
    npy_intp dims[3] = {PyArray_DIM(X, 0), (npy_intp)m.n_outputs, (npy_intp)m.n_features + 1};
    if (m.n_outputs < 1 || m.n_features < 1) {
        PyErr_SetString(PyExc_ValueError, "tree_shap: bad config");
        goto done;
    }
    out = PyArray_SimpleNew(3, dims, NPY_FLOAT64);
    if (out == NULL) goto done;
    mls_error err = {0};
    mls_status st;
    Py_BEGIN_ALLOW_THREADS
    st = mls_treeshap(&m, PyArray_DATA(X), PyArray_DIM(X, 0),
                      PyArray_DATA((PyArrayObject *)out), n_threads, &err);
    Py_END_ALLOW_THREADS
    if (st != MLS_STATUS_OK) {
        Py_CLEAR(out);
        mls_raise_from_error(module, &err);
    }
done:
    for (int i = 0; i < N_ARR; i++) Py_XDECREF(a[i]);
    Py_XDECREF(X);
    return out;
}

PyMethodDef mls_treeshap_methods[] = {
    {"tree_shap", core_tree_shap, METH_VARARGS, core_tree_shap_doc},
    {NULL, NULL, 0, NULL},
};
