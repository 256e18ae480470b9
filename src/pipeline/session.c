/* lipar_session: the streaming editing loop (ARCHITECTURE.md "What flows
 * through it") as stages on their own threads, each stage with its own
 * backend instance (its own stream on a GPU):
 *
 * - the caller's thread: push() gathers input frames into chunks (12 frames =
 *   3 latent frames; the Wan VAE's first chunk is 9 = 1 + 4·2) and hands each
 *   complete chunk to the encoder;
 * - the encoder thread: encodes the chunks in order and computes what
 *   depends only on the input: the streaming keep-mask (a sequence over the
 *   chunks, which this thread sees in order) or a per-chunk strategy's plan,
 *   and draws the chunk's noise;
 * - the DiT thread (encoder_overlap): edits the encoded chunks in order
 *   (lp_edit_chunk), chunk n while the encoder works on chunk n+1 and the
 *   caller fills chunk n+2. Without the overlap (the CPU's default) there is
 *   no DiT thread: push() waits for chunk n's encoding and edits it on the
 *   caller's thread before it returns;
 * - the decoder thread: decodes chunk n while the DiT works on chunk n+1 and
 *   queues the frames to be pulled.
 * Both queues are bounded: ENCODE_SLOTS chunks are between push() and the
 * end of their edit, DECODE_QUEUE edited ones wait for the decoder. Each
 * stage sees the chunks in the order they were pushed, so the results do not
 * depend on the timing of the threads.
 *
 * Locking. One mutex, mu, guards what two threads touch: the chunk counters
 * n_queued, n_encoded and n_taken, the decode queue's head and count, the
 * output queue, the statistics (the decoder adds its time),
 * peak_device_bytes and the first failure of a thread (thread_status,
 * thread_error). The contents of an encode slot or a decode job are not
 * guarded: one thread owns each at a time, and ownership passes by a counter
 * changed under mu (so the mutex makes the last owner's writes visible to
 * the next):
 * - the slot of chunk c is the caller's while it fills it (n_queued == c),
 *   the encoder's from n_queued > c until n_encoded > c, then the DiT's until
 *   n_taken > c, after which chunk c + ENCODE_SLOTS may fill it;
 * - a decode job is the DiT's while it writes it, then the decoder's from
 *   when jobs_count counts it until the decoder removes it.
 * Everything else belongs to one thread: the encoder's models, states and
 * mask stream; the DiT's cache, edit state, keep history (read by
 * lipar_session_keep_mask for chunks whose edit is over), pending latents
 * and prompt (the DiT thread's, or the caller's without it; the caller
 * changes the prompt and runs the batch mask only once the DiT thread has
 * taken every queued chunk); the decoder's models and frame buffer. The
 * caller alone writes n_queued and n_in, so it reads them without the lock;
 * the DiT alone writes n_taken and n_stats (under mu). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/prng.h"
#include "../io/video.h"
#include "../prune/alternatives.h"
#include "../prune/mask.h"
#include "edit.h"
#include "model_bundle.h"

#define CHUNK_LATENTS 3
#define MASK_HISTORY 8
#define KEEP_MASKS 4   /* lipar_session_keep_mask's: the last chunks edited */
#define ENCODE_SLOTS 3 /* chunks pushed and not yet edited: one being filled, one at the encoder, one at the DiT */
#define DECODE_QUEUE 2 /* edited chunks waiting for the decoder */

typedef struct {
    void *frames;         /* 12 frames ([3][H][W] floats or [H][W][3] bytes): the input, padded to the chunk's size */
    float *latents;       /* [3][C][h][w] */
    uint8_t *keep;        /* [3][patches]: the streaming mask or the per-chunk strategy's */
    int32_t *merge_dst;   /* [3·patches]: tome's merge plan */
    float *noise;         /* [n_steps][3][C][h][w]: the chunk's ε for steps −1 .. n_steps − 2, drawn by the encoder */
    lipar_chunk_stats cs; /* chunk, first_frame, frames; the encoder adds seconds_encode and seconds_mask */
} encode_slot;

/* The noise of the chunk being edited: drawn ahead by the encoder thread
 * (the same values as lp_prng_noise_fn's; drawing them takes milliseconds
 * that would otherwise stall the DiT between its calls), or drawn now. */
typedef struct {
    const float *drawn; /* [n_steps][n] for chunk `chunk`, or NULL */
    int chunk;
    lp_prng_noise pn;
} chunk_noise;

static lp_status chunk_noise_fn(void *ctx, int chunk, int step, float *eps, int64_t n) {
    const chunk_noise *cn = ctx;
    if (!cn->drawn || chunk != cn->chunk) return lp_prng_noise_fn((void *)&cn->pn, chunk, step, eps, n);
    memcpy(eps, cn->drawn + (size_t)(step + 1) * (size_t)n, (size_t)n * sizeof *eps);
    return LP_OK;
}

typedef struct {
    float *latents; /* [3][C][h][w] */
    int frames;     /* output frames to keep */
    int chunk;
} decode_job;

typedef struct {
    float *latents; /* [3][C][h][w] */
    int frames;     /* real input frames */
} pending_chunk;

