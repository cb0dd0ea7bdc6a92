/* _core.c: the binding, the only file that includes Python.h and NumPy.
 *
 * Pattern for every call (bottleneck): validate and allocate with the GIL,
 * compute without it (one C call between Py_BEGIN/END_ALLOW_THREADS), build
 * the result with it. C statuses become Python exceptions in exactly one
 * place: raise_from_error.
 */
#include "_binding.h"

#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>

#include <stdlib.h>
#include <string.h>

#include "mls_array.h"
#include "mls_blas.h"
#include "mls_format.h"
#include "mls_gemm_small.h"
#include "mls_linear.h"
#include "mls_model.h"
#include "mls_status.h"

/* ---- module state ------------------------------------------------------ */

typedef struct core_state {
    PyObject *MLServeError;
    PyObject *ModelFormatError;
    PyObject *ModelType;
} core_state;

static struct PyModuleDef core_module;

static core_state *state_of_module(PyObject *module)
{
    return (core_state *)PyModule_GetState(module);
}

/* ---- the one place C statuses become exceptions ---------------------------- */

PyObject *mls_raise_from_error(PyObject *module, const mls_error *err)
{
    core_state *st = state_of_module(module);
    const char *msg = err->message[0] ? err->message : mls_status_name(err->status);
    PyObject *type;
    switch (err->status) {
    case MLS_STATUS_ERR_NOMEM: type = PyExc_MemoryError; break;
    case MLS_STATUS_ERR_SHAPE:
    case MLS_STATUS_ERR_VALUE:
    case MLS_STATUS_ERR_ARGUMENT: type = PyExc_ValueError; break;
    case MLS_STATUS_ERR_TYPE: type = PyExc_TypeError; break;
    case MLS_STATUS_ERR_FORMAT:
    case MLS_STATUS_ERR_VERSION: type = st->ModelFormatError; break;
    case MLS_STATUS_ERR_IO: type = PyExc_OSError; break;
    case MLS_STATUS_ERR_UNSUPPORTED: type = PyExc_NotImplementedError; break;
    case MLS_STATUS_ERR_NUMERIC: type = PyExc_FloatingPointError; break;
    default: type = st->MLServeError; break;
    }
    if (err->status == MLS_STATUS_ERR_IO && err->os_errno != 0) {
        /* OSError(errno, msg) picks the subclass: FileNotFoundError, ... */
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", err->os_errno, msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    PyErr_SetString(type, msg);
    return NULL;
}

/* ---- dtype mapping ------------------------------------------------------- */

static int npy_type_of(mls_dtype dtype)
{
    switch (dtype) {
    case MLS_DTYPE_FLOAT32: return NPY_FLOAT32;
    case MLS_DTYPE_FLOAT64: return NPY_FLOAT64;
    case MLS_DTYPE_INT32: return NPY_INT32;
    case MLS_DTYPE_INT64: return NPY_INT64;
    case MLS_DTYPE_UINT8: return NPY_UINT8;
    default: return -1;
    }
}

static mls_dtype mls_type_of(PyArray_Descr *descr)
{
    if (!PyArray_ISNBO(descr->byteorder)) return MLS_DTYPE_INVALID;
    switch (descr->type_num) {
    case NPY_FLOAT32: return MLS_DTYPE_FLOAT32;
    case NPY_FLOAT64: return MLS_DTYPE_FLOAT64;
    case NPY_INT32: return MLS_DTYPE_INT32;
    case NPY_INT64: return MLS_DTYPE_INT64;
    case NPY_UINT8: return MLS_DTYPE_UINT8;
    default: return MLS_DTYPE_INVALID;
    }
}

/* ---- input intake: anything array-like -> rows of the model's dtype ------ */

/* Fills a fresh (rows, cols) array of `typenum` straight from nested Python
 * lists/tuples of numbers: no intermediate object array. Returns NULL with
 * an exception set (ValueError for ragged, TypeError for non-numbers). */
static PyArrayObject *array_from_sequence(PyObject *seq, int typenum)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "expected at least 1 row, got 0");
        return NULL;
    }
    PyObject *first = PySequence_Fast_GET_ITEM(seq, 0);
    int nested = PyList_Check(first) || PyTuple_Check(first);
    Py_ssize_t rows = nested ? n : 1;
    Py_ssize_t cols = nested ? PySequence_Fast_GET_SIZE(first) : n;
    if (nested) {
        for (Py_ssize_t i = 0; i < rows; i++) {
            PyObject *row = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyList_Check(row) && !PyTuple_Check(row)) {
                PyErr_Format(PyExc_ValueError,
                             "ragged input: row 0 is a list but row %zd is %.50s", i,
                             Py_TYPE(row)->tp_name);
                return NULL;
            }
            Py_ssize_t len = PySequence_Fast_GET_SIZE(row);
            if (len != cols) {
                PyErr_Format(PyExc_ValueError,
                             "ragged input: row %zd has %zd values, row 0 has %zd", i, len,
                             cols);
                return NULL;
            }
        }
    }
    npy_intp dims[2] = {rows, cols};
    PyArrayObject *arr = (PyArrayObject *)PyArray_SimpleNew(2, dims, typenum);
    if (arr == NULL) return NULL;
    char *data = PyArray_BYTES(arr);
    for (Py_ssize_t i = 0; i < rows; i++) {
        PyObject *row = nested ? PySequence_Fast_GET_ITEM(seq, i) : seq;
        PyObject **items = PySequence_Fast_ITEMS(row);
        for (Py_ssize_t j = 0; j < cols; j++) {
            PyObject *item = items[j];
            double v;
            if (PyFloat_CheckExact(item)) {
                v = PyFloat_AS_DOUBLE(item);
            } else if (PyList_Check(item) || PyTuple_Check(item)) {
                PyErr_Format(PyExc_ValueError,
                             "expected a 1-D row or a 2-D batch of rows, got lists nested "
                             "deeper at row %zd, column %zd",
                             i, j);
                Py_DECREF(arr);
                return NULL;
            } else if (PyUnicode_Check(item) || PyBytes_Check(item) || item == Py_None) {
                PyErr_Format(PyExc_TypeError,
                             "expected a number at row %zd, column %zd, got %.50s", i, j,
                             Py_TYPE(item)->tp_name);
                Py_DECREF(arr);
                return NULL;
            } else {
                v = PyFloat_AsDouble(item);
                if (v == -1.0 && PyErr_Occurred()) {
                    if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                        PyErr_Format(PyExc_ValueError,
                                     "number too large for float64 at row %zd, column %zd", i,
                                     j);
                    } else {
                        PyErr_Format(PyExc_TypeError,
                                     "expected a number at row %zd, column %zd, got %.50s", i,
                                     j, Py_TYPE(item)->tp_name);
                    }
                    Py_DECREF(arr);
                    return NULL;
                }
            }
            if (typenum == NPY_FLOAT64)
                ((double *)data)[i * cols + j] = v;
            else
                ((float *)data)[i * cols + j] = (float)v;
        }
    }
    return arr;
}

