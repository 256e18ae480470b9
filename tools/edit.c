/* `lipar edit INPUT -p PROMPT -o OUTPUT`: the main job. Reads a video (file or
 * pipe), edits it chunk by chunk through a lipar_session, writes the edited
 * video as chunks complete, with optional side-by-side view, per-chunk
 * statistics (JSON) and a plot. Ctrl-C finishes the current chunk and closes
 * the outputs so that what was written stays playable. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../include/lipar.h"
#include "../src/base/clock.h"
#include "../src/io/rawvideo.h"
#include "../src/io/video.h"
#include "plot.h"

#define MAX_PROMPT_CHANGES 64

typedef struct {
    int frame;
    const char *text;
} prompt_change;

typedef struct {
    const char *input, *output, *prompt, *prompt_file, *side_by_side, *stats, *plot;
    const char *model_dir, *demo;
    lipar_model_options mo;
    lipar_session_options so;
    lp_video_fit fit;
    double fps;
    int quiet, size_given, max_frames;
    prompt_change changes[MAX_PROMPT_CHANGES];
    int n_changes;
    char *prompt_owned;
} edit_args;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: lipar edit INPUT -p PROMPT -o OUTPUT [options]\n"
            "  INPUT / OUTPUT      video files; '-' = stdin/stdout (y4m); .rgb = raw rgb24 (as input: frames of\n"
            "                      --size at --fps). A build without FFmpeg (VIDEO=0) reads and writes only\n"
            "                      .y4m (4:2:0) and .rgb, and does not resize: give the input's size with --size\n"
            "  -p, --prompt TEXT   the editing prompt;  --prompt-file FILE  read it from a file\n"
            "  --prompt-at F:TEXT  switch to TEXT from input frame F on (repeatable; from the next chunk)\n"
            "model (none given: the embedded random-weight demonstration model):\n"
            "  --demo small|full   which one: small (default; runs at 416x240) or random weights at the\n"
            "                      published sizes (DiT 30x1536, TAEHV; 832x480), for benchmarks\n"
            "  --model DIR         a directory laid out as downloaded (see README)\n"
            "  --dit FILE          Self-Forcing .pt or Wan2.1 DiT safetensors\n"
            "  --vae taehv|wan     which VAE (default taehv);  --vae-weights FILE\n"
            "  --text-encoder FILE umT5-XXL weights;  --tokenizer FILE  spiece.model\n"
            "  --prompt-embedding FILE  a file from `lipar encode-prompt` instead of the text encoder\n"
            "editing:\n"
            "  --prune lipar|mdeg|direct|none|tome|importance   (default lipar)\n"
            "  --ratio R           tome/importance: fraction of tokens removed (0.32)\n"
            "  --full-cache        with --prune none: the paper baseline's 25-frame cache\n"
            "  --tau X --tau2 X    keep-mask thresholds (0.149, 0.3);  --mask stream|batch (stream)\n"
            "  --steps a,b,c       denoising steps (400,300,250);  --shift X (5);  --seed N (42)\n"
            "  --size WxH          multiples of 16 (832x480; the small demo model defaults to 416x240)\n"
            "  --fps X             model frame rate (16);  --fit stretch|crop|pad (stretch)\n"
            "  --max-frames N      stop after N input frames\n"
            "outputs:\n"
            "  --side-by-side FILE input | edited | keep-mask overlay\n"
            "  --stats FILE.json   per-chunk kept fractions, stage times, FPS (also after the first chunk),\n"
            "                      peak device memory\n"
            "  --plot FILE.svg|png kept fraction and per-chunk latency over time\n"
            "  --quiet             no progress display;  --threads N;  --backend cpu|cuda (the DiT's)\n");
}

static int parse_size(const char *s, int *w, int *h) {
    char *end;
    long a = strtol(s, &end, 10);
    if (*end != 'x' && *end != 'X') return 0;
    long b = strtol(end + 1, &end, 10);
    if (*end || a <= 0 || b <= 0 || a > 16384 || b > 16384) return 0;
    *w = (int)a;
    *h = (int)b;
    return 1;
}

static int parse_steps(const char *s, lipar_session_options *o) {
    o->n_steps = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1000 || o->n_steps == 8) return 0;
        o->steps[o->n_steps++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return o->n_steps > 0;
}

/* Fills the per-file paths from a model directory laid out as downloaded. */
static int find_in_dir(const char *dir, const char *const *candidates, const char **out) {
    static char bufs[8][4096];
    static int next;
    for (int i = 0; candidates[i]; i++) {
        char *b = bufs[next % 8];
        snprintf(b, sizeof bufs[0], "%s/%s", dir, candidates[i]);
        if (access(b, R_OK) == 0) {
            next++;
            *out = b;
            return 1;
        }
    }
    return 0;
}

