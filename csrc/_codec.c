/* _codec.c: binding for request decoding and response encoding (the JSON
 * and tensor codecs of the serving path).
 *
 * json_decode: phase 1 (mls_json_parse, GIL released for large bodies)
 * checks the body and packs every array of numbers into one float buffer;
 * phase 2 (here, with the GIL) builds dicts, lists, str, int, float and
 * numpy arrays that view that buffer: no Python float per array element.
 * json_encode: walks Python objects with the GIL; ndarrays are formatted by
 * mls_json_write_array with the GIL released.
 */
#include "_binding.h"

#define NO_IMPORT_ARRAY
#define PY_ARRAY_UNIQUE_SYMBOL MLSERVE_ARRAY_API
#include <numpy/arrayobject.h>
#include <numpy/arrayscalars.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mls_json.h"
#include "mls_status.h"

/* Below these sizes, releasing and re-taking the GIL costs more than the
 * work (and hands the GIL to another thread for up to a switch interval). */
#define MLS_CODEC_GIL_MIN_BYTES 8192
#define MLS_CODEC_GIL_MIN_ELEMS 2048

/* ---- json_decode --------------------------------------------------------- */

/* Owner of a packed buffer (numbers or bools) that ndarrays view. */
static void codec_capsule_free(PyObject *capsule)
{
    free(PyCapsule_GetPointer(capsule, "mlserve.json_buffer"));
}

#define CODEC_KEY_CACHE 64

typedef struct codec_builder {
    const char *in;
    mls_json_doc *doc;
    const double *nums64; /* packed numbers (float64 mode), valid while building */
    PyObject *num_owner;  /* capsule owning doc->numbers once an ndarray views it */
    PyObject *bool_owner;
    PyObject *keys[CODEC_KEY_CACHE]; /* recent ASCII keys, reused like json's memo */
    int unique_keys;                 /* a key repeated in one object is an error */
} codec_builder;

static PyObject *codec_make_str(codec_builder *b, const mls_json_node *n)
{
    const char *s = (n->flags & MLS_JSON_F_ESCAPED) ? b->doc->strbuf + n->off : b->in + n->off;
    if (!(n->flags & MLS_JSON_F_ASCII)) return PyUnicode_DecodeUTF8(s, n->len, "strict");
    PyObject *u = PyUnicode_New(n->len, 127);
    if (u != NULL) memcpy(PyUnicode_1BYTE_DATA(u), s, n->len);
    return u;
}

