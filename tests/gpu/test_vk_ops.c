/* The model ops of the vulkan backend (agent/nn/vulkan_ops.c and the shaders
 * it dispatches), held three ways:
 *  - to a plain C reference in double written here (so a bug shared by both
 *    backends still fails),
 *  - to the cpu backend on the same inputs,
 *  - for every backward op, to central finite differences of a scalar loss
 *    L = sum(out * wts) whose forward runs on the vulkan backend itself.
 * Shapes are small and odd (T=3, D=17; B=2, S=5, H=4, KVH=2, hd=8; V=259),
 * plus the largest attention the model needs (S=256, hd=64). Every view sits
 * at a nonzero offset inside a larger tensor, and outputs start as NaN so an
 * element a shader forgets to write shows. A second vulkan backend with a
 * tiny EDGELOOP_VK_MAX_BINDING forces the chunked paths. The largest shapes
 * (S=256 attention with a group of 4, a 128256 vocabulary) guard against
 * lavapipe's loop limiter (shaders/ops_common.glsl note 4). The validation
 * layer (EDGELOOP_VK_VALIDATION=1 from meson) must report nothing.
 *
 * Error measure: max |got - want| / max(1, max |want|) over the output.
 * Bounds: TOL_REF (fp32 shader against the double reference), TOL_CPU
 * (against the cpu backend), TOL_FD (against finite differences in fp32
 * forwards with step FD_H; measured below 1e-4 on lavapipe).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "base/alloc.h"
#include "nn/backend.h"
#include "nn/vulkan_impl.h"

#define TOL_REF 1e-4
#define TOL_CPU 1e-4
#define TOL_FD 1e-3
#define FD_H 1e-2f
#define PAD 5           /* elements before and after every view */
#define MAX_TENSORS 16

/* A private pipeline cache directory, so the test never touches the user's. */
static char cache_dir[64] = "/tmp/el-vkops-XXXXXX";

static void cache_cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cache_dir);
}

/* ---- helpers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void)   /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) * 2.0 - 1.0;
}

static float *rand_vec(size_t n, double scale)
{
    float *v = el_malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(urand() * scale);
    return v;
}

static double *dvec(size_t n)
{
    return el_calloc(n, sizeof(double));
}

static float *fvec(size_t n)
{
    return el_calloc(n, sizeof(float));
}

/* max |got - want| / max(1, max |want|); infinity if got holds a NaN. */
static double err_d(const float *got, const double *want, size_t n)
{
    double diff = 0, scale = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        diff = fmax(diff, fabs((double)got[i] - want[i]));
        scale = fmax(scale, fabs(want[i]));
    }
    return diff / scale;
}

static double err_f(const float *got, const float *want, size_t n)
{
    double *w = dvec(n);
    for (size_t i = 0; i < n; i++)
        w[i] = want[i];
    double e = err_d(got, w, n);
    el_free(w);
    return e;
}

/* Checks and logs an error measure (the log keeps the measured margins). */
#define CHECK_ERR(what, e, tol) \
    do { \
        double e_ = (e); \
        printf("  %-44s %.2e (bound %.0e)\n", (what), e_, (double)(tol)); \
        CHECK_MSG(e_ <= (tol), "%s: error %.3g > %.3g", (what), e_, (double)(tol)); \
    } while (0)

/* Tensors of one op run on one backend. Views sit PAD elements into their
 * tensor; the first failure is kept in rc/err and later calls do nothing. */
typedef struct run {
    el_backend *be;
    el_tensor *t[MAX_TENSORS];
    int n;
    int rc;
    el_error err;
} run;

static void run_init(run *r, el_backend *be)
{
    memset(r, 0, sizeof *r);
    r->be = be;
}

/* A view of N elements holding DATA, or NaN (f32) / -7 (i32) when DATA is
 * NULL, so unwritten outputs are caught. */
static el_view put(run *r, el_dtype dt, size_t n, const void *data)
{
    el_view none = {NULL, 0, 0};
    if (r->rc || r->n == MAX_TENSORS)
        return none;
    el_tensor *t = el_nn_tensor_create(r->be, dt, n + 2 * PAD, &r->err);
    if (!t) {
        r->rc = r->err.code ? r->err.code : EL_EINTERNAL;
        return none;
    }
    r->t[r->n++] = t;
    uint32_t *fill = el_malloc((n + 2 * PAD) * 4);
    for (size_t i = 0; i < n + 2 * PAD; i++) {
        float nan = NAN;
        int32_t bad = -7;
        if (dt == EL_F32)
            memcpy(&fill[i], &nan, 4);
        else
            memcpy(&fill[i], &bad, 4);
    }
    if (data)
        memcpy(fill + PAD, data, n * 4);
    r->rc = el_nn_write(r->be, el_nn_whole(t), fill, &r->err);
    el_free(fill);
    return el_nn_view(t, PAD, n);
}

static void get(run *r, el_view v, void *dst)
{
    if (!r->rc)
        r->rc = el_nn_read(r->be, v, dst, &r->err);
}

static void op(run *r, int rc)
{
    if (!r->rc)
        r->rc = rc;
}

/* Destroys the tensors; records a failed run as a failed check. */
static void run_done(run *r, const char *what)
{
    CHECK_MSG(r->rc == 0, "%s on %s: rc=%d: %s", what,
              el_nn_backend_name(r->be), r->rc, r->err.msg);
    for (int i = 0; i < r->n; i++)
        el_nn_tensor_destroy(r->be, r->t[i]);
    r->n = 0;
}

/* Finite differences: for each element i of the N-element input view IN
 * (host copy HOST, kept in sync), (L(x+h) - L(x-h)) / 2h with L from
 * LOSS(ctx), into FD. */
typedef double (*loss_fn)(void *ctx);

static void finite_diff(run *r, el_view in, float *host, size_t n,
                        loss_fn loss, void *ctx, double *fd)
{
    for (size_t i = 0; i < n && !r->rc; i++) {
        float orig = host[i];
        el_view one = el_nn_view(in.t, in.off + i, 1);
        float plus = orig + FD_H, minus = orig - FD_H;
        op(r, el_nn_write(r->be, one, &plus, &r->err));
        double lp = loss(ctx);
        op(r, el_nn_write(r->be, one, &minus, &r->err));
        double lm = loss(ctx);
        op(r, el_nn_write(r->be, one, &orig, &r->err));
        fd[i] = (lp - lm) / (2.0 * (double)FD_H);
    }
}

