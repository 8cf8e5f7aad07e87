/* The core elementwise and reduction ops of the vulkan backend (fill, copy,
 * axpby, add, reduce sum/max/sumsq) against plain C, on sizes 1, 3, 17, 129,
 * 1000 and 100003, at unaligned view offsets, in three configurations:
 * default; EDGELOOP_VK_DISABLE_SUBGROUP=1 (shared-memory reduction);
 * EDGELOOP_VK_MAX_BINDING=4096 with EDGELOOP_VK_FORCE_STAGING=1 (every view
 * split into several bound ranges, transfers through staging buffers).
 *
 * Bounds: fill, copy, add and axpby are exact up to one rounding per
 * element (relative 1e-6); max is exact; sum and sumsq are compared with a
 * double-precision reference within n * FLT_EPSILON * sum|x_i| (+1e-6),
 * the worst-case bound of any fp32 summation order. */
#include <float.h>

#include "vk_common.h"

static const size_t sizes[] = {1, 3, 17, 129, 1000, 100003};

static void elementwise(el_backend *be, size_t n)
{
    el_error err = {0};
    size_t off = 5;
    float *x = malloc(n * 4), *y = malloc(n * 4), *r = malloc(n * 4);
    int32_t *iv = malloc(n * 4);
    vkt_fill_rand(x, n);
    vkt_fill_rand(y, n);
    el_tensor *tx = el_nn_tensor_create(be, EL_F32, n + off, &err);
    el_tensor *ty = el_nn_tensor_create(be, EL_F32, n + 1, &err);
    el_tensor *tz = el_nn_tensor_create(be, EL_F32, n + 2, &err);
    el_tensor *ti = el_nn_tensor_create(be, EL_I32, n, &err);
    CHECK(tx && ty && tz && ti);
    el_view vx = el_nn_view(tx, off, n), vy = el_nn_view(ty, 1, n), vz = el_nn_view(tz, 2, n);

    /* new tensors are zero */
    CHECK_OK(el_nn_read(be, vz, r, &err), &err);
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += r[i] != 0.0f;
    CHECK_MSG(bad == 0, "n=%zu: %d nonzero elements in a new tensor", n, bad);

    CHECK_OK(el_nn_fill(be, vz, -2.5f, &err), &err);
    CHECK_OK(el_nn_read(be, vz, r, &err), &err);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += r[i] != -2.5f;
    CHECK_MSG(bad == 0, "fill n=%zu: %d wrong", n, bad);

    CHECK_OK(el_nn_fill(be, el_nn_whole(ti), 7.0f, &err), &err);
    CHECK_OK(el_nn_read(be, el_nn_whole(ti), iv, &err), &err);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += iv[i] != 7;
    CHECK_MSG(bad == 0, "fill i32 n=%zu: %d wrong", n, bad);

    CHECK_OK(el_nn_write(be, vx, x, &err), &err);
    CHECK_OK(el_nn_copy(be, vz, vx, &err), &err);
    CHECK_OK(el_nn_read(be, vz, r, &err), &err);
    CHECK_MSG(memcmp(r, x, n * 4) == 0, "copy n=%zu differs", n);

    /* axpby with beta = 0 overwrites NaN; then with beta != 0 */
    for (size_t i = 0; i < n; i++)
        r[i] = NAN;
    CHECK_OK(el_nn_write(be, vy, r, &err), &err);
    CHECK_OK(el_nn_axpby(be, 2.0f, vx, 0.0f, vy, &err), &err);
    CHECK_OK(el_nn_read(be, vy, r, &err), &err);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += r[i] != 2.0f * x[i];
    CHECK_MSG(bad == 0, "axpby beta=0 n=%zu: %d wrong", n, bad);
    CHECK_OK(el_nn_write(be, vy, y, &err), &err);
    CHECK_OK(el_nn_axpby(be, 0.5f, vx, -1.5f, vy, &err), &err);
    CHECK_OK(el_nn_read(be, vy, r, &err), &err);
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = 0.5 * x[i] - 1.5 * y[i];
        bad += !(fabs(r[i] - ref) <= 1e-6 * fmax(1.0, fabs(ref)));
    }
    CHECK_MSG(bad == 0, "axpby n=%zu: %d wrong", n, bad);

    /* add, then in place (c aliases a) */
    CHECK_OK(el_nn_write(be, vy, y, &err), &err);
    CHECK_OK(el_nn_add(be, vx, vy, vz, &err), &err);
    CHECK_OK(el_nn_add(be, vz, vy, vz, &err), &err);
    CHECK_OK(el_nn_read(be, vz, r, &err), &err);
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        double ref = (double)(x[i] + y[i]) + y[i];
        bad += !(fabs(r[i] - ref) <= 1e-6 * fmax(1.0, fabs(ref)));
    }
    CHECK_MSG(bad == 0, "add n=%zu: %d wrong", n, bad);

    /* reductions; out[0] starts at 3 for the accumulating runs */
    el_view out = el_nn_view(tz, 0, 1);
    double sum = 0, sumsq = 0, abs_sum = 0;
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        sum += x[i];
        sumsq += (double)x[i] * x[i];
        abs_sum += fabs(x[i]);
        mx = fmaxf(mx, x[i]);
    }
    double tol_sum = n * FLT_EPSILON * abs_sum + 1e-6;
    double tol_sq = n * FLT_EPSILON * sumsq + 1e-6;
    struct { el_reduce_op op; int acc; double ref, tol; } cases[] = {
        {EL_REDUCE_SUM, 0, sum, tol_sum},
        {EL_REDUCE_SUM, 1, sum + 3.0, tol_sum},
        {EL_REDUCE_SUMSQ, 0, sumsq, tol_sq},
        {EL_REDUCE_SUMSQ, 1, sumsq + 3.0, tol_sq},
        {EL_REDUCE_MAX, 0, mx, 0},
        {EL_REDUCE_MAX, 1, fmax(mx, 3.0), 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK_OK(el_nn_fill(be, out, 3.0f, &err), &err);
        CHECK_OK(el_nn_reduce(be, cases[c].op, vx, out, cases[c].acc, &err), &err);
        float v = 0;
        CHECK_OK(el_nn_read(be, out, &v, &err), &err);
        CHECK_MSG(fabs(v - cases[c].ref) <= cases[c].tol, "reduce op %d acc %d n=%zu: %.9g vs "
                  "%.9g", (int)cases[c].op, cases[c].acc, n, v, cases[c].ref);
    }
    el_nn_tensor_destroy(be, tx);
    el_nn_tensor_destroy(be, ty);
    el_nn_tensor_destroy(be, tz);
    el_nn_tensor_destroy(be, ti);
    free(x);
    free(y);
    free(r);
    free(iv);
}

