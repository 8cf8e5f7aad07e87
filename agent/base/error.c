#include "error.h"

#include <string.h>

#include "json.h"

void el_error_clear(el_error *err)
{
    if (!err)
        return;
    err->code = 0;
    err->tag[0] = '\0';
    err->msg[0] = '\0';
}

const char *el_error_code_name(int code)
{
    switch (code) {
    case EL_OK: return "ok";
    case EL_EUSAGE: return "usage";
    case EL_EINTERNAL: return "internal";
    case EL_ENOMEM: return "out_of_memory";
    case EL_EIO: return "io";
    case EL_ENOSPC: return "no_space";
    case EL_EINPUT: return "bad_input";
    case EL_ENOTFOUND: return "not_found";
    case EL_EUNAVAIL: return "unavailable";
    case EL_ETRUST: return "untrusted";
    case EL_EPOLICY: return "refused";
    default: return "internal";
    }
}

int el_error_exit_status(int code)
{
    switch (code) {
    case EL_OK: return 0;
    case EL_EINPUT:
    case EL_ENOTFOUND: return 2;
    case EL_ETRUST:
    case EL_EPOLICY: return 3;
    default: return 1;
    }
}

static void set_msg(el_error *err, const char *fmt, va_list ap)
{
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int el_error_set(el_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    snprintf(err->tag, sizeof err->tag, "%s", el_error_code_name(code));
    va_list ap;
    va_start(ap, fmt);
    set_msg(err, fmt, ap);
    va_end(ap);
    return code;
}

int el_error_set_tag(el_error *err, int code, const char *tag,
                     const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    snprintf(err->tag, sizeof err->tag, "%s", tag);
    va_list ap;
    va_start(ap, fmt);
    set_msg(err, fmt, ap);
    va_end(ap);
    return code;
}

int el_error_prefix(el_error *err, const char *fmt, ...)
{
    if (!err || !err->code)
        return err ? (err->code ? err->code : EL_EINTERNAL) : EL_EINTERNAL;
    char prefix[EL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[EL_ERROR_MSG_MAX];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
    memcpy(err->msg, joined, sizeof err->msg);
    return err->code;
}

void el_error_print(FILE *out, const char *prog, const el_error *err, int json)
{
    const char *tag = err && err->tag[0] ? err->tag : "internal";
    const char *msg = err && err->msg[0] ? err->msg : "unknown error";
    if (json) {
        json_t *root = json_pack("{s:{s:s,s:s}}", "error", "code", tag,
                                 "message", msg);
        if (root) {
            json_dumpf(root, out, JSON_COMPACT);
            fputc('\n', out);
            json_decref(root);
        }
        return;
    }
    fprintf(out, "%s: %s\n", prog ? prog : "edgeloop", msg);
}
