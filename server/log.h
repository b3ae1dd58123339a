/*
 * log.h - the daemon's log lines.
 *
 * One line per event on stderr: "2026-11-21T23:59:01.123Z pinpool[42] info: ...",
 * or with --log-format json one JSON object per line:
 * {"ts":"2026-11-21T23:59:01.123Z","pid":42,"level":"info","msg":"..."}.
 * srv_log() checks the level before it formats anything.  srv_log_signal_safe()
 * writes a fixed string with write(2) only, for signal handlers.
 * The level and format are process-wide and set once at start-up.
 */
#ifndef PINPOOL_SRV_LOG_H
#define PINPOOL_SRV_LOG_H

enum srv_log_level { SRV_LOG_ERROR, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG };

enum srv_log_format { SRV_LOG_TEXT, SRV_LOG_JSON };

extern int srv_log_level;
extern int srv_log_format;

#define srv_log(level, ...)                                                    \
    do {                                                                       \
        if ((level) <= srv_log_level)                                          \
            srv_log_write((level), __VA_ARGS__);                               \
    } while (0)
#define srv_error(...) srv_log(SRV_LOG_ERROR, __VA_ARGS__)
#define srv_warn(...) srv_log(SRV_LOG_WARN, __VA_ARGS__)
#define srv_info(...) srv_log(SRV_LOG_INFO, __VA_ARGS__)
#define srv_debug(...) srv_log(SRV_LOG_DEBUG, __VA_ARGS__)

void srv_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_log_signal_safe(const char *msg);
/* "error", "warn", "info", "debug" -> level, or -1. */
int srv_log_parse_level(const char *name);

#endif
