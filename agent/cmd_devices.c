/* edgeloop devices: lists the Vulkan devices, what each supports, and which
 * backend `--backend auto` would use. Vulkan being absent is not an error
 * here: the command says why and exits 0, since the CPU backend works. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "cli.h"
#include "gpu/vk.h"

static const char *help_text =
    "usage: edgeloop devices [--json]\n"
    "\n"
    "Lists the Vulkan devices with their type, memory, subgroup size and\n"
    "optional features (fp16, int8, cooperative matrix), and which backend\n"
    "`--backend auto` would pick: a real GPU when one exists (discrete >\n"
    "integrated > virtual), else the CPU backend. A software rasterizer such\n"
    "as lavapipe/llvmpipe is listed but auto picks cpu for it (it is many\n"
    "times slower than BLAS); `--backend vulkan` still forces it.\n"
    "\n"
    "Features are reported as detected. The shaders use subgroup arithmetic\n"
    "(reductions) when present; fp16, int8 and cooperative matrix are only\n"
    "detected so far, no shader uses them yet.\n"
    "\n"
    "Environment: EDGELOOP_VK_LOADER (loader path), EDGELOOP_VK_DEVICE\n"
    "(index for --backend vulkan), EDGELOOP_VK_VALIDATION=1.\n"
    "\n"
    "  --json   print one JSON object\n"
    "  --help   this text\n";

static const char *yes(int v)
{
    return v ? "yes" : "no";
}

static json_t *device_json(const el_vk_device_info *d, int chosen)
{
    char api[32];
    snprintf(api, sizeof api, "%u.%u.%u", VK_API_VERSION_MAJOR(d->api_version),
             VK_API_VERSION_MINOR(d->api_version), VK_API_VERSION_PATCH(d->api_version));
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(d->index));
    json_object_set_new(o, "name", json_string(d->name));
    json_object_set_new(o, "type", json_string(el_vk_type_name(d->type)));
    json_object_set_new(o, "gpu", json_boolean(el_vk_type_is_gpu(d->type)));
    json_object_set_new(o, "vendor_id", json_integer(d->vendor_id));
    json_object_set_new(o, "device_id", json_integer(d->device_id));
    json_object_set_new(o, "api_version", json_string(api));
    json_object_set_new(o, "usable", json_boolean(d->vk11 && d->compute_queue));
    json_object_set_new(o, "device_local_bytes", json_integer((json_int_t)d->device_local_bytes));
    json_object_set_new(o, "unified_memory", json_boolean(d->unified));
    json_object_set_new(o, "subgroup_size", json_integer(d->subgroup_size));
    json_object_set_new(o, "subgroup_arithmetic", json_boolean(d->subgroup_arith));
    json_object_set_new(o, "subgroup_size_control", json_boolean(d->subgroup_size_control));
    json_object_set_new(o, "fp16", json_boolean(d->fp16));
    json_object_set_new(o, "storage16", json_boolean(d->storage16));
    json_object_set_new(o, "int8", json_boolean(d->int8));
    json_object_set_new(o, "cooperative_matrix", json_boolean(d->coopmat));
    json_object_set_new(o, "texel_buffer_vec4", json_boolean(d->texel_vec4));
    json_object_set_new(o, "max_texel_buffer_elements",
                        json_integer(d->limits.maxTexelBufferElements));
    json_object_set_new(o, "max_storage_buffer_range",
                        json_integer(d->limits.maxStorageBufferRange));
    json_object_set_new(o, "max_workgroup_invocations",
                        json_integer(d->limits.maxComputeWorkGroupInvocations));
    json_object_set_new(o, "max_shared_memory", json_integer(d->limits.maxComputeSharedMemorySize));
    json_object_set_new(o, "vulkan_choice", json_boolean(chosen));
    return o;
}

int el_cmd_devices(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help_text, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else
            return el_cli_usage("devices", "unknown option", json);
    }
    el_error err = {0};
    el_vk_instance *inst = NULL;
    el_vk_device_info *infos = NULL;
    uint32_t n = 0;
    int rc = el_vk_instance_create(&inst, &err);
    if (rc == 0)
        rc = el_vk_list_devices(inst, &infos, &n, &err);
    if (rc && rc != EL_EUNAVAIL) {
        el_vk_instance_destroy(inst);
        return el_cli_fail(&err, json);
    }
    const char *why = rc ? err.msg : NULL;
    el_error cerr = {0};
    int choice = rc == 0 ? el_vk_choose_device(infos, n, -1, &cerr) : -1;
    if (rc == 0 && choice < 0)
        why = cerr.msg;
    int auto_gpu = choice >= 0 && el_vk_type_is_gpu(infos[choice].type);
    const char *auto_reason =
        auto_gpu ? "a real GPU is present"
        : choice >= 0 ? "the only Vulkan devices are software rasterizers"
                      : "Vulkan is unavailable";

    if (json) {
        json_t *root = json_object();
        json_t *vk = json_object();
        json_object_set_new(vk, "available", json_boolean(choice >= 0));
        json_object_set_new(vk, "reason", why ? json_string(why) : json_null());
        json_object_set_new(root, "vulkan", vk);
        json_t *list = json_array();
        for (uint32_t i = 0; i < n; i++)
            json_array_append_new(list, device_json(&infos[i], (int)i == choice));
        json_object_set_new(root, "devices", list);
        json_object_set_new(root, "auto", json_string(auto_gpu ? "vulkan" : "cpu"));
        json_object_set_new(root, "auto_device", auto_gpu ? json_integer(choice) : json_null());
        json_object_set_new(root, "auto_reason", json_string(auto_reason));
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
        json_decref(root);
    } else {
        if (why)
            printf("%s\n", why);
        if (n)
            printf("Vulkan devices:\n");
        for (uint32_t i = 0; i < n; i++) {
            const el_vk_device_info *d = &infos[i];
            printf("  %u%s %s\n", d->index, (int)i == choice ? "*" : " ", d->name);
            printf("     type %s, Vulkan %u.%u, %.1f GiB device-local%s%s\n",
                   el_vk_type_name(d->type), VK_API_VERSION_MAJOR(d->api_version),
                   VK_API_VERSION_MINOR(d->api_version),
                   (double)d->device_local_bytes / (1024.0 * 1024 * 1024),
                   d->unified ? " (unified)" : "",
                   d->vk11 && d->compute_queue ? "" : ", NOT usable (needs 1.1 + compute)");
            printf("     subgroup %u (arithmetic %s, size control %s), fp16 %s, int8 %s, "
                   "cooperative matrix %s, vec4 texel buffers %s\n", d->subgroup_size,
                   yes(d->subgroup_arith), yes(d->subgroup_size_control),
                   yes(d->fp16 && d->storage16), yes(d->int8), yes(d->coopmat),
                   yes(d->texel_vec4));
        }
        if (choice >= 0)
            printf("--backend vulkan uses device %d (*)\n", choice);
        printf("--backend auto uses %s: %s\n", auto_gpu ? "vulkan" : "cpu", auto_reason);
    }
    el_free(infos);
    el_vk_instance_destroy(inst);
    return 0;
}
