/* Unit tests of src/base: status messages, the JSON reader (valid documents,
 * every escape, number limits, nesting limit, malformed and truncated input),
 * f16/bf16 conversion (exhaustive round trips, round-to-nearest-even against a
 * double reference), the Philox Gaussian PRNG (known-answer vectors,
 * random access, statistics), the thread pool and the arena. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/arena.h"
#include "../src/base/half.h"
#include "../src/base/json.h"
#include "../src/base/prng.h"
#include "../src/base/status.h"
#include "../src/base/threadpool.h"
#include "test_util.h"

/* CHECK for conditions whose text says it all */
#define REQUIRE(cond) CHECK(cond, "%s", "")
/* A failure with the expected code whose message contains substr. */
#define CHECK_FAIL(expr, code, substr)                                                                     \
    do {                                                                                                   \
        lp_status st_ = (expr);                                                                            \
        CHECK(st_ == (code) && strstr(lp_last_error(), (substr)), "status %s (want %s), message '%s' (want '%s')", \
              lp_status_name(st_), lp_status_name(code), lp_last_error(), (substr));                       \
    } while (0)

/* ---------------------------------------------------------------- status */

static lp_status fails_with_io(void) { return lp_fail(LP_ERR_IO, "file '%s': %d bytes short", "a.bin", 12); }

static lp_status tries(int fail, int *reached) {
    LP_TRY(fail ? fails_with_io() : LP_OK);
    *reached = 1;
    return LP_OK;
}

static void *fail_in_thread(void *arg) {
    (void)arg;
    lp_fail(LP_ERR_ARG, "from another thread");
    return NULL;
}

static int test_status(void) {
    CHECK_FAIL(fails_with_io(), LP_ERR_IO, "file 'a.bin': 12 bytes short");
    int reached = 0;
    CHECK_FAIL(tries(1, &reached), LP_ERR_IO, "12 bytes short");
    REQUIRE(!reached);
    REQUIRE(tries(0, &reached) == LP_OK && reached);
    /* the message stays until the next failure, and is per thread */
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, fail_in_thread, NULL) == 0);
    pthread_join(th, NULL);
    CHECK(strstr(lp_last_error(), "12 bytes short"), "message replaced by another thread: '%s'", lp_last_error());
    /* an over-long message is truncated, not overflowed */
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_FAIL(lp_fail(LP_ERR_FORMAT, "%s!", big), LP_ERR_FORMAT, "xxxx");
    REQUIRE(strlen(lp_last_error()) < sizeof big);
    static const struct { lp_status s; const char *name; } names[] = {
        {LP_OK, "ok"},           {LP_ERR_IO, "io"},       {LP_ERR_FORMAT, "format"},
        {LP_ERR_SHAPE, "shape"}, {LP_ERR_NOMEM, "out of memory"}, {LP_ERR_ARG, "argument"},
        {LP_ERR_UNSUPPORTED, "unsupported"}, {LP_ERR_MISSING, "missing"}, {LP_ERR_INTERRUPTED, "interrupted"}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK(!strcmp(lp_status_name(names[i].s), names[i].name), "name of %d is '%s'", (int)names[i].s,
              lp_status_name(names[i].s));
    REQUIRE(!strcmp(lp_status_name((lp_status)99), "unknown"));
    return 0;
}

/* ---------------------------------------------------------------- JSON */

/* Parses exactly len bytes from a heap copy of that size, so that ASan sees
 * any read past the end. */
static lp_status parse_exact(const char *text, size_t len, lp_json_doc **doc) {
    char *copy = malloc(len ? len : 1);
    if (!copy) return LP_ERR_NOMEM;
    memcpy(copy, text, len);
    lp_status s = lp_json_parse(copy, len, "test.json", doc);
    free(copy);
    return s;
}

static lp_status parse_str(const char *text, lp_json_doc **doc) { return parse_exact(text, strlen(text), doc); }

/* A valid document with every kind of value; its root is an object with no
 * trailing whitespace, so that every proper prefix is invalid. */
