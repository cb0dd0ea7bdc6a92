/* mls_optim.c: L-BFGS with a More-Thuente line search (see mls_optim.h).
 *
 * The outer loop is the textbook L-BFGS two-loop recursion (Nocedal and
 * Wright, Numerical Optimization, 2nd ed., Algorithms 7.4 and 7.5), with the
 * choices scipy's L-BFGS-B makes in the unconstrained case (Byrd, Lu,
 * Nocedal and Zhu, SIAM J. Sci. Comput. 16, 1995), so that scikit-learn's
 * solver='lbfgs' and this one behave alike:
 *   - iteration 0 steps along -g with t = 1 / ||g||_2, later ones try t = 1;
 *   - after each accepted step: converged if max |g| <= gtol, stop if the
 *     relative decrease of f is <= ftol, else store (s, y) unless
 *     s'y <= eps * (-g_old's) (curvature too small), theta = y'y / s'y;
 *   - a failed line search restores the previous point; with a non-empty
 *     memory the memory is cleared and the iteration restarts along -g,
 *     otherwise the minimisation stops there.
 * The line search (mt_next, linesearch_wolfe) was written for mlserve from
 * the published algorithm of More and Thuente ("Line search algorithms with
 * guaranteed sufficient decrease", ACM TOMS 20(3), 1994): their interval
 * updates, the auxiliary function of their first stage, and their four cases
 * of the safeguarded cubic / quadratic trial step, with the constants the
 * paper gives; the cubic step is Nocedal and Wright's eq. (3.59). It is not a
 * translation of any existing implementation (MINPACK-2's dcsrch, which
 * L-BFGS-B uses, included); its own choices are noted where they are made:
 * which function a first-stage trial is judged on, when to give up on a
 * narrow interval, and which step to return then (the best one seen, if it
 * decreased f). Its steps are therefore close to L-BFGS-B's, not
 * guaranteed identical; on the logistic fits in the tests they agree to
 * rounding error at the usual tolerances. A trial step where f or g is not
 * finite is halved towards the best step so far instead of being handed to
 * the interpolation.
 *
 * Beyond L-BFGS-B: where it would stop because f no longer decreases by more
 * than a relative ftol, and max |g| is still above gtol, this goes on
 * "polishing" with a line search on the directional derivative alone
 * (linesearch_polish), since differences of f near the minimum are lost to
 * rounding long before the gradient is. The extra iterations only happen
 * when the caller asks for a gtol tighter than f's precision allows L-BFGS-B
 * to reach; for the usual tolerances the iterates follow L-BFGS-B's closely.
 */
#include "mls_optim.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mls_array.h"

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
    opts->progress.fn = NULL;
    opts->progress.ctx = NULL;
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

/* ---- Line search for the strong Wolfe conditions ------------------------
 *
 * Written from the description in J. J. More and D. J. Thuente, "Line search
 * algorithms with guaranteed sufficient decrease", ACM Trans. Math. Software
 * 20(3), 1994, pp. 286-307 (the search algorithm, its interval updates and
 * the four cases of the trial step), with the cubic interpolation formula of
 * Nocedal and Wright, Numerical Optimization, 2nd ed., eq. (3.59).
 *
 * Notation: phi(t) = f(x0 + t d), with phi'(0) < 0; mu = ls_ftol and
 * eta = ls_gtol. A step t is accepted when
 *     phi(t) <= phi(0) + mu t phi'(0)   and   |phi'(t)| <= eta |phi'(0)|.
 * The search keeps an interval with ends `lo` and `hi`: `lo` is the best step
 * so far, and phi'(lo) points from lo towards hi, so a step satisfying the
 * conditions lies between them once `bracketed` is set.
 * The paper's first stage works on the auxiliary function
 *     psi(t) = phi(t) - phi(0) - mu t phi'(0)
 * until a step with psi(t) <= 0 and phi'(t) >= 0 has been seen, then on phi
 * itself. psi is there to keep lo a step with sufficient decrease
 * (psi(lo) <= 0). That is only at stake when a trial has a lower phi than lo
 * but psi(t) > 0: taken on phi it would become lo. Otherwise working on phi
 * keeps psi(lo) <= 0 as well (a higher trial leaves lo alone; a lower one
 * with psi(t) <= 0 has sufficient decrease itself). So this search uses psi
 * in the first stage only for such a trial, and phi, the function actually
 * minimised, for the rest. (Working on psi for every first-stage trial, as
 * the paper's description of the first stage reads, also finds Wolfe steps,
 * but through different trials: the fits then drift visibly from
 * L-BFGS-B's, which this choice reproduces on the fits tested here.) The
 * points keep phi values; psi is derived when needed. */

