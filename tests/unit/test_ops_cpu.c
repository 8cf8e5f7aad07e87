/* Every op of the cpu backend against plain C references written here
 * (double accumulation), backward ops against central finite differences of
 * a scalar loss evaluated in double, and known answers worked out by hand.
 *
 * Error bounds (each stated again where it is used):
 *  - matmul: |C - ref| <= 1e-6 (8 + sqrt(K)) (|alpha| sum_k |a b| + |beta c|),
 *    i.e. a few fp32 rounding errors per sqrt(K) terms of the absolute sum.
 *  - elementwise ops: 1e-6 relative (a few fp32 ulps).
 *  - row reductions (RMSNorm, softmax, cross-entropy): 2e-6 .. 1e-5 relative.
 *  - RoPE: 3e-6: its angle is rounded to fp32 as Hugging Face does it
 *    (pos * inv_freq, rel. error 6e-8, i.e. 1e-6 rad at position 16).
 *  - gradients vs finite differences (h = 1e-5, exact to ~1e-10 in double):
 *    2e-5 relative to max(1, |gradient|); a wrong term is O(1).
 * Every input tensor sits at an offset inside a larger one whose pads hold a
 * sentinel (guard_ok), so views and writes outside them are checked too.
 */
#include <stdint.h>

#include "base/alloc.h"
#include "check.h"
#include "nn/backend.h"
#include "nn/cpu.h"

/* OpenBLAS's own; declared here because <cblas.h> pulls in <complex.h>,
 * whose macro I would clash with this file's names. */
int openblas_get_num_threads(void);

static el_backend *be;
static el_error err;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* Uniform in [-1, 1). */
static float rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 23) - 1.0);
}

static float *rnd_array(size_t n, float scale)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd() * scale;
    return x;
}

/* A tensor of PAD + n + PAD elements holding X at offset PAD, with the pads
 * set to a sentinel so writes outside the view are caught (guard_ok). */
#define PAD 5
#define SENTINEL 1234.5f

static el_view upload(const float *x, size_t n)
{
    el_tensor *t = el_nn_tensor_create(be, EL_F32, n + 2 * PAD, &err);
    CHECK_OK(t ? 0 : -1, &err);
    float *all = malloc((n + 2 * PAD) * sizeof *all);
    for (size_t i = 0; i < n + 2 * PAD; i++)
        all[i] = SENTINEL;
    if (x)
        memcpy(all + PAD, x, n * sizeof *x);
    else
        memset(all + PAD, 0, n * sizeof *all);
    CHECK_OK(el_nn_write(be, el_nn_whole(t), all, &err), &err);
    free(all);
    return el_nn_view(t, PAD, n);
}

static el_view upload_i32(const int32_t *x, size_t n)
{
    el_tensor *t = el_nn_tensor_create(be, EL_I32, n + PAD, &err);
    CHECK_OK(t ? 0 : -1, &err);
    el_view v = el_nn_view(t, PAD, n);
    CHECK_OK(el_nn_write(be, v, x, &err), &err);
    return v;
}

static float *download(el_view v)
{
    float *x = malloc(v.n * sizeof *x);
    CHECK_OK(el_nn_read(be, v, x, &err), &err);
    return x;
}

static int guard_ok(el_view v)
{
    float pad[PAD];
    int ok = 1;
    CHECK_OK(el_nn_read(be, el_nn_view(v.t, 0, PAD), pad, &err), &err);
    for (int i = 0; i < PAD; i++)
        ok &= pad[i] == SENTINEL;
    CHECK_OK(el_nn_read(be, el_nn_view(v.t, v.off + v.n, PAD), pad, &err), &err);
    for (int i = 0; i < PAD; i++)
        ok &= pad[i] == SENTINEL;
    return ok;
}

static void drop(el_view v)
{
    el_nn_tensor_destroy(be, v.t);
}

static el_view none(void)
{
    el_view v = {NULL, 0, 0};
    return v;
}

/* Worst |a - b| / max(1, |b|) over n elements. */
static double max_rel(const float *a, const double *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

/* ---------------------------------------------------------------- matmul */

/* A, B and C share one tensor at nonzero offsets, so views are exercised
 * and a write outside C would hit A, B or a guard. */
static void matmul_case(el_matmul_layout L, int M, int N, int K, float alpha,
                        float beta, int nan_c)
{
    size_t na = (size_t)M * K, nb = (size_t)N * K, nc = (size_t)M * N;
    size_t offa = 3, offb = offa + na + 2, offc = offb + nb + 7, total = offc + nc + 4;
    float *all = malloc(total * sizeof *all);
    for (size_t i = 0; i < total; i++)
        all[i] = SENTINEL;
    for (size_t i = 0; i < na; i++)
        all[offa + i] = rnd();
    for (size_t i = 0; i < nb; i++)
        all[offb + i] = rnd();
    for (size_t i = 0; i < nc; i++)
        all[offc + i] = nan_c ? NAN : rnd();
    el_tensor *t = el_nn_tensor_create(be, EL_F32, total, &err);
    CHECK_OK(el_nn_write(be, el_nn_whole(t), all, &err), &err);
    int rc = el_nn_matmul(be, L, M, N, K, alpha, el_nn_view(t, offa, na),
                          el_nn_view(t, offb, nb), beta, el_nn_view(t, offc, nc), &err);
    CHECK_OK(rc, &err);
    float *out = malloc(total * sizeof *out);
    CHECK_OK(el_nn_read(be, el_nn_whole(t), out, &err), &err);

    const float *A = all + offa, *B = all + offb, *C0 = all + offc;
    double worst = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = L == EL_MM_TN ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
                double b = L == EL_MM_NT ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
                s += a * b;
                mag += fabs(a * b);
            }
            double c0 = C0[(size_t)i * N + j];
            double want = alpha * s + (beta != 0.0f ? beta * c0 : 0.0);
            mag = fabs(alpha) * mag + (beta != 0.0f ? fabs(beta * c0) : 0.0) + 1e-30;
            double got = out[offc + (size_t)i * N + j];
            double e = fabs(got - want) / (1e-6 * (8 + sqrt((double)K)) * mag);
            if (!(e <= worst))
                worst = e;
        }
    }
    CHECK_MSG(worst <= 1.0, "matmul layout %d %dx%dx%d alpha %g beta %g: error %.3g of the bound",
              (int)L, M, N, K, (double)alpha, (double)beta, worst);
    /* everything but C unchanged (A, B, gaps, guards) */
    int same = 1;
    for (size_t i = 0; i < total; i++)
        if (i < offc || i >= offc + nc)
            same &= memcmp(&out[i], &all[i], sizeof *out) == 0;
    CHECK_MSG(same, "matmul layout %d %dx%dx%d wrote outside C", (int)L, M, N, K);
    el_nn_tensor_destroy(be, t);
    free(all);
    free(out);
}

