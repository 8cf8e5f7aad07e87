#version 450
// Attention backward pass 1 (see ops_attention_bwd.glsl): per query row
// (b,h,i), D_i = sum_{j<=i} p_ij (dout_i . v_j), stored in dq's first element
// of row-head (b,i,h).
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
        uint pr = pc.off_p + row * pc.S;
        float acc = 0.0f;
        for (uint j = 0u; j <= i; j++) {
            float dp;
            OPS_DOT(dp, dout, di, v, pc.off_v + ops_head_row(b, j, pc.KVH, kh), pc.hd);
            acc += p[pr + j] * dp;
        }
        dq[pc.off_dq + ops_head_row(b, i, pc.H, h)] = acc;
    }
}
