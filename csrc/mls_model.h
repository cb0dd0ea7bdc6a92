/* mls_model.h: a loaded model = a kind tag, named array sections, and the
 * family's table of functions.
 *
 * A model is immutable once created, so predict may run from many threads
 * at once without locks. Its arrays either live in an open .mls mapping
 * (mls_model_from_file) or in one 64-byte-aligned block the model owns
 * (mls_model_create copies the caller's arrays).
 *
 * Adding a family: write csrc/mls_<family>.c exporting one
 * mls_model_vtable, and add one line to the table in mls_model.c.
 */
#ifndef MLS_MODEL_H
#define MLS_MODEL_H

#include <stdint.h>

#include "mls_array.h"
#include "mls_format.h"
#include "mls_status.h"

/* Values are stored in .mls files: never renumber. */
typedef enum mls_kind {
    MLS_KIND_INVALID = 0,
    MLS_KIND_LINEAR_REGRESSOR = 1,  /* LinearRegression, Ridge, ... */
    MLS_KIND_LOGISTIC_REGRESSION = 2,
    MLS_KIND_TREE_ENSEMBLE = 3,     /* trees, forests, gradient boosting */
    MLS_KIND_KMEANS = 4,            /* k-means clustering (mls_kmeans.c) */
    MLS_KIND_RECOMMENDER = 5,       /* exact top-k over factor matrices (mls_topk.c) */
    MLS_KIND_GRAPH = 6,             /* neural networks (mls_graph.c) */
    MLS_KIND_PIPELINE = 7,          /* column transforms + a final model (mls_pipeline.c) */
} mls_kind;

typedef enum mls_method {
    MLS_METHOD_PREDICT = 0,
    MLS_METHOD_PREDICT_PROBA = 1,
    MLS_METHOD_DECISION_FUNCTION = 2,
    MLS_METHOD_TRANSFORM = 3, /* k-means: distances to every center */
    MLS_METHOD_COUNT_
} mls_method;

/* Shape and type of a method's output for n rows: (n,) when ndim == 1,
 * (n, cols) when ndim == 2. */
typedef struct mls_output_spec {
    int ndim;
    int64_t cols;
    mls_dtype dtype;
} mls_output_spec;

typedef struct mls_model mls_model;

typedef struct mls_model_vtable {
    mls_kind kind;
    const char *name; /* "linear_regressor" */
    /* Validates the sections (names, dtypes, shapes, finiteness) and sets
     * m->dtype, m->n_features and m->state. Runs on every create/load, so a
     * crafted file can never make predict read out of bounds. */
    mls_status (*init)(mls_model *m, mls_error *err);
    /* MLS_STATUS_ERR_UNSUPPORTED for a method the family lacks. */
    mls_status (*output_spec)(const mls_model *m, mls_method method,
                              mls_output_spec *spec, mls_error *err);
    /* X: rows of m->dtype with cols == m->n_features (checked by the
     * caller, mls_model_predict). out: caller-allocated, per output_spec. */
    mls_status (*predict)(const mls_model *m, mls_method method, const mls_tensor *X,
                          void *out, mls_error *err);
    void (*release_state)(mls_model *m); /* frees m->state; may be NULL */
} mls_model_vtable;

struct mls_model {
    const mls_model_vtable *vt;
    mls_dtype dtype;     /* element type predict expects */
    int64_t n_features;
    size_t n_sections;
    mls_section *sections; /* descriptors; data points into file or owned */
    mls_file *file;        /* owned mapping, or NULL */
    void *owned;           /* owned data block, or NULL */
    void *state;           /* family-private */
};

/* Family table for a kind tag, NULL if this build does not know it. */
const mls_model_vtable *mls_model_vtable_for(uint32_t kind);

/* New model of `kind` from arrays the caller owns (copied). */
mls_status mls_model_create(uint32_t kind, const mls_section *sections,
                            size_t n_sections, mls_model **out, mls_error *err);
/* New model over an open file; takes ownership of `file` on success only. */
mls_status mls_model_from_file(mls_file *file, mls_model **out, mls_error *err);
void mls_model_free(mls_model *m); /* NULL is fine */

/* NULL when absent. */
const mls_section *mls_model_find_section(const mls_model *m, const char *name);

/* Checks X against the model (dtype, n_features, rows >= 1) and runs the
 * family's predict. */
mls_status mls_model_output_spec(const mls_model *m, mls_method method,
                                 mls_output_spec *spec, mls_error *err);
mls_status mls_model_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                             void *out, mls_error *err);

/* Writes the model's sections to `path` (atomic, see mls_format_write). */
mls_status mls_model_save(const mls_model *m, const char *path, const char *metadata,
                          size_t metadata_len, mls_error *err);

#endif /* MLS_MODEL_H */