static void test_matmul(void)
{
    static const int shapes[][3] = {
        {1, 1, 1}, {3, 17, 129}, {17, 3, 1000}, {129, 1000, 3}, {1000, 1, 17},
        {1, 129, 4096}, {17, 17, 4096}, {64, 48, 33},
    };
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 2.0f}, {-1.5f, 1.0f}};
    for (int L = EL_MM_NT; L <= EL_MM_TN; L++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t c = 0; c < sizeof ab / sizeof ab[0]; c++)
                matmul_case((el_matmul_layout)L, shapes[s][0], shapes[s][1],
                            shapes[s][2], ab[c][0], ab[c][1], 0);
    /* beta == 0 must not read C: NaN there is overwritten */
    for (int L = EL_MM_NT; L <= EL_MM_TN; L++)
        matmul_case((el_matmul_layout)L, 17, 3, 129, 1.0f, 0.0f, 1);

    /* a known product: [1 2; 3 4] . [5 6; 7 8] = [19 22; 43 50] (NN) */
    float a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8}, bt[] = {5, 7, 6, 8};
    el_view A = upload(a, 4), B = upload(b, 4), Bt = upload(bt, 4), C = upload(NULL, 4);
    CHECK_OK(el_nn_matmul(be, EL_MM_NN, 2, 2, 2, 1.0f, A, B, 0.0f, C, &err), &err);
    float *c = download(C);
    CHECK(c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50);
    free(c);
    CHECK_OK(el_nn_matmul(be, EL_MM_NT, 2, 2, 2, 1.0f, A, Bt, 0.0f, C, &err), &err);
    c = download(C);
    CHECK(c[0] == 19 && c[1] == 22 && c[2] == 43 && c[3] == 50);
    free(c);
    /* TN: A^T = [1 3; 2 4], so A^T . B = [26 30; 38 44] */
    CHECK_OK(el_nn_matmul(be, EL_MM_TN, 2, 2, 2, 1.0f, A, B, 0.0f, C, &err), &err);
    c = download(C);
    CHECK(c[0] == 26 && c[1] == 30 && c[2] == 38 && c[3] == 44);
    CHECK(guard_ok(C));
    free(c);
    drop(A), drop(B), drop(Bt), drop(C);
}

/* ------------------------------------------------------ elementwise ops */

static void test_elementwise(void)
{
    /* fill f32 and i32, leaving the rest alone */
    el_view x = upload(NULL, 100003);
    CHECK_OK(el_nn_fill(be, x, 2.5f, &err), &err);
    float *h = download(x);
    int ok = 1;
    for (size_t i = 0; i < x.n; i++)
        ok &= h[i] == 2.5f;
    CHECK(ok);
    CHECK(guard_ok(x));
    free(h);

    int32_t ids[7] = {0};
    el_view xi = upload_i32(ids, 7);
    CHECK_OK(el_nn_fill(be, xi, -1.0f, &err), &err);
    CHECK_OK(el_nn_read(be, xi, ids, &err), &err);
    CHECK(ids[0] == -1 && ids[6] == -1);
    /* i32 fill converts toward zero, as C (and the vulkan backend) do */
    CHECK_OK(el_nn_fill(be, el_nn_view(xi.t, xi.off + 2, 3), 2.6f, &err), &err);
    CHECK_OK(el_nn_read(be, xi, ids, &err), &err);
    CHECK(ids[1] == -1 && ids[2] == 2 && ids[4] == 2 && ids[5] == -1);
    CHECK_OK(el_nn_fill(be, el_nn_view(xi.t, xi.off + 2, 1), -2.6f, &err), &err);
    CHECK_OK(el_nn_read(be, xi, ids, &err), &err);
    CHECK(ids[2] == -2);

    /* copy between offsets, f32 and i32 */
    float *src = rnd_array(1000, 1.0f);
    el_view s = upload(src, 1000), d = upload(NULL, 1000);
    CHECK_OK(el_nn_copy(be, d, s, &err), &err);
    h = download(d);
    CHECK(memcmp(h, src, 1000 * sizeof *h) == 0);
    CHECK(guard_ok(d));
    free(h);
    int32_t ids2[7];
    el_view di = upload_i32(ids2, 7);
    CHECK_OK(el_nn_copy(be, di, xi, &err), &err);
    CHECK_OK(el_nn_read(be, di, ids2, &err), &err);
    CHECK(memcmp(ids, ids2, sizeof ids) == 0);
    drop(xi), drop(di);

    /* axpby: y = 0.5 x - 2 y over several chunks; beta 0 drops NaN in y */
    float *y0 = rnd_array(100003, 3.0f), *x0 = rnd_array(100003, 1.0f);
    el_view X = upload(x0, 100003), Y = upload(y0, 100003);
    CHECK_OK(el_nn_axpby(be, 0.5f, X, -2.0f, Y, &err), &err);
    h = download(Y);
    double worst = 0;
    for (size_t i = 0; i < Y.n; i++) {
        double want = 0.5 * x0[i] - 2.0 * y0[i];
        worst = fmax(worst, fabs(h[i] - want) / fmax(1.0, fabs(want)));
    }
    CHECK_MSG(worst <= 1e-6, "axpby error %g", worst);
    CHECK(guard_ok(Y));
    free(h);
    CHECK_OK(el_nn_fill(be, Y, NAN, &err), &err);
    CHECK_OK(el_nn_axpby(be, 3.0f, X, 0.0f, Y, &err), &err);
    h = download(Y);
    ok = 1;
    for (size_t i = 0; i < Y.n; i++)
        ok &= h[i] == 3.0f * x0[i];
    CHECK_MSG(ok, "axpby with beta 0 must not read y");
    free(h);

    /* add, then in place (c = a) */
    el_view C = upload(NULL, 100003);
    el_view Y2 = upload(y0, 100003);
    CHECK_OK(el_nn_add(be, X, Y2, C, &err), &err);
    h = download(C);
    ok = 1;
    for (size_t i = 0; i < C.n; i++)
        ok &= h[i] == x0[i] + y0[i];
    CHECK(ok);
    CHECK(guard_ok(C));
    free(h);
    CHECK_OK(el_nn_add(be, X, Y2, X, &err), &err);
    h = download(X);
    ok = 1;
    for (size_t i = 0; i < X.n; i++)
        ok &= h[i] == x0[i] + y0[i];
    CHECK_MSG(ok, "add in place");
    free(h);

    drop(x), drop(s), drop(d), drop(X), drop(Y), drop(Y2), drop(C);
    free(src), free(x0), free(y0);
}

/* --------------------------------------------------------------- reduce */

static void reduce_case(size_t n)
{
    float *x = rnd_array(n, 2.0f);
    el_view X = upload(x, n);
    el_view out = upload(NULL, 1);
    double sum = 0, sumsq = 0, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        sum += x[i];
        sumsq += (double)x[i] * x[i];
        mx = fmax(mx, x[i]);
    }
    float r;
    /* sums in double, rounded once: 1e-6 relative to the absolute sum */
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUM, X, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK_NEAR(r, sum, 1e-6 * (double)n);
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUMSQ, X, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK_NEAR(r, sumsq, 1e-6);
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_MAX, X, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK(r == (float)mx);
    /* accumulate: sumsq + sumsq, max with a larger out[0] */
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUMSQ, X, out, 0, &err), &err);
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUMSQ, X, out, 1, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK_NEAR(r, 2 * sumsq, 1e-6);
    CHECK_OK(el_nn_fill(be, out, 7.0f, &err), &err);
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_MAX, X, out, 1, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK(r == 7.0f);
    CHECK(guard_ok(out));
    drop(X), drop(out);
    free(x);
}

