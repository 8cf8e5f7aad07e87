#version 450
#extension GL_GOOGLE_include_directive : require
// Shared-memory tiled matmul for GPUs: a workgroup of (BN/TN) x (BM/TM)
// invocations computes a BM x BN tile of C, staging BK-deep slices of op(A)
// and op(B) in shared memory; each invocation accumulates a TM x TN block.
// Tile shapes are specialization constants chosen by the host from the
// device's workgroup and shared-memory limits. Out-of-range elements load as
// zero, so any shape works. Not for llvmpipe (lavapipe), where it ran at
// ~2 GFLOP/s at 1024^3 against ~22 for matmul_regblock.comp: there each
// shared-memory load is a loop over the SIMD lanes and each barrier a
// coroutine switch, so the host picks the register-blocked variant on
// CPU-type devices.

layout(constant_id = 0) const uint LX = 16;   // BN / TN
layout(constant_id = 1) const uint LY = 16;   // BM / TM
layout(constant_id = 2) const uint TM = 4;
layout(constant_id = 3) const uint TN = 4;
layout(constant_id = 4) const uint LAYOUT = 0;
layout(constant_id = 5) const uint BK = 16;
layout(local_size_x_id = 0, local_size_y_id = 1) in;

#include "matmul.glsl"

const uint BM = LY * TM;
const uint BN = LX * TN;
shared float tile_a[BK * BM];   // [k][i]
shared float tile_b[BK * BN];   // [k][j]

void main()
{
    uint tid = gl_LocalInvocationIndex;
    uint nthreads = LX * LY;
    uint row0 = gl_WorkGroupID.y * BM;
    uint col0 = gl_WorkGroupID.x * BN;
    uint ty = gl_LocalInvocationID.y;
    uint tx = gl_LocalInvocationID.x;
    float acc[TM][TN];
    for (uint r = 0; r < TM; r++)
        for (uint q = 0; q < TN; q++)
            acc[r][q] = 0.0;
    for (uint k0 = 0; k0 < pc.K; k0 += BK) {
        for (uint e = tid; e < BK * BM; e += nthreads) {
            uint kk = e / BM, ii = e % BM;
            uint i = row0 + ii, k = k0 + kk;
            tile_a[e] = (i < pc.M && k < pc.K) ? load_a(i, k) : 0.0;
        }
        for (uint e = tid; e < BK * BN; e += nthreads) {
            uint kk = e / BN, jj = e % BN;
            uint j = col0 + jj, k = k0 + kk;
            tile_b[e] = (j < pc.N && k < pc.K) ? load_b(k, j) : 0.0;
        }
        barrier();
        for (uint kk = 0; kk < BK; kk++) {
            float av[TM];
            float bv[TN];
            for (uint r = 0; r < TM; r++)
                av[r] = tile_a[kk * BM + ty + r * LY];
            for (uint q = 0; q < TN; q++)
                bv[q] = tile_b[kk * BN + tx + q * LX];
            for (uint r = 0; r < TM; r++)
                for (uint q = 0; q < TN; q++)
                    acc[r][q] = fma(av[r], bv[q], acc[r][q]);
        }
        barrier();
    }
    for (uint r = 0; r < TM; r++)
        for (uint q = 0; q < TN; q++) {
            uint i = row0 + ty + r * LY, j = col0 + tx + q * LX;
            if (i < pc.M && j < pc.N)
                store_c(i, j, acc[r][q]);
        }
}
