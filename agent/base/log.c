#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int level = -1;

static int current_level(void)
{
    if (level >= 0)
        return level;
    const char *env = getenv("EDGELOOP_LOG");
    level = EL_LOG_WARN;
    if (env) {
        if (!strcmp(env, "error")) level = EL_LOG_ERROR;
        else if (!strcmp(env, "info")) level = EL_LOG_INFO;
        else if (!strcmp(env, "debug")) level = EL_LOG_DEBUG;
    }
    return level;
}

void el_log_set_level(enum el_log_level l)
{
    level = (int)l;
}

int el_log_enabled(enum el_log_level l)
{
    return (int)l <= current_level();
}

void el_log(enum el_log_level l, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (!el_log_enabled(l))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "edgeloop[%s]: %s\n", names[l], line);
}
