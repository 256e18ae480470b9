/* TAEHV, the tiny video autoencoder for Wan 2.1 latents (`taew2_1`), in
 * streaming form (spec/VAE.md, "TAEHV, Wan 2.1 variant"), on any backend
 * through the op table (backend.h: conv2d, relu, tanh_clamp, clamp01, copy,
 * rgb24_to_planar, planar_to_rgb24).
 *
 * The encoder takes RGB frames [3, H, W] in [0, 1] one at a time (or a chunk)
 * and emits a latent frame [C, H/8, W/8] whenever time_downscale (4) frames are
 * complete; the decoder takes latent frames and emits time_upscale (4) frames
 * for each. Each MemBlock keeps its previous input, each TPool a running sum of
 * its strided 1×1 conv, each TGrow its output until its frames have been
 * consumed: memory does not grow with the clip length, and any split of a clip
 * into chunks gives the same result as the whole-clip (parallel) reference.
 *
 * Weights are converted once at load into a model-owned f32 copy (≈11M params)
 * that the ops see as lp_tensor views (a caching backend uploads each once,
 * keyed by its address). All streaming state (MemBlock memories, TPool sums,
 * TGrow frames, activations) lives in the backend's memory, allocated when an
 * encoder/decoder is created; frames and latents cross the API as host
 * arrays, uploaded and downloaded per push. One model may serve several
 * encoder/decoder states; the backend's ops are not thread-safe, so all of
 * them are used from one thread at a time. */
#ifndef LP_TAEHV_H
#define LP_TAEHV_H

#include "../backend/backend.h"
#include "../io/tensor_file.h"

typedef struct lp_taehv lp_taehv;
typedef struct lp_taehv_encoder lp_taehv_encoder;
typedef struct lp_taehv_decoder lp_taehv_decoder;

/* Loads the `encoder.N.*` / `decoder.N.*` tensors named prefix + upstream name
 * (prefix "w." for the golden files, "" for the published taew2_1 file; NULL
 * means ""), to run on be (which must outlive the model and every state made
 * from it). Channel counts come from the shapes (latent channels, widths) and
 * so do the TPool/TGrow time strides; the layer sequence is the spec's. Fails
 * with LP_ERR_MISSING / LP_ERR_SHAPE naming the tensor that is absent or does
 * not fit, LP_ERR_UNSUPPORTED for non-float tensors or a patch size other than 1. */
lp_status lp_taehv_load(const lp_tensor_file *f, const char *prefix, lp_backend *be, lp_taehv **out);
/* Frees the model. A caching backend (CUDA) keys its weight copies by host
 * address, so no other weights may be loaded on that backend afterwards (they
 * could reuse the freed addresses); free the backend next. */
void lp_taehv_free(lp_taehv *m);

int lp_taehv_latent_channels(const lp_taehv *m);
/* Input frames per latent frame (product of the TPool strides; 4 for taew2_1). */
int lp_taehv_time_downscale(const lp_taehv *m);
/* Output frames per latent frame (product of the TGrow strides; 4 for taew2_1). */
int lp_taehv_time_upscale(const lp_taehv *m);

/* ---- encoder ---- */

/* A streaming encoder for frames of height × width (any size ≥ 1; the latent is
 * ceil-halved three times), its state in the model's backend. */
lp_status lp_taehv_encoder_create(const lp_taehv *m, int height, int width, lp_taehv_encoder **out);
void lp_taehv_encoder_free(lp_taehv_encoder *e);
/* The shape of one latent frame [c, h, w]. */
void lp_taehv_encoder_latent_shape(const lp_taehv_encoder *e, int *c, int *h, int *w);
/* How many latent frames pushing n more frames will emit. */
int lp_taehv_encoder_count(const lp_taehv_encoder *e, int n);
/* Pushes n frames (frames: [n, 3, H, W] f32 in [0, 1]) and writes the latent
 * frames they complete, in order, to latents ([max_latents, c, h, w]);
 * *n_latents receives their number. Fails with LP_ERR_ARG, before consuming
 * anything, when more than max_latents would be emitted. */