static double dot_wts(const float *out, const float *wts, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)out[i] * wts[i];
    return s;
}

/* ---- references (double) ---- */

static void ref_rmsnorm_fwd(const float *x, const float *w, int T, int D,
                            float eps, double *y, double *rstd)
{
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int d = 0; d < D; d++)
            ss += (double)x[t * D + d] * x[t * D + d];
        double r = 1.0 / sqrt(ss / D + eps);
        rstd[t] = r;
        for (int d = 0; d < D; d++)
            y[t * D + d] = x[t * D + d] * r * w[d];
    }
}

static void ref_rmsnorm_bwd(const float *x, const float *w, const float *dy,
                            int T, int D, float eps, float beta,
                            const float *dx0, double *dx)
{
    for (int t = 0; t < T; t++) {
        double ss = 0, dot = 0;
        for (int d = 0; d < D; d++) {
            ss += (double)x[t * D + d] * x[t * D + d];
            dot += (double)dy[t * D + d] * w[d] * x[t * D + d];
        }
        double r = 1.0 / sqrt(ss / D + eps);
        for (int d = 0; d < D; d++) {
            double g = r * w[d] * dy[t * D + d] - x[t * D + d] * r * r * r * dot / D;
            dx[t * D + d] = g + (beta != 0.0f ? beta * dx0[t * D + d] : 0.0);
        }
    }
}

static void ref_rope(const float *x, int B, int S, int H, int hd, float theta,
                     int inverse, double *out)
{
    int half = hd / 2;
    for (int row = 0; row < B * S; row++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                double ang = (row % S) * pow(theta, -2.0 * i / hd);
                double s = sin(ang) * (inverse ? -1 : 1), c = cos(ang);
                size_t base = ((size_t)row * H + h) * hd + i;
                double a = x[base], b = x[base + half];
                out[base] = a * c - b * s;
                out[base + half] = b * c + a * s;
            }
}

static size_t hrow(int b, int i, int S, int heads, int h, int hd)
{
    return (((size_t)b * S + i) * heads + h) * hd;
}

static void ref_attention_fwd(const float *q, const float *k, const float *v,
                              int B, int S, int H, int KVH, int hd, float scale,
                              double *o, double *p)
{
    int group = H / KVH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                double *pr = p + (((size_t)b * H + h) * S + i) * S;
                const float *qi = q + hrow(b, i, S, H, h, hd);
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < S; j++) {
                    pr[j] = 0;
                    if (j > i)
                        continue;
                    const float *kj = k + hrow(b, j, S, KVH, h / group, hd);
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += (double)qi[d] * kj[d];
                    pr[j] = s * scale;
                    m = fmax(m, pr[j]);
                }
                for (int j = 0; j <= i; j++)
                    sum += (pr[j] = exp(pr[j] - m));
                for (int j = 0; j <= i; j++)
                    pr[j] /= sum;
                double *oi = o + hrow(b, i, S, H, h, hd);
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++)
                        acc += pr[j] * v[hrow(b, j, S, KVH, h / group, hd) + d];
                    oi[d] = acc;
                }
            }
}

static void ref_attention_bwd(const float *q, const float *k, const float *v,
                              const double *p, const float *dout, int B, int S,
                              int H, int KVH, int hd, float scale, double *dq,
                              double *dk, double *dv)
{
    int group = H / KVH;
    size_t nq = (size_t)B * S * H * hd, nkv = (size_t)B * S * KVH * hd;
    memset(dq, 0, nq * sizeof *dq);
    memset(dk, 0, nkv * sizeof *dk);
    memset(dv, 0, nkv * sizeof *dv);
    double *dp = dvec((size_t)S);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                const double *pr = p + (((size_t)b * H + h) * S + i) * S;
                const float *di = dout + hrow(b, i, S, H, h, hd);
                double D = 0;
                for (int j = 0; j <= i; j++) {
                    const float *vj = v + hrow(b, j, S, KVH, h / group, hd);
                    dp[j] = 0;
                    for (int d = 0; d < hd; d++)
                        dp[j] += (double)di[d] * vj[d];
                    D += pr[j] * dp[j];
                }
                for (int j = 0; j <= i; j++) {
                    double ds = pr[j] * (dp[j] - D) * scale;
                    size_t kv = hrow(b, j, S, KVH, h / group, hd);
                    size_t qi = hrow(b, i, S, H, h, hd);
                    for (int d = 0; d < hd; d++) {
                        dq[qi + d] += ds * k[kv + d];
                        dk[kv + d] += ds * q[qi + d];
                        dv[kv + d] += pr[j] * di[d];
                    }
                }
            }
    el_free(dp);
}

static double sigm(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static void ref_cross_entropy(const float *lg, const int32_t *tg, int T, int V,
                              float gs, double *loss, double *dl)
{
    for (int t = 0; t < T; t++) {
        const float *r = lg + (size_t)t * V;
        double m = r[0], sum = 0;
        for (int c = 1; c < V; c++)
            m = fmax(m, r[c]);
        for (int c = 0; c < V; c++)
            sum += exp(r[c] - m);
        int scored = tg[t] >= 0 && tg[t] < V;
        loss[t] = scored ? m + log(sum) - r[tg[t]] : 0.0;
        for (int c = 0; c < V; c++)
            dl[(size_t)t * V + c] =
                scored ? gs * (exp(r[c] - m) / sum - (c == tg[t])) : 0.0;
    }
}

static void ref_adamw(double *p, const float *g, double *m, double *v, size_t n,
                      const float *hp, double gnorm_sq)
{
    double clip = 1;
    if (hp[7] > 0)
        clip = fmin(1.0, hp[7] / (sqrt(gnorm_sq) + 1e-6));
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * clip;
        m[i] = hp[1] * m[i] + (1 - (double)hp[1]) * gi;
        v[i] = hp[2] * v[i] + (1 - (double)hp[2]) * gi * gi;
        double mhat = m[i] / hp[5], vhat = v[i] / hp[6];
        p[i] -= hp[0] * (mhat / (sqrt(vhat) + hp[3]) + hp[4] * p[i]);
    }
}

