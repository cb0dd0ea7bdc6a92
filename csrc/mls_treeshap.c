/* mls_treeshap.c: path-dependent TreeSHAP (see mls_treeshap.h). */
#include "mls_treeshap.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t feature;
    double zero, one, pweight;
} path_elem;

static void extend(path_elem *p, int d, double zf, double of, int32_t fi)
{
    p[d].feature = fi;
    p[d].zero = zf;
    p[d].one = of;
    p[d].pweight = d == 0 ? 1.0 : 0.0;
    for (int i = d - 1; i >= 0; i--) {
        p[i + 1].pweight += of * p[i].pweight * (i + 1) / (double)(d + 1);
        p[i].pweight = zf * p[i].pweight * (d - i) / (double)(d + 1);
    }
}

static void unwind(path_elem *p, int d, int pi)
{
    double of = p[pi].one, zf = p[pi].zero, next = p[d].pweight;
    for (int i = d - 1; i >= 0; i--) {
        if (of != 0) {
            double tmp = p[i].pweight;
            p[i].pweight = next * (d + 1) / ((i + 1) * of);
            next = tmp - p[i].pweight * zf * (d - i) / (double)(d + 1);
        } else {
            p[i].pweight = p[i].pweight * (d + 1) / (zf * (d - i));
        }
    }
    for (int i = pi; i < d; i++) {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

static double unwound_sum(const path_elem *p, int d, int pi)
{
    double of = p[pi].one, zf = p[pi].zero, next = p[d].pweight, total = 0;
    for (int i = d - 1; i >= 0; i--) {
        if (of != 0) {
            double tmp = next * (d + 1) / ((i + 1) * of);
            total += tmp;
            next = p[i].pweight - tmp * zf * ((d - i) / (double)(d + 1));
        } else {
            total += (p[i].pweight / zf) / ((d - i) / (double)(d + 1));
        }
    }
    return total;
}

typedef struct {
    const mls_treeshap_model *m;
    int64_t base;          /* global index of the tree's first node */
    int out0;              /* first output column */
    const double *x;
    double *phi;           /* (n_outputs, n_features + 1) of this row */
    const double *scale;   /* per output */
} walk;

static int goes_left(const walk *w, int64_t g)
{
    const mls_treeshap_model *m = w->m;
    double v = w->x[m->node_feature[g]];
    uint8_t fl = m->node_flags[g];
    if (isnan(v) || ((fl & 4) && fabs(v) <= 1e-35f)) return fl & 1;
    if (m->threshold_f32) v = (double)(float)v;
    double t = m->node_threshold[g];
    return m->compare ? v < t : v <= t;
}

static void recurse(const walk *w, int64_t node, path_elem *parent, int d, double pz, double po,
                    int32_t pfi)
{
    const mls_treeshap_model *m = w->m;
    path_elem *p = parent + d;
    if (d > 0) memcpy(p, parent, (size_t)d * sizeof *p);
    extend(p, d, pz, po, pfi);
    int64_t g = w->base + node;
    int32_t f = m->node_feature[g];
    if (f < 0) {
        const double *leaf = m->leaf_values + (int64_t)m->node_child[g] * m->leaf_width;
        int64_t stride = m->n_features + 1;
        for (int i = 1; i <= d; i++) {
            double s = unwound_sum(p, d, i) * (p[i].one - p[i].zero);
            for (int64_t j = 0; j < m->leaf_width; j++) {
                int64_t o = w->out0 + j;
                w->phi[o * stride + p[i].feature] += s * leaf[j] * w->scale[o];
            }
        }
        return;
    }
    int64_t left = m->node_child[g], right = left + 1;
    int64_t hot = goes_left(w, g) ? left : right, cold = hot == left ? right : left;
    double cover = m->node_cover[g];
    double hz = cover > 0 ? m->node_cover[w->base + hot] / cover : 0.5;
    double cz = cover > 0 ? m->node_cover[w->base + cold] / cover : 0.5;
    double iz = 1, io = 1;
    int k;
    for (k = 1; k <= d; k++)
        if (p[k].feature == f) break;
    if (k <= d) {
        iz = p[k].zero;
        io = p[k].one;
        unwind(p, d, k);
        d -= 1;
    }
    recurse(w, hot, p, d + 1, hz * iz, io, f);
    recurse(w, cold, p, d + 1, cz * iz, 0, f);
}

typedef struct {
    const mls_treeshap_model *m;
    const double *X, *scale, *bias;
    double *out;
    int64_t row0, row1, max_depth;
    int status;
} job;

static void *run_job(void *arg)
{
    job *jb = arg;
    const mls_treeshap_model *m = jb->m;
    int64_t md = jb->max_depth + 2;
    path_elem *path = malloc((size_t)(md * (md + 1) / 2 + md) * sizeof *path);
    if (path == NULL) {
        jb->status = 1;
        return NULL;
    }
    int64_t stride = m->n_features + 1, per_row = m->n_outputs * stride;
    for (int64_t r = jb->row0; r < jb->row1; r++) {
        double *phi = jb->out + r * per_row;
        memset(phi, 0, (size_t)per_row * sizeof *phi);
        walk w = {m, 0, 0, jb->X + r * m->n_features, phi, jb->scale};
        for (int64_t t = 0; t < m->n_trees; t++) {
            w.base = m->tree_offsets[t];
            w.out0 = m->tree_output[t];
            recurse(&w, 0, path, 0, 1, 1, -1);
        }
        for (int64_t o = 0; o < m->n_outputs; o++) phi[o * stride + m->n_features] = jb->bias[o];
    }
    free(path);
    return NULL;
}

#define MAX_THREADS 64

mls_status mls_treeshap(const mls_treeshap_model *m, const double *X, int64_t n_rows,
                        double *out, int n_threads, mls_error *err)
{
    if (m->n_features < 1 || m->n_outputs < 1 || m->n_trees < 1 || m->leaf_width < 1 ||
        m->leaf_width > m->n_outputs || n_rows < 0)
        return mls_error_set(err, MLS_STATUS_ERR_SHAPE, "treeshap: bad model sizes");
    if (m->tree_offsets[0] != 0 || m->tree_offsets[m->n_trees] != m->n_nodes)
        return mls_error_set(err, MLS_STATUS_ERR_FORMAT, "treeshap: bad tree_offsets");
    /* check every index, compute depths and each tree's expected value */
    double *mean = malloc((size_t)(m->n_nodes > 0 ? m->n_nodes : 1) * sizeof *mean);
    int64_t *depth = malloc((size_t)(m->n_nodes > 0 ? m->n_nodes : 1) * sizeof *depth);
    double *bias = calloc((size_t)m->n_outputs, sizeof *bias);
    double *scale = calloc((size_t)m->n_outputs, sizeof *scale);
    mls_status status = MLS_STATUS_OK;
    if (!mean || !depth || !bias || !scale) {
        status = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "treeshap: out of memory");
        goto done;
    }
    int64_t max_depth = 0;
    for (int64_t t = 0; t < m->n_trees && status == MLS_STATUS_OK; t++) {
        int64_t b = m->tree_offsets[t], e = m->tree_offsets[t + 1], n = e - b;
        if (n < 1 || e > m->n_nodes || m->tree_output[t] < 0 ||
            m->tree_output[t] + m->leaf_width > m->n_outputs) {
            status = mls_error_set(err, MLS_STATUS_ERR_FORMAT, "treeshap: bad tree %lld",
                                   (long long)t);
            break;
        }
        for (int64_t i = 0; i < n; i++) depth[b + i] = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t g = b + i;
            if (m->node_feature[g] >= 0) {
                int64_t l = m->node_child[g];
                if (m->node_feature[g] >= m->n_features || l <= i || l + 1 >= n) {
                    status = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                           "treeshap: bad split at node %lld", (long long)g);
                    break;
                }
                if (m->node_flags[g] & 2) {
                    status = mls_error_set(err, MLS_STATUS_ERR_VALUE,
                                           "explain does not support categorical splits");
                    break;
                }
                depth[b + l] = depth[b + l + 1] = depth[g] + 1;
                if (depth[g] + 1 > max_depth) max_depth = depth[g] + 1;
            } else if (m->node_child[g] < 0 || m->node_child[g] >= m->n_leaves) {
                status = mls_error_set(err, MLS_STATUS_ERR_FORMAT,
                                       "treeshap: bad leaf at node %lld", (long long)g);
                break;
            }
        }
        if (status != MLS_STATUS_OK) break;
        for (int64_t j = 0; j < m->leaf_width; j++) {
            for (int64_t i = n - 1; i >= 0; i--) {
                int64_t g = b + i;
                if (m->node_feature[g] < 0) {
                    mean[g] = m->leaf_values[(int64_t)m->node_child[g] * m->leaf_width + j];
                } else {
                    int64_t l = b + m->node_child[g];
                    double cl = m->node_cover[l], cr = m->node_cover[l + 1];
                    mean[g] = cl + cr > 0 ? (cl * mean[l] + cr * mean[l + 1]) / (cl + cr)
                                          : 0.5 * (mean[l] + mean[l + 1]);
                }
            }
            bias[m->tree_output[t] + j] += mean[b];
            scale[m->tree_output[t] + j] += 1;
        }
    }
    if (status != MLS_STATUS_OK) goto done;
    for (int64_t o = 0; o < m->n_outputs; o++) {
        double s = m->aggregate_mean ? (scale[o] > 0 ? 1.0 / scale[o] : 0) : 1.0;
        bias[o] = m->base_score[o] + bias[o] * s;
        scale[o] = s;
    }
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads > n_rows / 16) n_threads = n_rows / 16 > 0 ? (int)(n_rows / 16) : 1;
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < n_threads; k++) {
        jobs[k] = (job){m, X, scale, bias, out, n_rows * k / n_threads,
                        n_rows * (k + 1) / n_threads, max_depth, 0};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, run_job, &jobs[k]) == 0;
        if (k > 0 && !started[k]) run_job(&jobs[k]);
    }
    run_job(&jobs[0]);
    for (int k = 1; k < n_threads; k++)
        if (started[k]) pthread_join(tid[k], NULL);
    for (int k = 0; k < n_threads; k++)
        if (jobs[k].status) status = mls_error_set(err, MLS_STATUS_ERR_NOMEM, "treeshap: out of memory");
done:
    free(mean);
    free(depth);
    free(bias);
    free(scale);
    return status;
}
