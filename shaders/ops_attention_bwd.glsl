// Shared declarations of the three attention backward passes.
//
// With dP_ij = dout_i . v_j and D_i = sum_j p_ij dP_ij, the softmax backward
// is dS_ij = p_ij (dP_ij - D_i), and
//   dq_i = scale * sum_{j<=i} dS_ij k_j
//   dk_j = scale * sum_{h in group} sum_{i>=j} dS_ij q_i
//   dv_j =         sum_{h in group} sum_{i>=j} p_ij dout_i
// Passes (each a dispatch; the host orders them with barriers):
//   1. attention_bwd_rows, per query row (b,h,i): D_i, parked in dq's first
//      element of that row-head (dq is an output, so no scratch tensor is
//      needed, and nothing else reads that slot before pass 3).
//   2. attention_bwd_kv, per key row (b,kvh,j): dk_j and dv_j, reading D_i;
//      one dispatch per query head g of the group (push constant g), each
//      adding its head's share.
//   3. attention_bwd_q, per query row: reads its own D_i, then overwrites
//      the row-head of dq with dq_i. Each invocation touches only its slot,
//      so the reuse has no cross-invocation hazard.
// Each invocation accumulates into the output row it owns: no atomics.

#ifndef OPS_ATTENTION_BWD_GLSL
#define OPS_ATTENTION_BWD_GLSL

layout(set = 0, binding = 0, std430) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1, std430) readonly buffer K { float k[]; };
layout(set = 0, binding = 2, std430) readonly buffer V { float v[]; };
layout(set = 0, binding = 3, std430) readonly buffer P { float p[]; };
layout(set = 0, binding = 4, std430) readonly buffer Dout { float dout[]; };
layout(set = 0, binding = 5, std430) buffer Dq { float dq[]; };
layout(set = 0, binding = 6, std430) buffer Dk { float dk[]; };
layout(set = 0, binding = 7, std430) buffer Dv { float dv[]; };

layout(push_constant) uniform Push {
    uint off_q, off_k, off_v, off_p, off_dout, off_dq, off_dk, off_dv;
    uint B, S, H, KVH, hd;
    float scale;
    uint g;   // attention_bwd_kv: the query head within the group
} pc;

// Element index (without view offset) of row-head (b, i, h) in a
// [B*S, heads*hd] activation.
uint ops_head_row(uint b, uint i, uint heads, uint h)
{
    return ((b * pc.S + i) * heads + h) * pc.hd;
}

#endif
