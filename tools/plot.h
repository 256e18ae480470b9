/* Per-chunk charts of a streaming edit: how much of each chunk LIPAR kept and
 * how long each chunk took. Written without external libraries, as hand-made
 * SVG or as a PNG rasterised here (5x7 bitmap font, stored-deflate zlib). */
#ifndef LP_PLOT_H
#define LP_PLOT_H

#include "../src/base/status.h"

typedef struct {
    int n;                 /* number of chunks */
    const double *x;       /* chunk start time in seconds of video (or index), n values */
    const double *kept;    /* kept fraction per chunk, in [0,1] */
    const double *latency; /* seconds of processing per chunk */
    const char *title;     /* e.g. input file name and strategy (NULL = none) */
} lp_plot_data;

/* Writes an 800x500 two-panel chart to path: top, the kept fraction against x
 * on a fixed 0..100% axis; bottom, the per-chunk latency in milliseconds with
 * its median as a dashed line. The format follows the extension: ".svg" (SVG
 * 1.1, title XML-escaped) or ".png" (8-bit RGB); any other -> LP_ERR_ARG
 * before the file is touched. Points whose x or value is NaN/inf are skipped
 * and break the curve; kept values are clamped to [0,1], negative latencies
 * to 0. n == 0 gives empty axes. Bad arguments (NULL path/data, n < 0, NULL
 * arrays with n > 0) -> LP_ERR_ARG; a path that cannot be created or written
 * -> LP_ERR_IO naming it (a partly written file is removed). */
lp_status lp_plot_write(const char *path, const lp_plot_data *d);

#endif
