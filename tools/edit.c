/* `lipar edit INPUT -p PROMPT -o OUTPUT`: the main job. Reads a video (file or
 * pipe), edits it chunk by chunk through a lipar_session, writes the edited
 * video as chunks complete, with optional side-by-side view, per-chunk
 * statistics (JSON) and a plot. Ctrl-C finishes the current chunk and closes
 * the outputs so that what was written stays playable. Frames travel as packed
 * RGB bytes (the session's rgb24 frames). Reading (decoding and
 * conversion to RGB) runs ahead on a reader thread and writing
 * (conversion, side-by-side, encoding) behind on a writer thread, so the main
 * loop only pushes and pulls. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../include/lipar.h"
#include "../src/base/clock.h"
#include "../src/base/pixels.h"
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
            "                      published sizes (DiT 30x1536, TAEHV or with --vae wan the Wan VAE;\n"
            "                      832x480), for benchmarks\n"
            "  --model DIR         a directory laid out as downloaded (see README)\n"
            "  --dit FILE          Self-Forcing .pt or Wan2.1 DiT safetensors\n"
            "  --vae taehv|wan     which VAE (default taehv; the demo models have both);  --vae-weights FILE\n"
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
    a->so.rgb24_frames = 1; /* frames stay bytes from the reader to the writer */
    return 0;
}

/* ------------------------------------------------------- frame buffers */

/* A FIFO of frame buffers (w x h x 3 bytes each). */
typedef struct {
    uint8_t **items;
    int head, count, cap;
} frame_queue;