static int apply_model_dir(edit_args *a) {
    static const char *const dit[] = {"checkpoints/self_forcing_dmd.pt", "self_forcing_dmd.pt",
                                      "Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors", NULL};
    static const char *const taehv[] = {"taew2_1.safetensors", "taehv/taew2_1.safetensors", "taew2_1.pth",
                                        "taehv/taew2_1.pth", NULL};
    static const char *const wan[] = {"Wan2.1-T2V-1.3B/Wan2.1_VAE.pth", "Wan2.1_VAE.pth", NULL};
    static const char *const t5[] = {"Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth",
                                     "models_t5_umt5-xxl-enc-bf16.pth", NULL};
    static const char *const tok[] = {"Wan2.1-T2V-1.3B/google/umt5-xxl/spiece.model", "google/umt5-xxl/spiece.model",
                                      "spiece.model", NULL};
    const char *d = a->model_dir;
    int is_wan = a->mo.vae_kind && !strcmp(a->mo.vae_kind, "wan");
    if (!a->mo.dit_path && !find_in_dir(d, dit, &a->mo.dit_path)) {
        fprintf(stderr, "lipar edit: no DiT checkpoint in %s (looked for checkpoints/self_forcing_dmd.pt)\n", d);
        return 0;
    }
    if (!a->mo.vae_path && !find_in_dir(d, is_wan ? wan : taehv, &a->mo.vae_path)) {
        fprintf(stderr, "lipar edit: no %s weights in %s\n", is_wan ? "Wan VAE" : "TAEHV (taew2_1)", d);
        return 0;
    }
    if (!a->mo.prompt_embedding) {
        if (!a->mo.text_encoder_path && !find_in_dir(d, t5, &a->mo.text_encoder_path)) {
            fprintf(stderr, "lipar edit: no umT5 text encoder in %s\n", d);
            return 0;
        }
        if (!a->mo.tokenizer_path && !find_in_dir(d, tok, &a->mo.tokenizer_path)) {
            fprintf(stderr, "lipar edit: no spiece.model in %s\n", d);
            return 0;
        }
    }
    return 1;
}

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (len + 2 > cap) {
            cap = cap ? 2 * cap : 256;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        buf[len++] = (char)c;
    }
    fclose(f);
    if (!buf) buf = calloc(1, 1);
    else buf[len] = 0;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = 0;
    return buf;
}