/* Extrapolation before a bracket: the next step lies in
 * [t + MT_EXTRAP_MIN (t - lo), t + MT_EXTRAP_MAX (t - lo)]. */
#define MT_EXTRAP_MIN 1.1
#define MT_EXTRAP_MAX 4.0
/* Once bracketed: a case-3 step goes at most this fraction of the way from t
 * to hi, and bisection is forced when two trials did not shrink the interval
 * below this fraction of its earlier width. */
#define MT_SHRINK 0.66
/* Largest step tried. */
#define LBFGS_STPMAX 1e10

typedef struct mt_point {
    double t, f, g; /* step, phi(t), phi'(t) */
} mt_point;

typedef struct mt_search {
    double mu, eta, xtol;
    double f0, g0;       /* phi(0), phi'(0) */
    double t_min, t_max; /* steps allowed; t_max shrinks after a non-finite trial */
    int stage2;          /* psi is no longer needed */
    int bracketed;
    mt_point lo, hi;
    double width, width_before; /* |hi - lo| after the last two bracketed trials */
} mt_search;

typedef enum mt_verdict {
    MT_TRY,   /* evaluate the step returned in *next */
    MT_WOLFE, /* the trial satisfies the strong Wolfe conditions */
    MT_STUCK, /* no further progress possible: fall back on the best step, lo */
} mt_verdict;

static void mt_begin(mt_search *s, double f0, double g0, double mu, double eta, double xtol)
{
    memset(s, 0, sizeof(*s));
    s->mu = mu;
    s->eta = eta;
    s->xtol = xtol;
    s->f0 = f0;
    s->g0 = g0;
    s->t_min = 0.0;
    s->t_max = LBFGS_STPMAX;
    s->lo.t = 0.0;
    s->lo.f = f0;
    s->lo.g = g0;
    s->hi = s->lo;
    s->width = s->t_max - s->t_min;
    s->width_before = 2.0 * s->width;
}

/* p as seen by the working function: psi if `psi`, else phi. */
static mt_point mt_working(const mt_search *s, const mt_point *p, int psi)
{
    mt_point q = *p;
    if (psi) {
        q.f = p->f - s->f0 - s->mu * s->g0 * p->t;
        q.g = p->g - s->mu * s->g0;
    }
    return q;
}

/* Stationary point of the cubic with the values and slopes of a and b at
 * which the cubic has a local minimum (Nocedal and Wright, eq. 3.59). Returns
 * 0 when that cubic has no local minimum or the arithmetic breaks down. The
 * square root is taken of scaled terms so that large slopes do not
 * overflow. */
static int mt_cubic_min(const mt_point *a, const mt_point *b, double *t)
{
    const double h = b->t - a->t;
    const double d1 = a->g + b->g - 3.0 * (b->f - a->f) / h;
    const double scale = fmax(fabs(d1), fmax(fabs(a->g), fabs(b->g)));
    if (!(scale > 0.0) || !isfinite(scale)) return 0;
    const double disc = (d1 / scale) * (d1 / scale) - (a->g / scale) * (b->g / scale);
    if (!(disc >= 0.0)) return 0;
    double d2 = scale * sqrt(disc);
    if (h < 0.0) d2 = -d2;
    const double denom = b->g - a->g + 2.0 * d2;
    if (denom == 0.0) return 0;
    *t = b->t - h * (b->g + d2 - d1) / denom;
    return isfinite(*t);
}

/* Minimiser of the quadratic through a->f, b->f with slope a->g at a (used
 * when b->f > a->f and a->g points towards b, so the quadratic is convex). */
static double mt_quadratic_min(const mt_point *a, const mt_point *b)
{
    const double h = b->t - a->t;
    const double curv = (b->f - a->f) - a->g * h; /* c h^2 of q = f_a + g_a s + c s^2 */
    return a->t - 0.5 * a->g * h * h / curv;
}

/* Zero of the secant of phi' through a and b. */
static double mt_secant(const mt_point *a, const mt_point *b)
{
    return b->t - b->g * (b->t - a->t) / (b->g - a->g);
}

/* Next trial step from the working values at lo (l), the trial (t) and hi
 * (u), before the interval is updated: the four cases of More and Thuente,
 * section 4. [ext_lo, ext_hi] is the extrapolation range used while nothing
 * is bracketed. May return a non-finite value; the caller checks. */