/* ---- op tests; each runs on VK, compares with the reference and CPU ---- */

static void test_embedding(el_backend *vk, el_backend *cpu, int T, int V, int D)
{
    int32_t *ids = el_malloc((size_t)T * sizeof *ids);
    for (int t = 0; t < T; t++)
        ids[t] = (int32_t)((urand() + 1) * 0.5 * V) % V;
    ids[0] = V - 1;   /* the last row of the table, which a chunk may end at */
    float *table = rand_vec((size_t)V * D, 1.0);
    float *out[2] = {fvec((size_t)T * D), fvec((size_t)T * D)};
    el_backend *bes[2] = {vk, cpu};
    for (int k = 0; k < 2; k++) {
        run r;
        run_init(&r, bes[k]);
        el_view vi = put(&r, EL_I32, (size_t)T, ids);
        el_view vt = put(&r, EL_F32, (size_t)V * D, table);
        el_view vo = put(&r, EL_F32, (size_t)T * D, NULL);
        op(&r, el_nn_embedding(r.be, vi, vt, T, V, D, vo, &r.err));
        get(&r, vo, out[k]);
        run_done(&r, "embedding");
    }
    int exact = 1;
    for (int t = 0; t < T; t++)
        exact &= !memcmp(out[0] + (size_t)t * D, table + (size_t)ids[t] * D,
                         (size_t)D * sizeof(float));
    CHECK_MSG(exact, "embedding T=%d V=%d D=%d: rows differ from the table", T, V, D);
    CHECK_ERR("embedding vs cpu", err_f(out[0], out[1], (size_t)T * D), 0.0);
    el_free(ids);
    el_free(table);
    el_free(out[0]);
    el_free(out[1]);
}

struct rms_ctx {
    run *r;
    el_view x, w, y, rstd;
    int T, D;
    float eps;
    const float *wts;
    float *yh;
};

static double rms_loss(void *p)
{
    struct rms_ctx *c = p;
    op(c->r, el_nn_rmsnorm_fwd(c->r->be, c->x, c->w, c->T, c->D, c->eps, c->y,
                               c->rstd, &c->r->err));
    get(c->r, c->y, c->yh);
    return dot_wts(c->yh, c->wts, (size_t)c->T * c->D);
}

static void test_rmsnorm(el_backend *vk, el_backend *cpu, int T, int D, int fd)
{
    size_t n = (size_t)T * D;
    float eps = 1e-5f, beta = 0.5f;
    float *x = rand_vec(n, 2.0), *w = rand_vec((size_t)D, 1.0);
    float *dy = rand_vec(n, 1.0), *dx0 = rand_vec(n, 1.0);
    double *ry = dvec(n), *rr = dvec((size_t)T), *rdx = dvec(n), *rdxb = dvec(n);
    ref_rmsnorm_fwd(x, w, T, D, eps, ry, rr);
    ref_rmsnorm_bwd(x, w, dy, T, D, eps, 0.0f, NULL, rdx);
    ref_rmsnorm_bwd(x, w, dy, T, D, eps, beta, dx0, rdxb);
    float *y[2], *rstd[2], *dx[2], *dxb[2];
    el_backend *bes[2] = {vk, cpu};
    for (int k = 0; k < 2; k++) {
        y[k] = fvec(n), rstd[k] = fvec((size_t)T), dx[k] = fvec(n), dxb[k] = fvec(n);
        run r;
        run_init(&r, bes[k]);
        el_view vx = put(&r, EL_F32, n, x), vw = put(&r, EL_F32, (size_t)D, w);
        el_view vy = put(&r, EL_F32, n, NULL), vr = put(&r, EL_F32, (size_t)T, NULL);
        el_view vdy = put(&r, EL_F32, n, dy);
        el_view vdx = put(&r, EL_F32, n, NULL);   /* NaN: beta 0 must not read it */
        el_view vdxb = put(&r, EL_F32, n, dx0);
        op(&r, el_nn_rmsnorm_fwd(r.be, vx, vw, T, D, eps, vy, vr, &r.err));
        op(&r, el_nn_rmsnorm_bwd(r.be, vx, vw, vr, vdy, T, D, 0.0f, vdx, &r.err));
        op(&r, el_nn_rmsnorm_bwd(r.be, vx, vw, vr, vdy, T, D, beta, vdxb, &r.err));
        get(&r, vy, y[k]);
        get(&r, vr, rstd[k]);
        get(&r, vdx, dx[k]);
        get(&r, vdxb, dxb[k]);
        run_done(&r, "rmsnorm");
    }
    CHECK_ERR("rmsnorm_fwd y vs ref", err_d(y[0], ry, n), TOL_REF);
    CHECK_ERR("rmsnorm_fwd rstd vs ref", err_d(rstd[0], rr, (size_t)T), TOL_REF);
    CHECK_ERR("rmsnorm_bwd vs ref", err_d(dx[0], rdx, n), TOL_REF);
    CHECK_ERR("rmsnorm_bwd beta vs ref", err_d(dxb[0], rdxb, n), TOL_REF);
    CHECK_ERR("rmsnorm_fwd vs cpu", err_f(y[0], y[1], n), TOL_CPU);
    CHECK_ERR("rmsnorm_fwd rstd vs cpu", err_f(rstd[0], rstd[1], (size_t)T), TOL_CPU);
    CHECK_ERR("rmsnorm_bwd vs cpu", err_f(dx[0], dx[1], n), TOL_CPU);
    CHECK_ERR("rmsnorm_bwd beta vs cpu", err_f(dxb[0], dxb[1], n), TOL_CPU);

    if (fd) {
        /* dL/dx for L = sum(y * dy) is rmsnorm_bwd(dy) = dx[0]. */
        run r;
        run_init(&r, vk);
        float *yh = fvec(n);
        double *g = dvec(n);
        struct rms_ctx c = {&r, put(&r, EL_F32, n, x), put(&r, EL_F32, (size_t)D, w),
                            put(&r, EL_F32, n, NULL), put(&r, EL_F32, (size_t)T, NULL),
                            T, D, eps, dy, yh};
        finite_diff(&r, c.x, x, n, rms_loss, &c, g);
        run_done(&r, "rmsnorm finite differences");
        CHECK_ERR("rmsnorm_bwd vs finite differences", err_d(dx[0], g, n), TOL_FD);
        el_free(yh);
        el_free(g);
    }
    for (int k = 0; k < 2; k++) {
        el_free(y[k]);
        el_free(rstd[k]);
        el_free(dx[k]);
        el_free(dxb[k]);
    }
    el_free(x), el_free(w), el_free(dy), el_free(dx0);
    el_free(ry), el_free(rr), el_free(rdx), el_free(rdxb);
}

