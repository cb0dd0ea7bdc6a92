/* mls_transform.h: column transforms of a pipeline (issue 14, step 1).
 *
 * One call transforms a batch: each op reads one input column and writes
 * one or more columns of the caller-owned row-major output (n_rows x
 * n_out_cols), which is the final estimator's input buffer.
 *   MLS_TRANSFORM_NUMERIC: out = (isnan(x) ? fill : x) * mul + add, and,
 *       when indicator_col >= 0, out[indicator_col] = isnan(x) (impute,
 *       Standard/MinMax/MaxAbs/Robust scalers, passthrough: mul 1, add 0,
 *       fill NaN).
 *   MLS_TRANSFORM_ONEHOT: string column; category i (of the training
 *       categories) sets out[out_col + i] = 1; unknown or missing: all zero
 *       (MLS_UNKNOWN_IGNORE) or an error (MLS_UNKNOWN_ERROR).
 *   MLS_TRANSFORM_ORDINAL: string column; out[out_col] = index of the
 *       category, unknown/missing: unknown_value or an error.
 *   A missing string (NULL) takes category missing_category when that is
 *   >= 0 (SimpleImputer(strategy="constant"/"most_frequent") before the
 *   encoder), else it is unknown.
 * Categories are looked up in an open-addressing hash table, built per call
 * by mls_transform_apply or once per model by mls_transform_tables_build
 * (then given to mls_transform_apply_tables with the same ops).
 * Every column index and count is checked before use.
 */
#ifndef MLS_TRANSFORM_H
#define MLS_TRANSFORM_H

#include <stdint.h>

#include "mls_status.h"

typedef struct mls_str {
    const char *ptr; /* NULL: missing value */
    int64_t len;
} mls_str;

enum { MLS_TRANSFORM_NUMERIC = 0, MLS_TRANSFORM_ONEHOT = 1, MLS_TRANSFORM_ORDINAL = 2,
       MLS_TRANSFORM_BINS = 3 };
enum { MLS_UNKNOWN_IGNORE = 0, MLS_UNKNOWN_ERROR = 1 };

typedef struct mls_transform_op {
    int kind;
    int64_t in_col;
    int64_t out_col;
    double fill, mul, add;
    int64_t indicator_col; /* NUMERIC: -1 for none */
    int64_t n_categories;  /* ONEHOT / ORDINAL */
    const char *cat_bytes; /* concatenated UTF-8 */
    const int64_t *cat_offsets; /* n_categories + 1, non-decreasing, last <= cat_bytes_len */
    int64_t cat_bytes_len;
    int unknown_mode;
    double unknown_value; /* ORDINAL with MLS_UNKNOWN_IGNORE */
    int64_t missing_category; /* ONEHOT / ORDINAL: the category a missing value takes
                               * (a string imputer's fill), -1: missing is unknown */
    /* ONEHOT only: cat_out[c] is category c's output column (0..width-1) or -1 for
     * none (a dropped category); several categories may share one (infrequent ones).
     * NULL: category c writes column c and width is n_categories. unknown_out: the
     * column an unknown value sets (infrequent_if_exist), -1 none. */
    const int64_t *cat_out;
    int64_t width;
    int64_t unknown_out;
    /* NUMERIC only: out = func(value) * mul2 + add2, value as above (a
     * FunctionTransformer of a numpy ufunc between scalers); MLS_FUNC_NONE: out = value. */
    int func;
    double mul2, add2;
    /* BINS (KBinsDiscretizer): the numeric value as NUMERIC computes it falls in bin
     * b = the number of inner edges <= it (n_bins - 1 non-decreasing edges);
     * out[out_col] = b (ordinal) or out[out_col + b] = 1 (onehot, n_bins wide). NaN
     * is an error, as in scikit-learn. */
    const double *edges;
    int64_t n_bins;
    int bins_onehot;
} mls_transform_op;

enum {
    MLS_FUNC_NONE = 0, MLS_FUNC_LOG1P = 1, MLS_FUNC_LOG = 2, MLS_FUNC_EXP = 3,
    MLS_FUNC_EXPM1 = 4, MLS_FUNC_SQRT = 5, MLS_FUNC_ABS = 6, MLS_FUNC_LOG2 = 7,
    MLS_FUNC_LOG10 = 8, MLS_FUNC_SQUARE = 9, MLS_FUNC_TANH = 10, MLS_FUNC_COUNT_
};

/* num_cols[c] (float64, n_rows) is used when column c is numeric, str_cols[c]
 * when it is a string column; the other pointer is NULL. */
mls_status mls_transform_apply(const mls_transform_op *ops, int64_t n_ops, int64_t n_rows,
                               const double *const *num_cols, const mls_str *const *str_cols,
                               int64_t n_in_cols, double *out, int64_t n_out_cols,
                               mls_error *err);

/* Checks every op against the columns' kinds (col_is_string[c]: 0 numeric,
 * 1 string; n_in_cols of them) and the n_out_cols outputs, categories included,
 * without any data: what a loader runs once. */
mls_status mls_transform_check(const mls_transform_op *ops, int64_t n_ops,
                               const int64_t *col_is_string, int64_t n_in_cols,
                               int64_t n_out_cols, mls_error *err);

/* The category hash tables of ops, built once (categories checked first).
 * The ops' category bytes and offsets must outlive the tables. */
typedef struct mls_transform_tables mls_transform_tables;
mls_status mls_transform_tables_build(const mls_transform_op *ops, int64_t n_ops,
                                      mls_transform_tables **out, mls_error *err);
void mls_transform_tables_free(mls_transform_tables *t);
/* mls_transform_apply with tables from mls_transform_tables_build(ops, n_ops)
 * (NULL: built per call). */
mls_status mls_transform_apply_tables(const mls_transform_op *ops, int64_t n_ops,
                                      const mls_transform_tables *tables, int64_t n_rows,
                                      const double *const *num_cols,
                                      const mls_str *const *str_cols, int64_t n_in_cols,
                                      double *out, int64_t n_out_cols, mls_error *err);

/* mls_transform_apply_tables for rows row0 .. row0 + n_rows - 1 of the columns,
 * written from the first row of out; rows in messages count from 0 of the columns. */
mls_status mls_transform_apply_rows(const mls_transform_op *ops, int64_t n_ops,
                                    const mls_transform_tables *tables, int64_t row0,
                                    int64_t n_rows, const double *const *num_cols,
                                    const mls_str *const *str_cols, int64_t n_in_cols,
                                    double *out, int64_t n_out_cols, mls_error *err);

#endif /* MLS_TRANSFORM_H */