static double mt_trial_step(const mt_point *l, const mt_point *t, const mt_point *u,
                            int bracketed, double ext_lo, double ext_hi)
{
    double cubic;
    if (t->f > l->f) {
        /* 1. Higher value: a minimiser lies between l and t. Take the
         * cubic step if it is the nearer one to l, else move halfway from
         * it towards the quadratic step. */
        const double quad = mt_quadratic_min(l, t);
        if (!mt_cubic_min(l, t, &cubic)) return quad;
        if (fabs(cubic - l->t) < fabs(quad - l->t)) return cubic;
        return cubic + 0.5 * (quad - cubic);
    }
    if (t->g * (l->t - t->t) < 0.0) {
        /* 2. Lower value and the slope has changed sign: a minimiser lies
         * between l and t. The step of the two farther from t. */
        const double sec = mt_secant(l, t);
        if (!mt_cubic_min(l, t, &cubic)) return sec;
        return fabs(cubic - t->t) >= fabs(sec - t->t) ? cubic : sec;
    }
    const double far_end = bracketed ? u->t : ext_hi;
    if (fabs(t->g) <= fabs(l->g)) {
        /* 3. Lower value, same slope sign, slope shrinking: the minimiser
         * lies beyond t. The cubic step counts only if it lies beyond t;
         * otherwise the far end stands in for it. */
        const double dir = t->t - l->t;
        const double sec = mt_secant(l, t);
        if (!mt_cubic_min(l, t, &cubic) || (cubic - t->t) * dir <= 0.0) cubic = far_end;
        if (bracketed) {
            double step = fabs(cubic - t->t) < fabs(sec - t->t) ? cubic : sec;
            if (!isfinite(step)) step = cubic;
            const double cap = t->t + MT_SHRINK * (u->t - t->t);
            return u->t > t->t ? fmin(step, cap) : fmax(step, cap);
        }
        double step = fabs(cubic - t->t) > fabs(sec - t->t) ? cubic : sec;
        if (!isfinite(step)) step = cubic;
        return fmin(fmax(step, fmin(ext_lo, ext_hi)), fmax(ext_lo, ext_hi));
    }
    /* 4. Lower value, same slope sign, slope not shrinking: with a bracket,
     * the cubic step between t and hi; without one, extrapolate fully. */
    if (bracketed) {
        if (mt_cubic_min(t, u, &cubic)) return cubic;
        return t->t + 0.5 * (u->t - t->t);
    }
    return far_end;
}

/* Takes phi (f) and phi' (g) at the trial step t. Returns MT_WOLFE if t is
 * acceptable; otherwise updates the interval and returns MT_TRY with the next
 * trial in *next, or MT_STUCK when no further trial can make progress
 * (interval below xtol, rounding, or a step limit reached). *is_lo says
 * whether t became the best step, lo. */
static mt_verdict mt_next(mt_search *s, double t, double f, double g, double *next, int *is_lo)
{
    const double armijo = s->f0 + s->mu * t * s->g0;
    *next = t;
    *is_lo = 0;
    if (f <= armijo && fabs(g) <= s->eta * -s->g0) return MT_WOLFE;
    if (f <= armijo && g >= 0.0) s->stage2 = 1;
    const int psi = !s->stage2 && f <= s->lo.f && f > armijo;
    /* An interval narrower than xtol relative to its ends: t was the last
     * trial worth making in it, and the search stops after it (returning
     * lo, the best step, unless t is acceptable). */
    const int narrow = s->bracketed && fabs(s->hi.t - s->lo.t) <=
                                           s->xtol * fmax(fabs(s->hi.t), fabs(s->lo.t));

    const mt_point trial = {t, f, g};
    const mt_point wl = mt_working(s, &s->lo, psi), wt = mt_working(s, &trial, psi),
                   wu = mt_working(s, &s->hi, psi);
    const double ext_lo = t + MT_EXTRAP_MIN * (t - s->lo.t);
    const double ext_hi = t + MT_EXTRAP_MAX * (t - s->lo.t);
    double step = mt_trial_step(&wl, &wt, &wu, s->bracketed, ext_lo, ext_hi);

    /* Interval update (the paper's updating algorithm, on the working
     * function): a higher value becomes hi; a lower one becomes lo, and the
     * old lo becomes hi if the slope changed sign in between. */
    if (wt.f > wl.f) {
        s->hi = trial;
        s->bracketed = 1;
    } else {
        if (wt.g * (wl.t - wt.t) < 0.0) {
            s->hi = s->lo;
            s->bracketed = 1;
        }
        s->lo = trial;
        *is_lo = 1;
    }

    if (s->bracketed) {
        const double width = fabs(s->hi.t - s->lo.t);
        if (width >= MT_SHRINK * s->width_before) step = s->lo.t + 0.5 * (s->hi.t - s->lo.t);
        s->width_before = s->width;
        s->width = width;
        if (!isfinite(step)) step = s->lo.t + 0.5 * (s->hi.t - s->lo.t);
    } else if (!isfinite(step)) {
        step = ext_hi;
    }
    step = fmin(fmax(step, s->t_min), s->t_max);
    *next = step;

    if (narrow || step == t) return MT_STUCK;
    if (s->bracketed) {
        const double a = fmin(s->lo.t, s->hi.t), b = fmax(s->lo.t, s->hi.t);
        if (!(step > a && step < b)) return MT_STUCK; /* rounding */
    }
    return MT_TRY;
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
    double *g_lo;    /* gradient at the best step of the current line search */
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
    /* a report after every evaluation too (a line search may take several), so a
     * stop is noticed one pass over the data after it is asked for */
    if (mls_progress_report(&w->opts->progress, w->res->n_iter, w->opts->max_iter) != 0)
        return mls_error_set(w->err, MLS_STATUS_ERR_ARGUMENT, MLS_PROGRESS_STOPPED_MESSAGE);
    w->gd = vec_dot(w->g, w->d, n);
    *finite = isfinite(w->f) && isfinite(w->gd) && vec_all_finite(w->g, n);
    return MLS_STATUS_OK;
}