/* Returns 0 on success, else the exit code. */
static int parse_args(int argc, char **argv, edit_args *a) {
    lipar_model_options_default(&a->mo);
    lipar_session_options_default(&a->so);
    a->fps = 16.0;
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                           \
    do {                                                                  \
        if (!v) {                                                         \
            fprintf(stderr, "lipar edit: option %s needs a value\n", k);  \
            return 2;                                                     \
        }                                                                 \
        i++;                                                              \
    } while (0)
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(k, "-p") || !strcmp(k, "--prompt")) { NEEDV(); a->prompt = v; }
        else if (!strcmp(k, "--prompt-file")) { NEEDV(); a->prompt_file = v; }
        else if (!strcmp(k, "-o") || !strcmp(k, "--output")) { NEEDV(); a->output = v; }
        else if (!strcmp(k, "-i") || !strcmp(k, "--input")) { NEEDV(); a->input = v; }
        else if (!strcmp(k, "--model")) { NEEDV(); a->model_dir = v; }
        else if (!strcmp(k, "--demo")) {
            NEEDV();
            if (strcmp(v, "small") && strcmp(v, "full")) {
                fprintf(stderr, "lipar edit: --demo takes small or full, not '%s'\n", v);
                return 2;
            }
            a->demo = v;
            a->mo.demo_full_size = !strcmp(v, "full");
        }
        else if (!strcmp(k, "--dit")) { NEEDV(); a->mo.dit_path = v; }
        else if (!strcmp(k, "--vae")) {
            NEEDV();
            if (strcmp(v, "taehv") && strcmp(v, "wan")) {
                fprintf(stderr, "lipar edit: --vae takes taehv or wan, not '%s'\n", v);
                return 2;
            }
            a->mo.vae_kind = v;
        } else if (!strcmp(k, "--vae-weights")) { NEEDV(); a->mo.vae_path = v; }
        else if (!strcmp(k, "--text-encoder")) { NEEDV(); a->mo.text_encoder_path = v; }
        else if (!strcmp(k, "--tokenizer")) { NEEDV(); a->mo.tokenizer_path = v; }
        else if (!strcmp(k, "--prompt-embedding")) { NEEDV(); a->mo.prompt_embedding = v; }
        else if (!strcmp(k, "--prune")) { NEEDV(); a->so.strategy = v; }
        else if (!strcmp(k, "--full-cache")) a->so.full_cache = 1;
        else if (!strcmp(k, "--ratio")) {
            NEEDV();
            a->so.prune_fraction = strtod(v, NULL);
            if (!(a->so.prune_fraction >= 0 && a->so.prune_fraction < 1)) {
                fprintf(stderr, "lipar edit: --ratio must be in [0, 1)\n");
                return 2;
            }
        }
        else if (!strcmp(k, "--tau")) { NEEDV(); a->so.tau = strtof(v, NULL); }
        else if (!strcmp(k, "--tau2")) { NEEDV(); a->so.tau2 = strtof(v, NULL); }
        else if (!strcmp(k, "--mask")) {
            NEEDV();
            if (strcmp(v, "stream") && strcmp(v, "batch")) {
                fprintf(stderr, "lipar edit: --mask takes stream or batch, not '%s'\n", v);
                return 2;
            }
            a->so.batch_mask = !strcmp(v, "batch");
        } else if (!strcmp(k, "--steps")) {
            NEEDV();
            if (!parse_steps(v, &a->so)) {
                fprintf(stderr, "lipar edit: --steps takes up to 8 comma-separated values in 1..1000\n");
                return 2;
            }
        } else if (!strcmp(k, "--shift")) { NEEDV(); a->so.shift = strtof(v, NULL); }
        else if (!strcmp(k, "--seed")) { NEEDV(); a->so.seed = strtoull(v, NULL, 10); }
        else if (!strcmp(k, "--size")) {
            NEEDV();
            if (!parse_size(v, &a->so.width, &a->so.height)) {
                fprintf(stderr, "lipar edit: --size takes WxH, e.g. 832x480\n");
                return 2;
            }
            a->size_given = 1;
        } else if (!strcmp(k, "--fps")) {
            NEEDV();
            a->fps = strtod(v, NULL);
            if (!(a->fps > 0 && a->fps <= 240)) {
                fprintf(stderr, "lipar edit: --fps must be in (0, 240]\n");
                return 2;
            }
        } else if (!strcmp(k, "--fit")) {
            NEEDV();
            if (!strcmp(v, "stretch")) a->fit = LP_VIDEO_FIT_STRETCH;
            else if (!strcmp(v, "crop")) a->fit = LP_VIDEO_FIT_CROP;
            else if (!strcmp(v, "pad")) a->fit = LP_VIDEO_FIT_PAD;
            else {
                fprintf(stderr, "lipar edit: --fit takes stretch, crop or pad\n");
                return 2;
            }
        } else if (!strcmp(k, "--prompt-at")) {
            NEEDV();
            char *colon = strchr(v, ':');
            if (!colon || colon == v || a->n_changes == MAX_PROMPT_CHANGES) {
                fprintf(stderr, "lipar edit: --prompt-at takes FRAME:TEXT\n");
                return 2;
            }
            a->changes[a->n_changes].frame = atoi(v);
            a->changes[a->n_changes++].text = colon + 1;
        } else if (!strcmp(k, "--max-frames")) { NEEDV(); a->max_frames = atoi(v); }
        else if (!strcmp(k, "--side-by-side")) { NEEDV(); a->side_by_side = v; }
        else if (!strcmp(k, "--stats")) { NEEDV(); a->stats = v; }
        else if (!strcmp(k, "--plot")) { NEEDV(); a->plot = v; }
        else if (!strcmp(k, "--quiet") || !strcmp(k, "-q")) a->quiet = 1;
        else if (!strcmp(k, "--threads")) { NEEDV(); a->mo.threads = atoi(v); }
        else if (!strcmp(k, "--backend")) { NEEDV(); a->mo.backend = v; }
        else if (k[0] == '-' && k[1]) {
            fprintf(stderr, "lipar edit: unknown option '%s'\n", k);
            return 2;
        } else if (!a->input) a->input = k;
        else {
            fprintf(stderr, "lipar edit: unexpected argument '%s'\n", k);
            return 2;
        }
