/* Internal API of the vulkan backend, shared by vulkan.c (runtime glue and
 * the core ops: matmul, fill, copy, axpby, add, reduce) and vulkan_ops.c (the
 * model ops). Tests include it for the backend's counters.
 *
 * Shader conventions (every shader dispatched through el_vk_dispatch):
 *  1. Storage buffers at set 0, binding i = views[i], i < EL_VK_MAX_VIEWS.
 *     Declare them as `float` (or `int`/`uint`) runtime arrays; a binding may
 *     start before the view (offset alignment), so never index from 0.
 *  2. The push-constant block starts with one `uint` per view: the element
 *     offset of view i inside its binding. The caller's PUSH bytes follow at
 *     byte 4 * nviews. Use only 4-byte scalars (uint, int, float) in the
 *     block so std430 adds no padding:
 *         layout(push_constant) uniform Push {
 *             uint off_x; uint off_y;      // filled by el_vk_dispatch
 *             uint n; float alpha;         // the caller's PUSH
 *         } pc;
 *     4 * nviews + push_size <= EL_VK_MAX_PUSH (128, the Vulkan minimum).
 *  3. Specialization constants ids 0.. come from el_vk_kernel.spec; use
 *     local_size_x_id = 0 etc. for workgroup sizes that depend on limits.
 *  4. Workgroup counts are limited per dimension (caps.max_groups, at least
 *     65535): elementwise shaders should loop with a grid stride
 *     (i += gl_NumWorkGroups.x * gl_WorkGroupSize.x) so any n works.
 *  5. Barriers are inserted by el_vk_dispatch from WRITE_MASK (bit i set =
 *     the shader writes view i): a dispatch that reads or writes a range an
 *     earlier dispatch of the same command buffer wrote (or writes a range an
 *     earlier one read) gets a compute->compute memory barrier first.
 *     Independent dispatches run without barriers.
 *  6. A view larger than caps.max_view_elems cannot be bound in one range
 *     (maxStorageBufferRange or $EDGELOOP_VK_MAX_BINDING); el_vk_dispatch
 *     fails with EL_EUNAVAIL then, so ops split such views themselves (the
 *     elementwise ops and matmul in vulkan.c do).
 *  8. A kernel's TEXEL_MASK bit i (i < EL_VK_TEXELS) also binds view i as a
 *     uniform texel buffer of vec4 at binding EL_VK_MAX_VIEWS + i (declare
 *     it `uniform samplerBuffer`, read it with texelFetch at the view's
 *     offset / 4), for devices where caps.max_texel_elems is not 0. The
 *     view must be read-only, its offset and length multiples of 4 and its
 *     length at most caps.max_texel_elems. Both bindings start at the same
 *     place, so the offset in the push block serves both. On llvmpipe a
 *     texel fetch is a vector gather, a storage load a per-lane loop
 *     (docs/decisions.md 17).
 *  7. Inside el_nn_graph_begin/end the dispatch is hashed (shader, spec,
 *     views' physical ranges, push bytes, group counts) for the replay check
 *     of backend.h invariant 4; an op must issue every dispatch through
 *     el_vk_dispatch and nothing else, and must not read tensors back.
 */
#ifndef EL_NN_VULKAN_IMPL_H
#define EL_NN_VULKAN_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nn/backend_impl.h"

#define EL_VK_MAX_VIEWS 8
#define EL_VK_MAX_PUSH 128
#define EL_VK_MAX_SPEC 8

/* A shader plus its specialization constants (ids 0 .. nspec-1). */
typedef struct el_vk_kernel {
    const char *shader;   /* name in the embedded shader table ("fill") */
    uint32_t nspec;
    uint32_t spec[EL_VK_MAX_SPEC];
    uint32_t texel_mask;  /* views also bound as texel buffers (note 8) */
} el_vk_kernel;

/* What the device allows, read from its limits and features (after the
 * EDGELOOP_VK_DISABLE_* switches). */
typedef struct el_vk_caps {
    uint32_t max_groups[3];       /* maxComputeWorkGroupCount */
    uint32_t max_invocations;     /* maxComputeWorkGroupInvocations */
    uint32_t max_local[3];        /* maxComputeWorkGroupSize */
    uint32_t max_shared_bytes;    /* maxComputeSharedMemorySize */
    uint32_t subgroup_size;       /* 0 when unknown */
    int subgroup_arith;           /* subgroupAdd/Max usable in compute */
    int fp16;                     /* shaderFloat16 + 16-bit storage */
    int is_cpu;                   /* a software rasterizer (lavapipe) */
    size_t max_view_elems;        /* largest view one binding can hold */
    size_t max_texel_elems;       /* largest texel view in floats (0 =
                                     no texel bindings, note 8) */
} el_vk_caps;

