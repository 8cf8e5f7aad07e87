/* Command streams: many dispatches recorded into one command buffer with the
 * barriers they need, submitted once, resubmitted for replay.
 *
 * States and transitions:
 *     idle --el_vk_stream_begin--> recording --el_vk_stream_end--> recorded
 *     recorded --el_vk_stream_submit--> recorded + pending
 *     pending --el_vk_stream_wait--> recorded (timestamps folded into the
 *     profile); el_vk_stream_begin from recorded waits and starts over.
 *
 * Invariants:
 *  1. Within a command buffer, a dispatch that reads or writes a range an
 *     earlier dispatch wrote, or writes a range an earlier dispatch read, is
 *     preceded by one compute->compute memory barrier; after a barrier the
 *     set of tracked ranges starts empty. Independent dispatches get none
 *     (llvmpipe runs them back to back).
 *  2. Every command buffer opens with a barrier that makes earlier
 *     submissions' shader and transfer writes and host writes visible, and
 *     closes with one that makes its shader writes visible to the host, so
 *     submissions compose in queue order and mapped reads after the fence
 *     see the results.
 *  3. A stream has at most one submission in flight; submit waits for the
 *     previous one, so a replayed command buffer is never pending twice.
 *  4. Descriptor sets live in the stream's pools until the next begin, so a
 *     recorded command buffer stays valid for every replay.
 */
#include "gpu/vk.h"

#include <string.h>

#include "base/alloc.h"

#define SETS_PER_POOL 256
#define MAX_QUERIES 4096

struct el_vk_stream {
    el_vk_device *d;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    int recording, recorded, pending;
    VkDescriptorPool *pools;
    uint32_t npools, pool_cap;
    uint32_t cur_pool, sets_in_cur;   /* allocation position since begin */
    el_vk_range *touched;
    uint32_t ntouched, touched_cap;
    uint32_t ndispatch;
    VkBufferView *views;            /* texel views recorded since begin */
    uint32_t nviews, views_cap;
    /* profiling */
    VkQueryPool query;
    uint32_t nqueries;
    const char **query_shader;      /* shader of query i (i >= 1) */
    el_vk_profile_entry *prof;
    uint32_t nprof, prof_cap;
};

int el_vk_stream_create(el_vk_device *d, int profile, el_vk_stream **out,
                        el_error *err)
{
    int rc = 0;
    *out = NULL;
    el_vk_stream *s = el_calloc(1, sizeof *s);
    if (!s)
        return el_error_set(err, EL_ENOMEM, "out of memory for a command stream");
    s->d = d;
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = d->queue_family,
    };
    EL_VK(d->vkCreateCommandPool(d->dev, &pci, NULL, &s->pool));
    VkCommandBufferAllocateInfo cai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = s->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    EL_VK(d->vkAllocateCommandBuffers(d->dev, &cai, &s->cmd));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    EL_VK(d->vkCreateFence(d->dev, &fci, NULL, &s->fence));
    if (profile && d->timestamp_bits) {
        VkQueryPoolCreateInfo qci = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = MAX_QUERIES,
        };
        EL_VK(d->vkCreateQueryPool(d->dev, &qci, NULL, &s->query));
        s->query_shader = el_calloc(MAX_QUERIES, sizeof *s->query_shader);
        if (!s->query_shader) {
            rc = el_error_set(err, EL_ENOMEM, "out of memory for the profile");
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    el_vk_stream_destroy(s);
    return rc;
}

/* The views of the last recording; the stream has waited for it. */
static void drop_views(el_vk_stream *s)
{
    for (uint32_t i = 0; i < s->nviews; i++)
        s->d->vkDestroyBufferView(s->d->dev, s->views[i], NULL);
    s->nviews = 0;
}

void el_vk_stream_destroy(el_vk_stream *s)
{
    if (!s)
        return;
    el_vk_device *d = s->d;
    if (s->pending)
        d->vkWaitForFences(d->dev, 1, &s->fence, VK_TRUE, UINT64_MAX);
    for (uint32_t i = 0; i < s->npools; i++)
        d->vkDestroyDescriptorPool(d->dev, s->pools[i], NULL);
    el_free(s->pools);
    drop_views(s);
    el_free(s->views);
    el_free(s->touched);
    el_free(s->query_shader);
    el_free(s->prof);
    if (s->query)
        d->vkDestroyQueryPool(d->dev, s->query, NULL);
    if (s->fence)
        d->vkDestroyFence(d->dev, s->fence, NULL);
    if (s->pool)
        d->vkDestroyCommandPool(d->dev, s->pool, NULL);
    el_free(s);
}

