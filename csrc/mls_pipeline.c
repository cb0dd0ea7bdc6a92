/* mls_pipeline.c: see mls_pipeline.h. */
#include "mls_pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of transformed rows per chunk of mls_pipeline_predict_columns (L2-sized). */
#define PIPELINE_CHUNK_BYTES (256u * 1024u)

#define FINAL_PREFIX "final."

static const char *const pipe_sections[] = {"pipe.header", "pipe.columns", "pipe.ops",
                                             "pipe.params", "pipe.missing", "pipe.cat_offsets",
                                             "pipe.cat_bytes", "pipe.cat_out",
                                             "pipe.proj_mean", "pipe.proj_weights",
                                             "pipe.normalize", "pipe.poly_powers",
                                             "pipe.bin_edges"};

static int is_pipe_section(const char *name)
{
    for (size_t i = 0; i < sizeof(pipe_sections) / sizeof(pipe_sections[0]); i++)
        if (strncmp(name, pipe_sections[i], MLS_SECTION_NAME_MAX) == 0) return 1;
    return 0;
}

typedef struct pipeline_state {
    int64_t n_in, n_out, n_ops;
    int64_t n_final;           /* the final model's input width: n_out, or the projection's */
    const double *proj_mean;   /* n_out, or NULL: no projection (PCA, TruncatedSVD) */
    const double *proj_w;      /* n_final x n_out */
    int64_t normalize;         /* 0 none; rows scaled to unit 1: l1, 2: l2, 3: max norm */
    const int64_t *poly;       /* n_mid x n_out powers (PolynomialFeatures), or NULL */
    int64_t n_mid;             /* the width after the polynomial features: n_out without */
    const int64_t *col_is_string; /* n_in, in the mapping */
    int has_strings;
    mls_transform_op *ops;        /* n_ops, pointing into the mapping */
    mls_transform_tables *tables; /* category hash tables, built once */
    mls_model *final;             /* NULL: a bare column transform */
} pipeline_state;

static void pipeline_release(mls_model *m)
{
    pipeline_state *s = m->state;
    if (s == NULL) return;
    mls_transform_tables_free(s->tables);
    mls_model_free(s->final);
    free(s->ops);
    free(s);
    m->state = NULL;
}

/* The section `name`, which must be of dtype, ndim and (when >= 0) shape. */
static mls_status need(const mls_model *m, const char *name, mls_dtype dtype, int ndim,
                       int64_t d0, int64_t d1, const mls_section **out, mls_error *err)
{
    const mls_section *s = mls_model_find_section(m, name);
    *out = s;
    if (s == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "pipeline: section '%s' is missing",
                             name);
    if (s->dtype != dtype || s->ndim != ndim || (d0 >= 0 && s->shape[0] != d0) ||
        (ndim == 2 && d1 >= 0 && s->shape[1] != d1))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "pipeline: section '%s' has the wrong dtype or shape "
                             "(expected %s, %d-d, %lld x %lld)",
                             name, mls_dtype_name(dtype), ndim, (long long)d0, (long long)d1);
    if (mls_section_size(s) < (ndim == 1 ? 1 : 0))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "pipeline: section '%s' is empty",
                             name);
    return MLS_STATUS_OK;
}

/* The final model over the final.* sections (borrowed data; the descriptors
 * are its own). */
