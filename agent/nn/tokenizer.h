/* Tokenizers. Only bytes-v1 exists today (DESIGN.md): ids 0-255 are UTF-8
 * bytes, 256 BOS, 257 EOS, 258 PAD. */
#ifndef EL_NN_TOKENIZER_H
#define EL_NN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define EL_TOK_BOS 256
#define EL_TOK_EOS 257
#define EL_TOK_PAD 258

/* Writes the ids of LEN bytes of TEXT to OUT (at most CAP ids). Returns the
 * number written (min(len, cap)). */
size_t el_nn_tokenize_bytes(const char *text, size_t len, int32_t *out, size_t cap);

/* Decodes N ids into OUT (CAP bytes, NUL-terminated): byte ids become bytes,
 * special ids are dropped. Returns the bytes written, without the NUL. */
size_t el_nn_detokenize_bytes(const int32_t *ids, size_t n, char *out, size_t cap);

#endif
