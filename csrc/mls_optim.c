/* mls_optim.c: L-BFGS with the More-Thuente line search (see mls_optim.h).
 *
 * The outer loop follows scipy's L-BFGS-B (lbfgsb.f, Byrd, Lu, Nocedal and
 * Zhu; version 3.0) in the unconstrained case, which reduces to the plain
 * L-BFGS two-loop recursion:
 *   - iteration 0 steps along -g with t = 1 / ||g||_2, later ones try t = 1;
 *   - after each accepted step: converged if max |g| <= gtol, stop if the
 *     relative decrease of f is <= ftol, else store (s, y) unless
 *     s'y <= eps * (-g_old's) (curvature too small), theta = y'y / s'y;
 *   - a failed line search restores the previous point; with a non-empty
 *     memory the memory is cleared and the iteration restarts along -g,
 *     otherwise the minimisation stops there.
 * The line search is dcsrch/dcstep of MINPACK-2 (More and Thuente, "Line
 * search algorithms with guaranteed sufficient decrease", ACM TOMS 20, 1994),
 * transcribed with the same constants. A trial step where f or g is not
 * finite is halved towards the best step so far instead of being handed to
 * the interpolation.
 *
 * Beyond L-BFGS-B: where it would stop because f no longer decreases by more
 * than a relative ftol, and max |g| is still above gtol, this goes on
 * "polishing" with a line search on the directional derivative alone
 * (linesearch_polish), since differences of f near the minimum are lost to
 * rounding long before the gradient is. The extra iterations only happen
 * when the caller asks for a gtol tighter than f's precision allows L-BFGS-B
 * to reach, so for the usual tolerances the iterates are L-BFGS-B's.
 */
#include "mls_optim.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mls_array.h"

#define LBFGS_STPMAX 1e10 /* lbfgsb.f: big */

void mls_lbfgs_options_default(mls_lbfgs_options *opts)
{
    opts->m = 10;
    opts->max_iter = 100;
    opts->max_eval = 15000;
    opts->max_linesearch = 50;
    opts->gtol = 1e-5;
    opts->ftol = 64 * DBL_EPSILON;
    opts->ls_ftol = 1e-3;
    opts->ls_gtol = 0.9;
    opts->ls_xtol = 0.1;
    opts->polish = 1;
}

const char *mls_lbfgs_stop_name(mls_lbfgs_stop stop)
{
    switch (stop) {
    case MLS_LBFGS_STOP_GTOL: return "gtol";
    case MLS_LBFGS_STOP_FTOL: return "ftol";
    case MLS_LBFGS_STOP_MAX_ITER: return "max_iter";
    case MLS_LBFGS_STOP_MAX_EVAL: return "max_eval";
    case MLS_LBFGS_STOP_LINESEARCH: return "linesearch";
    case MLS_LBFGS_STOP_STALLED: return "stalled";
    }
    return "unknown";
}

/* ---- More-Thuente line search (MINPACK-2 dcsrch / dcstep) ------------- */

typedef enum ls_task {
    LS_FG,   /* evaluate f and g'd at the new stp */
    LS_CONV, /* strong Wolfe conditions hold at stp */
    LS_WARN, /* no further progress possible; stp is the best step */
} ls_task;

typedef struct ls_state {
    double ftol, gtol, xtol, stpmin, stpmax;
    int brackt, stage;
    double finit, ginit, gtest, width, width1;
    double stx, fx, gx, sty, fy, gy, stmin, stmax;
} ls_state;

/* Safeguarded step of the interval of uncertainty [stx, sty] given a new
 * trial stp (dcstep). Updates the interval and returns the next trial in
 * *stp. */
