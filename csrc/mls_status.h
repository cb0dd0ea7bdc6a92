/* mls_status.h: the one error model of the mlserve C core.
 *
 * Every fallible function returns an mls_status and, when given a non-NULL
 * mls_error, writes a human-readable message naming what was expected and
 * what was given. No function prints, aborts or keeps global state.
 * The Python binding maps each status to exactly one exception class
 * (see mls_status_name and _core.c: raise_from_error).
 */
#ifndef MLS_STATUS_H
#define MLS_STATUS_H

#include <stddef.h>

typedef enum mls_status {
    MLS_STATUS_OK = 0,
    MLS_STATUS_ERR_NOMEM,        /* allocation failed              -> MemoryError      */
    MLS_STATUS_ERR_SHAPE,        /* wrong rows/features/outputs    -> ValueError       */
    MLS_STATUS_ERR_VALUE,        /* NaN/inf or out-of-domain value -> ValueError       */
    MLS_STATUS_ERR_ARGUMENT,     /* bad parameter (alpha < 0, ...) -> ValueError       */
    MLS_STATUS_ERR_TYPE,         /* unsupported dtype              -> TypeError        */
    MLS_STATUS_ERR_FORMAT,       /* corrupt/foreign .mls file      -> ModelFormatError */
    MLS_STATUS_ERR_VERSION,      /* .mls file from a newer format  -> ModelFormatError */
    MLS_STATUS_ERR_IO,           /* open/read/write/rename failed  -> OSError          */
    MLS_STATUS_ERR_UNSUPPORTED,  /* model kind/method not built in -> NotImplementedError */
    MLS_STATUS_ERR_NUMERIC,      /* singular system, no convergence-> FloatingPointError (ArithmeticError) */
    MLS_STATUS_COUNT_            /* number of statuses; keep last */
} mls_status;

#define MLS_ERROR_MESSAGE_SIZE 512

/* Caller-owned error detail. Zero-initialise it; functions fill it on error. */
typedef struct mls_error {
    mls_status status;
    int os_errno; /* for MLS_STATUS_ERR_IO: the errno behind it, or 0 */
    char message[MLS_ERROR_MESSAGE_SIZE];
} mls_error;

/* Record `status` with a printf-style message in `err` (if non-NULL) and
 * return `status`, so call sites read: return mls_error_set(err, ..., ...); */
mls_status mls_error_set(mls_error *err, mls_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* MLS_STATUS_ERR_IO caused by the system error `os_errno`, so the binding
 * can raise the matching OSError subclass (FileNotFoundError, ...). */
mls_status mls_error_set_os(mls_error *err, int os_errno, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Stable symbolic name of a status ("MLS_STATUS_ERR_SHAPE"). */
const char *mls_status_name(mls_status status);

#endif /* MLS_STATUS_H */
