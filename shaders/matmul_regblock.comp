#version 450
#extension GL_GOOGLE_include_directive : require
// Register-blocked matmul without shared memory or barriers, shaped for
// llvmpipe (DESIGN.md "Compute"). There 8 consecutive x invocations share a
// SIMD vector (lanes past the workgroup's x size idle), FMAs run 8 lanes at
// a time, but every load from a storage buffer or shared memory is a loop
// over the lanes with a bounds check per component (~85 cycles per vec4
// on this 2-core machine), even when all lanes read the same address, and a
// barrier is a coroutine switch. Loads therefore set the speed: the kernel
// keeps a TM x TN block of C per invocation in registers and reads operands
// as vec4 (4 components per lane iteration), for TM * TN / (TM + TN) FMAs
// per component loaded. 16 x 16 blocks spill accumulators to the stack, but
// a spill costs a fraction of a load: at 1024^3 they ran ~1.6x faster than
// 8 x 8 (larger ones ran slower and compiled for 7-19 s). Staging tiles in
// shared memory and spreading lane-uniform values with subgroupBroadcast
// were both measured slower (docs/decisions.md).
//
// Invocation (x, y) of the grid owns rows y*TM.. and columns x*TN.. of C,
// or with ROWS_ON_X rows x*TM.. and columns y*TN.., so that a narrow C (a
// LoRA rank of 16 columns) still puts 8 invocations of real work on the
// lanes. With VEC4 = 1 (the host checked that the contiguous dimensions of
// both operands and the view offsets are multiples of 4, and TM, TN are
// multiples of 4) operands are read as vec4 along their contiguous
// dimension: k for A in NT/NN and for B in NT, the rows for A in TN, the
// columns for B in NN/TN. VEC4 = 0 reads scalars. Rows and columns past M
// and N are clamped on load and skipped on store, so any shape works.
//
// TEXEL = 1 (with VEC4 = 1; the host bound A and B also as uniform texel
// buffers, vulkan_impl.h note 8) reads the operands with texelFetch. On
// llvmpipe that is one vector gather per vec4 instead of the storage
// buffer's per-lane loop, which made 1024^3 about twice as fast
// (docs/decisions.md 17). The storage declarations stay for TEXEL = 0.

layout(constant_id = 0) const uint LX = 16;
layout(constant_id = 1) const uint LY = 1;
layout(constant_id = 2) const uint TM = 8;
layout(constant_id = 3) const uint TN = 8;
layout(constant_id = 4) const uint LAYOUT = 0;
layout(constant_id = 5) const uint VEC4 = 0;
layout(constant_id = 6) const uint ROWS_ON_X = 0;
layout(constant_id = 7) const uint TEXEL = 0;
layout(local_size_x_id = 0, local_size_y_id = 1) in;

#include "matmul.glsl"

