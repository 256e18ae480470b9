/* The safetensors reader (src/io/safetensors.c through lp_tensor_file_open):
 * a valid file with every common dtype, scalars, empty tensors and metadata
 * (zero-copy views, lookups), one case per validation rule of
 * spec/CHECKPOINTS.md (each must fail with a message naming the problem), a
 * file with thousands of tensors, and header corruption that must never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/half.h"
#include "../src/io/tensor_file.h"
#include "../src/io/tensor_file_impl.h" /* f->map: views are checked to be zero-copy */
#include "test_util.h"

/* CHECK for conditions whose text says it all */
#define REQUIRE(cond) CHECK(cond, "%s", "")

/* ---- writing test files ---- */

static const char *tmp_path(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", lp_test_tmpdir(), name);
    return buf;
}

/* Files written, removed at exit. */
static char *written[128];
static int nwritten;

static int write_bytes(const char *path, const void *data, size_t len) {
    if (nwritten < 128) written[nwritten++] = strdup(path);
    FILE *fp = fopen(path, "wb");
    if (!fp) return 1;
    size_t w = len ? fwrite(data, 1, len, fp) : 0;
    return (fclose(fp) != 0) | (w != len);
}

/* A safetensors image in memory: the 8-byte little-endian length hlen (not
 * necessarily the true one), the header text, then dlen bytes of data. */
static unsigned char *image(const char *header, uint64_t hlen, const void *data, size_t dlen, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + dlen;
    unsigned char *b = malloc(*len);
    if (!b) return NULL;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dlen) memcpy(b + 8 + hl, data, dlen);
    return b;
}

/* Writes header + data under name with the true header length. */
static int write_st(const char *name, const char *header, const void *data, size_t dlen) {
    size_t len;
    unsigned char *b = image(header, strlen(header), data, dlen, &len);
    int r = !b || write_bytes(tmp_path(name), b, len);
    free(b);
    return r;
}

/* Opens name expecting failure with code and a message containing substr and
 * the path. */
static int expect_open_fails(const char *name, lp_status code, const char *substr) {
    const char *path = tmp_path(name);
    lp_tensor_file *f = (lp_tensor_file *)&f;
    lp_status s = lp_tensor_file_open(path, &f);
    if (s == LP_OK) lp_tensor_file_close(f);
    CHECK(s == code && f == NULL, "%s: status %s, want %s", name, lp_status_name(s), lp_status_name(code));
    CHECK(strstr(lp_last_error(), substr) && strstr(lp_last_error(), path), "%s: message '%s' lacks '%s'", name,
          lp_last_error(), substr);
    printf("    %-22s -> %s\n", name, lp_last_error() + strlen(lp_test_tmpdir()) + 1);
    return 0;
}

/* A header with one F32 [2] tensor whose entry is given, and 8 data bytes. */
static int one_entry_case(const char *name, const char *entry, lp_status code, const char *substr) {
    char header[512];
    snprintf(header, sizeof header, "{\"t\": %s}", entry);
    float data[2] = {1, 2};
    REQUIRE(write_st(name, header, data, sizeof data) == 0);
    return expect_open_fails(name, code, substr);
}

/* ---- the valid file ---- */

typedef struct {
    float f32[6];
    uint16_t f16[4], bf16[4];
    int64_t i64[3];
    int32_t i32[2];
    uint8_t u8[5], boolean[3];
    float scalar;
} valid_data;

static const char valid_header[] =
    "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"caf\\u00e9 \\\"quoted\\\"\"},"
    " \"w.f32\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
    " \"w.f16\": {\"dtype\": \"F16\", \"shape\": [4], \"data_offsets\": [24, 32]},"
    " \"w.bf16\": {\"shape\": [2, 2], \"dtype\": \"BF16\", \"data_offsets\": [32, 40]},"
    " \"i64\": {\"dtype\": \"I64\", \"shape\": [3, 1], \"data_offsets\": [40, 64]},"
    " \"i32\": {\"dtype\": \"I32\", \"shape\": [1, 2], \"data_offsets\": [64, 72]},"
    " \"u8\": {\"dtype\": \"U8\", \"shape\": [5], \"data_offsets\": [72, 77]},"
    " \"bool\": {\"dtype\": \"BOOL\", \"shape\": [3], \"data_offsets\": [77, 80]},"
    " \"scalar\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [80, 84]},"
    " \"empty\": {\"dtype\": \"F32\", \"shape\": [0, 4], \"data_offsets\": [84, 84]}}   ";

