#include "arena.h"

#include <stdint.h>
#include <string.h>

#include "alloc.h"

struct el_arena_block {
    el_arena_block *next;
    size_t size, used;
    unsigned char data[];
};

void el_arena_init(el_arena *arena, size_t block_size)
{
    arena->head = NULL;
    arena->block_size = block_size ? block_size : 65536;
}

void el_arena_finish(el_arena *arena)
{
    el_arena_block *b = arena->head;
    while (b) {
        el_arena_block *next = b->next;
        el_free(b);
        b = next;
    }
    arena->head = NULL;
}

void el_arena_reset(el_arena *arena)
{
    if (!arena->head)
        return;
    el_arena_block *keep = arena->head;
    el_arena_block *b = keep->next;
    while (b) {
        el_arena_block *next = b->next;
        el_free(b);
        b = next;
    }
    keep->next = NULL;
    keep->used = 0;
}

void *el_arena_alloc(el_arena *arena, size_t size)
{
    /* 63 spare bytes let any block start be rounded up to 64 */
    size_t need = (size + 63) & ~(size_t)63;
    if (need < size || need > SIZE_MAX - 64)
        return NULL;
    el_arena_block *b = arena->head;
    size_t pad = b ? (64 - ((uintptr_t)(b->data + b->used) & 63)) & 63 : 0;
    if (!b || b->size - b->used < need + pad) {
        size_t cap = need + 63 > arena->block_size ? need + 63 : arena->block_size;
        if (cap > SIZE_MAX - sizeof *b)
            return NULL;
        el_arena_block *nb = el_malloc(sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->size = cap;
        nb->used = 0;
        nb->next = arena->head;
        arena->head = nb;
        b = nb;
        pad = (64 - ((uintptr_t)b->data & 63)) & 63;
    }
    void *p = b->data + b->used + pad;
    b->used += need + pad;
    memset(p, 0, size);
    return p;
}
