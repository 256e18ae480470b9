#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/json.h"

/* One runner per golden kind. */
lp_status check_sf_dit_t2v(lp_check_ctx *c, const lp_tensor_file *golden);
lp_status check_wan_vae(lp_check_ctx *c, const lp_tensor_file *golden);
lp_status check_lipar_edit_output(lp_check_ctx *c, const lp_tensor_file *golden);
lp_status check_taehv(lp_check_ctx *c, const lp_tensor_file *golden);
lp_status check_lipar_mask(lp_check_ctx *c, const lp_tensor_file *golden);
lp_status check_umt5_encoder(lp_check_ctx *c, const lp_tensor_file *golden);

static const struct {
    const char *kind;
    lp_check_fn fn;
    int any_backend; /* runs on --backend cuda too (else CPU only) */
} kinds[] = {
    {"sf_dit_t2v", check_sf_dit_t2v, 1},
    {"lipar_edit_output", check_lipar_edit_output, 1},
    {"umt5_encoder", check_umt5_encoder, 0},
    {"lipar_mask", check_lipar_mask, 0},
    {"taehv", check_taehv, 1},
    {"wan_vae", check_wan_vae, 1},
    /* more kinds are registered here */
};

void lp_check_compare(lp_check_ctx *c, const lp_tensor *ref, const float *got, int64_t numel) {
    int64_t n = lp_tensor_numel(ref);
    if (n != numel) {
        printf("%s shape mismatch: %lld elements computed, %lld expected FAIL\n", ref->name, (long long)numel,
               (long long)n);
        c->failed++;
        return;
    }
    float *want = malloc((size_t)(n ? n : 1) * sizeof *want);
    if (!want || lp_tensor_read_f32(ref, 0, n, want) != LP_OK) {
        printf("%s cannot read reference: %s FAIL\n", ref->name, want ? lp_last_error() : "out of memory");
        free(want);
        c->failed++;
        return;
    }
    double num = 0, den = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        if (!(fabs(d) <= mx)) mx = fabs(d);
    }
    free(want);
    double rel = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
    int ok = rel <= c->tol && isfinite(mx);
    printf("%s rel_l2=%.3e max_abs=%.3e %s\n", ref->name, rel, mx, ok ? "ok" : "FAIL");
    if (ok) c->passed++;
    else c->failed++;
}

void lp_check_compare_exact(lp_check_ctx *c, const lp_tensor *ref, const uint8_t *got, int64_t numel) {
    int64_t n = lp_tensor_numel(ref);
    if (n != numel || lp_dtype_size(ref->dtype) != 1) {
        printf("%s shape or dtype mismatch FAIL\n", ref->name);
        c->failed++;
        return;
    }
    const uint8_t *want = ref->data;
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += (got[i] != 0) != (want[i] != 0);
    printf("%s rel_l2=%.3e max_abs=%lld %s\n", ref->name, n ? (double)diff / (double)n : 0.0, (long long)diff,
           diff ? "FAIL" : "ok");
    if (diff) c->failed++;
    else c->passed++;
}

lp_status lp_check_load_f32(const lp_tensor_file *golden, const char *name, float **out, int64_t *numel) {
    const lp_tensor *t;
    LP_TRY(lp_tensor_file_get(golden, name, &t));
    int64_t n = lp_tensor_numel(t);
    float *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    if (!buf) return lp_fail(LP_ERR_NOMEM, "out of memory loading '%s'", name);
    lp_status s = lp_tensor_read_f32(t, 0, n, buf);
    if (s != LP_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    if (numel) *numel = n;
    return LP_OK;
}

static lp_status meta(const lp_tensor_file *g, const char *key, const char **v) {
    *v = lp_tensor_file_meta(g, key);
    if (!*v) return lp_fail(LP_ERR_MISSING, "%s: metadata key '%s' is missing", lp_tensor_file_path(g), key);
    return LP_OK;
}

lp_status lp_check_meta_int(const lp_tensor_file *golden, const char *key, int64_t *out) {
    const char *v;
    LP_TRY(meta(golden, key, &v));
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end)
        return lp_fail(LP_ERR_FORMAT, "%s: metadata '%s' = '%s' is not an integer", lp_tensor_file_path(golden), key, v);
    *out = x;
    return LP_OK;
}

