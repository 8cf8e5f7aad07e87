/* Compute pipelines from the embedded SPIR-V, the one descriptor layout they
 * share, and the VkPipelineCache persisted to disk.
 *
 * Cache file format (all integers little-endian):
 *     "ELPC" | u32 format (1) | u32 vendorID | u32 deviceID |
 *     u32 driverVersion | u8 pipelineCacheUUID[16] | u64 data length |
 *     u8 sha256(data)[32] | data (what vkGetPipelineCacheData returned)
 *
 * Invariants:
 *  1. A file is passed to the driver only when every header field matches
 *     this device and driver, the length is exact and the SHA-256 matches,
 *     and the driver's own header inside the data (length, version, vendor,
 *     device, UUID) agrees; anything else (another driver or GPU, a
 *     truncated or corrupt file) is ignored and rebuilt, never trusted:
 *     drivers are not robust against hostile cache bytes.
 *  2. The file is written with el_fs_write_atomic at destroy (or
 *     el_vk_pipes_save) when this process created a pipeline, so readers see
 *     the old file or the new one.
 *  3. All pipelines share one descriptor set layout (EL_VK_BINDINGS storage
 *     buffers) and one pipeline layout (EL_VK_PUSH_BYTES of push constants),
 *     so a command stream binds any of them the same way.
 */
#include "gpu/vk.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "shader_table.h"

#define CACHE_MAGIC "ELPC"
#define CACHE_FORMAT 1
#define CACHE_HEADER (4 + 4 * 4 + VK_UUID_SIZE + 8 + EL_SHA256_LEN)
#define CACHE_MAX ((size_t)256 << 20)