static void fill_valid(valid_data *d) {
    memset(d, 0, sizeof *d);
    lp_test_fill(d->f32, 6, 1, 3.0f);
    float h[4];
    lp_test_fill(h, 4, 2, 2.0f);
    for (int i = 0; i < 4; i++) d->f16[i] = lp_f32_to_f16(h[i]), d->bf16[i] = lp_f32_to_bf16(-h[i]);
    d->i64[0] = INT64_MIN, d->i64[1] = -1, d->i64[2] = INT64_MAX;
    d->i32[0] = -123456, d->i32[1] = 7;
    for (int i = 0; i < 5; i++) d->u8[i] = (uint8_t)(250 + i);
    d->boolean[0] = 1, d->boolean[2] = 1;
    d->scalar = 0.25f;
}

static int check_valid(lp_tensor_file *f, const valid_data *d, size_t header_len) {
    REQUIRE(lp_tensor_file_format(f) == LP_FORMAT_SAFETENSORS && lp_tensor_file_count(f) == 9);
    /* tensors come in name order */
    static const char *const sorted[] = {"bool", "empty", "i32", "i64", "scalar", "u8", "w.bf16", "w.f16", "w.f32"};
    for (size_t i = 0; i < 9; i++) CHECK(!strcmp(lp_tensor_file_at(f, i)->name, sorted[i]), "tensor %zu", i);
    REQUIRE(lp_tensor_file_at(f, 9) == NULL);
    /* zero-copy: each view points into the mapped file at its offset */
    const unsigned char *data = f->map + 8 + header_len;
    const lp_tensor *t;
    REQUIRE(lp_tensor_file_get(f, "w.f32", &t) == LP_OK);
    REQUIRE(t->dtype == LP_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24);
    REQUIRE(t->data == data && lp_tensor_numel(t) == 6 && !memcmp(t->data, d->f32, 24));
    float v[6];
    REQUIRE(lp_tensor_read_f32(t, 1, 5, v) == LP_OK && !memcmp(v, d->f32 + 1, 20));
    t = lp_tensor_file_find(f, "w.f16");
    REQUIRE(t && t->dtype == LP_F16 && t->ndim == 1 && t->shape[0] == 4 && t->data == data + 24);
    REQUIRE(lp_tensor_read_f32(t, 0, 4, v) == LP_OK);
    for (int i = 0; i < 4; i++) REQUIRE(v[i] == lp_f16_to_f32(d->f16[i]));
    t = lp_tensor_file_find(f, "w.bf16");
    REQUIRE(t && t->dtype == LP_BF16 && t->ndim == 2 && t->shape[1] == 2 && t->data == data + 32);
    REQUIRE(lp_tensor_read_f32(t, 2, 2, v) == LP_OK && v[0] == lp_bf16_to_f32(d->bf16[2]) &&
            v[1] == lp_bf16_to_f32(d->bf16[3]));
    t = lp_tensor_file_find(f, "i64");
    REQUIRE(t && t->dtype == LP_I64 && t->ndim == 2 && t->shape[0] == 3 && t->data == data + 40);
    REQUIRE(!memcmp(t->data, d->i64, 24));
    CHECK(lp_tensor_read_f32(t, 0, 1, v) == LP_ERR_UNSUPPORTED && strstr(lp_last_error(), "i64"), "%s",
          lp_last_error());
    t = lp_tensor_file_find(f, "i32");
    REQUIRE(t && t->dtype == LP_I32 && t->nbytes == 8 && !memcmp(t->data, d->i32, 8));
    t = lp_tensor_file_find(f, "u8");
    REQUIRE(t && t->dtype == LP_U8 && t->nbytes == 5 && !memcmp(t->data, d->u8, 5));
    t = lp_tensor_file_find(f, "bool");
    REQUIRE(t && t->dtype == LP_BOOL && t->shape[0] == 3 && !memcmp(t->data, d->boolean, 3));
    t = lp_tensor_file_find(f, "scalar");
    REQUIRE(t && t->ndim == 0 && lp_tensor_numel(t) == 1 && lp_tensor_read_f32(t, 0, 1, v) == LP_OK && v[0] == 0.25f);
    t = lp_tensor_file_find(f, "empty");
    REQUIRE(t && t->ndim == 2 && lp_tensor_numel(t) == 0 && t->nbytes == 0);
    /* shapes, range checks, lookups of absent names */
    char buf[64];
    REQUIRE(!strcmp(lp_shape_str(lp_tensor_file_find(f, "w.f32"), buf, sizeof buf), "[2, 3]"));
    REQUIRE(!strcmp(lp_shape_str(lp_tensor_file_find(f, "scalar"), buf, sizeof buf), "[]"));
    const int64_t want[2] = {2, -1}, wrong[2] = {3, 3};
    REQUIRE(lp_tensor_expect(lp_tensor_file_find(f, "w.f32"), "test", 2, want) == LP_OK);
    CHECK(lp_tensor_expect(lp_tensor_file_find(f, "w.f32"), "test", 2, wrong) == LP_ERR_SHAPE &&
              strstr(lp_last_error(), "'w.f32' has shape [2, 3], expected [3, 3]"),
          "%s", lp_last_error());
    CHECK(lp_tensor_read_f32(lp_tensor_file_find(f, "w.f32"), 4, 3, v) == LP_ERR_ARG &&
              strstr(lp_last_error(), "out of range"),
          "%s", lp_last_error());
    CHECK(lp_tensor_read_f32(lp_tensor_file_find(f, "w.f32"), INT64_MAX, 1, v) == LP_ERR_ARG &&
              lp_tensor_read_f32(lp_tensor_file_find(f, "w.f32"), 1, INT64_MAX, v) == LP_ERR_ARG &&
              lp_tensor_read_f32(lp_tensor_file_find(f, "w.f32"), -1, 1, v) == LP_ERR_ARG,
          "%s", lp_last_error());
    REQUIRE(lp_tensor_file_find(f, "w.f3") == NULL && lp_tensor_file_find(f, "") == NULL &&
            lp_tensor_file_find(f, "zzz") == NULL);
    CHECK(lp_tensor_file_get(f, "w.nope", &t) == LP_ERR_MISSING && t == NULL && strstr(lp_last_error(), "'w.nope'"),
          "%s", lp_last_error());
    /* metadata */
    REQUIRE(lp_tensor_file_meta_count(f) == 2);
    REQUIRE(!strcmp(lp_tensor_file_meta(f, "format"), "pt"));
    REQUIRE(!strcmp(lp_tensor_file_meta(f, "note"), "caf\xc3\xa9 \"quoted\""));
    REQUIRE(lp_tensor_file_meta(f, "absent") == NULL);
    const char *k, *val;
    lp_tensor_file_meta_at(f, 0, &k, &val);
    REQUIRE(!strcmp(k, "format") && !strcmp(val, "pt"));
    lp_tensor_file_meta_at(f, 2, &k, &val);
    REQUIRE(k == NULL && val == NULL);
    return 0;
}

