/* mls_transform.c: see mls_transform.h. */
#include "mls_transform.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char *p, int64_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (int64_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static double apply_func(int func, double x)
{
    switch (func) {
    case MLS_FUNC_LOG1P: return log1p(x);
    case MLS_FUNC_LOG: return log(x);
    case MLS_FUNC_EXP: return exp(x);
    case MLS_FUNC_EXPM1: return expm1(x);
    case MLS_FUNC_SQRT: return sqrt(x);
    case MLS_FUNC_ABS: return fabs(x);
    case MLS_FUNC_LOG2: return log2(x);
    case MLS_FUNC_LOG10: return log10(x);
    case MLS_FUNC_SQUARE: return x * x;
    case MLS_FUNC_TANH: return tanh(x);
    default: return x;
    }
}

typedef struct cat_table {
    int64_t *slots; /* category index or -1 */
    uint64_t mask;
} cat_table;

static mls_status table_build(const mls_transform_op *op, cat_table *t, mls_error *err)
{
    uint64_t size = 16;
    while (size < (uint64_t)op->n_categories * 2) size <<= 1;
    t->slots = malloc(size * sizeof(int64_t));
    if (t->slots == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "category table");
    t->mask = size - 1;
    for (uint64_t i = 0; i < size; i++) t->slots[i] = -1;
    for (int64_t c = 0; c < op->n_categories; c++) {
        const char *p = op->cat_bytes + op->cat_offsets[c];
        int64_t n = op->cat_offsets[c + 1] - op->cat_offsets[c];
        uint64_t s = hash_bytes(p, n) & t->mask;
        while (t->slots[s] >= 0) s = (s + 1) & t->mask;
        t->slots[s] = c;
    }
    return MLS_STATUS_OK;
}

static int64_t table_find(const mls_transform_op *op, const cat_table *t, mls_str v)
{
    if (v.ptr == NULL) return -1;
    uint64_t s = hash_bytes(v.ptr, v.len) & t->mask;
    for (;;) {
        int64_t c = t->slots[s];
        if (c < 0) return -1;
        int64_t n = op->cat_offsets[c + 1] - op->cat_offsets[c];
        if (n == v.len && memcmp(op->cat_bytes + op->cat_offsets[c], v.ptr, (size_t)n) == 0)
            return c;
        s = (s + 1) & t->mask;
    }
}

static mls_status check_categories(const mls_transform_op *op, int64_t i, mls_error *err)
{
    if (op->n_categories < 0 || op->n_categories > (INT64_C(1) << 40) ||
        op->cat_offsets == NULL || op->cat_bytes_len < 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "transform %lld: bad categories",
                             (long long)i);
    if (op->cat_offsets[0] != 0)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "transform %lld: category offsets must start at 0", (long long)i);
    for (int64_t c = 0; c < op->n_categories; c++)
        if (op->cat_offsets[c + 1] < op->cat_offsets[c] ||
            op->cat_offsets[c + 1] > op->cat_bytes_len)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "transform %lld: category offset %lld out of order or "
                                 "past the %lld bytes",
                                 (long long)i, (long long)c + 1,
                                 (long long)op->cat_bytes_len);
    return MLS_STATUS_OK;
}