struct el_vk_pipes {
    el_vk_device *d;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipelineCache cache;
    char path[4096];          /* empty: no persistence */
    el_vk_pipeline **list;     /* each entry allocated once: pointers stay valid */
    uint32_t n, cap;
    el_vk_pipe_stats stats;
    uint8_t loaded_digest[EL_SHA256_LEN];   /* of the data read at create */
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

int el_vk_cache_path(const el_vk_device *d, const char *cache_dir, char *out,
                     size_t n, el_error *err)
{
    char dir[4096];
    const char *env = getenv("EDGELOOP_VK_CACHE_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int len;
    if (cache_dir && *cache_dir)
        len = snprintf(dir, sizeof dir, "%s", cache_dir);
    else if (env && *env)
        len = snprintf(dir, sizeof dir, "%s", env);
    else if (xdg && *xdg)
        len = snprintf(dir, sizeof dir, "%s/edgeloop", xdg);
    else if (home && *home)
        len = snprintf(dir, sizeof dir, "%s/.cache/edgeloop", home);
    else
        return el_error_set(err, EL_ENOTFOUND,
                            "no pipeline cache directory (set EDGELOOP_VK_CACHE_DIR or HOME)");
    if (len < 0 || (size_t)len >= sizeof dir)
        return el_error_set(err, EL_EINPUT, "pipeline cache directory name is too long");
    len = snprintf(out, n, "%s/vk-pipelines-%04x-%04x.bin", dir, d->info.vendor_id,
                   d->info.device_id);
    if (len < 0 || (size_t)len >= n)
        return el_error_set(err, EL_EINPUT, "pipeline cache path is too long");
    return 0;
}

/* Checks the cache file BUF[LEN] against D (invariant 1). Returns 0 and
 * the data range, or EL_EINPUT with ERR saying what did not match. */
static int check_file(const el_vk_device *d, const uint8_t *buf, size_t len,
                      const uint8_t **data, size_t *data_len, el_error *err)
{
    if (len < CACHE_HEADER)
        return el_error_set(err, EL_EINPUT, "truncated header (%zu bytes)", len);
    if (memcmp(buf, CACHE_MAGIC, 4) != 0)
        return el_error_set(err, EL_EINPUT, "not a pipeline cache file");
    if (get32(buf + 4) != CACHE_FORMAT)
        return el_error_set(err, EL_EINPUT, "format %u unknown", get32(buf + 4));
    if (get32(buf + 8) != d->info.vendor_id || get32(buf + 12) != d->info.device_id ||
        get32(buf + 16) != d->info.driver_version ||
        memcmp(buf + 20, d->info.cache_uuid, VK_UUID_SIZE) != 0)
        return el_error_set(err, EL_EINPUT, "written by another driver or device");
    const uint8_t *p = buf + 20 + VK_UUID_SIZE;
    uint64_t n = (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
    if (n != len - CACHE_HEADER)
        return el_error_set(err, EL_EINPUT, "data length %llu but %zu bytes follow",
                            (unsigned long long)n, len - CACHE_HEADER);
    uint8_t digest[EL_SHA256_LEN];
    el_sha256(buf + CACHE_HEADER, (size_t)n, digest);
    if (memcmp(digest, p + 8, EL_SHA256_LEN) != 0)
        return el_error_set(err, EL_EINPUT, "checksum mismatch");
    const uint8_t *v = buf + CACHE_HEADER;
    /* VkPipelineCacheHeaderVersionOne: length, version, vendor, device, uuid */
    if (n < 16 + VK_UUID_SIZE || get32(v) < 16 + VK_UUID_SIZE || get32(v) > n ||
        get32(v + 4) != VK_PIPELINE_CACHE_HEADER_VERSION_ONE ||
        get32(v + 8) != d->info.vendor_id || get32(v + 12) != d->info.device_id ||
        memcmp(v + 16, d->info.cache_uuid, VK_UUID_SIZE) != 0)
        return el_error_set(err, EL_EINPUT, "driver header does not match this device");
    *data = v;
    *data_len = (size_t)n;
    return 0;
}

int el_vk_pipes_create(el_vk_device *d, const char *cache_dir,
                       el_vk_pipes **out, el_error *err)
{
    int rc = 0;
    *out = NULL;
    uint8_t *file = NULL;
    el_vk_pipes *p = el_calloc(1, sizeof *p);
    if (!p)
        return el_error_set(err, EL_ENOMEM, "out of memory for pipelines");
    p->d = d;
    p->stats.feedback = d->info.creation_feedback;

    VkDescriptorSetLayoutBinding bindings[EL_VK_BINDINGS + EL_VK_TEXELS];
    uint32_t nbind = EL_VK_BINDINGS + (d->texel_align ? EL_VK_TEXELS : 0);
    for (uint32_t i = 0; i < nbind; i++) {
        VkDescriptorSetLayoutBinding b = {
            .binding = i,
            .descriptorType = i < EL_VK_BINDINGS ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                                                 : VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
        bindings[i] = b;
    }
    VkDescriptorSetLayoutCreateInfo dli = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = nbind,
        .pBindings = bindings,
    };
    EL_VK(d->vkCreateDescriptorSetLayout(d->dev, &dli, NULL, &p->set_layout));
    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = EL_VK_PUSH_BYTES,
    };
    VkPipelineLayoutCreateInfo pli = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &p->set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pcr,
    };
    EL_VK(d->vkCreatePipelineLayout(d->dev, &pli, NULL, &p->layout));

    const uint8_t *data = NULL;
    size_t data_len = 0;
    el_error cerr = {0};
    if (el_vk_cache_path(d, cache_dir, p->path, sizeof p->path, &cerr) != 0) {
        el_log_info("pipeline cache not persisted: %s", cerr.msg);
        p->path[0] = 0;
    } else {
        size_t len = 0;
        int r = el_fs_read_file(p->path, CACHE_MAX, &file, &len, &cerr);
        if (r == 0) {
            if (check_file(d, file, len, &data, &data_len, &cerr) != 0) {
                el_log_info("ignoring pipeline cache %s: %s", p->path, cerr.msg);
                p->stats.cache_rejected = 1;
                data = NULL;
                data_len = 0;
            } else {
                p->stats.cache_loaded = 1;
                p->stats.cache_bytes = data_len;
                el_sha256(data, data_len, p->loaded_digest);
            }
        } else if (r != EL_ENOTFOUND) {
            el_log_info("ignoring pipeline cache %s: %s", p->path, cerr.msg);
            p->stats.cache_rejected = 1;
        }
    }
    VkPipelineCacheCreateInfo cci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = data_len,
        .pInitialData = data,
    };
    EL_VK(d->vkCreatePipelineCache(d->dev, &cci, NULL, &p->cache));
    el_free(file);
    *out = p;
    return 0;
fail:
    el_free(file);
    el_vk_pipes_destroy(p);
    return rc;
}

