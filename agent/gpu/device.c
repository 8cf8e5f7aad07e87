/* Loader, instance, physical-device discovery and choice, logical device.
 *
 * Invariants:
 *  1. Nothing here aborts when Vulkan is missing: every way of not having it
 *     (no loader library, no vkGetInstanceProcAddr, no driver, a 1.0-only
 *     instance, no device) ends in EL_EUNAVAIL with one sentence that says
 *     which, so `--backend auto` can fall back and `--backend vulkan` can
 *     explain.
 *  2. A device is usable when it reports Vulkan >= 1.1 and has a compute
 *     queue; nothing else is required. Optional features are recorded in
 *     el_vk_device_info and the EDGELOOP_VK_DISABLE_* switches clear them
 *     before any other module looks (el_vk_device_create).
 *  3. The validation messenger counts into el_vk_instance.validation_messages
 *     and prints each message; tests assert the count stays 0.
 */
#include "gpu/vk.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

const char *el_vk_result_name(VkResult r)
{
    switch (r) {
#define NAME(x) case x: return #x;
    NAME(VK_SUCCESS) NAME(VK_NOT_READY) NAME(VK_TIMEOUT) NAME(VK_INCOMPLETE)
    NAME(VK_ERROR_OUT_OF_HOST_MEMORY) NAME(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    NAME(VK_ERROR_INITIALIZATION_FAILED) NAME(VK_ERROR_DEVICE_LOST)
    NAME(VK_ERROR_MEMORY_MAP_FAILED) NAME(VK_ERROR_LAYER_NOT_PRESENT)
    NAME(VK_ERROR_EXTENSION_NOT_PRESENT) NAME(VK_ERROR_FEATURE_NOT_PRESENT)
    NAME(VK_ERROR_INCOMPATIBLE_DRIVER) NAME(VK_ERROR_TOO_MANY_OBJECTS)
    NAME(VK_ERROR_FORMAT_NOT_SUPPORTED) NAME(VK_ERROR_FRAGMENTED_POOL)
    NAME(VK_ERROR_OUT_OF_POOL_MEMORY) NAME(VK_ERROR_UNKNOWN)
    NAME(VK_PIPELINE_COMPILE_REQUIRED)
#undef NAME
    default:
        return "VK_ERROR_(unknown)";
    }
}

static VKAPI_ATTR VkBool32 VKAPI_CALL
on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
           VkDebugUtilsMessageTypeFlagsEXT types,
           const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    el_vk_instance *inst = user;
    /* The loader's own general-purpose warnings (e.g. about ICD manifests)
     * are not validation findings; every validation message and every
     * error is. */
    int counted = (types & VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT) ||
                  (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT);
    if (counted)
        __atomic_add_fetch(&inst->validation_messages, 1, __ATOMIC_RELAXED);
    fprintf(stderr, "edgeloop: vulkan %s: %s\n",
            severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning",
            data && data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

static int has_layer(PFN_vkEnumerateInstanceLayerProperties enum_layers,
                     const char *name)
{
    uint32_t n = 0;
    if (enum_layers(&n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkLayerProperties *props = el_calloc(n, sizeof *props);
    if (!props)
        return 0;
    int found = 0;
    if (enum_layers(&n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(props[i].layerName, name);
    el_free(props);
    return found;
}

/* 1 when LAYER provides the instance extension EXT. */
static int layer_has_ext(el_vk_instance *inst, const char *layer, const char *ext)
{
    PFN_vkEnumerateInstanceExtensionProperties enum_exts =
        (PFN_vkEnumerateInstanceExtensionProperties)inst->gipa(
            NULL, "vkEnumerateInstanceExtensionProperties");
    uint32_t n = 0;
    if (!enum_exts || enum_exts(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkExtensionProperties *props = el_calloc(n, sizeof *props);
    if (!props)
        return 0;
    int found = 0;
    if (enum_exts(layer, &n, props) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(props[i].extensionName, ext);
    el_free(props);
    return found;
}

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int el_vk_instance_create(el_vk_instance **out, el_error *err)
{
    int rc = 0;
    *out = NULL;
    const char *path = getenv("EDGELOOP_VK_LOADER");
    if (!path || !*path)
        path = "libvulkan.so.1";
    el_vk_instance *inst = el_calloc(1, sizeof *inst);
    if (!inst)
        return el_error_set(err, EL_ENOMEM, "out of memory for the Vulkan instance");
    inst->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!inst->lib) {
        rc = el_error_set(err, EL_EUNAVAIL,
                          "Vulkan is unavailable: the loader %s could not be opened (%s)",
                          path, dlerror());
        goto fail;
    }
    inst->gipa = (PFN_vkGetInstanceProcAddr)dlsym(inst->lib, "vkGetInstanceProcAddr");
    if (!inst->gipa) {
        rc = el_error_set(err, EL_EUNAVAIL,
                          "Vulkan is unavailable: %s has no vkGetInstanceProcAddr", path);
        goto fail;
    }
    PFN_vkEnumerateInstanceVersion enum_version =
        (PFN_vkEnumerateInstanceVersion)inst->gipa(NULL, "vkEnumerateInstanceVersion");
    PFN_vkCreateInstance create_instance =
        (PFN_vkCreateInstance)inst->gipa(NULL, "vkCreateInstance");
    PFN_vkEnumerateInstanceLayerProperties enum_layers =
        (PFN_vkEnumerateInstanceLayerProperties)inst->gipa(NULL, "vkEnumerateInstanceLayerProperties");
    uint32_t version = VK_API_VERSION_1_0;
    if (enum_version && enum_version(&version) != VK_SUCCESS)
        version = VK_API_VERSION_1_0;
    if (!create_instance || !enum_layers || version < VK_API_VERSION_1_1) {
        rc = el_error_set(err, EL_EUNAVAIL,
                          "Vulkan is unavailable: the loader %s does not offer Vulkan 1.1", path);
        goto fail;
    }

    const char *layers[1];
    const char *exts[2];
    uint32_t nlayers = 0, nexts = 0;
    int sync_validation = 0;
    if (env_flag("EDGELOOP_VK_VALIDATION")) {
        if (has_layer(enum_layers, "VK_LAYER_KHRONOS_validation")) {
            layers[nlayers++] = "VK_LAYER_KHRONOS_validation";
            exts[nexts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
            inst->validation = 1;
            if (layer_has_ext(inst, "VK_LAYER_KHRONOS_validation",
                              VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
                exts[nexts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
                sync_validation = 1;
            }
        } else {
            el_log_warn("EDGELOOP_VK_VALIDATION=1 but VK_LAYER_KHRONOS_validation "
                        "is not installed; running without validation");
        }
    }
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_message,
        .pUserData = inst,
    };
    /* Synchronization validation too: on lavapipe dispatches run in order
     * whatever the barriers say, so only the layer can see a missing one. */
    VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT,
    };
    VkValidationFeaturesEXT features = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = enables,
    };
    if (sync_validation)
        mci.pNext = &features;
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "edgeloop",
        .pEngineName = "edgeloop",
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo ici = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = inst->validation ? &mci : NULL,
        .pApplicationInfo = &app,
        .enabledLayerCount = nlayers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = nexts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = create_instance(&ici, NULL, &inst->instance);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER) {
        rc = el_error_set(err, EL_EUNAVAIL,
                          "Vulkan is unavailable: the loader found no driver (ICD)");
        goto fail;
    }
    if (r != VK_SUCCESS) {
        rc = el_error_set(err, EL_EUNAVAIL,
                          "Vulkan is unavailable: vkCreateInstance failed with %s",
                          el_vk_result_name(r));
        goto fail;
    }
    inst->api_version = VK_API_VERSION_1_1;
#define LOAD(name) \
    inst->name = (PFN_##name)inst->gipa(inst->instance, #name); \
    if (!inst->name) { \
        rc = el_error_set(err, EL_EUNAVAIL, \
                          "Vulkan is unavailable: the loader lacks %s", #name); \
        goto fail; \
    }
    EL_VK_INSTANCE_FNS(LOAD)
#undef LOAD
    if (inst->validation) {
        PFN_vkCreateDebugUtilsMessengerEXT create_messenger =
            (PFN_vkCreateDebugUtilsMessengerEXT)inst->gipa(inst->instance,
                                                           "vkCreateDebugUtilsMessengerEXT");
        inst->destroy_messenger =
            (PFN_vkDestroyDebugUtilsMessengerEXT)inst->gipa(inst->instance,
                                                            "vkDestroyDebugUtilsMessengerEXT");
        mci.pNext = NULL;   /* the features chain belongs to the instance only */
        if (create_messenger && inst->destroy_messenger)
            EL_VK(create_messenger(inst->instance, &mci, NULL, &inst->messenger));
    }
    *out = inst;
    return 0;
fail:
    el_vk_instance_destroy(inst);
    return rc;
}

void el_vk_instance_destroy(el_vk_instance *inst)
{
    if (!inst)
        return;
    if (inst->instance) {
        if (inst->messenger)
            inst->destroy_messenger(inst->instance, inst->messenger, NULL);
        PFN_vkDestroyInstance destroy = inst->vkDestroyInstance;
        if (!destroy)
            destroy = (PFN_vkDestroyInstance)inst->gipa(inst->instance, "vkDestroyInstance");
        if (destroy)
            destroy(inst->instance, NULL);
    }
    /* Unloading the loader is skipped on purpose: drivers and layers
     * register atexit handlers and TLS destructors that would then point
     * into unmapped code (the Vulkan loader documents this). */
    el_free(inst);
}

const char *el_vk_type_name(VkPhysicalDeviceType type)
{
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

int el_vk_type_is_gpu(VkPhysicalDeviceType type)
{
    return type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
           type == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ||
           type == VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU;
}

static int type_rank(VkPhysicalDeviceType type)
{
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
    default: return 0;
    }
}

static int has_ext(const VkExtensionProperties *exts, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(exts[i].extensionName, name))
            return 1;
    return 0;
}

/* Fills INFO for PHYS. Returns 0 or EL_ENOMEM. */
static int describe(el_vk_instance *inst, VkPhysicalDevice phys, uint32_t index,
                    el_vk_device_info *info, el_error *err)
{
    memset(info, 0, sizeof *info);
    info->index = index;
    VkPhysicalDeviceProperties props;
    inst->vkGetPhysicalDeviceProperties(phys, &props);
    snprintf(info->name, sizeof info->name, "%s", props.deviceName);
    info->type = props.deviceType;
    info->vendor_id = props.vendorID;
    info->device_id = props.deviceID;
    info->api_version = props.apiVersion;
    info->driver_version = props.driverVersion;
    memcpy(info->cache_uuid, props.pipelineCacheUUID, VK_UUID_SIZE);
    info->limits = props.limits;
    info->vk11 = props.apiVersion >= VK_API_VERSION_1_1;

    uint32_t nq = 0;
    inst->vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, NULL);
    VkQueueFamilyProperties *qf = el_calloc(nq ? nq : 1, sizeof *qf);
    if (!qf)
        return el_error_set(err, EL_ENOMEM, "out of memory listing queues");
    inst->vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, qf);
    for (uint32_t i = 0; i < nq; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            info->compute_queue = 1;
    el_free(qf);

    VkPhysicalDeviceMemoryProperties mem;
    inst->vkGetPhysicalDeviceMemoryProperties(phys, &mem);
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mem.memoryHeaps[i].size > info->device_local_bytes)
            info->device_local_bytes = mem.memoryHeaps[i].size;
    const VkMemoryPropertyFlags direct = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if (props.deviceType != VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU)
        for (uint32_t i = 0; i < mem.memoryTypeCount; i++)
            if ((mem.memoryTypes[i].propertyFlags & direct) == direct)
                info->unified = 1;

    uint32_t next = 0;
    VkExtensionProperties *exts = NULL;
    if (inst->vkEnumerateDeviceExtensionProperties(phys, NULL, &next, NULL) == VK_SUCCESS &&
        next) {
        exts = el_calloc(next, sizeof *exts);
        if (!exts)
            return el_error_set(err, EL_ENOMEM, "out of memory listing extensions");
        if (inst->vkEnumerateDeviceExtensionProperties(phys, NULL, &next, exts) != VK_SUCCESS)
            next = 0;
    }
    info->subgroup_size_control = has_ext(exts, next, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    info->coopmat = has_ext(exts, next, "VK_KHR_cooperative_matrix") ||
                    has_ext(exts, next, "VK_NV_cooperative_matrix");
    info->creation_feedback = has_ext(exts, next, VK_EXT_PIPELINE_CREATION_FEEDBACK_EXTENSION_NAME);
    int f16i8 = has_ext(exts, next, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME) ||
                props.apiVersion >= VK_API_VERSION_1_2;
    el_free(exts);

    if (!info->vk11)
        return 0;   /* 1.1 structures may not be chained for a 1.0 device */
    VkPhysicalDeviceSubgroupProperties sub = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
    };
    VkPhysicalDeviceProperties2 props2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
        .pNext = &sub,
    };
    inst->vkGetPhysicalDeviceProperties2(phys, &props2);
    info->subgroup_size = sub.subgroupSize;
    info->subgroup_arith = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                           (sub.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                           (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);

    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
    };
    VkPhysicalDevice16BitStorageFeatures s16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .pNext = f16i8 ? &f16 : NULL,
    };
    VkPhysicalDeviceFeatures2 feats = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &s16,
    };
    inst->vkGetPhysicalDeviceFeatures2(phys, &feats);
    info->storage16 = s16.storageBuffer16BitAccess != 0;
    info->fp16 = f16i8 && f16.shaderFloat16;
    info->int8 = f16i8 && f16.shaderInt8;

    VkFormatProperties fp;
    inst->vkGetPhysicalDeviceFormatProperties(phys, VK_FORMAT_R32G32B32A32_SFLOAT, &fp);
    info->texel_vec4 = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
    return 0;
}

int el_vk_list_devices(el_vk_instance *inst, el_vk_device_info **out,
                       uint32_t *count, el_error *err)
{
    *out = NULL;
    *count = 0;
    uint32_t n = 0;
    VkResult r = inst->vkEnumeratePhysicalDevices(inst->instance, &n, NULL);
    if (r != VK_SUCCESS)
        return el_error_set(err, EL_EUNAVAIL,
                            "Vulkan is unavailable: listing devices failed with %s",
                            el_vk_result_name(r));
    if (n == 0)
        return 0;
    VkPhysicalDevice *phys = el_calloc(n, sizeof *phys);
    el_vk_device_info *infos = el_calloc(n, sizeof *infos);
    int rc = 0;
    if (!phys || !infos) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory listing devices");
        goto fail;
    }
    r = inst->vkEnumeratePhysicalDevices(inst->instance, &n, phys);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        rc = el_error_set(err, EL_EUNAVAIL, "listing Vulkan devices failed with %s",
                          el_vk_result_name(r));
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++)
        if ((rc = describe(inst, phys[i], i, &infos[i], err)) != 0)
            goto fail;
    el_free(phys);
    *out = infos;
    *count = n;
    return 0;
fail:
    el_free(phys);
    el_free(infos);
    return rc;
}

int el_vk_choose_device(const el_vk_device_info *infos, uint32_t count,
                        int requested, el_error *err)
{
    if (count == 0)
        return el_error_set(err, EL_EUNAVAIL,
                            "Vulkan is unavailable: no Vulkan device was found");
    const char *env = getenv("EDGELOOP_VK_DEVICE");
    if (requested < 0 && env && *env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v < 0 || v > 1000)
            return el_error_set(err, EL_EUSAGE,
                                "EDGELOOP_VK_DEVICE=\"%s\" is not a device index", env);
        requested = (int)v;
    }
    if (requested >= 0) {
        if ((uint32_t)requested >= count)
            return el_error_set(err, EL_EUSAGE,
                                "Vulkan device %d does not exist (%u found; see edgeloop devices)",
                                requested, count);
        const el_vk_device_info *d = &infos[requested];
        if (!d->vk11 || !d->compute_queue)
            return el_error_set(err, EL_EUNAVAIL,
                                "Vulkan device %d (%s) lacks Vulkan 1.1 or a compute queue",
                                requested, d->name);
        return requested;
    }
    int best = -1;
    for (uint32_t i = 0; i < count; i++) {
        if (!infos[i].vk11 || !infos[i].compute_queue)
            continue;
        if (best < 0 || type_rank(infos[i].type) > type_rank(infos[best].type))
            best = (int)i;
    }
    if (best < 0)
        return el_error_set(err, EL_EUNAVAIL,
                            "Vulkan is unavailable: no device offers Vulkan 1.1 with a compute queue");
    return best;
}