static void ls_dcstep(double *stx, double *fx, double *dx, double *sty, double *fy,
                      double *dy, double *stp, double fp, double dp, int *brackt,
                      double stpmin, double stpmax)
{
    double sgnd = dp * (*dx / fabs(*dx));
    double stpf, stpc, stpq, theta, s, gamma, p, q, r;

    if (fp > *fx) {
        /* Case 1: higher function value; the minimum is bracketed. */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = fmax(fabs(theta), fmax(fabs(*dx), fabs(dp)));
        gamma = s * sqrt((theta / s) * (theta / s) - (*dx / s) * (dp / s));
        if (*stp < *stx) gamma = -gamma;
        p = (gamma - *dx) + theta;
        q = ((gamma - *dx) + gamma) + dp;
        r = p / q;
        stpc = *stx + r * (*stp - *stx);
        stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) * (*stp - *stx);
        if (fabs(stpc - *stx) < fabs(stpq - *stx))
            stpf = stpc;
        else
            stpf = stpc + (stpq - stpc) / 2.0;
        *brackt = 1;
    } else if (sgnd < 0.0) {
        /* Case 2: lower value, derivatives of opposite sign; bracketed. */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = fmax(fabs(theta), fmax(fabs(*dx), fabs(dp)));
        gamma = s * sqrt((theta / s) * (theta / s) - (*dx / s) * (dp / s));
        if (*stp > *stx) gamma = -gamma;
        p = (gamma - dp) + theta;
        q = ((gamma - dp) + gamma) + *dx;
        r = p / q;
        stpc = *stp + r * (*stx - *stp);
        stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if (fabs(stpc - *stp) > fabs(stpq - *stp))
            stpf = stpc;
        else
            stpf = stpq;
        *brackt = 1;
    } else if (fabs(dp) < fabs(*dx)) {
        /* Case 3: lower value, same sign, derivative decreases in size. */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = fmax(fabs(theta), fmax(fabs(*dx), fabs(dp)));
        gamma = s * sqrt(fmax(0.0, (theta / s) * (theta / s) - (*dx / s) * (dp / s)));
        if (*stp > *stx) gamma = -gamma;
        p = (gamma - dp) + theta;
        q = (gamma + (*dx - dp)) + gamma;
        r = p / q;
        if (r < 0.0 && gamma != 0.0)
            stpc = *stp + r * (*stx - *stp);
        else if (*stp > *stx)
            stpc = stpmax;
        else
            stpc = stpmin;
        stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if (*brackt) {
            stpf = fabs(stpc - *stp) < fabs(stpq - *stp) ? stpc : stpq;
            if (*stp > *stx)
                stpf = fmin(*stp + 0.66 * (*sty - *stp), stpf);
            else
                stpf = fmax(*stp + 0.66 * (*sty - *stp), stpf);
        } else {
            stpf = fabs(stpc - *stp) > fabs(stpq - *stp) ? stpc : stpq;
            stpf = fmin(stpmax, stpf);
            stpf = fmax(stpmin, stpf);
        }
    } else {
        /* Case 4: lower value, same sign, derivative does not decrease. */
        if (*brackt) {
            theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
            s = fmax(fabs(theta), fmax(fabs(*dy), fabs(dp)));
            gamma = s * sqrt((theta / s) * (theta / s) - (*dy / s) * (dp / s));
            if (*stp > *sty) gamma = -gamma;
            p = (gamma - dp) + theta;
            q = ((gamma - dp) + gamma) + *dy;
            r = p / q;
            stpc = *stp + r * (*sty - *stp);
            stpf = stpc;
        } else if (*stp > *stx) {
            stpf = stpmax;
        } else {
            stpf = stpmin;
        }
    }

    /* Update the interval which contains a minimiser. */
    if (fp > *fx) {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if (sgnd < 0.0) {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}

/* dcsrch with task == "START": f, g are f(0) and g'd at 0 (g < 0). The
 * first trial step is the given stp. */
static void ls_start(ls_state *st, double f, double g, double stp)
{
    st->brackt = 0;
    st->stage = 1;
    st->finit = f;
    st->ginit = g;
    st->gtest = st->ftol * g;
    st->width = st->stpmax - st->stpmin;
    st->width1 = st->width / 0.5;
    st->stx = 0.0;
    st->fx = f;
    st->gx = g;
    st->sty = 0.0;
    st->fy = f;
    st->gy = g;
    st->stmin = 0.0;
    st->stmax = stp + 4.0 * stp;
}

/* dcsrch after an evaluation: f and g (= g'd) at *stp. Returns LS_FG with
 * the next trial in *stp, or LS_CONV / LS_WARN to accept *stp. */
static ls_task ls_iterate(ls_state *st, double f, double g, double *stp)
{
    const double xtrapl = 1.1, xtrapu = 4.0;
    double ftest = st->finit + *stp * st->gtest;
    int warn = 0;

    if (st->stage == 1 && f <= ftest && g >= 0.0) st->stage = 2;
    /* Warnings: rounding errors prevent progress, the interval is below
     * xtol, or the step is at a bound. */
    if (st->brackt && (*stp <= st->stmin || *stp >= st->stmax)) warn = 1;
    if (st->brackt && st->stmax - st->stmin <= st->xtol * st->stmax) warn = 1;
    if (*stp == st->stpmax && f <= ftest && g <= st->gtest) warn = 1;
    if (*stp == st->stpmin && (f > ftest || g >= st->gtest)) warn = 1;
    if (f <= ftest && fabs(g) <= st->gtol * (-st->ginit)) return LS_CONV;
    if (warn) return LS_WARN;

    if (st->stage == 1 && f <= st->fx && f > ftest) {
        /* Use the modified function psi(stp) = f(stp) - f(0) - stp*gtest
         * while no step with sufficient decrease and g >= 0 was found. */
        double fm = f - *stp * st->gtest;
        double fxm = st->fx - st->stx * st->gtest;
        double fym = st->fy - st->sty * st->gtest;
        double gm = g - st->gtest;
        double gxm = st->gx - st->gtest;
        double gym = st->gy - st->gtest;
        ls_dcstep(&st->stx, &fxm, &gxm, &st->sty, &fym, &gym, stp, fm, gm, &st->brackt,
                  st->stmin, st->stmax);
        st->fx = fxm + st->stx * st->gtest;
        st->fy = fym + st->sty * st->gtest;
        st->gx = gxm + st->gtest;
        st->gy = gym + st->gtest;
    } else {
        ls_dcstep(&st->stx, &st->fx, &st->gx, &st->sty, &st->fy, &st->gy, stp, f, g,
                  &st->brackt, st->stmin, st->stmax);
    }

    /* Force a sufficient decrease in the size of the interval. */
    if (st->brackt) {
        if (fabs(st->sty - st->stx) >= 0.66 * st->width1)
            *stp = st->stx + 0.5 * (st->sty - st->stx);
        st->width1 = st->width;
        st->width = fabs(st->sty - st->stx);
    }
    if (st->brackt) {
        st->stmin = fmin(st->stx, st->sty);
        st->stmax = fmax(st->stx, st->sty);
    } else {
        st->stmin = *stp + xtrapl * (*stp - st->stx);
        st->stmax = *stp + xtrapu * (*stp - st->stx);
    }
    *stp = fmax(*stp, st->stpmin);
    *stp = fmin(*stp, st->stpmax);
    /* If no further progress is possible, let stp be the best point. */
    if ((st->brackt && (*stp <= st->stmin || *stp >= st->stmax)) ||
        (st->brackt && st->stmax - st->stmin <= st->xtol * st->stmax))
        *stp = st->stx;
    return LS_FG;
}

/* ---- L-BFGS ------------------------------------------------------------ */

static double vec_dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double vec_max_abs(const double *a, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = fabs(a[i]);
        if (!(v <= m)) m = v; /* NaN propagates */
    }
    return m;
}