static void test_reduce(void)
{
    reduce_case(1);
    reduce_case(17);
    reduce_case(1000);
    reduce_case(1000003);
    /* a NaN anywhere shows in MAX and SUMSQ */
    float x[5] = {1, 2, NAN, 4, -1};
    el_view X = upload(x, 5), out = upload(NULL, 1);
    float r;
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_MAX, X, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK(isnan(r));
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUMSQ, X, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK(isnan(r));
    /* all negative: max is not 0 */
    float neg[3] = {-3, -1.5f, -2};
    el_view N = upload(neg, 3);
    CHECK_OK(el_nn_reduce(be, EL_REDUCE_MAX, N, out, 0, &err), &err);
    CHECK_OK(el_nn_read(be, out, &r, &err), &err);
    CHECK(r == -1.5f);
    drop(X), drop(out), drop(N);
}

/* ------------------------------------------------------------ embedding */

static void test_embedding(void)
{
    int T = 17, V = 1000, D = 3;
    float *table = rnd_array((size_t)V * D, 1.0f);
    int32_t ids[17];
    for (int t = 0; t < T; t++)
        ids[t] = (t * 389 + 7) % V;
    ids[3] = 0;
    ids[4] = V - 1;
    el_view I = upload_i32(ids, (size_t)T), W = upload(table, (size_t)V * D);
    el_view O = upload(NULL, (size_t)T * D);
    CHECK_OK(el_nn_embedding(be, I, W, T, V, D, O, &err), &err);
    float *o = download(O);
    int ok = 1;
    for (int t = 0; t < T; t++)
        ok &= memcmp(o + t * D, table + (size_t)ids[t] * D, (size_t)D * sizeof *o) == 0;
    CHECK(ok);
    CHECK(guard_ok(O));
    free(o);
    /* an id outside [0, V) is refused before anything is written */
    CHECK_OK(el_nn_fill(be, O, 9.0f, &err), &err);
    ids[5] = V;
    CHECK_OK(el_nn_write(be, I, ids, &err), &err);
    CHECK(el_nn_embedding(be, I, W, T, V, D, O, &err) == EL_EINTERNAL);
    CHECK(strstr(err.msg, "outside") != NULL);
    ids[5] = -1;
    CHECK_OK(el_nn_write(be, I, ids, &err), &err);
    CHECK(el_nn_embedding(be, I, W, T, V, D, O, &err) == EL_EINTERNAL);
    o = download(O);
    CHECK(o[0] == 9.0f && o[T * D - 1] == 9.0f);
    free(o);
    drop(I), drop(W), drop(O);
    free(table);
}

/* -------------------------------------------------------------- RMSNorm */

/* Row loss sum_i c_i y_i of RMSNorm in double. */
static double rms_row_loss(const double *x, const float *w, const float *c, int D,
                           double eps)
{
    double ss = 0;
    for (int i = 0; i < D; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / D + eps);
    double l = 0;
    for (int i = 0; i < D; i++)
        l += c[i] * x[i] * r * w[i];
    return l;
}

static void rmsnorm_case(int T, int D, float eps)
{
    size_t n = (size_t)T * D;
    float *x = rnd_array(n, 2.0f), *w = rnd_array((size_t)D, 1.5f);
    float *dy = rnd_array(n, 1.0f), *dx0 = rnd_array(n, 1.0f);
    el_view X = upload(x, n), Wv = upload(w, (size_t)D), Y = upload(NULL, n);
    el_view R = upload(NULL, (size_t)T), DY = upload(dy, n), DX = upload(dx0, n);
    CHECK_OK(el_nn_rmsnorm_fwd(be, X, Wv, T, D, eps, Y, R, &err), &err);
    float *y = download(Y), *r = download(R);
    double *want = malloc(n * sizeof *want), *wr = malloc((size_t)T * sizeof *wr);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < D; i++)
            ss += (double)x[t * D + i] * x[t * D + i];
        wr[t] = 1.0 / sqrt(ss / D + eps);
        for (int i = 0; i < D; i++)
            want[t * D + i] = x[t * D + i] * wr[t] * w[i];
    }
    /* bound 2e-6: the row sum is in double, then three fp32 roundings */
    CHECK_MSG(max_rel(y, want, n) <= 2e-6, "rmsnorm_fwd %dx%d: %g", T, D, max_rel(y, want, n));
    CHECK_MSG(max_rel(r, wr, (size_t)T) <= 2e-6, "rmsnorm rstd %dx%d", T, D);
    CHECK(guard_ok(Y) && guard_ok(R));

    /* backward (beta = 0.5) against central differences of the row loss */
    CHECK_OK(el_nn_rmsnorm_bwd(be, X, Wv, R, DY, T, D, 0.5f, DX, &err), &err);
    float *dx = download(DX);
    double *xd = malloc((size_t)D * sizeof *xd);
    const double h = 1e-5;
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D; i++)
            xd[i] = x[t * D + i];
        for (int i = 0; i < D; i++) {
            double keep = xd[i];
            xd[i] = keep + h;
            double lp = rms_row_loss(xd, w, dy + t * D, D, eps);
            xd[i] = keep - h;
            double lm = rms_row_loss(xd, w, dy + t * D, D, eps);
            xd[i] = keep;
            double g = (lp - lm) / (2 * h) + 0.5 * dx0[t * D + i];
            worst = fmax(worst, fabs(dx[t * D + i] - g) / fmax(1.0, fabs(g)));
        }
    }
    /* bound 2e-5 relative to max(1, |grad|) */
    CHECK_MSG(worst <= 2e-5, "rmsnorm_bwd %dx%d vs finite differences: %g", T, D, worst);
    CHECK(guard_ok(DX));
    /* beta = 0 must not read dx */
    CHECK_OK(el_nn_fill(be, DX, NAN, &err), &err);
    CHECK_OK(el_nn_rmsnorm_bwd(be, X, Wv, R, DY, T, D, 0.0f, DX, &err), &err);
    float *dx2 = download(DX);
    int finite = 1;
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(dx2[i]) && fabsf(dx2[i] - (dx[i] - 0.5f * dx0[i])) <= 1e-5f;
    CHECK_MSG(finite, "rmsnorm_bwd with beta 0");
    free(dx2);
    free(x), free(w), free(dy), free(dx0), free(y), free(r), free(want), free(wr),
        free(dx), free(xd);
    drop(X), drop(Wv), drop(Y), drop(R), drop(DY), drop(DX);
}

