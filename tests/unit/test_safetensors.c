/* safetensors reader/writer: exact writer bytes, round trips, dtype
 * widening, and one negative test per rule of the reader (each must be
 * refused with EL_EINPUT and a message naming the tensor and the rule). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/safetensors.h"
#include "check.h"

/* Builds a file from a header string and DATA_LEN bytes of data. */
static uint8_t *make_file(const char *header, size_t data_len, size_t *len)
{
    size_t hl = strlen(header);
    *len = 8 + hl + data_len;
    uint8_t *buf = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (uint8_t)i;
    return buf;
}

/* Parses HEADER + DATA_LEN bytes and expects a refusal whose message holds
 * every string of NEEDLES. */
static void refused(const char *header, size_t data_len, const char *n1, const char *n2)
{
    size_t len;
    uint8_t *buf = make_file(header, data_len, &len);
    el_safetensors *st = (el_safetensors *)1;
    el_error err = {0};
    int rc = el_safetensors_parse(buf, len, "t.safetensors", &st, &err);
    CHECK_MSG(rc == EL_EINPUT, "rc=%d for %s", rc, header);
    CHECK(st == NULL);
    CHECK_MSG(strstr(err.msg, n1) != NULL, "\"%s\" lacks \"%s\"", err.msg, n1);
    if (n2)
        CHECK_MSG(strstr(err.msg, n2) != NULL, "\"%s\" lacks \"%s\"", err.msg, n2);
    free(buf);
}

static void test_writer_bytes(void)
{
    float a[2] = {1.0f, -2.0f}, b[3] = {0.5f, 0.25f, 0.125f};
    el_st_entry e[2] = {
        {"zeta", 1, {3}, b},
        {"alpha \"q\"", 2, {1, 2}, a},
    };
    const char *meta[] = {"format", "pt"};
    uint8_t *buf;
    size_t len;
    el_error err = {0};
    CHECK_OK(el_safetensors_serialize(e, 2, meta, 1, &buf, &len, &err), &err);
    /* As Python's safetensors.torch.save_file writes the same dict: sorted
     * by name, compact JSON, __metadata__ first, padded with spaces to 8. */
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"alpha \\\"q\\\"\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
                       "\"zeta\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}";
    size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | buf[i];
    CHECK(hl == padded);
    CHECK(len == 8 + padded + 20);
    CHECK(memcmp(buf + 8, want, wl) == 0);
    for (size_t i = wl; i < padded; i++)
        CHECK(buf[8 + i] == ' ');
    /* data little-endian, alpha first */
    CHECK(buf[8 + padded + 3] == 0x3f && buf[8 + padded + 2] == 0x80);
    el_safetensors *st;
    CHECK_OK(el_safetensors_parse(buf, len, "mem", &st, &err), &err);
    if (st) {
        CHECK(el_safetensors_count(st) == 2);
        const el_st_tensor *t = el_safetensors_find(st, "zeta");
        CHECK(t && t->numel == 3 && t->ndim == 1 && t->dtype == EL_ST_F32);
        float got[3] = {0};
        if (t)
            el_safetensors_to_f32(t, got);
        CHECK(got[0] == 0.5f && got[2] == 0.125f);
        CHECK_STR(el_safetensors_meta(st, "format"), "pt");
        CHECK(el_safetensors_meta(st, "nope") == NULL);
        CHECK(el_safetensors_at(st, 0)->data == buf + 8 + padded);
        el_safetensors_close(st);
    }
    el_free(buf);
    /* duplicate and reserved names are refused by the writer */
    el_st_entry dup[2] = {{"x", 1, {1}, a}, {"x", 1, {1}, b}};
    CHECK(el_safetensors_serialize(dup, 2, NULL, 0, &buf, &len, &err) == EL_EINPUT);
}