static int vec_all_finite(const double *a, int64_t n)
{
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += a[i] * 0.0;
    return acc == 0.0;
}

static mls_status check_options(const mls_lbfgs_options *o, int64_t n, mls_error *err)
{
    if (n < 1)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS needs at least 1 variable, got %lld", (long long)n);
    if (o->m < 1)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS history size m must be >= 1, got %d", o->m);
    if (o->max_iter < 0)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS max_iter must be >= 0, got %d", o->max_iter);
    if (o->max_eval < 1)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS max_eval must be >= 1, got %lld", (long long)o->max_eval);
    if (o->max_linesearch < 1)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS max_linesearch must be >= 1, got %d", o->max_linesearch);
    if (!(o->gtol >= 0.0) || !isfinite(o->gtol))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS gtol must be finite and >= 0, got %g", o->gtol);
    if (!(o->ftol >= 0.0) || !isfinite(o->ftol))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS ftol must be finite and >= 0, got %g", o->ftol);
    if (!(o->ls_ftol > 0.0 && o->ls_ftol < o->ls_gtol && o->ls_gtol < 1.0))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS line search needs 0 < ls_ftol < ls_gtol < 1, got "
                             "ls_ftol=%g, ls_gtol=%g",
                             o->ls_ftol, o->ls_gtol);
    if (!(o->ls_xtol >= 0.0 && o->ls_xtol < 1.0))
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS ls_xtol must be in [0, 1), got %g", o->ls_xtol);
    return MLS_STATUS_OK;
}

