#version 450
#extension GL_GOOGLE_include_directive : require
// c = a + b; c may alias a or b element for element.
#include "core_common.glsl"

layout(local_size_x_id = 0) in;
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform Push { uint off_a; uint off_b; uint off_c; uint n; } pc;

void main()
{
    CORE_FOR(i, pc.n)
        c[pc.off_c + i] = a[pc.off_a + i] + b[pc.off_b + i];
}