static mls_status final_init(mls_model *m, int64_t kind, int64_t n_out, mls_model **out,
                             mls_error *err)
{
    *out = NULL;
    size_t n_final = 0, plen = strlen(FINAL_PREFIX);
    for (size_t i = 0; i < m->n_sections; i++) {
        const char *name = m->sections[i].name;
        if (strncmp(name, FINAL_PREFIX, plen) == 0)
            n_final++;
        else if (!is_pipe_section(name))
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline: unexpected section '%.63s'", name);
    }
    if (kind == 0) {
        if (n_final != 0)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline without a final model has %zu final sections",
                                 n_final);
        return MLS_STATUS_OK;
    }
    const mls_model_vtable *vt = kind > 0 && kind < 256 && kind != MLS_KIND_PIPELINE
                                     ? mls_model_vtable_for((uint32_t)kind)
                                     : NULL;
    if (vt == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "pipeline: final model kind %lld is unknown or not allowed",
                             (long long)kind);
    mls_model *f = calloc(1, sizeof(*f));
    mls_section *descs = calloc(n_final ? n_final : 1, sizeof(*descs));
    if (f == NULL || descs == NULL) {
        free(f);
        free(descs);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline: final model");
    }
    size_t k = 0;
    for (size_t i = 0; i < m->n_sections; i++) {
        const mls_section *s = &m->sections[i];
        if (strncmp(s->name, FINAL_PREFIX, plen) != 0) continue;
        descs[k] = *s;
        memset(descs[k].name, 0, MLS_SECTION_NAME_MAX);
        size_t len = 0; /* the name after the prefix, bounded (names need not end in 0) */
        while (len < MLS_SECTION_NAME_MAX - 1 - plen && s->name[plen + len] != '\0') len++;
        memcpy(descs[k].name, s->name + plen, len);
        k++;
    }
    f->vt = vt;
    f->sections = descs;
    f->n_sections = n_final;
    mls_status st = vt->init(f, err);
    if (st == MLS_STATUS_OK && f->n_features != n_out)
        st = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                           "pipeline: the final model takes %lld features, the transform "
                           "gives %lld",
                           (long long)f->n_features, (long long)n_out);
    if (st != MLS_STATUS_OK) {
        mls_model_free(f);
        return st;
    }
    *out = f;
    return MLS_STATUS_OK;
}