/* Counters for tests and --profile. */
typedef struct el_vk_stats {
    uint32_t validation_messages; /* validation layer warnings + errors */
    uint32_t pipelines_created;   /* pipelines built in this process */
    uint32_t pipelines_compiled;  /* of those, not served by the cache
                                     (creation feedback; = created when the
                                     driver gives no feedback) */
    int cache_feedback;           /* 1 when the driver reports cache hits */
    int cache_loaded;             /* 1 when a disk cache file was accepted */
    int cache_rejected;           /* 1 when a disk cache file was refused */
    size_t cache_bytes;           /* size of the accepted data */
    uint32_t submits;             /* queue submissions */
    uint32_t graphs_recorded;
    uint32_t graphs_replayed;
    int staging;                  /* 1 when transfers go through staging */
    uint32_t memory_blocks;       /* VkDeviceMemory blocks tensors share */
    const char *matmul;           /* "regblock" or "tiled" */
    uint32_t texel_dispatches;    /* dispatches that bound a texel view */
} el_vk_stats;

/* Issues one dispatch of K over VIEWS (binding i = VIEWS[i]) with PUSH
 * appended after the view offsets, GX*GY*GZ workgroups. Records into the
 * current command stream (or checks it against the recorded graph).
 * Returns 0, EL_ENOTFOUND (no such shader), EL_EUNAVAIL (a view too large to
 * bind, too many groups), EL_EINTERNAL ("graph changed", Vulkan failure) or
 * EL_ENOMEM, with ERR set. */
int el_vk_dispatch(el_backend *be, const el_vk_kernel *k, const el_view *views,
                   uint32_t nviews, uint32_t write_mask, const void *push,
                   uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz,
                   el_error *err);

/* The device's capabilities. Borrowed from BE (a vulkan backend). */
const el_vk_caps *el_vk_backend_caps(el_backend *be);
/* Fills *OUT with the counters of BE (a vulkan backend). */
void el_vk_backend_stats(el_backend *be, el_vk_stats *out);
/* Prints the per-shader time profile (backend created with profile = 1) to
 * OUT. Returns 0, or EL_EUNAVAIL when profiling is off or unsupported. */
int el_vk_profile_print(el_backend *be, FILE *out, el_error *err);

static inline uint32_t el_vk_div_up(size_t n, uint32_t d)
{
    return (uint32_t)((n + d - 1) / d);
}

/* Model ops, defined in vulkan_ops.c (gpu-ops). Same signatures as the
 * entries of el_backend_ops. */
int el_vk_op_embedding(el_backend *be, el_view ids, el_view table, int T, int V,
                       int D, el_view out, el_error *err);
int el_vk_op_rmsnorm_fwd(el_backend *be, el_view x, el_view w, int T, int D,
                         float eps, el_view y, el_view rstd, el_error *err);
int el_vk_op_rmsnorm_bwd(el_backend *be, el_view x, el_view w, el_view rstd,
                         el_view dy, int T, int D, float beta, el_view dx,
                         el_error *err);
int el_vk_op_rope(el_backend *be, el_view x, int B, int S, int H, int hd,
                  float theta, int inverse, el_error *err);
int el_vk_op_attention_fwd(el_backend *be, el_view q, el_view k, el_view v,
                           int B, int S, int H, int KVH, int hd, float scale,
                           el_view o, el_view p, el_error *err);
int el_vk_op_attention_bwd(el_backend *be, el_view q, el_view k, el_view v,
                           el_view p, el_view dout, int B, int S, int H,
                           int KVH, int hd, float scale, el_view dq,
                           el_view dk, el_view dv, el_error *err);
int el_vk_op_swiglu_fwd(el_backend *be, el_view g, el_view u, el_view h,
                        el_error *err);
int el_vk_op_swiglu_bwd(el_backend *be, el_view g, el_view u, el_view dh,
                        el_view dg, el_view du, el_error *err);
int el_vk_op_cross_entropy(el_backend *be, el_view logits, el_view targets,
                           int T, int V, float grad_scale, el_view loss,
                           el_view dlogits, el_error *err);
int el_vk_op_adamw(el_backend *be, el_view p, el_view g, el_view m, el_view v,
                   el_view hp, el_view gnorm_sq, el_error *err);

#endif
