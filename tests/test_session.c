/* The session API with the embedded demonstration model:
 * - with encoder_overlap (the encoder one chunk ahead of the DiT) the session
 *   gives the same frames, statistics and masks as without (each chunk
 *   encoded, then edited, before the push that completes it returns), bit
 *   for bit, for every strategy, with prompt changes and a partial last
 *   chunk;
 * - when chunks are edited: on the session's DiT thread, never before they
 *   are complete, with the overlap; before the push that completes them
 *   returns without it (the CPU's default); the complete ones before a
 *   prompt change;
 * - closing with chunks in flight, pushing after finish;
 * - byte frames (rgb24_frames) give the float session's output rounded to
 *   bytes, and a call of the other format is refused;
 * - the warm-up at open (warm_up) leaves the output unchanged (also with
 *   the Wan VAE, from the golden files where ../shared is present). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../include/lipar.h"
#include "../src/base/pixels.h"
#include "test_util.h"

#define W 96
#define H 64
#define PX (3 * W * H)

/* Frame t: a texture with a bar moving across it, enough motion for a
 * partial keep-mask at the thresholds below. */
static void make_frame(int t, float *rgb) {
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float v = 0.5f + 0.3f * sinf(0.2f * (float)x + 0.1f * (float)y + 1.3f * (float)c);
                int x0 = (3 * t) % W;
                if (x >= x0 && x < x0 + W / 3 && y > H / 4 && y < 3 * H / 4) v = c ? 0.1f : 0.9f;
                rgb[(c * H + y) * W + x] = v;
            }
}

static lipar_model *demo_model(void) {
    lipar_model_options mo;
    lipar_model_options_default(&mo);
    mo.threads = 2;
    lipar_model *m = NULL;
    if (lipar_model_load(&mo, &m) != LIPAR_OK) fprintf(stderr, "  %s\n", lipar_last_error());
    return m;
}

static lipar_session_options options(const char *strategy, int batch_mask, int encoder_overlap) {
    lipar_session_options so;
    lipar_session_options_default(&so);
    so.width = W;
    so.height = H;
    so.strategy = strategy;
    so.batch_mask = batch_mask;
    so.encoder_overlap = encoder_overlap;
    so.tau = 0.01f;
    so.tau2 = 0.05f;
    so.prompt = "first";
    return so;
}

/* Pulls every ready frame into out (room for `cap` frames) after *n. */
static int pull_all(lipar_session *s, float *out, int cap, int *n) {
    float rgb[PX];
    for (;;) {
        int got;
        CHECK(lipar_session_pull(s, rgb, &got) == LIPAR_OK, "%s", lipar_last_error());
        if (!got) return 0;
        CHECK(*n < cap, "more frames out than in");
        memcpy(out + (size_t)(*n)++ * PX, rgb, sizeof rgb);
    }
}

typedef struct {
    float *frames; /* [FRAMES][3][H][W] */
    int n_frames, n_chunks;
    lipar_chunk_stats stats[8];
    uint8_t masks[8][3][(H / 16) * (W / 16)];
} run_result;

#define FRAMES 40 /* 3 chunks and a partial one of 4 frames */

