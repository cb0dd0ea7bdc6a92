/* mls_blas.h: the one place that names BLAS/LAPACK symbols.
 *
 * mlserve links either the OpenBLAS of the scipy-openblas32 wheel, whose
 * symbols carry a "scipy_" prefix (MLS_BLAS_SCIPY_PREFIX is defined by
 * setup.py), or a system OpenBLAS with plain names. Both use 32-bit integer
 * sizes: callers check that every size fits in an int (mls_blas_fits_int)
 * and split larger work into chunks.
 */
#ifndef MLS_BLAS_H
#define MLS_BLAS_H

#include <limits.h>
#include <stdint.h>

#include <cblas.h>

#ifdef MLS_BLAS_SCIPY_PREFIX
#define MLS_BLAS_SYM(name) scipy_##name
#else
#define MLS_BLAS_SYM(name) name
#endif

#define mls_cblas_dgemm MLS_BLAS_SYM(cblas_dgemm)
#define mls_cblas_sgemm MLS_BLAS_SYM(cblas_sgemm)
#define mls_cblas_dgemv MLS_BLAS_SYM(cblas_dgemv)
#define mls_cblas_sgemv MLS_BLAS_SYM(cblas_sgemv)
#define mls_cblas_ddot MLS_BLAS_SYM(cblas_ddot)
#define mls_cblas_daxpy MLS_BLAS_SYM(cblas_daxpy)
#define mls_cblas_dnrm2 MLS_BLAS_SYM(cblas_dnrm2)
#define mls_cblas_dsyrk MLS_BLAS_SYM(cblas_dsyrk)
/* ALS (mls_als.c): the Gram matrix of float32 factors */
#define mls_cblas_ssyrk MLS_BLAS_SYM(cblas_ssyrk)

/* LAPACK (Fortran calling convention; trailing hidden lengths of CHARACTER
 * arguments are passed explicitly). */
void MLS_BLAS_SYM(dgelsd_)(const int *m, const int *n, const int *nrhs, double *a,
                           const int *lda, double *b, const int *ldb, double *s,
                           const double *rcond, int *rank, double *work,
                           const int *lwork, int *iwork, int *info);
void MLS_BLAS_SYM(dposv_)(const char *uplo, const int *n, const int *nrhs, double *a,
                          const int *lda, double *b, const int *ldb, int *info,
                          size_t uplo_len);
#define mls_lapack_dgelsd MLS_BLAS_SYM(dgelsd_)
#define mls_lapack_dposv MLS_BLAS_SYM(dposv_)

static inline int mls_blas_fits_int(int64_t n) { return n >= 0 && n <= INT_MAX; }

/* Threads OpenBLAS may use per call. Process-wide (OpenBLAS keeps one
 * setting), so it is a deployment choice, not a per-request one. */
void mls_blas_set_num_threads(int n);
int mls_blas_get_num_threads(void);
/* Build configuration string and core (kernel) name reported by OpenBLAS. */
const char *mls_blas_config(void);
const char *mls_blas_corename(void);

#endif /* MLS_BLAS_H */