static void barrier(el_vk_stream *s, VkPipelineStageFlags src_stage,
                    VkAccessFlags src, VkPipelineStageFlags dst_stage, VkAccessFlags dst)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = src,
        .dstAccessMask = dst,
    };
    s->d->vkCmdPipelineBarrier(s->cmd, src_stage, dst_stage, 0, 1, &mb, 0, NULL, 0, NULL);
}

int el_vk_stream_begin(el_vk_stream *s, el_error *err)
{
    int rc = 0;
    el_vk_device *d = s->d;
    if (s->recording)
        return el_error_set(err, EL_EINTERNAL, "command stream is already recording");
    if ((rc = el_vk_stream_wait(s, err)) != 0)
        return rc;
    for (uint32_t i = 0; i < s->npools; i++)
        EL_VK(d->vkResetDescriptorPool(d->dev, s->pools[i], 0));
    drop_views(s);
    s->cur_pool = 0;
    s->sets_in_cur = 0;
    s->ntouched = 0;
    s->ndispatch = 0;
    s->recorded = 0;
    s->nqueries = 0;
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    EL_VK(d->vkBeginCommandBuffer(s->cmd, &bi));
    s->recording = 1;
    barrier(s, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                   VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    if (s->query) {
        d->vkCmdResetQueryPool(s->cmd, s->query, 0, MAX_QUERIES);
        d->vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, s->query, 0);
        s->nqueries = 1;
    }
    return 0;
fail:
    return rc;
}

static int overlaps(const el_vk_range *a, const el_vk_range *b)
{
    return a->buffer == b->buffer && a->offset < b->offset + b->size &&
           b->offset < a->offset + a->size;
}

/* A descriptor set from the stream's pools (a new pool when they are
 * full). Returns 0 and *OUT or an error. */
static int alloc_set(el_vk_stream *s, VkDescriptorSet *out, el_error *err)
{
    int rc = 0;
    el_vk_device *d = s->d;
    if (s->sets_in_cur == SETS_PER_POOL) {
        s->cur_pool++;
        s->sets_in_cur = 0;
    }
    if (s->cur_pool == s->npools) {
        if (s->npools == s->pool_cap) {
            uint32_t cap = s->pool_cap ? 2 * s->pool_cap : 4;
            VkDescriptorPool *p = el_realloc(s->pools, cap * sizeof *p);
            if (!p)
                return el_error_set(err, EL_ENOMEM, "out of memory for descriptor pools");
            s->pools = p;
            s->pool_cap = cap;
        }
        VkDescriptorPoolSize sizes[2] = {
            {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, SETS_PER_POOL * EL_VK_BINDINGS},
            {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, SETS_PER_POOL * EL_VK_TEXELS},
        };
        VkDescriptorPoolCreateInfo dpi = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
            .maxSets = SETS_PER_POOL,
            .poolSizeCount = d->texel_align ? 2 : 1,
            .pPoolSizes = sizes,
        };
        EL_VK(d->vkCreateDescriptorPool(d->dev, &dpi, NULL, &s->pools[s->npools]));
        s->npools++;
    }
    VkDescriptorSetLayout layout = el_vk_pipes_set_layout(d->pipes);
    VkDescriptorSetAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = s->pools[s->cur_pool],
        .descriptorSetCount = 1,
        .pSetLayouts = &layout,
    };
    EL_VK(d->vkAllocateDescriptorSets(d->dev, &ai, out));
    s->sets_in_cur++;
    return 0;
fail:
    return rc;
}