struct lipar_session {
    lipar_model *m;
    lipar_session_options o;
    char *prompt;
    int prompt_version;
    lp_prune_strategy strategy;
    lp_denoise_plan plan;
    int C, lh, lw;             /* latent frame [C, lh, lw] */
    int64_t frame_px, latent_elems, patches; /* frame_px: samples of a frame, 3·H·W */
    int rgb24;                 /* frames pushed and pulled as packed bytes (o.rgb24_frames) */
    size_t frame_bytes;        /* bytes of a pushed or pulled frame */
    /* the DiT's (the caller's thread) */
    lp_dit_cache *cache;
    lp_edit_state est;
    lp_mask_opts mopts;
    float *eps;                /* one chunk's noise */
    uint8_t *keep_history;     /* [MASK_HISTORY][3][patches] */
    pending_chunk *pending;    /* batch mask mode: every chunk's latents until finish */
    int n_pending, cap_pending;
    lipar_chunk_stats *stats;
    int n_stats, cap_stats;
    /* the encoder's */
    lp_taehv_encoder *tenc;
    lp_wan_vae_encoder *wenc;
    lp_mask_stream *mstream;
    float *wan_in;             /* [12][3][H][W]: bytes made floats for the Wan VAE (rgb24 only) */
    /* the decoder's */
    lp_taehv_decoder *tdec;
    lp_wan_vae_decoder *wdec;
    void *decoded;             /* 12 frames as pulled */
    float *wan_out;            /* [12][3][H][W]: the Wan VAE's frames before they become bytes (rgb24 only) */
    /* complete chunks between push() and the DiT */
    encode_slot slots[ENCODE_SLOTS];
    int n_in;                  /* frames in the slot being filled (that of chunk n_queued) */
    int n_queued;              /* chunks handed to the encoder */
    int n_encoded;             /* chunks the encoder is done with */
    int n_taken;               /* chunks the DiT is done with (edited, or kept for the batch mask) */
    /* edited chunks between the DiT and the decoder */
    decode_job jobs[DECODE_QUEUE];
    int jobs_head, jobs_count;
    /* output queue */
    uint8_t *out;              /* frames as pulled, frame_bytes each */
    int out_head, out_count, out_cap;
    size_t peak_device_bytes;
    /* the threads (see "Locking" above) */
    pthread_t encoder, decoder;
    pthread_t editor;          /* the DiT thread, with the overlap */
    int sync_made, encoder_started, editor_started, decoder_started, stopping;
    pthread_mutex_t mu;
    pthread_cond_t chunk_queued, chunk_encoded, chunk_taken, job_ready, job_done;
    lp_status thread_status;   /* first failure of the encoder or decoder thread */
    char thread_error[1024];
    int overlap;               /* the DiT runs on its own thread (encoder_overlap) */
    double opened;             /* lp_seconds() at lipar_session_open, the origin of the stage start times */
    int finished;
};

void lipar_session_options_default(lipar_session_options *o) {
    memset(o, 0, sizeof *o);
    o->width = 832;
    o->height = 480;
    o->steps[0] = 400;
    o->steps[1] = 300;
    o->steps[2] = 250;
    o->n_steps = 3;
    o->shift = 5.0f;
    o->strategy = "lipar";
    o->prune_fraction = 0.32;
    o->tau = 0.149f;
    o->tau2 = 0.3f;
    o->seed = 42;
    o->prompt = "";
}

/* Input frames of chunk index `chunk` (the Wan VAE encodes 1 + 4k frames first). */
static int chunk_frames(const lipar_session *s, int chunk) {
    return s->m->vae_kind == LP_VAE_WAN && chunk == 0 ? 9 : 12;
}

static int per_chunk_strategy(const lipar_session *s) {
    return s->strategy == LP_PRUNE_TOME || s->strategy == LP_PRUNE_IMPORTANCE;
}

static lp_status encode_prompt(lipar_session *s, const char *prompt) {
    float *ctx;
    int rows;
    LP_TRY(lp_text_encode(s->m->text, prompt, &ctx, &rows));
    const lp_dit_config *dc = lp_dit_get_config(s->m->dit);
    if (rows > dc->text_len) rows = dc->text_len;
    lp_status st = lp_dit_set_prompt(s->m->dit, s->cache, ctx, rows);
    free(ctx);
    return st;
}

static lp_status open_vae(lipar_session *s) {
    lipar_model *m = s->m;
    int H = s->o.height, W = s->o.width;
    if (m->vae_kind == LP_VAE_TAEHV) {
        LP_TRY(lp_taehv_encoder_create(m->taehv, H, W, &s->tenc));
        lp_taehv_decoder_opts dopts = lp_taehv_decoder_defaults(); /* keep all 4T frames, clamp to [0, 1] */
        lp_taehv_encoder_latent_shape(s->tenc, &s->C, &s->lh, &s->lw);
        LP_TRY(lp_taehv_decoder_create(m->taehv_dec, s->lh, s->lw, &dopts, &s->tdec));
    } else {
        LP_TRY(lp_wan_vae_encoder_open(m->wan, H, W, m->enc_be, &s->wenc));
        LP_TRY(lp_wan_vae_decoder_open(m->wan, H, W, 1, m->vae_be, &s->wdec));
        int scale = lp_wan_vae_scale(m->wan);
        s->C = lp_wan_vae_config_of(m->wan)->z_dim;
        s->lh = H / scale;
        s->lw = W / scale;
    }
    return LP_OK;
}

/* Samples the device memory in use through be (each thread through its own
 * instance: on CUDA it is the process's, so this catches each stage's peak). */
static void note_memory(lipar_session *s, const lp_backend *be) {
    size_t used = be->memory_in_use(be);
    pthread_mutex_lock(&s->mu);
    if (used > s->peak_device_bytes) s->peak_device_bytes = used;
    pthread_mutex_unlock(&s->mu);
}

/* Records the first failure of the encoder or decoder thread (call with mu
 * held): lp_last_error is per thread, so the message is kept here. */
static void thread_failed(lipar_session *s, lp_status st) {
    if (st == LP_OK || s->thread_status != LP_OK) return;
    s->thread_status = st;
    snprintf(s->thread_error, sizeof s->thread_error, "%s", lp_last_error());
}

/* That failure, raised on the caller's thread (call with mu held). */
static lp_status thread_failure(const lipar_session *s) {
    return s->thread_status == LP_OK ? LP_OK : lp_fail(s->thread_status, "%s", s->thread_error);
}