static const char full_doc[] =
    " \t\r\n{\"s\": \"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\", \"u\": \"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\u0000z\","
    "\"n\": [0, -7, 9223372036854775807, -9223372036854775808, 1.5, -2.5e-3, 1E+2],"
    "\"b\": [true, false, null], \"e\": {}, \"ea\": [], \"o\": {\"k\": {\"k\": [[\"deep\"]]}},"
    "\"\\u00fcml\\u00e4ut\" : \"key\" }";

static int test_json_values(void) {
    lp_json_doc *doc;
    CHECK(parse_str(full_doc, &doc) == LP_OK, "%s", lp_last_error());
    const lp_json *r = lp_json_root(doc);
    REQUIRE(r->type == LP_JSON_OBJECT && r->count == 8);
    REQUIRE(!strcmp(r->children[0].key, "s") && !strcmp(r->children[7].key, "\xc3\xbcml\xc3\xa4ut"));

    const lp_json *s = lp_json_get(r, "s");
    REQUIRE(s && s->type == LP_JSON_STRING);
    CHECK(s->str_len == 17 && !memcmp(s->str, "a\"b\\c/d\be\ff\ng\rh\ti", 17), "got '%s'", s->str);

    /* \u escapes to UTF-8: 1, 2, 3 bytes, a surrogate pair to 4 bytes, and U+0000 */
    const lp_json *u = lp_json_get(r, "u");
    static const char want_u[] = "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\0z";
    CHECK(u && u->str_len == sizeof want_u - 1 && !memcmp(u->str, want_u, sizeof want_u - 1), "len %zu",
          u ? u->str_len : 0);

    const lp_json *n = lp_json_get(r, "n");
    REQUIRE(n && n->type == LP_JSON_ARRAY && n->count == 7);
    static const int64_t want_i[] = {0, -7, INT64_MAX, INT64_MIN};
    for (int i = 0; i < 4; i++) {
        int64_t v;
        REQUIRE(n->children[i].type == LP_JSON_NUMBER && !n->children[i].key);
        CHECK(lp_json_int64(&n->children[i], &v) == LP_OK && v == want_i[i], "element %d: %s", i,
              n->children[i].str);
    }
    static const double want_d[] = {1.5, -2.5e-3, 100.0};
    for (int i = 0; i < 3; i++) {
        double d;
        int64_t v;
        REQUIRE(lp_json_double(&n->children[4 + i], &d) == LP_OK && d == want_d[i]);
        CHECK_FAIL(lp_json_int64(&n->children[4 + i], &v), LP_ERR_FORMAT, "not an integer");
    }
    double d;
    REQUIRE(lp_json_double(&n->children[2], &d) == LP_OK && d == 9223372036854775807.0);

    const lp_json *b = lp_json_get(r, "b");
    REQUIRE(b && b->count == 3);
    REQUIRE(b->children[0].type == LP_JSON_BOOL && b->children[0].boolean == 1);
    REQUIRE(b->children[1].type == LP_JSON_BOOL && b->children[1].boolean == 0);
    REQUIRE(b->children[2].type == LP_JSON_NULL);
    REQUIRE(lp_json_get(r, "e")->type == LP_JSON_OBJECT && lp_json_get(r, "e")->count == 0);
    REQUIRE(lp_json_get(r, "ea")->type == LP_JSON_ARRAY && lp_json_get(r, "ea")->count == 0);
    const lp_json *deep = lp_json_get(lp_json_get(lp_json_get(r, "o"), "k"), "k");
    REQUIRE(deep && deep->type == LP_JSON_ARRAY && deep->children[0].children[0].type == LP_JSON_STRING);
    REQUIRE(!strcmp(deep->children[0].children[0].str, "deep"));

    /* lookups and conversions on the wrong kind of node */
    REQUIRE(lp_json_get(r, "absent") == NULL && lp_json_get(n, "s") == NULL && lp_json_get(NULL, "s") == NULL);
    int64_t v;
    CHECK_FAIL(lp_json_int64(s, &v), LP_ERR_FORMAT, "not a number");
    CHECK_FAIL(lp_json_double(NULL, &d), LP_ERR_FORMAT, "not a number");
    lp_json_free(doc);
    lp_json_free(NULL);

    /* scalars at the root, and integers just past the 64-bit range */
    static const char *const big[] = {"9223372036854775808", "-9223372036854775809", "18446744073709551615"};
    for (int i = 0; i < 3; i++) {
        CHECK(parse_str(big[i], &doc) == LP_OK, "%s", lp_last_error());
        CHECK_FAIL(lp_json_int64(lp_json_root(doc), &v), LP_ERR_FORMAT, big[i]);
        lp_json_free(doc);
    }
    REQUIRE(parse_str("  \"x\"  ", &doc) == LP_OK && lp_json_root(doc)->type == LP_JSON_STRING);
    lp_json_free(doc);
    /* a lone surrogate does not swallow the escape after it */
    REQUIRE(parse_str("\"\\ud83d\\u0041\"", &doc) == LP_OK);
    const lp_json *ls = lp_json_root(doc);
    REQUIRE(ls->str_len == 4 && ls->str[3] == 'A');
    lp_json_free(doc);
    return 0;
}

