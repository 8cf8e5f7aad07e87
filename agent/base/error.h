/* edgeloop error model.
 *
 * Every function that can fail returns int: 0 on success or a negative EL_E*
 * code, and fills an optional caller-owned el_error with a message naming the
 * file, key or field at fault. Trust and policy refusals also carry a stable
 * machine-readable tag (DESIGN.md "Errors"): bad_signature, unknown_key, ...
 *
 * Exit codes of the programs derive from the code: 0 ok, 1 usage or internal,
 * 2 bad input (file, data, format), 3 refused by trust or policy.
 */
#ifndef EL_BASE_ERROR_H
#define EL_BASE_ERROR_H

#include <stdarg.h>
#include <stdio.h>

enum {
    EL_OK = 0,
    EL_EUSAGE = -1,     /* wrong flags or arguments */
    EL_EINTERNAL = -2,  /* a bug or an unexpected system failure */
    EL_ENOMEM = -3,     /* allocation failed */
    EL_EIO = -4,        /* read/write/fsync failed */
    EL_ENOSPC = -5,     /* disk full or disk budget exhausted */
    EL_EINPUT = -6,     /* malformed or unreadable input */
    EL_ENOTFOUND = -7,  /* a named object does not exist */
    EL_EUNAVAIL = -8,   /* a facility (e.g. Vulkan) is not available here */
    EL_ETRUST = -9,     /* refused by the trust rules */
    EL_EPOLICY = -10,   /* refused by a policy or state rule */
    EL_ECRASH = -11,    /* reserved: never returned, marks injected crashes */
};

#define EL_ERROR_MSG_MAX 512
#define EL_ERROR_TAG_MAX 32

typedef struct el_error {
    int code;                    /* EL_E* of the failure, 0 when none */
    char tag[EL_ERROR_TAG_MAX];  /* stable code string, e.g. "bad_signature" */
    char msg[EL_ERROR_MSG_MAX];  /* one sentence for a human */
} el_error;

/* Clears ERR (may be NULL). */
void el_error_clear(el_error *err);

/* Records CODE and a printf-style message in ERR (may be NULL); the tag is
 * derived from CODE. Returns CODE so callers can `return el_error_set(...)`. */
int el_error_set(el_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As el_error_set with an explicit stable TAG (copied, truncated to fit). */
int el_error_set_tag(el_error *err, int code, const char *tag,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes the message already in ERR with "CONTEXT: ". Returns err->code
 * (or EL_EINTERNAL when ERR is NULL or empty). */
int el_error_prefix(el_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Name of CODE, e.g. "bad_input". Static storage. */
const char *el_error_code_name(int code);

/* The process exit status for CODE: 0, 1, 2 or 3. */
int el_error_exit_status(int code);

/* Prints ERR to OUT: as {"error": {"code", "message"}} when JSON, else as
 * "edgeloop: MESSAGE" (PROG names the program). */
void el_error_print(FILE *out, const char *prog, const el_error *err, int json);

#endif