static mls_status pipeline_init(mls_model *m, mls_error *err)
{
    const mls_section *hdr, *cols, *ops, *params, *missing, *offs, *bytes, *cat_out;
    mls_status st = need(m, "pipe.header", MLS_DTYPE_INT64, 1, 5, 0, &hdr, err);
    if (st != MLS_STATUS_OK) return st;
    const int64_t *h = hdr->data;
    int64_t n_in = h[0], n_out = h[1], final_kind = h[2], n_ops = h[3];
    if (h[4] != MLS_PIPELINE_FORMAT)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "pipeline: layout version %lld, this build reads %d",
                             (long long)h[4], MLS_PIPELINE_FORMAT);
    if (n_in < 1 || n_out < 1 || n_ops < 1)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "pipeline: %lld inputs, %lld outputs, %lld ops (each >= 1)",
                             (long long)n_in, (long long)n_out, (long long)n_ops);
    /* the shapes below must match these counts, so no count exceeds the file */
    if ((st = need(m, "pipe.columns", MLS_DTYPE_INT64, 1, n_in, 0, &cols, err)) ||
        (st = need(m, "pipe.ops", MLS_DTYPE_INT64, 2, n_ops, MLS_PIPELINE_OP_FIELDS, &ops,
                   err)) ||
        (st = need(m, "pipe.params", MLS_DTYPE_FLOAT64, 2, n_ops, MLS_PIPELINE_PARAM_FIELDS,
                   &params, err)) ||
        (st = need(m, "pipe.missing", MLS_DTYPE_INT64, 1, n_ops, 0, &missing, err)) ||
        (st = need(m, "pipe.cat_offsets", MLS_DTYPE_INT64, 1, -1, 0, &offs, err)) ||
        (st = need(m, "pipe.cat_bytes", MLS_DTYPE_UINT8, 1, -1, 0, &bytes, err)) ||
        (st = need(m, "pipe.cat_out", MLS_DTYPE_INT64, 1, -1, 0, &cat_out, err)))
        return st;
    const int64_t *colv = cols->data;
    int has_strings = 0;
    for (int64_t c = 0; c < n_in; c++) {
        if (colv[c] != 0 && colv[c] != 1)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline: column %lld has kind %lld (0 or 1)", (long long)c,
                                 (long long)colv[c]);
        has_strings |= colv[c] == 1;
    }
    int64_t n_offs = offs->shape[0], n_bytes = bytes->shape[0];
    pipeline_state *s = calloc(1, sizeof(*s));
    if (s == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline state");
    m->state = s;
    s->ops = calloc((size_t)n_ops, sizeof(*s->ops));
    if (s->ops == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline ops");
    s->n_in = n_in;
    s->n_out = n_out;
    s->n_ops = n_ops;
    s->col_is_string = colv;
    s->has_strings = has_strings;
    const int64_t *ov = ops->data, *mv = missing->data;
    const double *pv = params->data;
    const int64_t *offv = offs->data;
    for (int64_t i = 0; i < n_ops; i++) {
        const int64_t *o = ov + i * MLS_PIPELINE_OP_FIELDS;
        const double *p = pv + i * MLS_PIPELINE_PARAM_FIELDS;
        mls_transform_op *op = &s->ops[i];
        if (o[0] < 0 || o[0] > MLS_TRANSFORM_BINS || o[4] < 0 || o[4] > MLS_UNKNOWN_ERROR)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline: op %lld has kind %lld, unknown mode %lld",
                                 (long long)i, (long long)o[0], (long long)o[4]);
        op->kind = (int)o[0];
        op->in_col = o[1];
        op->out_col = o[2];
        op->indicator_col = o[3];
        op->unknown_mode = (int)o[4];
        op->fill = p[0];
        op->mul = p[1];
        op->add = p[2];
        op->unknown_value = p[3];
        op->missing_category = mv[i];
        op->cat_out = NULL;
        op->width = -1;
        op->unknown_out = -1;
        op->func = 0;
        op->mul2 = 1.0;
        op->add2 = 0.0;
        op->edges = NULL;
        op->n_bins = 0;
        op->bins_onehot = 0;
        if (op->kind == MLS_TRANSFORM_NUMERIC || op->kind == MLS_TRANSFORM_BINS) {
            if (o[11] < 0 || o[11] >= MLS_FUNC_COUNT_)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "pipeline: op %lld has function %lld", (long long)i,
                                     (long long)o[11]);
            op->func = (int)o[11];
            op->mul2 = p[4];
            op->add2 = p[5];
            op->missing_category = -1;
            if (op->kind == MLS_TRANSFORM_BINS) {
                const mls_section *be = mls_model_find_section(m, "pipe.bin_edges");
                if (be == NULL || be->dtype != MLS_DTYPE_FLOAT64 || be->ndim != 1)
                    return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                         "pipeline: op %lld bins without a float64 "
                                         "pipe.bin_edges", (long long)i);
                int64_t nb = o[5], e0 = o[6], n_e = be->shape[0];
                if (nb < 1 || nb > n_e + 1 || e0 < 0 || e0 > n_e || nb - 1 > n_e - e0 ||
                    (o[9] != 0 && o[9] != 1))
                    return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                         "pipeline: op %lld: %lld bins from edge %lld past "
                                         "the %lld edges",
                                         (long long)i, (long long)nb, (long long)e0,
                                         (long long)n_e);
                op->n_bins = nb;
                op->edges = (const double *)be->data + e0;
                op->bins_onehot = (int)o[9];
            }
            continue;
        }
        int64_t n_cat = o[5], off0 = o[6], b0 = o[7];
        /* offsets_start + n_cat + 1 <= n_offs without overflow; b0 within the bytes */
        if (n_cat < 0 || off0 < 0 || off0 >= n_offs || n_cat > n_offs - off0 - 1 || b0 < 0 ||
            b0 > n_bytes)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline: op %lld: %lld categories from offset %lld, bytes "
                                 "from %lld, past the %lld offsets / %lld bytes",
                                 (long long)i, (long long)n_cat, (long long)off0, (long long)b0,
                                 (long long)n_offs, (long long)n_bytes);
        op->n_categories = n_cat;
        op->cat_offsets = offv + off0;
        op->cat_bytes = (const char *)bytes->data + b0;
        op->cat_bytes_len = n_bytes - b0;
        int64_t co = o[8], n_co = cat_out->shape[0];
        if (co != -1) { /* a category -> column map: within pipe.cat_out */
            if (op->kind != MLS_TRANSFORM_ONEHOT || co < 0 || co > n_co || n_cat > n_co - co)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "pipeline: op %lld: category map from %lld past the %lld "
                                     "entries of pipe.cat_out",
                                     (long long)i, (long long)co, (long long)n_co);
            op->cat_out = (const int64_t *)cat_out->data + co;
            op->width = o[9];
            op->unknown_out = o[10];
        } else if (o[10] != -1) {
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                 "pipeline: op %lld: an unknown column without a category map",
                                 (long long)i);
        }
    }
    /* kinds, columns, outputs and every category offset (mls_transform_check) */
    st = mls_transform_check(s->ops, n_ops, colv, n_in, n_out, err);
    if (st != MLS_STATUS_OK) return st;
    st = mls_transform_tables_build(s->ops, n_ops, &s->tables, err);
    if (st != MLS_STATUS_OK) return st;
    s->n_final = n_out;
    const mls_section *nz = mls_model_find_section(m, "pipe.normalize");
    if (nz != NULL) {
        if ((st = need(m, "pipe.normalize", MLS_DTYPE_INT64, 1, 1, 0, &nz, err))) return st;
        s->normalize = *(const int64_t *)nz->data;
        if (s->normalize < 0 || s->normalize > 3)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "pipeline: normalize %lld (0..3)",
                                 (long long)s->normalize);
    }
    s->n_mid = n_out;
    const mls_section *pp = mls_model_find_section(m, "pipe.poly_powers");
    if (pp != NULL) {
        if ((st = need(m, "pipe.poly_powers", MLS_DTYPE_INT64, 2, -1, n_out, &pp, err)))
            return st;
        if (pp->shape[0] < 1)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "pipeline: no polynomial features");
        const int64_t *pw = pp->data;
        for (int64_t i = 0; i < pp->shape[0] * n_out; i++)
            if (pw[i] < 0 || pw[i] > 16)
                return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                     "pipeline: polynomial power %lld outside 0..16",
                                     (long long)pw[i]);
        s->poly = pw;
        s->n_mid = pp->shape[0];
        s->n_final = s->n_mid;
    }
    const mls_section *pm = mls_model_find_section(m, "pipe.proj_mean");
    const mls_section *pw = mls_model_find_section(m, "pipe.proj_weights");
    if ((pm == NULL) != (pw == NULL))
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "pipeline: pipe.proj_mean and pipe.proj_weights come together");
    if (pm != NULL) {
        if ((st = need(m, "pipe.proj_mean", MLS_DTYPE_FLOAT64, 1, s->n_mid, 0, &pm, err)) ||
            (st = need(m, "pipe.proj_weights", MLS_DTYPE_FLOAT64, 2, -1, s->n_mid, &pw, err)))
            return st;
        if (pw->shape[0] < 1)
            return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "pipeline: empty projection");
        s->n_final = pw->shape[0];
        s->proj_mean = pm->data;
        s->proj_w = pw->data;
    }
    st = final_init(m, final_kind, s->n_final, &s->final, err);
    if (st != MLS_STATUS_OK) return st;
    m->dtype = MLS_DTYPE_FLOAT64;
    m->n_features = n_in;
    return MLS_STATUS_OK;
}

