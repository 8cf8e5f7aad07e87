#version 450
#extension GL_GOOGLE_include_directive : require
// dst[i] = src[i] for i < n, bit for bit (f32 or i32).
#include "core_common.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0) writeonly buffer Dst { uint dst[]; };
layout(set = 0, binding = 1) readonly buffer Src { uint src[]; };
layout(push_constant) uniform Push { uint off_dst; uint off_src; uint n; } pc;

void main()
{
    CORE_FOR(i, pc.n)
        dst[pc.off_dst + i] = src[pc.off_src + i];
}
