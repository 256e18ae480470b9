/* Logging to stderr with a level threshold. The threshold is process-wide state
 * owned by the caller of lp_log_set_level (the CLI); the library only reads it. */
#ifndef LP_LOG_H
#define LP_LOG_H

typedef enum { LP_LOG_ERROR = 0, LP_LOG_WARN, LP_LOG_INFO, LP_LOG_DEBUG } lp_log_level;

void lp_log_set_level(lp_log_level level);
void lp_log(lp_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LP_INFO(...) lp_log(LP_LOG_INFO, __VA_ARGS__)
#define LP_WARN(...) lp_log(LP_LOG_WARN, __VA_ARGS__)
#define LP_DEBUG(...) lp_log(LP_LOG_DEBUG, __VA_ARGS__)

#endif