static PyObject *codec_make_key(codec_builder *b, const mls_json_node *n)
{
    if (!(n->flags & MLS_JSON_F_ASCII) || n->len > 64) return codec_make_str(b, n);
    const char *s = (n->flags & MLS_JSON_F_ESCAPED) ? b->doc->strbuf + n->off : b->in + n->off;
    uint32_t h = 2166136261u ^ n->len;
    for (uint32_t i = 0; i < n->len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    PyObject **slot = &b->keys[h % CODEC_KEY_CACHE];
    if (*slot != NULL && PyUnicode_GET_LENGTH(*slot) == (Py_ssize_t)n->len &&
        memcmp(PyUnicode_1BYTE_DATA(*slot), s, n->len) == 0) {
        Py_INCREF(*slot);
        return *slot;
    }
    PyObject *u = codec_make_str(b, n);
    if (u == NULL) return NULL;
    Py_XSETREF(*slot, Py_NewRef(u));
    return u;
}

static PyObject *codec_make_number(codec_builder *b, const mls_json_node *n)
{
    const char *s = b->in + n->off;
    if (n->flags & MLS_JSON_F_INT) {
        if (n->len <= 18) {
            int64_t v = 0;
            uint32_t i = s[0] == '-';
            for (; i < n->len; i++) v = v * 10 + (s[i] - '0');
            return PyLong_FromLongLong(s[0] == '-' ? -v : v);
        }
        char *buf = (char *)PyMem_Malloc((size_t)n->len + 1);
        if (buf == NULL) return PyErr_NoMemory();
        memcpy(buf, s, n->len);
        buf[n->len] = '\0';
        PyObject *r = PyLong_FromString(buf, NULL, 10); /* may raise the 4300-digit ValueError, as json does */
        PyMem_Free(buf);
        return r;
    }
    double v;
    if ((n->flags & MLS_JSON_F_PACKED) && b->nums64 != NULL) {
        v = b->nums64[n->aux];
    } else if (mls_json_number_to_double(s, n->len, &v) < 0) {
        return PyErr_NoMemory();
    }
    return PyFloat_FromDouble(v);
}

static PyObject *codec_make_ndarray(codec_builder *b, const mls_json_node *n)
{
    mls_json_doc *d = b->doc;
    int is_bool = (n->flags & MLS_JSON_F_BOOL) != 0;
    int typenum = is_bool ? NPY_BOOL : d->float32 ? NPY_FLOAT32 : NPY_FLOAT64;
    npy_intp dims[MLS_JSON_MAX_NDIM];
    npy_intp size = 1;
    for (int i = 0; i < n->ndim; i++) {
        dims[i] = (npy_intp)d->shapes[n->aux + i];
        size *= dims[i];
    }
    if (size == 0) return PyArray_SimpleNew(n->ndim, dims, typenum);
    PyObject **owner = is_bool ? &b->bool_owner : &b->num_owner;
    if (*owner == NULL) {
        /* hand the packed buffer to a capsule that frees it with the last view */
        void **buf = is_bool ? (void **)&d->bools : &d->numbers;
        size_t used = is_bool ? d->n_bools : d->n_numbers * (d->float32 ? sizeof(float) : sizeof(double));
        size_t cap = is_bool ? d->cap_bools : d->cap_numbers * (d->float32 ? sizeof(float) : sizeof(double));
        if (cap - used > 65536) {
            void *shrunk = realloc(*buf, used);
            if (shrunk != NULL) {
                *buf = shrunk;
                if (!is_bool && !d->float32) b->nums64 = (const double *)shrunk;
            }
        }
        *owner = PyCapsule_New(*buf, "mlserve.json_buffer", codec_capsule_free);
        if (*owner == NULL) return NULL;
        if (is_bool) {
            d->cap_bools = 0;
        } else {
            d->cap_numbers = 0;
        }
        /* the doc keeps the pointer for reading; the capsule owns it now */
    }
    char *base = (char *)PyCapsule_GetPointer(*owner, "mlserve.json_buffer");
    size_t itemsize = is_bool ? 1 : d->float32 ? sizeof(float) : sizeof(double);
    PyArray_Descr *descr = PyArray_DescrFromType(typenum);
    if (descr == NULL) return NULL;
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, descr, n->ndim, dims, NULL,
                                         base + (size_t)n->off * itemsize,
                                         NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE,
                                         NULL);
    if (arr == NULL) return NULL;
    if (PyArray_SetBaseObject((PyArrayObject *)arr, Py_NewRef(*owner)) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

typedef struct codec_frame {
    PyObject *container;
    uint32_t remaining;
    uint32_t index;
    PyObject *key; /* objects: the key waiting for its value */
    int is_obj;
} codec_frame;

/* Builds the Python value of the tape (iteratively: the depth is only
 * bounded by max_depth). */
static PyObject *codec_build(codec_builder *b)
{
    const mls_json_node *nodes = b->doc->nodes;
    size_t i = 0, sp = 0, cap = 0;
    codec_frame *stack = NULL;
    PyObject *v = NULL;
    for (;;) {
        const mls_json_node *n = &nodes[i++];
        switch ((mls_json_kind)n->kind) {
        case MLS_JSON_NULL: v = Py_NewRef(Py_None); break;
        case MLS_JSON_FALSE: v = Py_NewRef(Py_False); break;
        case MLS_JSON_TRUE: v = Py_NewRef(Py_True); break;
        case MLS_JSON_NUMBER: v = codec_make_number(b, n); break;
        case MLS_JSON_STRING: v = codec_make_str(b, n); break;
        case MLS_JSON_NDARRAY: v = codec_make_ndarray(b, n); break;
        case MLS_JSON_OBJECT:
        case MLS_JSON_LIST: {
            int is_obj = n->kind == MLS_JSON_OBJECT;
            v = is_obj ? PyDict_New() : PyList_New(n->len);
            if (v == NULL || n->len == 0) break;
            if (sp == cap) {
                size_t ncap = cap ? 2 * cap : 16;
                codec_frame *ns = (codec_frame *)PyMem_Realloc(stack, ncap * sizeof *stack);
                if (ns == NULL) {
                    Py_DECREF(v);
                    v = PyErr_NoMemory();
                    break;
                }
                stack = ns;
                cap = ncap;
            }
            codec_frame *f = &stack[sp++];
            f->container = v;
            f->remaining = n->len;
            f->index = 0;
            f->is_obj = is_obj;
            f->key = is_obj ? codec_make_key(b, &nodes[i++]) : NULL;
            if (is_obj && f->key == NULL) goto error;
            continue;
        }
        }
        if (v == NULL) goto error;
        /* attach v to its parent, closing every container it completes */
        for (;;) {
            if (sp == 0) goto done;
            codec_frame *f = &stack[sp - 1];
            if (f->is_obj) {
                /* a repeated key would drop a value silently (a record's feature) */
                Py_ssize_t before = PyDict_GET_SIZE(f->container);
                int rc = PyDict_SetItem(f->container, f->key, v);
                if (rc == 0 && b->unique_keys && PyDict_GET_SIZE(f->container) == before) {
                    PyErr_Format(PyExc_ValueError, "duplicate key %R in a JSON object", f->key);
                    rc = -1;
                }
                Py_DECREF(v);
                Py_CLEAR(f->key);
                v = NULL;
                if (rc < 0) goto error;
            } else {
                PyList_SET_ITEM(f->container, f->index, v);
                v = NULL;
            }
            f->index++;
            if (--f->remaining) break;
            v = f->container;
            sp--;
        }
        codec_frame *f = &stack[sp - 1];
        if (f->is_obj && (f->key = codec_make_key(b, &nodes[i++])) == NULL) goto error;
    }
error:
    Py_XDECREF(v);
    v = NULL;
    for (size_t k = 0; k < sp; k++) {
        Py_DECREF(stack[k].container);
        Py_XDECREF(stack[k].key);
    }
done:
    PyMem_Free(stack);
    return v;
}

PyDoc_STRVAR(codec_json_decode_doc,
"json_decode($module, body, /, *, float32=False, max_depth=64, max_bytes=None,\n"
"            unique_keys=False)\n"
"--\n"
"\n"
"Parse a JSON document strictly (RFC 8259), packing arrays of numbers.\n"
"\n"
"Objects become dicts (the last duplicate key wins), strings str,\n"
"true/false/null bool/None, lone numbers int (integer literals, any size)\n"
"or float. Every rectangular array whose leaves are all numbers becomes a\n"
"C-contiguous float64 ndarray of that shape (float32 with float32=True),\n"
"built without a Python float per element; all-boolean rectangular arrays\n"
"become bool ndarrays and [] a float array of shape (0,). Any other array\n"
"(mixed, ragged, strings, objects) becomes a list of its elements.\n"
"\n"
"Parameters\n"
"----------\n"
"body : bytes, bytearray or memoryview\n"
"    UTF-8 JSON text (a leading UTF-8 byte order mark is skipped).\n"
"float32 : bool\n"
"    Pack array numbers as float32 (lone numbers stay Python floats).\n"
"max_depth : int\n"
"    Most nested arrays/objects allowed.\n"
"max_bytes : int or None\n"
"    Reject longer bodies before parsing.\n"
"unique_keys : bool\n"
"    Reject an object that repeats a key (\"duplicate key 'k' in a JSON\n"
"    object\"), instead of keeping the last value as json.loads does.\n"
"\n"
"Raises\n"
"------\n"
"ValueError\n"
"    \"invalid JSON at line L, column C: <problem>\"; \"number out of range at\n"
"    line L, column C\" for numbers beyond float64 (or, in arrays, float32)\n"
"    range; nesting deeper than max_depth; body longer than max_bytes.\n"
"\n"
"Notes\n"
"-----\n"
"Numbers are correctly rounded (bit-identical to float()). Unlike\n"
"json.loads: NaN, Infinity, lone surrogates (in \\u escapes or UTF-8) and\n"
"UTF-16/32 bodies are rejected. The GIL is released while parsing bodies\n"
"of 8 KiB or more.");

static PyObject *codec_json_decode(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"", "float32", "max_depth", "max_bytes", "unique_keys", NULL};
    PyObject *body, *max_bytes_obj = Py_None;
    int float32 = 0, unique_keys = 0;
    long long max_depth = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$pLOp:json_decode", kwlist, &body, &float32,
                                     &max_depth, &max_bytes_obj, &unique_keys))
        return NULL;
    mls_error err;
    memset(&err, 0, sizeof err);
    if (max_depth < 1) {
        mls_error_set(&err, MLS_STATUS_ERR_ARGUMENT, "max_depth must be at least 1, got %lld", max_depth);
        return mls_raise_from_error(module, &err);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (max_bytes_obj != Py_None) {
        long long max_bytes = PyLong_AsLongLong(max_bytes_obj);
        if (max_bytes == -1 && PyErr_Occurred()) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if ((long long)view.len > max_bytes) {
            PyBuffer_Release(&view);
            mls_error_set(&err, MLS_STATUS_ERR_VALUE, "JSON body is %zd bytes, more than max_bytes=%lld",
                          view.len, max_bytes);
            return mls_raise_from_error(module, &err);
        }
    }
    /* The tape refers to the input until the result is built, and the parse
     * runs without the GIL: a mutable buffer is copied first. */
    const char *in = (const char *)view.buf;
    char *copy = NULL;
    if (!(PyBytes_Check(body) ||
          (PyMemoryView_Check(body) && PyMemoryView_GET_BASE(body) != NULL &&
           PyBytes_Check(PyMemoryView_GET_BASE(body))))) {
        copy = (char *)PyMem_RawMalloc(view.len ? (size_t)view.len : 1);
        if (copy == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        memcpy(copy, view.buf, (size_t)view.len);
        in = copy;
    }
    size_t len = (size_t)view.len;
    mls_json_options opt = {float32, max_depth};
    mls_json_doc doc;
    mls_status st;
    if (len >= MLS_CODEC_GIL_MIN_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        st = mls_json_parse(in, len, &opt, &doc, &err);
        Py_END_ALLOW_THREADS
    } else {
        st = mls_json_parse(in, len, &opt, &doc, &err);
    }
    PyObject *result = NULL;
    if (st != MLS_STATUS_OK) {
        mls_raise_from_error(module, &err);
    } else {
        codec_builder b;
        memset(&b, 0, sizeof b);
        b.in = in;
        b.doc = &doc;
        b.nums64 = doc.float32 ? NULL : (const double *)doc.numbers;
        b.unique_keys = unique_keys;
        result = codec_build(&b);
        /* buffers now owned by capsules must not be freed with the doc */
        if (b.num_owner != NULL) doc.numbers = NULL;
        if (b.bool_owner != NULL) doc.bools = NULL;
        Py_XDECREF(b.num_owner);
        Py_XDECREF(b.bool_owner);
        for (int k = 0; k < CODEC_KEY_CACHE; k++) Py_XDECREF(b.keys[k]);
        mls_json_doc_free(&doc);
    }
    PyMem_RawFree(copy);
    PyBuffer_Release(&view);
    return result;
}

/* ---- json_encode ----------------------------------------------------------- */

typedef struct codec_out {
    char *buf;
    size_t len, cap;
    PyObject *module;
} codec_out;

static int codec_reserve(codec_out *o, size_t extra)
{
    if (o->cap - o->len >= extra) return 0;
    if (extra > PY_SSIZE_T_MAX - o->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t need = o->len + extra, ncap = o->cap ? o->cap : 256;
    while (ncap < need) ncap = ncap > PY_SSIZE_T_MAX / 2 ? need : ncap * 2;
    char *nb = (char *)PyMem_RawRealloc(o->buf, ncap);
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = nb;
    o->cap = ncap;
    return 0;
}

static int codec_put(codec_out *o, const char *s, size_t n)
{
    if (codec_reserve(o, n) < 0) return -1;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static int codec_nonfinite(codec_out *o)
{
    mls_error err;
    mls_error_set(&err, MLS_STATUS_ERR_VALUE, "cannot encode NaN or infinity in JSON");
    mls_raise_from_error(o->module, &err);
    return -1;
}

static int codec_put_double(codec_out *o, double x, int quoted)
{
    if (!isfinite(x)) return codec_nonfinite(o);
    if (codec_reserve(o, MLS_JSON_FLOAT_MAX_CHARS + 2) < 0) return -1;
    if (quoted) o->buf[o->len++] = '"';
    o->len += mls_json_format_f64(x, o->buf + o->len);
    if (quoted) o->buf[o->len++] = '"';
    return 0;
}

static const char codec_hex[] = "0123456789abcdef";

/* A str as json.dumps writes it by default (ensure_ascii=True). */
static int codec_put_str(codec_out *o, PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if ((size_t)n > (PY_SSIZE_T_MAX - 2) / 12) {
        PyErr_NoMemory();
        return -1;
    }
    if (codec_reserve(o, 2 + (size_t)n * (kind == PyUnicode_1BYTE_KIND ? 6 : 12)) < 0) return -1;
    char *w = o->buf + o->len;
    *w++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\f': *w++ = 'f'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            if (c >= 0x10000) {
                Py_UCS4 v = c - 0x10000, hi = 0xD800 | (v >> 10), lo = 0xDC00 | (v & 0x3FF);
                *w++ = 'u';
                *w++ = codec_hex[(hi >> 12) & 15];
                *w++ = codec_hex[(hi >> 8) & 15];
                *w++ = codec_hex[(hi >> 4) & 15];
                *w++ = codec_hex[hi & 15];
                *w++ = '\\';
                c = lo;
            }
            *w++ = 'u';
            *w++ = codec_hex[(c >> 12) & 15];
            *w++ = codec_hex[(c >> 8) & 15];
            *w++ = codec_hex[(c >> 4) & 15];
            *w++ = codec_hex[c & 15];
        }
    }
    *w++ = '"';
    o->len = (size_t)(w - o->buf);
    return 0;
}