struct rope_ctx {
    run *r;
    el_view x;
    float *xh;       /* host copy of x, restored after each forward */
    int B, S, H, hd;
    const float *wts;
    float *out;
};

static double rope_loss(void *p)
{
    struct rope_ctx *c = p;
    size_t n = (size_t)c->B * c->S * c->H * c->hd;
    /* rope is in place: rotate, read, rotate back exactly from the host copy */
    op(c->r, el_nn_read(c->r->be, c->x, c->out, &c->r->err));
    float *saved = el_malloc(n * sizeof *saved);
    memcpy(saved, c->out, n * sizeof *saved);
    op(c->r, el_nn_rope(c->r->be, c->x, c->B, c->S, c->H, c->hd, 10000.0f, 0,
                        &c->r->err));
    get(c->r, c->x, c->out);
    op(c->r, el_nn_write(c->r->be, c->x, saved, &c->r->err));
    el_free(saved);
    return dot_wts(c->out, c->wts, n);
}

static void test_rope(el_backend *vk, el_backend *cpu, int B, int S, int H,
                      int hd, float theta, int fd)
{
    size_t n = (size_t)B * S * H * hd;
    float *x = rand_vec(n, 1.0);
    double *rf = dvec(n), *ri = dvec(n);
    ref_rope(x, B, S, H, hd, theta, 0, rf);
    ref_rope(x, B, S, H, hd, theta, 1, ri);
    float *fwd[2], *inv[2], *back = fvec(n);
    el_backend *bes[2] = {vk, cpu};
    for (int k = 0; k < 2; k++) {
        fwd[k] = fvec(n), inv[k] = fvec(n);
        run r;
        run_init(&r, bes[k]);
        el_view a = put(&r, EL_F32, n, x), b = put(&r, EL_F32, n, x);
        op(&r, el_nn_rope(r.be, a, B, S, H, hd, theta, 0, &r.err));
        op(&r, el_nn_rope(r.be, b, B, S, H, hd, theta, 1, &r.err));
        get(&r, a, fwd[k]);
        get(&r, b, inv[k]);
        if (k == 0) {   /* inverse undoes forward */
            op(&r, el_nn_rope(r.be, a, B, S, H, hd, theta, 1, &r.err));
            get(&r, a, back);
        }
        run_done(&r, "rope");
    }
    char what[96];
    snprintf(what, sizeof what, "rope B=%d S=%d H=%d hd=%d vs ref", B, S, H, hd);
    CHECK_ERR(what, err_d(fwd[0], rf, n), TOL_REF);
    CHECK_ERR("rope inverse vs ref", err_d(inv[0], ri, n), TOL_REF);
    CHECK_ERR("rope vs cpu", err_f(fwd[0], fwd[1], n), TOL_CPU);
    CHECK_ERR("rope inverse vs cpu", err_f(inv[0], inv[1], n), TOL_CPU);
    CHECK_ERR("rope inverse(rope(x)) vs x", err_f(back, x, n), 1e-5);

    if (fd) {
        /* The backward of rope is rope inverse: dL/dx = rope^-1(wts). */
        float *wts = rand_vec(n, 1.0), *grad = fvec(n), *out = fvec(n);
        double *g = dvec(n);
        run r;
        run_init(&r, vk);
        el_view vw = put(&r, EL_F32, n, wts);
        op(&r, el_nn_rope(r.be, vw, B, S, H, hd, 10000.0f, 1, &r.err));
        get(&r, vw, grad);
        struct rope_ctx c = {&r, put(&r, EL_F32, n, x), x, B, S, H, hd, wts, out};
        finite_diff(&r, c.x, x, n, rope_loss, &c, g);
        run_done(&r, "rope finite differences");
        CHECK_ERR("rope inverse vs finite differences", err_d(grad, g, n), TOL_FD);
        el_free(wts), el_free(grad), el_free(out), el_free(g);
    }
    for (int k = 0; k < 2; k++)
        el_free(fwd[k]), el_free(inv[k]);
    el_free(back), el_free(x), el_free(rf), el_free(ri);
}

struct attn_ctx {
    run *r;
    el_view q, k, v, o, p;
    int B, S, H, KVH, hd;
    float scale;
    const float *wts;
    float *oh;
};

static double attn_loss(void *ptr)
{
    struct attn_ctx *c = ptr;
    op(c->r, el_nn_attention_fwd(c->r->be, c->q, c->k, c->v, c->B, c->S, c->H,
                                 c->KVH, c->hd, c->scale, c->o, c->p, &c->r->err));
    get(c->r, c->o, c->oh);
    return dot_wts(c->oh, c->wts, (size_t)c->B * c->S * c->H * c->hd);
}