/* d = -H g by the two-loop recursion over `col` pairs stored in the ring
 * buffers S, Y (row j at j * n), newest at index `newest`. */
static void lbfgs_direction(const double *g, int64_t n, const double *S, const double *Y,
                            const double *rho, double *alpha, int m, int col, int newest,
                            double gamma, double *d)
{
    for (int64_t i = 0; i < n; i++) d[i] = -g[i];
    int j = newest;
    for (int c = 0; c < col; c++) {
        const double *s = S + (int64_t)j * n, *y = Y + (int64_t)j * n;
        double a = rho[j] * vec_dot(s, d, n);
        alpha[j] = a;
        for (int64_t i = 0; i < n; i++) d[i] -= a * y[i];
        j = (j + m - 1) % m;
    }
    for (int64_t i = 0; i < n; i++) d[i] *= gamma;
    for (int c = 0; c < col; c++) {
        j = (j + 1) % m;
        const double *s = S + (int64_t)j * n, *y = Y + (int64_t)j * n;
        double b = rho[j] * vec_dot(y, d, n);
        for (int64_t i = 0; i < n; i++) d[i] += (alpha[j] - b) * s[i];
    }
}

/* State shared by the outer loop and the two line searches. */
typedef struct lbfgs_run {
    mls_lbfgs_fun fun;
    void *ctx;
    const mls_lbfgs_options *opts;
    int64_t n;
    double *x, *g;   /* current point and gradient */
    double *x0, *g0; /* point and gradient where the line search started */
    double *d;       /* search direction */
    double f, f0;
    double gd0, gd;  /* g'd at x0 and at x */
    double stp;      /* accepted step */
    mls_lbfgs_result *res;
    mls_error *err;
} lbfgs_run;

typedef enum ls_outcome {
    LS_ACCEPTED,   /* x, f, g, gd hold the new point */
    LS_FAILED,     /* no acceptable step; some trial values were finite */
    LS_NONFINITE,  /* every trial step gave NaN or infinity */
} ls_outcome;

/* Evaluates at x0 + stp d into x, f, g, gd. *finite says whether f and g
 * are finite. */
static mls_status lbfgs_eval_at(lbfgs_run *w, double stp, int *finite)
{
    const int64_t n = w->n;
    for (int64_t i = 0; i < n; i++) w->x[i] = w->x0[i] + stp * w->d[i];
    mls_status st = w->fun(w->ctx, w->x, n, &w->f, w->g, w->err);
    w->res->n_eval++;
    if (st != MLS_STATUS_OK) return st;
    w->gd = vec_dot(w->g, w->d, n);
    *finite = isfinite(w->f) && isfinite(w->gd) && vec_all_finite(w->g, n);
    return MLS_STATUS_OK;
}

