#include "alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fail_countdown;

static int should_fail(void)
{
    long n = atomic_load(&fail_countdown);
    if (n <= 0)
        return 0;
    if (n == 1)
        return 1;   /* stays at 1: every later allocation fails too */
    atomic_fetch_sub(&fail_countdown, 1);
    return 0;
}

void *el_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *el_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (size && count > SIZE_MAX / size)
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *el_realloc(void *ptr, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

void el_free(void *ptr)
{
    free(ptr);
}

char *el_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = el_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void el_alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
}

void el_alloc_fail_reset(void)
{
    atomic_store(&fail_countdown, 0);
}

void el_wipe(void *p, size_t len)
{
    volatile unsigned char *v = p;
    while (len--)
        *v++ = 0;
}