int el_vk_stream_dispatch(el_vk_stream *s, const el_vk_pipeline *pipe,
                          const el_vk_range *ranges, uint32_t nranges,
                          const void *push, uint32_t push_size, uint32_t gx,
                          uint32_t gy, uint32_t gz, el_error *err)
{
    int rc = 0;
    el_vk_device *d = s->d;
    if (!s->recording)
        return el_error_set(err, EL_EINTERNAL, "command stream is not recording");
    if (nranges == 0 || nranges > EL_VK_BINDINGS || push_size > EL_VK_PUSH_BYTES ||
        push_size % 4)
        return el_error_set(err, EL_EINTERNAL, "dispatch of %s: %u bindings, %u push bytes",
                            pipe->shader, nranges, push_size);
    const uint32_t *maxg = d->info.limits.maxComputeWorkGroupCount;
    if (gx == 0 || gy == 0 || gz == 0 || gx > maxg[0] || gy > maxg[1] || gz > maxg[2])
        return el_error_set(err, EL_EUNAVAIL, "dispatch of %s: %u x %u x %u groups exceed the "
                            "device limit", pipe->shader, gx, gy, gz);

    int hazard = 0;
    for (uint32_t i = 0; i < nranges && !hazard; i++)
        for (uint32_t j = 0; j < s->ntouched && !hazard; j++)
            hazard = (ranges[i].written || s->touched[j].written) &&
                     overlaps(&ranges[i], &s->touched[j]);
    if (hazard) {
        barrier(s, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        s->ntouched = 0;
    }
    if (s->ntouched + nranges > s->touched_cap) {
        uint32_t cap = s->touched_cap ? 2 * s->touched_cap : 64;
        while (cap < s->ntouched + nranges)
            cap *= 2;
        el_vk_range *t = el_realloc(s->touched, cap * sizeof *t);
        if (!t)
            return el_error_set(err, EL_ENOMEM, "out of memory for barrier tracking");
        s->touched = t;
        s->touched_cap = cap;
    }
    memcpy(&s->touched[s->ntouched], ranges, nranges * sizeof *ranges);
    s->ntouched += nranges;

    VkBufferView texels[EL_VK_TEXELS];
    uint32_t ntexels = d->texel_align ? EL_VK_TEXELS : 0;
    for (uint32_t i = 0; i < ntexels; i++) {
        texels[i] = el_vk_heap_null_texel(d->heap);
        if (i >= nranges || !ranges[i].texel)
            continue;
        /* whole texels, at most maxTexelBufferElements of them */
        VkDeviceSize bytes = ranges[i].size / 16 * 16;
        VkDeviceSize max = 16 * (VkDeviceSize)d->info.limits.maxTexelBufferElements;
        if (ranges[i].written || ranges[i].offset % d->texel_align || bytes == 0 || bytes > max)
            return el_error_set(err, EL_EINTERNAL, "dispatch of %s: range %u cannot be a "
                                "texel buffer", pipe->shader, i);
        if (s->nviews == s->views_cap) {
            uint32_t cap = s->views_cap ? 2 * s->views_cap : 16;
            VkBufferView *v = el_realloc(s->views, cap * sizeof *v);
            if (!v)
                return el_error_set(err, EL_ENOMEM, "out of memory for texel views");
            s->views = v;
            s->views_cap = cap;
        }
        VkBufferViewCreateInfo vi = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
            .buffer = ranges[i].buffer,
            .format = VK_FORMAT_R32G32B32A32_SFLOAT,
            .offset = ranges[i].offset,
            .range = bytes,
        };
        EL_VK(d->vkCreateBufferView(d->dev, &vi, NULL, &s->views[s->nviews]));
        texels[i] = s->views[s->nviews++];
    }

    VkDescriptorSet set;
    if ((rc = alloc_set(s, &set, err)) != 0)
        return rc;
    VkDescriptorBufferInfo infos[EL_VK_BINDINGS];
    VkWriteDescriptorSet writes[EL_VK_BINDINGS + EL_VK_TEXELS];
    for (uint32_t i = 0; i < EL_VK_BINDINGS; i++) {
        /* Bindings the shader does not declare still get a valid buffer:
         * the shared layout has EL_VK_BINDINGS of them. */
        const el_vk_range *r = &ranges[i < nranges ? i : 0];
        VkDescriptorBufferInfo bi = {r->buffer, r->offset, r->size};
        infos[i] = bi;
        VkWriteDescriptorSet w = {
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &infos[i],
        };
        writes[i] = w;
    }
    for (uint32_t i = 0; i < ntexels; i++) {
        VkWriteDescriptorSet w = {
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = EL_VK_BINDINGS + i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
            .pTexelBufferView = &texels[i],
        };
        writes[EL_VK_BINDINGS + i] = w;
    }
    d->vkUpdateDescriptorSets(d->dev, EL_VK_BINDINGS + ntexels, writes, 0, NULL);
    VkPipelineLayout layout = el_vk_pipes_layout(d->pipes);
    d->vkCmdBindPipeline(s->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe->pipeline);
    d->vkCmdBindDescriptorSets(s->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0,
                               NULL);
    if (push_size)
        d->vkCmdPushConstants(s->cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size, push);
    d->vkCmdDispatch(s->cmd, gx, gy, gz);
    s->ndispatch++;
    if (s->query && s->nqueries < MAX_QUERIES) {
        d->vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, s->query,
                               s->nqueries);
        s->query_shader[s->nqueries++] = pipe->shader;
    }
    return 0;
