/* bytes-v1: the identity on UTF-8 bytes, plus three special ids. Kept as its
 * own module so a BPE tokenizer can slot in beside it. */
#include "nn/tokenizer.h"

size_t el_nn_tokenize_bytes(const char *text, size_t len, int32_t *out, size_t cap)
{
    size_t n = len < cap ? len : cap;
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)(unsigned char)text[i];
    return n;
}

size_t el_nn_detokenize_bytes(const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    if (!cap)
        return 0;
    for (size_t i = 0; i < n && w + 1 < cap; i++)
        if (ids[i] >= 0 && ids[i] < 256)
            out[w++] = (char)ids[i];
    out[w] = '\0';
    return w;
}