static void test_attention(el_backend *vk, el_backend *cpu, int B, int S, int H,
                           int KVH, int hd, int fd)
{
    size_t nq = (size_t)B * S * H * hd, nkv = (size_t)B * S * KVH * hd;
    size_t np = (size_t)B * H * S * S;
    float scale = 1.0f / sqrtf((float)hd);
    float *q = rand_vec(nq, 1.5), *k = rand_vec(nkv, 1.5), *v = rand_vec(nkv, 1.0);
    float *dout = rand_vec(nq, 1.0);
    double *ro = dvec(nq), *rp = dvec(np);
    double *rdq = dvec(nq), *rdk = dvec(nkv), *rdv = dvec(nkv);
    ref_attention_fwd(q, k, v, B, S, H, KVH, hd, scale, ro, rp);
    ref_attention_bwd(q, k, v, rp, dout, B, S, H, KVH, hd, scale, rdq, rdk, rdv);
    float *o[2], *p[2], *dq[2], *dk[2], *dv[2];
    el_backend *bes[2] = {vk, cpu};
    for (int b = 0; b < 2; b++) {
        o[b] = fvec(nq), p[b] = fvec(np), dq[b] = fvec(nq);
        dk[b] = fvec(nkv), dv[b] = fvec(nkv);
        run r;
        run_init(&r, bes[b]);
        el_view vq = put(&r, EL_F32, nq, q), vk_ = put(&r, EL_F32, nkv, k);
        el_view vv = put(&r, EL_F32, nkv, v), vd = put(&r, EL_F32, nq, dout);
        el_view vo = put(&r, EL_F32, nq, NULL), vp = put(&r, EL_F32, np, NULL);
        el_view vdq = put(&r, EL_F32, nq, NULL), vdk = put(&r, EL_F32, nkv, NULL);
        el_view vdv = put(&r, EL_F32, nkv, NULL);
        op(&r, el_nn_attention_fwd(r.be, vq, vk_, vv, B, S, H, KVH, hd, scale,
                                   vo, vp, &r.err));
        op(&r, el_nn_attention_bwd(r.be, vq, vk_, vv, vp, vd, B, S, H, KVH, hd,
                                   scale, vdq, vdk, vdv, &r.err));
        get(&r, vo, o[b]);
        get(&r, vp, p[b]);
        get(&r, vdq, dq[b]);
        get(&r, vdk, dk[b]);
        get(&r, vdv, dv[b]);
        run_done(&r, "attention");
    }
    char what[128];
    snprintf(what, sizeof what, "attention B=%d S=%d H=%d KVH=%d hd=%d", B, S, H,
             KVH, hd);
    printf("%s\n", what);
    CHECK_ERR("attention o vs ref", err_d(o[0], ro, nq), TOL_REF);
    CHECK_ERR("attention p vs ref", err_d(p[0], rp, np), TOL_REF);
    CHECK_ERR("attention dq vs ref", err_d(dq[0], rdq, nq), TOL_REF);
    CHECK_ERR("attention dk vs ref", err_d(dk[0], rdk, nkv), TOL_REF);
    CHECK_ERR("attention dv vs ref", err_d(dv[0], rdv, nkv), TOL_REF);
    CHECK_ERR("attention o vs cpu", err_f(o[0], o[1], nq), TOL_CPU);
    CHECK_ERR("attention p vs cpu", err_f(p[0], p[1], np), TOL_CPU);
    CHECK_ERR("attention dq vs cpu", err_f(dq[0], dq[1], nq), TOL_CPU);
    CHECK_ERR("attention dk vs cpu", err_f(dk[0], dk[1], nkv), TOL_CPU);
    CHECK_ERR("attention dv vs cpu", err_f(dv[0], dv[1], nkv), TOL_CPU);
    /* causality: exact zeros above the diagonal, rows sum to 1 */
    int causal = 1;
    double worst_sum = 0;
    for (size_t row = 0; row < (size_t)B * H * S; row++) {
        size_t i = row % (size_t)S;
        double sum = 0;
        for (size_t j = 0; j < (size_t)S; j++) {
            float pj = p[0][row * S + j];
            if (j > i && pj != 0.0f)
                causal = 0;
            sum += pj;
        }
        worst_sum = fmax(worst_sum, fabs(sum - 1.0));
    }
    CHECK_MSG(causal, "attention: p is nonzero above the diagonal");
    CHECK_ERR("attention p row sums", worst_sum, 1e-5);

    if (fd) {
        /* L = sum(o * dout): its gradient is attention_bwd(dout). */
        run r;
        run_init(&r, vk);
        float *oh = fvec(nq);
        double *g = dvec(nq);
        struct attn_ctx c = {&r, put(&r, EL_F32, nq, q), put(&r, EL_F32, nkv, k),
                             put(&r, EL_F32, nkv, v), put(&r, EL_F32, nq, NULL),
                             put(&r, EL_F32, np, NULL), B, S, H, KVH, hd, scale,
                             dout, oh};
        finite_diff(&r, c.q, q, nq, attn_loss, &c, g);
        CHECK_ERR("attention dq vs finite differences", err_d(dq[0], g, nq), TOL_FD);
        finite_diff(&r, c.k, k, nkv, attn_loss, &c, g);
        CHECK_ERR("attention dk vs finite differences", err_d(dk[0], g, nkv), TOL_FD);
        finite_diff(&r, c.v, v, nkv, attn_loss, &c, g);
        CHECK_ERR("attention dv vs finite differences", err_d(dv[0], g, nkv), TOL_FD);
        run_done(&r, "attention finite differences");
        el_free(oh), el_free(g);
    }
    for (int b = 0; b < 2; b++)
        el_free(o[b]), el_free(p[b]), el_free(dq[b]), el_free(dk[b]), el_free(dv[b]);
    el_free(q), el_free(k), el_free(v), el_free(dout);
    el_free(ro), el_free(rp), el_free(rdq), el_free(rdk), el_free(rdv);
}

struct swiglu_ctx {
    run *r;
    el_view g, u, h;
    size_t n;
    const float *wts;
    float *hh;
};

static double swiglu_loss(void *p)
{
    struct swiglu_ctx *c = p;
    op(c->r, el_nn_swiglu_fwd(c->r->be, c->g, c->u, c->h, &c->r->err));
    get(c->r, c->h, c->hh);
    return dot_wts(c->hh, c->wts, c->n);
}

