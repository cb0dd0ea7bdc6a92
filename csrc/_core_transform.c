/* _core_transform.c: the binding of the pipeline column transforms
 * (mls_transform.c). With the GIL: parse the ops, take each numeric column
 * as a float64 array and each string column as pointers to its values' UTF-8
 * (no Python object is created per value), allocate the output; then one C
 * call without the GIL. Statuses become exceptions via mls_raise_from_error.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "mls_model.h"
#include "mls_pipeline.h"

#include "mls_transform.h"

typedef struct op_keep {
    PyObject *cat_bytes;  /* bytes */
    PyArrayObject *offsets; /* int64 */
    PyArrayObject *cat_out; /* int64, or NULL */
    PyArrayObject *edges;   /* float64 inner bin edges, or NULL */
} op_keep;

static int parse_op(PyObject *t, mls_transform_op *op, op_keep *keep, Py_ssize_t i)
{
    PyObject *cats = Py_None, *offs = Py_None;
    long long in_col, out_col, indicator = -1, unknown_mode = 0, missing_category = -1;
    long long width = -1, unknown_out = -1;
    int func = 0, bins_onehot = 0;
    double mul2 = 1.0, add2 = 0.0;
    long long n_bins = 0;
    PyObject *edges = Py_None;
    PyObject *cat_out = Py_None;
    double fill = 0.0, mul = 1.0, add = 0.0, unknown_value = 0.0;
    int kind;
    if (!PyTuple_Check(t)) {
        PyErr_Format(PyExc_TypeError, "transform %zd: expected a tuple", i);
        return -1;
    }
    if (!PyArg_ParseTuple(t, "iLLdddLOOLd|LOLLiddOLi:transform op", &kind, &in_col, &out_col,
                          &fill, &mul, &add, &indicator, &cats, &offs, &unknown_mode,
                          &unknown_value, &missing_category, &cat_out, &width, &unknown_out,
                          &func, &mul2, &add2, &edges, &n_bins, &bins_onehot))
        return -1;
    op->kind = kind;
    op->in_col = in_col;
    op->out_col = out_col;
    op->fill = fill;
    op->mul = mul;
    op->add = add;
    op->indicator_col = indicator;
    op->unknown_mode = (int)unknown_mode;
    op->unknown_value = unknown_value;
    op->missing_category = missing_category;
    op->cat_out = NULL;
    op->width = width;
    op->unknown_out = unknown_out;
    op->func = func;
    op->mul2 = mul2;
    op->add2 = add2;
    op->edges = NULL;
    op->n_bins = n_bins;
    op->bins_onehot = bins_onehot;
    if (kind == MLS_TRANSFORM_BINS && edges != Py_None) {
        keep->edges = (PyArrayObject *)PyArray_FROM_OTF(edges, NPY_FLOAT64, NPY_ARRAY_IN_ARRAY);
        if (keep->edges == NULL) return -1;
        if (PyArray_NDIM(keep->edges) != 1 || PyArray_DIM(keep->edges, 0) != n_bins - 1) {
            PyErr_Format(PyExc_ValueError, "transform %zd: n_bins - 1 inner edges expected", i);
            return -1;
        }
        op->edges = PyArray_DATA(keep->edges);
    }
    op->n_categories = 0;
    op->cat_bytes = NULL;
    op->cat_offsets = NULL;
    op->cat_bytes_len = 0;
    if (kind != MLS_TRANSFORM_ONEHOT && kind != MLS_TRANSFORM_ORDINAL) return 0; /* C checks */
    if (!PyBytes_Check(cats)) {
        PyErr_Format(PyExc_TypeError, "transform %zd: categories must be bytes", i);
        return -1;
    }
    keep->cat_bytes = Py_NewRef(cats);
    keep->offsets = (PyArrayObject *)PyArray_FROM_OTF(offs, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    if (keep->offsets == NULL) return -1;
    if (PyArray_NDIM(keep->offsets) != 1 || PyArray_DIM(keep->offsets, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "transform %zd: offsets must be 1-d, n_categories + 1",
                     i);
        return -1;
    }
    op->n_categories = PyArray_DIM(keep->offsets, 0) - 1;
    op->cat_offsets = PyArray_DATA(keep->offsets);
    op->cat_bytes = PyBytes_AS_STRING(cats);
    op->cat_bytes_len = PyBytes_GET_SIZE(cats);
    if (cat_out != Py_None) {
        keep->cat_out = (PyArrayObject *)PyArray_FROM_OTF(cat_out, NPY_INT64, NPY_ARRAY_IN_ARRAY);
        if (keep->cat_out == NULL) return -1;
        if (PyArray_NDIM(keep->cat_out) != 1 ||
            PyArray_DIM(keep->cat_out, 0) != op->n_categories) {
            PyErr_Format(PyExc_ValueError, "transform %zd: cat_out must have one entry per "
                         "category", i);
            return -1;
        }
        op->cat_out = PyArray_DATA(keep->cat_out);
    }
    return 0;
}

/* A parsed transform: its ops, the Python objects their categories point
 * into, and the category hash tables built once (a capsule's pointer). */
typedef struct plan {
    Py_ssize_t n_ops;
    mls_transform_op *ops;
    op_keep *keep;
    mls_transform_tables *tables;
} plan;

#define PLAN_CAPSULE "mlserve._core.transform_plan"

static void plan_free(plan *p)
{
    if (p == NULL) return;
    if (p->keep != NULL)
        for (Py_ssize_t i = 0; i < p->n_ops; i++) {
            Py_XDECREF(p->keep[i].cat_bytes);
            Py_XDECREF(p->keep[i].offsets);
            Py_XDECREF(p->keep[i].cat_out);
            Py_XDECREF(p->keep[i].edges);
        }
    mls_transform_tables_free(p->tables);
    free(p->ops);
    free(p->keep);
    free(p);
}

static void plan_capsule_free(PyObject *capsule)
{
    plan_free(PyCapsule_GetPointer(capsule, PLAN_CAPSULE));
}

/* Parse a list of op tuples; tables too when build_tables. NULL with an exception. */
static plan *plan_parse(PyObject *module, PyObject *ops_obj, int build_tables)
{
    if (!PyList_Check(ops_obj)) {
        PyErr_SetString(PyExc_TypeError, "ops must be a list");
        return NULL;
    }
    Py_ssize_t n_ops = PyList_GET_SIZE(ops_obj);
    plan *p = calloc(1, sizeof(*p));
    if (p == NULL) return (plan *)PyErr_NoMemory();
    p->ops = calloc((size_t)n_ops + 1, sizeof(*p->ops));
    p->keep = calloc((size_t)n_ops + 1, sizeof(*p->keep));
    if (p->ops == NULL || p->keep == NULL) {
        plan_free(p);
        return (plan *)PyErr_NoMemory();
    }
    p->n_ops = n_ops;
    for (Py_ssize_t i = 0; i < n_ops; i++)
        if (parse_op(PyList_GET_ITEM(ops_obj, i), &p->ops[i], &p->keep[i], i) < 0) {
            plan_free(p);
            return NULL;
        }
    if (build_tables) {
        mls_error err = {0};
        mls_status st;
        Py_BEGIN_ALLOW_THREADS
        st = mls_transform_tables_build(p->ops, n_ops, &p->tables, &err);
        Py_END_ALLOW_THREADS
        if (st != MLS_STATUS_OK) {
            plan_free(p);
            mls_raise_from_error(module, &err);
            return NULL;
        }
    }
    return p;
}

PyDoc_STRVAR(transform_plan_doc,
             "transform_plan(ops, /)\n--\n\n"
             "Parse ops (see transform_apply) and build their category hash tables once; "
             "the result is passed to transform_apply in place of ops.\n");
static PyObject *transform_plan(PyObject *module, PyObject *ops_obj)
{
    plan *p = plan_parse(module, ops_obj, 1);
    if (p == NULL) return NULL;
    PyObject *capsule = PyCapsule_New(p, PLAN_CAPSULE, plan_capsule_free);
    if (capsule == NULL) plan_free(p);
    return capsule;
}

/* Values of an object array as UTF-8 views; None and float NaN are missing. */
static int string_column(PyArrayObject *a, npy_intp n_rows, mls_str *outv, Py_ssize_t c)
{
    for (npy_intp r = 0; r < n_rows; r++) {
        PyObject *v = *(PyObject **)PyArray_GETPTR1(a, r);
        if (v == NULL || v == Py_None || (PyFloat_Check(v) && Py_IS_NAN(PyFloat_AS_DOUBLE(v)))) {
            outv[r].ptr = NULL;
            outv[r].len = 0;
            continue;
        }
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_ValueError, "column %zd, row %zd: expected a string, got %.80s",
                         c, (Py_ssize_t)r, Py_TYPE(v)->tp_name);
            return -1;
        }
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(v, &len);
        if (p == NULL) return -1;
        outv[r].ptr = p; /* lives as long as the array holds v */
        outv[r].len = len;
    }
    return 0;
}