static int test_valid(void) {
    valid_data d;
    fill_valid(&d);
    REQUIRE(sizeof d >= 84 && strlen(valid_header) % 8 == 0); /* padded with spaces, as writers do */
    REQUIRE(write_st("valid.safetensors", valid_header, &d, 84) == 0);
    lp_tensor_file *f;
    const char *path = tmp_path("valid.safetensors");
    CHECK(lp_tensor_file_open(path, &f) == LP_OK, "%s", lp_last_error());
    REQUIRE(!strcmp(lp_tensor_file_path(f), path));
    int r = check_valid(f, &d, strlen(valid_header));
    lp_tensor_file_close(f);
    if (r) return r;
    /* the same bytes from memory */
    size_t len;
    unsigned char *b = image(valid_header, strlen(valid_header), &d, 84, &len);
    REQUIRE(b);
    lp_status s = lp_tensor_file_open_memory(b, len, "mem", &f);
    free(b);
    CHECK(s == LP_OK, "%s", lp_last_error());
    r = check_valid(f, &d, strlen(valid_header));
    lp_tensor_file_close(f);
    return r;
}

/* Data at odd offsets (an odd header length, as the format allows): every
 * view is aligned for its dtype and reads back correctly. */
static int test_unaligned(void) {
    static const char header[] = "{\"u\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                                 " \"h\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [1, 7]},"
                                 " \"b\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [7, 13]},"
                                 " \"d\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [13, 29]},"
                                 " \"f\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [29, 37]}}";
    unsigned char data[37];
    const float vals[3] = {1.5f, -2.25f, 3.0f};
    data[0] = 9;
    for (int i = 0; i < 3; i++) {
        uint16_t h = lp_f32_to_f16(vals[i]), b = lp_f32_to_bf16(vals[i]);
        memcpy(data + 1 + 2 * i, &h, 2);
        memcpy(data + 7 + 2 * i, &b, 2);
    }
    const double dv[2] = {0.5, -4.0};
    memcpy(data + 13, dv, 16);
    memcpy(data + 29, vals, 8);
    REQUIRE(write_st("unaligned.safetensors", header, data, sizeof data) == 0);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(tmp_path("unaligned.safetensors"), &f) == LP_OK, "%s", lp_last_error());
    for (size_t i = 0; i < lp_tensor_file_count(f); i++) {
        const lp_tensor *t = lp_tensor_file_at(f, i);
        CHECK((uintptr_t)t->data % lp_dtype_size(t->dtype) == 0, "'%s' at %p", t->name, t->data);
    }
    float v[3];
    REQUIRE(lp_tensor_read_f32(lp_tensor_file_find(f, "h"), 0, 3, v) == LP_OK && !memcmp(v, vals, 12));
    REQUIRE(lp_tensor_read_f32(lp_tensor_file_find(f, "b"), 0, 3, v) == LP_OK && !memcmp(v, vals, 12));
    REQUIRE(lp_tensor_read_f32(lp_tensor_file_find(f, "d"), 0, 2, v) == LP_OK && v[0] == 0.5f && v[1] == -4.0f);
    REQUIRE(lp_tensor_read_f32(lp_tensor_file_find(f, "f"), 0, 2, v) == LP_OK && !memcmp(v, vals, 8));
    lp_tensor_file_close(f);
    return 0;
}