/* kinds[c]: 0 numeric, 1 string, -1 neither (a NULL column pointer). */
static mls_status check_op_kinds(const mls_transform_op *op, int64_t i, const int *kinds,
                                 int64_t n_in_cols, int64_t n_out_cols, mls_error *err)
{
    if (op->in_col < 0 || op->in_col >= n_in_cols)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "transform %lld: input column %lld outside 0..%lld", (long long)i,
                             (long long)op->in_col, (long long)n_in_cols - 1);
    int64_t width = 1;
    if (op->kind == MLS_TRANSFORM_BINS) {
        if (kinds[op->in_col] != 0)
            return mls_error_set(err, MLS_STATUS_ERR_TYPE,
                                 "transform %lld: input column %lld is not numeric", (long long)i,
                                 (long long)op->in_col);
        if (op->n_bins < 1 || (op->n_bins > 1 && op->edges == NULL) ||
            (op->func < 0 || op->func >= MLS_FUNC_COUNT_))
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "transform %lld: %lld bins",
                                 (long long)i, (long long)op->n_bins);
        for (int64_t b = 1; b + 1 < op->n_bins; b++)
            if (!(op->edges[b] >= op->edges[b - 1]))
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "transform %lld: bin edges out of order at %lld",
                                     (long long)i, (long long)b);
        if (op->bins_onehot) width = op->n_bins;
    } else if (op->kind == MLS_TRANSFORM_NUMERIC) {
        if (kinds[op->in_col] != 0)
            return mls_error_set(err, MLS_STATUS_ERR_TYPE,
                                 "transform %lld: input column %lld is not numeric", (long long)i,
                                 (long long)op->in_col);
        if (op->func < 0 || op->func >= MLS_FUNC_COUNT_)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "transform %lld: unknown function %d",
                                 (long long)i, op->func);
        if (op->indicator_col < -1 || op->indicator_col >= n_out_cols)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "transform %lld: indicator column %lld outside 0..%lld",
                                 (long long)i, (long long)op->indicator_col,
                                 (long long)n_out_cols - 1);
    } else if (op->kind == MLS_TRANSFORM_ONEHOT || op->kind == MLS_TRANSFORM_ORDINAL) {
        if (kinds[op->in_col] != 1)
            return mls_error_set(err, MLS_STATUS_ERR_TYPE,
                                 "transform %lld: input column %lld is not a string column",
                                 (long long)i, (long long)op->in_col);
        mls_status st = check_categories(op, i, err);
        if (st != MLS_STATUS_OK) return st;
        if (op->missing_category < -1 || op->missing_category >= op->n_categories)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "transform %lld: missing category %lld outside -1..%lld",
                                 (long long)i, (long long)op->missing_category,
                                 (long long)op->n_categories - 1);
        if (op->unknown_mode != MLS_UNKNOWN_IGNORE && op->unknown_mode != MLS_UNKNOWN_ERROR)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "transform %lld: unknown-category mode %d", (long long)i,
                                 op->unknown_mode);
        if (op->kind == MLS_TRANSFORM_ONEHOT) {
            width = op->cat_out != NULL ? op->width : op->n_categories;
            if (width < 0 || op->unknown_out < -1 ||
                op->unknown_out >= width)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "transform %lld: one-hot width %lld or unknown column "
                                     "%lld out of range",
                                     (long long)i, (long long)width, (long long)op->unknown_out);
            if (op->cat_out != NULL)
                for (int64_t c = 0; c < op->n_categories; c++)
                    if (op->cat_out[c] < -1 || op->cat_out[c] >= width)
                        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                             "transform %lld: category %lld goes to column "
                                             "%lld, outside -1..%lld",
                                             (long long)i, (long long)c,
                                             (long long)op->cat_out[c], (long long)width - 1);
        }
    } else {
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "transform %lld: unknown kind %d",
                             (long long)i, op->kind);
    }
    if (op->out_col < 0 || op->out_col > n_out_cols - width)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "transform %lld: output columns %lld..+%lld past the %lld outputs",
                             (long long)i, (long long)op->out_col, (long long)width,
                             (long long)n_out_cols);
    return MLS_STATUS_OK;
}

static mls_status check_op(const mls_transform_op *op, int64_t i, const double *const *num_cols,
                           const mls_str *const *str_cols, int64_t n_in_cols, int64_t n_out_cols,
                           mls_error *err)
{
    int kinds[3] = {-1, -1, -1}; /* only the op's own column is looked at */
    if (op->in_col < 0 || op->in_col >= n_in_cols)
        return check_op_kinds(op, i, kinds, n_in_cols, n_out_cols, err);
    int k = num_cols[op->in_col] != NULL ? 0 : str_cols[op->in_col] != NULL ? 1 : -1;
    kinds[0] = k;
    mls_transform_op shifted = *op;
    shifted.in_col = 0;
    mls_status st = check_op_kinds(&shifted, i, kinds, 1, n_out_cols, err);
    if (st == MLS_STATUS_ERR_TYPE) /* name the real column */
        return mls_error_set(err, MLS_STATUS_ERR_TYPE, "transform %lld: input column %lld is %s",
                             (long long)i, (long long)op->in_col,
                             op->kind == MLS_TRANSFORM_NUMERIC || op->kind == MLS_TRANSFORM_BINS
                                 ? "not numeric"
                                 : "not a string column");
    return st;
}