/* Columns taken from a list of 1-d arrays (float64 numeric, object strings):
 * their arrays, numeric data and string views. Free with columns_free. */
typedef struct columns {
    Py_ssize_t n;
    npy_intp n_rows;
    PyArrayObject **arrays;
    const double **num;
    const mls_str **strs;
} columns;

static void columns_free(columns *c)
{
    if (c->arrays != NULL)
        for (Py_ssize_t i = 0; i < c->n; i++) Py_XDECREF(c->arrays[i]);
    if (c->strs != NULL)
        for (Py_ssize_t i = 0; i < c->n; i++) free((void *)c->strs[i]);
    free(c->arrays);
    free(c->num);
    free(c->strs);
    memset(c, 0, sizeof(*c));
}

static int columns_take(PyObject *cols_obj, columns *cl)
{
    memset(cl, 0, sizeof(*cl));
    if (!PyList_Check(cols_obj)) {
        PyErr_SetString(PyExc_TypeError, "columns must be a list");
        return -1;
    }
    Py_ssize_t n_cols = PyList_GET_SIZE(cols_obj);
    cl->n = n_cols;
    cl->arrays = calloc((size_t)n_cols + 1, sizeof(*cl->arrays));
    cl->num = calloc((size_t)n_cols + 1, sizeof(*cl->num));
    cl->strs = calloc((size_t)n_cols + 1, sizeof(*cl->strs));
    PyArrayObject **arrays = cl->arrays;
    const double **num = cl->num;
    const mls_str **strs = cl->strs;
    npy_intp n_rows = -1;
    if (arrays == NULL || num == NULL || strs == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t c = 0; c < n_cols; c++) {
        PyObject *col = PyList_GET_ITEM(cols_obj, c);
        PyArrayObject *a = (PyArrayObject *)PyArray_FROM_O(col);
        if (a == NULL) goto fail;
        if (PyArray_NDIM(a) != 1) {
            Py_DECREF(a);
            PyErr_Format(PyExc_ValueError, "column %zd must be 1-d", c);
            goto fail;
        }
        if (n_rows < 0) n_rows = PyArray_DIM(a, 0);
        if (PyArray_DIM(a, 0) != n_rows) {
            Py_DECREF(a);
            PyErr_Format(PyExc_ValueError, "column %zd has %zd rows, column 0 has %zd", c,
                         (Py_ssize_t)PyArray_DIM(a, 0), (Py_ssize_t)n_rows);
            goto fail;
        }
        if (PyArray_TYPE(a) == NPY_OBJECT) {
            arrays[c] = a;
            mls_str *v = malloc(((size_t)n_rows + 1) * sizeof(mls_str));
            if (v == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            strs[c] = v;
            if (string_column(a, n_rows, v, c) < 0) goto fail;
        } else {
            arrays[c] = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)a, NPY_FLOAT64,
                                                          NPY_ARRAY_IN_ARRAY);
            Py_DECREF(a);
            if (arrays[c] == NULL) goto fail;
            num[c] = PyArray_DATA(arrays[c]);
        }
    }
    cl->n_rows = n_rows < 0 ? 0 : n_rows;
    return 0;