lp_status lp_taehv_encoder_push(lp_taehv_encoder *e, const float *frames, int n, float *latents, int max_latents,
                                int *n_latents);
/* The same with frames of packed 8-bit RGB [n, H, W, 3], made [0, 1] floats
 * on the backend (b / 255, src/base/pixels.h): what a video reader gives,
 * and a quarter of the floats' transfer to a GPU. */
lp_status lp_taehv_encoder_push_rgb24(lp_taehv_encoder *e, const uint8_t *frames, int n, float *latents,
                                      int max_latents, int *n_latents);
/* Ends the clip: if the number of frames pushed since the last reset is not a
 * multiple of time_downscale, pushes copies of the last frame until it is (as
 * upstream encode_video pads), emitting at most one latent frame. */
lp_status lp_taehv_encoder_flush(lp_taehv_encoder *e, float *latents, int max_latents, int *n_latents);
/* Forgets all history: the next frame starts a new clip. Fails only when the
 * backend fails to clear the MemBlock memories. */
lp_status lp_taehv_encoder_reset(lp_taehv_encoder *e);
/* FLOPs spent so far: the convolutions counted as direct convolutions (2 per
 * multiply-add), whatever algorithm the backend uses. */
double lp_taehv_encoder_flops(const lp_taehv_encoder *e);

/* ---- decoder ---- */

typedef struct {
    int trim;  /* 1: drop the first time_upscale − 1 frames of the clip, as upstream
                  decode_video does (T latents → 4T − 3 frames); 0: keep all 4T (LIPAR) */
    int clamp; /* 1: clamp the output to [0, 1] (upstream); 0: raw decoder output */
} lp_taehv_decoder_opts;

/* The defaults: trim = 0 (keep 4T frames), clamp = 1. */
lp_taehv_decoder_opts lp_taehv_decoder_defaults(void);

/* A streaming decoder for latent frames [c, lat_h, lat_w], its state in the
 * model's backend; frames come out as [3, 8·lat_h, 8·lat_w]. opts NULL means
 * the defaults. */
lp_status lp_taehv_decoder_create(const lp_taehv *m, int lat_h, int lat_w, const lp_taehv_decoder_opts *opts,
                                  lp_taehv_decoder **out);
void lp_taehv_decoder_free(lp_taehv_decoder *d);
/* The shape of one decoded frame [3, h, w]. */
void lp_taehv_decoder_frame_shape(const lp_taehv_decoder *d, int *c, int *h, int *w);
/* How many frames pushing n more latent frames will emit (after trimming). */
int lp_taehv_decoder_count(const lp_taehv_decoder *d, int n);
/* Pushes n latent frames ([n, c, lat_h, lat_w]) and writes the frames they
 * decode, in time order, to frames ([max_frames, 3, h, w]); *n_frames receives
 * their number. Fails with LP_ERR_ARG, before consuming anything, when more
 * than max_frames would be emitted. */
lp_status lp_taehv_decoder_push(lp_taehv_decoder *d, const float *latents, int n, float *frames, int max_frames,
                                int *n_frames);
/* The same with the frames written as packed 8-bit RGB [max_frames, h, w, 3],
 * made on the backend (clamped to [0, 1], then src/base/pixels.h's rounding),
 * whatever opts.clamp says. */
lp_status lp_taehv_decoder_push_rgb24(lp_taehv_decoder *d, const float *latents, int n, uint8_t *frames,
                                      int max_frames, int *n_frames);
/* Forgets all history (and restarts the trimming count); fails as the encoder's. */
lp_status lp_taehv_decoder_reset(lp_taehv_decoder *d);
/* FLOPs spent so far, counted as the encoder's. */
double lp_taehv_decoder_flops(const lp_taehv_decoder *d);

#endif
