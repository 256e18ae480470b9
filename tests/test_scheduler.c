/* The flow-matching scheduler (src/pipeline/scheduler.h, spec/MODEL.md "KV
 * cache and the streaming loop"): the exact fp32 warped timesteps of the
 * Self-Forcing and LIPAR step lists, σ lookups, x0 in fp64 and add_noise in
 * fp32, and the warped timesteps recorded in the golden files' metadata. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/json.h"
#include "../src/io/tensor_file.h"
#include "../src/pipeline/scheduler.h"
#include "test_util.h"

/* CHECK for conditions whose text says it all */
#define REQUIRE(cond) CHECK(cond, "%s", "")

static int check_warp(const lp_flow_schedule *s, const int *steps, const float *want, int n) {
    for (int i = 0; i < n; i++) {
        float t = lp_flow_warp(s, steps[i]);
        CHECK(t == want[i], "warp(%d) = %.10g, want %.10g", steps[i], t, want[i]);
    }
    return 0;
}

static int test_warp(void) {
    lp_flow_schedule s;
    lp_flow_schedule_init(&s, 5.0f);
    REQUIRE(s.shift == 5.0f);
    const int sf[4] = {1000, 750, 500, 250}, lipar[3] = {400, 300, 250};
    const float sf_t[4] = {1000.0f, 937.5f, 833.3333129882812f, 625.0f};
    const float lipar_t[3] = {769.2307739257812f, 681.8181762695312f, 625.0f};
    if (check_warp(&s, sf, sf_t, 4) || check_warp(&s, lipar, lipar_t, 3)) return 1;
    REQUIRE(lp_flow_warp(&s, 0) == 0.0f && lp_flow_warp(&s, -1) == -1.0f && lp_flow_warp(&s, 1001) == -1.0f);
    /* the table follows σ = s·u/(1+(s−1)·u), u = 1 − i/1000, and decreases */
    for (int i = 0; i < LP_FLOW_TRAIN_STEPS; i++) {
        double u = 1.0 - i / 1000.0, sg = 5.0 * u / (1.0 + 4.0 * u);
        CHECK(fabs(s.sigmas[i] - sg) <= 4e-7 * sg, "sigma[%d] = %.9g, want %.9g", i, s.sigmas[i], sg);
        REQUIRE(s.timesteps[i] == s.sigmas[i] * 1000.0f);
        REQUIRE(i == 0 || s.timesteps[i] < s.timesteps[i - 1]);
    }
    REQUIRE(s.sigmas[0] == 1.0f);
    /* shift 1 is the identity warp: t = 1000·u */
    lp_flow_schedule id;
    lp_flow_schedule_init(&id, 1.0f);
    for (int n = 1; n <= 1000; n++)
        CHECK(fabsf(lp_flow_warp(&id, n) - (float)n) <= 1e-4f * n, "shift 1: warp(%d) = %.9g", n, lp_flow_warp(&id, n));
    return 0;
}

static int test_sigma_lookup(void) {
    lp_flow_schedule s;
    lp_flow_schedule_init(&s, 5.0f);
    const int steps[7] = {1000, 750, 500, 250, 400, 300, 1};
    for (int k = 0; k < 7; k++) {
        float t = lp_flow_warp(&s, steps[k]);
        float sg = lp_flow_sigma(&s, t);
        CHECK(sg == s.sigmas[1000 - steps[k]] && sg * 1000.0f == t, "sigma(%.9g) = %.9g", t, sg);
        CHECK(fabs(sg - t / 1000.0) <= 1e-7, "sigma(%.9g) = %.9g, not t/1000", t, sg);
        /* the nearest timestep wins for a slightly perturbed t */
        REQUIRE(lp_flow_sigma(&s, nextafterf(t, 0)) == sg && lp_flow_sigma(&s, t + 1e-3f) == sg);
    }
    REQUIRE(lp_flow_sigma(&s, 1000.0f) == 1.0f && lp_flow_sigma(&s, 5000.0f) == 1.0f);
    REQUIRE(lp_flow_sigma(&s, 0.0f) == s.sigmas[999] && lp_flow_sigma(&s, -3.0f) == s.sigmas[999]);
    /* halfway between two timesteps: the first (the larger t), like argmin */
    float a = s.timesteps[500], b = s.timesteps[501];
    float mid = (float)(((double)a + b) / 2);
    if ((double)a - mid == (double)mid - b) REQUIRE(lp_flow_sigma(&s, mid) == s.sigmas[500]);
    return 0;
}

