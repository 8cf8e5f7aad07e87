/* Extras of the cpu backend beyond backend.h. */
#ifndef EL_NN_CPU_H
#define EL_NN_CPU_H

/* OpenBLAS picks its kernels once, when the library loads, from the CPU
 * model; a model it does not know falls back to a generic core. On this
 * project's build machine (a virtualized Xeon with AVX-512) OpenBLAS 0.3.21
 * picks "Prescott" (SSE3) kernels, 4-12x slower than its "SkylakeX" ones.
 * The only remedy is the OPENBLAS_CORETYPE environment variable, read at
 * load time, so a program that wants it must set it and re-execute itself.
 *
 * Returns the OPENBLAS_CORETYPE value that matches this CPU's vector units
 * ("SkylakeX" for AVX-512, "Haswell" for AVX2 + FMA, "Sandybridge" for AVX)
 * when OpenBLAS's kernels are of an older class than that, or NULL when they
 * already fit, when OPENBLAS_CORETYPE is set, or off x86. Static string. */
const char *el_nn_cpu_blas_coretype_hint(void);

#endif
