#version 450
// h = silu(g) * u = g * sigmoid(g) * u, elementwise.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer G { float g[]; };
layout(set = 0, binding = 1, std430) readonly buffer U { float u[]; };
layout(set = 0, binding = 2, std430) writeonly buffer Hb { float h[]; };

layout(push_constant) uniform Push {
    uint off_g, off_u, off_h;
    uint n;
} pc;

void main()
{
    OPS_FOR(i, pc.n) {
        float gv = g[pc.off_g + i];
        h[pc.off_h + i] = gv * ops_sigmoid(gv) * u[pc.off_u + i];
    }
}
