/* Device memory: tensors are sub-allocated from large blocks, each one
 * VkDeviceMemory bound to one VkBuffer, so a tensor is (buffer, offset) and
 * vkAllocateMemory runs once per block, not per tensor.
 *
 * Invariants:
 *  1. Every allocation starts at a multiple of the device's storage-buffer
 *     offset alignment (el_vk_device.align) and its size is rounded up to
 *     it, so any allocation can be bound at its start.
 *  2. A block's free list is sorted by offset and holds no two adjacent
 *     ranges (el_vk_alloc_free coalesces); used + free = block size.
 *  3. On unified-memory devices (integrated GPUs, lavapipe) blocks are
 *     host-visible, device-local and coherent and stay mapped: transfers are
 *     memcpy. Elsewhere (or with EDGELOOP_VK_FORCE_STAGING=1) blocks are
 *     device-local and transfers go through one host-visible staging buffer
 *     with a one-shot copy command, in chunks of its size.
 *  4. Transfers assume the device is idle for the range (the backend syncs
 *     first); the staging path waits for its own copy before returning.
 */
#include "gpu/vk.h"

#include <string.h>

#include "base/alloc.h"

#define BLOCK_BYTES ((VkDeviceSize)64 << 20)
#define STAGING_BYTES ((VkDeviceSize)16 << 20)

typedef struct span {
    VkDeviceSize off, size;
} span;

typedef struct block {
    VkDeviceMemory mem;
    VkBuffer buffer;
    VkDeviceSize size, used;
    uint8_t *map;
    span *free;
    uint32_t nfree, cap;
    struct block *next;
} block;

struct el_vk_heap {
    el_vk_device *d;
    uint32_t type;            /* memory type of blocks */
    int mapped;               /* blocks are host-visible and mapped */
    uint32_t staging_type;
    block *blocks;
    uint32_t nblocks;
    VkBuffer staging;
    VkDeviceMemory staging_mem;
    uint8_t *staging_map;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    /* fills the texel bindings a dispatch does not use (vk.h note 5) */
    VkBuffer null_buf;
    VkDeviceMemory null_mem;
    VkBufferView null_view;
};

/* Index of a memory type allowed by BITS having all of WANT, or -1. */
static int find_type(el_vk_device *d, uint32_t bits, VkMemoryPropertyFlags want)
{
    VkPhysicalDeviceMemoryProperties mem;
    d->inst->vkGetPhysicalDeviceMemoryProperties(d->phys, &mem);
    for (uint32_t i = 0; i < mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (mem.memoryTypes[i].propertyFlags & want) == want)
            return (int)i;
    return -1;
}

static VkBufferCreateInfo buffer_info(VkDeviceSize size, VkBufferUsageFlags usage)
{
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = usage,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    return bci;
}

/* Creates a buffer of SIZE with memory of TYPE bound (and mapped when MAP).
 * Returns 0 or an error; outputs untouched on failure. */
static int make_buffer(el_vk_device *d, VkDeviceSize size, VkBufferUsageFlags usage,
                       uint32_t type, int map, VkBuffer *buf_out,
                       VkDeviceMemory *mem_out, uint8_t **map_out, el_error *err)
{
    int rc = 0;
    VkBuffer buf = VK_NULL_HANDLE;
    VkDeviceMemory mem = VK_NULL_HANDLE;
    void *p = NULL;
    VkBufferCreateInfo bci = buffer_info(size, usage);
    EL_VK(d->vkCreateBuffer(d->dev, &bci, NULL, &buf));
    VkMemoryRequirements req;
    d->vkGetBufferMemoryRequirements(d->dev, buf, &req);
    if (!(req.memoryTypeBits & (1u << type))) {
        rc = el_error_set(err, EL_EINTERNAL, "Vulkan buffer cannot use memory type %u", type);
        goto fail;
    }
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    EL_VK(d->vkAllocateMemory(d->dev, &mai, NULL, &mem));
    EL_VK(d->vkBindBufferMemory(d->dev, buf, mem, 0));
    if (map)
        EL_VK(d->vkMapMemory(d->dev, mem, 0, VK_WHOLE_SIZE, 0, &p));
    *buf_out = buf;
    *mem_out = mem;
    if (map_out)
        *map_out = p;
    return 0;
fail:
    if (buf)
        d->vkDestroyBuffer(d->dev, buf, NULL);
    if (mem)
        d->vkFreeMemory(d->dev, mem, NULL);
    return rc;
}

/* Tensor blocks may also be read as texel buffers (vk.h design note 5). */
static VkBufferUsageFlags tensor_usage(const el_vk_device *d)
{
    VkBufferUsageFlags u = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                           VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    if (d->texel_align)
        u |= VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
    return u;
}

