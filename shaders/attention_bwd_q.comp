#version 450
// Attention backward pass 3 (see ops_attention_bwd.glsl): per query row
// (b,h,i), reads D_i from its own dq slot, then writes
// dq_i = scale * sum_{j<=i} p_ij (dout_i . v_j - D_i) k_j over that row-head.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"
#include "ops_attention_bwd.glsl"

void main()
{
    uint group = pc.H / pc.KVH;
    OPS_FOR(row, pc.B * pc.H * pc.S) {
        uint i = row % pc.S, bh = row / pc.S;
        uint h = bh % pc.H, b = bh / pc.H;
        uint kh = h / group;
        uint di = pc.off_dout + ops_head_row(b, i, pc.H, h);
        uint dqi = pc.off_dq + ops_head_row(b, i, pc.H, h);
        uint pr = pc.off_p + row * pc.S;
        float D = dq[dqi];
        for (uint d = 0u; d < pc.hd; d++)
            dq[dqi + d] = 0.0f;
        for (uint j = 0u; j <= i; j++) {
            float dp;
            OPS_DOT(dp, dout, di, v, pc.off_v + ops_head_row(b, j, pc.KVH, kh), pc.hd);
            float ds = p[pr + j] * (dp - D) * pc.scale;
            OPS_AXPY(dq, dqi, ds, k, pc.off_k + ops_head_row(b, j, pc.KVH, kh), pc.hd);
        }
    }
}
