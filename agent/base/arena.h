/* Bump allocator for per-step scratch memory, freed in one call
 * (libplacebo's pl_tmp). Blocks come from el_malloc. */
#ifndef EL_BASE_ARENA_H
#define EL_BASE_ARENA_H

#include <stddef.h>

typedef struct el_arena_block el_arena_block;
typedef struct el_arena {
    el_arena_block *head;
    size_t block_size;
} el_arena;

/* Caller-owned arena; BLOCK_SIZE 0 picks 64 KiB. */
void el_arena_init(el_arena *arena, size_t block_size);
/* Frees every block. The arena can be reused after el_arena_init. */
void el_arena_finish(el_arena *arena);
/* Frees everything allocated so far but keeps one block for reuse. */
void el_arena_reset(el_arena *arena);
/* SIZE bytes aligned to 64, zeroed; NULL when out of memory. Valid until the
 * next reset/finish. */
void *el_arena_alloc(el_arena *arena, size_t size);

#endif