/* n nested arrays around an empty innermost one, or around a number. */
static char *nested(int n, int with_number) {
    char *t = malloc(2 * (size_t)n + 2);
    if (!t) return NULL;
    size_t o = 0;
    for (int i = 0; i < n; i++) t[o++] = '[';
    if (with_number) t[o++] = '1';
    for (int i = 0; i < n; i++) t[o++] = ']';
    t[o] = 0;
    return t;
}

static int test_json_nesting(void) {
    lp_json_doc *doc;
    for (int num = 0; num < 2; num++) {
        char *ok = nested(64, num), *bad = nested(65, num), *huge = nested(100000, num);
        REQUIRE(ok && bad && huge);
        CHECK(parse_str(ok, &doc) == LP_OK, "64 levels refused: %s", lp_last_error());
        lp_json_free(doc);
        CHECK_FAIL(parse_str(bad, &doc), LP_ERR_FORMAT, "nesting too deep");
        CHECK_FAIL(parse_str(huge, &doc), LP_ERR_FORMAT, "nesting too deep");
        free(ok);
        free(bad);
        free(huge);
    }
    /* objects count the same way: {"a": ... {} ... } */
    for (int levels = 64; levels <= 65; levels++) {
        char obj[65 * 6 + 2];
        size_t o = 0;
        for (int i = 1; i < levels; i++) o += (size_t)sprintf(obj + o, "{\"a\":");
        o += (size_t)sprintf(obj + o, "{}");
        memset(obj + o, '}', (size_t)levels - 1);
        o += (size_t)levels - 1;
        if (levels == 64) {
            CHECK(parse_exact(obj, o, &doc) == LP_OK, "%s", lp_last_error());
            lp_json_free(doc);
        } else {
            CHECK_FAIL(parse_exact(obj, o, &doc), LP_ERR_FORMAT, "nesting too deep");
        }
    }
    return 0;
}

