/* mls_pipeline.h: a scikit-learn Pipeline as one model (MLS_KIND_PIPELINE = 7):
 * the column transforms of mls_transform.c followed by a final model of
 * another kind, both read from one .mls file.
 *
 * Sections (every size, index, offset and category entry is checked by init,
 * before anything is allocated from it):
 *   pipe.header      int64 [5]: n_in_cols, n_out_cols, final_kind (0: none, the
 *                    pipeline is a bare ColumnTransformer), n_ops, version (1)
 *   pipe.columns     int64 [n_in_cols]: 0 numeric, 1 string
 *   pipe.ops         int64 [n_ops, 12]: kind, in_col, out_col, indicator_col,
 *                    unknown_mode, n_categories, offsets_start, bytes_start,
 *                    cat_out_start (-1: category c is column c), width, unknown_out
 *                    (one-hot: see mls_transform.h), func (numeric: MLS_FUNC_*)
 *   pipe.params      float64 [n_ops, 6]: fill, mul, add, unknown_value, mul2, add2
 *   pipe.missing     int64 [n_ops]: missing_category (see mls_transform.h)
 *   pipe.cat_offsets int64 [k >= 1]: each categorical op's n_categories + 1
 *                    offsets from offsets_start, starting at 0, relative to
 *                    bytes_start in pipe.cat_bytes
 *   pipe.cat_bytes   uint8 [b >= 1]: the categories' UTF-8, concatenated
 *   pipe.cat_out     int64 [k >= 1]: one-hot output column of each category of the
 *                    ops whose cat_out_start >= 0 (drop, infrequent categories)
 *   pipe.proj_mean, pipe.proj_weights   optional, together: float64 [n_out] and
 *                    [n_final, n_out]; the transformed row x becomes
 *                    (x - mean) @ weights.T (PCA, TruncatedSVD) before the final model
 *   final.<name>     the final model's sections, its own names prefixed
 * Any other section is an error. The final model is validated by its own
 * family's init over the same (mapped) arrays.
 */
#ifndef MLS_PIPELINE_H
#define MLS_PIPELINE_H

#include <stdint.h>

#include "mls_model.h"
#include "mls_transform.h"

#define MLS_PIPELINE_OP_FIELDS 12
#define MLS_PIPELINE_PARAM_FIELDS 6
#define MLS_PIPELINE_FORMAT 1

extern const mls_model_vtable mls_pipeline_vtable;

/* Input columns of a pipeline model m and whether column c is a string
 * column (0/1); n_transformed: the width of the transform's output (after a
 * projection, if any): the final model's input. */
int64_t mls_pipeline_n_inputs(const mls_model *m);
int64_t mls_pipeline_n_transformed(const mls_model *m);
int mls_pipeline_column_is_string(const mls_model *m, int64_t c);

/* Transform n_rows rows given by columns (num_cols[c] for numeric, str_cols[c]
 * for string columns, the other NULL) into out (caller-owned, n_rows x
 * n_transformed, row-major). */
mls_status mls_pipeline_transform(const mls_model *m, int64_t n_rows,
                                  const double *const *num_cols, const mls_str *const *str_cols,
                                  int64_t n_in_cols, double *out, mls_error *err);

/* Transform, then the final model's `method`, in one call; out per
 * mls_model_output_spec(m, method) for n_rows rows (caller-owned). The
 * transformed rows live in a temporary buffer of n_rows x n_transformed. */
mls_status mls_pipeline_predict_columns(const mls_model *m, mls_method method, int64_t n_rows,
                                        const double *const *num_cols,
                                        const mls_str *const *str_cols, int64_t n_in_cols,
                                        void *out, mls_error *err);

#endif /* MLS_PIPELINE_H */