static int queue_push(frame_queue *q, uint8_t *f) {
    if (q->count == q->cap) {
        int cap = q->cap ? 2 * q->cap : 32;
        uint8_t **n = malloc((size_t)cap * sizeof *n);
        if (!n) return 0;
        for (int i = 0; i < q->count; i++) n[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = n;
        q->cap = cap;
        q->head = 0;
    }
    q->items[(q->head + q->count++) % q->cap] = f;
    return 1;
}

static uint8_t *queue_pop(frame_queue *q) {
    uint8_t *f = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return f;
}

static void queue_free(frame_queue *q) {
    while (q->count) free(queue_pop(q));
    free(q->items);
}

/* A buffer from spares, else a new one; NULL when out of memory. */
static uint8_t *spare_frame(frame_queue *spares, int w, int h) {
    return spares->count ? queue_pop(spares) : malloc((size_t)3 * w * h);
}

/* --------------------------------------------------- frame I/O threads */

/* The reader and writer threads trade frames with the main loop through rings
 * of IO_RING frame buffers. A ring of one chunk (12 frames): while a session
 * edits a chunk inside the push of its last frame, the reader reads the whole
 * next chunk and the writer writes the whole last one, so that afterwards the
 * main loop waits for neither. The frames keep their order; an error ends a
 * thread's work and is reported, in order, to the main loop. */
#define IO_RING 12

typedef struct {
    lp_video_reader *rd;
    int limit;               /* frames to read at most; 0 = all */
    uint8_t *frames[IO_RING]; /* frames[head..head+count-1] (mod IO_RING) are read */
    int head, count;
    bool stop;               /* set by the main loop */
    bool end;                /* no frames after those read: end of stream or error */
    lp_status error;
    char message[1024];      /* the error's */
    double busy;             /* seconds spent reading and converting */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled on each change of count, stop or end */
    pthread_t thread;
    bool started;
} frame_reader;

static void *reader_main(void *arg) {
    frame_reader *fr = arg;
    int n = 0;
    pthread_mutex_lock(&fr->mu);
    while (!fr->stop && !fr->end) {
        if (fr->count == IO_RING) {
            pthread_cond_wait(&fr->cv, &fr->mu);
            continue;
        }
        uint8_t *dst = fr->frames[(fr->head + fr->count) % IO_RING];
        pthread_mutex_unlock(&fr->mu);
        bool eos;
        double t = lp_seconds();
        lp_status s = lp_video_reader_next_rgb24(fr->rd, dst, &eos);
        t = lp_seconds() - t;
        pthread_mutex_lock(&fr->mu);
        fr->busy += t;
        if (s != LP_OK) {
            fr->error = s;
            snprintf(fr->message, sizeof fr->message, "%s", lp_last_error());
        }
        if (s != LP_OK || eos) fr->end = true;
        else fr->count++, fr->end = fr->limit > 0 && ++n == fr->limit;
        pthread_cond_signal(&fr->cv);
    }
    pthread_mutex_unlock(&fr->mu);
    return NULL;
}

/* Starts reading rd ahead, limit frames at most (0 = all). */
static int reader_start(frame_reader *fr, lp_video_reader *rd, int limit, int w, int h) {
    fr->rd = rd;
    fr->limit = limit;
    for (int i = 0; i < IO_RING; i++)
        if (!(fr->frames[i] = malloc((size_t)3 * w * h))) return 0;
    pthread_mutex_init(&fr->mu, NULL);
    pthread_cond_init(&fr->cv, NULL);
    fr->started = pthread_create(&fr->thread, NULL, reader_main, fr) == 0;
    if (!fr->started) {
        pthread_mutex_destroy(&fr->mu);
        pthread_cond_destroy(&fr->cv);
    }
    return fr->started;
}

/* The next input frame, waiting for the reader; NULL after the last one, with
 * *error set if reading failed. The frame is the main loop's until
 * reader_release. */
static uint8_t *reader_next(frame_reader *fr, lp_status *error) {
    pthread_mutex_lock(&fr->mu);
    while (!fr->count && !fr->end) pthread_cond_wait(&fr->cv, &fr->mu);
    uint8_t *f = fr->count ? fr->frames[fr->head] : NULL;
    *error = f ? LP_OK : fr->error;
    pthread_mutex_unlock(&fr->mu);
    return f;
}

/* Gives the frame of reader_next back to be read into, or, when the main
 * loop keeps it, the buffer replacement instead. */
static void reader_release(frame_reader *fr, uint8_t *replacement) {
    pthread_mutex_lock(&fr->mu);
    if (replacement) fr->frames[fr->head] = replacement;
    fr->head = (fr->head + 1) % IO_RING;
    fr->count--;
    pthread_cond_signal(&fr->cv);
    pthread_mutex_unlock(&fr->mu);
}

/* Stops the reader (after the frame it is reading) and frees its buffers. */
static void reader_stop(frame_reader *fr) {
    if (fr->started) {
        pthread_mutex_lock(&fr->mu);
        fr->stop = true;
        pthread_cond_signal(&fr->cv);
        pthread_mutex_unlock(&fr->mu);
        pthread_join(fr->thread, NULL);
        pthread_mutex_destroy(&fr->mu);
        pthread_cond_destroy(&fr->cv);
        fr->started = false;
    }
    for (int i = 0; i < IO_RING; i++) {
        free(fr->frames[i]);
        fr->frames[i] = NULL;
    }
}

/* input | edited | input with pruned (copied) patches tinted red; frames of
 * packed RGB, the tint computed on [0, 1] values */
static void compose_side_by_side(const uint8_t *in, const uint8_t *out, const uint8_t *keep, int w, int h,
                                 uint8_t *dst) {
    size_t row = (size_t)3 * w;
    int pw = w / 16;
    for (int y = 0; y < h; y++) {
        uint8_t *d = dst + (size_t)y * 3 * row;
        const uint8_t *ri = in + (size_t)y * row, *ro = out + (size_t)y * row;
        memcpy(d, ri, row);
        memcpy(d + row, ro, row);
        for (int x = 0; x < w; x++) {
            int pruned = keep && !keep[(y / 16) * pw + x / 16];
            for (int c = 0; c < 3; c++) {
                uint8_t b = ri[3 * x + c];
                float v = lp_byte_to_unit(b);
                d[2 * row + 3 * x + c] = pruned ? lp_unit_to_byte(c == 0 ? 0.5f * v + 0.5f : 0.5f * v) : b;
            }
        }
    }
}

/* An edited frame on its way out, with what the side-by-side view needs. */
typedef struct {
    uint8_t *frame;
    uint8_t *input; /* its input frame */
    uint8_t *keep; /* the keep mask of its latent frame, [h/16][w/16] */
    bool has_keep;
} out_frame;

typedef struct {
    lp_video_writer *out, *sbs; /* sbs: NULL without a side-by-side view */
    int w, h;
    uint8_t *side;              /* the side-by-side frame being composed */
    out_frame slots[IO_RING];   /* slots[head..head+count-1] (mod IO_RING) wait to be written */
    int head, count;
    bool closing;               /* set by the main loop: nothing more comes */
    bool failed;
    char message[1024];         /* why it failed */
    double busy;                /* seconds spent converting and writing */
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* signalled on each change of count, closing or failed */
    pthread_t thread;
    bool started;
} frame_writer;

static void *writer_main(void *arg) {
    frame_writer *fw = arg;
    pthread_mutex_lock(&fw->mu);
    for (;;) {
        while (!fw->count && !fw->closing) pthread_cond_wait(&fw->cv, &fw->mu);
        if (!fw->count) break;
        const out_frame *o = &fw->slots[fw->head];
        pthread_mutex_unlock(&fw->mu);
        double t = lp_seconds();
        lp_status s = lp_video_writer_push_rgb24(fw->out, o->frame);
        if (s == LP_OK && fw->sbs) {
            compose_side_by_side(o->input, o->frame, o->has_keep ? o->keep : NULL, fw->w, fw->h, fw->side);
            s = lp_video_writer_push_rgb24(fw->sbs, fw->side);
        }
        t = lp_seconds() - t;
        pthread_mutex_lock(&fw->mu);
        fw->busy += t;
        if (s != LP_OK) {
            fw->failed = true;
            snprintf(fw->message, sizeof fw->message, "%s", lp_last_error());
            pthread_cond_signal(&fw->cv);
            break;
        }
        fw->head = (fw->head + 1) % IO_RING;
        fw->count--;
        pthread_cond_signal(&fw->cv);
    }
    pthread_mutex_unlock(&fw->mu);
    return NULL;
}

/* Starts the writer on the open outputs out and sbs (NULL: none). */
static int writer_start(frame_writer *fw, lp_video_writer *out, lp_video_writer *sbs, int w, int h) {
    fw->out = out, fw->sbs = sbs, fw->w = w, fw->h = h;
    size_t px = (size_t)3 * w * h, grid = (size_t)(w / 16) * (h / 16);
    if (sbs && !(fw->side = malloc(3 * px))) return 0;
    for (int i = 0; i < IO_RING; i++) {
        if (!(fw->slots[i].frame = malloc(px))) return 0;
        if (sbs && !(fw->slots[i].keep = malloc(grid))) return 0;
    }
    pthread_mutex_init(&fw->mu, NULL);
    pthread_cond_init(&fw->cv, NULL);
    fw->started = pthread_create(&fw->thread, NULL, writer_main, fw) == 0;
    if (!fw->started) {
        pthread_mutex_destroy(&fw->mu);
        pthread_cond_destroy(&fw->cv);
    }
    return fw->started;
}

/* The slot for the next edited frame, waiting for the writer while all are
 * taken; NULL once writing has failed. The main loop fills it, then calls
 * writer_commit. */
static out_frame *writer_slot(frame_writer *fw) {
    pthread_mutex_lock(&fw->mu);
    while (fw->count == IO_RING && !fw->failed) pthread_cond_wait(&fw->cv, &fw->mu);
    out_frame *o = fw->failed ? NULL : &fw->slots[(fw->head + fw->count) % IO_RING];
    pthread_mutex_unlock(&fw->mu);
    return o;
}

static void writer_commit(frame_writer *fw) {
    pthread_mutex_lock(&fw->mu);
    fw->count++;
    pthread_cond_signal(&fw->cv);
    pthread_mutex_unlock(&fw->mu);
}

/* Waits until everything handed over is written (or writing failed); false
 * if it failed. Frees the writer's buffers, the input frames too. */
static bool writer_finish(frame_writer *fw) {
    if (fw->started) {
        pthread_mutex_lock(&fw->mu);
        fw->closing = true;
        pthread_cond_signal(&fw->cv);
        pthread_mutex_unlock(&fw->mu);
        pthread_join(fw->thread, NULL);
        pthread_mutex_destroy(&fw->mu);
        pthread_cond_destroy(&fw->cv);
        fw->started = false;
    }
    for (int i = 0; i < IO_RING; i++) {
        free(fw->slots[i].frame);
        free(fw->slots[i].input);
        free(fw->slots[i].keep);
        memset(&fw->slots[i], 0, sizeof fw->slots[i]);
    }
    free(fw->side);
    fw->side = NULL;
    return !fw->failed;
}

/* ------------------------------------------------------------- outputs */

/* Wall-clock figures of a run: all of it, and from the end of the first
 * chunk's edit on (the steady state, without the warm-up of the first chunk). */
typedef struct {
    int frames_out;
    double seconds;
    int steady_frames; /* output frames of the chunks after the first */
    double steady_seconds;
    /* the main loop's side, in seconds: waiting for input frames from the
     * reader thread, lipar_session_push and lipar_session_pull (what the
     * session does on the caller's thread), waiting for the writer thread for
     * a free slot, and at the end until all is written */
    double read_seconds, push_seconds, pull_seconds, write_seconds, flush_seconds;
    /* the reader and writer threads' work: reading and converting input
     * frames; converting and writing output frames */
    double reader_seconds, writer_seconds;
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
                "\"decode\": %.6f, \"total\": %.6f}, \"start\": {\"encode\": %.6f, \"dit\": %.6f, "
                "\"decode\": %.6f}, \"fps\": %.3f, \"prompt_version\": %d}%s\n",
                cs.kept_fraction, cs.seconds_encode, cs.seconds_mask, cs.seconds_dit, cs.seconds_decode,
                cs.seconds_total, cs.start_encode, cs.start_dit, cs.start_decode, cs.seconds_total > 0 ? cs.frames / cs.seconds_total : 0.0, cs.prompt_version,
                i + 1 < n ? "," : "");
    }
    fprintf(f,
            "  ],\n  \"summary\": {\"frames\": %d, \"seconds\": %.6f, \"fps\": %.3f, \"kept_fraction\": %.6f,\n"
            "    \"after_first_chunk\": {\"frames\": %d, \"seconds\": %.6f, \"fps\": %.3f},\n"
            "    \"peak_device_bytes\": %zu,\n"
            "    \"caller_seconds\": {\"read\": %.6f, \"push\": %.6f, \"pull\": %.6f, \"write\": %.6f, "
            "\"flush\": %.6f},\n"
            "    \"io_thread_seconds\": {\"read\": %.6f, \"write\": %.6f}}\n}\n",
            rt->frames_out, rt->seconds, rt->seconds > 0 ? rt->frames_out / rt->seconds : 0.0,
            n ? kept_sum / n : 1.0, rt->steady_frames, rt->steady_seconds,
            rt->steady_seconds > 0 ? rt->steady_frames / rt->steady_seconds : 0.0,
            lipar_session_peak_device_memory(s), rt->read_seconds, rt->push_seconds, rt->pull_seconds, rt->write_seconds,
            rt->flush_seconds, rt->reader_seconds, rt->writer_seconds);
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

