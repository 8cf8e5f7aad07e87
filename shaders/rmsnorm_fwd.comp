#version 450
// y[t] = x[t] * rstd[t] * w, rstd[t] = 1 / sqrt(mean(x[t]^2) + eps).
// One invocation per row: the sum of squares stays in one register chain.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(set = 0, binding = 1, std430) readonly buffer W { float w[]; };
layout(set = 0, binding = 2, std430) writeonly buffer Y { float y[]; };
layout(set = 0, binding = 3, std430) writeonly buffer Rstd { float rstd[]; };

layout(push_constant) uniform Push {
    uint off_x, off_w, off_y, off_rstd;
    uint T, D;
    float eps;
} pc;

void main()
{
    OPS_FOR(t, pc.T) {
        uint xr = pc.off_x + t * pc.D, yr = pc.off_y + t * pc.D;
        float ss = 0.0f;
        for (uint d = 0u; d < pc.D; d++) {
            float v = x[xr + d];
            ss += v * v;
        }
        float r = inversesqrt(ss / float(pc.D) + pc.eps);
        rstd[pc.off_rstd + t] = r;
        for (uint d = 0u; d < pc.D; d++)
            y[yr + d] = x[xr + d] * r * w[pc.off_w + d];
    }
}
