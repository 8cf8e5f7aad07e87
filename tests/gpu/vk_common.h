/* Helpers shared by the gpu tests: a vulkan backend with a private pipeline
 * cache directory, the skip rule, random data. */
#ifndef EL_TESTS_VK_COMMON_H
#define EL_TESTS_VK_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "nn/backend.h"
#include "nn/vulkan_impl.h"

static char vkt_cache_dir[256];

/* A fresh cache directory for this test process (removed by vkt_cleanup). */
static const char *vkt_cache(void)
{
    if (!vkt_cache_dir[0]) {
        snprintf(vkt_cache_dir, sizeof vkt_cache_dir, "/tmp/el-vktest-XXXXXX");
        if (!mkdtemp(vkt_cache_dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return vkt_cache_dir;
}

static void vkt_cleanup(void)
{
    if (vkt_cache_dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", vkt_cache_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", vkt_cache_dir);
    }
}

/* Creates a vulkan backend; exits 77 (skip) only when Vulkan has no device
 * at all here, and fails the test on any other error. */
static el_backend *vkt_create(int profile)
{
    el_backend_options o = {.kind = EL_BACKEND_VULKAN, .device_index = -1,
                            .cache_dir = vkt_cache(), .profile = profile};
    el_backend *be = NULL;
    el_error err = {0};
    int rc = el_nn_backend_create(&o, &be, &err);
    if (rc == EL_EUNAVAIL) {
        printf("SKIP: %s\n", err.msg);
        vkt_cleanup();
        exit(77);
    }
    if (rc) {
        fprintf(stderr, "vulkan backend: %s\n", err.msg);
        vkt_cleanup();
        exit(1);
    }
    return be;
}

/* Asserts the validation layer stayed silent, then destroys BE. */
static void vkt_destroy(el_backend *be)
{
    el_vk_stats st;
    el_vk_backend_stats(be, &st);
    CHECK_MSG(st.validation_messages == 0, "%u validation messages", st.validation_messages);
    el_nn_backend_destroy(be);
}

static uint64_t vkt_rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float vkt_rand(void)
{
    vkt_rng ^= vkt_rng << 13;
    vkt_rng ^= vkt_rng >> 7;
    vkt_rng ^= vkt_rng << 17;
    return (float)((vkt_rng >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

static void vkt_fill_rand(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = vkt_rand();
}

#endif