static int test_json_malformed(void) {
    static const struct { const char *text, *msg; } cases[] = {
        {"", "unexpected end"},
        {"   ", "unexpected end"},
        {"\"abc", "unterminated string"},
        {"{\"a\": \"abc}", "unterminated string"},
        {"\"abc\\", "unterminated string"},
        {"\"abc\\\"", "unterminated string"},
        {"{} x", "trailing characters"},
        {"{}}", "trailing characters"},
        {"[1] [2]", "trailing characters"},
        {"\"\\x\"", "bad escape"},
        {"\"\\u12G4\"", "bad \\u escape"},
        {"\"\\u12\"", "bad \\u escape"},
        {"\"\\u", "unterminated string"},
        {"\"a\nb\"", "control character"},
        {"[1,]", "unexpected character"},
        {"[1 2]", "expected ',' or ']'"},
        {"{\"a\" 1}", "expected ':'"},
        {"{1: 2}", "expected a key"},
        {"{\"a\": 1,}", "expected a key"},
        {"{\"a\": 1 \"b\": 2}", "expected ',' or '}'"},
        {"tru", "unexpected character"},
        {"nul", "unexpected character"},
        {"-", "unexpected character"},
        {"@", "unexpected character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lp_json_doc *doc = (lp_json_doc *)&doc;
        lp_status s = parse_str(cases[i].text, &doc);
        CHECK(s == LP_ERR_FORMAT && doc == NULL, "'%s' parsed", cases[i].text);
        CHECK(strstr(lp_last_error(), cases[i].msg) && strstr(lp_last_error(), "test.json"),
              "'%s': message '%s' lacks '%s'", cases[i].text, lp_last_error(), cases[i].msg);
    }
    return 0;
}

/* Every proper prefix of a valid document fails cleanly; single-byte
 * corruptions never crash and never break a successful parse. */
static int test_json_truncated_and_corrupt(void) {
    const size_t len = strlen(full_doc);
    lp_json_doc *doc;
    for (size_t n = 0; n < len; n++) {
        lp_status s = parse_exact(full_doc, n, &doc);
        CHECK(s == LP_ERR_FORMAT, "prefix of %zu bytes parsed", n);
        CHECK(strstr(lp_last_error(), "invalid JSON"), "prefix %zu: '%s'", n, lp_last_error());
    }
    char *t = malloc(len);
    REQUIRE(t);
    static const char subst[] = {'"', '\\', '{', '}', '[', ']', ',', ':', 'u', '0', '\0', '\n', 'e', '-', ' '};
    int parsed = 0;
    for (size_t i = 0; i < len; i++)
        for (size_t c = 0; c < sizeof subst; c++) {
            memcpy(t, full_doc, len);
            t[i] = subst[c];
            if (parse_exact(t, len, &doc) == LP_OK) {
                parsed++;
                lp_json_free(doc);
            }
        }
    free(t);
    CHECK(parsed > 0, "no corruption parsed at all");
    return 0;
}

/* ---------------------------------------------------------------- half floats */

static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }

/* The value of an f16 bit pattern, from the IEEE definition. */
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000u) ? -v : v;
}

/* f32 -> a format with p mantissa bits (incl. the implicit one), minimum
 * normal exponent emin and largest finite value maxv, rounded to nearest even,
 * computed in double. */
static double round_ref(float x, int p, int emin, double maxv) {
    double a = fabs((double)x);
    if (a == 0 || isinf(a)) return x;
    int e;
    frexp(a, &e); /* a = f·2^e, f in [0.5, 1) */
    e -= 1;       /* a in [2^e, 2^(e+1)) */
    if (e < emin) e = emin;
    double q = ldexp(1.0, e - (p - 1));
    double r = nearbyint(a / q) * q; /* the default rounding mode rounds halfway to even */
    double half_ulp_above = maxv + ldexp(1.0, (int)floor(log2(maxv)) - p); /* the overflow threshold */
    if (r > maxv || a >= half_ulp_above) r = INFINITY;
    return x < 0 ? -r : r;
}

static float f32_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int test_f16_exhaustive(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lp_f16_to_f32((uint16_t)h);
        double want = f16_value((uint16_t)h);
        if (f16_is_nan((uint16_t)h)) {
            REQUIRE(isnan(f));
            uint16_t back = lp_f32_to_f16(f);
            CHECK(f16_is_nan(back) && (back & 0x8000u) == (h & 0x8000u), "NaN %04x -> %04x", h, back);
            continue;
        }
        CHECK((double)f == want && !signbit(f) == !signbit(want), "f16 %04x -> %.9g, want %.9g", h, f, want);
        uint16_t back = lp_f32_to_f16(f);
        CHECK(back == h, "f16 %04x -> %.9g -> %04x", h, f, back);
    }
    return 0;
}