/* 40 frames with prompt changes before frames 20 and 30. */
static int run(lipar_model *m, const lipar_session_options *so, run_result *r) {
    lipar_session *s;
    CHECK(lipar_session_open(m, so, &s) == LIPAR_OK, "%s", lipar_last_error());
    float rgb[PX];
    r->n_frames = 0;
    for (int t = 0; t < FRAMES; t++) {
        if (t == 20) CHECK(lipar_session_set_prompt(s, "second prompt") == LIPAR_OK, "%s", lipar_last_error());
        if (t == 30) CHECK(lipar_session_set_prompt(s, "third") == LIPAR_OK, "%s", lipar_last_error());
        make_frame(t, rgb);
        CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
        CHECK(!pull_all(s, r->frames, FRAMES, &r->n_frames));
    }
    CHECK(lipar_session_finish(s) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(!pull_all(s, r->frames, FRAMES, &r->n_frames));
    r->n_chunks = lipar_session_chunks(s);
    CHECK(r->n_chunks == 4, "%d chunks", r->n_chunks);
    for (int i = 0; i < r->n_chunks; i++) {
        CHECK(lipar_session_chunk_stats(s, i, &r->stats[i]) == LIPAR_OK);
        for (int j = 0; j < 3; j++) {
            const uint8_t *k = lipar_session_keep_mask(s, i, j);
            CHECK(k != NULL);
            memcpy(r->masks[i][j], k, sizeof r->masks[i][j]);
        }
    }
    lipar_session_close(s);
    return 0;
}

static int test_overlap_equals_serial(void) {
    lipar_model *m = demo_model();
    CHECK(m != NULL);
    static const struct {
        const char *strategy;
        int batch_mask;
    } cases[] = {{"lipar", 0}, {"none", 0}, {"tome", 0}, {"importance", 0}, {"lipar", 1}};
    run_result a = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    run_result b = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    CHECK(a.frames && b.frames);
    int partial = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        lipar_session_options pipelined = options(cases[c].strategy, cases[c].batch_mask, 1);
        lipar_session_options serial = options(cases[c].strategy, cases[c].batch_mask, -1);
        CHECK(!run(m, &pipelined, &a));
        CHECK(!run(m, &serial, &b));
        const char *name = cases[c].strategy;
        CHECK(a.n_frames == FRAMES && b.n_frames == FRAMES, "%s: %d and %d frames", name, a.n_frames, b.n_frames);
        CHECK(!memcmp(a.frames, b.frames, (size_t)FRAMES * PX * sizeof(float)), "%s: frames differ", name);
        CHECK(!memcmp(a.masks, b.masks, sizeof a.masks), "%s: masks differ", name);
        for (int i = 0; i < a.n_chunks; i++) {
            const lipar_chunk_stats *x = &a.stats[i], *y = &b.stats[i];
            CHECK(x->chunk == i && y->chunk == i && x->first_frame == 12 * i && y->first_frame == 12 * i);
            CHECK(x->frames == (i < 3 ? 12 : 4) && y->frames == x->frames);
            CHECK(!memcmp(x->kept, y->kept, sizeof x->kept) && x->kept_fraction == y->kept_fraction);
            /* frame 20 is in chunk 1, frame 30 in chunk 2; the batch mask edits
             * every chunk at finish, with the last prompt */
            static const int streaming_version[4] = {0, 1, 2, 2};
            int want = cases[c].batch_mask ? 2 : streaming_version[i];
            CHECK(x->prompt_version == want && y->prompt_version == want, "%s chunk %d: prompt versions %d, %d", name,
                  i, x->prompt_version, y->prompt_version);
            partial |= !strcmp(name, "lipar") && x->kept_fraction > 0 && x->kept_fraction < 1;
        }
    }
    CHECK(partial, "the clip gave lipar no partial mask: the comparison would not cover one");
    free(a.frames);
    free(b.frames);
    lipar_model_free(m);
    return 0;
}

/* The warm-up (the DiT on a zero chunk, TAEHV on zero frames, then
 * forgotten) must not change anything: frames, masks, statistics. */
static int test_warm_up_changes_nothing(void) {
    lipar_model *m = demo_model();
    CHECK(m != NULL);
    run_result a = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    run_result b = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    CHECK(a.frames && b.frames);
    static const char *strategies[] = {"lipar", "none"};
    for (int i = 0; i < 2; i++) {
        lipar_session_options warm = options(strategies[i], 0, 1), cold = warm;
        warm.warm_up = 1;
        cold.warm_up = -1;
        CHECK(!run(m, &warm, &a));
        CHECK(!run(m, &cold, &b));
        CHECK(a.n_frames == FRAMES && b.n_frames == FRAMES);
        CHECK(!memcmp(a.frames, b.frames, (size_t)FRAMES * PX * sizeof(float)), "%s: frames differ", strategies[i]);
        CHECK(!memcmp(a.masks, b.masks, sizeof a.masks), "%s: masks differ", strategies[i]);
        for (int c = 0; c < a.n_chunks; c++)
            CHECK(a.stats[c].kept_fraction == b.stats[c].kept_fraction, "%s: chunk %d kept", strategies[i], c);
    }
    free(a.frames);
    free(b.frames);
    lipar_model_free(m);
    return 0;
}

/* The same with the Wan VAE (the golden files' small DiT, Wan VAE and umT5),
 * whose encoder and decoder the warm-up runs on a clip of 5 frames. */