#undef NEEDV
    }
    if (!a->input || !a->output) {
        usage(stderr);
        return 2;
    }
    if (a->prompt_file) {
        a->prompt_owned = read_text_file(a->prompt_file);
        if (!a->prompt_owned) {
            fprintf(stderr, "lipar edit: cannot read the prompt file %s: %s\n", a->prompt_file, strerror(errno));
            return 1;
        }
        a->prompt = a->prompt_owned;
    }
    if (!a->prompt) {
        fprintf(stderr, "lipar edit: give a prompt with -p TEXT or --prompt-file FILE\n");
        return 2;
    }
    if (a->demo && (a->model_dir || a->mo.dit_path)) {
        fprintf(stderr, "lipar edit: --demo is the model without weight files: not with --model or --dit\n");
        return 2;
    }
    if (a->model_dir && !apply_model_dir(a)) return 1;
    if (!a->mo.dit_path && !a->mo.demo_full_size && !a->size_given) { /* the small demo: a quarter of the pixels */
        a->so.width = 416;
        a->so.height = 240;
    }
    if (lp_video_check_size(a->so.width, a->so.height) != LP_OK) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        return 1;
    }
    a->so.prompt = a->prompt;
    return 0;
}

/* ------------------------------------------------------------- outputs */

typedef struct {
    int w, h;
    float *inputs; /* FIFO of input frames waiting for their edited frame */
    int head, count, cap;
} input_fifo;

static int fifo_push(input_fifo *q, const float *frame) {
    size_t px = (size_t)3 * q->w * q->h;
    if (q->count == q->cap) {
        int cap = q->cap ? 2 * q->cap : 32;
        float *n = malloc((size_t)cap * px * sizeof *n);
        if (!n) return 0;
        for (int i = 0; i < q->count; i++) memcpy(n + i * px, q->inputs + ((q->head + i) % q->cap) * px, px * 4);
        free(q->inputs);
        q->inputs = n;
        q->cap = cap;
        q->head = 0;
    }
    memcpy(q->inputs + ((q->head + q->count) % q->cap) * px, frame, px * 4);
    q->count++;
    return 1;
}

static const float *fifo_pop(input_fifo *q) {
    size_t px = (size_t)3 * q->w * q->h;
    const float *f = q->inputs + q->head * px;
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return f;
}

/* input | edited | input with pruned (copied) patches tinted red */
static void compose_side_by_side(const float *in, const float *out, const uint8_t *keep, int w, int h, float *dst) {
    int W3 = 3 * w, pw = w / 16;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++) {
            float *row = dst + ((size_t)c * h + y) * W3;
            const float *ri = in + ((size_t)c * h + y) * w, *ro = out + ((size_t)c * h + y) * w;
            memcpy(row, ri, (size_t)w * 4);
            memcpy(row + w, ro, (size_t)w * 4);
            for (int x = 0; x < w; x++) {
                int pruned = keep && !keep[(y / 16) * pw + x / 16];
                float v = ri[x];
                row[2 * w + x] = pruned ? (c == 0 ? 0.5f * v + 0.5f : 0.5f * v) : v;
            }
        }
}

/* Wall-clock figures of a run: all of it, and from the end of the first
 * chunk's edit on (the steady state, without the warm-up of the first chunk). */
typedef struct {
    int frames_out;
    double seconds;
    int steady_frames; /* input frames pushed after the first chunk was edited */
    double steady_seconds;
} run_times;