/* Turns `obj` into a tensor of `dtype`. Zero-copy when obj is an array of
 * that dtype whose rows are contiguous; otherwise exactly one conversion,
 * owned by *holder (a new reference the caller releases). */
static int intake_rows(PyObject *obj, mls_dtype dtype, mls_tensor *X, PyObject **holder)
{
    int typenum = npy_type_of(dtype);
    PyArrayObject *arr = NULL;
    *holder = NULL;
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        arr = array_from_sequence(obj, typenum);
        if (arr == NULL) return -1;
    } else {
        if (PyArray_Check(obj)) {
            Py_INCREF(obj);
            arr = (PyArrayObject *)obj;
        } else {
            arr = (PyArrayObject *)PyArray_FROM_O(obj);
            if (arr == NULL) return -1;
        }
        char kind = PyArray_DESCR(arr)->kind;
        if (kind == 'O') {
            /* numbers boxed as objects: through the list path, which checks
             * every element (numpy's cast would turn None into NaN) */
            if (PyArray_NDIM(arr) == 0) {
                PyErr_Format(PyExc_TypeError,
                             "expected numbers (an array or a list of rows), got %.50s",
                             Py_TYPE(obj)->tp_name);
                Py_DECREF(arr);
                return -1;
            }
            if (PyArray_NDIM(arr) > 2) {
                PyErr_Format(PyExc_ValueError,
                             "expected a 1-D row or a 2-D batch of rows, got an array with "
                             "%d dimensions",
                             PyArray_NDIM(arr));
                Py_DECREF(arr);
                return -1;
            }
            PyObject *nested = PyArray_ToList(arr);
            Py_DECREF(arr);
            if (nested == NULL) return -1;
            int rc = intake_rows(nested, dtype, X, holder);
            Py_DECREF(nested);
            return rc;
        }
        if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
            PyErr_Format(PyExc_TypeError,
                         "expected numbers (a float, integer or bool array), got an array "
                         "of dtype %S",
                         (PyObject *)PyArray_DESCR(arr));
            Py_DECREF(arr);
            return -1;
        }
        int ndim = PyArray_NDIM(arr);
        if (ndim != 1 && ndim != 2) {
            PyErr_Format(PyExc_ValueError,
                         "expected a 1-D row or a 2-D batch of rows, got an array with %d "
                         "dimensions",
                         ndim);
            Py_DECREF(arr);
            return -1;
        }
        npy_intp itemsize = (npy_intp)mls_dtype_size(dtype);
        npy_intp col_stride = PyArray_STRIDES(arr)[ndim - 1];
        npy_intp row_stride = ndim == 2 ? PyArray_STRIDES(arr)[0] : 0;
        int usable = PyArray_TYPE(arr) == typenum && PyArray_ISNOTSWAPPED(arr) &&
                     PyArray_ISALIGNED(arr) &&
                     (col_stride == itemsize || PyArray_DIM(arr, ndim - 1) <= 1) &&
                     (ndim == 1 || PyArray_DIM(arr, 0) <= 1 ||
                      (row_stride % itemsize == 0 &&
                       row_stride >= PyArray_DIM(arr, 1) * itemsize));
        if (!usable) {
            PyArrayObject *conv = (PyArrayObject *)PyArray_FromAny(
                (PyObject *)arr, PyArray_DescrFromType(typenum), 0, 0,
                NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST, NULL);
            Py_DECREF(arr);
            if (conv == NULL) return -1;
            arr = conv;
        }
    }
    int ndim = PyArray_NDIM(arr);
    X->data = PyArray_DATA(arr);
    X->dtype = dtype;
    X->rows = ndim == 2 ? PyArray_DIM(arr, 0) : 1;
    X->cols = PyArray_DIM(arr, ndim - 1);
    npy_intp itemsize = (npy_intp)mls_dtype_size(dtype);
    X->row_stride = (ndim == 2 && X->rows > 1) ? PyArray_STRIDES(arr)[0] / itemsize : X->cols;
    if (X->rows < 1) {
        PyErr_SetString(PyExc_ValueError, "expected at least 1 row, got 0");
        Py_DECREF(arr);
        return -1;
    }
    *holder = (PyObject *)arr;
    return 0;
}