static int test_warm_up_wan_vae(void) {
    static const char *files[] = {"golden/sf_dit_t2v.safetensors", "golden/wan_vae.safetensors",
                                  "golden/umt5_tiny.safetensors", "golden/spm_unigram_600.model"};
    char *path[4] = {0};
    for (int i = 0; i < 4; i++) {
        const char *p = lp_test_shared(files[i]);
        if (!p) return lp_test_skip_shared(files[i]);
        path[i] = strdup(p);
        CHECK(path[i] != NULL);
    }
    lipar_model_options mo;
    lipar_model_options_default(&mo);
    mo.threads = 2;
    mo.dit_path = path[0];
    mo.vae_path = path[1];
    mo.vae_kind = "wan";
    mo.text_encoder_path = path[2];
    mo.tokenizer_path = path[3];
    lipar_model *m = NULL;
    CHECK(lipar_model_load(&mo, &m) == LIPAR_OK, "%s", lipar_last_error());
    run_result a = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    run_result b = {.frames = malloc((size_t)FRAMES * PX * sizeof(float))};
    CHECK(a.frames && b.frames);
    lipar_session_options warm = options("lipar", 0, 1), cold = warm;
    warm.warm_up = 1;
    cold.warm_up = -1;
    CHECK(!run(m, &warm, &a));
    CHECK(!run(m, &cold, &b));
    CHECK(a.n_frames == b.n_frames && a.n_frames > 0, "%d vs %d frames", a.n_frames, b.n_frames);
    CHECK(!memcmp(a.frames, b.frames, (size_t)a.n_frames * PX * sizeof(float)), "frames differ");
    free(a.frames);
    free(b.frames);
    for (int i = 0; i < 4; i++) free(path[i]);
    lipar_model_free(m);
    return 0;
}

static int test_when_chunks_are_edited(void) {
    lipar_model *m = demo_model();
    CHECK(m != NULL);
    float rgb[PX];
    static const int modes[] = {1, -1, 0}; /* on, off, the default (off on the CPU) */
    for (int mi = 0; mi < 3; mi++) {
        lipar_session_options so = options("lipar", 0, modes[mi]);
        int overlap = modes[mi] > 0;
        lipar_session *s;
        CHECK(lipar_session_open(m, &so, &s) == LIPAR_OK, "%s", lipar_last_error());
        for (int t = 0; t < 24; t++) {
            make_frame(t, rgb);
            CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
            int want = (t + 1) / 12, n = lipar_session_chunks(s);
            CHECK(overlap ? n <= want : n == want, "encoder_overlap %d, after %d frames: %d chunks edited, expected %s%d",
                  modes[mi], t + 1, n, overlap ? "at most " : "", want);
        }
        /* a prompt change edits the complete chunks with the old prompt first */
        CHECK(lipar_session_set_prompt(s, "second") == LIPAR_OK, "%s", lipar_last_error());
        CHECK(lipar_session_chunks(s) == 2);
        for (int t = 24; t < 30; t++) {
            make_frame(t, rgb);
            CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
        }
        CHECK(lipar_session_finish(s) == LIPAR_OK, "%s", lipar_last_error());
        CHECK(lipar_session_chunks(s) == 3);
        lipar_chunk_stats cs;
        for (int i = 0; i < 3; i++) {
            CHECK(lipar_session_chunk_stats(s, i, &cs) == LIPAR_OK);
            CHECK(cs.prompt_version == (i == 2), "chunk %d: prompt version %d", i, cs.prompt_version);
            CHECK(cs.seconds_encode > 0 && cs.seconds_dit > 0 && cs.seconds_decode > 0);
            CHECK(cs.start_encode >= 0 && cs.start_dit >= cs.start_encode + cs.seconds_encode &&
                      cs.start_decode >= cs.start_dit + cs.seconds_dit,
                  "chunk %d: stages start at %g, %g, %g s", i, cs.start_encode, cs.start_dit, cs.start_decode);
        }
        int n = 0;
        float *out = malloc((size_t)30 * PX * sizeof *out);
        CHECK(out && !pull_all(s, out, 30, &n));
        CHECK(n == 30, "%d frames out of 30", n);
        free(out);
        lipar_session_close(s);
    }
    lipar_model_free(m);
    return 0;
}