/* Pulls every ready frame and hands it to the writer with, for the
 * side-by-side view, its input frame (from inputs; the writer's previous one
 * goes to spares) and keep mask. *pulled: the buffer to pull into, swapped
 * with the slot's. Adds the seconds spent pulling to *t_pull and waiting for
 * the writer to *t_write. Returns 0 once writing has failed. */
static int drain(lipar_session *s, frame_writer *fw, frame_queue *inputs, frame_queue *spares, uint8_t **pulled,
                 int *frames_out, double *t_pull, double *t_write) {
    for (;;) {
        int got;
        double t = lp_seconds();
        lipar_status ps = lipar_session_pull_rgb24(s, *pulled, &got);
        double t1 = lp_seconds();
        *t_pull += t1 - t;
        if (ps != LIPAR_OK || !got) return 1;
        out_frame *o = writer_slot(fw);
        *t_write += lp_seconds() - t1;
        if (!o) return 0;
        uint8_t *f = o->frame;
        o->frame = *pulled;
        *pulled = f;
        if (fw->sbs) {
            if (o->input && !queue_push(spares, o->input)) free(o->input);
            o->input = queue_pop(inputs);
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
            o->has_keep = keep != NULL;
            if (keep) memcpy(o->keep, keep, (size_t)(fw->w / 16) * (fw->h / 16));
        }
        writer_commit(fw);
        (*frames_out)++;
    }
}

