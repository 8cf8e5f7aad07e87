// Shared pieces of the model-op shaders (embedding, rmsnorm, rope, attention,
// swiglu, cross-entropy, adamw); host side in agent/nn/vulkan_ops.c.
//
// Conventions every op shader follows:
//  1. One storage buffer per view at set 0, bindings 0..n-1, in the order the
//     host passes the views; the push-constant block starts with the element
//     offset of each view (same order), then the op's dims and scalars.
//  2. Workgroups are 1-D with OPS_LOCAL invocations. The host caps the group
//     count at the device limit, so every shader walks its items with a
//     grid-stride loop (OPS_FOR) and stays correct for any size; partial
//     workgroups fall out of the loop bound.
//  3. One invocation owns one element or one row and writes only that; no
//     float atomics (not core in 1.1). Shared memory and barriers only where
//     a row is too long for one invocation (cross_entropy): lavapipe runs
//     each barrier as a coroutine switch.
//  4. Bounded loops: llvmpipe (lavapipe) stops every loop of an invocation
//     once the invocation has taken 65535 loop back-edges in total
//     (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS loop limiter), silently
//     skipping the rest. So no invocation may loop over a whole long row
//     (a 32000-entry vocabulary, S*hd of an attention head): long dot
//     products go through OPS_DOT (4 products a back-edge), long rows are
//     split over a workgroup, and attention's backward runs one dispatch per
//     query head of a group. test_vk_ops holds each op at the largest shape
//     the model uses.

#ifndef OPS_COMMON_GLSL
#define OPS_COMMON_GLSL

#define OPS_LOCAL 64
layout(local_size_x = OPS_LOCAL, local_size_y = 1, local_size_z = 1) in;

#define OPS_FOR(i, count) \
    for (uint i = gl_GlobalInvocationID.x; i < (count); \
         i += gl_NumWorkGroups.x * uint(OPS_LOCAL))

// OUT = sum_{d < N} A[IA + d] * B[IB + d], four products per loop back-edge
// (design note 4) in four partial sums.
#define OPS_DOT(out, A, ia, B, ib, n) \
    { \
        float s0_ = 0.0f, s1_ = 0.0f, s2_ = 0.0f, s3_ = 0.0f; \
        uint d_ = 0u; \
        for (; d_ + 4u <= (n); d_ += 4u) { \
            s0_ += A[(ia) + d_] * B[(ib) + d_]; \
            s1_ += A[(ia) + d_ + 1u] * B[(ib) + d_ + 1u]; \
            s2_ += A[(ia) + d_ + 2u] * B[(ib) + d_ + 2u]; \
            s3_ += A[(ia) + d_ + 3u] * B[(ib) + d_ + 3u]; \
        } \
        for (; d_ < (n); d_++) \
            s0_ += A[(ia) + d_] * B[(ib) + d_]; \
        out = (s0_ + s1_) + (s2_ + s3_); \
    }

// Y[IY + d] += ALPHA * X[IX + d] for d < N, four a back-edge.
#define OPS_AXPY(Y, iy, alpha, X, ix, n) \
    { \
        uint d_ = 0u; \
        for (; d_ + 4u <= (n); d_ += 4u) { \
            Y[(iy) + d_] += (alpha) * X[(ix) + d_]; \
            Y[(iy) + d_ + 1u] += (alpha) * X[(ix) + d_ + 1u]; \
            Y[(iy) + d_ + 2u] += (alpha) * X[(ix) + d_ + 2u]; \
            Y[(iy) + d_ + 3u] += (alpha) * X[(ix) + d_ + 3u]; \
        } \
        for (; d_ < (n); d_++) \
            Y[(iy) + d_] += (alpha) * X[(ix) + d_]; \
    }

// sin and cos of A to about 1 ulp for |a| up to ~1e4. The built-ins are only
// required to reach 2^-11 absolute error on [-pi, pi] (Vulkan spec, precision
// of GLSL.std.450 instructions), which would dominate RoPE's error at
// positions in the hundreds. Cody-Waite reduction by pi/2 with a three-part
// constant (each part exact for k < 2^12), then the Cephes minimax
// polynomials on [-pi/4, pi/4]. `precise` keeps the compiler from fusing or
// reordering the reduction, which would lose the low bits.
void ops_sincos(float a, out float s_out, out float c_out)
{
    precise float k = round(a * 0.63661977236758134f);
    precise float r = a - k * 1.5703125f;
    r = r - k * 4.837512969970703125e-4f;
    r = r - k * 7.54978995489188216e-8f;
    precise float z = r * r;
    precise float s = r + r * z * (-1.6666654611e-1f +
                      z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    precise float c = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f +
                      z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
    int q = int(k) & 3;
    if (q == 0) {
        s_out = s; c_out = c;
    } else if (q == 1) {
        s_out = c; c_out = -s;
    } else if (q == 2) {
        s_out = -s; c_out = -c;
    } else {
        s_out = -c; c_out = s;
    }
}

// Logistic sigmoid that never forms inf/inf: exp of a non-positive argument.
float ops_sigmoid(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + exp(-x));
    float e = exp(x);
    return e / (1.0f + e);
}

#endif
