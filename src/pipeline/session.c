/* lipar_session: the streaming editing loop (ARCHITECTURE.md "What flows
 * through it"). Input frames are gathered into chunks (12 frames = 3 latent
 * frames; the Wan VAE's first chunk is 9 = 1 + 4·2), encoded, masked and
 * edited by lp_edit_chunk on the caller's thread; the edited latents go to a
 * decoder thread (its own backend instance: its own stream on a GPU), so that
 * the decode of chunk n runs while the DiT works on chunk n+1. Decoded frames
 * wait in a queue to be pulled. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/prng.h"
#include "../prune/alternatives.h"
#include "../prune/mask.h"
#include "edit.h"
#include "model_bundle.h"

#define CHUNK_LATENTS 3
#define MASK_HISTORY 8
#define DECODE_QUEUE 2 /* edited chunks waiting for the decoder */

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
    lp_dit_cache *cache;
    lp_edit_state est;
    lp_mask_opts mopts;
    lp_mask_stream *mstream;
    lp_taehv_encoder *tenc;
    lp_taehv_decoder *tdec;
    lp_wan_vae_encoder *wenc;
    lp_wan_vae_decoder *wdec;
    int C, lh, lw;             /* latent frame [C, lh, lw] */
    int64_t frame_px, latent_elems, patches;
    float *in_frames;          /* the current chunk's input, [12][3][H][W] */
    int n_in;
    float *work;               /* [12][3][H][W] scratch for VAE conversions and decoded frames */
    float *latents, *eps;      /* one chunk's latents and noise */
    uint8_t *keep;             /* one chunk's token mask */
    int32_t *merge_dst;        /* one chunk's merge plan (tome) */
    /* batch mask mode: every chunk's latents until finish */
    pending_chunk *pending;
    int n_pending, cap_pending;
    /* output queue */
    float *out;
    int out_head, out_count, out_cap;
    lipar_chunk_stats *stats;
    int n_stats, cap_stats;
    uint8_t *keep_history;     /* [MASK_HISTORY][3][patches] */
    size_t peak_device_bytes;
    /* the decoder thread; mu guards the jobs, the output queue, the stats and
     * the decoder's status */
    pthread_t decoder;
    int decoder_started, decoder_stop;
    pthread_mutex_t mu;
    pthread_cond_t job_ready, job_done;
    decode_job jobs[DECODE_QUEUE];
    int jobs_head, jobs_count;
    float *decoded;            /* the decoder thread's [12][3][H][W] */
    lp_status decode_status;   /* first failure of the decoder thread */
    char decode_error[1024];
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

static int chunks_started(const lipar_session *s) { return s->n_stats + s->n_pending; }

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
        LP_TRY(lp_wan_vae_encoder_open(m->wan, H, W, m->be->pool, &s->wenc));
        LP_TRY(lp_wan_vae_decoder_open(m->wan, H, W, 1, m->vae_be->pool, &s->wdec));
        int scale = lp_wan_vae_scale(m->wan);
        s->C = lp_wan_vae_config_of(m->wan)->z_dim;
        s->lh = H / scale;
        s->lw = W / scale;
    }
    return LP_OK;
}

static lp_status enqueue(lipar_session *s, const float *frames, int n);

/* Decodes one job into s->decoded; returns the number of frames made. */
static lp_status decode_job_run(lipar_session *s, const decode_job *job, int *got) {
    *got = 0;
    if (s->tdec) return lp_taehv_decoder_push(s->tdec, job->latents, CHUNK_LATENTS, s->decoded, 12, got);
    LP_TRY(lp_wan_vae_decode(s->wdec, job->latents, CHUNK_LATENTS, s->decoded, got));
    for (int64_t i = 0; i < *got * s->frame_px; i++) s->decoded[i] = 0.5f * (s->decoded[i] + 1.0f); /* [−1,1]→[0,1] */
    return LP_OK;
}

static void *decoder_main(void *arg) {
    lipar_session *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->jobs_count && !s->decoder_stop) pthread_cond_wait(&s->job_ready, &s->mu);
        if (!s->jobs_count) break; /* stopped with nothing left */
        decode_job *job = &s->jobs[s->jobs_head];
        pthread_mutex_unlock(&s->mu);
        double t0 = lp_seconds();
        int got = 0;
        lp_status st = s->decode_status == LP_OK ? decode_job_run(s, job, &got) : s->decode_status;
        if (st == LP_OK && got < job->frames)
            st = lp_fail(LP_ERR_SHAPE, "the VAE decoded %d frames, expected %d", got, job->frames);
        double dt = lp_seconds() - t0;
        pthread_mutex_lock(&s->mu);
        if (st == LP_OK) st = enqueue(s, s->decoded, job->frames);
        if (st != LP_OK && s->decode_status == LP_OK) { /* lp_last_error is per thread: keep the message */
            s->decode_status = st;
            snprintf(s->decode_error, sizeof s->decode_error, "%s", lp_last_error());
        }
        if (job->chunk < s->n_stats) {
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

static lp_status start_decoder(lipar_session *s) {
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->job_ready, NULL);
    pthread_cond_init(&s->job_done, NULL);
    s->decoder_started = 1; /* the mutex and conditions exist from here on */
    if (pthread_create(&s->decoder, NULL, decoder_main, s) != 0) {
        s->decoder_started = 0;
        return lp_fail(LP_ERR_NOMEM, "cannot start the decoder thread");
    }
    s->decoder_started = 2;
    return LP_OK;
}

