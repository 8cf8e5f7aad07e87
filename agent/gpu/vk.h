/* The Vulkan runtime: loader, instance and device (device.c), memory and
 * buffers (memory.c), pipelines and the persisted pipeline cache
 * (pipeline.c), command streams (command.c). The backend in nn/vulkan.c is
 * its only user besides `edgeloop devices`.
 *
 * Design:
 *  1. No Vulkan symbol is linked: the loader is dlopen()ed (libvulkan.so.1 or
 *     $EDGELOOP_VK_LOADER) and every entry point comes from
 *     vkGetInstanceProcAddr / vkGetDeviceProcAddr into the tables below, so
 *     a machine without a loader or driver runs everything else.
 *  2. Vulkan 1.1 core is the only requirement. Optional features are
 *     detected into el_vk_device_info and may be forced off by environment
 *     switches (EDGELOOP_VK_DISABLE_FP16, EDGELOOP_VK_DISABLE_SUBGROUP,
 *     EDGELOOP_VK_DISABLE_TEXEL, EDGELOOP_VK_MAX_BINDING=bytes) so every
 *     fallback runs on lavapipe too.
 *  5. Besides EL_VK_BINDINGS storage buffers, the shared descriptor layout
 *     has EL_VK_TEXELS uniform texel buffers (vec4 of fp32) when the device
 *     supports them: binding EL_VK_BINDINGS + i reads the range of binding i
 *     through the texture path. On llvmpipe a texel fetch is a vector
 *     gather, while a storage-buffer load is a per-lane loop with a branch
 *     per component, so the register-blocked matmul reads its operands
 *     there (docs/decisions.md 17).
 *  3. With $EDGELOOP_VK_VALIDATION=1 the Khronos validation layer is enabled
 *     and a debug messenger counts (and prints) every warning and error; the
 *     count is a failure for the tests.
 *  4. Every Vulkan call that can fail goes through EL_VK(), which logs the
 *     VkResult name with file:line and jumps to `fail:`.
 */
#ifndef EL_GPU_VK_H
#define EL_GPU_VK_H

#define VK_NO_PROTOTYPES
#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "base/error.h"

/* ---- entry points ---- */

#define EL_VK_INSTANCE_FNS(X) \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) \
    X(vkGetPhysicalDeviceProperties) X(vkGetPhysicalDeviceProperties2) \
    X(vkGetPhysicalDeviceFeatures2) X(vkGetPhysicalDeviceMemoryProperties) \
    X(vkGetPhysicalDeviceQueueFamilyProperties) \
    X(vkGetPhysicalDeviceFormatProperties) \
    X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice) \
    X(vkGetDeviceProcAddr)

#define EL_VK_DEVICE_FNS(X) \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkDeviceWaitIdle) \
    X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements) \
    X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) \
    X(vkMapMemory) X(vkUnmapMemory) \
    X(vkCreateShaderModule) X(vkDestroyShaderModule) \
    X(vkCreateBufferView) X(vkDestroyBufferView) \
    X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
    X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) \
    X(vkCreatePipelineCache) X(vkDestroyPipelineCache) \
    X(vkGetPipelineCacheData) X(vkCreateComputePipelines) \
    X(vkDestroyPipeline) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) \
    X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkResetDescriptorPool) \
    X(vkCreateCommandPool) X(vkDestroyCommandPool) \
    X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers) \
    X(vkBeginCommandBuffer) X(vkEndCommandBuffer) \
    X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) \
    X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) \
    X(vkCmdWriteTimestamp) X(vkCmdResetQueryPool) \
    X(vkCreateQueryPool) X(vkDestroyQueryPool) X(vkGetQueryPoolResults) \
    X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences) \
    X(vkQueueSubmit)

#define EL_VK_DECLARE_FN(name) PFN_##name name;

/* Name of R, e.g. "VK_ERROR_DEVICE_LOST". Static storage. */
const char *el_vk_result_name(VkResult r);

/* Runs CALL; on failure logs its VkResult with file:line, sets ERR (an
 * el_error * in scope), stores EL_EINTERNAL in RC (an int in scope) and jumps
 * to fail:. */