int el_vk_heap_create(el_vk_device *d, el_vk_heap **out, el_error *err)
{
    int rc = 0;
    *out = NULL;
    VkBuffer probe = VK_NULL_HANDLE;
    el_vk_heap *h = el_calloc(1, sizeof *h);
    if (!h)
        return el_error_set(err, EL_ENOMEM, "out of memory for the Vulkan heap");
    h->d = d;
    VkBufferCreateInfo bci = buffer_info(BLOCK_BYTES, tensor_usage(d));
    EL_VK(d->vkCreateBuffer(d->dev, &bci, NULL, &probe));
    VkMemoryRequirements req;
    d->vkGetBufferMemoryRequirements(d->dev, probe, &req);
    d->vkDestroyBuffer(d->dev, probe, NULL);
    int type = -1;
    if (!d->staging) {
        type = find_type(d, req.memoryTypeBits,
                         VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
        if (type < 0)
            d->staging = 1;
    }
    if (type < 0)
        type = find_type(d, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (type < 0)
        type = find_type(d, req.memoryTypeBits, 0);
    if (type < 0) {
        rc = el_error_set(err, EL_EUNAVAIL, "no Vulkan memory type fits storage buffers");
        goto fail;
    }
    h->type = (uint32_t)type;
    h->mapped = !d->staging;

    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = d->queue_family,
    };
    EL_VK(d->vkCreateCommandPool(d->dev, &pci, NULL, &h->pool));
    VkCommandBufferAllocateInfo cai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = h->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    EL_VK(d->vkAllocateCommandBuffers(d->dev, &cai, &h->cmd));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    EL_VK(d->vkCreateFence(d->dev, &fci, NULL, &h->fence));
    if (d->staging) {
        VkBufferCreateInfo sci = buffer_info(STAGING_BYTES, VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                                            VK_BUFFER_USAGE_TRANSFER_DST_BIT);
        EL_VK(d->vkCreateBuffer(d->dev, &sci, NULL, &probe));
        d->vkGetBufferMemoryRequirements(d->dev, probe, &req);
        d->vkDestroyBuffer(d->dev, probe, NULL);
        probe = VK_NULL_HANDLE;
        type = find_type(d, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                                VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
        if (type < 0) {
            rc = el_error_set(err, EL_EUNAVAIL, "no host-visible Vulkan memory for staging");
            goto fail;
        }
        h->staging_type = (uint32_t)type;
        rc = make_buffer(d, STAGING_BYTES, sci.usage, h->staging_type, 1, &h->staging,
                         &h->staging_mem, &h->staging_map, err);
        if (rc)
            goto fail;
    }
    if (d->texel_align) {
        uint8_t *map = NULL;
        rc = make_buffer(d, 256, tensor_usage(d), h->type, h->mapped, &h->null_buf,
                         &h->null_mem, &map, err);
        if (rc)
            goto fail;
        VkBufferViewCreateInfo vi = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
            .buffer = h->null_buf,
            .format = VK_FORMAT_R32G32B32A32_SFLOAT,
            .offset = 0,
            .range = 16,
        };
        EL_VK(d->vkCreateBufferView(d->dev, &vi, NULL, &h->null_view));
    }
    *out = h;
    return 0;
fail:
    el_vk_heap_destroy(h);
    return rc;
}

static void block_destroy(el_vk_heap *h, block *b)
{
    el_vk_device *d = h->d;
    if (b->buffer)
        d->vkDestroyBuffer(d->dev, b->buffer, NULL);
    if (b->mem)
        d->vkFreeMemory(d->dev, b->mem, NULL);
    el_free(b->free);
    el_free(b);
}

void el_vk_heap_destroy(el_vk_heap *h)
{
    if (!h)
        return;
    el_vk_device *d = h->d;
    while (h->blocks) {
        block *b = h->blocks;
        h->blocks = b->next;
        block_destroy(h, b);
    }
    if (h->staging)
        d->vkDestroyBuffer(d->dev, h->staging, NULL);
    if (h->staging_mem)
        d->vkFreeMemory(d->dev, h->staging_mem, NULL);
    if (h->null_view)
        d->vkDestroyBufferView(d->dev, h->null_view, NULL);
    if (h->null_buf)
        d->vkDestroyBuffer(d->dev, h->null_buf, NULL);
    if (h->null_mem)
        d->vkFreeMemory(d->dev, h->null_mem, NULL);
    if (h->fence)
        d->vkDestroyFence(d->dev, h->fence, NULL);
    if (h->pool)
        d->vkDestroyCommandPool(d->dev, h->pool, NULL);
    el_free(h);
}

uint32_t el_vk_heap_blocks(const el_vk_heap *h)
{
    return h->nblocks;
}

VkBufferView el_vk_heap_null_texel(const el_vk_heap *h)
{
    return h->null_view;
}

/* Inserts span S at position I of B's free list. Returns 0 or EL_ENOMEM. */
static int free_insert(block *b, uint32_t i, span s)
{
    if (b->nfree == b->cap) {
        uint32_t cap = b->cap ? 2 * b->cap : 8;
        span *f = el_realloc(b->free, cap * sizeof *f);
        if (!f)
            return EL_ENOMEM;
        b->free = f;
        b->cap = cap;
    }
    memmove(&b->free[i + 1], &b->free[i], (b->nfree - i) * sizeof *b->free);
    b->free[i] = s;
    b->nfree++;
    return 0;
}

static int block_create(el_vk_heap *h, VkDeviceSize size, block **out, el_error *err)
{
    block *b = el_calloc(1, sizeof *b);
    if (!b)
        return el_error_set(err, EL_ENOMEM, "out of memory for a Vulkan block");
    b->size = size;
    int rc = make_buffer(h->d, size, tensor_usage(h->d), h->type, h->mapped, &b->buffer, &b->mem,
                         &b->map, err);
    if (rc) {
        el_free(b);
        return rc;
    }
    span all = {0, size};
    if (free_insert(b, 0, all)) {
        block_destroy(h, b);
        return el_error_set(err, EL_ENOMEM, "out of memory for a Vulkan block");
    }
    b->next = h->blocks;
    h->blocks = b;
    h->nblocks++;
    *out = b;
    return 0;
}

/* Begins the heap's one-shot command buffer (one_shot_end submits it and
 * waits). Returns 0 or an error. */
static int one_shot_begin(el_vk_heap *h, el_error *err)
{
    int rc = 0;
    el_vk_device *d = h->d;
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    EL_VK(d->vkBeginCommandBuffer(h->cmd, &bi));
    /* Earlier compute work (other submissions) must be done writing and
     * reading before the copy touches the range. */
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    d->vkCmdPipelineBarrier(h->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                                        VK_PIPELINE_STAGE_HOST_BIT,
                            VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return 0;
fail:
    return rc;
}

static int one_shot_end(el_vk_heap *h, el_error *err)
{
    int rc = 0;
    el_vk_device *d = h->d;
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                         VK_ACCESS_SHADER_WRITE_BIT,
    };
    d->vkCmdPipelineBarrier(h->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                            VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                            0, 1, &mb, 0, NULL, 0, NULL);
    EL_VK(d->vkEndCommandBuffer(h->cmd));
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &h->cmd,
    };
    EL_VK(d->vkQueueSubmit(d->queue, 1, &si, h->fence));
    d->submits++;
    EL_VK(d->vkWaitForFences(d->dev, 1, &h->fence, VK_TRUE, UINT64_MAX));
    EL_VK(d->vkResetFences(d->dev, 1, &h->fence));
    return 0;
fail:
    return rc;
}