/* Lets the decoder finish its jobs and joins it. */
static void stop_decoder(lipar_session *s) {
    if (s->decoder_started == 2) {
        pthread_mutex_lock(&s->mu);
        s->decoder_stop = 1;
        pthread_cond_broadcast(&s->job_ready);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->decoder, NULL);
    }
    if (s->decoder_started) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->job_ready);
        pthread_cond_destroy(&s->job_done);
    }
    s->decoder_started = 0;
}

/* The decoder's failure, raised on the caller's thread (call with mu held). */
static lp_status decoder_failure(const lipar_session *s) {
    return s->decode_status == LP_OK ? LP_OK : lp_fail(s->decode_status, "%s", s->decode_error);
}

/* Hands the edited latents of chunk `chunk` to the decoder, waiting while its
 * queue is full. */
static lp_status submit_decode(lipar_session *s, const float *latents, int frames, int chunk) {
    pthread_mutex_lock(&s->mu);
    while (s->jobs_count == DECODE_QUEUE && s->decode_status == LP_OK) pthread_cond_wait(&s->job_done, &s->mu);
    lp_status st = decoder_failure(s);
    if (st == LP_OK) {
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
    while (s->jobs_count && s->decode_status == LP_OK) pthread_cond_wait(&s->job_done, &s->mu);
    lp_status st = decoder_failure(s);
    pthread_mutex_unlock(&s->mu);
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
    s->o = *o;
    s->o.strategy = NULL;
    s->o.prompt = NULL;
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
        if (!o->batch_mask) st = lp_mask_stream_open(&s->mopts, s->lh, s->lw, &s->mstream);
    }
    if (st == LP_OK) {
        s->frame_px = (int64_t)3 * o->height * o->width;
        s->latent_elems = (int64_t)CHUNK_LATENTS * s->C * s->lh * s->lw;
        s->patches = (int64_t)(s->lh / 2) * (s->lw / 2);
        s->in_frames = malloc((size_t)(12 * s->frame_px) * sizeof(float));
        s->work = malloc((size_t)(12 * s->frame_px) * sizeof(float));
        s->latents = malloc((size_t)s->latent_elems * sizeof(float));
        s->eps = malloc((size_t)s->latent_elems * sizeof(float));
        s->keep_history = calloc((size_t)(MASK_HISTORY * CHUNK_LATENTS * s->patches), 1);
        s->keep = malloc((size_t)(CHUNK_LATENTS * s->patches));
        s->merge_dst = malloc((size_t)(CHUNK_LATENTS * s->patches) * sizeof *s->merge_dst);
        s->prompt = strdup(o->prompt ? o->prompt : "");
        s->decoded = malloc((size_t)(12 * s->frame_px) * sizeof(float));
        int jobs_ok = 1;
        for (int i = 0; i < DECODE_QUEUE; i++)
            jobs_ok &= (s->jobs[i].latents = malloc((size_t)s->latent_elems * sizeof(float))) != NULL;
        if (!s->in_frames || !s->work || !s->latents || !s->eps || !s->keep_history || !s->prompt || !s->keep ||
            !s->merge_dst || !s->decoded || !jobs_ok)
            st = lp_fail(LP_ERR_NOMEM, "out of memory for a %dx%d session", o->width, o->height);
    }
    if (st == LP_OK) st = encode_prompt(s, s->prompt);
    if (st == LP_OK) st = start_decoder(s);
    if (st != LP_OK) {
        lipar_session_close(s);
        return (lipar_status)st;
    }
    *out = s;
    return LIPAR_OK;
}

void lipar_session_close(lipar_session *s) {
    if (!s) return;
    stop_decoder(s);
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
    free(s->in_frames);
    free(s->work);
    free(s->latents);
    free(s->eps);
    free(s->out);
    free(s->stats);
    free(s->keep_history);
    free(s->keep);
    free(s->merge_dst);
    free(s->prompt);
    free(s);
}