mls_status mls_transform_check(const mls_transform_op *ops, int64_t n_ops,
                               const int64_t *col_is_string, int64_t n_in_cols,
                               int64_t n_out_cols, mls_error *err)
{
    if (n_ops < 0 || n_in_cols < 0 || n_out_cols < 0)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "negative size");
    int kinds[1];
    for (int64_t i = 0; i < n_ops; i++) {
        const mls_transform_op *op = &ops[i];
        kinds[0] = -1;
        if (op->in_col >= 0 && op->in_col < n_in_cols) {
            int64_t k = col_is_string[op->in_col];
            kinds[0] = k == 0 ? 0 : k == 1 ? 1 : -1;
        }
        mls_transform_op shifted = *op;
        int64_t n_in = n_in_cols;
        if (op->in_col >= 0 && op->in_col < n_in_cols) {
            shifted.in_col = 0;
            n_in = 1;
        }
        mls_status st = check_op_kinds(&shifted, i, kinds, n_in, n_out_cols, err);
        if (st == MLS_STATUS_ERR_TYPE)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "transform %lld: input column %lld is %s", (long long)i,
                                 (long long)op->in_col,
                                 op->kind == MLS_TRANSFORM_NUMERIC || op->kind == MLS_TRANSFORM_BINS
                                     ? "not numeric"
                                     : "not a string column");
        if (st != MLS_STATUS_OK) return st;
    }
    return MLS_STATUS_OK;
}

struct mls_transform_tables {
    int64_t n_ops;
    cat_table *tables; /* n_ops; slots NULL for numeric ops */
    int64_t *n_categories;
};

void mls_transform_tables_free(mls_transform_tables *t)
{
    if (t == NULL) return;
    if (t->tables != NULL)
        for (int64_t i = 0; i < t->n_ops; i++) free(t->tables[i].slots);
    free(t->tables);
    free(t->n_categories);
    free(t);
}

mls_status mls_transform_tables_build(const mls_transform_op *ops, int64_t n_ops,
                                      mls_transform_tables **out, mls_error *err)
{
    *out = NULL;
    if (n_ops < 0 || (uint64_t)n_ops > SIZE_MAX / sizeof(cat_table) - 1)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "bad number of transforms %lld",
                             (long long)n_ops);
    mls_transform_tables *t = calloc(1, sizeof(*t));
    if (t == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "category tables");
    t->n_ops = n_ops;
    t->tables = calloc((size_t)n_ops + 1, sizeof(cat_table));
    t->n_categories = calloc((size_t)n_ops + 1, sizeof(int64_t));
    if (t->tables == NULL || t->n_categories == NULL) {
        mls_transform_tables_free(t);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "category tables");
    }
    for (int64_t i = 0; i < n_ops; i++) {
        const mls_transform_op *op = &ops[i];
        if (op->kind != MLS_TRANSFORM_ONEHOT && op->kind != MLS_TRANSFORM_ORDINAL) continue;
        mls_status st = check_categories(op, i, err);
        if (st == MLS_STATUS_OK) st = table_build(op, &t->tables[i], err);
        if (st != MLS_STATUS_OK) {
            mls_transform_tables_free(t);
            return st;
        }
        t->n_categories[i] = op->n_categories;
    }
    *out = t;
    return MLS_STATUS_OK;
}

mls_status mls_transform_apply(const mls_transform_op *ops, int64_t n_ops, int64_t n_rows,
                               const double *const *num_cols, const mls_str *const *str_cols,
                               int64_t n_in_cols, double *out, int64_t n_out_cols,
                               mls_error *err)
{
    return mls_transform_apply_tables(ops, n_ops, NULL, n_rows, num_cols, str_cols, n_in_cols,
                                      out, n_out_cols, err);
}

mls_status mls_transform_apply_tables(const mls_transform_op *ops, int64_t n_ops,
                                      const mls_transform_tables *tables, int64_t n_rows,
                                      const double *const *num_cols,
                                      const mls_str *const *str_cols, int64_t n_in_cols,
                                      double *out, int64_t n_out_cols, mls_error *err)
{
    return mls_transform_apply_rows(ops, n_ops, tables, 0, n_rows, num_cols, str_cols,
                                    n_in_cols, out, n_out_cols, err);
}

