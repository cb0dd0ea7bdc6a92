/* _core_als.c: the binding of the ALS solver (mls_als.c).
 *
 * Called from mlserve/_als.py, which converts the user's scipy CSR matrix
 * to the exact dtypes taken here (indptr int64, indices int32, values
 * float32, factors float32 C-contiguous); anything else is a TypeError
 * here, and every size and index is checked again in C. One C call runs
 * between Py_BEGIN/END_ALLOW_THREADS, so other Python threads run during a
 * fit.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include "mls_als.h"

/* A 1-D array of exactly `type` (a view when it already is one). */
static PyArrayObject *als_vector(PyObject *obj, int type, const char *what)
{
    PyArray_Descr *want = PyArray_DescrFromType(type);
    if (want == NULL) return NULL;
    if (!PyArray_Check(obj) || !PyArray_EquivTypes(PyArray_DESCR((PyArrayObject *)obj), want) ||
        PyArray_NDIM((PyArrayObject *)obj) != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D numpy array of %S", what, (PyObject *)want);
        Py_DECREF(want);
        return NULL;
    }
    /* steals `want` */
    return (PyArrayObject *)PyArray_FromArray((PyArrayObject *)obj, want, NPY_ARRAY_IN_ARRAY);
}

/* A C-contiguous float32 (rows, f) array, used in place. */
static int als_factor_matrix(PyObject *obj, const char *what, int writeable)
{
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT32 ||
        PyArray_NDIM((PyArrayObject *)obj) != 2 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj) ||
        !PyArray_ISALIGNED((PyArrayObject *)obj) ||
        (writeable && !PyArray_ISWRITEABLE((PyArrayObject *)obj))) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s 2-D float32 numpy array", what,
                     writeable ? ", writeable" : "");
        return -1;
    }
    return 0;
}

/* Whether two C-contiguous arrays' bytes overlap. */
static int np_arrays_overlap(PyArrayObject *a, PyArrayObject *b)
{
    const char *a0 = PyArray_BYTES(a), *b0 = PyArray_BYTES(b);
    const char *a1 = a0 + PyArray_NBYTES(a), *b1 = b0 + PyArray_NBYTES(b);
    return a0 < b1 && b0 < a1;
}

typedef struct als_csr_arrays {
    PyArrayObject *indptr, *indices, *values;
    mls_als_csr m;
} als_csr_arrays;

static void als_csr_release(als_csr_arrays *c)
{
    Py_CLEAR(c->indptr);
    Py_CLEAR(c->indices);
    Py_CLEAR(c->values);
}

/* The three CSR arrays with their sizes cross-checked (the contents are
 * checked in C). */
static int als_csr_from(PyObject *indptr, PyObject *indices, PyObject *values,
                        Py_ssize_t n_cols, als_csr_arrays *c)
{
    memset(c, 0, sizeof *c);
    c->indptr = als_vector(indptr, NPY_INT64, "indptr");
    if (c->indptr == NULL) goto fail;
    c->indices = als_vector(indices, NPY_INT32, "indices");
    if (c->indices == NULL) goto fail;
    c->values = als_vector(values, NPY_FLOAT32, "values");
    if (c->values == NULL) goto fail;
    npy_intp n_ptr = PyArray_DIM(c->indptr, 0), nnz = PyArray_DIM(c->indices, 0);
    if (n_ptr < 1) {
        PyErr_SetString(PyExc_ValueError, "indptr must have at least one entry (n_rows + 1)");
        goto fail;
    }
    if (PyArray_DIM(c->values, 0) != nnz) {
        PyErr_Format(PyExc_ValueError, "indices has %zd entries but values has %zd",
                     (Py_ssize_t)nnz, (Py_ssize_t)PyArray_DIM(c->values, 0));
        goto fail;
    }
    if (n_cols < 0) {
        PyErr_Format(PyExc_ValueError, "n_cols must be >= 0, got %zd", n_cols);
        goto fail;
    }
    c->m = (mls_als_csr){.n_rows = n_ptr - 1, .n_cols = n_cols, .nnz = nnz,
                         .indptr = PyArray_DATA(c->indptr),
                         .indices = PyArray_DATA(c->indices),
                         .values = PyArray_DATA(c->values)};
    return 0;
fail:
    als_csr_release(c);
    return -1;
}

PyDoc_STRVAR(core_als_check_doc,
             "als_check(indptr, indices, values, n_cols, what, /)\n--\n\n"
             "Check a CSR matrix for ALS (structure, indices in range, values finite\n"
             "and >= 0); raises ValueError naming `what` and the first bad entry.");