static void test_rmsnorm(void)
{
    /* known answer: x = [1, -2, 2, 4] has mean square 25/4, so with eps = 0
     * rstd = 1/2.5 = 0.4; w = [1, 0.5, 2, -1] gives y = [0.4, -0.4, 1.6, -1.6] */
    float x[4] = {1, -2, 2, 4}, w[4] = {1, 0.5f, 2, -1};
    el_view X = upload(x, 4), Wv = upload(w, 4), Y = upload(NULL, 4), R = upload(NULL, 1);
    CHECK_OK(el_nn_rmsnorm_fwd(be, X, Wv, 1, 4, 0.0f, Y, R, &err), &err);
    float *y = download(Y), *r = download(R);
    CHECK_NEAR(r[0], 0.4, 1e-7);
    CHECK_NEAR(y[0], 0.4, 1e-7);
    CHECK_NEAR(y[1], -0.4, 1e-7);
    CHECK_NEAR(y[2], 1.6, 1e-7);
    CHECK_NEAR(y[3], -1.6, 1e-7);
    free(y), free(r);
    drop(X), drop(Wv), drop(Y), drop(R);

    rmsnorm_case(1, 1, 1e-5f);
    rmsnorm_case(3, 17, 1e-5f);
    rmsnorm_case(17, 129, 1e-6f);
    rmsnorm_case(40, 1000, 1e-5f);   /* several tasks */
}

/* ----------------------------------------------------------------- RoPE */

static void rope_ref(const double *x, double *y, int B, int S, int H, int hd,
                     double theta, int inverse)
{
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < half; i++) {
                    size_t at = (((size_t)b * S + s) * H + h) * hd;
                    double ang = s * pow(theta, -2.0 * i / hd);
                    double c = cos(ang), sn = inverse ? -sin(ang) : sin(ang);
                    double x1 = x[at + i], x2 = x[at + i + half];
                    y[at + i] = x1 * c - x2 * sn;
                    y[at + i + half] = x2 * c + x1 * sn;
                }
}

static void test_rope(void)
{
    /* Known answer, rotate-half (not interleaved): hd = 4 pairs (0, 2) and
     * (1, 3); theta = 100 gives inv_freq = [1, 0.1]. For x = [a, b, c, d] at
     * position s: [a cos s - c sin s, b cos .1s - d sin .1s,
     *              c cos s + a sin s, d cos .1s + b sin .1s]. */
    int S = 4, H = 2, hd = 4;
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i % 7) - 2.5f;
    el_view X = upload(x, 32);
    CHECK_OK(el_nn_rope(be, X, 1, S, H, hd, 100.0f, 0, &err), &err);
    float *y = download(X);
    for (int s = 0; s < S; s++)
        for (int h = 0; h < H; h++) {
            const float *in = x + (s * H + h) * hd;
            const float *out = y + (s * H + h) * hd;
            double a = in[0], b = in[1], c = in[2], d = in[3];
            CHECK_NEAR(out[0], a * cos(s) - c * sin(s), 1e-6);
            CHECK_NEAR(out[1], b * cos(0.1 * s) - d * sin(0.1 * s), 1e-6);
            CHECK_NEAR(out[2], c * cos(s) + a * sin(s), 1e-6);
            CHECK_NEAR(out[3], d * cos(0.1 * s) + b * sin(0.1 * s), 1e-6);
        }
    /* position 0 is the identity */
    CHECK(memcmp(y, x, (size_t)H * hd * sizeof *y) == 0);
    CHECK(guard_ok(X));
    free(y);
    drop(X);

    /* random shapes against the double reference; B = 2 so position is row % S */
    int B = 2;
    S = 17, H = 3, hd = 8;
    size_t n = (size_t)B * S * H * hd;
    float *xr = rnd_array(n, 1.0f);
    double *xd = malloc(n * sizeof *xd), *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        xd[i] = xr[i];
    X = upload(xr, n);
    CHECK_OK(el_nn_rope(be, X, B, S, H, hd, 10000.0f, 0, &err), &err);
    y = download(X);
    rope_ref(xd, want, B, S, H, hd, 10000.0, 0);
    /* bound 3e-6: fp32 angle (1e-6 rad at position 16) plus roundings */
    CHECK_MSG(max_rel(y, want, n) <= 3e-6, "rope: %g", max_rel(y, want, n));
    /* the inverse undoes it */
    CHECK_OK(el_nn_rope(be, X, B, S, H, hd, 10000.0f, 1, &err), &err);
    free(y);
    y = download(X);
    CHECK_MSG(max_rel(y, xd, n) <= 3e-6, "rope inverse: %g", max_rel(y, xd, n));
    free(y);

    /* the inverse is the backward: for L = sum c . rope(x), dL/dx equals
     * rope(c, inverse), checked against central differences */
    float *c = rnd_array(n, 1.0f);
    CHECK_OK(el_nn_write(be, X, c, &err), &err);
    CHECK_OK(el_nn_rope(be, X, B, S, H, hd, 10000.0f, 1, &err), &err);
    float *g = download(X);
    double worst = 0, hstep = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double keep = xd[i], lp = 0, lm = 0;
        xd[i] = keep + hstep;
        rope_ref(xd, want, B, S, H, hd, 10000.0, 0);
        for (size_t j = 0; j < n; j++)
            lp += c[j] * want[j];
        xd[i] = keep - hstep;
        rope_ref(xd, want, B, S, H, hd, 10000.0, 0);
        for (size_t j = 0; j < n; j++)
            lm += c[j] * want[j];
        xd[i] = keep;
        double fd = (lp - lm) / (2 * hstep);
        worst = fmax(worst, fabs(g[i] - fd) / fmax(1.0, fabs(fd)));
    }
    CHECK_MSG(worst <= 2e-5, "rope inverse vs finite differences: %g", worst);
    free(xr), free(xd), free(want), free(c), free(g);
    drop(X);
}

/* ------------------------------------------------------------ attention */

struct att_shape {
    int B, S, H, KVH, hd;
};

/* o = causal softmax(q k^T * scale) v in double; P (may be NULL) gets p. */
static void attention_ref(struct att_shape a, double scale, const double *q,
                          const double *k, const double *v, double *o, double *P)
{
    int B = a.B, S = a.S, H = a.H, KVH = a.KVH, hd = a.hd;
    double *row = malloc((size_t)S * sizeof *row);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / (H / KVH);
            for (int i = 0; i < S; i++) {
                const double *qi = q + ((size_t)(b * S + i) * H + h) * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *kj = k + ((size_t)(b * S + j) * KVH + kvh) * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += qi[d] * kj[d];
                    row[j] = s * scale;
                    mx = fmax(mx, row[j]);
                }
                for (int j = 0; j <= i; j++)
                    sum += row[j] = exp(row[j] - mx);
                double *oi = o + ((size_t)(b * S + i) * H + h) * hd;
                for (int d = 0; d < hd; d++)
                    oi[d] = 0;
                for (int j = 0; j <= i; j++) {
                    row[j] /= sum;
                    const double *vj = v + ((size_t)(b * S + j) * KVH + kvh) * hd;
                    for (int d = 0; d < hd; d++)
                        oi[d] += row[j] * vj[d];
                }
                if (P)
                    for (int j = 0; j < S; j++)
                        P[(((size_t)b * H + h) * S + i) * S + j] = j <= i ? row[j] : 0;
            }
        }
    free(row);
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* BWD_STRIDE: 0 skips the backward; n checks every n-th element of dq, dk
 * and dv against central differences. */
