/* _core_topk.c: the binding of the recommender family (mls_topk.h).
 *
 * _core.topk(model, queries, k, exclude_indptr, exclude_indices, candidates,
 * cosine) -> (indices int64 (n, k), scores (n, k) of the model dtype).
 * mlserve/_recommender.py turns ids, dicts and CSR matrices into these
 * arrays; this layer only checks types and lengths (the C side checks
 * every value) and releases the GIL for the one C call.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include "mls_model.h"
#include "mls_topk.h"

/* obj as a C-contiguous 1-D int64 array (a new reference), or NULL with an
 * exception naming `what`. */
static PyArrayObject *as_index_vector(PyObject *obj, const char *what)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, NPY_INT64, 1, 1,
                                                          NPY_ARRAY_IN_ARRAY);
    if (arr == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D array of int64 indices", what);
    }
    return arr;
}

PyDoc_STRVAR(core_topk_doc,
             "topk(model, queries, k, exclude_indptr, exclude_indices, candidates, cosine,"
             " full_scan=False, return_rescored=False, /)"
             "\n--\n\n"
             "Exact top-k items of a recommender for each query row (see csrc/mls_topk.h).\n"
             "queries: (n, d) of the model dtype; exclude_*: a CSR pair or None; candidates:\n"
             "strictly increasing item indices or None. Returns (indices, scores), best "
             "first;\n-1 / -inf where exclusions leave fewer than k items. full_scan: score every\n"
             "item in float (no two-stage scan); return_rescored: also the number of items\n"
             "the two-stage scan rescored per query (-1 where a query took the full scan).\n");
static PyObject *core_topk(PyObject *module, PyObject *args)
{
    PyObject *model_obj, *queries_obj, *indptr_obj, *indices_obj, *cand_obj;
    long long k;
    int cosine, full = 0, want_rescored = 0;
    if (!PyArg_ParseTuple(args, "OOLOOOp|pp:topk", &model_obj, &queries_obj, &k, &indptr_obj,
                          &indices_obj, &cand_obj, &cosine, &full, &want_rescored))
        return NULL;
    const mls_model *m = mls_model_of_object(module, model_obj);
    if (m == NULL) return NULL;
    mls_error err = {0};
    int64_t n_users, n_items, dim;
    if (mls_topk_shape(m, &n_users, &n_items, &dim, &err) != MLS_STATUS_OK)
        return mls_raise_from_error(module, &err);
    int typenum = m->dtype == MLS_DTYPE_FLOAT32 ? NPY_FLOAT32 : NPY_FLOAT64;
    PyArrayObject *Q = NULL, *indptr = NULL, *indices = NULL, *cand = NULL;
    PyObject *out_idx = NULL, *out_scores = NULL, *out_rescored = NULL, *result = NULL;
    Q = (PyArrayObject *)PyArray_FROMANY(queries_obj, typenum, 2, 2,
                                         NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (Q == NULL) goto done;
    npy_intp nq = PyArray_DIM(Q, 0);
    if (PyArray_DIM(Q, 1) != dim) {
        PyErr_Format(PyExc_ValueError, "query vectors must have %lld factors, got %zd",
                     (long long)dim, (Py_ssize_t)PyArray_DIM(Q, 1));
        goto done;
    }
    if ((indptr_obj == Py_None) != (indices_obj == Py_None)) {
        PyErr_SetString(PyExc_TypeError,
                        "exclude_indptr and exclude_indices go together (both or neither)");
        goto done;
    }
    if (indptr_obj != Py_None) {
        indptr = as_index_vector(indptr_obj, "exclude_indptr");
        if (indptr == NULL) goto done;
        indices = as_index_vector(indices_obj, "exclude_indices");
        if (indices == NULL) goto done;
        if (PyArray_DIM(indptr, 0) != nq + 1) {
            PyErr_Format(PyExc_ValueError,
                         "exclude_indptr must have %zd values (one more than the %zd "
                         "queries), got %zd",
                         (Py_ssize_t)(nq + 1), (Py_ssize_t)nq,
                         (Py_ssize_t)PyArray_DIM(indptr, 0));
            goto done;
        }
    }
    if (cand_obj != Py_None) {
        cand = as_index_vector(cand_obj, "candidates");
        if (cand == NULL) goto done;
    }
    npy_intp dims[2] = {nq, k > 0 ? (npy_intp)k : 0};
    if (k < 1 || k > n_items) {
        err = (mls_error){0};
        mls_error_set(&err, MLS_STATUS_ERR_ARGUMENT, "k must be between 1 and the %lld items, got %lld",
                      (long long)n_items, k);
        mls_raise_from_error(module, &err);
        goto done;
    }
    out_idx = PyArray_SimpleNew(2, dims, NPY_INT64);
    out_scores = PyArray_SimpleNew(2, dims, typenum);
    if (out_idx == NULL || out_scores == NULL) goto done;
    if (want_rescored) {
        out_rescored = PyArray_SimpleNew(1, dims, NPY_INT64);
        if (out_rescored == NULL) goto done;
    }
    mls_topk_request req = {
        .queries = PyArray_DATA(Q),
        .n_queries = nq,
        .row_stride = dim,
        .k = k,
        .exclude_indptr = indptr ? PyArray_DATA(indptr) : NULL,
        .exclude_indices = indices ? PyArray_DATA(indices) : NULL,
        .n_excluded = indices ? PyArray_DIM(indices, 0) : 0,
        .candidates = cand ? PyArray_DATA(cand) : NULL,
        .n_candidates = cand ? PyArray_DIM(cand, 0) : 0,
        .cosine = cosine,
        .scan = full ? MLS_TOPK_SCAN_FULL : MLS_TOPK_SCAN_AUTO,
        .rescored = out_rescored ? PyArray_DATA((PyArrayObject *)out_rescored) : NULL,
    };
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_topk_run(m, &req, PyArray_DATA((PyArrayObject *)out_idx),
                          PyArray_DATA((PyArrayObject *)out_scores), &err);
    Py_END_ALLOW_THREADS
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = out_rescored ? PyTuple_Pack(3, out_idx, out_scores, out_rescored)
                          : PyTuple_Pack(2, out_idx, out_scores);
done:
    Py_XDECREF(Q);
    Py_XDECREF(indptr);
    Py_XDECREF(indices);
    Py_XDECREF(cand);
    Py_XDECREF(out_idx);
    Py_XDECREF(out_scores);
    Py_XDECREF(out_rescored);
    return result;
}

PyMethodDef mls_topk_methods[] = {
    {"topk", core_topk, METH_VARARGS, core_topk_doc},
    {NULL, NULL, 0, NULL},
};