static int codec_put_int(codec_out *o, PyObject *v, int quoted)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (!overflow) {
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, quoted ? "\"%lld\"" : "%lld", x);
        return codec_put(o, tmp, (size_t)n);
    }
    PyObject *r = PyLong_Type.tp_repr(v);
    if (r == NULL) return -1;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(r, &n);
    int rc = s == NULL ? -1 : 0;
    if (rc == 0 && quoted) rc = codec_put(o, "\"", 1);
    if (rc == 0) rc = codec_put(o, s, (size_t)n);
    if (rc == 0 && quoted) rc = codec_put(o, "\"", 1);
    Py_DECREF(r);
    return rc;
}

static int codec_not_serializable(PyObject *v)
{
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(v), "__name__");
    if (name == NULL) return -1;
    PyErr_Format(PyExc_TypeError, "Object of type %U is not JSON serializable", name);
    Py_DECREF(name);
    return -1;
}

static int codec_put_value(codec_out *o, PyObject *v);

static int codec_put_ndarray(codec_out *o, PyArrayObject *a)
{
    int type = PyArray_TYPE(a), target = type;
    mls_json_elem elem;
    if (type == NPY_OBJECT) {
        PyObject *lst = PyArray_ToList(a);
        if (lst == NULL) return -1;
        int rc = codec_put_value(o, lst);
        Py_DECREF(lst);
        return rc;
    }
    if (type == NPY_FLOAT64) {
        elem = MLS_JSON_ELEM_F64;
    } else if (type == NPY_FLOAT32) {
        elem = MLS_JSON_ELEM_F32;
    } else if (type == NPY_FLOAT16) {
        /* as json.dumps(a.tolist()): the float64 value of each half */
        elem = MLS_JSON_ELEM_F64;
        target = NPY_FLOAT64;
    } else if (type == NPY_BOOL) {
        elem = MLS_JSON_ELEM_BOOL;
    } else if (PyTypeNum_ISINTEGER(type)) {
        int size = (int)PyArray_ITEMSIZE(a), sign = PyTypeNum_ISSIGNED(type);
        elem = size == 1   ? (sign ? MLS_JSON_ELEM_I8 : MLS_JSON_ELEM_U8)
               : size == 2 ? (sign ? MLS_JSON_ELEM_I16 : MLS_JSON_ELEM_U16)
               : size == 4 ? (sign ? MLS_JSON_ELEM_I32 : MLS_JSON_ELEM_U32)
                           : (sign ? MLS_JSON_ELEM_I64 : MLS_JSON_ELEM_U64);
    } else {
        PyErr_Format(PyExc_TypeError, "cannot encode an ndarray of dtype %S in JSON",
                     (PyObject *)PyArray_DESCR(a));
        return -1;
    }
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a, PyArray_DescrFromType(target), 0, 0, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_NOTSWAPPED, NULL);
    if (c == NULL) return -1;
    int ndim = PyArray_NDIM(c);
    int64_t shape[NPY_MAXDIMS];
    for (int i = 0; i < ndim; i++) shape[i] = (int64_t)PyArray_DIM(c, i);
    int64_t bound;
    if (!mls_json_array_bound(elem, ndim, shape, &bound) || bound > PY_SSIZE_T_MAX ||
        codec_reserve(o, (size_t)bound) < 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        Py_DECREF(c);
        return -1;
    }
    mls_error err;
    memset(&err, 0, sizeof err);
    size_t written = 0;
    mls_status st;
    if (PyArray_SIZE(c) >= MLS_CODEC_GIL_MIN_ELEMS) {
        Py_BEGIN_ALLOW_THREADS
        st = mls_json_write_array(PyArray_DATA(c), elem, ndim, shape, o->buf + o->len, o->cap - o->len,
                                  &written, &err);
        Py_END_ALLOW_THREADS
    } else {
        st = mls_json_write_array(PyArray_DATA(c), elem, ndim, shape, o->buf + o->len, o->cap - o->len,
                                  &written, &err);
    }
    Py_DECREF(c);
    if (st != MLS_STATUS_OK) {
        mls_raise_from_error(o->module, &err);
        return -1;
    }
    o->len += written;
    return 0;
}