static int test_x0(void) {
    enum { N = 20000 };
    float *xt = malloc(N * sizeof *xt), *v = malloc(N * sizeof *v), *x0 = malloc(N * sizeof *x0);
    REQUIRE(xt && v && x0);
    lp_test_fill(xt, N, 71, 3.0f);
    lp_test_fill(v, N, 72, 3.0f);
    const float sigma = 0.8333333f;
    lp_flow_x0(x0, xt, v, sigma, N);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        float want = (float)((double)xt[i] - (double)sigma * (double)v[i]);
        volatile float prod = sigma * v[i]; /* the fp32 computation, rounded twice */
        float f32 = xt[i] - prod;
        CHECK(x0[i] == want, "element %d: %.9g, want %.9g (fp32 gives %.9g)", i, x0[i], want, f32);
        differ += f32 != want;
    }
    printf("    fp64 and fp32 x0 differ in %d of %d elements; lp_flow_x0 matches fp64 in all\n", differ, N);
    CHECK(differ > 0, "no element tells fp64 from fp32");
    lp_flow_x0(x0, xt, v, sigma, 0); /* n = 0 touches nothing */
    free(xt), free(v), free(x0);
    return 0;
}

static int test_add_noise(void) {
    enum { N = 4099 };
    float x0[N], eps[N], x[N];
    lp_test_fill(x0, N, 81, 2.0f);
    lp_test_fill(eps, N, 82, 3.0f);
    const float sigmas[4] = {0.0f, 0.9375f, 0.6818181872f, 1.0f};
    for (int k = 0; k < 4; k++) {
        float sg = sigmas[k];
        lp_flow_add_noise(x, x0, eps, sg, N);
        for (int i = 0; i < N; i++) {
            volatile float a = (1.0f - sg) * x0[i], b = sg * eps[i];
            float want = a + b; /* fp32 throughout */
            CHECK(x[i] == want, "sigma %g element %d: %.9g, want %.9g", sg, i, x[i], want);
        }
    }
    lp_flow_add_noise(x, x0, eps, 0.0f, N);
    REQUIRE(!memcmp(x, x0, sizeof x));
    lp_flow_add_noise(x, x0, eps, 1.0f, N);
    REQUIRE(!memcmp(x, eps, sizeof x));
    return 0;
}

/* The golden files record the step list, the shift and the exact fp32
 * timesteps the reference used. */
static int test_golden_metadata(void) {
    static const char *const files[] = {"golden/sf_dit_t2v.safetensors", "golden/sf_dit_t2v_window.safetensors"};
    for (int fi = 0; fi < 2; fi++) {
        const char *path = lp_test_shared(files[fi]);
        if (!path) return lp_test_skip_shared(files[fi]);
        lp_tensor_file *f;
        CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
        const char *shift = lp_tensor_file_meta(f, "timestep_shift");
        const char *steps = lp_tensor_file_meta(f, "denoising_step_list");
        const char *warped = lp_tensor_file_meta(f, "warped_timesteps");
        lp_json_doc *ds = NULL, *dw = NULL, *dsh = NULL;
        int ok = shift && steps && warped && lp_json_parse(shift, strlen(shift), "timestep_shift", &dsh) == LP_OK &&
                 lp_json_parse(steps, strlen(steps), "denoising_step_list", &ds) == LP_OK &&
                 lp_json_parse(warped, strlen(warped), "warped_timesteps", &dw) == LP_OK;
        const lp_json *js = ok ? lp_json_root(ds) : NULL, *jw = ok ? lp_json_root(dw) : NULL;
        double sh = 0;
        ok = ok && lp_json_double(lp_json_root(dsh), &sh) == LP_OK && js->type == LP_JSON_ARRAY &&
             jw->type == LP_JSON_ARRAY && js->count == jw->count && js->count > 0;
        lp_flow_schedule s;
        lp_flow_schedule_init(&s, (float)sh);
        for (size_t i = 0; ok && i < js->count; i++) {
            int64_t n;
            double t;
            ok = lp_json_int64(&js->children[i], &n) == LP_OK && lp_json_double(&jw->children[i], &t) == LP_OK;
            if (ok && lp_flow_warp(&s, (int)n) != (float)t) {
                fprintf(stderr, "  %s: warp(%lld) = %.10g, metadata says %.10g\n", files[fi], (long long)n,
                        lp_flow_warp(&s, (int)n), t);
                ok = 0;
            }
        }
        lp_json_free(ds), lp_json_free(dw), lp_json_free(dsh);
        lp_tensor_file_close(f);
        CHECK(ok, "%s: metadata missing, malformed or not matched (%s)", files[fi], lp_last_error());
    }
    return 0;
}

int main(void) {
    lp_test_run("warp", test_warp);
    lp_test_run("sigma_lookup", test_sigma_lookup);
    lp_test_run("x0", test_x0);
    lp_test_run("add_noise", test_add_noise);
    lp_test_run("golden_metadata", test_golden_metadata);
    return lp_test_finish();
}
