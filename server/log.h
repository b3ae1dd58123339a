/*
 * log.h - the daemon's log lines.
 *
 * One line per event on stderr: "2026-11-21T23:59:01.123Z pinpool[42] info: ...",
 * or with --log-format json one JSON object per line:
 * {"ts":"2026-11-21T23:59:01.123Z","pid":42,"level":"info","msg":"..."}.
 * srv_log() checks the level before it formats anything.  srv_log_signal_safe()
 * writes a fixed string with write(2) only, for signal handlers.
 * The level and format are process-wide and set once at start-up.
 * With --log-file the lines go to that file instead: srv_log_open points
 * stderr (descriptor 2, so gRPC's own lines and a crash's backtrace follow)
 * at it, and srv_log_reopen (SIGHUP, after logrotate moved the file) at a new
 * file of that name; a line written meanwhile goes to the old file or the
 * new one, whole (dup2 is atomic).
 */
#ifndef PINPOOL_SRV_LOG_H
#define PINPOOL_SRV_LOG_H

#include <stdbool.h>
#include <stddef.h>

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
/* Append to path (absolute; made 0600; refused: a symbolic link, another
 * user's file, anything but a regular file).  0, or an error with err.  Once,
 * at start-up, on the main thread. */
int srv_log_open(const char *path, char *err, size_t errlen);
/* Open the --log-file path again (0: done, or nothing to reopen: *reopened
 * false), or an error with err and the log still where it was.  The main
 * thread only. */
int srv_log_reopen(bool *reopened, char *err, size_t errlen);
/* "error", "warn", "info", "debug" -> level, or -1. */
int srv_log_parse_level(const char *name);

#endif
