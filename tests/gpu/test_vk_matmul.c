/* The vulkan matmul (both variants, all three layouts) against a plain C
 * reference in double, on odd shapes, large K, views at unaligned offsets,
 * beta = 0 over NaN, and with operands bound in several ranges.
 *
 * Error bound per element: |c - ref| <= 2 * K * FLT_EPSILON * S + 1e-6,
 * where S = |alpha| * sum_k |a_ik b_kj| + |beta c0_ij| (the standard
 * worst-case bound of fp32 dot products), so the test cannot pass a wrong
 * kernel (an error of one term is far larger) and cannot fail a right one. */
#include <float.h>

#include "vk_common.h"

typedef struct shape { int M, N, K; } shape;

static double a_at(el_matmul_layout l, const float *A, int M, int K, int i, int k)
{
    return l == EL_MM_TN ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
}

static double b_at(el_matmul_layout l, const float *B, int N, int K, int k, int j)
{
    return l == EL_MM_NT ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
}

/* Runs one matmul on BE and checks it. Views start at odd offsets inside
 * larger tensors. */
static void run_at(el_backend *be, el_matmul_layout l, shape s, float alpha, float beta,
                   const char *what, size_t oa, size_t ob, size_t oc)
{
    int M = s.M, N = s.N, K = s.K;
    size_t na = (size_t)M * K, nb = (size_t)N * K, nc = (size_t)M * N;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C0 = malloc(nc * 4), *C = malloc(nc * 4);
    vkt_fill_rand(A, na);
    vkt_fill_rand(B, nb);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++)
            C0[i] = NAN;   /* beta = 0 must overwrite, not multiply */
    else
        vkt_fill_rand(C0, nc);
    el_error err = {0};
    el_tensor *ta = el_nn_tensor_create(be, EL_F32, na + oa + 2, &err);
    el_tensor *tb = el_nn_tensor_create(be, EL_F32, nb + ob + 1, &err);
    el_tensor *tc = el_nn_tensor_create(be, EL_F32, nc + oc + 3, &err);
    CHECK(ta && tb && tc);
    if (!ta || !tb || !tc)
        goto out;
    el_view va = el_nn_view(ta, oa, na), vb = el_nn_view(tb, ob, nb), vc = el_nn_view(tc, oc, nc);
    CHECK_OK(el_nn_write(be, va, A, &err), &err);
    CHECK_OK(el_nn_write(be, vb, B, &err), &err);
    CHECK_OK(el_nn_write(be, vc, C0, &err), &err);
    /* Guard elements around C must survive. */
    float guard = 42.0f;
    CHECK_OK(el_nn_fill(be, el_nn_view(tc, 0, oc), guard, &err), &err);
    CHECK_OK(el_nn_fill(be, el_nn_view(tc, oc + nc, 3), guard, &err), &err);
    int rc = el_nn_matmul(be, l, M, N, K, alpha, va, vb, beta, vc, &err);
    CHECK_OK(rc, &err);
    CHECK_OK(el_nn_read(be, vc, C, &err), &err);
    float g[3];
    CHECK_OK(el_nn_read(be, el_nn_view(tc, oc + nc, 3), g, &err), &err);
    CHECK(g[0] == guard && g[2] == guard);
    CHECK_OK(el_nn_read(be, el_nn_view(tc, oc - 1, 1), g, &err), &err);
    CHECK(g[0] == guard);
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < M && rc == 0; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0, abs_sum = 0;
            for (int k = 0; k < K; k++) {
                double p = a_at(l, A, M, K, i, k) * b_at(l, B, N, K, k, j);
                sum += p;
                abs_sum += fabs(p);
            }
            double c0 = beta == 0.0f ? 0.0 : C0[(size_t)i * N + j];
            double ref = alpha * sum + beta * c0;
            double bound = 2.0 * K * FLT_EPSILON * (fabs(alpha) * abs_sum + fabs(beta * c0)) + 1e-6;
            double e = fabs(C[(size_t)i * N + j] - ref);
            if (!(e <= bound))
                bad++;
            if (e / bound > worst)
                worst = e / bound;
        }
    CHECK_MSG(bad == 0, "%s layout %d %dx%dx%d: %d elements off (worst %.3g of bound)", what,
              (int)l, M, N, K, bad, worst);
