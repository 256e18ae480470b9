/* lipar — streaming video-to-video editing with a causal video diffusion
 * transformer and LIPAR (latent inter-frame pruning with attention recovery).
 *
 * The public C API. A lipar_model holds the weights (DiT, VAE, text encoder);
 * a lipar_session edits one video stream with it: push input frames, pull
 * edited frames as soon as a chunk (12 frames: 3 latent frames) is done,
 * change the prompt between chunks, read per-chunk statistics.
 *
 * Contracts common to every function:
 * - Functions returning lipar_status return LIPAR_OK (0) on success; on failure
 *   a message naming the file, argument or tensor at fault is available from
 *   lipar_last_error() on the same thread until the next failure.
 * - Handles are opaque; there is no global state. A model may serve several
 *   sessions one after the other; a session is used by one thread at a time.
 * - Frames are RGB planar float [3][height][width] with values in [0, 1], or,
 *   in sessions opened with rgb24_frames, packed bytes [height][width][3].
 */
#ifndef LIPAR_H
#define LIPAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LIPAR_OK = 0,
    LIPAR_ERR_IO,
    LIPAR_ERR_FORMAT,
    LIPAR_ERR_SHAPE,
    LIPAR_ERR_NOMEM,
    LIPAR_ERR_ARG,
    LIPAR_ERR_UNSUPPORTED,
    LIPAR_ERR_MISSING,
    LIPAR_ERR_INTERRUPTED,
} lipar_status;

const char *lipar_last_error(void);

/* ---------------------------------------------------------------- models */

typedef struct lipar_model lipar_model;

typedef struct {
    /* DiT weights: the Self-Forcing checkpoint (.pt) or a Wan2.1-T2V-1.3B
     * safetensors file. NULL: the embedded demonstration model (small random
     * weights of the same architecture family, generated in memory; its
     * output is noise-like and only demonstrates the pipeline). */
    const char *dit_path;
    const char *vae_path;          /* TAEHV (taew2_1) or Wan VAE weights; NULL with the demo model */
    const char *vae_kind;          /* "taehv" (default) or "wan" */
    const char *text_encoder_path; /* umT5-XXL weights (.pth / safetensors) */
    const char *tokenizer_path;    /* spiece.model */
    const char *prompt_embedding;  /* a file from `lipar encode-prompt`, instead of the text encoder */
    const char *backend;           /* where the DiT and the VAE run: "cpu" (default) or "cuda" */
    /* With no dit_path: 0 = the small demonstration model; 1 = random weights at
     * the published sizes (DiT 30×1536, TAEHV 64/256/128/64; a 2-layer umT5 of
     * width 4096), for benchmarks of the real architecture. */
    int demo_full_size;
    int threads;                   /* CPU threads, 0 = all cores */
} lipar_model_options;

void lipar_model_options_default(lipar_model_options *o);
/* Loads and cross-checks the weights (latent channels of DiT and VAE, text
 * width of DiT and text encoder). */
lipar_status lipar_model_load(const lipar_model_options *o, lipar_model **out);
void lipar_model_free(lipar_model *m);
/* Nonzero for the embedded demonstration model. */
int lipar_model_is_demo(const lipar_model *m);
/* A one-line description ("DiT 30x1536, TAEHV, umT5 ...") valid while m lives. */
const char *lipar_model_describe(const lipar_model *m);

/* --------------------------------------------------------------- sessions */

typedef struct lipar_session lipar_session;

typedef struct {
    int width, height;      /* multiples of 16; default 832×480 */
    int steps[8];           /* denoising_step_list; default {400, 300, 250} */
    int n_steps;
    float shift;            /* timestep shift, default 5 */
    const char *strategy;   /* "lipar" (default), "mdeg", "direct", "none", "tome", "importance" */
    double prune_fraction;  /* "tome"/"importance": target fraction of tokens removed, default 0.32 */
    int full_cache;         /* with "none": the 25-frame cache of the paper's baseline instead of sink 1 + window 6 */
    float tau, tau2;        /* keep-mask thresholds, default 0.149 and 0.3 */
    int batch_mask;         /* 1: the paper's whole-clip mask (output waits for lipar_session_finish);
                               0: the streaming mask (default) */
    uint64_t seed;          /* noise seed */
    const char *prompt;     /* the editing prompt */
    /* Whether the stages overlap: the VAE encoder encodes chunk n+1 on its
     * thread while the DiT edits chunk n on another: 1 yes, -1 no, 0
     * (default) yes on a GPU backend and no on the CPU, whose cores the DiT
     * already keeps busy. With the overlap pushes return while chunks are
     * edited; without it, a chunk is edited before the push that completes
     * it returns. The output is the same. */
    int encoder_overlap;
    /* 1: frames are pushed and pulled as packed 8-bit RGB [height][width][3]
     * (lipar_session_push_rgb24 / pull_rgb24), what video files hold; with
     * TAEHV on a GPU they cross to and from the device as bytes, a quarter
     * of the floats' transfer. 0 (default): planar floats (push / pull). */
    int rgb24_frames;
    /* Whether opening runs the DiT and TAEHV once on zeros (then forgets it)
     * so that the first chunk does not pay for weight uploads and kernel
     * choice: 1 yes, -1 no, 0 (default) yes on a GPU backend. The output is
     * the same. */
    int warm_up;
} lipar_session_options;