static mls_status pipeline_output_spec(const mls_model *m, mls_method method,
                                       mls_output_spec *spec, mls_error *err)
{
    const pipeline_state *s = m->state;
    if (s->final != NULL) return mls_model_output_spec(s->final, method, spec, err);
    if (method != MLS_METHOD_TRANSFORM)
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                             "a column transform has only transform");
    spec->ndim = 2;
    spec->cols = s->n_final;
    spec->dtype = MLS_DTYPE_FLOAT64;
    return MLS_STATUS_OK;
}

int64_t mls_pipeline_n_inputs(const mls_model *m)
{
    return m->vt->kind == MLS_KIND_PIPELINE ? ((const pipeline_state *)m->state)->n_in : -1;
}

int64_t mls_pipeline_n_transformed(const mls_model *m)
{
    return m->vt->kind == MLS_KIND_PIPELINE ? ((const pipeline_state *)m->state)->n_final : -1;
}

int mls_pipeline_column_is_string(const mls_model *m, int64_t c)
{
    if (m->vt->kind != MLS_KIND_PIPELINE) return 0;
    const pipeline_state *s = m->state;
    return c >= 0 && c < s->n_in && s->col_is_string[c] == 1;
}

static mls_status check_pipeline(const mls_model *m, int64_t n_rows, int64_t n_in_cols,
                                 mls_error *err)
{
    if (m == NULL || m->vt->kind != MLS_KIND_PIPELINE)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "not a pipeline model");
    const pipeline_state *s = m->state;
    if (n_rows < 0) return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "negative row count");
    if (n_in_cols != s->n_in)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "expected %lld columns, got %lld",
                             (long long)s->n_in, (long long)n_in_cols);
    int64_t wide = s->n_out + s->n_mid + s->n_final;
    if (n_rows > INT64_MAX / 8 / wide)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "too many rows");
    return MLS_STATUS_OK;
}