static int test_close_in_flight_and_push_after_finish(void) {
    lipar_model *m = demo_model();
    CHECK(m != NULL);
    float rgb[PX];
    lipar_session_options so = options("lipar", 0, 1);
    lipar_session *s;
    /* closed with chunks at the encoder, the DiT's queue and the decoder, no finish */
    CHECK(lipar_session_open(m, &so, &s) == LIPAR_OK, "%s", lipar_last_error());
    for (int t = 0; t < 30; t++) {
        make_frame(t, rgb);
        CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
    }
    lipar_session_close(s);
    CHECK(lipar_session_open(m, &so, &s) == LIPAR_OK, "%s", lipar_last_error());
    make_frame(0, rgb);
    CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(lipar_session_finish(s) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(lipar_session_finish(s) == LIPAR_OK);
    CHECK(lipar_session_push(s, rgb) == LIPAR_ERR_ARG);
    CHECK(strstr(lipar_last_error(), "after lipar_session_finish") != NULL, "%s", lipar_last_error());
    CHECK(lipar_session_chunks(s) == 1);
    lipar_session_close(s);
    lipar_model_free(m);
    return 0;
}

/* One session of each format over the same frames (the float session's
 * frames are the bytes' values b / 255), one after the other; a model serves
 * one session at a time. */
static int test_rgb24_frames(void) {
    lipar_model *m = demo_model();
    CHECK(m != NULL);
    lipar_session_options fo = options("lipar", 0, 1), bo = fo;
    bo.rgb24_frames = 1;
    enum { N = 24 };
    float *rgb = malloc(PX * sizeof *rgb), *fout = malloc((size_t)N * PX * sizeof *fout);
    uint8_t *bytes = malloc((size_t)N * PX), *bout = malloc((size_t)N * PX);
    CHECK(rgb && fout && bytes && bout);
    lipar_session *s;
    int nf = 0, nb = 0, got;
    CHECK(lipar_session_open(m, &fo, &s) == LIPAR_OK, "%s", lipar_last_error());
    for (int t = 0; t < N; t++) {
        make_frame(t, rgb);
        uint8_t *b = bytes + (size_t)t * PX;
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < W * H; p++) {
                b[3 * p + c] = lp_unit_to_byte(rgb[c * W * H + p]);
                rgb[c * W * H + p] = lp_byte_to_unit(b[3 * p + c]);
            }
        CHECK(lipar_session_push(s, rgb) == LIPAR_OK, "%s", lipar_last_error());
    }
    CHECK(lipar_session_finish(s) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(!pull_all(s, fout, N, &nf) && nf == N, "%d float frames", nf);
    CHECK(lipar_session_pull_rgb24(s, bout, &got) == LIPAR_ERR_ARG && strstr(lipar_last_error(), "planar floats"));
    lipar_session_close(s);
    CHECK(lipar_session_open(m, &bo, &s) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(lipar_session_push(s, rgb) == LIPAR_ERR_ARG && strstr(lipar_last_error(), "packed bytes"),
          "a float frame pushed into a byte session");
    for (int t = 0; t < N; t++)
        CHECK(lipar_session_push_rgb24(s, bytes + (size_t)t * PX) == LIPAR_OK, "%s", lipar_last_error());
    CHECK(lipar_session_finish(s) == LIPAR_OK, "%s", lipar_last_error());
    for (;;) {
        CHECK(lipar_session_pull_rgb24(s, bout + (size_t)nb * PX, &got) == LIPAR_OK, "%s", lipar_last_error());
        if (!got) break;
        CHECK(++nb <= N, "more frames out than in");
    }
    CHECK(nb == N, "%d byte frames", nb);
    CHECK(lipar_session_pull(s, rgb, &got) == LIPAR_ERR_ARG);
    lipar_session_close(s);
    size_t bad = 0;
    for (int t = 0; t < N; t++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < W * H; p++)
                bad += bout[(size_t)t * PX + 3 * p + c] != lp_unit_to_byte(fout[(size_t)t * PX + c * W * H + p]);
    CHECK(!bad, "%zu of %d bytes differ from the float session's", bad, N * PX);
    free(rgb), free(fout), free(bytes), free(bout);
    lipar_model_free(m);
    return 0;
}

int main(void) {
    lp_test_run("encoder_overlap on == off, bit for bit, every strategy", test_overlap_equals_serial);
    lp_test_run("chunks are edited on the DiT thread with the overlap, in the push without, before a prompt change",
                test_when_chunks_are_edited);
    lp_test_run("close with chunks in flight; push after finish", test_close_in_flight_and_push_after_finish);
    lp_test_run("byte frames == float frames rounded; the other format refused", test_rgb24_frames);
    lp_test_run("the warm-up at open changes nothing", test_warm_up_changes_nothing);
    lp_test_run("the warm-up at open changes nothing with the Wan VAE", test_warm_up_wan_vae);
    return lp_test_finish();
}
