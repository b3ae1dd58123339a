/*
 * log.c - formats and writes the daemon's log lines (see log.h).
 * Never allocates; a line longer than 1 KiB is cut.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int srv_log_level = SRV_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void srv_log_write(int level, const char *fmt, ...)
{
    char line[1024];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ pinpool[%d] %s: ",
                          (int)(tv.tv_usec / 1000), (int)getpid(), level_names[level]);
    va_start(ap, fmt);
    if (n < sizeof(line))
        n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line, so that lines from two threads never interleave. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

void srv_log_signal_safe(const char *msg)
{
    if (write(STDERR_FILENO, msg, strlen(msg)) < 0)
        return;
}

int srv_log_parse_level(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}