static void attention_case(struct att_shape a, int bwd_stride)
{
    size_t nq = (size_t)a.B * a.S * a.H * a.hd, nkv = (size_t)a.B * a.S * a.KVH * a.hd;
    size_t np = (size_t)a.B * a.H * a.S * a.S;
    float scale = 1.0f / sqrtf((float)a.hd);
    float *q = rnd_array(nq, 1.5f), *k = rnd_array(nkv, 1.5f), *v = rnd_array(nkv, 1.0f);
    float *c = rnd_array(nq, 1.0f);
    el_view Q = upload(q, nq), K = upload(k, nkv), Vv = upload(v, nkv);
    el_view O = upload(NULL, nq), P = upload(NULL, np);
    CHECK_OK(el_nn_fill(be, P, NAN, &err), &err);
    CHECK_OK(el_nn_attention_fwd(be, Q, K, Vv, a.B, a.S, a.H, a.KVH, a.hd, scale, O, P,
                                 &err), &err);
    double *qd = to_double(q, nq), *kd = to_double(k, nkv), *vd = to_double(v, nkv);
    double *od = malloc(nq * sizeof *od), *pd = malloc(np * sizeof *pd);
    attention_ref(a, scale, qd, kd, vd, od, pd);
    float *o = download(O), *p = download(P);
    /* bound 1e-5: fp32 dot products of hd terms and fp32 exp */
    CHECK_MSG(max_rel(o, od, nq) <= 1e-5 && max_rel(p, pd, np) <= 1e-5,
              "attention_fwd B%d S%d H%d KVH%d hd%d: o %g p %g", a.B, a.S, a.H, a.KVH,
              a.hd, max_rel(o, od, nq), max_rel(p, pd, np));
    int zero = 1;
    for (int bh = 0; bh < a.B * a.H; bh++)
        for (int i = 0; i < a.S; i++)
            for (int j = i + 1; j < a.S; j++)
                zero &= p[((size_t)bh * a.S + i) * a.S + j] == 0.0f;
    CHECK_MSG(zero, "p above the diagonal must be 0");
    CHECK(guard_ok(O) && guard_ok(P));

    if (bwd_stride) {
        el_view DO = upload(c, nq), DQ = upload(NULL, nq), DK = upload(NULL, nkv),
                DV = upload(NULL, nkv);
        /* overwritten, never accumulated: start from NaN */
        CHECK_OK(el_nn_fill(be, DQ, NAN, &err), &err);
        CHECK_OK(el_nn_fill(be, DK, NAN, &err), &err);
        CHECK_OK(el_nn_fill(be, DV, NAN, &err), &err);
        CHECK_OK(el_nn_attention_bwd(be, Q, K, Vv, P, DO, a.B, a.S, a.H, a.KVH, a.hd,
                                     scale, DQ, DK, DV, &err), &err);
        float *dq = download(DQ), *dk = download(DK), *dv = download(DV);
        /* L = sum c . o; central differences in double */
        const double h = 1e-5;
        struct {
            double *x;
            size_t n;
            const float *grad;
            const char *name;
        } params[3] = {{qd, nq, dq, "dq"}, {kd, nkv, dk, "dk"}, {vd, nkv, dv, "dv"}};
        for (int w = 0; w < 3; w++) {
            double worst = 0;
            for (size_t i = (size_t)w % (size_t)bwd_stride; i < params[w].n;
                 i += (size_t)bwd_stride) {
                double keep = params[w].x[i], lp = 0, lm = 0;
                params[w].x[i] = keep + h;
                attention_ref(a, scale, qd, kd, vd, od, NULL);
                for (size_t j = 0; j < nq; j++)
                    lp += c[j] * od[j];
                params[w].x[i] = keep - h;
                attention_ref(a, scale, qd, kd, vd, od, NULL);
                for (size_t j = 0; j < nq; j++)
                    lm += c[j] * od[j];
                params[w].x[i] = keep;
                double fd = (lp - lm) / (2 * h);
                double e = fabs(params[w].grad[i] - fd) / fmax(1.0, fabs(fd));
                if (!(e <= worst))
                    worst = e;
            }
            /* bound 2e-5 relative to max(1, |grad|) */
            CHECK_MSG(worst <= 2e-5, "attention_bwd %s B%d S%d H%d KVH%d hd%d: %g",
                      params[w].name, a.B, a.S, a.H, a.KVH, a.hd, worst);
        }
        CHECK(guard_ok(DQ) && guard_ok(DK) && guard_ok(DV));
        free(dq), free(dk), free(dv);
        drop(DO), drop(DQ), drop(DK), drop(DV);
    }
    free(q), free(k), free(v), free(c), free(qd), free(kd), free(vd), free(od), free(pd),
        free(o), free(p);
    drop(Q), drop(K), drop(Vv), drop(O), drop(P);
}

static void test_attention(void)
{
    /* Known answer: a 3-token causal row. q_i = [1, 0], k_j = [j, 0], scale 1:
     * row 2 scores [0, 1, 2] -> softmax [1, e, e^2] / (1 + e + e^2)
     * = [0.0900305732, 0.2447284711, 0.6652409558]; row 1 [0, 1] ->
     * [1, e] / (1 + e) = [0.2689414214, 0.7310585786]; row 0 [1]. With
     * v = [1 0; 0 1; 1 1], o_2 = [p0 + p2, p1 + p2]. */
    float q[6] = {1, 0, 1, 0, 1, 0}, k[6] = {0, 0, 1, 0, 2, 0}, v[6] = {1, 0, 0, 1, 1, 1};
    el_view Q = upload(q, 6), K = upload(k, 6), Vv = upload(v, 6);
    el_view O = upload(NULL, 6), P = upload(NULL, 9);
    CHECK_OK(el_nn_attention_fwd(be, Q, K, Vv, 1, 3, 1, 1, 2, 1.0f, O, P, &err), &err);
    float *o = download(O), *p = download(P);
    CHECK_NEAR(p[0], 1.0, 1e-7);
    CHECK(p[1] == 0 && p[2] == 0 && p[5] == 0);
    CHECK_NEAR(p[3], 0.2689414214, 1e-6);
    CHECK_NEAR(p[4], 0.7310585786, 1e-6);
    CHECK_NEAR(p[6], 0.0900305732, 1e-6);
    CHECK_NEAR(p[7], 0.2447284711, 1e-6);
    CHECK_NEAR(p[8], 0.6652409558, 1e-6);
    CHECK_NEAR(o[0], 1.0, 1e-6);
    CHECK_NEAR(o[1], 0.0, 1e-6);
    CHECK_NEAR(o[4], 0.0900305732 + 0.6652409558, 1e-6);
    CHECK_NEAR(o[5], 0.2447284711 + 0.6652409558, 1e-6);
    free(o), free(p);
    drop(Q), drop(K), drop(Vv), drop(O), drop(P);

    /* Known answer, GQA head mapping: H = 4 query heads on KVH = 2 kv heads,
     * heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1. Every query is
     * [1, 0]; token 1's key is [0, 0] on kv head 0 and [ln 3, 0] on kv head 1,
     * so row 1 attends [1/2, 1/2] on heads 0-1 and [1/4, 3/4] on heads 2-3;
     * with v_0 = [1, 0], v_1 = [0, 1] that is o itself. */
    float gq[16], gk[8] = {0, 0, 0, 0, 0, 0, (float)log(3.0), 0};
    float gv[8] = {1, 0, 1, 0, 0, 1, 0, 1};
    for (int i = 0; i < 16; i++)
        gq[i] = i % 2 ? 0.0f : 1.0f;
    Q = upload(gq, 16), K = upload(gk, 8), Vv = upload(gv, 8);
    O = upload(NULL, 16), P = upload(NULL, 16);
    CHECK_OK(el_nn_attention_fwd(be, Q, K, Vv, 1, 2, 4, 2, 2, 1.0f, O, P, &err), &err);
    o = download(O);
    static const float want[16] = {1, 0, 1, 0, 1, 0, 1, 0,
                                   0.5f, 0.5f, 0.5f, 0.5f, 0.25f, 0.75f, 0.25f, 0.75f};
    for (int i = 0; i < 16; i++)
        CHECK_NEAR(o[i], want[i], 1e-6);
    free(o);
    drop(Q), drop(K), drop(Vv), drop(O), drop(P);

    /* the cpu backend works in blocks of 64 rows: S = 129 spans three, and
     * its backward is checked on every 7th element */
    struct att_shape fwd_only[] = {{2, 40, 4, 1, 16}};
    struct att_shape both[] = {
        {1, 1, 3, 1, 5}, {1, 3, 2, 2, 3}, {1, 5, 4, 2, 4}, {2, 3, 2, 1, 3}, {2, 20, 4, 2, 4},
    };
    for (size_t i = 0; i < sizeof fwd_only / sizeof fwd_only[0]; i++)
        attention_case(fwd_only[i], 0);
    for (size_t i = 0; i < sizeof both / sizeof both[0]; i++)
        attention_case(both[i], 1);
    attention_case((struct att_shape){1, 129, 2, 1, 4}, 7);
}

