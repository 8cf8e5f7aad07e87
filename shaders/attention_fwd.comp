#version 450
// Causal grouped-query attention forward, one invocation per query row
// (b, h, i):
//   p[b,h,i,j] = softmax_j(scale * q_i . k_j) for j <= i, 0 for j > i,
//   o_i        = sum_j p[b,h,i,j] * v_j,
// with k and v of kv head h / (H / KVH). The row of p doubles as the scratch
// for the raw scores, so no other memory is needed; the max is subtracted
// before exp.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1, std430) readonly buffer K { float k[]; };
layout(set = 0, binding = 2, std430) readonly buffer V { float v[]; };
layout(set = 0, binding = 3, std430) writeonly buffer O { float o[]; };
layout(set = 0, binding = 4, std430) buffer P { float p[]; };

layout(push_constant) uniform Push {
    uint off_q, off_k, off_v, off_o, off_p;
    uint B, S, H, KVH, hd;
    float scale;
} pc;

void main()
{
    uint group = pc.H / pc.KVH;
    OPS_FOR(row, pc.B * pc.H * pc.S) {
        // row enumerates (b, h, i) in p's own order, so p's row is `row`.
        uint i = row % pc.S, bh = row / pc.S;
        uint h = bh % pc.H, b = bh / pc.H;
        uint kh = h / group;
        uint qi = pc.off_q + ((b * pc.S + i) * pc.H + h) * pc.hd;
        uint oi = pc.off_o + ((b * pc.S + i) * pc.H + h) * pc.hd;
        uint pr = pc.off_p + row * pc.S;
        uint kv0 = (b * pc.S * pc.KVH + kh) * pc.hd;   // key row 0 of this head
        uint kv_stride = pc.KVH * pc.hd;

        float m = 0.0f;
        for (uint j = 0u; j <= i; j++) {
            float s;
            OPS_DOT(s, q, qi, k, pc.off_k + kv0 + j * kv_stride, pc.hd);
            s *= pc.scale;
            p[pr + j] = s;
            m = (j == 0u) ? s : max(m, s);
        }
        float sum = 0.0f;
        for (uint j = 0u; j <= i; j++) {
            float e = exp(p[pr + j] - m);
            p[pr + j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (uint j = 0u; j <= i; j++)
            p[pr + j] *= inv;
        for (uint j = i + 1u; j < pc.S; j++)
            p[pr + j] = 0.0f;
        // o_i[d] = sum_j p_ij v_j[d], four keys a back-edge (note 4 of
        // ops_common.glsl: hd * S single steps would not fit the limiter).
        uint vb = pc.off_v + kv0;
        for (uint d = 0u; d < pc.hd; d++) {
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            uint j = 0u;
            for (; j + 4u <= i + 1u; j += 4u) {
                a0 += p[pr + j] * v[vb + j * kv_stride + d];
                a1 += p[pr + j + 1u] * v[vb + (j + 1u) * kv_stride + d];
                a2 += p[pr + j + 2u] * v[vb + (j + 2u) * kv_stride + d];
                a3 += p[pr + j + 3u] * v[vb + (j + 3u) * kv_stride + d];
            }
            for (; j <= i; j++)
                a0 += p[pr + j] * v[vb + j * kv_stride + d];
            o[oi + d] = (a0 + a1) + (a2 + a3);
        }
    }
}
