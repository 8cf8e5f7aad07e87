/* All heap allocation goes through one hook so tests can inject failure
 * (Lua's lua_Alloc, SQLite's malloc tests). el_free accepts NULL. */
#ifndef EL_BASE_ALLOC_H
#define EL_BASE_ALLOC_H

#include <stddef.h>

void *el_malloc(size_t size);
void *el_calloc(size_t count, size_t size);   /* overflow-checked */
void *el_realloc(void *ptr, size_t size);
void el_free(void *ptr);
char *el_strdup(const char *s);

/* Test hook: the Nth allocation from now (1 = the next) and every one after it
 * fails until el_alloc_fail_reset(). N = 0 disables. */
void el_alloc_fail_after(long n);
void el_alloc_fail_reset(void);

/* Overwrites LEN bytes at P with zeros in a way the compiler cannot elide;
 * for secrets. */
void el_wipe(void *p, size_t len);

#endif