static lp_status pipeline_failure(lipar_session *s) {
    pthread_mutex_lock(&s->mu);
    lp_status st = thread_failure(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- the encoder thread ---- */

/* The Wan VAE's frames in rgb24 sessions, converted on the host (TAEHV
 * converts on its backend), n frames of the session's size at a time. */
static void frames_to_planar(const lipar_session *s, const uint8_t *rgb, int n, float *x, lp_pool *pool) {
    for (int f = 0; f < n; f++)
        lp_video_rgb24_to_planar(rgb + (size_t)f * s->frame_bytes, s->o.width, s->o.height, x + f * s->frame_px, pool);
}

static void frames_to_rgb24(const lipar_session *s, const float *x, int n, uint8_t *rgb, lp_pool *pool) {
    for (int f = 0; f < n; f++)
        lp_video_planar_to_rgb24(x + f * s->frame_px, s->o.width, s->o.height, rgb + (size_t)f * s->frame_bytes, pool);
}

/* The token reduction of a chunk from its clean latents for the per-chunk
 * strategies: tome's merge plan (with keep = not merged, for the statistics)
 * or importance's mask. */
static lp_status plan_alternative(const lipar_session *s, encode_slot *e) {
    if (s->strategy == LP_PRUNE_IMPORTANCE)
        return lp_importance_mask(e->latents, CHUNK_LATENTS, s->C, s->lh, s->lw, s->o.prune_fraction,
                                  e->cs.chunk == 0, e->keep);
    LP_TRY(lp_tome_plan(e->latents, CHUNK_LATENTS, s->C, s->lh, s->lw, s->o.prune_fraction, e->merge_dst));
    for (int64_t i = 0; i < CHUNK_LATENTS * s->patches; i++) e->keep[i] = e->merge_dst[i] < 0;
    return LP_OK;
}

/* Encodes the chunk of slot e and computes its streaming keep-mask or
 * per-chunk plan (the batch mask waits for the whole clip; `none` has none). */
static lp_status encode_run(lipar_session *s, encode_slot *e) {
    int n = chunk_frames(s, e->cs.chunk), got = 0;
    double t0 = lp_seconds();
    e->cs.start_encode = t0 - s->opened;
    if (s->tenc && s->rgb24) {
        LP_TRY(lp_taehv_encoder_push_rgb24(s->tenc, e->frames, n, e->latents, CHUNK_LATENTS, &got));
    } else if (s->tenc) {
        LP_TRY(lp_taehv_encoder_push(s->tenc, e->frames, n, e->latents, CHUNK_LATENTS, &got));
    } else {
        float *x = s->rgb24 ? s->wan_in : e->frames;
        if (s->rgb24) frames_to_planar(s, e->frames, n, x, s->m->enc_be->pool);
        for (int64_t i = 0; i < n * s->frame_px; i++) x[i] = 2.0f * x[i] - 1.0f; /* Wan: [−1, 1] */
        LP_TRY(lp_wan_vae_encode(s->wenc, x, n, e->latents, &got));
    }
    if (got != CHUNK_LATENTS)
        return lp_fail(LP_ERR_SHAPE, "the VAE made %d latent frames from %d frames, expected %d", got, n,
                       CHUNK_LATENTS);
    e->cs.seconds_encode = lp_seconds() - t0;
    note_memory(s, s->m->enc_be);
    t0 = lp_seconds();
    int masked = 1;
    if (per_chunk_strategy(s)) LP_TRY(plan_alternative(s, e));
    else if (!s->o.batch_mask && s->strategy != LP_PRUNE_NONE)
        LP_TRY(lp_mask_stream_push_chunk(s->mstream, e->latents, CHUNK_LATENTS, e->keep));
    else masked = 0;
    if (masked) e->cs.seconds_mask = lp_seconds() - t0;
    if (s->o.batch_mask) return LP_OK; /* edited after finish: the noise is drawn then */
    lp_prng_noise pn = {s->o.seed, s->m->enc_be->pool};
    for (int i = -1; i < s->plan.n_steps - 1; i++)
        LP_TRY(lp_prng_noise_fn(&pn, e->cs.chunk, i, e->noise + (size_t)(i + 1) * (size_t)s->latent_elems,
                                s->latent_elems));
    return LP_OK;
}

static void *encoder_main(void *arg) {
    lipar_session *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->n_encoded == s->n_queued && !s->stopping) pthread_cond_wait(&s->chunk_queued, &s->mu);
        if (s->stopping) break;
        encode_slot *e = &s->slots[s->n_encoded % ENCODE_SLOTS];
        int failed = s->thread_status != LP_OK; /* after a failure, chunks pass through unencoded */
        pthread_mutex_unlock(&s->mu);
        lp_status st = failed ? LP_OK : encode_run(s, e);
        pthread_mutex_lock(&s->mu);
        thread_failed(s, st);
        s->n_encoded++;
        pthread_cond_broadcast(&s->chunk_encoded);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the decoder thread ---- */

static lp_status enqueue(lipar_session *s, const void *frames, int n);

/* Decodes one job into s->decoded; returns the number of frames made. */
static lp_status decode_run(lipar_session *s, const decode_job *job, int *got) {
    *got = 0;
    if (s->tdec && s->rgb24) return lp_taehv_decoder_push_rgb24(s->tdec, job->latents, CHUNK_LATENTS, s->decoded, 12, got);
    if (s->tdec) return lp_taehv_decoder_push(s->tdec, job->latents, CHUNK_LATENTS, s->decoded, 12, got);
    float *x = s->rgb24 ? s->wan_out : s->decoded;
    LP_TRY(lp_wan_vae_decode(s->wdec, job->latents, CHUNK_LATENTS, x, got));
    for (int64_t i = 0; i < *got * s->frame_px; i++) x[i] = 0.5f * (x[i] + 1.0f); /* [−1,1]→[0,1] */
    if (s->rgb24) frames_to_rgb24(s, x, *got, s->decoded, s->m->vae_be->pool);
    return LP_OK;
}

static void *decoder_main(void *arg) {
    lipar_session *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->jobs_count && !s->stopping) pthread_cond_wait(&s->job_ready, &s->mu);
        if (s->stopping) break;
        decode_job *job = &s->jobs[s->jobs_head];
        int failed = s->thread_status != LP_OK; /* after a failure, jobs are dropped */
        pthread_mutex_unlock(&s->mu);
        double t0 = lp_seconds();
        int got = 0;
        lp_status st = failed ? LP_OK : decode_run(s, job, &got);
        if (st == LP_OK && !failed && got < job->frames)
            st = lp_fail(LP_ERR_SHAPE, "the VAE decoded %d frames, expected %d", got, job->frames);
        double dt = lp_seconds() - t0;
        if (!failed) note_memory(s, s->m->vae_be);
        pthread_mutex_lock(&s->mu);
        if (st == LP_OK && !failed) st = enqueue(s, s->decoded, job->frames);
        thread_failed(s, st);
        if (job->chunk < s->n_stats) {
            s->stats[job->chunk].start_decode = t0 - s->opened;
            s->stats[job->chunk].seconds_decode = dt;
            s->stats[job->chunk].seconds_total += dt;
        }
        s->jobs_head = (s->jobs_head + 1) % DECODE_QUEUE;
        s->jobs_count--;
        pthread_cond_broadcast(&s->job_done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void *editor_main(void *arg);

static lp_status start_threads(lipar_session *s) {
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->chunk_queued, NULL);
    pthread_cond_init(&s->chunk_encoded, NULL);
    pthread_cond_init(&s->chunk_taken, NULL);
    pthread_cond_init(&s->job_ready, NULL);
    pthread_cond_init(&s->job_done, NULL);
    s->sync_made = 1;
    if (pthread_create(&s->encoder, NULL, encoder_main, s) != 0)
        return lp_fail(LP_ERR_NOMEM, "cannot start the encoder thread");
    s->encoder_started = 1;
    if (s->overlap) {
        if (pthread_create(&s->editor, NULL, editor_main, s) != 0)
            return lp_fail(LP_ERR_NOMEM, "cannot start the DiT thread");
        s->editor_started = 1;
    }
    if (pthread_create(&s->decoder, NULL, decoder_main, s) != 0)
        return lp_fail(LP_ERR_NOMEM, "cannot start the decoder thread");
    s->decoder_started = 1;
    return LP_OK;
}

/* Stops both threads, dropping work they have not started (after finish
 * there is none), and joins them. */
static void stop_threads(lipar_session *s) {
    if (!s->sync_made) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->chunk_queued);
    pthread_cond_broadcast(&s->chunk_encoded);
    pthread_cond_broadcast(&s->job_ready);
    pthread_cond_broadcast(&s->job_done);
    pthread_mutex_unlock(&s->mu);
    if (s->encoder_started) pthread_join(s->encoder, NULL);
    if (s->editor_started) pthread_join(s->editor, NULL);
    if (s->decoder_started) pthread_join(s->decoder, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->chunk_queued);
    pthread_cond_destroy(&s->chunk_encoded);
    pthread_cond_destroy(&s->chunk_taken);
    pthread_cond_destroy(&s->job_ready);
    pthread_cond_destroy(&s->job_done);
    s->sync_made = 0;
}

/* Hands the edited latents of chunk `chunk` to the decoder, waiting while its
 * queue is full (dropping them when the session is closing). */
static lp_status submit_decode(lipar_session *s, const float *latents, int frames, int chunk) {
    pthread_mutex_lock(&s->mu);
    while (s->jobs_count == DECODE_QUEUE && s->thread_status == LP_OK && !s->stopping)
        pthread_cond_wait(&s->job_done, &s->mu);
    lp_status st = thread_failure(s);
    if (st == LP_OK && !s->stopping) {
        decode_job *job = &s->jobs[(s->jobs_head + s->jobs_count) % DECODE_QUEUE];
        memcpy(job->latents, latents, (size_t)s->latent_elems * sizeof(float));
        job->frames = frames;
        job->chunk = chunk;
        s->jobs_count++;
        pthread_cond_signal(&s->job_ready);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* Waits until the decoder has emptied its queue. */
static lp_status drain_decoder(lipar_session *s) {
    pthread_mutex_lock(&s->mu);
    while (s->jobs_count && s->thread_status == LP_OK) pthread_cond_wait(&s->job_done, &s->mu);
    lp_status st = thread_failure(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- the session ---- */

/* On a GPU the first chunk would pay for uploading the weights, choosing the
 * GEMM algorithms and loading the kernels (0.55 s of DiT at the published
 * sizes, docs/PERF.md): the DiT runs once on a zero chunk and TAEHV's
 * streams on zero frames, then the cache and the streams forget them (the
 * prompt stays), so the output does not change (tests/test_session.c).
 * Before the threads start: every model is this thread's. */
static lp_status warm_up(lipar_session *s) {
    float *zeros = calloc((size_t)s->latent_elems, sizeof *zeros), *flow = malloc((size_t)s->latent_elems * sizeof *flow);
    void *frames = calloc(12, s->frame_bytes);
    lp_status st = zeros && flow && frames ? LP_OK : lp_fail(LP_ERR_NOMEM, "out of memory warming up");
    float ts[CHUNK_LATENTS];
    for (int f = 0; f < CHUNK_LATENTS; f++) ts[f] = s->plan.timesteps[0];
    lp_dit_call call = {.n_frames = CHUNK_LATENTS, .timesteps = ts, .kv_policy = LP_KV_DENSE};
    if (st == LP_OK) st = lp_dit_forward(s->m->dit, s->cache, &call, zeros, flow);
    lp_dit_cache_reset(s->cache);
    int got = 0;
    if (st == LP_OK && s->tenc) {
        st = s->rgb24 ? lp_taehv_encoder_push_rgb24(s->tenc, frames, 12, zeros, CHUNK_LATENTS, &got)
                      : lp_taehv_encoder_push(s->tenc, frames, 12, zeros, CHUNK_LATENTS, &got);
        if (st == LP_OK) st = lp_taehv_encoder_reset(s->tenc);
    }
    if (st == LP_OK && s->tdec) {
        memset(zeros, 0, (size_t)s->latent_elems * sizeof *zeros);
        st = s->rgb24 ? lp_taehv_decoder_push_rgb24(s->tdec, zeros, CHUNK_LATENTS, frames, 12, &got)
                      : lp_taehv_decoder_push(s->tdec, zeros, CHUNK_LATENTS, frames, 12, &got);
        if (st == LP_OK) st = lp_taehv_decoder_reset(s->tdec);
    }
    if (st == LP_OK && (s->wenc || s->wdec)) {
        /* the Wan VAE: the first chunk of a clip and one later (5 frames, 2 latents) */
        float *px = calloc((size_t)5 * s->frame_px, sizeof *px);
        float *lat = calloc((size_t)2 * s->C * s->lh * s->lw, sizeof *lat);
        st = px && lat ? LP_OK : lp_fail(LP_ERR_NOMEM, "out of memory warming up");
        if (st == LP_OK && s->wenc) st = lp_wan_vae_encode(s->wenc, px, 5, lat, &got);
        if (st == LP_OK && s->wenc) st = lp_wan_vae_encoder_reset(s->wenc);
        if (st == LP_OK && s->wdec) st = lp_wan_vae_decode(s->wdec, lat, 2, px, &got);
        if (st == LP_OK && s->wdec) st = lp_wan_vae_decoder_reset(s->wdec);
        free(px);
        free(lat);
    }
    free(zeros);
    free(flow);
    free(frames);
    return st;
}

lipar_status lipar_session_open(lipar_model *m, const lipar_session_options *o, lipar_session **out) {
    *out = NULL;
    if (o->width <= 0 || o->height <= 0 || o->width % 16 || o->height % 16)
        return (lipar_status)lp_fail(LP_ERR_ARG, "frame size %dx%d: width and height must be positive multiples of 16",
                                     o->width, o->height);
    if (o->width > 8192 || o->height > 8192)
        return (lipar_status)lp_fail(LP_ERR_ARG, "frame size %dx%d is larger than 8192", o->width, o->height);
    /* A session holds frame buffers and VAE states of about 200 frames' worth of
     * f32 pixels (measured: 0.94 GB at 832×480, 2.5 GB at 1664×960 with the
     * demonstration model): refuse sizes this machine cannot hold instead of
     * being killed for memory halfway. */
    double need = 200.0 * 3.0 * o->width * o->height * sizeof(float);
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
    if (ram > 0 && need > ram)
        return (lipar_status)lp_fail(LP_ERR_NOMEM,
                                     "a %dx%d session needs about %.0f GB of memory; this machine has %.0f GB",
                                     o->width, o->height, need / 1e9, ram / 1e9);
    lipar_session *s = calloc(1, sizeof *s);
    if (!s) return (lipar_status)lp_fail(LP_ERR_NOMEM, "out of memory");
    s->m = m;
    s->opened = lp_seconds();
    s->o = *o;
    s->o.strategy = NULL;
    s->o.prompt = NULL;
    /* On the CPU the DiT fills every core: overlapping the encoder with it
     * only makes their threads compete (measured: no faster, more CPU time),
     * so by default the encoder runs while the DiT waits for it there. */
    int overlap = o->encoder_overlap ? o->encoder_overlap > 0 : strcmp(m->be->name, "cpu") != 0;
    s->overlap = overlap;
    lp_status st = lp_prune_strategy_parse(o->strategy ? o->strategy : "lipar", &s->strategy);
    if (st == LP_OK) st = lp_denoise_plan_init(&s->plan, o->steps, o->n_steps, o->shift, 0.0f);
    if (st == LP_OK) st = open_vae(s);
    if (st == LP_OK) {
        const lp_dit_config *dc = lp_dit_get_config(m->dit);
        if (s->C != dc->in_dim)
            st = lp_fail(LP_ERR_SHAPE, "the VAE gives %d latent channels, the DiT takes %d", s->C, dc->in_dim);
        else if (s->lh % 2 || s->lw % 2)
            st = lp_fail(LP_ERR_SHAPE, "latent grid %dx%d is not even", s->lh, s->lw);
    }
    if (st == LP_OK) {
        lp_dit_cache_config cc;
        lp_edit_cache_defaults(s->strategy, o->full_cache, s->lh, s->lw, CHUNK_LATENTS, &cc);
        st = lp_dit_cache_create(m->dit, &cc, &s->cache);
    }
    if (st == LP_OK) st = lp_edit_state_init(&s->est, s->C, s->lh, s->lw);
    if (st == LP_OK) {
        lp_mask_opts_default(&s->mopts);
        s->mopts.tau = o->tau;
        s->mopts.tau2 = o->tau2;
        /* the stream runs on the encoder thread, on the encoder's backend */
        if (!o->batch_mask) st = lp_mask_stream_open(&s->mopts, s->lh, s->lw, m->enc_be, &s->mstream);
    }
    if (st == LP_OK) {
        s->frame_px = (int64_t)3 * o->height * o->width;
        s->rgb24 = o->rgb24_frames != 0;
        s->frame_bytes = (size_t)s->frame_px * (s->rgb24 ? 1 : sizeof(float));
        s->latent_elems = (int64_t)CHUNK_LATENTS * s->C * s->lh * s->lw;
        s->patches = (int64_t)(s->lh / 2) * (s->lw / 2);
        int ok = 1;
        for (int i = 0; i < ENCODE_SLOTS; i++) {
            encode_slot *e = &s->slots[i];
            ok &= (e->frames = malloc(12 * s->frame_bytes)) != NULL;
            ok &= (e->latents = malloc((size_t)s->latent_elems * sizeof(float))) != NULL;
            ok &= (e->keep = malloc((size_t)(CHUNK_LATENTS * s->patches))) != NULL;
            ok &= (e->merge_dst = malloc((size_t)(CHUNK_LATENTS * s->patches) * sizeof *e->merge_dst)) != NULL;
            ok &= (e->noise = malloc((size_t)s->plan.n_steps * (size_t)s->latent_elems * sizeof *e->noise)) != NULL;
        }
        for (int i = 0; i < DECODE_QUEUE; i++)
            ok &= (s->jobs[i].latents = malloc((size_t)s->latent_elems * sizeof(float))) != NULL;
        s->eps = malloc((size_t)s->latent_elems * sizeof(float));
        s->keep_history = calloc((size_t)(MASK_HISTORY * CHUNK_LATENTS * s->patches), 1);
        s->prompt = strdup(o->prompt ? o->prompt : "");
        s->decoded = malloc(12 * s->frame_bytes);
        if (s->rgb24 && s->wenc) {
            ok &= (s->wan_in = malloc((size_t)(12 * s->frame_px) * sizeof(float))) != NULL;
            ok &= (s->wan_out = malloc((size_t)(12 * s->frame_px) * sizeof(float))) != NULL;
        }
        if (!ok || !s->eps || !s->keep_history || !s->prompt || !s->decoded)
            st = lp_fail(LP_ERR_NOMEM, "out of memory for a %dx%d session", o->width, o->height);
    }
    if (st == LP_OK) st = encode_prompt(s, s->prompt);
    int warm = o->warm_up ? o->warm_up > 0 : strcmp(m->be->name, "cpu") != 0;
    if (st == LP_OK && warm) st = warm_up(s);
    if (st == LP_OK) st = start_threads(s);
    if (st != LP_OK) {
        lipar_session_close(s);
        return (lipar_status)st;
    }
    *out = s;
    return LIPAR_OK;
}

void lipar_session_close(lipar_session *s) {
    if (!s) return;
    stop_threads(s);
    for (int i = 0; i < ENCODE_SLOTS; i++) {
        free(s->slots[i].frames);
        free(s->slots[i].latents);
        free(s->slots[i].keep);
        free(s->slots[i].merge_dst);
        free(s->slots[i].noise);
    }
    for (int i = 0; i < DECODE_QUEUE; i++) free(s->jobs[i].latents);
    free(s->decoded);
    lp_taehv_encoder_free(s->tenc);
    lp_taehv_decoder_free(s->tdec);
    lp_wan_vae_encoder_close(s->wenc);
    lp_wan_vae_decoder_close(s->wdec);
    lp_mask_stream_close(s->mstream);
    lp_edit_state_free(&s->est);
    lp_dit_cache_free(s->cache);
    for (int i = 0; i < s->n_pending; i++) free(s->pending[i].latents);
    free(s->pending);
    free(s->wan_in);
    free(s->wan_out);
    free(s->eps);
    free(s->out);
    free(s->stats);
    free(s->keep_history);
    free(s->prompt);
    free(s);
}

/* Frame i of a queue of frames of frame_bytes each. */
static uint8_t *frame_at(const lipar_session *s, const void *frames, size_t i) {
    return (uint8_t *)frames + i * s->frame_bytes;
}

static lp_status enqueue(lipar_session *s, const void *frames, int n) {
    if (s->out_count + n > s->out_cap) {
        int cap = s->out_cap ? s->out_cap : 16;
        while (cap < s->out_count + n) cap *= 2;
        uint8_t *no = malloc((size_t)cap * s->frame_bytes);
        if (!no) return lp_fail(LP_ERR_NOMEM, "out of memory queueing output frames");
        for (int i = 0; i < s->out_count; i++)
            memcpy(frame_at(s, no, i), frame_at(s, s->out, (s->out_head + i) % s->out_cap), s->frame_bytes);
        free(s->out);
        s->out = no;
        s->out_cap = cap;
        s->out_head = 0;
    }
    for (int i = 0; i < n; i++)
        memcpy(frame_at(s, s->out, (s->out_head + s->out_count + i) % s->out_cap), frame_at(s, frames, i),
               s->frame_bytes);
    s->out_count += n;
    return LP_OK;
}

static lp_status push_stats(lipar_session *s, const lipar_chunk_stats *cs) {
    if (s->n_stats == s->cap_stats) {
        int cap = s->cap_stats ? 2 * s->cap_stats : 64;
        lipar_chunk_stats *ns = realloc(s->stats, (size_t)cap * sizeof *ns);
        if (!ns) return lp_fail(LP_ERR_NOMEM, "out of memory");
        s->stats = ns;
        s->cap_stats = cap;
    }
    s->stats[s->n_stats++] = *cs;
    return LP_OK;
}

/* Edits the chunk whose clean latents are x (overwritten) with keep (NULL =
 * all) or the merge plan and its noise (drawn ahead, or NULL: drawn now),
 * records its statistics and hands the edited latents to the decoder thread,
 * which queues the chunk's first cs->frames output frames. */
static lp_status edit_chunk(lipar_session *s, float *x, const uint8_t *keep, const int32_t *merge_dst,
                            const float *noise, lipar_chunk_stats *cs) {
    int chunk = s->est.chunk;
    int64_t n = s->latent_elems;
    uint8_t *hist = s->keep_history + (size_t)(chunk % MASK_HISTORY) * CHUNK_LATENTS * (size_t)s->patches;
    int64_t total = CHUNK_LATENTS * s->patches, kept = 0;
    for (int j = 0; j < CHUNK_LATENTS; j++) {
        int64_t kj = 0;
        for (int64_t i = 0; i < s->patches; i++) {
            uint8_t k = keep ? keep[j * s->patches + i] != 0 : 1;
            hist[j * s->patches + i] = k;
            kj += k;
        }
        cs->kept[j] = (double)kj / (double)s->patches;
        kept += kj;
    }
    cs->kept_fraction = (double)kept / (double)total;
    cs->latent_frames = CHUNK_LATENTS;
    /* SDEdit start: x = (1 − σ0)·src + σ0·ε with ε from the counter-based PRNG */
    chunk_noise cn = {noise, chunk, {s->o.seed, s->m->be->pool}};
    LP_TRY(chunk_noise_fn(&cn, chunk, -1, s->eps, n));
    lp_flow_add_noise(x, x, s->eps, s->plan.sigmas[0], n);
    double t0 = lp_seconds();
    cs->start_dit = t0 - s->opened;
    LP_TRY(lp_edit_chunk(s->m->dit, s->cache, &s->est, s->strategy, &s->plan, chunk * CHUNK_LATENTS, CHUNK_LATENTS,
                         x, keep, merge_dst, chunk_noise_fn, &cn));
    cs->seconds_dit = lp_seconds() - t0;
    cs->prompt_version = s->prompt_version;
    note_memory(s, s->m->be);
    cs->seconds_total = cs->seconds_encode + cs->seconds_mask + cs->seconds_dit; /* the decoder adds its time */
    pthread_mutex_lock(&s->mu);
    lp_status st = push_stats(s, cs);
    pthread_mutex_unlock(&s->mu);
    if (st != LP_OK) return st;
    return submit_decode(s, x, cs->frames, chunk);
}

/* The slot being filled is complete (n_in real frames): pads it to the
 * chunk's size with its last frame and hands it to the encoder. */
static void queue_chunk(lipar_session *s) {
    int chunk = s->n_queued, need = chunk_frames(s, chunk);
    encode_slot *e = &s->slots[chunk % ENCODE_SLOTS];
    for (int i = s->n_in; i < need; i++) memcpy(frame_at(s, e->frames, i), frame_at(s, e->frames, s->n_in - 1), s->frame_bytes);
    e->cs = (lipar_chunk_stats){.chunk = chunk, .frames = s->n_in};
    e->cs.first_frame = chunk == 0 ? 0 : chunk_frames(s, 0) + (chunk - 1) * 12;
    s->n_in = 0;
    pthread_mutex_lock(&s->mu);
    s->n_queued++;
    pthread_cond_signal(&s->chunk_queued);
    pthread_mutex_unlock(&s->mu);
}

/* Keeps the latents of slot e for the batch mask. */
static lp_status keep_for_batch(lipar_session *s, const encode_slot *e) {
    if (s->n_pending == s->cap_pending) {
        int cap = s->cap_pending ? 2 * s->cap_pending : 16;
        pending_chunk *np = realloc(s->pending, (size_t)cap * sizeof *np);
        if (!np) return lp_fail(LP_ERR_NOMEM, "out of memory");
        s->pending = np;
        s->cap_pending = cap;
    }
    float *copy = malloc((size_t)s->latent_elems * sizeof *copy);
    if (!copy) return lp_fail(LP_ERR_NOMEM, "out of memory keeping latents for the batch mask");
    memcpy(copy, e->latents, (size_t)s->latent_elems * sizeof *copy);
    s->pending[s->n_pending++] = (pending_chunk){copy, e->cs.frames};
    return LP_OK;
}

/* Edits the oldest encoded chunk the DiT has not taken, or keeps its latents
 * for the batch mask. */
static lp_status take_encoded(lipar_session *s) {
    encode_slot *e = &s->slots[s->n_taken % ENCODE_SLOTS];
    if (per_chunk_strategy(s))
        return edit_chunk(s, e->latents, e->keep, s->strategy == LP_PRUNE_TOME ? e->merge_dst : NULL, e->noise,
                          &e->cs);
    if (s->o.batch_mask) return keep_for_batch(s, e);
    return edit_chunk(s, e->latents, s->strategy == LP_PRUNE_NONE ? NULL : e->keep, NULL, e->noise, &e->cs);
}

/* Marks the oldest chunk as taken: its slot may be refilled (call with mu held). */
static void chunk_done(lipar_session *s) {
    s->n_taken++;
    pthread_cond_broadcast(&s->chunk_taken);
}

static void *editor_main(void *arg) {
    lipar_session *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->n_taken == s->n_encoded && !s->stopping) pthread_cond_wait(&s->chunk_encoded, &s->mu);
        if (s->stopping) break;
        int failed = s->thread_status != LP_OK; /* after a failure, chunks pass through unedited */
        pthread_mutex_unlock(&s->mu);
        lp_status st = failed ? LP_OK : take_encoded(s);
        pthread_mutex_lock(&s->mu);
        thread_failed(s, st);
        chunk_done(s);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Waits until every queued chunk is edited: by the DiT thread, or here
 * without one (each chunk once it is encoded). */
static lp_status edit_queued(lipar_session *s) {
    pthread_mutex_lock(&s->mu);
    lp_status st = LP_OK;
    while (s->n_taken < s->n_queued && st == LP_OK) {
        if (s->overlap) {
            pthread_cond_wait(&s->chunk_taken, &s->mu);
            continue;
        }
        while (s->n_encoded <= s->n_taken && s->thread_status == LP_OK) pthread_cond_wait(&s->chunk_encoded, &s->mu);
        if ((st = thread_failure(s)) != LP_OK) break;
        pthread_mutex_unlock(&s->mu);
        st = take_encoded(s);
        pthread_mutex_lock(&s->mu);
        chunk_done(s);
    }
    if (st == LP_OK) st = thread_failure(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* Waits until the slot of chunk n_queued is free (ENCODE_SLOTS chunks back
 * is edited). */
static lp_status wait_for_slot(lipar_session *s) {
    pthread_mutex_lock(&s->mu);
    while (s->n_queued - s->n_taken >= ENCODE_SLOTS) pthread_cond_wait(&s->chunk_taken, &s->mu);
    lp_status st = thread_failure(s);
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* The frame format of a push or pull call against the session's. */
static lp_status check_format(const lipar_session *s, int rgb24, const char *call) {
    if (s->rgb24 == rgb24) return LP_OK;
    return lp_fail(LP_ERR_ARG, "%s on a session whose frames are %s (lipar_session_options.rgb24_frames = %d)", call,
                   s->rgb24 ? "packed bytes" : "planar floats", s->rgb24);
}

static lp_status push_frame(lipar_session *s, const void *frame) {
    if (s->finished) return lp_fail(LP_ERR_ARG, "frame pushed after lipar_session_finish");
    LP_TRY(s->n_in == 0 ? wait_for_slot(s) : pipeline_failure(s));
    encode_slot *e = &s->slots[s->n_queued % ENCODE_SLOTS];
    memcpy(frame_at(s, e->frames, (size_t)s->n_in), frame, s->frame_bytes);
    if (++s->n_in < chunk_frames(s, s->n_queued)) return LP_OK;
    queue_chunk(s);
    return s->overlap ? LP_OK : edit_queued(s);
}

lipar_status lipar_session_push(lipar_session *s, const float *rgb) {
    lp_status st = check_format(s, 0, "lipar_session_push");
    return (lipar_status)(st != LP_OK ? st : push_frame(s, rgb));
}

lipar_status lipar_session_push_rgb24(lipar_session *s, const uint8_t *rgb) {
    lp_status st = check_format(s, 1, "lipar_session_push_rgb24");
    return (lipar_status)(st != LP_OK ? st : push_frame(s, rgb));
}

/* The batch mask over every pending chunk, then their edits in order. */
static lp_status run_batch(lipar_session *s) {
    int T = s->n_pending * CHUNK_LATENTS;
    int64_t lat = (int64_t)s->C * s->lh * s->lw;
    float *all = malloc((size_t)T * (size_t)lat * sizeof *all);
    uint8_t *keep = malloc((size_t)T * (size_t)s->patches);
    lp_status st = LP_OK;
    if (!all || !keep) st = lp_fail(LP_ERR_NOMEM, "out of memory for the batch mask");
    for (int i = 0; st == LP_OK && i < s->n_pending; i++)
        memcpy(all + (int64_t)i * CHUNK_LATENTS * lat, s->pending[i].latents, (size_t)s->latent_elems * sizeof *all);
    double t0 = lp_seconds();
    if (st == LP_OK && s->strategy != LP_PRUNE_NONE)
        st = lp_mask_compute(&s->mopts, all, T, s->lh, s->lw, keep, NULL, NULL);
    double mask_seconds = (lp_seconds() - t0) / (s->n_pending ? s->n_pending : 1);
    for (int i = 0; st == LP_OK && i < s->n_pending; i++) {
        lipar_chunk_stats cs = {.chunk = i, .frames = s->pending[i].frames, .seconds_mask = mask_seconds};
        cs.first_frame = i == 0 ? 0 : chunk_frames(s, 0) + (i - 1) * 12;
        const uint8_t *k = s->strategy != LP_PRUNE_NONE ? keep + (int64_t)i * CHUNK_LATENTS * s->patches : NULL;
        st = edit_chunk(s, s->pending[i].latents, k, NULL, NULL, &cs);
    }
    for (int i = 0; i < s->n_pending; i++) free(s->pending[i].latents);
    s->n_pending = 0;
    free(all);
    free(keep);
    return st;
}

lipar_status lipar_session_finish(lipar_session *s) {
    if (s->finished) return LIPAR_OK;
    s->finished = 1;
    lp_status st = pipeline_failure(s);
    if (st == LP_OK && s->n_in > 0) queue_chunk(s);
    if (st == LP_OK) st = edit_queued(s);
    if (st == LP_OK && s->o.batch_mask) st = run_batch(s);
    if (st == LP_OK) st = drain_decoder(s);
    return (lipar_status)st;
}

static lp_status pull_frame(lipar_session *s, void *rgb, int *got) {
    *got = 0;
    pthread_mutex_lock(&s->mu);
    lp_status st = thread_failure(s);
    if (st == LP_OK && s->out_count) {
        memcpy(rgb, frame_at(s, s->out, (size_t)s->out_head), s->frame_bytes);
        s->out_head = (s->out_head + 1) % s->out_cap;
        s->out_count--;
        *got = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

lipar_status lipar_session_pull(lipar_session *s, float *rgb, int *got) {
    *got = 0;
    lp_status st = check_format(s, 0, "lipar_session_pull");
    return (lipar_status)(st != LP_OK ? st : pull_frame(s, rgb, got));
}

lipar_status lipar_session_pull_rgb24(lipar_session *s, uint8_t *rgb, int *got) {
    *got = 0;
    lp_status st = check_format(s, 1, "lipar_session_pull_rgb24");
    return (lipar_status)(st != LP_OK ? st : pull_frame(s, rgb, got));
}

lipar_status lipar_session_set_prompt(lipar_session *s, const char *prompt) {
    /* the new prompt applies from the next chunk to complete: the complete
     * chunks are edited with the current one first (so the DiT does not
     * overlap the encoder once per prompt change) */
    lp_status st = edit_queued(s);
    if (st != LP_OK) return (lipar_status)st;
    char *copy = strdup(prompt);
    if (!copy) return (lipar_status)lp_fail(LP_ERR_NOMEM, "out of memory");
    st = encode_prompt(s, copy);
    if (st != LP_OK) {
        free(copy);
        return (lipar_status)st;
    }
    free(s->prompt);
    s->prompt = copy;
    s->prompt_version++;
    return LIPAR_OK;
}

int lipar_session_chunks(const lipar_session *s) {
    lipar_session *m = (lipar_session *)s; /* the lock is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    int n = s->n_stats;
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t lipar_session_peak_device_memory(const lipar_session *s) {
    lipar_session *m = (lipar_session *)s; /* the lock is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    size_t peak = s->peak_device_bytes;
    pthread_mutex_unlock(&m->mu);
    return peak;
}

lipar_status lipar_session_chunk_stats(const lipar_session *s, int i, lipar_chunk_stats *out) {
    lipar_session *m = (lipar_session *)s; /* the lock is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    lp_status st = LP_OK;
    if (i < 0 || i >= s->n_stats) st = lp_fail(LP_ERR_ARG, "chunk %d: %d chunks are done", i, s->n_stats);
    else *out = s->stats[i];
    pthread_mutex_unlock(&m->mu);
    return (lipar_status)st;
}

const uint8_t *lipar_session_keep_mask(const lipar_session *s, int i, int j) {
    lipar_session *m = (lipar_session *)s; /* the lock is not part of the logical state */
    pthread_mutex_lock(&m->mu);
    int n = s->n_stats;
    pthread_mutex_unlock(&m->mu);
    /* the DiT writes the slot of chunk n next: MASK_HISTORY − KEEP_MASKS chunks of margin */
    if (i < 0 || i >= n || i < n - KEEP_MASKS || j < 0 || j >= CHUNK_LATENTS) return NULL;
    return s->keep_history + ((size_t)(i % MASK_HISTORY) * CHUNK_LATENTS + (size_t)j) * (size_t)s->patches;
}
