/* The seeded generator behind every random choice of training (LoRA init,
 * data order, sampling): splitmix64, so a seed gives the same stream on every
 * platform and the state is one integer that a checkpoint can hold. */
#ifndef EL_NN_RNG_H
#define EL_NN_RNG_H

#include <stdint.h>

static inline uint64_t el_nn_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) from the top 53 bits. */
static inline double el_nn_rng_uniform(uint64_t *state)
{
    return (double)(el_nn_rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n), n > 0 (rejection keeps it unbiased). */
static inline uint64_t el_nn_rng_below(uint64_t *state, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = el_nn_rng_next(state);
    while (x >= limit);
    return x % n;
}

#endif