/* The strong Wolfe search (mt_next) along d from x0, first trying step stp.
 * A trial where f or g is not finite carries no usable information: the next
 * trial is halfway back towards the best step, and no later trial goes beyond
 * it. When the search can make no further progress, the best step is
 * accepted if it decreased f (it then satisfies the sufficient decrease
 * condition, or has a lower f than a step that does). */
static mls_status linesearch_wolfe(lbfgs_run *w, double stp, ls_outcome *out)
{
    const int64_t n = w->n;
    mt_search s;
    mt_begin(&s, w->f0, w->gd0, w->opts->ls_ftol, w->opts->ls_gtol, w->opts->ls_xtol);
    int any_finite = 0;
    for (int k = 0; k < w->opts->max_linesearch; k++) {
        int finite;
        mls_status st = lbfgs_eval_at(w, stp, &finite);
        if (st != MLS_STATUS_OK) return st;
        if (!finite) {
            const double next = s.lo.t + 0.5 * (stp - s.lo.t);
            if (!(next != s.lo.t && next != stp)) break;
            if (stp > s.lo.t)
                s.t_max = fmin(s.t_max, next);
            else
                s.t_min = fmax(s.t_min, next);
            stp = next;
            continue;
        }
        any_finite = 1;
        double next;
        int is_lo;
        mt_verdict v = mt_next(&s, stp, w->f, w->gd, &next, &is_lo);
        if (v == MT_WOLFE) {
            w->stp = stp;
            *out = LS_ACCEPTED;
            return MLS_STATUS_OK;
        }
        if (is_lo) memcpy(w->g_lo, w->g, (size_t)n * sizeof(double));
        if (v == MT_STUCK) {
            if (!(s.lo.t > 0.0)) break;
            /* back to the best step: x as lbfgs_eval_at computed it */
            for (int64_t i = 0; i < n; i++) w->x[i] = w->x0[i] + s.lo.t * w->d[i];
            memcpy(w->g, w->g_lo, (size_t)n * sizeof(double));
            w->f = s.lo.f;
            w->gd = s.lo.g;
            w->stp = s.lo.t;
            *out = LS_ACCEPTED;
            return MLS_STATUS_OK;
        }
        stp = next;
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
    /* 2 m history vectors + g, x0, g0, d, g_lo, best x; then 2 m scalars. */
    int64_t vec_count, bytes;
    if (!mls_size_mul((int64_t)2 * m + 6, n, &vec_count) ||
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
    w.g_lo = w.d + n;
    double *best_x = w.g_lo + n;
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
                       : linesearch_wolfe(&w, stp, &outcome);
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
        if (mls_progress_report(&opts->progress, r.n_iter, opts->max_iter) != 0) {
            st = mls_error_set(err, MLS_STATUS_ERR_ARGUMENT, MLS_PROGRESS_STOPPED_MESSAGE);
            goto done;
        }
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