/* ---- one test per validation rule ---- */

static int test_empty_and_short(void) {
    REQUIRE(write_bytes(tmp_path("empty.safetensors"), "", 0) == 0);
    if (expect_open_fails("empty.safetensors", LP_ERR_FORMAT, "(0 bytes)")) return 1;
    REQUIRE(write_bytes(tmp_path("short.safetensors"), "\x02\0\0\0\0", 5) == 0);
    if (expect_open_fails("short.safetensors", LP_ERR_FORMAT, "(5 bytes)")) return 1;
    return expect_open_fails("absent.safetensors", LP_ERR_IO, "cannot open");
}

static int test_header_length(void) {
    static const uint64_t lens[] = {1000, (uint64_t)1 << 63, UINT64_MAX, 3};
    static const char *const names[] = {"hlen_1000", "hlen_2^63", "hlen_2^64-1", "hlen_3"};
    /* the last one cuts the header to '{"a' */
    for (int i = 0; i < 4; i++) {
        size_t len;
        unsigned char *b = image("{\"a\": 1}", lens[i], NULL, 0, &len);
        REQUIRE(b && write_bytes(tmp_path(names[i]), b, len) == 0);
        free(b);
        if (i < 3 && expect_open_fails(names[i], LP_ERR_FORMAT, "runs past the end")) return 1;
        if (i == 3 && expect_open_fails(names[i], LP_ERR_FORMAT, "unterminated string")) return 1;
    }
    return 0;
}