static int test_f16_rounding(void) {
    /* halfway between consecutive f16 values (and a hair either side) */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int sign = 0; sign < 2; sign++) {
            uint16_t lo = (uint16_t)(h | (sign ? 0x8000u : 0)), hi = (uint16_t)(lo + 1);
            double a = f16_value(lo), b = h == 0x7bff ? (sign ? -65536.0 : 65536.0) : f16_value(hi);
            float mid = (float)((a + b) / 2); /* exact: f16 halfway points need 12 bits */
            REQUIRE((double)mid == (a + b) / 2);
            uint16_t want = (lo & 1) ? hi : lo;
            if (h == 0x7bff) want = sign ? 0xfc00 : 0x7c00; /* 65520 rounds to inf */
            CHECK(lp_f32_to_f16(mid) == want, "midpoint %.9g -> %04x, want %04x", mid, lp_f32_to_f16(mid), want);
            float below = nextafterf(mid, 0.0f), above = nextafterf(mid, sign ? -INFINITY : INFINITY);
            CHECK(lp_f32_to_f16(below) == lo, "%.9g -> %04x, want %04x", below, lp_f32_to_f16(below), lo);
            uint16_t want_above = h == 0x7bff ? want : hi;
            CHECK(lp_f32_to_f16(above) == want_above, "%.9g -> %04x", above, lp_f32_to_f16(above));
        }
    }
    /* overflow, specials and subnormals */
    REQUIRE(lp_f32_to_f16(65504.0f) == 0x7bff && lp_f32_to_f16(65519.99f) == 0x7bff);
    REQUIRE(lp_f32_to_f16(65520.0f) == 0x7c00 && lp_f32_to_f16(1e5f) == 0x7c00 && lp_f32_to_f16(FLT_MAX) == 0x7c00);
    REQUIRE(lp_f32_to_f16(INFINITY) == 0x7c00 && lp_f32_to_f16(-INFINITY) == 0xfc00 && lp_f32_to_f16(-1e9f) == 0xfc00);
    REQUIRE(lp_f32_to_f16(0.0f) == 0 && lp_f32_to_f16(-0.0f) == 0x8000);
    REQUIRE(lp_f32_to_f16(ldexpf(1, -24)) == 1 && lp_f32_to_f16(-ldexpf(1, -24)) == 0x8001);
    REQUIRE(lp_f32_to_f16(ldexpf(1, -25)) == 0 && lp_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 1);
    REQUIRE(lp_f32_to_f16(ldexpf(3, -25)) == 2 && lp_f32_to_f16(ldexpf(5, -25)) == 2); /* ties to even */
    REQUIRE(lp_f32_to_f16(ldexpf(1, -30)) == 0 && lp_f32_to_f16(FLT_TRUE_MIN) == 0);
    REQUIRE(lp_f32_to_f16(ldexpf(1023, -24)) == 0x3ff && lp_f32_to_f16(ldexpf(1, -14)) == 0x400);
    REQUIRE(lp_f32_to_f16(nextafterf(ldexpf(1, -14), 0)) == 0x400); /* rounds up into the normals */
    REQUIRE(f16_is_nan(lp_f32_to_f16(NAN)) && f16_is_nan(lp_f32_to_f16(f32_of(0x7f800001u))));
    /* a sweep over all f32 exponents against the double reference */
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
        float x = f32_of((uint32_t)u);
        if (isnan(x)) continue;
        double want = round_ref(x, 11, -14, 65504.0);
        float got = lp_f16_to_f32(lp_f32_to_f16(x));
        CHECK((double)got == want, "f32 %08x (%.9g) -> %.9g, want %.9g", (unsigned)u, x, got, want);
    }
    return 0;
}