layout(set = 0, binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(set = 0, binding = 1) readonly buffer B4 { vec4 b4[]; };
layout(set = 0, binding = 8) uniform samplerBuffer ta4;
layout(set = 0, binding = 9) uniform samplerBuffer tb4;

vec4 a4_at(uint i)
{
    return TEXEL != 0 ? texelFetch(ta4, int(i)) : a4[i];
}

vec4 b4_at(uint i)
{
    return TEXEL != 0 ? texelFetch(tb4, int(i)) : b4[i];
}

const uint TN4 = TN / 4;
const uint TM4 = TM / 4;

void main()
{
    uvec2 cell = ROWS_ON_X != 0 ? gl_GlobalInvocationID.yx : gl_GlobalInvocationID.xy;
    uint i0 = cell.y * TM;
    uint j0 = cell.x * TN;
    if (i0 >= pc.M || j0 >= pc.N)
        return;
    vec4 acc[TM][TN4 > 0 ? TN4 : 1];   // acc[r][g][c] = C(i0 + r, j0 + 4g + c)
    for (uint r = 0; r < TM; r++)
        for (uint g = 0; g < TN4; g++)
            acc[r][g] = vec4(0.0);
    uint ri[TM];
    for (uint r = 0; r < TM; r++)
        ri[r] = min(i0 + r, pc.M - 1);
    uint cj[TN];
    for (uint q = 0; q < TN; q++)
        cj[q] = min(j0 + q, pc.N - 1);
    uint oa = pc.off_a / 4, ob = pc.off_b / 4;

    if (VEC4 != 0 && LAYOUT != 2) {
        // A[M,K] rows as vec4 over k.
        uint sk = pc.K / 4, sn = pc.N / 4;
        for (uint k4 = 0; k4 < sk; k4++) {
            vec4 av[TM];
            for (uint r = 0; r < TM; r++)
                av[r] = a4_at(oa + ri[r] * sk + k4);
            if (LAYOUT == 0) {
                // B[N,K] rows as vec4 over k: one dot product per element.
                for (uint g = 0; g < TN4; g++) {
                    vec4 b0 = b4_at(ob + cj[4 * g] * sk + k4);
                    vec4 b1 = b4_at(ob + cj[4 * g + 1] * sk + k4);
                    vec4 b2 = b4_at(ob + cj[4 * g + 2] * sk + k4);
                    vec4 b3 = b4_at(ob + cj[4 * g + 3] * sk + k4);
                    mat4 bm = mat4(b0, b1, b2, b3);   // column c = B row j0+4g+c
                    for (uint r = 0; r < TM; r++)
                        acc[r][g] += av[r] * bm;      // (row vector) . matrix
                }
            } else {
                // B[K,N] rows as vec4 over 4 columns, for each of the 4 k;
                // each accumulator takes its 4 FMAs in a row (it lives on
                // the stack between them).
                for (uint g = 0; g < TN4; g++) {
                    uint jb = ob + min(j0 + 4 * g, pc.N - 4) / 4 + 4 * k4 * sn;
                    vec4 b0 = b4_at(jb), b1 = b4_at(jb + sn), b2 = b4_at(jb + 2 * sn);
                    vec4 b3 = b4_at(jb + 3 * sn);
                    for (uint r = 0; r < TM; r++) {
                        vec4 t = fma(vec4(av[r].x), b0, acc[r][g]);
                        t = fma(vec4(av[r].y), b1, t);
                        t = fma(vec4(av[r].z), b2, t);
                        acc[r][g] = fma(vec4(av[r].w), b3, t);
                    }
                }
            }
        }
    } else if (VEC4 != 0) {
        // TN: A[K,M] and B[K,N], vec4 along rows and columns for each k.
        // Four k at a time, so that each accumulator takes 4 FMAs in a row.
        uint sm = pc.M / 4, sn = pc.N / 4;
        uint cb[TN4 > 0 ? TN4 : 1], rb[TM4 > 0 ? TM4 : 1];
        for (uint g = 0; g < TN4; g++)
            cb[g] = ob + min(j0 + 4 * g, pc.N - 4) / 4;
        for (uint h = 0; h < TM4; h++)
            rb[h] = oa + min(i0 + 4 * h, pc.M - 4) / 4;
        uint k = 0;
        for (; k + 4 <= pc.K; k += 4) {
            vec4 bv[4][TN4 > 0 ? TN4 : 1];
            for (uint q = 0; q < 4; q++)
                for (uint g = 0; g < TN4; g++)
                    bv[q][g] = b4_at(cb[g] + (k + q) * sn);
            for (uint h = 0; h < TM4; h++) {
                vec4 av[4];
                for (uint q = 0; q < 4; q++)
                    av[q] = a4_at(rb[h] + (k + q) * sm);
                for (uint c = 0; c < 4; c++)
                    for (uint g = 0; g < TN4; g++) {
                        vec4 t = fma(vec4(av[0][c]), bv[0][g], acc[4 * h + c][g]);
                        t = fma(vec4(av[1][c]), bv[1][g], t);
                        t = fma(vec4(av[2][c]), bv[2][g], t);
                        acc[4 * h + c][g] = fma(vec4(av[3][c]), bv[3][g], t);
                    }
            }
        }
        for (; k < pc.K; k++) {
            vec4 bv[TN4 > 0 ? TN4 : 1];
            for (uint g = 0; g < TN4; g++)
                bv[g] = b4_at(cb[g] + k * sn);
            for (uint h = 0; h < TM4; h++) {
                vec4 av = a4_at(rb[h] + k * sm);
                for (uint c = 0; c < 4; c++)
                    for (uint g = 0; g < TN4; g++)
                        acc[4 * h + c][g] = fma(vec4(av[c]), bv[g], acc[4 * h + c][g]);
            }
        }
    } else {
        for (uint k = 0; k < pc.K; k++) {
            float av[TM];
            for (uint r = 0; r < TM; r++)
                av[r] = load_a(ri[r], k);
            for (uint g = 0; g < TN4; g++) {
                vec4 bv = vec4(load_b(k, cj[4 * g]), load_b(k, cj[4 * g + 1]),
                               load_b(k, cj[4 * g + 2]), load_b(k, cj[4 * g + 3]));
                for (uint r = 0; r < TM; r++)
                    acc[r][g] = fma(vec4(av[r]), bv, acc[r][g]);
            }
        }
    }
    for (uint r = 0; r < TM; r++)
        for (uint q = 0; q < TN; q++)
            if (i0 + r < pc.M && j0 + q < pc.N)
                store_c(i0 + r, j0 + q, acc[r][q / 4][q % 4]);
}
