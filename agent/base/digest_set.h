/* A bounded set of SHA-256 digests with least-recently-used eviction, safe
 * to share between threads: what a verifier remembers about inputs it has
 * already checked (certificates against a CA). 4-way set associative, so
 * a few thousand entries cost one lock and four comparisons per lookup and
 * two keys that share a set do not keep evicting each other. */
#ifndef EL_BASE_DIGEST_SET_H
#define EL_BASE_DIGEST_SET_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

typedef struct el_digest_set {
    pthread_mutex_t lock;
    size_t n_sets;                /* entries = 4 * n_sets */
    uint8_t (*keys)[EL_SHA256_LEN];
    uint64_t *used;               /* 0 = empty, else the tick of last use */
    uint64_t tick;
} el_digest_set;

/* Sets up S for about CAPACITY entries (rounded up to a multiple of 4, at
 * least 4). Returns 0 or EL_ENOMEM. */
int el_digest_set_init(el_digest_set *s, size_t capacity);
void el_digest_set_finish(el_digest_set *s);

/* 1 when KEY is in S (and marks it used), else 0. */
int el_digest_set_has(el_digest_set *s, const uint8_t key[EL_SHA256_LEN]);

/* Adds KEY, evicting the least recently used entry of its set if full. */
void el_digest_set_add(el_digest_set *s, const uint8_t key[EL_SHA256_LEN]);

#endif