int el_vk_alloc_create(el_vk_heap *h, VkDeviceSize size, el_vk_alloc *out,
                       el_error *err)
{
    memset(out, 0, sizeof *out);
    VkDeviceSize align = h->d->align;
    if (size == 0 || size > ((VkDeviceSize)1 << 42))
        return el_error_set(err, EL_ENOMEM, "Vulkan allocation of %llu bytes refused",
                            (unsigned long long)size);
    size = (size + align - 1) / align * align;
    block *b;
    uint32_t i = 0;
    for (b = h->blocks; b; b = b->next) {
        for (i = 0; i < b->nfree; i++)
            if (b->free[i].size >= size)
                break;
        if (i < b->nfree)
            break;
    }
    if (!b) {
        VkDeviceSize bs = size > BLOCK_BYTES ? (size + (1 << 20) - 1) / (1 << 20) * (1 << 20)
                                             : BLOCK_BYTES;
        int rc = block_create(h, bs, &b, err);
        if (rc)
            return rc;
        i = 0;
    }
    span *s = &b->free[i];
    VkDeviceSize off = s->off;
    s->off += size;
    s->size -= size;
    if (s->size == 0) {
        memmove(&b->free[i], &b->free[i + 1], (b->nfree - i - 1) * sizeof *b->free);
        b->nfree--;
    }
    b->used += size;
    out->block = b;
    out->buffer = b->buffer;
    out->offset = off;
    out->size = size;
    out->map = b->map ? b->map + off : NULL;
    if (out->map) {
        memset(out->map, 0, size);
        return 0;
    }
    /* Device-local memory is zeroed on the device (backend.h: new tensors
     * hold zeros). */
    int rc = one_shot_begin(h, err);
    if (rc == 0) {
        h->d->vkCmdFillBuffer(h->cmd, out->buffer, out->offset, size, 0);
        rc = one_shot_end(h, err);
    }
    if (rc) {
        el_vk_alloc_free(h, out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void el_vk_alloc_free(el_vk_heap *h, el_vk_alloc *a)
{
    block *b = a->block;
    if (!b)
        return;
    span s = {a->offset, a->size};
    uint32_t i = 0;
    while (i < b->nfree && b->free[i].off < s.off)
        i++;
    int merged = 0;
    if (i > 0 && b->free[i - 1].off + b->free[i - 1].size == s.off) {
        b->free[i - 1].size += s.size;
        merged = 1;
        if (i < b->nfree && s.off + s.size == b->free[i].off) {
            b->free[i - 1].size += b->free[i].size;
            memmove(&b->free[i], &b->free[i + 1], (b->nfree - i - 1) * sizeof *b->free);
            b->nfree--;
        }
    } else if (i < b->nfree && s.off + s.size == b->free[i].off) {
        b->free[i].off = s.off;
        b->free[i].size += s.size;
        merged = 1;
    }
    if (!merged && free_insert(b, i, s) != 0) {
        /* Out of memory for the free list: the range leaks until the block
         * goes, which is safe (it is simply never reused). */
        return;
    }
    b->used -= a->size;
    memset(a, 0, sizeof *a);
    /* Dedicated blocks of one large tensor go back to the driver as soon as
     * they are empty; standard blocks stay for reuse. */
    if (b->used == 0 && b->size > BLOCK_BYTES) {
        block **pp = &h->blocks;
        while (*pp != b)
            pp = &(*pp)->next;
        *pp = b->next;
        h->nblocks--;
        block_destroy(h, b);
    }
}

/* Copies BYTES between the host and A at OFFSET through the staging buffer,
 * chunk by chunk. UP: host -> device. */
static int staged(el_vk_heap *h, const el_vk_alloc *a, VkDeviceSize offset,
                  uint8_t *host, size_t bytes, int up, el_error *err)
{
    el_vk_device *d = h->d;
    while (bytes > 0) {
        size_t chunk = bytes < STAGING_BYTES ? bytes : (size_t)STAGING_BYTES;
        if (up)
            memcpy(h->staging_map, host, chunk);
        int rc = one_shot_begin(h, err);
        if (rc)
            return rc;
        VkBufferCopy region = {
            .srcOffset = up ? 0 : a->offset + offset,
            .dstOffset = up ? a->offset + offset : 0,
            .size = chunk,
        };
        if (up)
            d->vkCmdCopyBuffer(h->cmd, h->staging, a->buffer, 1, &region);
        else
            d->vkCmdCopyBuffer(h->cmd, a->buffer, h->staging, 1, &region);
        if ((rc = one_shot_end(h, err)) != 0)
            return rc;
        if (!up)
            memcpy(host, h->staging_map, chunk);
        host += chunk;
        offset += chunk;
        bytes -= chunk;
    }
    return 0;
}

int el_vk_upload(el_vk_heap *h, const el_vk_alloc *a, VkDeviceSize offset,
                 const void *src, size_t bytes, el_error *err)
{
    if (offset > a->size || bytes > a->size - offset)
        return el_error_set(err, EL_EINTERNAL, "upload of %zu bytes at %llu overruns %llu",
                            bytes, (unsigned long long)offset, (unsigned long long)a->size);
    if (bytes == 0)
        return 0;
    if (a->map) {
        memcpy(a->map + offset, src, bytes);
        return 0;
    }
    return staged(h, a, offset, (uint8_t *)(uintptr_t)src, bytes, 1, err);
}

int el_vk_download(el_vk_heap *h, const el_vk_alloc *a, VkDeviceSize offset,
                   void *dst, size_t bytes, el_error *err)
{
    if (offset > a->size || bytes > a->size - offset)
        return el_error_set(err, EL_EINTERNAL, "download of %zu bytes at %llu overruns %llu",
                            bytes, (unsigned long long)offset, (unsigned long long)a->size);
    if (bytes == 0)
        return 0;
    if (a->map) {
        memcpy(dst, a->map + offset, bytes);
        return 0;
    }
    return staged(h, a, offset, dst, bytes, 0, err);
}