/* --------------------------------------------------------------- SwiGLU */

static double silu(double g)
{
    return g / (1.0 + exp(-g));
}

static void test_swiglu(void)
{
    size_t n = 40003;
    float *g = rnd_array(n, 6.0f), *u = rnd_array(n, 2.0f), *dh = rnd_array(n, 1.0f);
    g[0] = 100.0f, g[1] = -100.0f, g[2] = 0.0f;
    el_view G = upload(g, n), U = upload(u, n), Hh = upload(NULL, n);
    el_view DH = upload(dh, n), DG = upload(NULL, n), DU = upload(NULL, n);
    CHECK_OK(el_nn_swiglu_fwd(be, G, U, Hh, &err), &err);
    float *h = download(Hh);
    double *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        want[i] = silu(g[i]) * u[i];
    /* bound 1e-6: expf and three roundings */
    CHECK_MSG(max_rel(h, want, n) <= 1e-6, "swiglu_fwd: %g", max_rel(h, want, n));
    CHECK(guard_ok(Hh));

    CHECK_OK(el_nn_swiglu_bwd(be, G, U, DH, DG, DU, &err), &err);
    float *dg = download(DG), *du = download(DU);
    double wg = 0, wu = 0, step = 1e-5;
    for (size_t i = 0; i < n; i++) {
        /* L = sum dh * silu(g) * u; each element is independent */
        double fg = dh[i] * (silu(g[i] + step) - silu(g[i] - step)) * u[i] / (2 * step);
        double fu = dh[i] * silu(g[i]) * ((u[i] + step) - (u[i] - step)) / (2 * step);
        wg = fmax(wg, fabs(dg[i] - fg) / fmax(1.0, fabs(fg)));
        wu = fmax(wu, fabs(du[i] - fu) / fmax(1.0, fabs(fu)));
    }
    CHECK_MSG(wg <= 2e-5 && wu <= 2e-5, "swiglu_bwd vs finite differences: dg %g du %g", wg,
              wu);
    CHECK(isfinite(dg[0]) && isfinite(dg[1]) && isfinite(h[1]));
    CHECK(guard_ok(DG) && guard_ok(DU));
    /* in place: h written over g */
    CHECK_OK(el_nn_swiglu_fwd(be, G, U, G, &err), &err);
    float *h2 = download(G);
    CHECK(memcmp(h2, h, n * sizeof *h) == 0);
    free(g), free(u), free(dh), free(h), free(want), free(dg), free(du), free(h2);
    drop(G), drop(U), drop(Hh), drop(DH), drop(DG), drop(DU);
}

/* -------------------------------------------------------- cross-entropy */

static double ce_row(const double *l, int V, int target)
{
    double mx = l[0], s = 0;
    for (int j = 1; j < V; j++)
        mx = fmax(mx, l[j]);
    for (int j = 0; j < V; j++)
        s += exp(l[j] - mx);
    return mx + log(s) - l[target];
}

static void cross_entropy_case(int T, int V, float spread, float grad_scale)
{
    size_t n = (size_t)T * V;
    float *l = rnd_array(n, spread);
    int32_t *tg = malloc((size_t)T * sizeof *tg);
    for (int t = 0; t < T; t++)
        tg[t] = t % 4 == 1 ? -1 : (int32_t)((t * 7919u + 3u) % (unsigned)V);
    el_view L = upload(l, n), TG = upload_i32(tg, (size_t)T), LOSS = upload(NULL, (size_t)T);
    el_view DL = upload(NULL, n);
    CHECK_OK(el_nn_cross_entropy(be, L, TG, T, V, grad_scale, LOSS, DL, &err), &err);
    float *loss = download(LOSS), *dl = download(DL);
    double *ld = to_double(l, n), worst = 0, wg = 0, step = 1e-5;
    for (int t = 0; t < T; t++) {
        double *row = ld + (size_t)t * V;
        double want = tg[t] < 0 ? 0.0 : ce_row(row, V, tg[t]);
        worst = fmax(worst, fabs(loss[t] - want) / fmax(1.0, fabs(want)));
        for (int j = 0; j < V; j++) {
            double fd = 0;
            if (tg[t] >= 0) {
                double keep = row[j];
                row[j] = keep + step;
                double lp = ce_row(row, V, tg[t]);
                row[j] = keep - step;
                double lm = ce_row(row, V, tg[t]);
                row[j] = keep;
                fd = grad_scale * (lp - lm) / (2 * step);
            }
            double got = dl[(size_t)t * V + j];
            wg = fmax(wg, fabs(got - fd) / fmax(1.0, fabs(fd)));
            if (tg[t] < 0)
                wg = fmax(wg, got != 0.0f ? 1.0 : 0.0);
        }
    }
    /* bound 1e-5 on the loss (log-sum-exp in double from fp32 logits), 2e-5
     * on dlogits vs central differences */
    CHECK_MSG(worst <= 1e-5, "cross_entropy %dx%d loss: %g", T, V, worst);
    CHECK_MSG(wg <= 2e-5, "cross_entropy %dx%d dlogits: %g", T, V, wg);
    CHECK(guard_ok(LOSS) && guard_ok(DL));

    /* dlogits aliasing logits gives the same numbers; no dlogits gives the
     * same loss */
    CHECK_OK(el_nn_cross_entropy(be, L, TG, T, V, grad_scale, LOSS, L, &err), &err);
    float *inplace = download(L);
    CHECK(memcmp(inplace, dl, n * sizeof *dl) == 0);
    CHECK_OK(el_nn_write(be, L, l, &err), &err);
    CHECK_OK(el_nn_fill(be, LOSS, NAN, &err), &err);
    CHECK_OK(el_nn_cross_entropy(be, L, TG, T, V, grad_scale, LOSS, none(), &err), &err);
    float *loss2 = download(LOSS);
    CHECK(memcmp(loss2, loss, (size_t)T * sizeof *loss) == 0);
    free(l), free(tg), free(loss), free(dl), free(ld), free(inplace), free(loss2);
    drop(L), drop(TG), drop(LOSS), drop(DL);
}

