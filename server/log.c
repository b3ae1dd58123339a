/*
 * log.c - formats and writes the daemon's log lines (see log.h).
 * Owns: descriptor 2 once --log-file is open, and that path.
 * Never allocates; a line longer than 1 KiB is cut.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dirs.h"

int srv_log_level = SRV_LOG_INFO;
int srv_log_format = SRV_LOG_TEXT;
static char log_path[4096]; /* --log-file, "" for stderr */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* msg as the body of a JSON string into out (at most len bytes, NUL
 * included); cuts at a character boundary of the escapes.  Returns the length. */
static size_t json_escape(char *out, size_t len, const char *msg)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        char esc[8];
        size_t k;

        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            k = 2;
        } else if (*p < 0x20) {
            k = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
        } else {
            esc[0] = (char)*p;
            k = 1;
        }
        if (n + k + 1 > len)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

void srv_log_write(int level, const char *fmt, ...)
{
    char line[1024], msg[768], ts[40];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (srv_log_format == SRV_LOG_JSON) {
        char body[sizeof(line) - 96];
        json_escape(body, sizeof(body), msg);
        n = (size_t)snprintf(line, sizeof(line),
                             "{\"ts\":\"%s\",\"pid\":%d,\"level\":\"%s\",\"msg\":\"%s\"}", ts,
                             (int)getpid(), level_names[level], body);
    } else {
        n = (size_t)snprintf(line, sizeof(line), "%s pinpool[%d] %s: %s", ts, (int)getpid(),
                             level_names[level], msg);
    }
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

/* Open path for appending and make it descriptor 2.  0 or an error with err. */
static int log_to(const char *path, char *err, size_t errlen)
{
    int fd = srv_file_open_at(AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT, 0600, path, err,
                              errlen);

    if (fd < 0)
        return fd;
    if (fd != STDERR_FILENO) {
        if (dup2(fd, STDERR_FILENO) < 0) {
            int rc = -errno;
            snprintf(err, errlen, "cannot log to %s: %s", path, strerror(errno));
            close(fd);
            return rc;
        }
        close(fd);
    }
    return 0;
}

int srv_log_open(const char *path, char *err, size_t errlen)
{
    int rc;

    if (strlen(path) >= sizeof(log_path)) {
        snprintf(err, errlen, "--log-file: the path is too long");
        return -ENAMETOOLONG;
    }
    rc = log_to(path, err, errlen);
    if (rc == 0)
        snprintf(log_path, sizeof(log_path), "%s", path);
    return rc;
}

int srv_log_reopen(bool *reopened, char *err, size_t errlen)
{
    *reopened = false;
    if (log_path[0] == '\0')
        return 0;
    int rc = log_to(log_path, err, errlen);
    *reopened = rc == 0;
    return rc;
}

int srv_log_parse_level(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}