static void test_file_roundtrip(void)
{
    char dir[] = "/tmp/el_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float w[6] = {1, 2, 3, 4, 5, 6};
    el_st_entry e = {"w", 2, {2, 3}, w};
    el_error err = {0};
    CHECK_OK(el_safetensors_write(path, &e, 1, NULL, 0, &err), &err);
    el_safetensors *st;
    CHECK_OK(el_safetensors_open(path, &st, &err), &err);
    if (st) {
        const el_st_tensor *t = el_safetensors_find(st, "w");
        CHECK(t && t->shape[0] == 2 && t->shape[1] == 3);
        float got[6];
        if (t)
            el_safetensors_to_f32(t, got);
        CHECK(memcmp(got, w, sizeof w) == 0);
        el_safetensors_close(st);
    }
    /* The independent reader of tests/ref/ (Python, no torch needed). */
    const char *src = getenv("EDGELOOP_SOURCE_ROOT");
    char cmd[1024];
    if (src) {
        snprintf(cmd, sizeof cmd, "%s/tests/ref/safetensors_check.py", src);
        if (access(cmd, R_OK) == 0 && access("/usr/bin/python3", X_OK) == 0) {
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/ref/safetensors_check.py %s",
                     src, path);
            CHECK_MSG(system(cmd) == 0, "%s", cmd);
        } else {
            printf("tests/ref/safetensors_check.py not present: independent check not run\n");
        }
    }
    CHECK(el_safetensors_open("/nonexistent/x.safetensors", &st, &err) == EL_ENOTFOUND);
    unlink(path);
    rmdir(dir);
}

static void test_dtypes(void)
{
    /* F16: 1.0, -2.0, smallest subnormal 2^-24, 65504; BF16: 1.0, -3.0 */
    const char *h = "{\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
    size_t len;
    uint8_t *buf = make_file(h, 12, &len);
    uint8_t *d = buf + 8 + strlen(h);
    uint8_t vals[12] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b,
                        0x80, 0x3f, 0x40, 0xc0};
    memcpy(d, vals, 12);
    el_safetensors *st;
    el_error err = {0};
    CHECK_OK(el_safetensors_parse(buf, len, "mem", &st, &err), &err);
    if (st) {
        float f[4];
        el_safetensors_to_f32(el_safetensors_find(st, "h"), f);
        CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == ldexpf(1.0f, -24) && f[3] == 65504.0f);
        el_safetensors_to_f32(el_safetensors_find(st, "b"), f);
        CHECK(f[0] == 1.0f && f[1] == -3.0f);
        CHECK(el_safetensors_at(st, 0)->dtype == EL_ST_F16);
        el_safetensors_close(st);
    }
    free(buf);
}

static void test_refusals(void)
{
    el_safetensors *st;
    el_error err = {0};
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    CHECK(el_safetensors_parse(tiny, sizeof tiny, "t", &st, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "rule 1") != NULL);
    /* header length larger than the file (truncated file) */
    uint8_t trunc[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK(el_safetensors_parse(trunc, sizeof trunc, "t", &st, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "truncated") != NULL);
    /* oversized header claim (> 100 MB) */
    uint8_t big[16] = {0, 0, 0, 0x10, 0, 0, 0, 0};
    CHECK(el_safetensors_parse(big, sizeof big, "t", &st, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "over the limit") != NULL);
    /* data cut short: offsets past EOF */
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "\"w\"",
            "past the end");
    /* shape x dtype size != span */
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "\"w\"",
            "rule 8");
    refused("{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "\"w\"",
            "rule 8");
    /* unknown dtypes are refused, not skipped */
    refused("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "\"w\"",
            "unsupported dtype \"F64\"");
    refused("{\"w\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, "\"w\"",
            "rule 6");
    /* duplicate key */
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate",
            "rule 3");
    /* gap, overlap, trailing bytes */
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "\"b\"", "gap");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "\"b\"", "overlap");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "trailing", NULL);
    /* bad fields */
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "\"a\"",
            "unknown field");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "\"a\"",
            "rule 7");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "\"a\"",
            "rule 8");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
            4, "\"a\"", "overflow");
    refused("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__", "rule 4");
    refused("[1,2]", 0, "not a JSON object", NULL);
    refused("{\"a\":", 0, "invalid JSON", NULL);
    /* an empty file of tensors is valid */
    size_t len;
    uint8_t *buf = make_file("{}      ", 0, &len);
    CHECK(el_safetensors_parse(buf, len, "t", &st, &err) == 0);
    if (st) {
        CHECK(el_safetensors_count(st) == 0);
        el_safetensors_close(st);
    }
    free(buf);
}

int main(void)
{
    test_writer_bytes();
    test_file_roundtrip();
    test_dtypes();
    test_refusals();
    return el_test_done("test_safetensors");
}