static void test_cross_entropy(void)
{
    /* Known answer: logits [1, 2, 3]: log-sum-exp = 3 + log(1 + e^-1 + e^-2)
     * = 3.4076059644; target 2 -> 0.4076059644, target 0 -> 2.4076059644,
     * target -1 -> 0 with a zero dlogits row. softmax = [0.0900305732,
     * 0.2447284711, 0.6652409558], so with grad_scale 0.5 and target 2,
     * dlogits = [0.0450152866, 0.1223642356, -0.1673795221]. Row 3 has huge
     * logits, which only work with the max subtracted: [1000, -1000, 0],
     * target 1 -> 2000. */
    float l[12] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1000, -1000, 0};
    int32_t tg[4] = {2, 0, -1, 1};
    el_view L = upload(l, 12), TG = upload_i32(tg, 4), LOSS = upload(NULL, 4);
    el_view DL = upload(NULL, 12);
    CHECK_OK(el_nn_fill(be, DL, NAN, &err), &err);
    CHECK_OK(el_nn_cross_entropy(be, L, TG, 4, 3, 0.5f, LOSS, DL, &err), &err);
    float *loss = download(LOSS), *dl = download(DL);
    CHECK_NEAR(loss[0], 0.4076059644, 1e-6);
    CHECK_NEAR(loss[1], 2.4076059644, 1e-6);
    CHECK(loss[2] == 0.0f);
    CHECK_NEAR(loss[3], 2000.0, 1e-6);
    CHECK_NEAR(dl[0], 0.0450152866, 1e-6);
    CHECK_NEAR(dl[1], 0.1223642356, 1e-6);
    CHECK_NEAR(dl[2], -0.1673795221, 1e-6);
    CHECK_NEAR(dl[3], 0.0450152866 - 0.5, 1e-6);
    CHECK(dl[6] == 0.0f && dl[7] == 0.0f && dl[8] == 0.0f);
    CHECK_NEAR(dl[9], 0.5, 1e-6);
    CHECK_NEAR(dl[10], -0.5, 1e-6);
    free(loss), free(dl);

    /* targets outside [-1, V) are refused */
    tg[1] = 3;
    CHECK_OK(el_nn_write(be, TG, tg, &err), &err);
    CHECK(el_nn_cross_entropy(be, L, TG, 4, 3, 1.0f, LOSS, DL, &err) == EL_EINTERNAL);
    tg[1] = -2;
    CHECK_OK(el_nn_write(be, TG, tg, &err), &err);
    CHECK(el_nn_cross_entropy(be, L, TG, 4, 3, 1.0f, LOSS, DL, &err) == EL_EINTERNAL);
    drop(L), drop(TG), drop(LOSS), drop(DL);

    cross_entropy_case(1, 1, 1.0f, 1.0f);
    cross_entropy_case(3, 17, 4.0f, 0.25f);
    cross_entropy_case(17, 1000, 10.0f, 1.0f / 17);
    cross_entropy_case(129, 259, 3.0f, 1.0f);   /* several tasks */
}

/* ---------------------------------------------------------------- AdamW */

static void adamw_ref(double *p, const float *g, double *m, double *v, size_t n,
                      const float hp[8], double gnorm_sq)
{
    double clip = 1.0;
    if (hp[7] > 0)
        clip = fmin(1.0, hp[7] / (sqrt(gnorm_sq) + 1e-6));
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * clip;
        m[i] = hp[1] * m[i] + (1 - (double)hp[1]) * gi;
        v[i] = hp[2] * v[i] + (1 - (double)hp[2]) * gi * gi;
        double mh = m[i] / hp[5], vh = v[i] / hp[6];
        p[i] -= hp[0] * (mh / (sqrt(vh) + hp[3]) + hp[4] * p[i]);
    }
}

static void test_adamw(void)
{
    /* Known answer, one step from m = v = 0 at t = 1 (lr 0.1, betas 0.9 and
     * 0.999, eps 1e-8, weight decay 0.01):
     *  p = 1, g = 0.5: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25,
     *    p = 1 - 0.1 (0.5 / (0.5 + 1e-8) + 0.01) = 0.899000002;
     *  p = -2, g = 0: only the decoupled decay acts, p = -2 + 0.1*0.01*2
     *    = -1.998 (an L2 penalty folded into g would give about -1.9).
     * With clipping (max norm 1, squared norm 4): g is scaled by
     * 1 / (2 + 1e-6), m = 0.05 / (2 + 1e-6), v = 0.00025 / (2 + 1e-6)^2 and
     * p moves the same (Adam's first step is sign-like). */
    for (int clipped = 0; clipped < 2; clipped++) {
        float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.0f};
        float hp[8] = {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f, clipped ? 1.0f : 0.0f};
        float gn = clipped ? 4.0f : 0.25f;
        el_view P = upload(p, 2), G = upload(g, 2), M = upload(NULL, 2), V = upload(NULL, 2);
        el_view HP = upload(hp, 8), GN = upload(&gn, 1);
        CHECK_OK(el_nn_adamw(be, P, G, M, V, HP, GN, &err), &err);
        float *pp = download(P), *mm = download(M), *vv = download(V);
        double s = clipped ? 1.0 / (2.0 + 1e-6) : 1.0;
        /* the betas are fp32: 1 - 0.9f = 0.100000024, 1 - 0.999f = 0.000999987 */
        CHECK_NEAR(mm[0] / ((1.0 - (double)0.9f) * 0.5 * s), 1.0, 1e-6);
        CHECK_NEAR(vv[0] / ((1.0 - (double)0.999f) * 0.25 * s * s), 1.0, 1e-6);
        CHECK_NEAR(pp[0] / 0.899000002, 1.0, 1e-6);
        CHECK_NEAR(pp[1] / -1.998, 1.0, 1e-6);
        CHECK(mm[1] == 0.0f && vv[1] == 0.0f);
        CHECK(guard_ok(P) && guard_ok(M) && guard_ok(V));
        free(pp), free(mm), free(vv);
        drop(P), drop(G), drop(M), drop(V), drop(HP), drop(GN);
    }

    /* three steps on 40003 params (several tasks) against the double
     * reference, clipping active then inactive; bound 1e-5 relative */
    size_t n = 40003;
    float *p = rnd_array(n, 1.0f);
    double *pd = to_double(p, n), *md = calloc(n, sizeof *md), *vd = calloc(n, sizeof *vd);
    el_view P = upload(p, n), G = upload(NULL, n), M = upload(NULL, n), V = upload(NULL, n);
    el_view HP = upload(NULL, 8), GN = upload(NULL, 1);
    for (int t = 1; t <= 3; t++) {
        float *g = rnd_array(n, 0.1f);
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += (double)g[i] * g[i];
        float gn = (float)ss;
        float hp[8] = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, (float)(1 - pow(0.9, t)),
                       (float)(1 - pow(0.95, t)), t == 2 ? 100.0f : 1.0f};
        CHECK_OK(el_nn_write(be, G, g, &err), &err);
        CHECK_OK(el_nn_write(be, HP, hp, &err), &err);
        CHECK_OK(el_nn_write(be, GN, &gn, &err), &err);
        CHECK_OK(el_nn_adamw(be, P, G, M, V, HP, GN, &err), &err);
        adamw_ref(pd, g, md, vd, n, hp, gn);
        free(g);
    }
    float *pp = download(P), *mm = download(M);
    CHECK_MSG(max_rel(pp, pd, n) <= 1e-5, "adamw p: %g", max_rel(pp, pd, n));
    CHECK_MSG(max_rel(mm, md, n) <= 1e-5, "adamw m: %g", max_rel(mm, md, n));
    free(pp), free(mm), free(p), free(pd), free(md), free(vd);

    /* a zero bias correction (t = 0) is refused, not turned into NaN */
    float bad[8] = {0.1f, 0.9f, 0.999f, 1e-8f, 0, 0, 0, 0};
    CHECK_OK(el_nn_write(be, HP, bad, &err), &err);
    CHECK(el_nn_adamw(be, P, G, M, V, HP, GN, &err) == EL_EINTERNAL);
    drop(P), drop(G), drop(M), drop(V), drop(HP), drop(GN);
}

