#version 450
// For h = g * s(g) * u:  du = dh * g * s,  dg = dh * u * s * (1 + g * (1 - s)).
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer G { float g[]; };
layout(set = 0, binding = 1, std430) readonly buffer U { float u[]; };
layout(set = 0, binding = 2, std430) readonly buffer Dh { float dh[]; };
layout(set = 0, binding = 3, std430) writeonly buffer Dg { float dg[]; };
layout(set = 0, binding = 4, std430) writeonly buffer Du { float du[]; };

layout(push_constant) uniform Push {
    uint off_g, off_u, off_dh, off_dg, off_du;
    uint n;
} pc;

void main()
{
    OPS_FOR(i, pc.n) {
        float gv = g[pc.off_g + i], uv = u[pc.off_u + i];
        float d = dh[pc.off_dh + i];
        float s = ops_sigmoid(gv);
        du[pc.off_du + i] = d * gv * s;
        dg[pc.off_dg + i] = d * uv * s * (1.0f + gv * (1.0f - s));
    }
}
