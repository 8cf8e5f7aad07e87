/* See digest_set.h. The set of a key is chosen by its first bytes: the keys
 * are SHA-256 outputs, already uniform. */
#include "digest_set.h"

#include <string.h>

#include "alloc.h"
#include "error.h"

#define WAYS 4

int el_digest_set_init(el_digest_set *s, size_t capacity)
{
    memset(s, 0, sizeof *s);
    s->n_sets = capacity < WAYS ? 1 : (capacity + WAYS - 1) / WAYS;
    s->keys = el_calloc(s->n_sets * WAYS, sizeof *s->keys);
    s->used = el_calloc(s->n_sets * WAYS, sizeof *s->used);
    if (!s->keys || !s->used) {
        el_free(s->keys);
        el_free(s->used);
        s->keys = NULL;
        s->used = NULL;
        return EL_ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    return 0;
}

void el_digest_set_finish(el_digest_set *s)
{
    if (!s->keys)
        return;
    pthread_mutex_destroy(&s->lock);
    el_free(s->keys);
    el_free(s->used);
    s->keys = NULL;
    s->used = NULL;
}

static size_t first_way(const el_digest_set *s, const uint8_t key[EL_SHA256_LEN])
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | key[i];
    return (size_t)(h % s->n_sets) * WAYS;
}

int el_digest_set_has(el_digest_set *s, const uint8_t key[EL_SHA256_LEN])
{
    if (!s->keys)
        return 0;
    size_t base = first_way(s, key);
    int hit = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = base; i < base + WAYS && !hit; i++) {
        if (s->used[i] && !memcmp(s->keys[i], key, EL_SHA256_LEN)) {
            s->used[i] = ++s->tick;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return hit;
}

void el_digest_set_add(el_digest_set *s, const uint8_t key[EL_SHA256_LEN])
{
    if (!s->keys)
        return;
    size_t base = first_way(s, key);
    pthread_mutex_lock(&s->lock);
    size_t victim = base;
    for (size_t i = base; i < base + WAYS; i++) {
        if (s->used[i] && !memcmp(s->keys[i], key, EL_SHA256_LEN)) {
            victim = i;
            break;
        }
        if (s->used[i] < s->used[victim])
            victim = i;
    }
    memcpy(s->keys[victim], key, EL_SHA256_LEN);
    s->used[victim] = ++s->tick;
    pthread_mutex_unlock(&s->lock);
}