fail:
    return rc;
}

int el_vk_stream_end(el_vk_stream *s, el_error *err)
{
    int rc = 0;
    if (!s->recording)
        return el_error_set(err, EL_EINTERNAL, "command stream is not recording");
    barrier(s, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    s->recording = 0;
    EL_VK(s->d->vkEndCommandBuffer(s->cmd));
    s->recorded = 1;
    return 0;
fail:
    return rc;
}

int el_vk_stream_recording(const el_vk_stream *s)
{
    return s->recording;
}

uint32_t el_vk_stream_dispatches(const el_vk_stream *s)
{
    return s->ndispatch;
}

int el_vk_stream_submit(el_vk_stream *s, el_error *err)
{
    int rc = 0;
    el_vk_device *d = s->d;
    if (!s->recorded)
        return el_error_set(err, EL_EINTERNAL, "command stream has nothing recorded");
    if ((rc = el_vk_stream_wait(s, err)) != 0)
        return rc;
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &s->cmd,
    };
    EL_VK(d->vkQueueSubmit(d->queue, 1, &si, s->fence));
    s->pending = 1;
    d->submits++;
    return 0;
fail:
    return rc;
}

/* Adds NS to the profile entry of SHADER. */
static void profile_add(el_vk_stream *s, const char *shader, double ns)
{
    for (uint32_t i = 0; i < s->nprof; i++)
        if (!strcmp(s->prof[i].shader, shader)) {
            s->prof[i].count++;
            s->prof[i].ns += ns;
            return;
        }
    if (s->nprof == s->prof_cap) {
        uint32_t cap = s->prof_cap ? 2 * s->prof_cap : 16;
        el_vk_profile_entry *p = el_realloc(s->prof, cap * sizeof *p);
        if (!p)
            return;   /* the profile is best effort */
        s->prof = p;
        s->prof_cap = cap;
    }
    el_vk_profile_entry *e = &s->prof[s->nprof++];
    memset(e, 0, sizeof *e);
    snprintf(e->shader, sizeof e->shader, "%s", shader);
    e->count = 1;
    e->ns = ns;
}

int el_vk_stream_wait(el_vk_stream *s, el_error *err)
{
    int rc = 0;
    el_vk_device *d = s->d;
    if (!s->pending)
        return 0;
    EL_VK(d->vkWaitForFences(d->dev, 1, &s->fence, VK_TRUE, UINT64_MAX));
    EL_VK(d->vkResetFences(d->dev, 1, &s->fence));
    s->pending = 0;
    if (s->query && s->nqueries > 1) {
        uint64_t ts[MAX_QUERIES];
        EL_VK(d->vkGetQueryPoolResults(d->dev, s->query, 0, s->nqueries, sizeof ts, ts,
                                       sizeof ts[0],
                                       VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
        uint64_t mask = d->timestamp_bits >= 64 ? UINT64_MAX
                                                : ((uint64_t)1 << d->timestamp_bits) - 1;
        for (uint32_t i = 1; i < s->nqueries; i++) {
            uint64_t dt = ((ts[i] & mask) - (ts[i - 1] & mask)) & mask;
            profile_add(s, s->query_shader[i], (double)dt * d->timestamp_period);
        }
    }
    return 0;
fail:
    return rc;
}

const el_vk_profile_entry *el_vk_stream_profile(const el_vk_stream *s,
                                                uint32_t *n)
{
    *n = s->nprof;
    return s->prof;
}
