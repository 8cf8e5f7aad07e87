#version 450
// Attention backward pass 2 (see ops_attention_bwd.glsl), one dispatch per
// query head g of a kv group: per key row (b,kvh,j), the contributions of
// query head kvh * group + g over the rows i >= j that see key j are added
// to dk_j and dv_j (dispatch g = 0 overwrites them). Splitting the group
// over dispatches bounds each invocation's loop count (ops_common.glsl
// note 4) and needs no cross-invocation sum.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"
#include "ops_attention_bwd.glsl"

void main()
{
    uint group = pc.H / pc.KVH;
    OPS_FOR(row, pc.B * pc.KVH * pc.S) {
        uint j = row % pc.S, bk = row / pc.S;
        uint kh = bk % pc.KVH, b = bk / pc.KVH;
        uint h = kh * group + pc.g;
        uint vj = pc.off_v + ops_head_row(b, j, pc.KVH, kh);
        uint dkj = pc.off_dk + ops_head_row(b, j, pc.KVH, kh);
        uint dvj = pc.off_dv + ops_head_row(b, j, pc.KVH, kh);
        if (pc.g == 0u) {
            for (uint d = 0u; d < pc.hd; d++) {
                dk[dkj + d] = 0.0f;
                dv[dvj + d] = 0.0f;
            }
        }
        for (uint i = j; i < pc.S; i++) {
            float pij = p[pc.off_p + ((b * pc.H + h) * pc.S + i) * pc.S + j];
            uint di = pc.off_dout + ops_head_row(b, i, pc.H, h);
            uint qi = pc.off_q + ops_head_row(b, i, pc.H, h);
            float dp;
            OPS_DOT(dp, dout, di, v, vj, pc.hd);
            float ds = pij * (dp - dq[pc.off_dq + ops_head_row(b, i, pc.H, h)]) * pc.scale;
            OPS_AXPY(dv, dvj, pij, dout, di, pc.hd);
            OPS_AXPY(dk, dkj, ds, q, qi, pc.hd);
        }
    }
}