int el_vk_pipes_save(el_vk_pipes *p, el_error *err)
{
    int rc = 0;
    el_vk_device *d = p->d;
    uint8_t *buf = NULL;
    if (!p->path[0])
        return 0;
    size_t n = 0;
    EL_VK(d->vkGetPipelineCacheData(d->dev, p->cache, &n, NULL));
    if (n > CACHE_MAX - CACHE_HEADER)
        return el_error_set(err, EL_EINPUT, "pipeline cache of %zu bytes is too large", n);
    buf = el_malloc(CACHE_HEADER + n);
    if (!buf)
        return el_error_set(err, EL_ENOMEM, "out of memory for the pipeline cache");
    EL_VK(d->vkGetPipelineCacheData(d->dev, p->cache, &n, buf + CACHE_HEADER));
    memcpy(buf, CACHE_MAGIC, 4);
    put32(buf + 4, CACHE_FORMAT);
    put32(buf + 8, d->info.vendor_id);
    put32(buf + 12, d->info.device_id);
    put32(buf + 16, d->info.driver_version);
    memcpy(buf + 20, d->info.cache_uuid, VK_UUID_SIZE);
    uint8_t *q = buf + 20 + VK_UUID_SIZE;
    put32(q, (uint32_t)n);
    put32(q + 4, (uint32_t)((uint64_t)n >> 32));
    el_sha256(buf + CACHE_HEADER, n, q + 8);
    if (p->stats.cache_loaded && !memcmp(q + 8, p->loaded_digest, EL_SHA256_LEN))
        goto fail;   /* unchanged since it was read: nothing to write */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", p->path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if ((rc = el_fs_mkdirs(dir, 0755, err)) != 0)
            goto fail;
    }
    rc = el_fs_write_atomic(p->path, buf, CACHE_HEADER + n, 0644, err);
fail:
    el_free(buf);
    return rc;
}

void el_vk_pipes_destroy(el_vk_pipes *p)
{
    if (!p)
        return;
    el_vk_device *d = p->d;
    if (p->cache && p->stats.created > 0) {
        el_error err = {0};
        if (el_vk_pipes_save(p, &err) != 0)
            el_log_warn("pipeline cache not saved: %s", err.msg);
    }
    for (uint32_t i = 0; i < p->n; i++) {
        d->vkDestroyPipeline(d->dev, p->list[i]->pipeline, NULL);
        el_free(p->list[i]);
    }
    el_free(p->list);
    if (p->cache)
        d->vkDestroyPipelineCache(d->dev, p->cache, NULL);
    if (p->layout)
        d->vkDestroyPipelineLayout(d->dev, p->layout, NULL);
    if (p->set_layout)
        d->vkDestroyDescriptorSetLayout(d->dev, p->set_layout, NULL);
    el_free(p);
}

VkPipelineLayout el_vk_pipes_layout(const el_vk_pipes *p)
{
    return p->layout;
}

VkDescriptorSetLayout el_vk_pipes_set_layout(const el_vk_pipes *p)
{
    return p->set_layout;
}