out:
    el_nn_tensor_destroy(be, ta);
    el_nn_tensor_destroy(be, tb);
    el_nn_tensor_destroy(be, tc);
    free(A);
    free(B);
    free(C0);
    free(C);
}

/* Views at unaligned offsets (the scalar paths) and at offsets that are
 * multiples of 4 (the vec4 paths of the register-blocked variant when the
 * contiguous dimensions are multiples of 4 too). */
static void run(el_backend *be, el_matmul_layout l, shape s, float alpha, float beta,
                const char *what)
{
    run_at(be, l, s, alpha, beta, what, 3, 5, 7);
    run_at(be, l, s, alpha, beta, what, 4, 8, 1);
}

/* Besides odd sizes, the shapes reach each block shape the register-blocked
 * variant picks (vulkan.c, regblock_shape_of): lanes on rows for narrow
 * outputs with 4, 8 and 16 columns per invocation ({1000, 3, 17},
 * {68, 8, 12}, {260, 16, 36}; {129, 17, 3} over two invocations in y),
 * 4 x 8 ({33, 65, 1000}) and 8 x 8 blocks ({64, 64, 64}). Where all three
 * dimensions are multiples of 4, the runs at aligned offsets take the vec4
 * paths of every layout. */
static const shape shapes[] = {
    {1, 1, 1}, {3, 17, 5}, {17, 3, 129}, {129, 17, 3}, {1000, 3, 17}, {5, 1000, 17},
    {33, 65, 1000}, {64, 64, 64}, {3, 5, 20011}, {9, 12, 20}, {13, 20, 8}, {4, 132, 7},
    {68, 8, 12}, {260, 16, 36},
};

/* 16 x 16 blocks (K >= 64 and at least 2^24 multiply-adds): the vec4 path
 * of each layout, and the scalar path (one code for all layouts) in TN.
 * Once, with beta != 0: each of these pipelines takes seconds to compile on
 * lavapipe. */
static const shape big_shape = {132, 136, 940};

static void all_shapes(const char *variant)
{
    setenv("EDGELOOP_VK_MATMUL", variant, 1);
    el_backend *be = vkt_create(0);
    el_vk_stats st;
    el_vk_backend_stats(be, &st);
    CHECK_STR(st.matmul, variant);
    for (int l = 0; l < 3; l++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            run(be, (el_matmul_layout)l, shapes[s], 0.5f, 0.25f, variant);
            run(be, (el_matmul_layout)l, shapes[s], 1.0f, 0.0f, variant);
        }
        run_at(be, (el_matmul_layout)l, big_shape, 0.5f, 0.25f, variant, 4, 8, 1);
        if (l == EL_MM_TN)
            run_at(be, (el_matmul_layout)l, big_shape, 0.5f, 0.25f, variant, 3, 5, 7);
    }
    vkt_destroy(be);
}

/* The register-blocked variant's vec4 paths read A and B as texel buffers
 * where the device has them (lavapipe does): counted in texel_dispatches.
 * With EDGELOOP_VK_DISABLE_TEXEL they read storage buffers, and with a small
 * EDGELOOP_VK_MAX_TEXELS an operand too large for a texel view does too,
 * while a small one in the same process still goes through the texture
 * path; the results are checked either way. */
static const shape vec4_shapes[] = {{9, 12, 20}, {64, 64, 64}, {68, 8, 12}, {260, 16, 36}};

static uint32_t texel_dispatches(el_backend *be)
{
    el_vk_stats st;
    el_vk_backend_stats(be, &st);
    return st.texel_dispatches;
}

