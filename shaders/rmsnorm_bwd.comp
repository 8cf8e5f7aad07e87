#version 450
// dx = beta * dx + J^T dy for y = x * r * w, r = (mean(x^2) + eps)^-1/2:
//   dx_i = r * w_i * dy_i - x_i * r^3 / D * sum_j dy_j * w_j * x_j.
// beta == 0 overwrites dx without reading it (BLAS convention), so an
// uninitialised dx never leaks NaN into the result.
#extension GL_GOOGLE_include_directive : require
#include "ops_common.glsl"

layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(set = 0, binding = 1, std430) readonly buffer W { float w[]; };
layout(set = 0, binding = 2, std430) readonly buffer Rstd { float rstd[]; };
layout(set = 0, binding = 3, std430) readonly buffer Dy { float dy[]; };
layout(set = 0, binding = 4, std430) buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
    uint off_x, off_w, off_rstd, off_dy, off_dx;
    uint T, D;
    float beta;
} pc;

void main()
{
    OPS_FOR(t, pc.T) {
        uint xr = pc.off_x + t * pc.D, dyr = pc.off_dy + t * pc.D;
        uint dxr = pc.off_dx + t * pc.D;
        float r = rstd[pc.off_rstd + t];
        float dot_dwx = 0.0f;
        for (uint d = 0u; d < pc.D; d++)
            dot_dwx += dy[dyr + d] * w[pc.off_w + d] * x[xr + d];
        float c = dot_dwx * r * r * r / float(pc.D);
        for (uint d = 0u; d < pc.D; d++) {
            float g = r * w[pc.off_w + d] * dy[dyr + d] - x[xr + d] * c;
            if (pc.beta != 0.0f)
                g += pc.beta * dx[dxr + d];
            dx[dxr + d] = g;
        }
    }
}