/* The More-Thuente search of lbfgsb.f (lnsrlb + dcsrch). */
static mls_status linesearch_more_thuente(lbfgs_run *w, double stp, ls_outcome *out)
{
    ls_state ls;
    memset(&ls, 0, sizeof(ls));
    ls.ftol = w->opts->ls_ftol;
    ls.gtol = w->opts->ls_gtol;
    ls.xtol = w->opts->ls_xtol;
    ls.stpmin = 0.0;
    ls.stpmax = LBFGS_STPMAX;
    ls_start(&ls, w->f0, w->gd0, stp);
    int any_finite = 0;
    for (int k = 0; k < w->opts->max_linesearch; k++) {
        int finite;
        mls_status st = lbfgs_eval_at(w, stp, &finite);
        if (st != MLS_STATUS_OK) return st;
        if (!finite) {
            /* Overshot into overflow: halve towards the best step. */
            double next = ls.stx + 0.5 * (stp - ls.stx);
            if (!(next > ls.stx && next < stp)) break;
            ls.stpmax = next;
            stp = next;
            continue;
        }
        any_finite = 1;
        double trial = stp;
        if (ls_iterate(&ls, w->f, w->gd, &stp) != LS_FG) {
            w->stp = trial;
            *out = LS_ACCEPTED;
            return MLS_STATUS_OK;
        }
    }
    *out = any_finite ? LS_FAILED : LS_NONFINITE;
    return MLS_STATUS_OK;
}

/* Polishing search, used once f has stopped decreasing measurably while
 * max |g| > gtol: the approximate Wolfe conditions of Hager and Zhang (SIAM
 * J. Optim. 16, 2005)
 *     ls_gtol * g0'd <= g'd <= (2 POLISH_DELTA - 1) * g0'd,
 *     f <= f0 + POLISH_FTOL * max(|f0|, 1).
 * They rest on the directional derivative, which keeps its precision after
 * differences of f have sunk below rounding; the step is found by secant
 * steps on g'd inside a bracket (bisection as the safeguard). */
#define POLISH_DELTA 0.1
#define POLISH_FTOL 1e-10
/* A decrease of f larger than this (relative) is progress, not rounding. */
#define POLISH_FNOISE (16 * DBL_EPSILON)

static mls_status linesearch_polish(lbfgs_run *w, double stp, ls_outcome *out)
{
    const double dphi0 = w->gd0;
    const double lower = w->opts->ls_gtol * dphi0;      /* < 0 */
    const double upper = (2.0 * POLISH_DELTA - 1.0) * dphi0; /* > 0 */
    const double fmax_ok = w->f0 + POLISH_FTOL * fmax(fabs(w->f0), 1.0);
    double lo = 0.0, dlo = dphi0, hi = -1.0, dhi = 0.0;
    int any_finite = 0;
    for (int k = 0; k < w->opts->max_linesearch; k++) {
        int finite;
        mls_status st = lbfgs_eval_at(w, stp, &finite);
        if (st != MLS_STATUS_OK) return st;
        if (finite) any_finite = 1;
        if (!finite || w->f > fmax_ok) {
            hi = stp; /* too far: no derivative information to trust */
            dhi = NAN;
        } else if (w->gd < lower) {
            lo = stp; /* still descending steeply */
            dlo = w->gd;
        } else if (w->gd > upper) {
            hi = stp; /* past the minimum along d */
            dhi = w->gd;
        } else {
            w->stp = stp;
            *out = LS_ACCEPTED;
            return MLS_STATUS_OK;
        }
        if (hi < 0.0) {
            stp *= 4.0; /* no bracket yet: extrapolate */
            if (!(stp <= LBFGS_STPMAX)) break;
            continue;
        }
        double width = hi - lo, next = lo + 0.5 * width;
        if (isfinite(dhi) && dhi > dlo) {
            double secant = lo - dlo * width / (dhi - dlo);
            if (secant > lo + 0.05 * width && secant < hi - 0.05 * width) next = secant;
        }
        if (!(next > lo && next < hi)) break;
        stp = next;
    }
    *out = any_finite ? LS_FAILED : LS_NONFINITE;
    return MLS_STATUS_OK;
}

