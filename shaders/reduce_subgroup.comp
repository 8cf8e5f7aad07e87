#version 450
#extension GL_GOOGLE_include_directive : require
// Reduction with subgroup arithmetic: one value per subgroup, then the first
// subgroup folds those. Used when the device supports subgroup arithmetic in
// compute shaders and EDGELOOP_VK_DISABLE_SUBGROUP is not set.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "reduce.glsl"

float subgroup_combine(float v)
{
    return OP == 1 ? subgroupMax(v) : subgroupAdd(v);
}

float reduce_group(float v)
{
    float s = subgroup_combine(v);
    if (subgroupElect())
        partial[gl_SubgroupID] = s;
    barrier();
    if (gl_SubgroupID == 0) {
        float w = identity();
        for (uint i = gl_SubgroupInvocationID; i < gl_NumSubgroups; i += gl_SubgroupSize)
            w = combine(w, partial[i]);
        s = subgroup_combine(w);
    }
    return s;
}
