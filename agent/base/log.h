/* Logging to stderr. Level from $EDGELOOP_LOG (error, warn, info, debug);
 * default warn. */
#ifndef EL_BASE_LOG_H
#define EL_BASE_LOG_H

enum el_log_level { EL_LOG_ERROR, EL_LOG_WARN, EL_LOG_INFO, EL_LOG_DEBUG };

void el_log(enum el_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int el_log_enabled(enum el_log_level level);
void el_log_set_level(enum el_log_level level);

#define el_log_error(...) el_log(EL_LOG_ERROR, __VA_ARGS__)
#define el_log_warn(...) el_log(EL_LOG_WARN, __VA_ARGS__)
#define el_log_info(...) el_log(EL_LOG_INFO, __VA_ARGS__)
#define el_log_debug(...) el_log(EL_LOG_DEBUG, __VA_ARGS__)

#endif
