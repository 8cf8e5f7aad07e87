/* The embedded SPIR-V of every shader in shaders/, by name. Generated at
 * build time from shaders/meson.build's shader_names (shader_table.c.in). */
#ifndef EL_SHADER_TABLE_H
#define EL_SHADER_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct el_shader {
    const char *name;      /* file name without .comp */
    const uint32_t *code;  /* SPIR-V words, static storage */
    size_t size;           /* bytes */
} el_shader;

/* The shader called NAME, or NULL. */
const el_shader *el_shader_find(const char *name);
/* Number of shaders and the Ith of them (I < count), for listings. */
size_t el_shader_count(void);
const el_shader *el_shader_at(size_t i);

#endif
