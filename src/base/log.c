#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static lp_log_level lp_log_threshold = LP_LOG_WARN;

void lp_log_set_level(lp_log_level level) { lp_log_threshold = level; }

void lp_log(lp_log_level level, const char *fmt, ...) {
    static const char *const tags[] = {"error", "warn", "info", "debug"};
    if (level > lp_log_threshold) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lipar %s: ", tags[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
