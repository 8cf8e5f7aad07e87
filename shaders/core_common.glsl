// Shared pieces of the core shaders (fill, copy, axpby, add, reduce, matmul);
// host side in agent/nn/vulkan.c, conventions in agent/nn/vulkan_impl.h:
// one storage buffer per view, push constants start with the element offset
// of each view, workgroup sizes come from specialization constant 0 (and 1).

#ifndef CORE_COMMON_GLSL
#define CORE_COMMON_GLSL

// Grid-stride loop: the host caps the group count at the device limit, so
// every elementwise shader covers any n.
#define CORE_FOR(i, count) \
    for (uint i = gl_GlobalInvocationID.x; i < (count); \
         i += gl_NumWorkGroups.x * gl_WorkGroupSize.x)

#endif
