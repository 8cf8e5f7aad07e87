/* bench-sha256: SHA-256 throughput of edgeloop's block function (whichever
 * this CPU picks, or the portable one under EDGELOOP_SHA256_PORTABLE=1)
 * next to mbedTLS's on the same buffer, best of three passes each.
 * tools/bench/sha256 runs it both ways and adds `openssl speed`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/sha256.h>

#include "base/sha256.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t mb = 128;
    int ours_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--ours-only"))
            ours_only = 1;
        else {
            printf("usage: bench-sha256 [--mb N] [--ours-only]\n"
                   "  MB/s of SHA-256 over an N MiB buffer (default 128): edgeloop's and\n"
                   "  mbedTLS's, best of three passes.\n");
            return strcmp(argv[i], "--help") ? 1 : 0;
        }
    }
    if (mb < 1 || mb > 4096)
        return 1;
    size_t len = mb << 20;
    unsigned char *buf = malloc(len);
    if (!buf)
        return 1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    uint8_t ours[32], theirs[32];
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        el_sha256(buf, len, ours);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    printf("edgeloop (%s)%*s %8.0f MB/s\n", el_sha256_impl(),
           (int)(10 - strlen(el_sha256_impl())), "", (double)mb / best);
    if (!ours_only) {
        best = 1e9;
        for (int r = 0; r < 3; r++) {
            double t0 = now_s();
            mbedtls_sha256_ret(buf, len, theirs, 0);
            double t = now_s() - t0;
            best = t < best ? t : best;
        }
        printf("mbedTLS 2.28            %8.0f MB/s   digests %s\n", (double)mb / best,
               memcmp(ours, theirs, 32) ? "DIFFER" : "equal");
    }
    free(buf);
    return memcmp(ours, theirs, 32) && !ours_only ? 1 : 0;
}
