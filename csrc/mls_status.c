#include "mls_status.h"

#include <stdarg.h>
#include <stdio.h>

mls_status mls_error_set(mls_error *err, mls_status status, const char *fmt, ...)
{
    if (err != NULL) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, args);
        va_end(args);
        err->status = status;
    }
    return status;
}

mls_status mls_error_set_os(mls_error *err, int os_errno, const char *fmt, ...)
{
    if (err != NULL) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, args);
        va_end(args);
        err->status = MLS_STATUS_ERR_IO;
        err->os_errno = os_errno;
    }
    return MLS_STATUS_ERR_IO;
}

const char *mls_status_name(mls_status status)
{
    switch (status) {
    case MLS_STATUS_OK: return "MLS_STATUS_OK";
    case MLS_STATUS_ERR_NOMEM: return "MLS_STATUS_ERR_NOMEM";
    case MLS_STATUS_ERR_SHAPE: return "MLS_STATUS_ERR_SHAPE";
    case MLS_STATUS_ERR_VALUE: return "MLS_STATUS_ERR_VALUE";
    case MLS_STATUS_ERR_ARGUMENT: return "MLS_STATUS_ERR_ARGUMENT";
    case MLS_STATUS_ERR_TYPE: return "MLS_STATUS_ERR_TYPE";
    case MLS_STATUS_ERR_FORMAT: return "MLS_STATUS_ERR_FORMAT";
    case MLS_STATUS_ERR_VERSION: return "MLS_STATUS_ERR_VERSION";
    case MLS_STATUS_ERR_IO: return "MLS_STATUS_ERR_IO";
    case MLS_STATUS_ERR_UNSUPPORTED: return "MLS_STATUS_ERR_UNSUPPORTED";
    case MLS_STATUS_ERR_NUMERIC: return "MLS_STATUS_ERR_NUMERIC";
    case MLS_STATUS_COUNT_: break;
    }
    return "MLS_STATUS_UNKNOWN";
}
