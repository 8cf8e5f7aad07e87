#version 450
// out[t, :] = table[ids[t], :]; one invocation per output element.
// An id outside [0, V) yields a zero row instead of an out-of-bounds read
// (backend.h requires valid ids; this only keeps a bad caller from reading
// another tensor's memory).
// A table too large for one binding is bound in row ranges [v0, v0 + vn),
// one dispatch each; a dispatch writes only the elements whose id falls in
// its range, and the range starting at 0 also writes the zero rows.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer Ids { int ids[]; };
layout(set = 0, binding = 1, std430) readonly buffer Table { float table[]; };
layout(set = 0, binding = 2, std430) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint off_ids, off_table, off_out;
    uint T, V, D, v0, vn;
} pc;

void main()
{
    OPS_FOR(e, pc.T * pc.D) {
        uint t = e / pc.D, d = e - t * pc.D;
        int id = ids[pc.off_ids + t];
        if (id >= int(pc.v0) && uint(id) - pc.v0 < pc.vn)
            outv[pc.off_out + e] = table[pc.off_table + (uint(id) - pc.v0) * pc.D + d];
        else if (pc.v0 == 0u && (id < 0 || uint(id) >= pc.V))
            outv[pc.off_out + e] = 0.0f;
    }
}