fail:
    columns_free(cl);
    return -1;
}

PyDoc_STRVAR(transform_apply_doc,
             "transform_apply(ops, columns, n_out, /)\n--\n\n"
             "ops: a list of op tuples or a transform_plan(ops). "
             "Column transforms in one C call. columns: 1-d arrays of one length, float64 "
             "(numeric) or object (strings, None/NaN missing). ops: tuples (kind, in_col, "
             "out_col, fill, mul, add, indicator_col, categories_bytes, offsets, unknown_mode, "
             "unknown_value[, missing_category, cat_out, width, unknown_out, func, mul2, add2]). Returns a float64 (n_rows, n_out) array.\n");
static PyObject *transform_apply(PyObject *module, PyObject *args)
{
    PyObject *ops_obj, *cols_obj;
    long long n_out;
    if (!PyArg_ParseTuple(args, "OOL:transform_apply", &ops_obj, &cols_obj, &n_out)) return NULL;
    if (n_out < 0) {
        PyErr_SetString(PyExc_ValueError, "n_out must be >= 0");
        return NULL;
    }
    plan *owned = NULL, *pl;
    if (PyCapsule_CheckExact(ops_obj)) {
        pl = PyCapsule_GetPointer(ops_obj, PLAN_CAPSULE);
        if (pl == NULL) return NULL;
    } else {
        pl = owned = plan_parse(module, ops_obj, 0);
        if (pl == NULL) return NULL;
    }
    Py_ssize_t n_ops = pl->n_ops;
    PyObject *result = NULL;
    columns cl;
    if (columns_take(cols_obj, &cl) < 0) {
        plan_free(owned);
        return NULL;
    }
    npy_intp n_rows = cl.n_rows;
    Py_ssize_t n_cols = cl.n;
    const double **num = cl.num;
    const mls_str **strs = cl.strs;
    npy_intp dims[2] = {n_rows, (npy_intp)n_out};
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT64, 0);
    if (out == NULL) goto done;
    mls_error err = {0};
    mls_status st;
    Py_BEGIN_ALLOW_THREADS
    st = mls_transform_apply_tables(pl->ops, n_ops, pl->tables, n_rows, num, strs, n_cols,
                                    PyArray_DATA(out), n_out, &err);
    Py_END_ALLOW_THREADS
    if (st != MLS_STATUS_OK) {
        Py_DECREF(out);
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = (PyObject *)out;
done:
    plan_free(owned);
    columns_free(&cl);
    return result;
}

