#include "mls_blas.h"

/* The OpenBLAS extension functions are declared in its cblas.h, with the
 * same prefix as the BLAS symbols. */
#define mls_openblas_set_num_threads MLS_BLAS_SYM(openblas_set_num_threads)
#define mls_openblas_get_num_threads MLS_BLAS_SYM(openblas_get_num_threads)
#define mls_openblas_get_config MLS_BLAS_SYM(openblas_get_config)
#define mls_openblas_get_corename MLS_BLAS_SYM(openblas_get_corename)

void mls_blas_set_num_threads(int n)
{
    if (n < 1) n = 1;
    mls_openblas_set_num_threads(n);
}

int mls_blas_get_num_threads(void) { return mls_openblas_get_num_threads(); }

const char *mls_blas_config(void) { return mls_openblas_get_config(); }

const char *mls_blas_corename(void) { return mls_openblas_get_corename(); }
