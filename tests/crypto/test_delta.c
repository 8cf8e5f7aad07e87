/* Adapter deltas: exact round trips bit for bit, q8 stays within half a
 * quantization step per element, device and hub rebuild identical bytes,
 * and malformed or oversized containers are refused before allocation. */
#include <stdint.h>

#include "check.h"
#include "base/alloc.h"
#include "delta.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static void make_adapter(el_delta_set *s, float scale, const el_delta_set *base)
{
    const char *names[] = {"layers.0.q_proj.lora_A", "layers.0.q_proj.lora_B",
                           "layers.1.v_proj.lora_A"};
    const uint64_t shapes[3][2] = {{8, 64}, {64, 8}, {8, 64}};
    el_error err;
    for (int i = 0; i < 3; i++) {
        float buf[512];
        for (int k = 0; k < 512; k++)
            buf[k] = frand() * scale + (base ? base->tensors[i].data[k] : 0.0f);
        CHECK_OK(el_delta_set_add(s, names[i], 2, shapes[i], buf, &err), &err);
    }
}

static void test_exact(void)
{
    el_delta_set first = {0}, next = {0}, delta = {0}, rebuilt = {0}, rebuilt2 = {0};
    el_error err;
    make_adapter(&first, 0.05f, NULL);
    make_adapter(&next, 0.001f, &first);
    uint8_t *buf;
    size_t len;
    int enc;
    el_delta_limits lim;
    el_delta_limits_default(&lim);

    /* From zeros: the rebuild is the adapter itself, bit for bit. */
    CHECK_OK(el_delta_encode(&first, NULL, EL_DELTA_EXACT, &buf, &len, &err), &err);
    CHECK_OK(el_delta_decode(buf, len, &lim, &delta, &enc, &err), &err);
    CHECK(enc == EL_DELTA_EXACT);
    CHECK_OK(el_delta_apply(NULL, &delta, &rebuilt, &err), &err);
    char a[65], b[65];
    el_delta_digest(&first, a, &err);
    el_delta_digest(&rebuilt, b, &err);
    CHECK_STR(a, b);
    el_free(buf);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);

    /* Another zstd level (the hub's own copies use 1): other bytes, the
     * same adapter bit for bit. */
    uint8_t *fast;
    size_t fast_len;
    CHECK_OK(el_delta_encode_level(&first, NULL, EL_DELTA_EXACT, 1, &fast, &fast_len, &err),
             &err);
    CHECK_OK(el_delta_decode(fast, fast_len, &lim, &delta, &enc, &err), &err);
    CHECK(enc == EL_DELTA_EXACT);
    CHECK_OK(el_delta_apply(NULL, &delta, &rebuilt, &err), &err);
    el_delta_digest(&rebuilt, b, &err);
    CHECK_STR(a, b);
    el_free(fast);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&rebuilt);

    /* From a parent: the decoded delta equals next - parent bit for bit, and
     * two independent rebuilds agree. */
    CHECK_OK(el_delta_encode(&next, &first, EL_DELTA_EXACT, &buf, &len, &err), &err);
    CHECK_OK(el_delta_decode(buf, len, &lim, &delta, &enc, &err), &err);
    int same = 1;
    for (size_t t = 0; t < next.n; t++)
        for (size_t k = 0; k < next.tensors[t].count; k++) {
            float want = next.tensors[t].data[k] - first.tensors[t].data[k];
            same &= memcmp(&want, &delta.tensors[t].data[k], 4) == 0;
        }
    CHECK(same);
    CHECK_OK(el_delta_apply(&first, &delta, &rebuilt, &err), &err);
    el_delta_set delta2 = {0};
    CHECK_OK(el_delta_decode(buf, len, &lim, &delta2, &enc, &err), &err);
    CHECK_OK(el_delta_apply(&first, &delta2, &rebuilt2, &err), &err);
    el_delta_digest(&rebuilt, a, &err);
    el_delta_digest(&rebuilt2, b, &err);
    CHECK_STR(a, b);
    /* The rebuild is within one fp32 rounding of next. */
    double maxerr = 0;
    for (size_t t = 0; t < next.n; t++)
        for (size_t k = 0; k < next.tensors[t].count; k++)
            maxerr = fmax(maxerr, fabs(rebuilt.tensors[t].data[k] - next.tensors[t].data[k]));
    CHECK(maxerr <= 1e-7);
    el_free(buf);
    el_delta_set_finish(&delta);
    el_delta_set_finish(&delta2);
    el_delta_set_finish(&rebuilt);
    el_delta_set_finish(&rebuilt2);

    /* Q8: per element within half a step of its row's scale. */
    CHECK_OK(el_delta_encode(&next, &first, EL_DELTA_Q8, &buf, &len, &err), &err);
    CHECK_OK(el_delta_decode(buf, len, &lim, &delta, &enc, &err), &err);
    CHECK(enc == EL_DELTA_Q8);
    int within = 1;
    for (size_t t = 0; t < next.n; t++) {
        size_t cols = next.tensors[t].shape[1];
        for (size_t r = 0; r < next.tensors[t].count / cols; r++) {
            float maxabs = 0;
            for (size_t c = 0; c < cols; c++) {
                size_t k = r * cols + c;
                maxabs = fmaxf(maxabs, fabsf(next.tensors[t].data[k] - first.tensors[t].data[k]));
            }
            for (size_t c = 0; c < cols; c++) {
                size_t k = r * cols + c;
                float d = next.tensors[t].data[k] - first.tensors[t].data[k];
                within &= fabsf(delta.tensors[t].data[k] - d) <= maxabs / 127.0f * 0.5001f;
            }
        }
    }
    CHECK(within);
    el_delta_set_finish(&delta);

    /* Every truncation and every single-byte corruption of the container is
     * refused or decodes to something bounded (never a crash: ASan run). */
    int refused = 1;
    for (size_t cut = 0; cut < len; cut++) {
        el_delta_set d = {0};
        refused &= el_delta_decode(buf, cut, &lim, &d, &enc, &err) != 0 && d.n == 0;
    }
    CHECK(refused);
    for (size_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x5a;
        el_delta_set d = {0};
        el_delta_decode(buf, len, &lim, &d, &enc, &err);
        el_delta_set_finish(&d);
        buf[i] ^= 0x5a;
    }
    /* Limits: fewer tensors or elements than the container needs. */
    el_delta_limits tight = {.max_tensors = 2, .max_elements = 1 << 20};
    CHECK(el_delta_decode(buf, len, &tight, &delta, &enc, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "oversize");
    tight = (el_delta_limits){.max_tensors = 16, .max_elements = 1000};
    CHECK(el_delta_decode(buf, len, &tight, &delta, &enc, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "oversize");
    /* Another container version. */
    buf[4] = 2;
    CHECK(el_delta_decode(buf, len, &lim, &delta, &enc, &err) == EL_EINPUT);
    el_free(buf);

    /* Shape mismatch and non-finite inputs. */
    el_delta_set odd = {0};
    uint64_t shape[2] = {4, 4};
    CHECK_OK(el_delta_set_add(&odd, "layers.0.q_proj.lora_A", 2, shape, NULL, &err), &err);
    CHECK(el_delta_encode(&first, &odd, EL_DELTA_Q8, &buf, &len, &err) == EL_EINPUT);
    CHECK(el_delta_set_add(&odd, "layers.0.q_proj.lora_A", 2, shape, NULL, &err) == EL_EINPUT);
    odd.tensors[0].data[3] = NAN;
    CHECK(el_delta_encode(&odd, NULL, EL_DELTA_EXACT, &buf, &len, &err) == EL_EINPUT);
    el_delta_set_finish(&odd);
    el_delta_set_finish(&first);
    el_delta_set_finish(&next);
}

int main(void)
{
    test_exact();
    CHECK(el_delta_encoding_parse("lora-delta-q8") == EL_DELTA_Q8);
    CHECK(el_delta_encoding_parse("lora-delta-exact") == EL_DELTA_EXACT);
    CHECK(el_delta_encoding_parse("zip") == -1);
    return el_test_done("test_delta");
}