/* ------------------------------------------------ backend-level checks */

/* Results do not depend on the thread count (cpu.c invariant 3). */
static void test_threads_deterministic(void)
{
    el_backend *keep = be;
    size_t n = 1000003;
    float *x = rnd_array(n, 1.0f);
    float r[2];
    struct att_shape a = {2, 33, 4, 2, 8};
    size_t nq = (size_t)a.B * a.S * a.H * a.hd, nkv = (size_t)a.B * a.S * a.KVH * a.hd;
    float *q = rnd_array(nq, 1.0f), *k = rnd_array(nkv, 1.0f), *o[2];
    for (int i = 0; i < 2; i++) {
        el_backend_options opts = {.kind = EL_BACKEND_CPU, .threads = i + 1};
        CHECK_OK(el_nn_backend_create(&opts, &be, &err), &err);
        CHECK(strstr(el_nn_backend_name(be), i ? "2 threads" : "1 thread") != NULL);
        CHECK(openblas_get_num_threads() == i + 1);
        el_view X = upload(x, n), out = upload(NULL, 1);
        CHECK_OK(el_nn_reduce(be, EL_REDUCE_SUM, X, out, 0, &err), &err);
        CHECK_OK(el_nn_read(be, out, &r[i], &err), &err);
        el_view Q = upload(q, nq), K = upload(k, nkv), O = upload(NULL, nq);
        el_view P = upload(NULL, (size_t)a.B * a.H * a.S * a.S);
        CHECK_OK(el_nn_attention_fwd(be, Q, K, K, a.B, a.S, a.H, a.KVH, a.hd, 0.3f, O, P,
                                     &err), &err);
        o[i] = download(O);
        drop(X), drop(out), drop(Q), drop(K), drop(O), drop(P);
        el_nn_backend_destroy(be);
    }
    CHECK(memcmp(&r[0], &r[1], sizeof r[0]) == 0);
    CHECK(memcmp(o[0], o[1], nq * sizeof *o[0]) == 0);
    free(x), free(q), free(k), free(o[0]), free(o[1]);
    be = keep;
}

static void test_backend(void)
{
    CHECK(el_nn_backend_kind(be) == EL_BACKEND_CPU);
    const char *name = el_nn_backend_name(be);
    CHECK_MSG(!strncmp(name, "cpu (OpenBLAS ", 14) && strstr(name, "thread"), "%s", name);
    /* graphs run at once on cpu, but their nesting is still checked */
    CHECK(el_nn_graph_end(be, &err) == EL_EINTERNAL);
    CHECK_OK(el_nn_graph_begin(be, 42, &err), &err);
    CHECK(el_nn_graph_begin(be, 43, &err) == EL_EINTERNAL);
    CHECK_OK(el_nn_graph_end(be, &err), &err);
    CHECK_OK(el_nn_sync(be, &err), &err);
    el_backend_options bad = {.kind = EL_BACKEND_CPU, .threads = -1};
    el_backend *other = NULL;
    CHECK(el_nn_backend_create(&bad, &other, &err) == EL_EUSAGE && other == NULL);

    /* the OpenBLAS kernel hint names a known core type, and none when the
     * caller already chose one */
    const char *hint = el_nn_cpu_blas_coretype_hint();
    CHECK(!hint || !strcmp(hint, "SkylakeX") || !strcmp(hint, "Haswell") ||
          !strcmp(hint, "Sandybridge"));
    if (hint)
        printf("note: OPENBLAS_CORETYPE=%s would give faster kernels here\n", hint);
    if (!getenv("OPENBLAS_CORETYPE")) {
        setenv("OPENBLAS_CORETYPE", "Prescott", 1);
        CHECK(el_nn_cpu_blas_coretype_hint() == NULL);
        unsetenv("OPENBLAS_CORETYPE");
    }

    /* allocation failures (backend, pool, tensors, op scratch) come back as
     * EL_ENOMEM and leak nothing (the sanitizer build checks) */
    int failures = 0;
    for (long n = 1; n <= 8; n++) {
        el_backend_options o = {.kind = EL_BACKEND_CPU, .threads = 2};
        el_alloc_fail_after(n);
        int rc = el_nn_backend_create(&o, &other, &err);
        el_alloc_fail_reset();
        if (rc) {
            failures++;
            CHECK(rc == EL_ENOMEM && other == NULL);
        } else {
            el_nn_backend_destroy(other);
        }
    }
    CHECK(failures >= 2);
    for (long n = 1; n <= 2; n++) {
        el_alloc_fail_after(n);
        el_tensor *t = el_nn_tensor_create(be, EL_F32, 10, &err);
        el_alloc_fail_reset();
        CHECK(t == NULL && err.code == EL_ENOMEM);
    }
    el_view x = upload(NULL, 64);
    el_alloc_fail_after(1);
    CHECK(el_nn_rope(be, x, 1, 4, 2, 8, 10000.0f, 0, &err) == EL_ENOMEM);
    el_alloc_fail_reset();
    drop(x);
}

int main(void)
{
    el_backend_options opts = {.kind = EL_BACKEND_CPU, .threads = 2};
    int rc = el_nn_backend_create(&opts, &be, &err);
    CHECK_OK(rc, &err);
    if (rc)
        return el_test_done("test_ops_cpu");
    printf("backend: %s\n", el_nn_backend_name(be));
    test_backend();
    test_matmul();
    test_elementwise();
    test_reduce();
    test_embedding();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_swiglu();
    test_cross_entropy();
    test_adamw();
    test_threads_deterministic();
    el_nn_backend_destroy(be);
    return el_test_done("test_ops_cpu");
}