static void run_all(const char *what)
{
    el_backend *be = vkt_create(0);
    printf("%s: %s\n", what, el_nn_backend_name(be));
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        elementwise(be, sizes[s]);
    vkt_destroy(be);
}

int main(void)
{
    run_all("default");

    setenv("EDGELOOP_VK_DISABLE_SUBGROUP", "1", 1);
    {
        el_backend *be = vkt_create(0);
        CHECK(el_vk_backend_caps(be)->subgroup_arith == 0);
        vkt_destroy(be);
    }
    run_all("no subgroup");
    unsetenv("EDGELOOP_VK_DISABLE_SUBGROUP");

    setenv("EDGELOOP_VK_MAX_BINDING", "4096", 1);
    setenv("EDGELOOP_VK_FORCE_STAGING", "1", 1);
    {
        el_backend *be = vkt_create(0);
        el_vk_stats st;
        el_vk_backend_stats(be, &st);
        CHECK(st.staging == 1);
        CHECK(el_vk_backend_caps(be)->max_view_elems <= 1024);
        vkt_destroy(be);
    }
    run_all("split bindings + staging");
    unsetenv("EDGELOOP_VK_MAX_BINDING");
    unsetenv("EDGELOOP_VK_FORCE_STAGING");

    vkt_cleanup();
    return el_test_done("test_vk_core");
}