#define EL_VK(call) \
    do { \
        VkResult vkr_ = (call); \
        if (vkr_ != VK_SUCCESS) { \
            rc = el_error_set(err, vkr_ == VK_ERROR_OUT_OF_DEVICE_MEMORY || \
                                   vkr_ == VK_ERROR_OUT_OF_HOST_MEMORY ? \
                                   EL_ENOMEM : EL_EINTERNAL, \
                              "%s failed: %s (%s:%d)", #call, \
                              el_vk_result_name(vkr_), __FILE__, __LINE__); \
            goto fail; \
        } \
    } while (0)

/* ---- instance (device.c) ---- */

typedef struct el_vk_instance {
    void *lib;                              /* dlopen handle */
    PFN_vkGetInstanceProcAddr gipa;
    VkInstance instance;
    uint32_t api_version;                   /* of the instance */
    int validation;                         /* layer enabled */
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    uint32_t validation_messages;           /* warnings + errors seen */
    EL_VK_INSTANCE_FNS(EL_VK_DECLARE_FN)
} el_vk_instance;

/* Opens the loader and creates an instance (with the validation layer and a
 * counting messenger when $EDGELOOP_VK_VALIDATION=1). Returns 0 and *OUT
 * (caller destroys), or EL_EUNAVAIL with one sentence saying why Vulkan is
 * unavailable (no loader, no driver, no 1.1 instance); *OUT is NULL then. */
int el_vk_instance_create(el_vk_instance **out, el_error *err);
void el_vk_instance_destroy(el_vk_instance *inst);   /* accepts NULL */

typedef struct el_vk_device_info {
    uint32_t index;                 /* in vkEnumeratePhysicalDevices order */
    char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    VkPhysicalDeviceType type;
    uint32_t vendor_id, device_id, api_version, driver_version;
    uint8_t cache_uuid[VK_UUID_SIZE];   /* pipelineCacheUUID */
    uint64_t device_local_bytes;        /* largest device-local heap */
    int unified;                        /* a host-visible device-local,
                                           coherent memory type exists and
                                           the device is not discrete */
    int vk11;                           /* apiVersion >= 1.1 */
    int compute_queue;                  /* has a compute queue family */
    uint32_t subgroup_size;
    int subgroup_arith;                 /* arithmetic ops in compute */
    int subgroup_size_control;          /* VK_EXT_subgroup_size_control */
    int fp16;                           /* shaderFloat16 */
    int storage16;                      /* storageBuffer16BitAccess */
    int int8;                           /* shaderInt8 */
    int coopmat;                        /* VK_KHR/NV_cooperative_matrix */
    int creation_feedback;              /* VK_EXT_pipeline_creation_feedback */
    int texel_vec4;                     /* uniform texel buffers of
                                           R32G32B32A32_SFLOAT */
    VkPhysicalDeviceLimits limits;
} el_vk_device_info;

/* Lists the physical devices. Returns 0 and *OUT (caller el_free's, NULL
 * when *COUNT is 0), or an error with *OUT NULL. */
int el_vk_list_devices(el_vk_instance *inst, el_vk_device_info **out,
                       uint32_t *count, el_error *err);
/* "discrete", "integrated", "virtual", "cpu" or "other". Static. */
const char *el_vk_type_name(VkPhysicalDeviceType type);
/* Index of the device to use among INFOS: REQUESTED when >= 0, else
 * $EDGELOOP_VK_DEVICE when set, else the best by type (discrete >
 * integrated > virtual > cpu) among usable ones. Returns the index or a
 * negative EL_E* with ERR set (no usable device, bad index). */
int el_vk_choose_device(const el_vk_device_info *infos, uint32_t count,
                        int requested, el_error *err);
/* 1 when TYPE is a real GPU (not a CPU rasterizer). */
int el_vk_type_is_gpu(VkPhysicalDeviceType type);

/* ---- device (device.c) ---- */

typedef struct el_vk_heap el_vk_heap;
typedef struct el_vk_pipes el_vk_pipes;