PyDoc_STRVAR(pipeline_predict_doc,
             "pipeline_predict(model, method, columns, /)\n--\n\n"
             "A pipeline model's transform and its final model's method (0 predict, 1 "
             "predict_proba, 2 decision_function, 3 transform) in one C call. columns: one "
             "1-d array per input column, in the model's order (float64 numeric, object "
             "strings with None/NaN missing). method -1: the column transform's output.\n");
static PyObject *pipeline_predict(PyObject *module, PyObject *args)
{
    PyObject *model_obj, *cols_obj;
    int method;
    if (!PyArg_ParseTuple(args, "OiO:pipeline_predict", &model_obj, &method, &cols_obj))
        return NULL;
    const mls_model *m = mls_model_of_object(module, model_obj);
    if (m == NULL) return NULL;
    if (mls_pipeline_n_inputs(m) < 0) {
        PyErr_SetString(PyExc_TypeError, "pipeline_predict needs a pipeline model");
        return NULL;
    }
    mls_error err = {0};
    mls_output_spec spec = {2, mls_pipeline_n_transformed(m), MLS_DTYPE_FLOAT64};
    if (method != -1 && mls_model_output_spec(m, (mls_method)method, &spec, &err) != MLS_STATUS_OK)
        return mls_raise_from_error(module, &err);
    columns cl;
    if (columns_take(cols_obj, &cl) < 0) return NULL;
    if (cl.n != mls_pipeline_n_inputs(m)) {
        PyErr_Format(PyExc_ValueError, "expected %lld columns, got %zd",
                     (long long)mls_pipeline_n_inputs(m), cl.n);
        columns_free(&cl);
        return NULL;
    }
    for (Py_ssize_t c = 0; c < cl.n; c++) {
        int want = mls_pipeline_column_is_string(m, c);
        if (want != (cl.strs[c] != NULL)) {
            PyErr_Format(PyExc_TypeError, "column %zd must be %s", c,
                         want ? "an object array of strings" : "numeric");
            columns_free(&cl);
            return NULL;
        }
    }
    npy_intp dims[2] = {cl.n_rows, (npy_intp)spec.cols};
    int typenum = spec.dtype == MLS_DTYPE_FLOAT32 ? NPY_FLOAT32
                  : spec.dtype == MLS_DTYPE_INT64 ? NPY_INT64
                  : spec.dtype == MLS_DTYPE_INT32 ? NPY_INT32
                                                  : NPY_FLOAT64;
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(spec.ndim, dims, typenum, 0);
    if (out == NULL) {
        columns_free(&cl);
        return NULL;
    }
    mls_status st;
    Py_BEGIN_ALLOW_THREADS
    if (method == -1)
        st = mls_pipeline_transform(m, cl.n_rows, cl.num, cl.strs, cl.n, PyArray_DATA(out),
                                    &err);
    else
        st = mls_pipeline_predict_columns(m, (mls_method)method, cl.n_rows, cl.num, cl.strs,
                                          cl.n, PyArray_DATA(out), &err);
    Py_END_ALLOW_THREADS
    columns_free(&cl);
    if (st != MLS_STATUS_OK) {
        Py_DECREF(out);
        return mls_raise_from_error(module, &err);
    }
    return (PyObject *)out;
}