mls_status mls_lbfgs_minimize(mls_lbfgs_fun fun, void *ctx, double *x, int64_t n,
                              const mls_lbfgs_options *opts, mls_lbfgs_result *res,
                              mls_error *err)
{
    mls_lbfgs_options defaults;
    if (opts == NULL) {
        mls_lbfgs_options_default(&defaults);
        opts = &defaults;
    }
    if (fun == NULL || x == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_ARGUMENT,
                             "L-BFGS needs a function and a starting point, got NULL");
    mls_status st = check_options(opts, n, err);
    if (st != MLS_STATUS_OK) return st;

    const int m = opts->m;
    /* 2 m history vectors + g, x0, g0, d, best x; then 2 m scalars. */
    int64_t vec_count, bytes;
    if (!mls_size_mul((int64_t)2 * m + 5, n, &vec_count) ||
        vec_count > INT64_MAX - (int64_t)2 * m ||
        !mls_size_mul(vec_count + (int64_t)2 * m, (int64_t)sizeof(double), &bytes) ||
        (uint64_t)bytes > SIZE_MAX)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "L-BFGS workspace for %lld variables and m=%d is too large",
                             (long long)n, m);
    double *work = malloc((size_t)bytes);
    if (work == NULL)
        return mls_error_set(err, MLS_STATUS_ERR_NOMEM,
                             "could not allocate %lld bytes of L-BFGS workspace",
                             (long long)bytes);
    mls_lbfgs_result r;
    memset(&r, 0, sizeof(r));
    lbfgs_run w;
    memset(&w, 0, sizeof(w));
    double *S = work, *Y = S + (int64_t)m * n;
    w.fun = fun;
    w.ctx = ctx;
    w.opts = opts;
    w.n = n;
    w.x = x;
    w.g = Y + (int64_t)m * n;
    w.x0 = w.g + n;
    w.g0 = w.x0 + n;
    w.d = w.g0 + n;
    double *best_x = w.d + n;
    double *rho = best_x + n, *alpha = rho + m;
    w.res = &r;
    w.err = err;

    st = fun(ctx, x, n, &w.f, w.g, err);
    r.n_eval = 1;
    if (st != MLS_STATUS_OK) goto done;
    if (!isfinite(w.f) || !vec_all_finite(w.g, n)) {
        st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                           "the objective or its gradient is not finite at the starting "
                           "point (f = %g)",
                           w.f);
        goto done;
    }
    r.f = w.f;
    r.grad_max = r.grad_max_start = vec_max_abs(w.g, n);
    if (r.grad_max <= opts->gtol) {
        r.stop = MLS_LBFGS_STOP_GTOL;
        goto done;
    }

    int col = 0, newest = m - 1;
    double theta = 1.0;
    /* Polishing phase (see linesearch_polish): best point by max |g|. */
    int polishing = 0, since_best = 0;
    double best_f = 0.0, best_gmax = INFINITY;
    for (;;) {
        if (r.n_iter >= opts->max_iter) {
            r.stop = MLS_LBFGS_STOP_MAX_ITER;
            break;
        }
        if (r.n_eval >= opts->max_eval) {
            r.stop = MLS_LBFGS_STOP_MAX_EVAL;
            break;
        }
        lbfgs_direction(w.g, n, S, Y, rho, alpha, m, col, newest, 1.0 / theta, w.d);
        w.gd0 = vec_dot(w.g, w.d, n);
        if (!(w.gd0 < 0.0)) {
            /* Not a descent direction (rounding in an ill-conditioned
             * memory): restart along -g; with an empty memory it is -g
             * itself and g'd = -||g||^2 < 0 unless g underflowed. */
            if (col > 0) {
                col = 0;
                theta = 1.0;
                r.n_restarts++;
                continue;
            }
            r.stop = MLS_LBFGS_STOP_LINESEARCH;
            break;
        }
        memcpy(w.x0, w.x, (size_t)n * sizeof(double));
        memcpy(w.g0, w.g, (size_t)n * sizeof(double));
        w.f0 = w.f;
        double stp = 1.0;
        if (r.n_iter == 0) stp = fmin(1.0 / sqrt(vec_dot(w.d, w.d, n)), LBFGS_STPMAX);

        ls_outcome outcome;
        st = polishing ? linesearch_polish(&w, stp, &outcome)
                       : linesearch_more_thuente(&w, stp, &outcome);
        if (st != MLS_STATUS_OK) goto done;
        if (outcome != LS_ACCEPTED) {
            /* Restore the previous point; restart along -g once. */
            memcpy(w.x, w.x0, (size_t)n * sizeof(double));
            memcpy(w.g, w.g0, (size_t)n * sizeof(double));
            w.f = w.f0;
            if (outcome == LS_NONFINITE) {
                st = mls_error_set(err, MLS_STATUS_ERR_NUMERIC,
                                   "L-BFGS line search failed: the objective or its "
                                   "gradient is not finite at any step tried along the "
                                   "search direction (iteration %d, f = %g)",
                                   r.n_iter, w.f0);
                goto done;
            }
            if (col > 0) {
                col = 0;
                theta = 1.0;
                r.n_restarts++;
                continue;
            }
            if (!polishing && opts->polish) {
                polishing = 1;
                best_gmax = vec_max_abs(w.g, n);
                best_f = w.f;
                memcpy(best_x, w.x, (size_t)n * sizeof(double));
                continue;
            }
            r.stop = MLS_LBFGS_STOP_LINESEARCH;
            break;
        }

        r.n_iter++;
        const double gmax = vec_max_abs(w.g, n);
        if (gmax <= opts->gtol) {
            r.stop = MLS_LBFGS_STOP_GTOL;
            break;
        }
        if (polishing) {
            /* Progress: a new smallest max |g|, or f still decreasing by
             * more than rounding (slow, steady progress on an
             * ill-conditioned problem, where max |g| zigzags). */
            int progress = w.f0 - w.f > POLISH_FNOISE * fmax(fabs(w.f), 1.0);
            if (gmax < best_gmax) {
                best_gmax = gmax;
                best_f = w.f;
                memcpy(best_x, w.x, (size_t)n * sizeof(double));
                progress = 1;
            }
            if (progress)
                since_best = 0;
            else if (++since_best >= 2 * m) {
                r.stop = MLS_LBFGS_STOP_STALLED;
                break;
            }
        } else if (w.f0 - w.f <= opts->ftol * fmax(fmax(fabs(w.f0), fabs(w.f)), 1.0)) {
            if (!opts->polish) {
                r.stop = MLS_LBFGS_STOP_FTOL;
                break;
            }
            polishing = 1;
            best_gmax = gmax;
            best_f = w.f;
            memcpy(best_x, w.x, (size_t)n * sizeof(double));
        }

        /* Store s = x - x0 = stp d and y = g - g0 unless the curvature
         * s'y is not safely positive (lbfgsb.f skips the update then). */
        const double dr = (w.gd - w.gd0) * w.stp;
        if (dr > DBL_EPSILON * (-w.gd0 * w.stp)) {
            int slot = (newest + 1) % m;
            double *s = S + (int64_t)slot * n, *y = Y + (int64_t)slot * n;
            for (int64_t i = 0; i < n; i++) {
                s[i] = w.stp * w.d[i];
                y[i] = w.g[i] - w.g0[i];
            }
            const double rr = vec_dot(y, y, n), sy = vec_dot(s, y, n);
            if (sy > 0.0 && rr > 0.0 && isfinite(rr)) {
                rho[slot] = 1.0 / sy;
                theta = rr / sy;
                newest = slot;
                if (col < m) col++;
            }
        }
    }
    r.f = w.f;
    r.grad_max = vec_max_abs(w.g, n);
    if (polishing && r.stop != MLS_LBFGS_STOP_GTOL && best_gmax < r.grad_max) {
        memcpy(x, best_x, (size_t)n * sizeof(double));
        r.f = best_f;
        r.grad_max = best_gmax;
    }
    st = MLS_STATUS_OK;

done:
    free(work);
    if (res != NULL) *res = r;
    return st;
}
