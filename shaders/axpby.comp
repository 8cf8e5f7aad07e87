#version 450
#extension GL_GOOGLE_include_directive : require
// y = alpha * x + beta * y. beta == 0 overwrites y (BLAS convention), so
// garbage or NaN in y does not leak into the result.
#include "core_common.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) buffer Y { float y[]; };
layout(push_constant) uniform Push {
    uint off_x; uint off_y; uint n; float alpha; float beta;
} pc;

void main()
{
    CORE_FOR(i, pc.n) {
        float r = pc.alpha * x[pc.off_x + i];
        if (pc.beta != 0.0)
            r += pc.beta * y[pc.off_y + i];
        y[pc.off_y + i] = r;
    }
}