typedef struct el_vk_device {
    el_vk_instance *inst;           /* owned */
    VkPhysicalDevice phys;
    el_vk_device_info info;         /* after the DISABLE switches */
    VkDevice dev;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t timestamp_bits;        /* 0 = no timestamps on this queue */
    float timestamp_period;         /* ns per tick */
    VkDeviceSize max_binding;       /* bytes one descriptor may cover */
    VkDeviceSize align;             /* storage buffer offset alignment */
    VkDeviceSize texel_align;       /* texel buffer offset alignment, a
                                       multiple of align (0 = no texel
                                       bindings, design note 5: Vulkan
                                       requires the format, so only in
                                       theory); info.texel_vec4 says
                                       whether to use them */
    int staging;                    /* transfers go through staging */
    uint32_t submits;               /* queue submissions so far */
    el_vk_heap *heap;               /* memory.c */
    el_vk_pipes *pipes;             /* pipeline.c */
    EL_VK_DEVICE_FNS(EL_VK_DECLARE_FN)
} el_vk_device;

/* Opens Vulkan and creates a logical device on the chosen physical device
 * (see el_vk_choose_device; REQUESTED -1 = choose), its memory heap and its
 * pipeline set with the disk cache in CACHE_DIR (NULL = default). Returns 0
 * and *OUT (caller destroys) or EL_EUNAVAIL / EL_EINTERNAL with ERR set. */
int el_vk_device_create(int requested, const char *cache_dir,
                        el_vk_device **out, el_error *err);
void el_vk_device_destroy(el_vk_device *d);   /* accepts NULL */

/* ---- memory (memory.c) ---- */

/* A sub-allocation: BYTES at OFFSET of BUFFER (one VkBuffer per block). */
typedef struct el_vk_alloc {
    void *block;        /* opaque owner */
    VkBuffer buffer;
    VkDeviceSize offset, size;
    uint8_t *map;       /* host pointer to offset when mapped, else NULL */
} el_vk_alloc;

int el_vk_heap_create(el_vk_device *d, el_vk_heap **out, el_error *err);
void el_vk_heap_destroy(el_vk_heap *h);   /* accepts NULL */
/* Allocates SIZE bytes (zeroed) aligned for storage-buffer binding. Returns
 * 0 and *OUT, or EL_ENOMEM with ERR set and *OUT zeroed. */
int el_vk_alloc_create(el_vk_heap *h, VkDeviceSize size, el_vk_alloc *out,
                       el_error *err);
void el_vk_alloc_free(el_vk_heap *h, el_vk_alloc *a);   /* zeroed a is ok */
/* Host <-> device copies of BYTES at byte OFFSET of A. The device must be
 * idle for A (the caller syncs first). Direct memcpy on unified memory,
 * staging copies otherwise. Return 0 or an error. */
int el_vk_upload(el_vk_heap *h, const el_vk_alloc *a, VkDeviceSize offset,
                 const void *src, size_t bytes, el_error *err);
int el_vk_download(el_vk_heap *h, const el_vk_alloc *a, VkDeviceSize offset,
                   void *dst, size_t bytes, el_error *err);
/* Number of VkDeviceMemory blocks allocated (sub-allocation evidence). */
uint32_t el_vk_heap_blocks(const el_vk_heap *h);
/* A 16-byte texel view for texel bindings a dispatch leaves unused
 * (VK_NULL_HANDLE when the device has no texel bindings). */
VkBufferView el_vk_heap_null_texel(const el_vk_heap *h);

/* ---- pipelines (pipeline.c) ---- */

#define EL_VK_BINDINGS 8
#define EL_VK_TEXELS 2
#define EL_VK_PUSH_BYTES 128
#define EL_VK_SPECS 8

typedef struct el_vk_pipeline {
    VkPipeline pipeline;
    char shader[48];
    uint32_t nspec;
    uint32_t spec[EL_VK_SPECS];
} el_vk_pipeline;

typedef struct el_vk_pipe_stats {
    uint32_t created, compiled;
    int feedback, cache_loaded, cache_rejected;
    size_t cache_bytes;
} el_vk_pipe_stats;

