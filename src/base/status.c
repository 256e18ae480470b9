#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char lp_error_message[1024];

lp_status lp_fail(lp_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lp_error_message, sizeof lp_error_message, fmt, ap);
    va_end(ap);
    return code;
}

const char *lp_last_error(void) { return lp_error_message; }

const char *lp_status_name(lp_status s) {
    switch (s) {
    case LP_OK: return "ok";
    case LP_ERR_IO: return "io";
    case LP_ERR_FORMAT: return "format";
    case LP_ERR_SHAPE: return "shape";
    case LP_ERR_NOMEM: return "out of memory";
    case LP_ERR_ARG: return "argument";
    case LP_ERR_UNSUPPORTED: return "unsupported";
    case LP_ERR_MISSING: return "missing";
    case LP_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown";
}