static int write_stats(const char *path, const edit_args *a, lipar_session *s, lipar_model *m, const run_times *rt) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "lipar edit: cannot write %s: %s\n", path, strerror(errno));
        return 0;
    }
    int n = lipar_session_chunks(s);
    double kept_sum = 0;
    fprintf(f, "{\n  \"input\": \"");
    for (const char *p = a->input; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        if ((unsigned char)*p >= 0x20) fputc(*p, f);
    }
    fprintf(f, "\",\n  \"model\": \"%s\",\n  \"demo\": %s,\n  \"backend\": \"%s\",\n  \"size\": [%d, %d],\n  \"fps\": %g,\n",
            lipar_model_describe(m), lipar_model_is_demo(m) ? "true" : "false", a->mo.backend ? a->mo.backend : "cpu",
            a->so.width, a->so.height, a->fps);
    fprintf(f, "  \"strategy\": \"%s\",\n  \"mask\": \"%s\",\n  \"chunks\": [\n", a->so.strategy,
            a->so.batch_mask ? "batch" : "stream");
    for (int i = 0; i < n; i++) {
        lipar_chunk_stats cs;
        lipar_session_chunk_stats(s, i, &cs);
        kept_sum += cs.kept_fraction;
        fprintf(f, "    {\"chunk\": %d, \"first_frame\": %d, \"frames\": %d, \"kept\": [", cs.chunk, cs.first_frame,
                cs.frames);
        for (int j = 0; j < cs.latent_frames; j++) fprintf(f, "%s%.6f", j ? ", " : "", cs.kept[j]);
        fprintf(f,
                "], \"kept_fraction\": %.6f, \"seconds\": {\"encode\": %.6f, \"mask\": %.6f, \"dit\": %.6f, "
                "\"decode\": %.6f, \"total\": %.6f}, \"fps\": %.3f, \"prompt_version\": %d}%s\n",
                cs.kept_fraction, cs.seconds_encode, cs.seconds_mask, cs.seconds_dit, cs.seconds_decode,
                cs.seconds_total, cs.seconds_total > 0 ? cs.frames / cs.seconds_total : 0.0, cs.prompt_version,
                i + 1 < n ? "," : "");
    }
    fprintf(f,
            "  ],\n  \"summary\": {\"frames\": %d, \"seconds\": %.6f, \"fps\": %.3f, \"kept_fraction\": %.6f,\n"
            "    \"after_first_chunk\": {\"frames\": %d, \"seconds\": %.6f, \"fps\": %.3f},\n"
            "    \"peak_device_bytes\": %zu}\n}\n",
            rt->frames_out, rt->seconds, rt->seconds > 0 ? rt->frames_out / rt->seconds : 0.0,
            n ? kept_sum / n : 1.0, rt->steady_frames, rt->steady_seconds,
            rt->steady_seconds > 0 ? rt->steady_frames / rt->steady_seconds : 0.0,
            lipar_session_peak_device_memory(s));
    int ok = !ferror(f);
    if (fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "lipar edit: error writing %s\n", path);
    return ok;
}

static int write_plot(const char *path, const edit_args *a, lipar_session *s) {
    int n = lipar_session_chunks(s);
    double *x = calloc((size_t)n + 1, sizeof *x), *kept = calloc((size_t)n + 1, sizeof *kept),
           *lat = calloc((size_t)n + 1, sizeof *lat);
    int ok = x && kept && lat;
    for (int i = 0; ok && i < n; i++) {
        lipar_chunk_stats cs;
        lipar_session_chunk_stats(s, i, &cs);
        x[i] = cs.first_frame / a->fps;
        kept[i] = cs.kept_fraction;
        lat[i] = cs.seconds_total;
    }
    char title[512];
    snprintf(title, sizeof title, "%s - %s", a->input, a->so.strategy);
    lp_plot_data d = {n, x, kept, lat, title};
    if (ok && lp_plot_write(path, &d) != LP_OK) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        ok = 0;
    }
    free(x);
    free(kept);
    free(lat);
    return ok;
}