static int test_bf16(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lp_bf16_to_f32((uint16_t)h);
        uint32_t u;
        memcpy(&u, &f, 4);
        REQUIRE(u == h << 16);
        uint16_t back = lp_f32_to_bf16(f);
        if (isnan(f)) CHECK(isnan(lp_bf16_to_f32(back)) && (back & 0x8000u) == (h & 0x8000u), "NaN %04x", h);
        else CHECK(back == h, "bf16 %04x -> %04x", h, back);
    }
    /* NaNs whose payload lies only in the dropped bits stay NaN (not inf) */
    static const uint32_t nans[] = {0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fc00000u, 0xffffffffu};
    for (int i = 0; i < 5; i++) {
        uint16_t b = lp_f32_to_bf16(f32_of(nans[i]));
        CHECK(isnan(lp_bf16_to_f32(b)) && (b >> 15) == (nans[i] >> 31), "%08x -> %04x", nans[i], b);
    }
    /* halfway cases: ties to even, and just off halfway */
    REQUIRE(lp_f32_to_bf16(f32_of(0x3f808000u)) == 0x3f80); /* tie, even below */
    REQUIRE(lp_f32_to_bf16(f32_of(0x3f818000u)) == 0x3f82); /* tie, even above */
    REQUIRE(lp_f32_to_bf16(f32_of(0x3f808001u)) == 0x3f81);
    REQUIRE(lp_f32_to_bf16(f32_of(0x3f807fffu)) == 0x3f80);
    REQUIRE(lp_f32_to_bf16(f32_of(0x7f7fffffu)) == 0x7f80); /* FLT_MAX rounds to inf */
    REQUIRE(lp_f32_to_bf16(-INFINITY) == 0xff80 && lp_f32_to_bf16(-0.0f) == 0x8000);
    for (uint64_t u = 0; u < 0x100000000ull; u += 4093) {
        float x = f32_of((uint32_t)u);
        if (isnan(x)) continue;
        double want = round_ref(x, 8, -126, (double)lp_bf16_to_f32(0x7f7f));
        float got = lp_bf16_to_f32(lp_f32_to_bf16(x));
        CHECK((double)got == want, "f32 %08x (%.9g) -> %.9g, want %.9g", (unsigned)u, x, got, want);
    }
    return 0;
}

/* ---------------------------------------------------------------- PRNG */

static int test_philox_kat(void) {
    /* Philox4x32-10 known-answer vectors of Random123 (counter words, key words,
     * output); here counter = (block lo, block hi, stream lo, stream hi) and
     * key = (seed lo, seed hi). */
    static const struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
         {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
         {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdcceBu, 0x5001e420u, 0x24126ea1u}},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        uint64_t block = kat[i].ctr[0] | (uint64_t)kat[i].ctr[1] << 32;
        uint64_t stream = kat[i].ctr[2] | (uint64_t)kat[i].ctr[3] << 32;
        uint64_t seed = kat[i].key[0] | (uint64_t)kat[i].key[1] << 32;
        lp_philox4x32(seed, stream, block, out);
        CHECK(!memcmp(out, kat[i].out, sizeof out), "vector %d: %08x %08x %08x %08x", i, out[0], out[1], out[2],
              out[3]);
    }
    return 0;
}

static int test_prng_random_access(void) {
    static const uint64_t firsts[] = {0, 1, 2, 3, 7, 1000001, (uint64_t)1 << 40, ((uint64_t)1 << 40) + 5};
    static const size_t ns[] = {0, 1, 2, 3, 4, 5, 37, 256};
    float buf[256], again[256];
    for (size_t a = 0; a < sizeof firsts / sizeof *firsts; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++) {
            memset(buf, 0xff, sizeof buf);
            lp_prng_fill_normal(42, 7, firsts[a], buf, ns[b]);
            for (size_t i = 0; i < ns[b]; i++) {
                float one = lp_prng_normal(42, 7, firsts[a] + i);
                CHECK(memcmp(&one, &buf[i], 4) == 0, "first %llu n %zu element %zu: %g vs %g",
                      (unsigned long long)firsts[a], ns[b], i, one, buf[i]);
            }
            uint32_t canary;
            memcpy(&canary, &buf[ns[b] < 256 ? ns[b] : 255], 4);
            CHECK(ns[b] == 256 || canary == 0xffffffffu, "fill of %zu wrote past its end", ns[b]);
        }
    /* deterministic, and a fill at an odd offset is a window of a longer fill */
    lp_prng_fill_normal(1, 2, 100, buf, 256);
    lp_prng_fill_normal(1, 2, 100, again, 256);
    REQUIRE(!memcmp(buf, again, sizeof buf));
    lp_prng_fill_normal(1, 2, 133, again, 101);
    REQUIRE(!memcmp(buf + 33, again, 101 * sizeof *again));
    /* different seeds and streams give unrelated values */
    float other[256];
    static const uint64_t keys[][2] = {{2, 2}, {1, 3}, {1ull << 32 | 1, 2}, {1, 2ull | 1ull << 32}};
    for (int k = 0; k < 4; k++) {
        lp_prng_fill_normal(keys[k][0], keys[k][1], 100, other, 256);
        int same = 0;
        for (int i = 0; i < 256; i++) same += other[i] == buf[i];
        CHECK(same == 0, "seed %llu stream %llu: %d equal values", (unsigned long long)keys[k][0],
              (unsigned long long)keys[k][1], same);
    }
    return 0;
}