mls_status mls_transform_apply_rows(const mls_transform_op *ops, int64_t n_ops,
                                    const mls_transform_tables *tables, int64_t row0,
                                    int64_t n_rows, const double *const *num_cols,
                                    const mls_str *const *str_cols, int64_t n_in_cols,
                                    double *out, int64_t n_out_cols, mls_error *err)
{
    if (row0 < 0) return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "negative first row");
    if (n_ops < 0 || n_rows < 0 || n_in_cols < 0 || n_out_cols < 0)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "negative size");
    if (tables != NULL && tables->n_ops != n_ops)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "category tables built for %lld transforms, given %lld",
                             (long long)tables->n_ops, (long long)n_ops);
    for (int64_t i = 0; i < n_ops; i++) {
        mls_status st = check_op(&ops[i], i, num_cols, str_cols, n_in_cols, n_out_cols, err);
        if (st != MLS_STATUS_OK) return st;
    }
    for (int64_t i = 0; i < n_ops; i++) {
        const mls_transform_op *op = &ops[i];
        if (op->kind == MLS_TRANSFORM_NUMERIC) {
            const double *x = num_cols[op->in_col] + row0;
            for (int64_t r = 0; r < n_rows; r++) {
                double v = x[r];
                int missing = isnan(v);
                double *row = out + r * n_out_cols;
                double y = (missing ? op->fill : v) * op->mul + op->add;
                if (op->func != MLS_FUNC_NONE) y = apply_func(op->func, y) * op->mul2 + op->add2;
                row[op->out_col] = y;
                if (op->indicator_col >= 0) row[op->indicator_col] = missing ? 1.0 : 0.0;
            }
            continue;
        }
        if (op->kind == MLS_TRANSFORM_BINS) {
            const double *x = num_cols[op->in_col] + row0;
            for (int64_t r = 0; r < n_rows; r++) {
                double v = x[r];
                v = (isnan(v) ? op->fill : v) * op->mul + op->add;
                if (op->func != MLS_FUNC_NONE) v = apply_func(op->func, v) * op->mul2 + op->add2;
                if (isnan(v))
                    return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                         "row %lld, input column %lld: NaN reaches a "
                                         "KBinsDiscretizer",
                                         (long long)(row0 + r), (long long)op->in_col);
                int64_t lo = 0, hi = op->n_bins - 1; /* count of inner edges <= v */
                while (lo < hi) {
                    int64_t mid = lo + (hi - lo) / 2;
                    if (op->edges[mid] <= v) lo = mid + 1;
                    else hi = mid;
                }
                double *row = out + r * n_out_cols;
                if (op->bins_onehot) {
                    memset(row + op->out_col, 0, (size_t)op->n_bins * sizeof(double));
                    row[op->out_col + lo] = 1.0;
                } else {
                    row[op->out_col] = (double)lo;
                }
            }
            continue;
        }
        cat_table t = {0};
        int own = tables == NULL;
        if (own) {
            mls_status st = table_build(op, &t, err);
            if (st != MLS_STATUS_OK) return st;
        } else {
            if (tables->n_categories[i] != op->n_categories || tables->tables[i].slots == NULL)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "transform %lld: category table does not match",
                                     (long long)i);
            t = tables->tables[i];
        }
        const mls_str *x = str_cols[op->in_col] + row0;
        for (int64_t r = 0; r < n_rows; r++) {
            double *row = out + r * n_out_cols;
            int64_t c = x[r].ptr == NULL && op->missing_category >= 0 ? op->missing_category
                                                                       : table_find(op, &t, x[r]);
            if (c < 0 && op->unknown_mode == MLS_UNKNOWN_ERROR) {
                if (own) free(t.slots);
                return mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                     "row %lld, input column %lld: %s category",
                                     (long long)(row0 + r),
                                     (long long)op->in_col,
                                     x[r].ptr == NULL ? "missing" : "unknown");
            }
            if (op->kind == MLS_TRANSFORM_ONEHOT) {
                if (op->cat_out == NULL) {
                    memset(row + op->out_col, 0, (size_t)op->n_categories * sizeof(double));
                    if (c >= 0) row[op->out_col + c] = 1.0;
                } else {
                    memset(row + op->out_col, 0, (size_t)op->width * sizeof(double));
                    int64_t col = c >= 0 ? op->cat_out[c] : op->unknown_out;
                    if (col >= 0) row[op->out_col + col] = 1.0;
                }
            } else {
                row[op->out_col] = c >= 0 ? (double)c : op->unknown_value;
            }
        }
        if (own) free(t.slots);
    }
    return MLS_STATUS_OK;
}
