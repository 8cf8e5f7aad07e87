// Two-pass reduction (sum, max, sum of squares) over n floats, shared by
// reduce.comp (shared-memory tree) and reduce_subgroup.comp (subgroup
// arithmetic, then a tree over the subgroups' results).
//
// Pass 0 (STAGE = 0): workgroup g folds x[g*L + t + k*G*L] into one value per
//   workgroup, written to y[off_y + g] (the host's scratch buffer).
// Pass 1 (STAGE = 1): one workgroup folds the G partial values and writes
//   y[off_y] = accumulate ? combine(y[off_y], r) : r.
// The host runs pass 1 with OP = SUM after a SUMSQ pass 0.

#include "core_common.glsl"

layout(constant_id = 0) const uint LOCAL = 256;
layout(constant_id = 1) const uint OP = 0;      // 0 sum, 1 max, 2 sumsq
layout(constant_id = 2) const uint STAGE = 0;

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) buffer Y { float y[]; };
layout(push_constant) uniform Push {
    uint off_x; uint off_y; uint n; uint accumulate;
} pc;

shared float partial[LOCAL];

float identity()
{
    return OP == 1 ? uintBitsToFloat(0xff800000u) : 0.0;
}

float combine(float a, float b)
{
    return OP == 1 ? max(a, b) : a + b;
}

float load(uint i)
{
    float v = x[pc.off_x + i];
    return OP == 2 ? v * v : v;
}

float reduce_group(float v);

void main()
{
    float v = identity();
    CORE_FOR(i, pc.n)
        v = combine(v, load(i));
    float r = reduce_group(v);
    if (gl_LocalInvocationIndex == 0) {
        if (STAGE == 0)
            y[pc.off_y + gl_WorkGroupID.x] = r;
        else
            y[pc.off_y] = pc.accumulate != 0 ? combine(y[pc.off_y], r) : r;
    }
}