/* Rows r0 .. r0+n-1 transformed into dst (n x n_final); scratch (n x (n_out + n_mid))
 * holds the stages before the last: column transform (+ Normalizer), polynomial
 * features, projection. */
static mls_status transform_rows(const pipeline_state *s, int64_t r0, int64_t n,
                                 const double *const *num_cols, const mls_str *const *str_cols,
                                 int64_t n_in_cols, double *dst, double *scratch,
                                 mls_error *err)
{
    double *t = s->proj_w != NULL || s->poly != NULL ? scratch : dst;
    mls_status st = mls_transform_apply_rows(s->ops, s->n_ops, s->tables, r0, n, num_cols,
                                             str_cols, n_in_cols, t, s->n_out, err);
    if (st != MLS_STATUS_OK) return st;
    if (s->normalize != 0) /* scikit-learn's Normalizer: a zero row stays zero */
        for (int64_t r = 0; r < n; r++) {
            double *x = t + r * s->n_out, norm = 0.0;
            for (int64_t j = 0; j < s->n_out; j++) {
                double a = fabs(x[j]);
                if (s->normalize == 1) norm += a;
                else if (s->normalize == 2) norm += a * a;
                else if (a > norm) norm = a;
            }
            if (s->normalize == 2) norm = sqrt(norm);
            if (norm != 0.0)
                for (int64_t j = 0; j < s->n_out; j++) x[j] /= norm;
        }
    if (s->poly != NULL) { /* each output: the product of the inputs to its powers */
        double *u = s->proj_w != NULL ? scratch + n * s->n_out : dst;
        for (int64_t r = 0; r < n; r++) {
            const double *x = t + r * s->n_out;
            double *y = u + r * s->n_mid;
            for (int64_t k = 0; k < s->n_mid; k++) {
                const int64_t *pw = s->poly + k * s->n_out;
                double acc = 1.0;
                for (int64_t j = 0; j < s->n_out; j++)
                    for (int64_t e = 0; e < pw[j]; e++) acc *= x[j];
                y[k] = acc;
            }
        }
        t = u;
    }
    if (s->proj_w == NULL) return MLS_STATUS_OK;
    for (int64_t r = 0; r < n; r++) {
        const double *x = t + r * s->n_mid;
        double *y = dst + r * s->n_final;
        for (int64_t k = 0; k < s->n_final; k++) {
            const double *w = s->proj_w + k * s->n_mid;
            double acc = 0.0;
            for (int64_t j = 0; j < s->n_mid; j++) acc += (x[j] - s->proj_mean[j]) * w[j];
            y[k] = acc;
        }
    }
    return MLS_STATUS_OK;
}

static size_t scratch_cells(const pipeline_state *s, int64_t chunk)
{
    return (size_t)chunk * (size_t)(s->n_out + s->n_mid);
}

/* Rows per chunk, so a chunk's transformed block stays in cache. */
static int64_t chunk_rows(const pipeline_state *s, int64_t n_rows)
{
    int64_t wide = s->n_out + s->n_mid + s->n_final;
    int64_t chunk = (int64_t)(PIPELINE_CHUNK_BYTES / ((size_t)wide * sizeof(double)));
    if (chunk < 1) chunk = 1;
    return chunk > n_rows ? n_rows : chunk;
}

mls_status mls_pipeline_transform(const mls_model *m, int64_t n_rows,
                                  const double *const *num_cols, const mls_str *const *str_cols,
                                  int64_t n_in_cols, double *out, mls_error *err)
{
    mls_status st = check_pipeline(m, n_rows, n_in_cols, err);
    if (st != MLS_STATUS_OK) return st;
    const pipeline_state *s = m->state;
    if (s->proj_w == NULL && s->normalize == 0 && s->poly == NULL)
        return mls_transform_apply_tables(s->ops, s->n_ops, s->tables, n_rows, num_cols,
                                          str_cols, n_in_cols, out, s->n_out, err);
    if (n_rows == 0) return MLS_STATUS_OK;
    int64_t chunk = chunk_rows(s, n_rows);
    double *scratch = malloc(scratch_cells(s, chunk) * sizeof(double));
    if (scratch == NULL) return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline rows");
    for (int64_t r0 = 0; r0 < n_rows && st == MLS_STATUS_OK; r0 += chunk) {
        int64_t n = n_rows - r0 < chunk ? n_rows - r0 : chunk;
        st = transform_rows(s, r0, n, num_cols, str_cols, n_in_cols, out + r0 * s->n_final,
                            scratch, err);
    }
    free(scratch);
    return st;
}

