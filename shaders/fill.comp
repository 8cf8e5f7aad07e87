#version 450
#extension GL_GOOGLE_include_directive : require
// x[i] = value for i < n. The value travels as raw bits so one shader fills
// f32 and i32 tensors.
#include "core_common.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0) writeonly buffer X { uint x[]; };
layout(push_constant) uniform Push { uint off_x; uint n; uint bits; } pc;

void main()
{
    CORE_FOR(i, pc.n)
        x[pc.off_x + i] = pc.bits;
}