static void test_swiglu(el_backend *vk, el_backend *cpu, size_t n, int fd)
{
    float *g = rand_vec(n, 4.0), *u = rand_vec(n, 2.0), *dh = rand_vec(n, 1.0);
    if (n > 4)   /* saturated gates: sigmoid must not form inf/inf */
        g[0] = 90.0f, g[1] = -90.0f, g[2] = 30.0f, g[3] = -30.0f;
    double *rh = dvec(n), *rdg = dvec(n), *rdu = dvec(n);
    for (size_t i = 0; i < n; i++) {
        double s = sigm(g[i]);
        rh[i] = g[i] * s * u[i];
        rdu[i] = dh[i] * g[i] * s;
        rdg[i] = dh[i] * u[i] * s * (1 + g[i] * (1 - s));
    }
    float *h[2], *dg[2], *du[2];
    el_backend *bes[2] = {vk, cpu};
    for (int k = 0; k < 2; k++) {
        h[k] = fvec(n), dg[k] = fvec(n), du[k] = fvec(n);
        run r;
        run_init(&r, bes[k]);
        el_view vg = put(&r, EL_F32, n, g), vu = put(&r, EL_F32, n, u);
        el_view vdh = put(&r, EL_F32, n, dh), vh = put(&r, EL_F32, n, NULL);
        el_view vdg = put(&r, EL_F32, n, NULL), vdu = put(&r, EL_F32, n, NULL);
        op(&r, el_nn_swiglu_fwd(r.be, vg, vu, vh, &r.err));
        op(&r, el_nn_swiglu_bwd(r.be, vg, vu, vdh, vdg, vdu, &r.err));
        get(&r, vh, h[k]);
        get(&r, vdg, dg[k]);
        get(&r, vdu, du[k]);
        run_done(&r, "swiglu");
    }
    CHECK_ERR("swiglu_fwd vs ref", err_d(h[0], rh, n), TOL_REF);
    CHECK_ERR("swiglu_bwd dg vs ref", err_d(dg[0], rdg, n), TOL_REF);
    CHECK_ERR("swiglu_bwd du vs ref", err_d(du[0], rdu, n), TOL_REF);
    CHECK_ERR("swiglu_fwd vs cpu", err_f(h[0], h[1], n), TOL_CPU);
    CHECK_ERR("swiglu_bwd dg vs cpu", err_f(dg[0], dg[1], n), TOL_CPU);
    CHECK_ERR("swiglu_bwd du vs cpu", err_f(du[0], du[1], n), TOL_CPU);
    if (fd) {
        run r;
        run_init(&r, vk);
        float *hh = fvec(n);
        double *fg = dvec(n);
        struct swiglu_ctx c = {&r, put(&r, EL_F32, n, g), put(&r, EL_F32, n, u),
                               put(&r, EL_F32, n, NULL), n, dh, hh};
        finite_diff(&r, c.g, g, n, swiglu_loss, &c, fg);
        CHECK_ERR("swiglu_bwd dg vs finite differences", err_d(dg[0], fg, n), TOL_FD);
        finite_diff(&r, c.u, u, n, swiglu_loss, &c, fg);
        CHECK_ERR("swiglu_bwd du vs finite differences", err_d(du[0], fg, n), TOL_FD);
        run_done(&r, "swiglu finite differences");
        el_free(hh), el_free(fg);
    }
    for (int k = 0; k < 2; k++)
        el_free(h[k]), el_free(dg[k]), el_free(du[k]);
    el_free(g), el_free(u), el_free(dh), el_free(rh), el_free(rdg), el_free(rdu);
}

struct ce_ctx {
    run *r;
    el_view logits, targets, loss;
    int T, V;
    float gs;
    float *lh;
};

static double ce_loss(void *p)
{
    struct ce_ctx *c = p;
    el_view none = {NULL, 0, 0};
    op(c->r, el_nn_cross_entropy(c->r->be, c->logits, c->targets, c->T, c->V,
                                 c->gs, c->loss, none, &c->r->err));
    get(c->r, c->loss, c->lh);
    double s = 0;
    for (int t = 0; t < c->T; t++)
        s += (double)c->gs * c->lh[t];
    return s;
}

static void test_cross_entropy(el_backend *vk, el_backend *cpu, int T, int V,
                               int fd)
{
    size_t n = (size_t)T * V;
    float gs = 0.25f;
    float *lg = rand_vec(n, 3.0);
    for (int c = 0; c < V; c++)   /* a row far from 0: needs the max shift */
        lg[c] += 80.0f;
    int32_t *tg = el_malloc((size_t)T * sizeof *tg);
    for (int t = 0; t < T; t++)
        tg[t] = (int32_t)((size_t)(t * 7919 + 3) % (size_t)V);
    if (T > 1)
        tg[1] = -1;
    double *rl = dvec((size_t)T), *rd = dvec(n);
    ref_cross_entropy(lg, tg, T, V, gs, rl, rd);
    float *loss[2], *dl[2], *loss_only = fvec((size_t)T), *inplace = fvec(n);
    el_backend *bes[2] = {vk, cpu};
    for (int k = 0; k < 2; k++) {
        loss[k] = fvec((size_t)T), dl[k] = fvec(n);
        run r;
        run_init(&r, bes[k]);
        el_view vl = put(&r, EL_F32, n, lg), vt = put(&r, EL_I32, (size_t)T, tg);
        el_view vloss = put(&r, EL_F32, (size_t)T, NULL), vd = put(&r, EL_F32, n, NULL);
        op(&r, el_nn_cross_entropy(r.be, vl, vt, T, V, gs, vloss, vd, &r.err));
        get(&r, vloss, loss[k]);
        get(&r, vd, dl[k]);
        if (k == 0) {
            el_view none = {NULL, 0, 0};
            el_view vloss2 = put(&r, EL_F32, (size_t)T, NULL);
            op(&r, el_nn_cross_entropy(r.be, vl, vt, T, V, gs, vloss2, none, &r.err));
            get(&r, vloss2, loss_only);
            /* dlogits aliasing logits (backend.h allows it) */
            op(&r, el_nn_cross_entropy(r.be, vl, vt, T, V, gs, vloss2, vl, &r.err));
            get(&r, vl, inplace);
        }
        run_done(&r, "cross_entropy");
    }
    CHECK_ERR("cross_entropy loss vs ref", err_d(loss[0], rl, (size_t)T), TOL_REF);
    CHECK_ERR("cross_entropy dlogits vs ref", err_d(dl[0], rd, n), TOL_REF);
    CHECK_ERR("cross_entropy loss without dlogits", err_d(loss_only, rl, (size_t)T), TOL_REF);
    CHECK_ERR("cross_entropy dlogits in place", err_d(inplace, rd, n), TOL_REF);
    CHECK_ERR("cross_entropy loss vs cpu", err_f(loss[0], loss[1], (size_t)T), TOL_CPU);
    CHECK_ERR("cross_entropy dlogits vs cpu", err_f(dl[0], dl[1], n), TOL_CPU);
    if (T > 1) {
        int zero = loss[0][1] == 0.0f;
        for (int c = 0; c < V; c++)
            zero &= dl[0][(size_t)V + c] == 0.0f;
        CHECK_MSG(zero, "cross_entropy: target -1 must give loss 0 and a zero row");
    }
    if (fd) {
        run r;
        run_init(&r, vk);
        float *lh = fvec((size_t)T);
        double *g = dvec(n);
        struct ce_ctx c = {&r, put(&r, EL_F32, n, lg), put(&r, EL_I32, (size_t)T, tg),
                           put(&r, EL_F32, (size_t)T, NULL), T, V, gs, lh};
        finite_diff(&r, c.logits, lg, n, ce_loss, &c, g);
        run_done(&r, "cross_entropy finite differences");
        CHECK_ERR("cross_entropy dlogits vs finite differences", err_d(dl[0], g, n), TOL_FD);
        el_free(lh), el_free(g);
    }
    for (int k = 0; k < 2; k++)
        el_free(loss[k]), el_free(dl[k]);
    el_free(loss_only), el_free(inplace), el_free(lg), el_free(tg), el_free(rl), el_free(rd);
}