static int test_prng_statistics(void) {
    const size_t n = 1000000;
    float *x = malloc(n * sizeof *x);
    REQUIRE(x);
    lp_prng_fill_normal(1234, 5, 0, x, n);
    double s1 = 0, s2 = 0, pair = 0;
    size_t tail = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(isfinite(x[i]), "element %zu is %g", i, x[i]);
        s1 += x[i];
        s2 += (double)x[i] * x[i];
        tail += fabsf(x[i]) > 3.0f;
        if (i & 1) pair += (double)x[i] * x[i - 1];
    }
    double mean = s1 / n, var = s2 / n - mean * mean, corr = pair / (n / 2);
    double tail_frac = (double)tail / n; /* P(|x| > 3) = 0.0026998 */
    printf("    mean %.2e, variance %.6f, pair correlation %.2e, P(|x|>3) %.5f\n", mean, var, corr, tail_frac);
    free(x);
    CHECK(fabs(mean) < 5e-3 && fabs(var - 1) < 5e-3, "mean %g variance %g", mean, var);
    CHECK(fabs(corr) < 5e-3, "elements of a Box-Muller pair correlate: %g", corr);
    CHECK(fabs(tail_frac - 0.0026998) < 4e-4, "tail fraction %g", tail_frac);
    return 0;
}

/* ---------------------------------------------------------------- thread pool */

typedef struct {
    _Atomic int *hits;
    int64_t n;
    atomic_int calls, bad;
} cover_job;

static void cover(void *ctx, int64_t b, int64_t e) {
    cover_job *j = ctx;
    atomic_fetch_add(&j->calls, 1);
    if (b < 0 || e > j->n || b >= e) atomic_fetch_add(&j->bad, 1);
    for (int64_t i = b; i < e && i >= 0 && i < j->n; i++) atomic_fetch_add(&j->hits[i], 1);
}

static int check_cover(lp_pool *p, int64_t n) {
    cover_job j = {calloc((size_t)n + 1, sizeof(_Atomic int)), n, 0, 0};
    REQUIRE(j.hits);
    lp_parallel_for(p, n, cover, &j);
    int ok = atomic_load(&j.bad) == 0 && atomic_load(&j.calls) <= lp_pool_size(p);
    for (int64_t i = 0; i < n && ok; i++) ok = atomic_load(&j.hits[i]) == 1;
    int calls = atomic_load(&j.calls);
    free((void *)j.hits);
    CHECK(ok, "pool of %d, n %lld: bad ranges or not covered exactly once", lp_pool_size(p), (long long)n);
    CHECK(n > 0 || calls == 0, "n = 0 made %d calls", calls);
    return 0;
}

static int test_threadpool(void) {
    static const int64_t ns[] = {0, 1, 2, 3, 4, 5, 7, 63, 64, 65, 1000, 100003};
    for (int threads = 1; threads <= 5; threads++) {
        lp_pool *p;
        REQUIRE(lp_pool_create(threads, &p) == LP_OK && lp_pool_size(p) == threads);
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
            if (check_cover(p, ns[i])) return 1;
        for (int round = 0; round < 300; round++) /* many back-to-back loops */
            if (check_cover(p, round % 9)) return 1;
        lp_pool_destroy(p);
    }
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        if (check_cover(NULL, ns[i])) return 1;
    REQUIRE(lp_pool_size(NULL) == 1);
    lp_pool *p;
    REQUIRE(lp_pool_create(0, &p) == LP_OK && lp_pool_size(p) >= 1);
    if (check_cover(p, 12345)) return 1;
    lp_pool_destroy(p);
    lp_pool_destroy(NULL);
    return 0;
}