lp_status lp_check_meta_double(const lp_tensor_file *golden, const char *key, double *out) {
    const char *v;
    LP_TRY(meta(golden, key, &v));
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end)
        return lp_fail(LP_ERR_FORMAT, "%s: metadata '%s' = '%s' is not a number", lp_tensor_file_path(golden), key, v);
    *out = x;
    return LP_OK;
}

lp_status lp_check_meta_doubles(const lp_tensor_file *golden, const char *key, double *out, int max, int *count) {
    const char *v;
    LP_TRY(meta(golden, key, &v));
    lp_json_doc *doc;
    LP_TRY(lp_json_parse(v, strlen(v), key, &doc));
    const lp_json *r = lp_json_root(doc);
    lp_status s = LP_OK;
    if (r->type != LP_JSON_ARRAY || (int)r->count > max) {
        s = lp_fail(LP_ERR_FORMAT, "%s: metadata '%s' is not an array of at most %d numbers",
                    lp_tensor_file_path(golden), key, max);
    } else {
        for (size_t i = 0; i < r->count && s == LP_OK; i++) s = lp_json_double(&r->children[i], &out[i]);
        *count = (int)r->count;
    }
    lp_json_free(doc);
    return s;
}

static void usage(void) {
    fprintf(stderr,
            "usage: lipar check FILE.safetensors [--weights FILE] [--inputs FILE] [--backend cpu|cuda]\n"
            "                   [--tol X] [--threads N]\n"
            "Runs the component named by the file's __metadata__.kind on its in.*/w.* tensors and\n"
            "prints one line per out.* tensor: <name> rel_l2=<v> max_abs=<v> ok|FAIL.\n");
}

int lp_check_main(int argc, char **argv) {
    lp_check_ctx c = {.backend = "cpu", .tol = -1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--weights") && next) c.weights_path = argv[++i];
        else if (!strcmp(a, "--inputs") && next) c.inputs_path = argv[++i];
        else if (!strcmp(a, "--backend") && next) c.backend = argv[++i];
        else if (!strcmp(a, "--tol") && next) c.tol = atof(argv[++i]);
        else if (!strcmp(a, "--threads") && next) c.threads = atoi(argv[++i]);
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (a[0] != '-' && !c.golden_path) c.golden_path = a;
        else { fprintf(stderr, "lipar check: unexpected argument '%s'\n", a); usage(); return 2; }
    }
    if (!c.golden_path) { usage(); return 2; }
    if (c.tol < 0) c.tol = strcmp(c.backend, "cpu") ? 2e-2 : 1e-5;
    lp_tensor_file *g;
    if (lp_tensor_file_open(c.golden_path, &g) != LP_OK) {
        fprintf(stderr, "lipar check: %s\n", lp_last_error());
        return 1;
    }
    const char *kind = lp_tensor_file_meta(g, "kind");
    lp_check_fn fn = NULL;
    int any_backend = 0;
    for (size_t i = 0; kind && i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(kinds[i].kind, kind)) {
            fn = kinds[i].fn;
            any_backend = kinds[i].any_backend;
        }
    int rc;
    if (fn && !any_backend && strcmp(c.backend, "cpu")) {
        fprintf(stderr, "lipar check: kind '%s' runs on the CPU backend only\n", kind);
        rc = 1;
    } else if (!kind) {
        fprintf(stderr, "lipar check: %s has no __metadata__.kind\n", c.golden_path);
        rc = 1;
    } else if (!fn) {
        fprintf(stderr, "lipar check: %s: unknown kind '%s'\n", c.golden_path, kind);
        rc = 1;
    } else if (fn(&c, g) != LP_OK) {
        fprintf(stderr, "lipar check: %s\n", lp_last_error());
        rc = 1;
    } else {
        printf("check: %d passed, %d failed\n", c.passed, c.failed);
        rc = c.failed ? 1 : 0;
    }
    lp_tensor_file_close(g);
    return rc;
}
