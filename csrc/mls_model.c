#include "mls_model.h"

#include <stdlib.h>
#include <string.h>

#include "mls_graph.h"
#include "mls_kmeans.h"
#include "mls_linear.h"
#include "mls_pipeline.h"
#include "mls_topk.h"
#include "mls_tree.h"

/* The registry: kind tag -> family table. One line per family. */
static const mls_model_vtable *const family_tables[] = {
    &mls_linear_regressor_vtable,
    &mls_logistic_regression_vtable,
    &mls_tree_ensemble_vtable,
    &mls_kmeans_vtable,
    &mls_recommender_vtable,
    &mls_graph_vtable,
    &mls_pipeline_vtable,
};

const mls_model_vtable *mls_model_vtable_for(uint32_t kind)
{
    for (size_t i = 0; i < sizeof(family_tables) / sizeof(family_tables[0]); i++) {
        if ((uint32_t)family_tables[i]->kind == kind) return family_tables[i];
    }
    return NULL;
}

static size_t round_up_align(size_t n)
{
    return (n + MLS_FORMAT_ALIGN - 1) / MLS_FORMAT_ALIGN * MLS_FORMAT_ALIGN;
}

static mls_status model_init(mls_model *m, mls_error *err)
{
    mls_status st = m->vt->init(m, err);
    if (st != MLS_STATUS_OK) return st;
    if (m->n_features < 1)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "model '%s' has %lld features; at least 1 is required",
                             m->vt->name, (long long)m->n_features);
    return MLS_STATUS_OK;
}

mls_status mls_model_create(uint32_t kind, const mls_section *sections,
                            size_t n_sections, mls_model **out, mls_error *err)
{
    *out = NULL;
    const mls_model_vtable *vt = mls_model_vtable_for(kind);
    if (vt == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_UNSUPPORTED,
                             "unknown model kind %u", (unsigned)kind);
    if (n_sections > MLS_FORMAT_MAX_SECTIONS)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "%zu sections given, at most %d are allowed", n_sections,
                             MLS_FORMAT_MAX_SECTIONS);

    /* One aligned block holds every array, each starting on a 64-byte
     * boundary, the same layout a mapped file gives. */
    size_t total = 0;
    for (size_t i = 0; i < n_sections; i++) {
        int64_t elems = mls_section_size(&sections[i]);
        size_t esize = mls_dtype_size(sections[i].dtype);
        if (esize == 0 || elems < 0 || sections[i].nbytes != (uint64_t)elems * esize)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                                 "section '%.63s' has an invalid dtype, shape or size",
                                 sections[i].name);
        if (sections[i].nbytes > SIZE_MAX / 2 - total)
            return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "model arrays are too large");
        total += round_up_align((size_t)sections[i].nbytes);
    }

    mls_model *m = calloc(1, sizeof(*m));
    mls_section *descs = calloc(n_sections ? n_sections : 1, sizeof(*descs));
    void *block = NULL;
    if (total > 0 && posix_memalign(&block, MLS_FORMAT_ALIGN, total) != 0) block = NULL;
    if (m == NULL || descs == NULL || (total > 0 && block == NULL)) {
        free(m);
        free(descs);
        free(block);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "out of memory allocating %zu bytes for model arrays", total);
    }
    size_t offset = 0;
    for (size_t i = 0; i < n_sections; i++) {
        descs[i] = sections[i];
        descs[i].name[MLS_SECTION_NAME_MAX - 1] = '\0';
        char *dst = (char *)block + offset;
        if (sections[i].nbytes > 0) memcpy(dst, sections[i].data, (size_t)sections[i].nbytes);
        descs[i].data = dst;
        offset += round_up_align((size_t)sections[i].nbytes);
    }
    m->vt = vt;
    m->sections = descs;
    m->n_sections = n_sections;
    m->owned = block;
    mls_status st = model_init(m, err);
    if (st != MLS_STATUS_OK) {
        /* a caller-built model that fails validation is the caller's mistake */
        if (st == MLS_STATUS_ERR_FORMAT) err->status = st = MLS_STATUS_ERR_ARGUMENT;
        mls_model_free(m);
        return st;
    }
    *out = m;
    return MLS_STATUS_OK;
}

mls_status mls_model_from_file(mls_file *file, mls_model **out, mls_error *err)
{
    *out = NULL;
    uint32_t kind = mls_file_kind(file);
    const mls_model_vtable *vt = mls_model_vtable_for(kind);
    if (vt == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                             "the file holds a model of kind %u, which this build of "
                             "mlserve does not know (a newer mlserve wrote it?)",
                             (unsigned)kind);
    size_t n = mls_file_section_count(file);
    mls_model *m = calloc(1, sizeof(*m));
    mls_section *descs = calloc(n ? n : 1, sizeof(*descs));
    if (m == NULL || descs == NULL) {
        free(m);
        free(descs);
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM, "out of memory loading a model");
    }
    for (size_t i = 0; i < n; i++) descs[i] = *mls_file_section(file, i);
    m->vt = vt;
    m->sections = descs;
    m->n_sections = n;
    m->file = file;
    mls_status st = model_init(m, err);
    if (st != MLS_STATUS_OK) {
        /* the sections of a file that fails validation mean a corrupt file */
        if (st != MLS_STATUS_ERR_NOMEM) err->status = st = MLS_STATUS_ERR_FORMAT;
        m->file = NULL; /* not ours on failure */
        mls_model_free(m);
        return st;
    }
    *out = m;
    return MLS_STATUS_OK;
}

void mls_model_free(mls_model *m)
{
    if (m == NULL) return;
    if (m->vt != NULL && m->vt->release_state != NULL) m->vt->release_state(m);
    mls_file_close(m->file);
    free(m->owned);
    free(m->sections);
    free(m);
}

const mls_section *mls_model_find_section(const mls_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_sections; i++) {
        if (strncmp(m->sections[i].name, name, MLS_SECTION_NAME_MAX) == 0)
            return &m->sections[i];
    }
    return NULL;
}

mls_status mls_model_output_spec(const mls_model *m, mls_method method,
                                 mls_output_spec *spec, mls_error *err)
{
    if ((int)method < 0 || method >= MLS_METHOD_COUNT_)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "unknown method %d", (int)method);
    return m->vt->output_spec(m, method, spec, err);
}

mls_status mls_model_predict(const mls_model *m, mls_method method, const mls_tensor *X,
                             void *out, mls_error *err)
{
    if (X->dtype != m->dtype)
        return mls_error_set(err, MLS_STATUS_ERR_TYPE, "expected %s input, got %s",
                             mls_dtype_name(m->dtype), mls_dtype_name(X->dtype));
    if (X->cols != m->n_features)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "expected %lld features, got %lld",
                             (long long)m->n_features, (long long)X->cols);
    if (X->rows < 1)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE,
                             "expected at least 1 row, got %lld", (long long)X->rows);
    if (X->row_stride < X->cols)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, "row stride %lld < %lld columns",
                             (long long)X->row_stride, (long long)X->cols);
    mls_output_spec spec;
    mls_status st = mls_model_output_spec(m, method, &spec, err);
    if (st != MLS_STATUS_OK) return st;
    return m->vt->predict(m, method, X, out, err);
}

mls_status mls_model_save(const mls_model *m, const char *path, const char *metadata,
                          size_t metadata_len, mls_error *err)
{
    return mls_format_write(path, (uint32_t)m->vt->kind, metadata, metadata_len,
                            m->sections, m->n_sections, err);
}