static int test_header_not_json(void) {
    REQUIRE(write_st("not_json", "{\"t\": nope}", NULL, 0) == 0);
    if (expect_open_fails("not_json", LP_ERR_FORMAT, "invalid JSON")) return 1;
    REQUIRE(write_st("not_json2", "{\"t\": {\"dtype\": \"F32\", ", NULL, 0) == 0);
    return expect_open_fails("not_json2", LP_ERR_FORMAT, "invalid JSON");
}

/* A header that is JSON but not an object is not recognised as safetensors
 * at all (the format is detected by the '{' after the length). */
static int test_header_not_object(void) {
    REQUIRE(write_st("not_object", "[1, 2]", NULL, 0) == 0);
    if (expect_open_fails("not_object", LP_ERR_FORMAT, "neither safetensors")) return 1;
    REQUIRE(write_st("not_object2", "\"x\"", NULL, 0) == 0);
    return expect_open_fails("not_object2", LP_ERR_FORMAT, "neither safetensors");
}

static int test_entry_fields(void) {
    static const struct { const char *name, *entry; } cases[] = {
        {"no_dtype", "{\"shape\": [2], \"data_offsets\": [0, 8]}"},
        {"no_shape", "{\"dtype\": \"F32\", \"data_offsets\": [0, 8]}"},
        {"no_offsets", "{\"dtype\": \"F32\", \"shape\": [2]}"},
        {"dtype_not_string", "{\"dtype\": 4, \"shape\": [2], \"data_offsets\": [0, 8]}"},
        {"shape_not_array", "{\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}"},
        {"offsets_one", "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8]}"},
        {"offsets_three", "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8, 8]}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (one_entry_case(cases[i].name, cases[i].entry, LP_ERR_FORMAT,
                           "'t' lacks a valid dtype, shape or data_offsets"))
            return 1;
    return one_entry_case("entry_not_object", "[1]", LP_ERR_FORMAT, "'t' is not an object");
}

static int test_unknown_dtype(void) {
    if (one_entry_case("dtype_q4", "{\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}", LP_ERR_UNSUPPORTED,
                       "unknown dtype 'Q4'"))
        return 1;
    return one_entry_case("dtype_lower", "{\"dtype\": \"f32\", \"shape\": [2], \"data_offsets\": [0, 8]}",
                          LP_ERR_UNSUPPORTED, "unknown dtype 'f32'");
}

static int test_bad_dimensions(void) {
    static const struct { const char *name, *shape, *msg; } cases[] = {
        {"dim_negative", "[-2]", "invalid dimension"},
        {"dim_fraction", "[2.5]", "invalid dimension"},
        {"dim_string", "[\"2\"]", "invalid dimension"},
        {"dim_2^64", "[18446744073709551616]", "invalid dimension"},
        {"overflow_f32", "[4294967296, 4294967296]", "impossibly large"},
        {"overflow_u8", "[4294967296, 4294967296, 2]", "impossibly large"},
        /* the element count wraps int64 before the zero: refused too */
        {"overflow_then_0", "[3, 4611686018427387904, 0]", "impossibly large"},
        {"dims_9", "[1, 1, 1, 1, 1, 1, 1, 1, 2]", "9 dimensions (at most 8)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char entry[256];
        const char *dt = strstr(cases[i].name, "u8") || strstr(cases[i].name, "then_0") ? "U8" : "F32";
        snprintf(entry, sizeof entry, "{\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [0, %d]}", dt,
                 cases[i].shape, strstr(cases[i].name, "then_0") ? 0 : 8);
        lp_status code = strstr(cases[i].name, "dims_9") ? LP_ERR_UNSUPPORTED : LP_ERR_FORMAT;
        if (one_entry_case(cases[i].name, entry, code, cases[i].msg)) return 1;
    }
    /* 8 dimensions are fine, and so is a zero dimension before large ones */
    REQUIRE(write_st("dims_8",
                     "{\"t\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 1, 1, 1, 2], \"data_offsets\": [0, 8]},"
                     " \"z\": {\"dtype\": \"U8\", \"shape\": [0, 4611686018427387904, 3], \"data_offsets\": [8, 8]}}",
                     "abcdefgh", 8) == 0);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(tmp_path("dims_8"), &f) == LP_OK, "%s", lp_last_error());
    REQUIRE(lp_tensor_file_find(f, "t")->ndim == 8 && lp_tensor_numel(lp_tensor_file_find(f, "z")) == 0);
    lp_tensor_file_close(f);
    return 0;
}