/* ---------------------------------------------------------------- arena */

static int test_arena(void) {
    lp_arena a;
    REQUIRE(lp_arena_init(&a, 1000) == LP_OK && a.size == 1024 && a.used == 0);
    unsigned char *p1 = lp_arena_alloc(&a, 1), *p2 = lp_arena_alloc(&a, 100), *p3 = lp_arena_alloc(&a, 64);
    REQUIRE(p1 && p2 && p3);
    REQUIRE((uintptr_t)p1 % 64 == 0 && (uintptr_t)p2 % 64 == 0 && (uintptr_t)p3 % 64 == 0);
    REQUIRE(p2 == p1 + 64 && p3 == p2 + 128 && a.used == 256);
    memset(p1, 1, 1);
    memset(p2, 2, 100);
    memset(p3, 3, 64);
    size_t mark = lp_arena_mark(&a);
    unsigned char *p4 = lp_arena_alloc(&a, 767);
    REQUIRE(p4 == p3 + 64 && a.used == 1024 && a.peak == 1024);
    memset(p4, 4, 767);
    /* exhausted: NULL with a message, and the arena unchanged */
    lp_fail(LP_OK, "%s", "");
    REQUIRE(lp_arena_alloc(&a, 1) == NULL && strstr(lp_last_error(), "arena exhausted"));
    REQUIRE(a.used == 1024);
    lp_arena_reset(&a, mark);
    REQUIRE(a.used == 256 && a.peak == 1024 && lp_arena_alloc(&a, 768) == p4);
    lp_arena_reset(&a, 0);
    REQUIRE(lp_arena_alloc(&a, 1024) == p1);
    lp_arena_reset(&a, 0);
    /* sizes whose rounding would wrap around are refused, not handed out */
    REQUIRE(lp_arena_alloc(&a, SIZE_MAX) == NULL && strstr(lp_last_error(), "arena exhausted"));
    REQUIRE(lp_arena_alloc(&a, SIZE_MAX - 62) == NULL && a.used == 0);
    REQUIRE(lp_arena_alloc(&a, 1025) == NULL && lp_arena_alloc(&a, 0) != NULL);
    REQUIRE(lp_arena_round(0) == 0 && lp_arena_round(1) == 64 && lp_arena_round(64) == 64 && lp_arena_round(65) == 128);
    lp_arena_release(&a);
    REQUIRE(a.base == NULL && a.size == 0);
    lp_arena_release(&a);
    /* an empty arena, and a reservation too large to round */
    REQUIRE(lp_arena_init(&a, 0) == LP_OK && lp_arena_alloc(&a, 1) == NULL);
    lp_arena_release(&a);
    CHECK_FAIL(lp_arena_init(&a, SIZE_MAX - 10), LP_ERR_NOMEM, "scratch");
    return 0;
}

int main(void) {
    lp_test_run("status", test_status);
    lp_test_run("json_values", test_json_values);
    lp_test_run("json_nesting", test_json_nesting);
    lp_test_run("json_malformed", test_json_malformed);
    lp_test_run("json_truncated_and_corrupt", test_json_truncated_and_corrupt);
    lp_test_run("f16_exhaustive", test_f16_exhaustive);
    lp_test_run("f16_rounding", test_f16_rounding);
    lp_test_run("bf16", test_bf16);
    lp_test_run("philox_kat", test_philox_kat);
    lp_test_run("prng_random_access", test_prng_random_access);
    lp_test_run("prng_statistics", test_prng_statistics);
    lp_test_run("threadpool", test_threadpool);
    lp_test_run("arena", test_arena);
    return lp_test_finish();
}