/* Encodes n input frames (a whole chunk) into s->latents. */
static lp_status encode_chunk(lipar_session *s, const float *frames, int n) {
    int got = 0;
    if (s->tenc) {
        LP_TRY(lp_taehv_encoder_push(s->tenc, frames, n, s->latents, CHUNK_LATENTS, &got));
    } else {
        for (int64_t i = 0; i < n * s->frame_px; i++) s->work[i] = 2.0f * frames[i] - 1.0f; /* Wan: [−1, 1] */
        LP_TRY(lp_wan_vae_encode(s->wenc, s->work, n, s->latents, &got));
    }
    if (got != CHUNK_LATENTS)
        return lp_fail(LP_ERR_SHAPE, "the VAE made %d latent frames from %d frames, expected %d", got, n,
                       CHUNK_LATENTS);
    return LP_OK;
}

static lp_status enqueue(lipar_session *s, const float *frames, int n) {
    if (s->out_count + n > s->out_cap) {
        int cap = s->out_cap ? s->out_cap : 16;
        while (cap < s->out_count + n) cap *= 2;
        float *no = malloc((size_t)cap * (size_t)s->frame_px * sizeof *no);
        if (!no) return lp_fail(LP_ERR_NOMEM, "out of memory queueing output frames");
        for (int i = 0; i < s->out_count; i++)
            memcpy(no + i * s->frame_px, s->out + ((s->out_head + i) % s->out_cap) * s->frame_px,
                   (size_t)s->frame_px * sizeof *no);
        free(s->out);
        s->out = no;
        s->out_cap = cap;
        s->out_head = 0;
    }
    for (int i = 0; i < n; i++)
        memcpy(s->out + ((s->out_head + s->out_count + i) % s->out_cap) * s->frame_px, frames + i * s->frame_px,
               (size_t)s->frame_px * sizeof *frames);
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

/* Edits the chunk whose latents are in s->latents with keep (NULL = all) or
 * the merge plan, records its statistics and hands the edited latents to the
 * decoder thread, which queues the chunk's first `frames` output frames. */
static lp_status edit_chunk(lipar_session *s, const uint8_t *keep, const int32_t *merge_dst, int frames,
                            lipar_chunk_stats *cs) {
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
    lp_prng_noise pn = {s->o.seed, s->m->be->pool};
    LP_TRY(lp_prng_noise_fn(&pn, chunk, -1, s->eps, n));
    lp_flow_add_noise(s->latents, s->latents, s->eps, s->plan.sigmas[0], n);
    double t0 = lp_seconds();
    LP_TRY(lp_edit_chunk(s->m->dit, s->cache, &s->est, s->strategy, &s->plan, chunk * CHUNK_LATENTS, CHUNK_LATENTS,
                         s->latents, keep, merge_dst, lp_prng_noise_fn, &pn, NULL));
    cs->seconds_dit = lp_seconds() - t0;
    cs->prompt_version = s->prompt_version;
    size_t used = s->m->be->memory_in_use(s->m->be);
    if (used > s->peak_device_bytes) s->peak_device_bytes = used;
    cs->seconds_total = cs->seconds_encode + cs->seconds_mask + cs->seconds_dit; /* the decoder adds its time */
    pthread_mutex_lock(&s->mu);
    lp_status st = push_stats(s, cs);
    pthread_mutex_unlock(&s->mu);
    if (st != LP_OK) return st;
    return submit_decode(s, s->latents, frames, chunk);
}

/* The token reduction of chunk `chunk` from its clean latents (s->latents)
 * for the per-chunk strategies: tome's merge plan (with keep = not merged, for
 * the statistics) or importance's mask. */
static lp_status plan_alternative(lipar_session *s, int chunk, uint8_t *keep, int32_t *merge_dst) {
    if (s->strategy == LP_PRUNE_IMPORTANCE)
        return lp_importance_mask(s->latents, CHUNK_LATENTS, s->C, s->lh, s->lw, s->o.prune_fraction, chunk == 0, keep);
    LP_TRY(lp_tome_plan(s->latents, CHUNK_LATENTS, s->C, s->lh, s->lw, s->o.prune_fraction, merge_dst));
    for (int64_t i = 0; i < CHUNK_LATENTS * s->patches; i++) keep[i] = merge_dst[i] < 0;
    return LP_OK;
}

static int per_chunk_strategy(const lipar_session *s) {
    return s->strategy == LP_PRUNE_TOME || s->strategy == LP_PRUNE_IMPORTANCE;
}

/* The current chunk's input is complete (n_real real frames, padded to the
 * chunk size): encode it, then edit it now (streaming mask) or keep its
 * latents for the batch mask. */
static lp_status process_input_chunk(lipar_session *s, int n_real) {
    int chunk = chunks_started(s), need = chunk_frames(s, chunk);
    for (int i = s->n_in; i < need; i++) /* pad a short last chunk with its last frame */
        memcpy(s->in_frames + i * s->frame_px, s->in_frames + (s->n_in - 1) * s->frame_px,
               (size_t)s->frame_px * sizeof(float));
    lipar_chunk_stats cs = {.chunk = chunk, .frames = n_real};
    cs.first_frame = chunk == 0 ? 0 : chunk_frames(s, 0) + (chunk - 1) * 12;
    double t0 = lp_seconds();
    LP_TRY(encode_chunk(s, s->in_frames, need));
    cs.seconds_encode = lp_seconds() - t0;
    s->n_in = 0;
    if (per_chunk_strategy(s)) {
        t0 = lp_seconds();
        LP_TRY(plan_alternative(s, chunk, s->keep, s->merge_dst));
        cs.seconds_mask = lp_seconds() - t0;
        return edit_chunk(s, s->keep, s->strategy == LP_PRUNE_TOME ? s->merge_dst : NULL, n_real, &cs);
    }
    if (s->o.batch_mask) {
        if (s->n_pending == s->cap_pending) {
            int cap = s->cap_pending ? 2 * s->cap_pending : 16;
            pending_chunk *np = realloc(s->pending, (size_t)cap * sizeof *np);
            if (!np) return lp_fail(LP_ERR_NOMEM, "out of memory");
            s->pending = np;
            s->cap_pending = cap;
        }
        float *copy = malloc((size_t)s->latent_elems * sizeof *copy);
        if (!copy) return lp_fail(LP_ERR_NOMEM, "out of memory keeping latents for the batch mask");
        memcpy(copy, s->latents, (size_t)s->latent_elems * sizeof *copy);
        s->pending[s->n_pending++] = (pending_chunk){copy, n_real};
        return LP_OK;
    }
    if (s->strategy == LP_PRUNE_NONE) return edit_chunk(s, NULL, NULL, n_real, &cs);
    t0 = lp_seconds();
    LP_TRY(lp_mask_stream_push_chunk(s->mstream, s->latents, CHUNK_LATENTS, s->keep));
    cs.seconds_mask = lp_seconds() - t0;
    return edit_chunk(s, s->keep, NULL, n_real, &cs);
}

lipar_status lipar_session_push(lipar_session *s, const float *rgb) {
    if (s->finished) return (lipar_status)lp_fail(LP_ERR_ARG, "frame pushed after lipar_session_finish");
    memcpy(s->in_frames + s->n_in * s->frame_px, rgb, (size_t)s->frame_px * sizeof *rgb);
    s->n_in++;
    if (s->n_in < chunk_frames(s, chunks_started(s))) return LIPAR_OK;
    return (lipar_status)process_input_chunk(s, s->n_in);
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
        memcpy(s->latents, s->pending[i].latents, (size_t)s->latent_elems * sizeof *all);
        lipar_chunk_stats cs = {.chunk = i, .frames = s->pending[i].frames, .seconds_mask = mask_seconds};
        cs.first_frame = i == 0 ? 0 : chunk_frames(s, 0) + (i - 1) * 12;
        const uint8_t *k = s->strategy != LP_PRUNE_NONE ? keep + (int64_t)i * CHUNK_LATENTS * s->patches : NULL;
        st = edit_chunk(s, k, NULL, s->pending[i].frames, &cs);
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
    lp_status st = LP_OK;
    if (s->n_in > 0) st = process_input_chunk(s, s->n_in);
    if (st == LP_OK && s->o.batch_mask) st = run_batch(s);
    if (st == LP_OK) st = drain_decoder(s);
    return (lipar_status)st;
}

lipar_status lipar_session_pull(lipar_session *s, float *rgb, int *got) {
    *got = 0;
    pthread_mutex_lock(&s->mu);
    lp_status st = decoder_failure(s);
    if (st == LP_OK && s->out_count) {
        memcpy(rgb, s->out + s->out_head * s->frame_px, (size_t)s->frame_px * sizeof *rgb);
        s->out_head = (s->out_head + 1) % s->out_cap;
        s->out_count--;
        *got = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return (lipar_status)st;
}

lipar_status lipar_session_set_prompt(lipar_session *s, const char *prompt) {
    char *copy = strdup(prompt);
    if (!copy) return (lipar_status)lp_fail(LP_ERR_NOMEM, "out of memory");
    lp_status st = encode_prompt(s, copy);
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

size_t lipar_session_peak_device_memory(const lipar_session *s) { return s->peak_device_bytes; }

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
    if (i < 0 || i >= s->n_stats || i < s->n_stats - MASK_HISTORY || j < 0 || j >= CHUNK_LATENTS) return NULL;
    return s->keep_history + ((size_t)(i % MASK_HISTORY) * CHUNK_LATENTS + (size_t)j) * (size_t)s->patches;
}