static void texel_paths(void)
{
    setenv("EDGELOOP_VK_MATMUL", "regblock", 1);
    el_backend *be = vkt_create(0);
    CHECK(el_vk_backend_caps(be)->max_texel_elems >= 1024);
    run_at(be, EL_MM_NN, vec4_shapes[1], 1.0f, 0.0f, "texel", 4, 8, 1);
    CHECK(texel_dispatches(be) == 1);
    run_at(be, EL_MM_NN, vec4_shapes[1], 1.0f, 0.0f, "texel", 3, 5, 7);   /* scalar path */
    CHECK(texel_dispatches(be) == 1);
    vkt_destroy(be);

    setenv("EDGELOOP_VK_DISABLE_TEXEL", "1", 1);
    be = vkt_create(0);
    CHECK(el_vk_backend_caps(be)->max_texel_elems == 0);
    for (int l = 0; l < 3; l++) {
        for (size_t s = 0; s < sizeof vec4_shapes / sizeof vec4_shapes[0]; s++)
            run_at(be, (el_matmul_layout)l, vec4_shapes[s], 0.5f, 0.25f, "no-texel", 4, 8, 1);
        run_at(be, (el_matmul_layout)l, big_shape, 0.5f, 0.25f, "no-texel", 4, 8, 1);
    }
    CHECK(texel_dispatches(be) == 0);
    vkt_destroy(be);
    unsetenv("EDGELOOP_VK_DISABLE_TEXEL");

    setenv("EDGELOOP_VK_MAX_TEXELS", "256", 1);   /* 1024 floats, less the alignment */
    be = vkt_create(0);
    size_t maxt = el_vk_backend_caps(be)->max_texel_elems;
    CHECK(maxt > 0 && maxt <= 1024);
    run_at(be, EL_MM_NT, vec4_shapes[1], 1.0f, 0.5f, "max-texels", 4, 8, 1);   /* 4096 */
    CHECK(texel_dispatches(be) == 0);
    run_at(be, EL_MM_NT, vec4_shapes[0], 1.0f, 0.5f, "max-texels", 4, 8, 1);   /* 180, 240 */
    CHECK(texel_dispatches(be) == 1);
    vkt_destroy(be);
    unsetenv("EDGELOOP_VK_MAX_TEXELS");
}

/* Operands larger than one binding: NT and NN split M; TN refuses an A or C
 * that does not fit with EL_EUNAVAIL rather than computing garbage. */
static void split_bindings(void)
{
    setenv("EDGELOOP_VK_MAX_BINDING", "4096", 1);
    setenv("EDGELOOP_VK_MATMUL", "regblock", 1);
    el_backend *be = vkt_create(0);
    const el_vk_caps *caps = el_vk_backend_caps(be);
    CHECK(caps->max_view_elems < 1024);
    shape s = {300, 7, 9};   /* A and C need several bindings, B fits */
    run(be, EL_MM_NT, s, 1.0f, 0.5f, "split");
    run(be, EL_MM_NN, s, 1.0f, 0.0f, "split");
    /* vec4 operands: every chunk of A is a texel view of its own */
    shape s4 = {300, 8, 12};
    uint32_t before = texel_dispatches(be);
    run(be, EL_MM_NT, s4, 1.0f, 0.5f, "split-texel");
    run(be, EL_MM_NN, s4, 1.0f, 0.0f, "split-texel");
    CHECK(texel_dispatches(be) - before >= 4);
    el_error err = {0};
    el_tensor *a = el_nn_tensor_create(be, EL_F32, 300 * 9, &err);
    el_tensor *b = el_nn_tensor_create(be, EL_F32, 9 * 7, &err);
    el_tensor *c = el_nn_tensor_create(be, EL_F32, 300 * 7, &err);
    int rc = el_nn_matmul(be, EL_MM_TN, 300, 7, 9, 1.0f, el_nn_whole(a), el_nn_whole(b), 0.0f,
                          el_nn_whole(c), &err);
    CHECK_MSG(rc == EL_EUNAVAIL, "rc=%d %s", rc, err.msg);
    el_nn_tensor_destroy(be, a);
    el_nn_tensor_destroy(be, b);
    el_nn_tensor_destroy(be, c);
    vkt_destroy(be);
    unsetenv("EDGELOOP_VK_MAX_BINDING");
}

int main(void)
{
    all_shapes("regblock");
    all_shapes("tiled");
    texel_paths();
    split_bindings();
    vkt_cleanup();
    return el_test_done("test_vk_matmul");
}
