/* mls_optim.h: unconstrained minimisation of smooth functions by L-BFGS.
 *
 * The algorithm is L-BFGS as scipy's L-BFGS-B runs it when no variable is
 * bounded (and so as scikit-learn's solver='lbfgs' does): the two-loop
 * recursion over the last m (s, y) pairs with the initial matrix scaled by
 * s'y / y'y, a first step of 1 / ||g||, and a line search that returns a step
 * satisfying the strong Wolfe conditions
 *     f(x + t d) <= f(x) + ls_ftol * t * g'd,   |g(x + t d)'d| <= ls_gtol * |g'd|.
 * The line search is mlserve's own implementation of the algorithm of More
 * and Thuente (ACM TOMS 20(3), 1994; see mls_optim.c), the algorithm
 * L-BFGS-B's line search implements too. With the same options the steps are
 * therefore close to scikit-learn's, but not identical: the two line searches
 * differ in details, and paths can drift apart on ill-conditioned problems.
 *
 * Stops when max |g| <= gtol (converged), after max_iter iterations or
 * max_eval evaluations, or when no step along the steepest descent direction
 * is acceptable (the line search fails right after a reset of the memory).
 * When an iteration decreases f by a relative ftol or less, f has stopped
 * moving in double precision: without `polish` the minimisation stops there
 * (as L-BFGS-B does); with it, and max |g| still above gtol, it goes on with
 * a line search that rests on the directional derivative instead of on
 * differences of f (the approximate Wolfe conditions of Hager and Zhang),
 * which reaches gradients orders of magnitude smaller, and stops once max |g|
 * <= gtol or has not improved for 2 m iterations, returning the point with
 * the smallest max |g| seen since polishing began.
 * Every stop returns MLS_STATUS_OK with the point in x; res->stop says which
 * one happened, and the caller decides whether it is worth a warning.
 */
#ifndef MLS_OPTIM_H
#define MLS_OPTIM_H

#include <stdint.h>

#include "mls_status.h"
#include "mls_progress.h"

/* Computes f(x) into *f and its gradient into grad (n values). Returns
 * MLS_STATUS_OK, or an error (with err filled) that aborts the minimisation
 * and is returned as is. Non-finite values are not errors here: the line
 * search shortens the step; they are only fatal at the starting point. */
typedef mls_status (*mls_lbfgs_fun)(void *ctx, const double *x, int64_t n, double *f,
                                    double *grad, mls_error *err);

typedef struct mls_lbfgs_options {
    int m;              /* (s, y) pairs kept; default 10 */
    int max_iter;       /* iterations (accepted steps); default 100; 0 = evaluate only */
    int64_t max_eval;   /* evaluations of fun in total; default 15000 (scipy maxfun) */
    int max_linesearch; /* evaluations per line search; default 50 (scikit-learn's maxls) */
    double gtol;        /* converged when max |g| <= gtol; default 1e-5 */
    double ftol;        /* stop when (f_prev - f) / max(|f_prev|, |f|, 1) <= ftol;
                           default 64 * DBL_EPSILON (scikit-learn's choice) */
    double ls_ftol;     /* sufficient decrease (Armijo) constant; default 1e-3 */
    double ls_gtol;     /* curvature constant; default 0.9 */
    double ls_xtol;     /* the line search takes its best step (if it decreased f) after
                           a trial inside an interval narrower than ls_xtol times the
                           step; default 0.1 */
    int polish;         /* go on past an ftol stall while max |g| > gtol; default 1 */
    mls_progress progress; /* reported (iteration, max_iter) after every accepted step;
                              a stop returns ERR_ARGUMENT (mls_progress.h); default none */
} mls_lbfgs_options;

typedef enum mls_lbfgs_stop {
    MLS_LBFGS_STOP_GTOL = 0,      /* max |g| <= gtol */
    MLS_LBFGS_STOP_FTOL,          /* relative decrease of f <= ftol (polish off) */
    MLS_LBFGS_STOP_MAX_ITER,      /* max_iter iterations */
    MLS_LBFGS_STOP_MAX_EVAL,      /* max_eval evaluations */
    MLS_LBFGS_STOP_LINESEARCH,    /* no acceptable step even along -g */
    MLS_LBFGS_STOP_STALLED,       /* polishing: max |g| stopped improving */
} mls_lbfgs_stop;

typedef struct mls_lbfgs_result {
    double f;          /* f at the returned x */
    double grad_max;   /* max |g| at the returned x */
    double grad_max_start; /* max |g| at the starting point */
    int n_iter;        /* iterations run (accepted steps) */
    int64_t n_eval;    /* evaluations of fun */
    int n_restarts;    /* memory resets after a failed line search */
    mls_lbfgs_stop stop;
} mls_lbfgs_result;

/* Fills `opts` with the defaults above. */
void mls_lbfgs_options_default(mls_lbfgs_options *opts);

/* "gtol", "ftol", "max_iter", "max_eval", "linesearch", "stalled". */
const char *mls_lbfgs_stop_name(mls_lbfgs_stop stop);

/* Minimises fun from the starting point x (n values, overwritten with the
 * result). opts NULL means the defaults; res may be NULL.
 * Errors: ERR_ARGUMENT for bad options or n < 1, ERR_NOMEM, ERR_NUMERIC when
 * f or the gradient is not finite at the starting point or at every step the
 * line search tries, and any error fun returns. */
mls_status mls_lbfgs_minimize(mls_lbfgs_fun fun, void *ctx, double *x, int64_t n,
                              const mls_lbfgs_options *opts, mls_lbfgs_result *res,
                              mls_error *err);

#endif /* MLS_OPTIM_H */
