#version 450
#extension GL_GOOGLE_include_directive : require
// Reduction with a shared-memory tree (no subgroup operations needed).
#include "reduce.glsl"

float reduce_group(float v)
{
    uint t = gl_LocalInvocationIndex;
    partial[t] = v;
    barrier();
    for (uint s = LOCAL / 2; s > 0; s >>= 1) {
        if (t < s)
            partial[t] = combine(partial[t], partial[t + s]);
        barrier();
    }
    return partial[0];
}
