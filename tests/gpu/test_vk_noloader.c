/* Vulkan absent: no loader ($EDGELOOP_VK_LOADER pointing nowhere) and no
 * driver ($VK_DRIVER_FILES / $VK_ICD_FILENAMES naming an empty manifest).
 * AUTO must give the cpu backend, VULKAN must fail with EL_EUNAVAIL and one
 * sentence, and `edgeloop devices` must say Vulkan is unavailable and exit
 * 0. Needs no device, so it never skips. */
#include <jansson.h>
#include <unistd.h>

#include "check.h"
#include "nn/backend.h"
#include "nn/backend_impl.h"

static void backends(const char *what, const char *needle)
{
    el_error err = {0};
    el_backend *be = NULL;
    CHECK(el_nn_vulkan_has_gpu() == 0);
    el_backend_options o = {.kind = EL_BACKEND_AUTO, .device_index = -1};
    int rc = el_nn_backend_create(&o, &be, &err);
    CHECK_OK(rc, &err);
    CHECK(be && el_nn_backend_kind(be) == EL_BACKEND_CPU);
    el_nn_backend_destroy(be);
    be = NULL;
    o.kind = EL_BACKEND_VULKAN;
    rc = el_nn_backend_create(&o, &be, &err);
    CHECK_MSG(rc == EL_EUNAVAIL, "%s: rc=%d", what, rc);
    CHECK(be == NULL);
    CHECK_MSG(strstr(err.msg, "Vulkan is unavailable") && strstr(err.msg, needle),
              "%s: message \"%s\"", what, err.msg);
    CHECK(strchr(err.msg, '\n') == NULL);
    printf("%s: %s\n", what, err.msg);
}

static void devices_command(const char *what)
{
    const char *root = getenv("EDGELOOP_BUILD_ROOT");
    if (!root) {
        printf("EDGELOOP_BUILD_ROOT unset: devices command not checked\n");
        return;
    }
    char cmd[1024];
    static char buf[16384];
    snprintf(cmd, sizeof cmd, "'%s/agent/edgeloop' devices 2>&1", root);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = 0;
    CHECK(p && pclose(p) == 0);
    CHECK_MSG(strstr(buf, "Vulkan is unavailable") && strstr(buf, "auto uses cpu"),
              "%s: devices printed \"%s\"", what, buf);
    snprintf(cmd, sizeof cmd, "'%s/agent/edgeloop' devices --json", root);
    p = popen(cmd, "r");
    n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    CHECK(p && pclose(p) == 0);
    json_error_t je;
    json_t *j = json_loadb(buf, n, 0, &je);
    CHECK_MSG(j != NULL, "%s: devices --json: %s", what, je.text);
    if (!j)
        return;
    json_t *vk = json_object_get(j, "vulkan");
    CHECK(json_is_false(json_object_get(vk, "available")));
    CHECK(json_is_string(json_object_get(vk, "reason")));
    CHECK(json_array_size(json_object_get(j, "devices")) == 0);
    CHECK(!strcmp(json_string_value(json_object_get(j, "auto")), "cpu"));
    json_decref(j);
}

int main(void)
{
    setenv("EDGELOOP_VK_LOADER", "/nonexistent/libvulkan.so.1", 1);
    backends("no loader", "/nonexistent/libvulkan.so.1");
    devices_command("no loader");
    unsetenv("EDGELOOP_VK_LOADER");

    char manifest[] = "/tmp/el-noicd-XXXXXX";
    int fd = mkstemp(manifest);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    setenv("VK_DRIVER_FILES", manifest, 1);
    setenv("VK_ICD_FILENAMES", manifest, 1);
    backends("no driver", "driver");
    devices_command("no driver");
    unlink(manifest);
    return el_test_done("test_vk_noloader");
}