/* ---- mlserve.Model ------------------------------------------------------ */

typedef struct ModelObject {
    PyObject_HEAD
    mls_model *model;
    PyObject *metadata; /* str: the metadata JSON */
    PyObject *module;   /* strong ref, for raise_from_error */
    PyObject *name;     /* str: estimator name used in error messages */
    void *buffer;       /* aligned copy of an .mls image (loads), or NULL */
} ModelObject;

static void Model_dealloc(ModelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    mls_model_free(self->model); /* before the buffer its sections point into */
    free(self->buffer);
    Py_XDECREF(self->metadata);
    Py_XDECREF(self->module);
    Py_XDECREF(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *model_new(PyObject *module, mls_model *model, PyObject *metadata)
{
    core_state *st = state_of_module(module);
    PyTypeObject *tp = (PyTypeObject *)st->ModelType;
    ModelObject *self = (ModelObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        mls_model_free(model);
        return NULL;
    }
    self->model = model;
    Py_INCREF(metadata);
    self->metadata = metadata;
    Py_INCREF(module);
    self->module = module;
    self->name = PyUnicode_FromString(model->vt->name);
    if (self->name == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A linear predict of at most this many multiply-adds (a few microseconds) keeps
 * the GIL: releasing it hands it to a waiting thread, and getting it back costs
 * a context switch or two, more than the call itself (the codec's
 * MLS_CODEC_GIL_MIN_* thresholds, for the same reason). Larger calls, and every
 * other family, release it. */
#define MLS_PREDICT_GIL_MAX_MACS 16384

static int predict_keeps_gil(const mls_model *m, const mls_tensor *X, const mls_output_spec *spec)
{
    mls_kind kind = m->vt->kind;
    if (kind != MLS_KIND_LINEAR_REGRESSOR && kind != MLS_KIND_LOGISTIC_REGRESSION) return 0;
    int64_t cols = (spec->ndim == 2 && spec->cols > 0) ? spec->cols : 1;
    if (X->rows < 0 || m->n_features <= 0 || cols > MLS_PREDICT_GIL_MAX_MACS) return 0;
    int64_t per_row = m->n_features * cols; /* both <= 2^14 here: no overflow */
    if (m->n_features > MLS_PREDICT_GIL_MAX_MACS || per_row > MLS_PREDICT_GIL_MAX_MACS) return 0;
    return X->rows <= MLS_PREDICT_GIL_MAX_MACS / per_row;
}

static PyObject *model_run(ModelObject *self, PyObject *X_obj, mls_method method)
{
    const mls_model *m = self->model;
    mls_error err = {0};
    mls_output_spec spec;
    if (mls_model_output_spec(m, method, &spec, &err) != MLS_STATUS_OK)
        return mls_raise_from_error(self->module, &err);
    mls_tensor X;
    PyObject *holder;
    if (intake_rows(X_obj, m->dtype, &X, &holder) < 0) return NULL;
    if (X.cols != m->n_features) {
        /* both our wording and scikit-learn's, which its users search for */
        PyErr_Format(PyExc_ValueError,
                     "expected %lld features, got %lld (X has %lld features, but %U is "
                     "expecting %lld features as input)",
                     (long long)m->n_features, (long long)X.cols, (long long)X.cols,
                     self->name, (long long)m->n_features);
        Py_DECREF(holder);
        return NULL;
    }
    npy_intp dims[2] = {(npy_intp)X.rows, (npy_intp)spec.cols};
    PyObject *out = PyArray_SimpleNew(spec.ndim, dims, npy_type_of(spec.dtype));
    if (out == NULL) {
        Py_DECREF(holder);
        return NULL;
    }
    mls_status status;
    if (predict_keeps_gil(m, &X, &spec)) {
        status = mls_model_predict(m, method, &X, PyArray_DATA((PyArrayObject *)out), &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        status = mls_model_predict(m, method, &X, PyArray_DATA((PyArrayObject *)out), &err);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(holder);
    if (status != MLS_STATUS_OK) {
        Py_DECREF(out);
        return mls_raise_from_error(self->module, &err);
    }
    return out;
}

PyDoc_STRVAR(Model_predict_doc,
             "predict($self, X, /)\n--\n\n"
             "Predict for one row (1-D) or a batch (2-D) of features.\n\n"
             "Parameters\n----------\nX : array-like of shape (n_features,) or "
             "(n_samples, n_features)\n\n"
             "Returns\n-------\nndarray of shape (n_samples,) or (n_samples, n_outputs)\n");
static PyObject *Model_predict(ModelObject *self, PyObject *X)
{
    return model_run(self, X, MLS_METHOD_PREDICT);
}

PyDoc_STRVAR(Model_predict_proba_doc,
             "predict_proba($self, X, /)\n--\n\n"
             "Class probabilities, shape (n_samples, n_classes).\n");
static PyObject *Model_predict_proba(ModelObject *self, PyObject *X)
{
    return model_run(self, X, MLS_METHOD_PREDICT_PROBA);
}

PyDoc_STRVAR(Model_decision_function_doc,
             "decision_function($self, X, /)\n--\n\n"
             "Raw scores X @ coef.T + intercept; shape (n_samples,) for binary "
             "classifiers.\n");
static PyObject *Model_decision_function(ModelObject *self, PyObject *X)
{
    return model_run(self, X, MLS_METHOD_DECISION_FUNCTION);
}

PyDoc_STRVAR(Model_transform_doc,
             "transform($self, X, /)\n--\n\n"
             "k-means: Euclidean distances to every center, shape (n_samples, "
             "n_clusters).\n");
static PyObject *Model_transform(ModelObject *self, PyObject *X)
{
    return model_run(self, X, MLS_METHOD_TRANSFORM);
}

const struct mls_model *mls_model_of_object(PyObject *module, PyObject *obj)
{
    core_state *st = state_of_module(module);
    if (!PyObject_TypeCheck(obj, (PyTypeObject *)st->ModelType)) {
        PyErr_Format(PyExc_TypeError, "expected an mlserve.Model, got %.50s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((ModelObject *)obj)->model;
}

PyDoc_STRVAR(Model_arrays_doc,
             "arrays($self, /)\n--\n\n"
             "The model's named arrays as read-only NumPy views (no copy: for a loaded "
             "model they point into the file mapping).\n");
static PyObject *Model_arrays(ModelObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = PyDict_New();
    if (result == NULL) return NULL;
    for (size_t i = 0; i < self->model->n_sections; i++) {
        const mls_section *s = &self->model->sections[i];
        npy_intp dims[MLS_SECTION_MAX_NDIM];
        for (int d = 0; d < s->ndim; d++) dims[d] = (npy_intp)s->shape[d];
        PyObject *arr = PyArray_New(&PyArray_Type, s->ndim, dims, npy_type_of(s->dtype), NULL,
                                    (void *)s->data, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED,
                                    NULL);
        if (arr == NULL) goto fail;
        Py_INCREF(self);
        if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) {
            Py_DECREF(arr);
            goto fail;
        }
        int rc = PyDict_SetItemString(result, s->name, arr);
        Py_DECREF(arr);
        if (rc < 0) goto fail;
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

PyDoc_STRVAR(Model_save_doc,
             "save($self, path, metadata, /)\n--\n\n"
             "Write the model to `path` as an .mls file (atomically), with `metadata` "
             "(a JSON string).\n");
static PyObject *Model_save(ModelObject *self, PyObject *args)
{
    PyObject *path_obj = NULL;
    const char *metadata;
    Py_ssize_t metadata_len;
    if (!PyArg_ParseTuple(args, "O&s#:save", PyUnicode_FSConverter, &path_obj, &metadata,
                          &metadata_len))
        return NULL;
    mls_error err = {0};
    mls_status status;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    status = mls_model_save(self->model, path, metadata, (size_t)metadata_len, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (status != MLS_STATUS_OK) return mls_raise_from_error(self->module, &err);
    Py_RETURN_NONE;
}

static PyObject *Model_get_n_features(ModelObject *self, void *closure)
{
    return PyLong_FromLongLong(self->model->n_features);
}

static PyObject *Model_get_kind(ModelObject *self, void *closure)
{
    return PyUnicode_FromString(self->model->vt->name);
}

static PyObject *Model_get_dtype(ModelObject *self, void *closure)
{
    return PyUnicode_FromString(mls_dtype_name(self->model->dtype));
}

static PyObject *Model_get_metadata(ModelObject *self, void *closure)
{
    Py_INCREF(self->metadata);
    return self->metadata;
}

static PyObject *Model_get_mapping(ModelObject *self, void *closure)
{
    if (self->model->file == NULL) Py_RETURN_NONE;
    size_t len;
    const void *base = mls_file_bytes(self->model->file, &len);
    return Py_BuildValue("(Kn)", (unsigned long long)(uintptr_t)base, (Py_ssize_t)len);
}

static PyObject *Model_get_name(ModelObject *self, void *closure)
{
    Py_INCREF(self->name);
    return self->name;
}

/* The estimator name shown in error messages; set by the Python wrapper
 * right after create/load, before the model is shared. */
static PyObject *Model_set_display_name(ModelObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "name must be a str");
        return NULL;
    }
    Py_INCREF(arg);
    Py_SETREF(self->name, arg);
    Py_RETURN_NONE;
}

static PyObject *Model_output_spec(ModelObject *self, PyObject *arg)
{
    long method = PyLong_AsLong(arg);
    if (method == -1 && PyErr_Occurred()) return NULL;
    mls_error err = {0};
    mls_output_spec spec;
    if (mls_model_output_spec(self->model, (mls_method)method, &spec, &err) != MLS_STATUS_OK)
        return mls_raise_from_error(self->module, &err);
    return Py_BuildValue("(iLs)", spec.ndim, (long long)spec.cols, mls_dtype_name(spec.dtype));
}

/* <mlserve.Model LinearRegression: kind='linear_regressor', n_features=4, dtype='float64'> */
static PyObject *Model_repr(ModelObject *self)
{
    PyObject *kind = Model_get_kind(self, NULL);
    PyObject *n_features = kind ? Model_get_n_features(self, NULL) : NULL;
    PyObject *dtype = n_features ? Model_get_dtype(self, NULL) : NULL;
    PyObject *r = NULL;
    if (dtype != NULL)
        r = PyUnicode_FromFormat("<mlserve.Model %S: kind=%R, n_features=%S, dtype=%R%s>",
                                 self->name, kind, n_features, dtype,
                                 self->model->file != NULL ? ", memory-mapped" : "");
    Py_XDECREF(kind);
    Py_XDECREF(n_features);
    Py_XDECREF(dtype);
    return r;
}

static PyMethodDef Model_methods[] = {
    {"predict", (PyCFunction)Model_predict, METH_O, Model_predict_doc},
    {"predict_proba", (PyCFunction)Model_predict_proba, METH_O, Model_predict_proba_doc},
    {"decision_function", (PyCFunction)Model_decision_function, METH_O,
     Model_decision_function_doc},
    {"transform", (PyCFunction)Model_transform, METH_O, Model_transform_doc},
    {"arrays", (PyCFunction)Model_arrays, METH_NOARGS, Model_arrays_doc},
    {"save", (PyCFunction)Model_save, METH_VARARGS, Model_save_doc},
    {"_set_display_name", (PyCFunction)Model_set_display_name, METH_O, NULL},
    {"output_spec", (PyCFunction)Model_output_spec, METH_O,
     "output_spec($self, method, /)\n--\n\n(ndim, cols, dtype) of a method's output "
     "(0 predict, 1 predict_proba, 2 decision_function)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"n_features", (getter)Model_get_n_features, NULL, "Number of input features.", NULL},
    {"kind", (getter)Model_get_kind, NULL, "Model family name.", NULL},
    {"name", (getter)Model_get_name, NULL, "Estimator name used in messages.", NULL},
    {"dtype", (getter)Model_get_dtype, NULL, "Element type predict computes in.", NULL},
    {"metadata", (getter)Model_get_metadata, NULL, "Metadata JSON string.", NULL},
    {"mapping", (getter)Model_get_mapping, NULL,
     "(address, length) of the mapped .mls file, or None for an in-memory model.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Model_slots[] = {
    {Py_tp_dealloc, Model_dealloc},
    {Py_tp_repr, Model_repr},
    {Py_tp_methods, Model_methods},
    {Py_tp_getset, Model_getset},
    {Py_tp_doc, "An immutable compiled model: thread-safe predict in C with the GIL "
                "released. Create with mlserve._core.load or mlserve._core.create."},
    {0, NULL},
};

static PyType_Spec Model_spec = {
    .name = "mlserve.Model",
    .basicsize = sizeof(ModelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Model_slots,
};

/* ---- module functions ---------------------------------------------------- */

PyDoc_STRVAR(core_create_doc,
             "create(kind, arrays, metadata, /)\n--\n\n"
             "Build a model of family `kind` (e.g. 'linear_regressor') from a dict of "
             "named arrays (copied) and a metadata JSON string.\n");
static PyObject *core_create(PyObject *module, PyObject *args)
{
    const char *kind_name;
    PyObject *arrays, *metadata;
    if (!PyArg_ParseTuple(args, "sO!U:create", &kind_name, &PyDict_Type, &arrays, &metadata))
        return NULL;
    uint32_t kind = 0;
    for (uint32_t k = 1; k < 256; k++) {
        const mls_model_vtable *vt = mls_model_vtable_for(k);
        if (vt != NULL && strcmp(vt->name, kind_name) == 0) kind = k;
    }
    if (kind == 0) {
        PyErr_Format(PyExc_ValueError, "unknown model kind '%s'", kind_name);
        return NULL;
    }
    Py_ssize_t n = PyDict_Size(arrays);
    mls_section *sections = PyMem_Calloc(n ? (size_t)n : 1, sizeof(mls_section));
    PyObject **keep = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *));
    PyObject *result = NULL;
    if (sections == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0, i = 0;
    while (PyDict_Next(arrays, &pos, &key, &value)) {
        Py_ssize_t name_len;
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &name_len) : NULL;
        if (name == NULL || name_len >= MLS_SECTION_NAME_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "array names must be str of < 64 bytes");
            goto done;
        }
        PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OF(value, NPY_ARRAY_IN_ARRAY);
        if (arr == NULL) goto done;
        keep[i] = (PyObject *)arr;
        mls_dtype dt = mls_type_of(PyArray_DESCR(arr));
        if (dt == MLS_DTYPE_INVALID || PyArray_NDIM(arr) > MLS_SECTION_MAX_NDIM) {
            PyErr_Format(PyExc_TypeError,
                         "array '%s' must be float32/float64/int32/int64/uint8 with at most "
                         "4 dimensions, got %S with %d",
                         name, (PyObject *)PyArray_DESCR(arr), PyArray_NDIM(arr));
            goto done;
        }
        memcpy(sections[i].name, name, (size_t)name_len + 1);
        sections[i].dtype = dt;
        sections[i].ndim = PyArray_NDIM(arr);
        for (int d = 0; d < PyArray_NDIM(arr); d++) sections[i].shape[d] = PyArray_DIM(arr, d);
        sections[i].data = PyArray_DATA(arr);
        sections[i].nbytes = (uint64_t)PyArray_NBYTES(arr);
        i++;
    }
    mls_error err = {0};
    mls_model *model = NULL;
    if (mls_model_create(kind, sections, (size_t)n, &model, &err) != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = model_new(module, model, metadata);
done:
    if (keep != NULL)
        for (Py_ssize_t j = 0; j < n; j++) Py_XDECREF(keep[j]);
    PyMem_Free(keep);
    PyMem_Free(sections);
    return result;
}

/* Wraps a model opened from an .mls image, with its metadata string; frees
 * the model on failure. */
static PyObject *model_new_from_file(PyObject *module, mls_model *model)
{
    size_t meta_len;
    const char *meta = mls_file_metadata(model->file, &meta_len);
    /* the format reader has checked that the metadata is UTF-8 */
    PyObject *metadata = PyUnicode_DecodeUTF8(meta, (Py_ssize_t)meta_len, "strict");
    if (metadata == NULL) {
        mls_model_free(model);
        return NULL;
    }
    PyObject *result = model_new(module, model, metadata);
    Py_DECREF(metadata);
    return result;
}

PyDoc_STRVAR(core_load_doc,
             "load(path, verify=True)\n--\n\n"
             "Map an .mls file and return its Model; arrays are used in place. With "
             "verify, every section's checksum is checked (one read pass).\n");
static PyObject *core_load(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"path", "verify", NULL};
    PyObject *path_obj = NULL;
    int verify = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|p:load", keywords,
                                     PyUnicode_FSConverter, &path_obj, &verify))
        return NULL;
    const char *path = PyBytes_AS_STRING(path_obj);
    mls_error err = {0};
    mls_status status;
    mls_file *file = NULL;
    mls_model *model = NULL;
    Py_BEGIN_ALLOW_THREADS
    status = mls_format_open(path, verify, &file, &err);
    if (status == MLS_STATUS_OK) {
        status = mls_model_from_file(file, &model, &err);
        if (status != MLS_STATUS_OK) mls_file_close(file);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (status != MLS_STATUS_OK) return mls_raise_from_error(module, &err);
    return model_new_from_file(module, model);
}

PyDoc_STRVAR(core_loads_doc,
             "loads(data, verify=True)\n--\n\n"
             "Model from the bytes of an .mls file (copied once into aligned memory the "
             "model owns); validated exactly like load.\n");
static PyObject *core_loads(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"data", "verify", NULL};
    Py_buffer view;
    int verify = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|p:loads", keywords, &view, &verify))
        return NULL;
    void *buffer = NULL;
    size_t len = (size_t)view.len;
    if (posix_memalign(&buffer, MLS_FORMAT_ALIGN, len ? len : 1) != 0) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    if (len) memcpy(buffer, view.buf, len);
    PyBuffer_Release(&view);
    mls_error err = {0};
    mls_status status;
    mls_file *file = NULL;
    mls_model *model = NULL;
    Py_BEGIN_ALLOW_THREADS
    status = mls_format_parse(buffer, len, verify, &file, &err);
    if (status == MLS_STATUS_OK) {
        status = mls_model_from_file(file, &model, &err);
        if (status != MLS_STATUS_OK) mls_file_close(file);
    }
    Py_END_ALLOW_THREADS
    if (status != MLS_STATUS_OK) {
        free(buffer);
        return mls_raise_from_error(module, &err);
    }
    PyObject *result = model_new_from_file(module, model);
    if (result == NULL) {
        free(buffer); /* the model was freed with the failure */
        return NULL;
    }
    ((ModelObject *)result)->buffer = buffer;
    return result;
}

/* Contiguous float64 copy (or view) of a 2-D array-like, for fitting. */
static PyArrayObject *as_f64_matrix(PyObject *obj, const char *what)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT64, 2, 2,
                                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (arr == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a 2-D array of numbers", what);
    }
    return arr;
}

static PyArrayObject *as_optional_weights(PyObject *obj, npy_intp n)
{
    if (obj == Py_None) return NULL;
    PyArrayObject *w = (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT64, 1, 1,
                                                        NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (w != NULL && PyArray_DIM(w, 0) != n) {
        PyErr_Format(PyExc_ValueError, "sample_weight has %zd values, X has %zd rows",
                     (Py_ssize_t)PyArray_DIM(w, 0), (Py_ssize_t)n);
        Py_DECREF(w);
        return NULL;
    }
    return w;
}

PyDoc_STRVAR(core_fit_least_squares_doc,
             "fit_least_squares(X, Y, sample_weight, alpha, fit_intercept, /)\n--\n\n"
             "Least squares / ridge fit in C. X (n, d), Y (n, k) float64. Returns "
             "(coef (k, d), intercept (k,)).\n");
static PyObject *core_fit_least_squares(PyObject *module, PyObject *args)
{
    PyObject *X_obj, *Y_obj, *w_obj;
    double alpha;
    int fit_intercept;
    if (!PyArg_ParseTuple(args, "OOOdp:fit_least_squares", &X_obj, &Y_obj, &w_obj, &alpha,
                          &fit_intercept))
        return NULL;
    PyArrayObject *X = as_f64_matrix(X_obj, "X"), *Y = NULL, *w = NULL;
    PyObject *coef = NULL, *intercept = NULL, *result = NULL;
    if (X == NULL) goto done;
    Y = as_f64_matrix(Y_obj, "y");
    if (Y == NULL) goto done;
    npy_intp n = PyArray_DIM(X, 0), d = PyArray_DIM(X, 1), k = PyArray_DIM(Y, 1);
    if (PyArray_DIM(Y, 0) != n) {
        PyErr_Format(PyExc_ValueError, "X has %zd rows but y has %zd", (Py_ssize_t)n,
                     (Py_ssize_t)PyArray_DIM(Y, 0));
        goto done;
    }
    w = as_optional_weights(w_obj, n);
    if (w == NULL && PyErr_Occurred()) goto done;
    npy_intp cdims[2] = {k, d};
    coef = PyArray_SimpleNew(2, cdims, NPY_FLOAT64);
    intercept = PyArray_SimpleNew(1, &k, NPY_FLOAT64);
    if (coef == NULL || intercept == NULL) goto done;
    mls_error err = {0};
    mls_status status;
    Py_BEGIN_ALLOW_THREADS
    status = mls_linear_fit_least_squares(
        PyArray_DATA(X), n, d, PyArray_DATA(Y), k, w ? PyArray_DATA(w) : NULL, alpha,
        fit_intercept, PyArray_DATA((PyArrayObject *)coef),
        PyArray_DATA((PyArrayObject *)intercept), &err);
    Py_END_ALLOW_THREADS
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = PyTuple_Pack(2, coef, intercept);
done:
    Py_XDECREF(X);
    Py_XDECREF(Y);
    Py_XDECREF(w);
    Py_XDECREF(coef);
    Py_XDECREF(intercept);
    return result;
}

PyDoc_STRVAR(core_fit_logistic_doc,
             "fit_logistic(X, y, n_classes, sample_weight, C, fit_intercept, max_iter, tol, "
             "progress=None, /)\n--\n\n"
             "L2 logistic regression by L-BFGS in C. y: int64 class indices. progress: None "
             "or a callable (iteration, max_iter), called with the GIL at most ten times a "
             "second (signals are checked then too: Ctrl-C stops the fit). Returns "
             "(coef, intercept, n_iter).\n");
static PyObject *core_fit_logistic(PyObject *module, PyObject *args)
{
    PyObject *X_obj, *y_obj, *w_obj, *progress_obj = Py_None;
    long long n_classes;
    double C, tol;
    int fit_intercept, max_iter;
    if (!PyArg_ParseTuple(args, "OOLOdpid|O:fit_logistic", &X_obj, &y_obj, &n_classes, &w_obj,
                          &C, &fit_intercept, &max_iter, &tol, &progress_obj))
        return NULL;
    if (progress_obj != Py_None && !PyCallable_Check(progress_obj)) {
        PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
        return NULL;
    }
    PyArrayObject *X = as_f64_matrix(X_obj, "X"), *y = NULL, *w = NULL;
    PyObject *coef = NULL, *intercept = NULL, *result = NULL;
    if (X == NULL) goto done;
    y = (PyArrayObject *)PyArray_FROMANY(y_obj, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (y == NULL) goto done;
    npy_intp n = PyArray_DIM(X, 0), d = PyArray_DIM(X, 1);
    if (PyArray_DIM(y, 0) != n) {
        PyErr_Format(PyExc_ValueError, "X has %zd rows but y has %zd", (Py_ssize_t)n,
                     (Py_ssize_t)PyArray_DIM(y, 0));
        goto done;
    }
    if (n_classes < 2) {
        PyErr_Format(PyExc_ValueError, "logistic regression needs at least 2 classes, got %lld",
                     n_classes);
        goto done;
    }
    w = as_optional_weights(w_obj, n);
    if (w == NULL && PyErr_Occurred()) goto done;
    npy_intp rows = n_classes == 2 ? 1 : (npy_intp)n_classes;
    npy_intp cdims[2] = {rows, d};
    coef = PyArray_SimpleNew(2, cdims, NPY_FLOAT64);
    intercept = PyArray_SimpleNew(1, &rows, NPY_FLOAT64);
    if (coef == NULL || intercept == NULL) goto done;
    mls_error err = {0};
    mls_status status;
    int n_iter = 0;
    mls_py_progress watch;
    mls_py_progress_init(&watch, progress_obj, MLS_PY_PROGRESS_INTERVAL);
    const mls_progress progress = {mls_py_progress_report, &watch};
    Py_BEGIN_ALLOW_THREADS
    status = mls_logistic_fit(PyArray_DATA(X), n, d, PyArray_DATA(y), n_classes,
                              w ? PyArray_DATA(w) : NULL, C, fit_intercept, max_iter, tol,
                              &progress, PyArray_DATA((PyArrayObject *)coef),
                              PyArray_DATA((PyArrayObject *)intercept), &n_iter, &err);
    Py_END_ALLOW_THREADS
    if (watch.failed) goto done; /* KeyboardInterrupt, or the callable's exception */
    if (status != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
        goto done;
    }
    result = Py_BuildValue("(OOi)", coef, intercept, n_iter);
done:
    Py_XDECREF(X);
    Py_XDECREF(y);
    Py_XDECREF(w);
    Py_XDECREF(coef);
    Py_XDECREF(intercept);
    return result;
}

static PyObject *core_set_num_threads(PyObject *module, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 1024) {
        PyErr_Format(PyExc_ValueError, "num_threads must be between 1 and 1024, got %ld", n);
        return NULL;
    }
    mls_blas_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *core_get_num_threads(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(mls_blas_get_num_threads());
}

static PyObject *core_blas_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
#ifdef MLS_BLAS_SCIPY_PREFIX
    const char *source = "scipy-openblas32 wheel";
#else
    const char *source = "system OpenBLAS (pkg-config)";
#endif
    return Py_BuildValue(
        "{s:s,s:s,s:s,s:i,s:s,s:{s:L,s:L},s:L,s:L}", "source", source, "config",
        mls_blas_config(), "corename", mls_blas_corename(), "num_threads",
        mls_blas_get_num_threads(), "gemm_small",
        mls_gemm_small_isa_name(mls_gemm_small_isa_get()), "gemm_small_max_rows", "float64",
        (long long)mls_linear_small_batch_max_rows(MLS_DTYPE_FLOAT64), "float32",
        (long long)mls_linear_small_batch_max_rows(MLS_DTYPE_FLOAT32),
        "gemm_small_min_features", (long long)mls_linear_small_batch_min_features(),
        "gemm_small_outputs_per_row", (long long)mls_linear_small_batch_outputs_per_row());
}

static PyObject *core_checksum64(PyObject *module, PyObject *args)
{
    Py_buffer buf;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K:checksum64", &buf, &seed)) return NULL;
    uint64_t h = mls_checksum64(buf.buf, (size_t)buf.len, seed);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(h);
}

/* For the test that enumerates every status: raise the exception status
 * `code` maps to, through the same function every call uses. */
static PyObject *core_raise_status(PyObject *module, PyObject *args)
{
    int code;
    const char *message;
    if (!PyArg_ParseTuple(args, "is:_raise_status", &code, &message)) return NULL;
    if (code <= MLS_STATUS_OK || code >= MLS_STATUS_COUNT_) {
        PyErr_Format(PyExc_ValueError, "not an error status: %d", code);
        return NULL;
    }
    mls_error err = {0};
    mls_error_set(&err, (mls_status)code, "%s", message);
    return mls_raise_from_error(module, &err);
}

static PyObject *core_status_names(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyObject *names = PyList_New(0);
    if (names == NULL) return NULL;
    for (int code = 0; code < MLS_STATUS_COUNT_; code++) {
        PyObject *name = PyUnicode_FromString(mls_status_name((mls_status)code));
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    return names;
}

static PyMethodDef core_methods[] = {
    {"create", core_create, METH_VARARGS, core_create_doc},
    {"load", (PyCFunction)(void (*)(void))core_load, METH_VARARGS | METH_KEYWORDS, core_load_doc},
    {"loads", (PyCFunction)(void (*)(void))core_loads, METH_VARARGS | METH_KEYWORDS,
     core_loads_doc},
    {"fit_least_squares", core_fit_least_squares, METH_VARARGS, core_fit_least_squares_doc},
    {"fit_logistic", core_fit_logistic, METH_VARARGS, core_fit_logistic_doc},
    {"set_num_threads", core_set_num_threads, METH_O,
     "set_num_threads(n, /)\n--\n\nThreads OpenBLAS may use per call."},
    {"get_num_threads", core_get_num_threads, METH_NOARGS,
     "get_num_threads()\n--\n\nThreads OpenBLAS may use per call."},
    {"blas_info", core_blas_info, METH_NOARGS,
     "blas_info()\n--\n\nWhich OpenBLAS this build runs: source, config, corename, threads;\n"
     "gemm_small: the small-batch kernel variant (off, c, avx2, avx512) and\n"
     "gemm_small_max_rows (per dtype), gemm_small_min_features and\n"
     "gemm_small_outputs_per_row: which batches it serves (2 <= rows <= max_rows,\n"
     "d >= min_features, k >= outputs_per_row * rows)."},
    {"checksum64", core_checksum64, METH_VARARGS,
     "checksum64(data, seed=0, /)\n--\n\nThe .mls format's 64-bit checksum of bytes."},
    {"_raise_status", core_raise_status, METH_VARARGS, NULL},
    {"status_names", core_status_names, METH_NOARGS,
     "status_names()\n--\n\nSymbolic names of the C statuses, indexed by code."},
    {NULL, NULL, 0, NULL},
};

static int core_exec(PyObject *module)
{
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    core_state *st = state_of_module(module);
    st->MLServeError = PyErr_NewExceptionWithDoc(
        "mlserve.MLServeError", "Base class of mlserve's own errors.", NULL, NULL);
    if (st->MLServeError == NULL) return -1;
    PyObject *bases = PyTuple_Pack(2, st->MLServeError, PyExc_ValueError);
    if (bases == NULL) return -1;
    st->ModelFormatError = PyErr_NewExceptionWithDoc(
        "mlserve.ModelFormatError",
        "An .mls file is truncated, corrupt, foreign or from a newer format version.", bases,
        NULL);
    Py_DECREF(bases);
    if (st->ModelFormatError == NULL) return -1;
    st->ModelType = PyType_FromModuleAndSpec(module, &Model_spec, NULL);
    if (st->ModelType == NULL) return -1;
    if (PyModule_AddObjectRef(module, "MLServeError", st->MLServeError) < 0) return -1;
    if (PyModule_AddObjectRef(module, "ModelFormatError", st->ModelFormatError) < 0) return -1;
    if (PyModule_AddObjectRef(module, "Model", st->ModelType) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_codec_methods) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_kmeans_methods) < 0) return -1;
    if (PyModule_AddIntConstant(module, "METHOD_TRANSFORM", MLS_METHOD_TRANSFORM) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_als_methods) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_topk_methods) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_transform_methods) < 0) return -1;
    if (PyModule_AddFunctions(module, mls_treeshap_methods) < 0) return -1;
    if (PyModule_AddIntConstant(module, "FORMAT_MAJOR", MLS_FORMAT_MAJOR) < 0) return -1;
    if (PyModule_AddIntConstant(module, "FORMAT_MINOR", MLS_FORMAT_MINOR) < 0) return -1;
    if (PyModule_AddIntConstant(module, "METHOD_PREDICT", MLS_METHOD_PREDICT) < 0) return -1;
    if (PyModule_AddIntConstant(module, "METHOD_PREDICT_PROBA", MLS_METHOD_PREDICT_PROBA) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "METHOD_DECISION_FUNCTION",
                                MLS_METHOD_DECISION_FUNCTION) < 0)
        return -1;
    return 0;
}

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
    core_state *st = state_of_module(module);
    Py_VISIT(st->MLServeError);
    Py_VISIT(st->ModelFormatError);
    Py_VISIT(st->ModelType);
    return 0;
}

static int core_clear(PyObject *module)
{
    core_state *st = state_of_module(module);
    Py_CLEAR(st->MLServeError);
    Py_CLEAR(st->ModelFormatError);
    Py_CLEAR(st->ModelType);
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mlserve._core",
    .m_doc = "mlserve's C core: models, the .mls format and BLAS configuration.",
    .m_size = sizeof(core_state),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