void el_vk_pipes_stats(const el_vk_pipes *p, el_vk_pipe_stats *out)
{
    *out = p->stats;
}

int el_vk_pipeline_get(el_vk_pipes *p, const char *shader,
                       const uint32_t *spec, uint32_t nspec,
                       const el_vk_pipeline **out, el_error *err)
{
    int rc = 0;
    el_vk_device *d = p->d;
    VkShaderModule module = VK_NULL_HANDLE;
    *out = NULL;
    if (nspec > EL_VK_SPECS || strlen(shader) >= sizeof ((el_vk_pipeline *)0)->shader)
        return el_error_set(err, EL_EINTERNAL, "pipeline %s: too many constants or too long a name",
                            shader);
    for (uint32_t i = 0; i < p->n; i++) {
        el_vk_pipeline *e = p->list[i];
        if (e->nspec == nspec && !strcmp(e->shader, shader) &&
            (nspec == 0 || !memcmp(e->spec, spec, nspec * sizeof *spec))) {
            *out = e;
            return 0;
        }
    }
    const el_shader *code = el_shader_find(shader);
    if (!code)
        return el_error_set(err, EL_ENOTFOUND, "no embedded shader named \"%s\"", shader);
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? 2 * p->cap : 16;
        el_vk_pipeline **l = el_realloc(p->list, cap * sizeof *l);
        if (!l)
            return el_error_set(err, EL_ENOMEM, "out of memory for pipelines");
        p->list = l;
        p->cap = cap;
    }
    VkShaderModuleCreateInfo smi = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = code->size,
        .pCode = code->code,
    };
    EL_VK(d->vkCreateShaderModule(d->dev, &smi, NULL, &module));
    VkSpecializationMapEntry entries[EL_VK_SPECS];
    for (uint32_t i = 0; i < nspec; i++) {
        VkSpecializationMapEntry e = {.constantID = i, .offset = 4 * i, .size = 4};
        entries[i] = e;
    }
    VkSpecializationInfo si = {
        .mapEntryCount = nspec,
        .pMapEntries = entries,
        .dataSize = 4 * nspec,
        .pData = spec,
    };
    VkPipelineCreationFeedbackEXT fb = {0};
    VkPipelineCreationFeedbackCreateInfoEXT fci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CREATION_FEEDBACK_CREATE_INFO_EXT,
        .pPipelineCreationFeedback = &fb,
    };
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .pNext = p->stats.feedback ? &fci : NULL,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = module,
            .pName = "main",
            .pSpecializationInfo = nspec ? &si : NULL,
        },
        .layout = p->layout,
    };
    el_vk_pipeline *e = el_calloc(1, sizeof *e);
    if (!e) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory for pipelines");
        goto fail;
    }
    p->list[p->n] = e;
    if (d->vkCreateComputePipelines(d->dev, p->cache, 1, &cpi, NULL, &e->pipeline) != VK_SUCCESS) {
        el_free(e);
        rc = el_error_set(err, EL_EINTERNAL, "creating the pipeline of shader %s failed", shader);
        goto fail;
    }
    d->vkDestroyShaderModule(d->dev, module, NULL);
    snprintf(e->shader, sizeof e->shader, "%s", shader);
    e->nspec = nspec;
    if (nspec)
        memcpy(e->spec, spec, nspec * sizeof *spec);
    p->n++;
    p->stats.created++;
    int hit = p->stats.feedback && (fb.flags & VK_PIPELINE_CREATION_FEEDBACK_VALID_BIT_EXT) &&
              (fb.flags & VK_PIPELINE_CREATION_FEEDBACK_APPLICATION_PIPELINE_CACHE_HIT_BIT_EXT);
    if (!hit)
        p->stats.compiled++;
    *out = e;
    return 0;
fail:
    if (module)
        d->vkDestroyShaderModule(d->dev, module, NULL);
    return rc;
}