/* Reads $NAME as a count (bytes, texels); returns 0 when unset or invalid. */
static uint64_t env_bytes(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) {
        el_log_warn("%s=\"%s\" is not a whole number; ignored", name, v);
        return 0;
    }
    return x;
}

int el_vk_device_create(int requested, const char *cache_dir,
                        el_vk_device **out, el_error *err)
{
    int rc = 0;
    *out = NULL;
    el_vk_device_info *infos = NULL;
    uint32_t count = 0;
    VkQueueFamilyProperties *qf = NULL;
    el_vk_device *d = el_calloc(1, sizeof *d);
    if (!d)
        return el_error_set(err, EL_ENOMEM, "out of memory for the Vulkan device");
    if ((rc = el_vk_instance_create(&d->inst, err)) != 0)
        goto fail;
    if ((rc = el_vk_list_devices(d->inst, &infos, &count, err)) != 0)
        goto fail;
    int idx = el_vk_choose_device(infos, count, requested, err);
    if (idx < 0) {
        rc = idx;
        goto fail;
    }
    d->info = infos[idx];
    uint32_t n = count;
    VkPhysicalDevice *phys = el_calloc(n, sizeof *phys);
    if (!phys) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory listing devices");
        goto fail;
    }
    VkResult r = d->inst->vkEnumeratePhysicalDevices(d->inst->instance, &n, phys);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || (uint32_t)idx >= n) {
        el_free(phys);
        rc = el_error_set(err, EL_EINTERNAL, "Vulkan device list changed while opening it");
        goto fail;
    }
    d->phys = phys[idx];
    el_free(phys);

    if (env_flag("EDGELOOP_VK_DISABLE_FP16"))
        d->info.fp16 = d->info.storage16 = 0;
    if (env_flag("EDGELOOP_VK_DISABLE_SUBGROUP"))
        d->info.subgroup_arith = d->info.subgroup_size_control = 0;
    /* The layout keeps its texel bindings (shaders declare them); the
     * switch only stops their use. */
    int texel_format = d->info.texel_vec4;
    if (env_flag("EDGELOOP_VK_DISABLE_TEXEL"))
        d->info.texel_vec4 = 0;
    /* a small maxTexelBufferElements (64 Ki on some mobile GPUs), forced */
    uint64_t texels = env_bytes("EDGELOOP_VK_MAX_TEXELS");
    if (texels && texels < d->info.limits.maxTexelBufferElements)
        d->info.limits.maxTexelBufferElements = (uint32_t)texels;
    d->align = d->info.limits.minStorageBufferOffsetAlignment;
    if (d->align < 16)
        d->align = 16;
    /* Both are powers of two: the larger is a multiple of the other. */
    d->texel_align = 0;
    if (texel_format)
        d->texel_align = d->info.limits.minTexelBufferOffsetAlignment > d->align
                             ? d->info.limits.minTexelBufferOffsetAlignment
                             : d->align;
    d->max_binding = d->info.limits.maxStorageBufferRange;
    uint64_t forced = env_bytes("EDGELOOP_VK_MAX_BINDING");
    if (forced && forced < d->max_binding)
        d->max_binding = forced;
    /* A binding must hold at least one aligned chunk of a view. */
    if (d->max_binding < 4 * d->align)
        d->max_binding = 4 * d->align;
    d->max_binding -= d->max_binding % 4;
    d->staging = !d->info.unified || env_flag("EDGELOOP_VK_FORCE_STAGING");

    uint32_t nq = 0;
    d->inst->vkGetPhysicalDeviceQueueFamilyProperties(d->phys, &nq, NULL);
    qf = el_calloc(nq ? nq : 1, sizeof *qf);
    if (!qf) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory listing queues");
        goto fail;
    }
    d->inst->vkGetPhysicalDeviceQueueFamilyProperties(d->phys, &nq, qf);
    /* A compute-only family first (dedicated compute engines), else any. */
    int family = -1;
    for (uint32_t i = 0; i < nq; i++)
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) &&
            (family < 0 || !(qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
            family = (int)i;
    d->queue_family = (uint32_t)family;
    d->timestamp_bits = qf[family].timestampValidBits;
    d->timestamp_period = d->info.limits.timestampPeriod;

    const char *exts[2];
    uint32_t nexts = 0;
    if (d->info.creation_feedback)  /* the instance asks for 1.1: an extension even on 1.3 */
        exts[nexts++] = VK_EXT_PIPELINE_CREATION_FEEDBACK_EXTENSION_NAME;
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = d->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    /* No optional feature is enabled: the shaders use only 1.1 core
     * (subgroup operations are core properties, not features). fp16, int8
     * and cooperative matrix are detected and reported, not used yet. */
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
        .enabledExtensionCount = nexts,
        .ppEnabledExtensionNames = exts,
    };
    EL_VK(d->inst->vkCreateDevice(d->phys, &dci, NULL, &d->dev));
#define LOAD(name) \
    d->name = (PFN_##name)d->inst->vkGetDeviceProcAddr(d->dev, #name); \
    if (!d->name) { \
        rc = el_error_set(err, EL_EUNAVAIL, "the Vulkan driver lacks %s", #name); \
        goto fail; \
    }
    EL_VK_DEVICE_FNS(LOAD)
#undef LOAD
    d->vkGetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);
    if ((rc = el_vk_heap_create(d, &d->heap, err)) != 0)
        goto fail;
    if ((rc = el_vk_pipes_create(d, cache_dir, &d->pipes, err)) != 0)
        goto fail;
    el_free(infos);
    el_free(qf);
    *out = d;
    return 0;
fail:
    el_free(infos);
    el_free(qf);
    el_vk_device_destroy(d);
    return rc;
}

void el_vk_device_destroy(el_vk_device *d)
{
    if (!d)
        return;
    if (d->dev && d->vkDestroyDevice && d->vkDeviceWaitIdle) {
        d->vkDeviceWaitIdle(d->dev);
        el_vk_pipes_destroy(d->pipes);
        el_vk_heap_destroy(d->heap);
        d->vkDestroyDevice(d->dev, NULL);
    }
    el_vk_instance_destroy(d->inst);
    el_free(d);
}