/* Loads the disk cache (ignoring one from another driver/device, truncated
 * or corrupt) and creates the shared descriptor and pipeline layouts.
 * Returns 0 and *OUT or an error. */
int el_vk_pipes_create(el_vk_device *d, const char *cache_dir,
                       el_vk_pipes **out, el_error *err);
/* Writes the cache back (atomically) when it changed, then frees all. */
void el_vk_pipes_destroy(el_vk_pipes *p);   /* accepts NULL */
/* The pipeline of SHADER specialized with SPEC[NSPEC], created on first use.
 * Returns 0 and *OUT (borrowed, lives as long as P), EL_ENOTFOUND for an
 * unknown shader or a Vulkan error. */
int el_vk_pipeline_get(el_vk_pipes *p, const char *shader,
                       const uint32_t *spec, uint32_t nspec,
                       const el_vk_pipeline **out, el_error *err);
VkPipelineLayout el_vk_pipes_layout(const el_vk_pipes *p);
VkDescriptorSetLayout el_vk_pipes_set_layout(const el_vk_pipes *p);
void el_vk_pipes_stats(const el_vk_pipes *p, el_vk_pipe_stats *out);
/* Writes the cache file now. Returns 0 or an error. */
int el_vk_pipes_save(el_vk_pipes *p, el_error *err);
/* The cache file path for D in CACHE_DIR (NULL = default) into OUT. */
int el_vk_cache_path(const el_vk_device *d, const char *cache_dir, char *out,
                     size_t n, el_error *err);

/* ---- command streams (command.c) ---- */

/* A bound range of a buffer for one descriptor. TEXEL (i < EL_VK_TEXELS,
 * not written, OFFSET a multiple of texel_align) also binds it as a vec4
 * texel buffer at binding EL_VK_BINDINGS + i (design note 5). */
typedef struct el_vk_range {
    VkBuffer buffer;
    VkDeviceSize offset, size;
    int written;
    int texel;
} el_vk_range;

typedef struct el_vk_stream el_vk_stream;

/* A stream records dispatches into one command buffer (with the barriers
 * their ranges need), submits it once and can submit it again (replay).
 * PROFILE adds a timestamp after every dispatch when the queue has them. */
int el_vk_stream_create(el_vk_device *d, int profile, el_vk_stream **out,
                        el_error *err);
void el_vk_stream_destroy(el_vk_stream *s);   /* waits, accepts NULL */
/* Starts recording (resets the stream). */
int el_vk_stream_begin(el_vk_stream *s, el_error *err);
/* Records one dispatch. PIPE from el_vk_pipeline_get; RANGES[i] is binding
 * i; PUSH is the whole push-constant block. */
int el_vk_stream_dispatch(el_vk_stream *s, const el_vk_pipeline *pipe,
                          const el_vk_range *ranges, uint32_t nranges,
                          const void *push, uint32_t push_size, uint32_t gx,
                          uint32_t gy, uint32_t gz, el_error *err);
/* Ends recording. */
int el_vk_stream_end(el_vk_stream *s, el_error *err);
/* 1 while recording, 0 otherwise; number of recorded dispatches. */
int el_vk_stream_recording(const el_vk_stream *s);
uint32_t el_vk_stream_dispatches(const el_vk_stream *s);
/* Submits the recorded command buffer (again). Waits for the previous
 * submission of this stream first. Returns 0 or an error. */
int el_vk_stream_submit(el_vk_stream *s, el_error *err);
/* Waits until the last submission finished; then adds its timestamps to
 * the profile. Returns 0 or an error. */
int el_vk_stream_wait(el_vk_stream *s, el_error *err);

/* Per-shader time totals gathered by profiling streams. */
typedef struct el_vk_profile_entry {
    char shader[48];
    uint64_t count;
    double ns;
} el_vk_profile_entry;
/* The profile entries of S: *N of them, borrowed. */
const el_vk_profile_entry *el_vk_stream_profile(const el_vk_stream *s,
                                                uint32_t *n);

#endif