/* Two AdamW steps inside a replayed graph: the second step changes
 * lr, the bias corrections and the gradient norm only through tensors, as a
 * training loop does, and must follow them. First without clipping, then
 * with a max norm that clips. */
static void test_adamw(el_backend *vk, el_backend *cpu, size_t n)
{
    float *p0 = rand_vec(n, 1.0), *g = rand_vec(n, 0.5);
    float *m0 = rand_vec(n, 0.1), *v0 = fvec(n);
    for (size_t i = 0; i < n; i++)
        v0[i] = (float)(fabs(urand()) * 0.01);
    double gn = 0;
    for (size_t i = 0; i < n; i++)
        gn += (double)g[i] * g[i];
    float hps[2][8] = {
        {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.1f, 0.001f, 0.0f},
        {5e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.19f, 0.001999f, (float)(sqrt(gn) * 0.5)},
    };
    float gns[2] = {(float)gn, (float)gn};
    double *rp = dvec(n), *rm = dvec(n), *rv = dvec(n);
    for (size_t i = 0; i < n; i++)
        rp[i] = p0[i], rm[i] = m0[i], rv[i] = v0[i];
    for (int s = 0; s < 2; s++)
        ref_adamw(rp, g, rm, rv, n, hps[s], gns[s]);
    float *p[2], *m[2], *v[2];
    el_backend *bes[2] = {vk, cpu};
    /* a graph records fixed tensors, so each call gets its own key */
    static uint64_t next_key = 0xada0;
    uint64_t graph_key = ++next_key;
    for (int k = 0; k < 2; k++) {
        p[k] = fvec(n), m[k] = fvec(n), v[k] = fvec(n);
        run r;
        run_init(&r, bes[k]);
        el_view vp = put(&r, EL_F32, n, p0), vg = put(&r, EL_F32, n, g);
        el_view vm = put(&r, EL_F32, n, m0), vv = put(&r, EL_F32, n, v0);
        el_view vhp = put(&r, EL_F32, 8, hps[0]), vgn = put(&r, EL_F32, 1, gns);
        for (int s = 0; s < 2 && !r.rc; s++) {
            op(&r, el_nn_write(r.be, vhp, hps[s], &r.err));
            op(&r, el_nn_write(r.be, vgn, &gns[s], &r.err));
            op(&r, el_nn_graph_begin(r.be, graph_key, &r.err));
            op(&r, el_nn_adamw(r.be, vp, vg, vm, vv, vhp, vgn, &r.err));
            op(&r, el_nn_graph_end(r.be, &r.err));
        }
        get(&r, vp, p[k]);
        get(&r, vm, m[k]);
        get(&r, vv, v[k]);
        run_done(&r, "adamw");
    }
    CHECK_ERR("adamw p vs ref", err_d(p[0], rp, n), TOL_REF);
    CHECK_ERR("adamw m vs ref", err_d(m[0], rm, n), TOL_REF);
    CHECK_ERR("adamw v vs ref", err_d(v[0], rv, n), TOL_REF);
    CHECK_ERR("adamw p vs cpu", err_f(p[0], p[1], n), TOL_CPU);
    CHECK_ERR("adamw m vs cpu", err_f(m[0], m[1], n), TOL_CPU);
    CHECK_ERR("adamw v vs cpu", err_f(v[0], v[1], n), TOL_CPU);
    for (int k = 0; k < 2; k++)
        el_free(p[k]), el_free(m[k]), el_free(v[k]);
    el_free(p0), el_free(g), el_free(m0), el_free(v0);
    el_free(rp), el_free(rm), el_free(rv);
}

/* Every op once more on a backend whose bindings hold only a few hundred
 * elements, so each op takes its chunked path (several dispatches). */