static PyObject *core_als_check(PyObject *module, PyObject *args)
{
    PyObject *indptr, *indices, *values;
    Py_ssize_t n_cols;
    const char *what;
    if (!PyArg_ParseTuple(args, "OOOns:als_check", &indptr, &indices, &values, &n_cols, &what))
        return NULL;
    als_csr_arrays c;
    if (als_csr_from(indptr, indices, values, n_cols, &c) < 0) return NULL;
    mls_error err = {0};
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_als_check_csr(&c.m, what, &err);
    Py_END_ALLOW_THREADS
    als_csr_release(&c);
    if (status != MLS_STATUS_OK) return mls_raise_from_error(module, &err);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(core_als_transpose_doc,
             "als_transpose(indptr, indices, values, n_cols, /)\n--\n\n"
             "The transpose of a CSR matrix: (indptr int64, indices int32, values float32).");
static PyObject *core_als_transpose(PyObject *module, PyObject *args)
{
    PyObject *indptr, *indices, *values;
    Py_ssize_t n_cols;
    if (!PyArg_ParseTuple(args, "OOOn:als_transpose", &indptr, &indices, &values, &n_cols))
        return NULL;
    als_csr_arrays c;
    if (als_csr_from(indptr, indices, values, n_cols, &c) < 0) return NULL;
    PyObject *t_indptr = NULL, *t_indices = NULL, *t_values = NULL, *result = NULL;
    mls_error err = {0};
    mls_status status = mls_als_check_csr(&c.m, "user_items", &err);
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    npy_intp n_ptr = (npy_intp)n_cols + 1, nnz = (npy_intp)c.m.nnz;
    t_indptr = PyArray_SimpleNew(1, &n_ptr, NPY_INT64);
    t_indices = PyArray_SimpleNew(1, &nnz, NPY_INT32);
    t_values = PyArray_SimpleNew(1, &nnz, NPY_FLOAT32);
    if (t_indptr == NULL || t_indices == NULL || t_values == NULL) goto done;
    Py_BEGIN_ALLOW_THREADS
    status = mls_als_transpose(&c.m, PyArray_DATA((PyArrayObject *)t_indptr),
                               PyArray_DATA((PyArrayObject *)t_indices),
                               PyArray_DATA((PyArrayObject *)t_values), &err);
    Py_END_ALLOW_THREADS
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = PyTuple_Pack(3, t_indptr, t_indices, t_values);
done:
    als_csr_release(&c);
    Py_XDECREF(t_indptr);
    Py_XDECREF(t_indices);
    Py_XDECREF(t_values);
    return result;
}

PyDoc_STRVAR(core_als_solve_doc,
             "als_solve(indptr, indices, values, factors, other, alpha, regularization,\n"
             "          cg_steps, num_threads, /)\n--\n\n"
             "One ALS half-step in place: every row of `factors` (n_rows, f) from `other`\n"
             "(n_cols, f), by cg_steps conjugate-gradient steps warm-started at the row's\n"
             "current value. Confidence 1 + alpha * value. num_threads 0: every CPU.");
static PyObject *core_als_solve(PyObject *module, PyObject *args)
{
    PyObject *indptr, *indices, *values, *factors_obj, *other_obj;
    double alpha, regularization;
    int cg_steps, num_threads;
    if (!PyArg_ParseTuple(args, "OOOOOddii:als_solve", &indptr, &indices, &values, &factors_obj,
                          &other_obj, &alpha, &regularization, &cg_steps, &num_threads))
        return NULL;
    if (als_factor_matrix(factors_obj, "factors", 1) < 0 ||
        als_factor_matrix(other_obj, "other", 0) < 0)
        return NULL;
    PyArrayObject *factors = (PyArrayObject *)factors_obj, *other = (PyArrayObject *)other_obj;
    if (PyArray_DIM(factors, 1) != PyArray_DIM(other, 1)) {
        PyErr_Format(PyExc_ValueError, "factors has %zd columns but other has %zd",
                     (Py_ssize_t)PyArray_DIM(factors, 1), (Py_ssize_t)PyArray_DIM(other, 1));
        return NULL;
    }
    if (np_arrays_overlap(factors, other)) {
        PyErr_SetString(PyExc_ValueError, "factors and other must not share memory");
        return NULL;
    }
    als_csr_arrays c;
    if (als_csr_from(indptr, indices, values, (Py_ssize_t)PyArray_DIM(other, 0), &c) < 0)
        return NULL;
    if (c.m.n_rows != PyArray_DIM(factors, 0)) {
        PyErr_Format(PyExc_ValueError, "the matrix has %zd rows but factors has %zd",
                     (Py_ssize_t)c.m.n_rows, (Py_ssize_t)PyArray_DIM(factors, 0));
        als_csr_release(&c);
        return NULL;
    }
    mls_error err = {0};
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_als_solve(&c.m, PyArray_DATA(factors), PyArray_DATA(other),
                           (int64_t)PyArray_DIM(factors, 1), alpha, regularization, cg_steps,
                           num_threads, &err);
    Py_END_ALLOW_THREADS
    als_csr_release(&c);
    if (status != MLS_STATUS_OK) return mls_raise_from_error(module, &err);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(core_als_gram_doc,
             "als_gram(other, regularization, /)\n--\n\n"
             "other.T @ other + regularization * I, (f, f) float32 (BLAS ssyrk).");
static PyObject *core_als_gram(PyObject *module, PyObject *args)
{
    PyObject *other_obj;
    double regularization;
    if (!PyArg_ParseTuple(args, "Od:als_gram", &other_obj, &regularization)) return NULL;
    if (als_factor_matrix(other_obj, "other", 0) < 0) return NULL;
    PyArrayObject *other = (PyArrayObject *)other_obj;
    npy_intp f = PyArray_DIM(other, 1);
    if (f < 1 || f > MLS_ALS_MAX_FACTORS) {
        PyErr_Format(PyExc_ValueError, "other must have between 1 and %d columns, got %zd",
                     MLS_ALS_MAX_FACTORS, (Py_ssize_t)f);
        return NULL;
    }
    npy_intp dims[2] = {f, f};
    PyObject *gram = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (gram == NULL) return NULL;
    mls_error err = {0};
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_als_gram(PyArray_DATA(other), (int64_t)PyArray_DIM(other, 0), (int64_t)f,
                          regularization, PyArray_DATA((PyArrayObject *)gram), &err);
    Py_END_ALLOW_THREADS
    if (status != MLS_STATUS_OK) {
        Py_DECREF(gram);
        return mls_raise_from_error(module, &err);
    }
    return gram;
}

PyDoc_STRVAR(core_als_fold_in_doc,
             "als_fold_in(indptr, indices, values, other, gram, alpha, /)\n--\n\n"
             "Exact least-squares factors (n_rows, f) float32 for new rows whose entries\n"
             "index the rows of `other` (n_cols, f), without changing `other`; gram is\n"
             "als_gram(other, regularization).");
static PyObject *core_als_fold_in(PyObject *module, PyObject *args)
{
    PyObject *indptr, *indices, *values, *other_obj, *gram_obj;
    double alpha;
    if (!PyArg_ParseTuple(args, "OOOOOd:als_fold_in", &indptr, &indices, &values, &other_obj,
                          &gram_obj, &alpha))
        return NULL;
    if (als_factor_matrix(other_obj, "other", 0) < 0 ||
        als_factor_matrix(gram_obj, "gram", 0) < 0)
        return NULL;
    PyArrayObject *other = (PyArrayObject *)other_obj, *gram = (PyArrayObject *)gram_obj;
    npy_intp f = PyArray_DIM(other, 1);
    if (PyArray_DIM(gram, 0) != f || PyArray_DIM(gram, 1) != f) {
        PyErr_Format(PyExc_ValueError, "gram must be (%zd, %zd) for %zd factors, got (%zd, %zd)",
                     (Py_ssize_t)f, (Py_ssize_t)f, (Py_ssize_t)f,
                     (Py_ssize_t)PyArray_DIM(gram, 0), (Py_ssize_t)PyArray_DIM(gram, 1));
        return NULL;
    }
    als_csr_arrays c;
    if (als_csr_from(indptr, indices, values, (Py_ssize_t)PyArray_DIM(other, 0), &c) < 0)
        return NULL;
    npy_intp dims[2] = {(npy_intp)c.m.n_rows, f};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL) {
        als_csr_release(&c);
        return NULL;
    }
    mls_error err = {0};
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_als_fold_in(&c.m, PyArray_DATA(other), (int64_t)f, PyArray_DATA(gram), alpha,
                             PyArray_DATA((PyArrayObject *)out), &err);
    Py_END_ALLOW_THREADS
    als_csr_release(&c);
    if (status != MLS_STATUS_OK) {
        Py_DECREF(out);
        return mls_raise_from_error(module, &err);
    }
    return out;
}

static PyObject *core_als_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:s,s:i}", "kernel", mls_als_kernel_name(), "default_threads",
                         mls_als_thread_count(0));
}

PyMethodDef mls_als_methods[] = {
    {"als_check", core_als_check, METH_VARARGS, core_als_check_doc},
    {"als_transpose", core_als_transpose, METH_VARARGS, core_als_transpose_doc},
    {"als_solve", core_als_solve, METH_VARARGS, core_als_solve_doc},
    {"als_gram", core_als_gram, METH_VARARGS, core_als_gram_doc},
    {"als_fold_in", core_als_fold_in, METH_VARARGS, core_als_fold_in_doc},
    {"als_info", core_als_info, METH_NOARGS,
     "als_info()\n--\n\nThe ALS kernel variant this CPU runs (avx512, avx2, c) and the\n"
     "threads a fit uses by default (the CPUs this process may run on)."},
    {NULL, NULL, 0, NULL},
};