/* Value of a record as a number: 1 ok, 0 not a number (the caller falls back). */
static int record_number(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (v == Py_None) {
        *out = Py_NAN;
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        double d = PyLong_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = d;
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(pipeline_predict_records_doc,
             "pipeline_predict_records(model, method, names, records, /)\n--\n\n"
             "pipeline_predict for a list of dicts: names (a tuple of the input columns' "
             "names, in the model's order) are looked up in each record and decoded in C "
             "(float/int/None for numeric columns, str/None for string ones; no Python "
             "object per value is made). Returns None, with nothing computed, when a record "
             "is not a dict, lacks a name or holds a value of another type: the caller's "
             "slower path then says which.\n");
static PyObject *pipeline_predict_records(PyObject *module, PyObject *args)
{
    PyObject *model_obj, *names, *records;
    int method;
    if (!PyArg_ParseTuple(args, "OiO!O!:pipeline_predict_records", &model_obj, &method,
                          &PyTuple_Type, &names, &PyList_Type, &records))
        return NULL;
    const mls_model *m = mls_model_of_object(module, model_obj);
    if (m == NULL) return NULL;
    int64_t n_in = mls_pipeline_n_inputs(m);
    if (n_in < 0) {
        PyErr_SetString(PyExc_TypeError, "pipeline_predict_records needs a pipeline model");
        return NULL;
    }
    if (PyTuple_GET_SIZE(names) != n_in) {
        PyErr_Format(PyExc_ValueError, "expected %lld names, got %zd", (long long)n_in,
                     PyTuple_GET_SIZE(names));
        return NULL;
    }
    mls_error err = {0};
    mls_output_spec spec = {2, mls_pipeline_n_transformed(m), MLS_DTYPE_FLOAT64};
    if (method != -1 && mls_model_output_spec(m, (mls_method)method, &spec, &err) != MLS_STATUS_OK)
        return mls_raise_from_error(module, &err);
    Py_ssize_t n_rows = PyList_GET_SIZE(records);
    size_t cells = (size_t)n_in * (size_t)(n_rows + 1);
    double *numbers = malloc(cells * sizeof(double));
    mls_str *strings = malloc(cells * sizeof(mls_str));
    const double **num = calloc((size_t)n_in, sizeof(*num));
    const mls_str **strs = calloc((size_t)n_in, sizeof(*strs));
    /* the string values, held while the GIL is released (another thread may change
     * a record meanwhile; its old value must stay alive) */
    PyObject **held = calloc(cells, sizeof(PyObject *));
    size_t n_held = 0;
    PyObject *result = NULL;
    if (numbers == NULL || strings == NULL || num == NULL || strs == NULL || held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int64_t c = 0; c < n_in; c++) {
        if (mls_pipeline_column_is_string(m, c))
            strs[c] = strings + c * (n_rows + 1);
        else
            num[c] = numbers + c * (n_rows + 1);
    }
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        PyObject *rec = PyList_GET_ITEM(records, r);
        if (!PyDict_Check(rec)) goto fallback;
        for (int64_t c = 0; c < n_in; c++) {
            PyObject *v = PyDict_GetItemWithError(rec, PyTuple_GET_ITEM(names, c));
            if (v == NULL) {
                if (PyErr_Occurred()) goto done;
                goto fallback;
            }
            if (strs[c] != NULL) {
                mls_str *sv = (mls_str *)&strs[c][r];
                if (v == Py_None || (PyFloat_Check(v) && Py_IS_NAN(PyFloat_AS_DOUBLE(v)))) {
                    sv->ptr = NULL;
                    sv->len = 0;
                } else if (PyUnicode_Check(v)) {
                    Py_ssize_t len;
                    const char *p = PyUnicode_AsUTF8AndSize(v, &len); /* lives with v */
                    if (p == NULL) goto done;
                    held[n_held++] = Py_NewRef(v);
                    sv->ptr = p;
                    sv->len = len;
                } else {
                    goto fallback;
                }
            } else if (!record_number(v, (double *)&num[c][r])) {
                goto fallback;
            }
        }
    }
    npy_intp dims[2] = {n_rows, (npy_intp)spec.cols};
    int typenum = spec.dtype == MLS_DTYPE_FLOAT32 ? NPY_FLOAT32
                  : spec.dtype == MLS_DTYPE_INT64 ? NPY_INT64
                  : spec.dtype == MLS_DTYPE_INT32 ? NPY_INT32
                                                  : NPY_FLOAT64;
    PyArrayObject *out = (PyArrayObject *)PyArray_ZEROS(spec.ndim, dims, typenum, 0);
    if (out == NULL) goto done;
    mls_status st;
    if (n_rows <= 16) { /* one small call: releasing the GIL would cost more than it */
        st = method == -1 ? mls_pipeline_transform(m, n_rows, num, strs, n_in,
                                                   PyArray_DATA(out), &err)
                          : mls_pipeline_predict_columns(m, (mls_method)method, n_rows, num,
                                                         strs, n_in, PyArray_DATA(out), &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        st = method == -1 ? mls_pipeline_transform(m, n_rows, num, strs, n_in,
                                                   PyArray_DATA(out), &err)
                          : mls_pipeline_predict_columns(m, (mls_method)method, n_rows, num,
                                                         strs, n_in, PyArray_DATA(out), &err);
        Py_END_ALLOW_THREADS
    }
    if (st != MLS_STATUS_OK) {
        Py_DECREF(out);
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = (PyObject *)out;
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    for (size_t i = 0; i < n_held; i++) Py_DECREF(held[i]);
    free(held);
    free(numbers);
    free(strings);
    free(num);
    free(strs);
    return result;
}

PyMethodDef mls_transform_methods[] = {
    {"pipeline_predict_records", pipeline_predict_records, METH_VARARGS,
     pipeline_predict_records_doc},
    {"pipeline_predict", pipeline_predict, METH_VARARGS, pipeline_predict_doc},
    {"transform_apply", transform_apply, METH_VARARGS, transform_apply_doc},
    {"transform_plan", transform_plan, METH_O, transform_plan_doc},
    {NULL, NULL, 0, NULL},
};