static void test_chunked(el_backend *cpu)
{
    setenv("EDGELOOP_VK_MAX_BINDING", "2048", 1);
    el_backend_options o = {.kind = EL_BACKEND_VULKAN, .device_index = -1,
                            .cache_dir = cache_dir};
    el_backend *small = NULL;
    el_error err = {0};
    int rc = el_nn_backend_create(&o, &small, &err);
    unsetenv("EDGELOOP_VK_MAX_BINDING");
    CHECK_OK(rc, &err);
    if (rc)
        return;
    size_t max = el_vk_backend_caps(small)->max_view_elems;
    CHECK_MSG(max <= 1024, "EDGELOOP_VK_MAX_BINDING=2048 left %zu elements", max);
    test_embedding(small, cpu, 40, 259, 17);      /* table in 9 row ranges */
    test_rmsnorm(small, cpu, 70, 17, 0);
    test_rope(small, cpu, 2, 9, 8, 16, 10000.0f, 0);  /* 4 rows a chunk */
    test_attention(small, cpu, 3, 5, 4, 2, 16, 0); /* one sequence a chunk */
    test_swiglu(small, cpu, 3000, 0);
    test_cross_entropy(small, cpu, 9, 259, 0);
    test_adamw(small, cpu, 2500);
    /* an op whose single row cannot be bound says so */
    run r;
    run_init(&r, small);
    el_view x = put(&r, EL_F32, 2000, NULL), w = put(&r, EL_F32, 2000, NULL);
    el_view y = put(&r, EL_F32, 2000, NULL), rs = put(&r, EL_F32, 1, NULL);
    el_error e2 = {0};
    rc = r.rc ? r.rc : el_nn_rmsnorm_fwd(small, x, w, 1, 2000, 1e-5f, y, rs, &e2);
    CHECK_MSG(rc == EL_EUNAVAIL && strstr(e2.msg, "rmsnorm_fwd"),
              "oversized row: rc=%d msg=%s", rc, e2.msg);
    run_done(&r, "oversized row");
    el_vk_stats st;
    el_vk_backend_stats(small, &st);
    CHECK_MSG(st.validation_messages == 0, "%u validation messages (chunked)",
              st.validation_messages);
    el_nn_backend_destroy(small);
}

/* On a software driver (lavapipe), a shape whose shader loops would pass the
 * driver's loop limiter is refused, not computed wrong. */
static void test_loop_limit(el_backend *vk)
{
    if (!el_vk_backend_caps(vk)->is_cpu)
        return;
    int S = 2048, hd = 64;
    size_t n = (size_t)S * hd;
    run r;
    run_init(&r, vk);
    el_view q = put(&r, EL_F32, n, NULL), k = put(&r, EL_F32, n, NULL);
    el_view v = put(&r, EL_F32, n, NULL), o = put(&r, EL_F32, n, NULL);
    el_view p = put(&r, EL_F32, (size_t)S * S, NULL);
    el_error e = {0};
    int rc = r.rc ? r.rc
                  : el_nn_attention_fwd(vk, q, k, v, 1, S, 1, 1, hd, 0.125f, o, p, &e);
    CHECK_MSG(rc == EL_EUNAVAIL && strstr(e.msg, "loop steps"),
              "attention S=2048 on a software driver: rc=%d msg=%s", rc, e.msg);
    run_done(&r, "loop limit");
}

int main(void)
{
    el_error err = {0};
    if (!mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    el_backend_options o = {.kind = EL_BACKEND_VULKAN, .device_index = -1,
                            .cache_dir = cache_dir};
    el_backend *vk = NULL, *cpu = NULL;
    int rc = el_nn_backend_create(&o, &vk, &err);
    if (rc == EL_EUNAVAIL) {
        printf("test_vk_ops: skipped: %s\n", err.msg);
        cache_cleanup();
        return 77;
    }
    CHECK_OK(rc, &err);
    o.kind = EL_BACKEND_CPU;
    o.threads = 1;
    int rc2 = el_nn_backend_create(&o, &cpu, &err);
    CHECK_OK(rc2, &err);
    if (rc || rc2) {
        el_nn_backend_destroy(vk);
        cache_cleanup();
        return el_test_done("test_vk_ops");
    }
    printf("vulkan: %s\ncpu: %s\n", el_nn_backend_name(vk), el_nn_backend_name(cpu));

    test_embedding(vk, cpu, 3, 259, 17);
    test_embedding(vk, cpu, 129, 1000, 64);
    test_rmsnorm(vk, cpu, 3, 17, 1);
    test_rmsnorm(vk, cpu, 7, 1000, 0);
    test_rmsnorm(vk, cpu, 1, 1, 1);
    test_rope(vk, cpu, 2, 5, 3, 8, 10000.0f, 1);
    test_rope(vk, cpu, 1, 256, 2, 64, 10000.0f, 0);   /* positions up to 255 */
    test_rope(vk, cpu, 1, 256, 1, 64, 500000.0f, 0);  /* Llama 3 theta */
    test_attention(vk, cpu, 2, 5, 4, 2, 8, 1);        /* GQA */
    test_attention(vk, cpu, 1, 7, 3, 3, 6, 1);        /* MHA */
    test_attention(vk, cpu, 2, 9, 4, 1, 4, 0);        /* MQA */
    test_attention(vk, cpu, 1, 1, 1, 1, 3, 1);        /* one token, odd hd */
    test_attention(vk, cpu, 2, 70, 2, 2, 5, 0);       /* rows across workgroups */
    test_attention(vk, cpu, 1, 256, 2, 1, 64, 0);     /* the model's largest */
    test_attention(vk, cpu, 1, 256, 8, 2, 64, 0);     /* ... with a group of 4 */
    test_swiglu(vk, cpu, 17, 1);
    test_swiglu(vk, cpu, 100003, 0);
    test_cross_entropy(vk, cpu, 4, 259, 1);
    test_cross_entropy(vk, cpu, 33, 1001, 0);
    test_cross_entropy(vk, cpu, 2, 1, 1);             /* lanes without columns */
    test_cross_entropy(vk, cpu, 3, 32000, 0);         /* Llama 2 vocabulary */
    test_cross_entropy(vk, cpu, 2, 128256, 0);        /* Llama 3 vocabulary */
    test_adamw(vk, cpu, 1000);
    test_adamw(vk, cpu, 1);

    test_loop_limit(vk);

    el_vk_stats st;
    el_vk_backend_stats(vk, &st);
    CHECK_MSG(st.validation_messages == 0, "%u validation messages",
              st.validation_messages);
    CHECK(st.graphs_recorded >= 1 && st.graphs_replayed >= 1);
    test_chunked(cpu);

    el_nn_backend_destroy(vk);
    el_nn_backend_destroy(cpu);
    cache_cleanup();
    return el_test_done("test_vk_ops");
}