/* Threads of each of the reader's and the writer's conversion pools: a quarter
 * of the cores, at most 4 (1: no pool). */
static int io_pool_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN) / 4;
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

/* Opens the outputs and starts the writer on them. */
static int open_outputs(const edit_args *a, const lp_video_writer_opts *wo, lp_video_writer **out,
                        lp_video_writer **sbs, frame_writer *fw) {
    int w = a->so.width, h = a->so.height;
    if (lp_video_writer_open(a->output, w, h, a->fps, wo, out) != LP_OK ||
        (a->side_by_side && lp_video_writer_open(a->side_by_side, 3 * w, h, a->fps, wo, sbs) != LP_OK)) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        return 0;
    }
    if (!writer_start(fw, *out, *sbs, w, h)) {
        fprintf(stderr, "lipar edit: out of memory or threads for the writer\n");
        return 0;
    }
    return 1;
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
    lp_pool *read_pool = NULL, *write_pool = NULL;
    lipar_model *m = NULL;
    lipar_session *s = NULL;
    frame_reader fr = {0};
    frame_writer fw = {0};
    /* side-by-side: the input frames waiting for their edited frame, and
     * buffers to give the reader in their place */
    frame_queue inputs = {0}, spares = {0};
    uint8_t *pulled = NULL;
    int frames_in = 0, frames_out = 0, next_change = 0;
    rc = 1;
    int pool_threads = io_pool_threads();
    if (pool_threads > 1 &&
        (lp_pool_create(pool_threads, &read_pool) != LP_OK || lp_pool_create(pool_threads, &write_pool) != LP_OK)) {
        fprintf(stderr, "lipar edit: %s\n", lp_last_error());
        goto out;
    }
    lp_video_reader_opts ro;
    lp_video_reader_opts_default(&ro);
    ro.width = w;
    ro.height = h;
    ro.fps = a.fps;
    ro.fit = a.fit;
    ro.pool = read_pool;
    lp_video_writer_opts wo = {.pool = write_pool};
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
    pulled = malloc((size_t)3 * w * h);
    if (!pulled) {
        fprintf(stderr, "lipar edit: out of memory\n");
        goto out;
    }
    const lp_video_info *info = lp_video_reader_info(rd);
    int64_t total = info->output_frames;
    if (a.max_frames > 0 && (total < 0 || total > a.max_frames)) total = a.max_frames;
    if (!reader_start(&fr, rd, a.max_frames, w, h)) {
        fprintf(stderr, "lipar edit: out of memory or threads for the reader\n");
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    double t0 = lp_seconds(), t_first = 0; /* t_first: when the first chunk was edited */
    int failed = 0, frames_at_first = 0, write_failed = 0;
    double t_read = 0, t_push = 0, t_pull = 0, t_write = 0, t_flush = 0, tc;
    for (;;) {
        if (interrupted || (a.max_frames > 0 && frames_in >= a.max_frames)) break;
        lp_status rs;
        tc = lp_seconds();
        uint8_t *frame = reader_next(&fr, &rs);
        t_read += lp_seconds() - tc;
        if (!frame) {
            if (rs != LP_OK) {
                fprintf(stderr, "lipar edit: %s\n", fr.message);
                failed = 1;
            }
            break;
        }
        while (next_change < a.n_changes && a.changes[next_change].frame <= frames_in) {
            if (lipar_session_set_prompt(s, a.changes[next_change].text) != LIPAR_OK) {
                fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
                failed = 1;
                break;
            }
            next_change++;
        }
        if (failed) break;
        tc = lp_seconds();
        lipar_status ps = lipar_session_push_rgb24(s, frame);
        t_push += lp_seconds() - tc;
        if (ps != LIPAR_OK) {
            fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
            failed = 1;
            break;
        }
        uint8_t *replacement = NULL; /* the side-by-side view keeps the input frame */
        if (a.side_by_side && (!(replacement = spare_frame(&spares, w, h)) || !queue_push(&inputs, frame))) {
            free(replacement);
            fprintf(stderr, "lipar edit: out of memory\n");
            failed = 1;
            break;
        }
        reader_release(&fr, replacement);
        frames_in++;
        if (!t_first && lipar_session_chunks(s) > 0) { /* chunk 0 is edited */
            lipar_chunk_stats first;
            lipar_session_chunk_stats(s, 0, &first);
            t_first = lp_seconds();
            frames_at_first = first.frames;
        }
        /* outputs are opened once there is something to write: a run that fails
         * before its first chunk leaves no file behind */
        if (!out && lipar_session_chunks(s) > 0 && !open_outputs(&a, &wo, &out, &sbs, &fw)) {
            failed = 1;
            break;
        }
        if (out && !drain(s, &fw, &inputs, &spares, &pulled, &frames_out, &t_pull, &t_write)) {
            fprintf(stderr, "lipar edit: %s\n", fw.message);
            failed = write_failed = 1;
            break;
        }
        progress(&a, tty, frames_in, total, t0, s, 0);
    }
    reader_stop(&fr);
    if (!failed && frames_in == 0) {
        fprintf(stderr, "lipar edit: %s: no frames to edit\n", a.input);
        goto out;
    }
    /* the current chunk is finished (padded) also after an interruption */
    if (!failed && lipar_session_finish(s) != LIPAR_OK) {
        fprintf(stderr, "lipar edit: %s\n", lipar_last_error());
        failed = 1;
    }
    if (!failed && !out && !open_outputs(&a, &wo, &out, &sbs, &fw)) failed = 1;
    if (fw.started && !write_failed) {
        int drained = drain(s, &fw, &inputs, &spares, &pulled, &frames_out, &t_pull, &t_write);
        tc = lp_seconds();
        if (!drained || !writer_finish(&fw)) {
            fprintf(stderr, "lipar edit: %s\n", fw.message);
            failed = 1;
        }
        t_flush = lp_seconds() - tc;
    }
    double t_end = lp_seconds(), seconds = t_end - t0;
    progress(&a, tty, frames_in, frames_in, t0, s, 1);
    run_times rt = {frames_out, seconds, t_first ? frames_out - frames_at_first : 0, t_first ? t_end - t_first : 0,
                    t_read, t_push, t_pull, t_write, t_flush, fr.busy, fw.busy};
    if (a.stats && !write_stats(a.stats, &a, s, m, &rt)) failed = 1;
    if (a.plot && !write_plot(a.plot, &a, s)) failed = 1;
    rc = failed ? 1 : interrupted ? 130 : 0;
    if (!a.quiet)
        fprintf(stderr, "lipar edit: wrote %d frames (%dx%d, %g fps) to %s in %.1f s%s\n", frames_out, w, h, a.fps,
                a.output, seconds, interrupted ? " (interrupted)" : "");
out:
    reader_stop(&fr);
    writer_finish(&fw);
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
    lp_pool_destroy(read_pool);
    lp_pool_destroy(write_pool);
    queue_free(&inputs);
    queue_free(&spares);
    free(pulled);
    free(a.prompt_owned);
    return rc;
}