static int test_bad_offsets(void) {
    static const struct { const char *name, *offsets, *msg; } cases[] = {
        {"end_beyond_data", "[4, 12]", "lies beyond the file's 8 data bytes"},
        {"end_far_beyond", "[0, 9223372036854775807]", "lies beyond"},
        {"begin_after_end", "[8, 0]", "invalid data_offsets"},
        {"begin_negative", "[-8, 0]", "invalid data_offsets"},
        {"offset_fraction", "[0, 8.0]", "invalid data_offsets"},
        {"size_mismatch", "[0, 4]", "spans 4 bytes but its dtype and shape need 8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char entry[256];
        snprintf(entry, sizeof entry, "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": %s}", cases[i].offsets);
        if (one_entry_case(cases[i].name, entry, LP_ERR_FORMAT, cases[i].msg)) return 1;
    }
    return 0;
}

static int test_overlap_and_duplicates(void) {
    float data[4] = {1, 2, 3, 4};
    REQUIRE(write_st("overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                                " \"b\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [4, 16]}}",
                     data, 16) == 0);
    if (expect_open_fails("overlap", LP_ERR_FORMAT, "'a' and 'b' overlap")) return 1;
    REQUIRE(write_st("overlap_same", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
                                     " \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                                     " \"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
                     data, 16) == 0);
    if (expect_open_fails("overlap_same", LP_ERR_FORMAT, "overlap")) return 1;
    REQUIRE(write_st("duplicate", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                                  " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
                     data, 16) == 0);
    if (expect_open_fails("duplicate", LP_ERR_FORMAT, "tensor 'a' appears twice")) return 1;
    /* adjacent ranges and ranges given out of order are fine */
    REQUIRE(write_st("adjacent", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
                                 " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                     data, 16) == 0);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(tmp_path("adjacent"), &f) == LP_OK, "%s", lp_last_error());
    float v;
    REQUIRE(lp_tensor_read_f32(lp_tensor_file_find(f, "a"), 0, 1, &v) == LP_OK && v == 3.0f);
    lp_tensor_file_close(f);
    return 0;
}

static int test_bad_metadata(void) {
    float data[2] = {1, 2};
    static const char tensor[] = "\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}";
    static const struct { const char *name, *meta, *msg; } cases[] = {
        {"meta_number", "{\"a\": \"x\", \"n\": 5}", "metadata value 'n' is not a string"},
        {"meta_object", "{\"o\": {}}", "metadata value 'o' is not a string"},
        {"meta_null", "{\"z\": null}", "metadata value 'z' is not a string"},
        {"meta_not_object", "[\"a\"]", "__metadata__ is not an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char header[512];
        snprintf(header, sizeof header, "{\"__metadata__\": %s, %s}", cases[i].meta, tensor);
        REQUIRE(write_st(cases[i].name, header, data, sizeof data) == 0);
        if (expect_open_fails(cases[i].name, LP_ERR_FORMAT, cases[i].msg)) return 1;
    }
    return 0;
}

/* Thousands of tensors (no fixed cap), written in reverse name order. */
static int test_many_tensors(void) {
    enum { N = 5000 };
    size_t cap = (size_t)N * 96 + 16, o = 0;
    char *header = malloc(cap);
    float *data = malloc(N * 2 * sizeof *data);
    REQUIRE(header && data);
    o += (size_t)snprintf(header, cap, "{");
    for (int i = N - 1; i >= 0; i--) {
        o += (size_t)snprintf(header + o, cap - o, "\"blocks.%05d.w\": {\"dtype\": \"F32\", \"shape\": [2], "
                              "\"data_offsets\": [%d, %d]}%s", i, 8 * i, 8 * i + 8, i ? ", " : "}");
        data[2 * i] = (float)i;
        data[2 * i + 1] = -(float)i;
    }
    REQUIRE(o < cap);
    int w = write_st("many.safetensors", header, data, N * 2 * sizeof *data);
    free(header);
    free(data);
    REQUIRE(w == 0);
    lp_tensor_file *f;
    CHECK(lp_tensor_file_open(tmp_path("many.safetensors"), &f) == LP_OK, "%s", lp_last_error());
    REQUIRE(lp_tensor_file_count(f) == N);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "blocks.%05d.w", i);
        const lp_tensor *t = lp_tensor_file_find(f, name);
        float v[2];
        CHECK(t && t == lp_tensor_file_at(f, (size_t)i) && lp_tensor_read_f32(t, 0, 2, v) == LP_OK && v[1] == -(float)i,
              "%s", name);
    }
    lp_tensor_file_close(f);
    return 0;
}

/* Every byte of the valid header replaced by a few troublesome characters:
 * opening must never crash, and whatever opens must have views inside the
 * mapped file. */
static int test_corrupt_header(void) {
    valid_data d;
    fill_valid(&d);
    size_t len, hl = strlen(valid_header);
    unsigned char *b = image(valid_header, hl, &d, 84, &len);
    REQUIRE(b);
    static const char subst[] = {'"', '\\', '{', '}', '[', ']', ',', ':', '-', '9', '0', ' ', '\0'};
    int opened = 0, failed = 0;
    for (size_t i = 8; i < 8 + hl; i++) {
        unsigned char keep = b[i];
        for (size_t c = 0; c < sizeof subst; c++) {
            b[i] = (unsigned char)subst[c];
            lp_tensor_file *f;
            if (lp_tensor_file_open_memory(b, len, "corrupt", &f) != LP_OK) {
                failed++;
                CHECK(lp_last_error()[0], "failure at byte %zu without a message", i);
                continue;
            }
            opened++;
            for (size_t k = 0; k < lp_tensor_file_count(f); k++) {
                const lp_tensor *t = lp_tensor_file_at(f, k);
                const unsigned char *p = t->data;
                int in_map = p >= f->map && p < f->map + f->map_len; /* else an aligned copy */
                CHECK(!in_map || (p >= f->map + 8 + hl && p + t->nbytes <= f->map + f->map_len),
                      "byte %zu: view outside the data", i);
                CHECK((int64_t)t->nbytes == lp_tensor_numel(t) * (int64_t)lp_dtype_size(t->dtype), "byte %zu", i);
            }
            lp_tensor_file_close(f);
        }
        b[i] = keep;
    }
    /* and every truncation of the whole file */
    for (size_t n = 0; n < len; n++) {
        lp_tensor_file *f;
        CHECK(lp_tensor_file_open_memory(b, n, "cut", &f) != LP_OK, "file cut to %zu bytes opened", n);
    }
    free(b);
    printf("    %d corrupted headers opened, %d refused\n", opened, failed);
    return 0;
}

static void remove_written(void) {
    for (int i = 0; i < nwritten; i++) {
        remove(written[i]);
        free(written[i]);
    }
    remove(lp_test_tmpdir());
}

int main(void) {
    lp_test_run("valid", test_valid);
    lp_test_run("unaligned", test_unaligned);
    lp_test_run("empty_and_short", test_empty_and_short);
    lp_test_run("header_length", test_header_length);
    lp_test_run("header_not_json", test_header_not_json);
    lp_test_run("header_not_object", test_header_not_object);
    lp_test_run("entry_fields", test_entry_fields);
    lp_test_run("unknown_dtype", test_unknown_dtype);
    lp_test_run("bad_dimensions", test_bad_dimensions);
    lp_test_run("bad_offsets", test_bad_offsets);
    lp_test_run("overlap_and_duplicates", test_overlap_and_duplicates);
    lp_test_run("bad_metadata", test_bad_metadata);
    lp_test_run("many_tensors", test_many_tensors);
    lp_test_run("corrupt_header", test_corrupt_header);
    remove_written();
    return lp_test_finish();
}