void lipar_session_options_default(lipar_session_options *o);
/* On a GPU, opening also warms the models up (lipar_session_options.warm_up). */
lipar_status lipar_session_open(lipar_model *m, const lipar_session_options *o, lipar_session **out);
/* Ends the input: a partial last chunk is padded (its padding is not output),
 * the batch mask is computed and applied if selected. Frames become pullable. */
lipar_status lipar_session_finish(lipar_session *s);
void lipar_session_close(lipar_session *s);

/* Pushes one input frame (copied). When it completes chunk n, chunk n goes
 * to the encoder; with encoder_overlap the session's threads encode, edit and
 * decode the chunks while the caller pushes on (a push waits only while
 * three chunks are between push and the end of their edit); without it,
 * chunk n is encoded and edited before this push returns. Edited chunks are
 * decoded on another thread and their frames become pullable as each is
 * done. */
lipar_status lipar_session_push(lipar_session *s, const float *rgb);
/* Pulls the next edited frame into rgb, setting *got to 1, or sets *got to 0
 * when none is ready. Output frames correspond one to one to input frames. */
lipar_status lipar_session_pull(lipar_session *s, float *rgb, int *got);
/* push and pull for sessions opened with rgb24_frames = 1: byte b stands for
 * b / 255; output floats are clamped to [0, 1] and rounded to the nearest
 * byte. A call of the other format fails with LIPAR_ERR_ARG. */
lipar_status lipar_session_push_rgb24(lipar_session *s, const uint8_t *rgb);
lipar_status lipar_session_pull_rgb24(lipar_session *s, uint8_t *rgb, int *got);
/* Replaces the prompt from the next chunk on, i.e. for the chunks completed
 * by later pushes (edits the complete chunks first, then re-encodes the text
 * and swaps the cross-attention K/V cache). */
lipar_status lipar_session_set_prompt(lipar_session *s, const char *prompt);

typedef struct {
    int chunk;                 /* index from 0 */
    int first_frame, frames;   /* input frames of the chunk (the last may be partial) */
    int latent_frames;         /* 3 */
    double kept[8];            /* kept fraction of each latent frame (1.0 without pruning) */
    double kept_fraction;      /* over the chunk */
    double seconds_encode, seconds_mask, seconds_dit, seconds_decode, seconds_total;
    /* when each stage started, in seconds since lipar_session_open (encode:
     * the VAE encoder; dit: the edit; decode: the VAE decoder) */
    double start_encode, start_dit, start_decode;
    int prompt_version;        /* 0 for the first prompt, +1 per lipar_session_set_prompt */
} lipar_chunk_stats;

/* The largest device memory in use (bytes, sampled after each chunk's
 * encode, edit and decode) by the process while this session ran; 0 on the
 * CPU backend. */
size_t lipar_session_peak_device_memory(const lipar_session *s);

/* Number of chunks edited so far, and the statistics of chunk i. */
int lipar_session_chunks(const lipar_session *s);
lipar_status lipar_session_chunk_stats(const lipar_session *s, int i, lipar_chunk_stats *out);
/* The keep-mask of latent frame j of chunk i as a [height/16][width/16] grid
 * of 0/1 (the most recent chunks only: i within the last 4 edited); NULL if
 * unavailable. The grid stays valid while 4 more chunks are edited. */
const uint8_t *lipar_session_keep_mask(const lipar_session *s, int i, int j);

#ifdef __cplusplus
}
#endif

#endif
