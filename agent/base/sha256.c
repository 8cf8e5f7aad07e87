/* SHA-256 (FIPS 180-4), portable C plus the x86 SHA extensions.
 *
 * Notes:
 *  1. Blobs are hashed when they are written, imported and verified before
 *     activation, so a base model costs a full pass on every check. Where
 *     the CPU has the SHA extensions (cpuid leaf 7, EBX bit 29, with SSSE3
 *     and SSE4.1) the blocks go through sha256rnds2/msg1/msg2, several
 *     times the portable speed (tools/bench/sha256); the function is built
 *     with a target attribute, so the rest of the code keeps the baseline
 *     ISA. EDGELOOP_SHA256_PORTABLE=1 forces the portable code (the tests
 *     run both and check them against `openssl dgst`).
 */
#include "sha256.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EL_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void compress_portable(uint32_t s[8], const uint8_t b[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s[0], bb = s[1], c = s[2], d = s[3], e = s[4], f = s[5],
             g = s[6], h = s[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) +
                      ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) +
                      ((a & bb) ^ (a & c) ^ (bb & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = bb; bb = a; a = t1 + t2;
    }
    s[0] += a; s[1] += bb; s[2] += c; s[3] += d;
    s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

#ifdef EL_SHA_NI
/* The state as the instructions hold it: STATE0 = (A, B, E, F) and
 * STATE1 = (C, D, G, H), A and C in the highest lane. */
__attribute__((target("sha,ssse3,sse4.1"))) static void compress_shani(uint32_t s[8],
                                                                      const uint8_t *p,
                                                                      size_t blocks)
{
    const __m128i swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1);
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B);
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);
    while (blocks--) {
        __m128i save0 = st0, save1 = st1, m[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            m[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * j)), swap);
        /* 16 groups of 4 rounds; group j >= 4 first derives its words
         * W[4j..4j+3] from groups j-4 .. j-1 (m[] is a ring of 4) */
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            if (j >= 4) {
                __m128i w = _mm_sha256msg1_epu32(m[j & 3], m[(j + 1) & 3]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(m[(j + 3) & 3], m[(j + 2) & 3], 4));
                m[j & 3] = _mm_sha256msg2_epu32(w, m[(j + 3) & 3]);
            }
            __m128i msg = _mm_add_epi32(m[j & 3], _mm_loadu_si128((const __m128i *)&K[4 * j]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(msg, 0x0E));
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
        p += 64;
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);
    st1 = _mm_shuffle_epi32(st1, 0xB1);
    _mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(tmp, st1, 0xF0));
    _mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(st1, tmp, 8));
}
#endif

static int use_shani;
static pthread_once_t pick_once = PTHREAD_ONCE_INIT;

static void pick(void)
{
#ifdef EL_SHA_NI
    unsigned a, b, c, d;
    const char *force = getenv("EDGELOOP_SHA256_PORTABLE");
    if ((force && *force && strcmp(force, "0")) || !__get_cpuid(1, &a, &b, &c, &d))
        return;
    int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && ((b >> 29) & 1) && ssse3 && sse41)
        use_shani = 1;
#endif
}

static void compress(uint32_t s[8], const uint8_t *p, size_t blocks)
{
    pthread_once(&pick_once, pick);
#ifdef EL_SHA_NI
    if (use_shani) {
        compress_shani(s, p, blocks);
        return;
    }
#endif
    for (; blocks; blocks--, p += 64)
        compress_portable(s, p);
}

const char *el_sha256_impl(void)
{
    pthread_once(&pick_once, pick);
    return use_shani ? "sha-ni" : "portable";
}

void el_sha256_init(el_sha256_ctx *ctx)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                   0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, iv, sizeof iv);
    ctx->bytes = 0;
    ctx->fill = 0;
}

void el_sha256_update(el_sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len == 0)   /* data may be NULL then; memcpy must not see it */
        return;
    ctx->bytes += len;
    if (ctx->fill) {
        size_t take = 64 - ctx->fill < len ? 64 - ctx->fill : len;
        memcpy(ctx->block + ctx->fill, p, take);
        ctx->fill += take;
        p += take;
        len -= take;
        if (ctx->fill < 64)
            return;
        compress(ctx->state, ctx->block, 1);
        ctx->fill = 0;
    }
    if (len >= 64) {
        size_t blocks = len / 64;
        compress(ctx->state, p, blocks);
        p += blocks * 64;
        len -= blocks * 64;
    }
    memcpy(ctx->block, p, len);
    ctx->fill = len;
}

void el_sha256_final(el_sha256_ctx *ctx, uint8_t out[EL_SHA256_LEN])
{
    uint64_t bits = ctx->bytes * 8;
    uint8_t pad = 0x80;
    el_sha256_update(ctx, &pad, 1);
    uint8_t zero = 0;
    while (ctx->fill != 56)
        el_sha256_update(ctx, &zero, 1);
    uint8_t len_be[8];
    for (int i = 0; i < 8; i++)
        len_be[i] = (uint8_t)(bits >> (56 - 8 * i));
    el_sha256_update(ctx, len_be, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        out[4 * i + 3] = (uint8_t)ctx->state[i];
    }
    memset(ctx, 0, sizeof *ctx);
}

void el_sha256(const void *data, size_t len, uint8_t out[EL_SHA256_LEN])
{
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    el_sha256_update(&ctx, data, len);
    el_sha256_final(&ctx, out);
}

void el_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

void el_sha256_hex(const void *data, size_t len, char out[EL_SHA256_HEX_LEN + 1])
{
    uint8_t d[EL_SHA256_LEN];
    el_sha256(data, len, d);
    el_hex(d, sizeof d, out);
}

static int nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int el_unhex(const char *in, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = nibble(in[2 * i]), lo = hi < 0 ? -1 : nibble(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