static void progress(const edit_args *a, int tty, int done, int64_t total, double t0, lipar_session *s, int final) {
    static double last;
    double t = lp_seconds();
    if (a->quiet || (!final && t - last < (tty ? 0.2 : 5.0))) return;
    last = t;
    int n = lipar_session_chunks(s);
    double kept = 0;
    for (int i = 0; i < n; i++) {
        lipar_chunk_stats cs;
        lipar_session_chunk_stats(s, i, &cs);
        kept += cs.kept_fraction;
    }
    double fps = t > t0 ? done / (t - t0) : 0;
    char eta[32] = "?";
    if (total > 0 && fps > 0) snprintf(eta, sizeof eta, "%.0fs", (double)(total - done) / fps);
    if (total > 0)
        fprintf(stderr, "%sframes %d/%lld  %.2f fps  kept %.1f%%  ETA %s%s", tty ? "\r\033[K" : "", done,
                (long long)total, fps, n ? 100.0 * kept / n : 100.0, eta, tty && !final ? "" : "\n");
    else
        fprintf(stderr, "%sframes %d  %.2f fps  kept %.1f%%%s", tty ? "\r\033[K" : "", done, fps,
                n ? 100.0 * kept / n : 100.0, tty && !final ? "" : "\n");
}

/* Pulls every ready frame into the writers. Returns 0 on a write error. */
static int drain(lipar_session *s, lp_video_writer *out, lp_video_writer *sbs, input_fifo *q, float *frame,
                 float *side, int *frames_out, int w, int h) {
    for (;;) {
        int got;
        if (lipar_session_pull(s, frame, &got) != LIPAR_OK || !got) return 1;
        const float *in = fifo_pop(q);
        if (lp_video_writer_push(out, frame) != LP_OK) return 0;
        if (sbs) {
            /* the mask of this frame's latent frame: 4 frames per latent frame */
            const uint8_t *keep = NULL;
            int n = lipar_session_chunks(s);
            for (int i = n - 1; i >= 0 && i >= n - 4; i--) {
                lipar_chunk_stats cs;
                lipar_session_chunk_stats(s, i, &cs);
                if (*frames_out >= cs.first_frame && *frames_out < cs.first_frame + 12) {
                    int idx = *frames_out - cs.first_frame, lat = cs.first_frame == 0 && cs.frames == 9 ? (idx + 3) / 4
                                                                                                       : idx / 4;
                    keep = lipar_session_keep_mask(s, i, lat > 2 ? 2 : lat);
                    break;
                }
            }
            compose_side_by_side(in, frame, keep, w, h, side);
            if (lp_video_writer_push(sbs, side) != LP_OK) return 0;
        }
        (*frames_out)++;
    }
}