mls_status mls_pipeline_predict_columns(const mls_model *m, mls_method method, int64_t n_rows,
                                        const double *const *num_cols,
                                        const mls_str *const *str_cols, int64_t n_in_cols,
                                        void *out, mls_error *err)
{
    mls_status st = check_pipeline(m, n_rows, n_in_cols, err);
    if (st != MLS_STATUS_OK) return st;
    const pipeline_state *s = m->state;
    mls_output_spec spec;
    st = pipeline_output_spec(m, method, &spec, err);
    if (st != MLS_STATUS_OK) return st;
    if (n_rows == 0) return MLS_STATUS_OK;
    if (s->final == NULL) /* TRANSFORM of a bare column transform */
        return mls_pipeline_transform(m, n_rows, num_cols, str_cols, n_in_cols, out, err);
    /* Rows go through in chunks whose transformed block stays in cache (a one-hot
     * of many categories is wide): transform a chunk, predict it, next. */
    size_t out_row = mls_dtype_size(spec.dtype) * (size_t)(spec.ndim == 2 ? spec.cols : 1);
    int64_t chunk = chunk_rows(s, n_rows);
    double *buf = malloc((size_t)chunk * (size_t)s->n_final * sizeof(double));
    double *scratch = malloc(scratch_cells(s, chunk) * sizeof(double));
    if (buf == NULL || scratch == NULL) {
        free(buf);
        free(scratch);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline rows");
    }
    for (int64_t r0 = 0; r0 < n_rows && st == MLS_STATUS_OK; r0 += chunk) {
        int64_t n = n_rows - r0 < chunk ? n_rows - r0 : chunk;
        st = transform_rows(s, r0, n, num_cols, str_cols, n_in_cols, buf, scratch, err);
        if (st != MLS_STATUS_OK) break;
        mls_tensor X = {buf, MLS_DTYPE_FLOAT64, n, s->n_final, s->n_final};
        if (s->final->dtype == MLS_DTYPE_FLOAT32) { /* in place: float32 fits in the doubles */
            float *f = (float *)buf;
            size_t cells = (size_t)n * (size_t)s->n_final;
            for (size_t i = 0; i < cells; i++) f[i] = (float)buf[i];
            X.dtype = MLS_DTYPE_FLOAT32;
        }
        st = mls_model_predict(s->final, method, &X, (char *)out + (size_t)r0 * out_row, err);
    }
    free(buf);
    free(scratch);
    return st;
}

/* A float64 tensor of the inputs: only for pipelines without string columns. */
static mls_status pipeline_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                                   void *out, mls_error *err)
{
    const pipeline_state *s = m->state;
    if (s->has_strings)
        return mls_error_set(err, MLS_STATUS_ERR_TYPE,
                             "this pipeline has string columns: give it columns, records or "
                             "a DataFrame, not a numeric matrix");
    if ((uint64_t)X->rows > SIZE_MAX / sizeof(double) / (uint64_t)s->n_in)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "too many rows");
    double *cols = malloc((size_t)X->rows * (size_t)s->n_in * sizeof(double));
    const double **num = calloc((size_t)s->n_in, sizeof(*num));
    const mls_str **strs = calloc((size_t)s->n_in, sizeof(*strs));
    mls_status st;
    if (cols == NULL || num == NULL || strs == NULL) {
        st = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "pipeline columns");
    } else {
        const double *x = X->data;
        for (int64_t c = 0; c < s->n_in; c++) {
            double *col = cols + c * X->rows;
            for (int64_t r = 0; r < X->rows; r++) col[r] = x[r * X->row_stride + c];
            num[c] = col;
        }
        st = mls_pipeline_predict_columns(m, method, X->rows, num, strs, s->n_in, out, err);
    }
    free(cols);
    free(num);
    free(strs);
    return st;
}

const mls_model_vtable mls_pipeline_vtable = {
    .kind = MLS_KIND_PIPELINE,
    .name = "pipeline",
    .init = pipeline_init,
    .output_spec = pipeline_output_spec,
    .predict = pipeline_predict,
    .release_state = pipeline_release,
};
