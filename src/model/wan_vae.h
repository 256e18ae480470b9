/* The Wan 2.1 VAE (spec/VAE.md, "Wan VAE"): a causal 3-D convolutional
 * encoder (pixels -> normalised latents, 8x spatial and 4x temporal) and
 * decoder, both streaming with a causal cache, on a backend (the CPU in f32;
 * CUDA with bf16 tensor-core convolutions and f32 activations).
 *
 * Layout: frames are [3][H][W] f32 with pixels in [-1, 1]; latent frames are
 * [z_dim][H/8][W/8], normalised ((mu - mean) / std with the 16 constants of the
 * spec). Runs of frames are frame-major ([n][C][H][W]); transpose at the
 * boundary from PyTorch's NCTHW.
 *
 * Streaming: a session is opened for one frame size and preallocates every
 * buffer it will use (causal caches, activations, im2col scratch); encoding or
 * decoding a clip of any length allocates nothing more. */
#ifndef LP_WAN_VAE_H
#define LP_WAN_VAE_H

#include <stddef.h>

#include "../backend/backend.h"
#include "../io/tensor_file.h"

#define LP_WAN_VAE_MAX_STAGES 8

typedef struct {
    int dim;                /* base width (96 in Wan2.1_VAE.pth) */
    int z_dim;              /* latent channels (16) */
    int nstages;            /* len(dim_mult) (4) */
    int dim_mult[LP_WAN_VAE_MAX_STAGES];          /* [1, 2, 4, 4] */
    int num_res_blocks;     /* 2 */
    int temporal_down[LP_WAN_VAE_MAX_STAGES - 1]; /* [0, 1, 1]: which downsamples also halve time */
} lp_wan_vae_config;

typedef struct lp_wan_vae lp_wan_vae;

/* Loads the weights named prefix + upstream name ("encoder.conv1.weight", ...;
 * prefix "" for Wan2.1_VAE.pth, "w." for the golden files) from f, converted
 * to a model-owned f32 copy (f may be closed afterwards). The configuration is
 * detected from the shapes: dim from encoder.conv1, z_dim from conv2, the stages
 * and res blocks from the encoder.downsamples.* entries, the temporal
 * downsample flags from which resamples have a time_conv. A missing or
 * mis-shaped tensor fails with LP_ERR_MISSING / LP_ERR_SHAPE naming it. */
lp_status lp_wan_vae_load(const lp_tensor_file *f, const char *prefix, lp_wan_vae **out);
void lp_wan_vae_free(lp_wan_vae *m);
const lp_wan_vae_config *lp_wan_vae_config_of(const lp_wan_vae *m);
/* Spatial downscale factor between pixels and latents (8 for 4 stages). */
int lp_wan_vae_scale(const lp_wan_vae *m);

/* ---- encoder ---- */
typedef struct lp_wan_vae_encoder lp_wan_vae_encoder;

/* Opens an encoding session for frames of height x width (both multiples of
 * lp_wan_vae_scale) on backend be, where its buffers live; the model and the
 * backend must outlive the session, and one thread at a time uses them. */
lp_status lp_wan_vae_encoder_open(const lp_wan_vae *m, int height, int width, lp_backend *be,
                                  lp_wan_vae_encoder **out);
void lp_wan_vae_encoder_close(lp_wan_vae_encoder *e);
/* Starts a new clip: clears the causal caches. */
lp_status lp_wan_vae_encoder_reset(lp_wan_vae_encoder *e);
/* Encodes the next nframes frames ([nframes][3][H][W]) of the clip. The first
 * call of a clip takes 1 + 4k frames and yields 1 + k latent frames, later calls
 * take 4k frames and yield k (the reference's chunks of 1, 4, 4, ... frames;
 * one call with the whole clip gives the same result as many small ones).
 * latents receives *nlatents frames [z_dim][H/8][W/8]. */
lp_status lp_wan_vae_encode(lp_wan_vae_encoder *e, const float *frames, int nframes, float *latents, int *nlatents);
/* Bytes the session allocated, host and backend (all of it at open). */
size_t lp_wan_vae_encoder_bytes(const lp_wan_vae_encoder *e);

/* ---- decoder ---- */
typedef struct lp_wan_vae_decoder lp_wan_vae_decoder;

/* Opens a decoding session producing frames of height x width (multiples of
 * lp_wan_vae_scale). clamp != 0 clamps the output pixels to [-1, 1] as the Wan
 * pipeline does; 0 gives the raw decoder output (the golden reference). */
lp_status lp_wan_vae_decoder_open(const lp_wan_vae *m, int height, int width, int clamp, lp_backend *be,
                                  lp_wan_vae_decoder **out);
void lp_wan_vae_decoder_close(lp_wan_vae_decoder *d);
/* Starts a new clip: clears the causal caches. */
lp_status lp_wan_vae_decoder_reset(lp_wan_vae_decoder *d);
/* Decodes the next nlatents latent frames ([nlatents][z_dim][H/8][W/8],
 * normalised) one at a time: the first latent of a clip gives 1 frame, every
 * later one 4 frames. frames receives *nframes frames [3][H][W]; it must hold
 * 4 * nlatents frames. */
lp_status lp_wan_vae_decode(lp_wan_vae_decoder *d, const float *latents, int nlatents, float *frames, int *nframes);
/* Bytes the session allocated, host and backend (all of it at open). */
size_t lp_wan_vae_decoder_bytes(const lp_wan_vae_decoder *d);

#endif