int lp_edit_main(int argc, char **argv) {
    edit_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        free(a.prompt_owned);
        return rc < 0 ? 0 : rc;
    }
    int w = a.so.width, h = a.so.height, tty = isatty(2);
    lp_video_reader *rd = NULL;
    lp_video_writer *out = NULL, *sbs = NULL;
    lipar_model *m = NULL;
    lipar_session *s = NULL;
    input_fifo q = {.w = w, .h = h};
    float *frame = NULL, *side = NULL;
    int frames_in = 0, frames_out = 0, next_change = 0;
    rc = 1;
    lp_video_reader_opts ro;
    lp_video_reader_opts_default(&ro);
    ro.width = w;
    ro.height = h;
    ro.fps = a.fps;
    ro.fit = a.fit;
    lp_rawvideo_format in_fmt;
    if (lp_rawvideo_format_of(a.input, &in_fmt) && in_fmt == LP_RAWVIDEO_RGB24) { /* frames of the session's size */
        ro.input_format = "rgb24";
        ro.raw_width = w, ro.raw_height = h, ro.raw_fps = a.fps;
    }
    if (lp_video_reader_open(a.input, &ro, &rd) != LP_OK) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        goto out;
    }
    if (lipar_model_load(&a.mo, &m) != LIPAR_OK) {
        fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
        goto out;
    }
    if (lipar_model_is_demo(m) && !a.quiet)
        fprintf(stderr,
                "lipar edit: no model given: running the %s demonstration model (random weights, %dx%d).\n"
                "            The output only demonstrates the pipeline; see README.md for real weights.\n",
                a.mo.demo_full_size ? "full-size" : "embedded", w, h);
    if (lipar_session_open(m, &a.so, &s) != LIPAR_OK) {
        fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
        goto out;
    }
    frame = malloc((size_t)3 * w * h * sizeof *frame);
    side = a.side_by_side ? malloc((size_t)9 * w * h * sizeof *side) : NULL;
    if (!frame || (a.side_by_side && !side)) {
        fprintf(stderr, "lipar edit: out of memory\n");
        goto out;
    }
    const lp_video_info *info = lp_video_reader_info(rd);
    int64_t total = info->output_frames;
    if (a.max_frames > 0 && (total < 0 || total > a.max_frames)) total = a.max_frames;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    double t0 = lp_seconds(), t_first = 0; /* t_first: when the first chunk was edited */
    int failed = 0, frames_at_first = 0;
    for (;;) {
        if (interrupted || (a.max_frames > 0 && frames_in >= a.max_frames)) break;
        bool eos;
        if (lp_video_reader_next(rd, frame, &eos) != LP_OK) {
            fprintf(stderr, "lipar edit: %s\n", lp_last_error());
            failed = 1;
            break;
        }
        if (eos) break;
        while (next_change < a.n_changes && a.changes[next_change].frame <= frames_in) {
            if (lipar_session_set_prompt(s, a.changes[next_change].text) != LIPAR_OK) {
                fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
                failed = 1;
                break;
            }
            next_change++;
        }
        if (failed) break;
        if (!fifo_push(&q, frame)) {
            fprintf(stderr, "lipar edit: out of memory\n");
            failed = 1;
            break;
        }
        if (lipar_session_push(s, frame) != LIPAR_OK) {
            fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
            failed = 1;
            break;
        }
        frames_in++;
        if (!t_first && lipar_session_chunks(s) > 0) {
            t_first = lp_seconds();
            frames_at_first = frames_in;
        }
        /* outputs are opened once there is something to write: a run that fails
         * before its first chunk leaves no file behind */
        if (!out && lipar_session_chunks(s) > 0) {
            if (lp_video_writer_open(a.output, w, h, a.fps, NULL, &out) != LP_OK ||
                (a.side_by_side && lp_video_writer_open(a.side_by_side, 3 * w, h, a.fps, NULL, &sbs) != LP_OK)) {
                fprintf(stderr, "lipar edit: %s\n", lp_last_error());
                failed = 1;
                break;
            }
        }
        if (out && !drain(s, out, sbs, &q, frame, side, &frames_out, w, h)) {
            fprintf(stderr, "lipar edit: %s\n", lp_last_error());
            failed = 1;
            break;
        }
        progress(&a, tty, frames_in, total, t0, s, 0);
    }
    if (!failed && frames_in == 0) {
        fprintf(stderr, "lipar edit: %s: no frames to edit\n", a.input);
        goto out;
    }
    /* the current chunk is finished (padded) also after an interruption */
    if (!failed && lipar_session_finish(s) != LIPAR_OK) {
        fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
        failed = 1;
    }
    if (!failed && !out &&
        (lp_video_writer_open(a.output, w, h, a.fps, NULL, &out) != LP_OK ||
         (a.side_by_side && lp_video_writer_open(a.side_by_side, 3 * w, h, a.fps, NULL, &sbs) != LP_OK))) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        failed = 1;
    }
    if (out && !drain(s, out, sbs, &q, frame, side, &frames_out, w, h)) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        failed = 1;
    }
    double t_end = lp_seconds(), seconds = t_end - t0;
    progress(&a, tty, frames_in, frames_in, t0, s, 1);
    run_times rt = {frames_out, seconds, t_first ? frames_in - frames_at_first : 0, t_first ? t_end - t_first : 0};
    if (a.stats && !write_stats(a.stats, &a, s, m, &rt)) failed = 1;
    if (a.plot && !write_plot(a.plot, &a, s)) failed = 1;
    rc = failed ? 1 : interrupted ? 130 : 0;
    if (!a.quiet)
        fprintf(stderr, "lipar edit: wrote %d frames (%dx%d, %g fps) to %s in %.1f s%s\n", frames_out, w, h, a.fps,
                a.output, seconds, interrupted ? " (interrupted)" : "");
out:
    if (lp_video_writer_close(out) != LP_OK && rc == 0) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        rc = 1;
    }
    if (lp_video_writer_close(sbs) != LP_OK && rc == 0) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        rc = 1;
    }
    lp_video_reader_close(rd);
    lipar_session_close(s);
    lipar_model_free(m);
    free(q.inputs);
    free(frame);
    free(side);
    free(a.prompt_owned);
    return rc;
}