static int codec_put_key(codec_out *o, PyObject *k)
{
    if (PyUnicode_Check(k)) return codec_put_str(o, k);
    if (PyFloat_Check(k)) return codec_put_double(o, PyFloat_AS_DOUBLE(k), 1);
    if (k == Py_True) return codec_put(o, "\"true\"", 6);
    if (k == Py_False) return codec_put(o, "\"false\"", 7);
    if (k == Py_None) return codec_put(o, "\"null\"", 6);
    if (PyLong_Check(k)) return codec_put_int(o, k, 1);
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(k), "__name__");
    if (name == NULL) return -1;
    PyErr_Format(PyExc_TypeError, "keys must be str, int, float, bool or None, not %U", name);
    Py_DECREF(name);
    return -1;
}

static int codec_put_value(codec_out *o, PyObject *v)
{
    if (PyUnicode_Check(v)) return codec_put_str(o, v);
    if (v == Py_None) return codec_put(o, "null", 4);
    if (v == Py_True) return codec_put(o, "true", 4);
    if (v == Py_False) return codec_put(o, "false", 5);
    if (PyLong_Check(v)) return codec_put_int(o, v, 0);
    if (PyFloat_Check(v)) return codec_put_double(o, PyFloat_AS_DOUBLE(v), 0);
    if (PyList_Check(v) || PyTuple_Check(v)) {
        if (Py_EnterRecursiveCall(" while encoding a JSON object")) return -1;
        int rc = codec_put(o, "[", 1);
        int is_list = PyList_Check(v);
        for (Py_ssize_t i = 0; rc == 0 && i < (is_list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v)); i++) {
            PyObject *item = is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            Py_INCREF(item);
            if (i) rc = codec_put(o, ", ", 2);
            if (rc == 0) rc = codec_put_value(o, item);
            Py_DECREF(item);
        }
        if (rc == 0) rc = codec_put(o, "]", 1);
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (PyDict_Check(v)) {
        if (Py_EnterRecursiveCall(" while encoding a JSON object")) return -1;
        int rc = codec_put(o, "{", 1);
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *item;
        while (rc == 0 && PyDict_Next(v, &pos, &k, &item)) {
            Py_INCREF(k);
            Py_INCREF(item);
            if (i++) rc = codec_put(o, ", ", 2);
            if (rc == 0) rc = codec_put_key(o, k);
            if (rc == 0) rc = codec_put(o, ": ", 2);
            if (rc == 0) rc = codec_put_value(o, item);
            Py_DECREF(k);
            Py_DECREF(item);
        }
        if (rc == 0) rc = codec_put(o, "}", 1);
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (PyArray_Check(v)) return codec_put_ndarray(o, (PyArrayObject *)v);
    if (PyArray_IsScalar(v, Generic)) {
        if (PyArray_IsScalar(v, Bool)) return v == PyArrayScalar_True ? codec_put(o, "true", 4)
                                                                     : codec_put(o, "false", 5);
        if (PyArray_IsScalar(v, Float)) {
            float x = PyArrayScalar_VAL(v, Float);
            if (!isfinite(x)) return codec_nonfinite(o);
            if (codec_reserve(o, MLS_JSON_FLOAT_MAX_CHARS) < 0) return -1;
            o->len += mls_json_format_f32(x, o->buf + o->len);
            return 0;
        }
        if (PyArray_IsScalar(v, Integer)) {
            PyObject *i = PyNumber_Index(v);
            if (i == NULL) return -1;
            int rc = codec_put_int(o, i, 0);
            Py_DECREF(i);
            return rc;
        }
        if (PyArray_IsScalar(v, Half)) {
            double x = PyFloat_AsDouble(v);
            if (x == -1.0 && PyErr_Occurred()) return -1;
            return codec_put_double(o, x, 0);
        }
    }
    return codec_not_serializable(v);
}

PyDoc_STRVAR(codec_json_encode_doc,
"json_encode($module, obj, /)\n"
"--\n"
"\n"
"JSON text of obj as bytes, exactly as json.dumps(obj).encode() for plain\n"
"Python data (default separators \", \" and \": \", non-ASCII escaped).\n"
"\n"
"Also takes numpy arrays of any shape (float64, float32, float16, integer,\n"
"bool; object arrays go through tolist()), written as nested arrays in C\n"
"with the GIL released for large arrays, and numpy scalars. Floats are the\n"
"shortest text that reads back to the same value: repr(float) for float64\n"
"(and float16), repr(numpy.float32(x)) for float32.\n"
"\n"
"Raises\n"
"------\n"
"ValueError\n"
"    \"cannot encode NaN or infinity in JSON\".\n"
"TypeError\n"
"    For objects json.dumps cannot encode either (and complex/str arrays).");

static PyObject *codec_json_encode(PyObject *module, PyObject *obj)
{
    codec_out o = {NULL, 0, 0, module};
    PyObject *result = NULL;
    if (codec_put_value(&o, obj) == 0) result = PyBytes_FromStringAndSize(o.buf, (Py_ssize_t)o.len);
    PyMem_RawFree(o.buf);
    return result;
}

PyMethodDef mls_codec_methods[] = {
    {"json_decode", (PyCFunction)(void (*)(void))codec_json_decode, METH_VARARGS | METH_KEYWORDS,
     codec_json_decode_doc},
    {"json_encode", (PyCFunction)codec_json_encode, METH_O, codec_json_encode_doc},
    {NULL, NULL, 0, NULL},
};
