/* Status codes and error messages.
 *
 * Every fallible library function returns an lp_status. On failure it records a
 * human-readable message (naming the file, tensor or argument at fault) in a
 * thread-local buffer that lp_last_error() returns until the next failure on the
 * same thread. The library never calls exit(). */
#ifndef LP_STATUS_H
#define LP_STATUS_H

typedef enum {
    LP_OK = 0,
    LP_ERR_IO,          /* file missing, unreadable, short read/write */
    LP_ERR_FORMAT,      /* malformed or corrupt file contents */
    LP_ERR_SHAPE,       /* tensor or argument shapes do not fit together */
    LP_ERR_NOMEM,       /* allocation failed */
    LP_ERR_ARG,         /* invalid argument from the caller */
    LP_ERR_UNSUPPORTED, /* valid input that lipar does not handle */
    LP_ERR_MISSING,     /* a required tensor or key is absent */
    LP_ERR_INTERRUPTED, /* the caller asked to stop */
} lp_status;

/* Records a printf-style message for the current thread and returns code. */
lp_status lp_fail(lp_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *lp_last_error(void);

/* A short name for a status code ("io", "format", ...). */
const char *lp_status_name(lp_status s);

/* Propagate a failure: evaluates expr once and returns its status if not LP_OK. */
#define LP_TRY(expr)                       \
    do {                                   \
        lp_status lp_try_s_ = (expr);      \
        if (lp_try_s_ != LP_OK) return lp_try_s_; \
    } while (0)

#endif
