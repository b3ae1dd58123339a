/*
 * test_log.c - the daemon's log lines: text and --log-format json.
 *
 * Owns: a temp file standing in for stderr in the unit tests, and the daemon
 * of the integration test.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

/* Run srv_log_write with stderr going to a temp file; the line into out. */
static void capture(char *out, size_t len, int level, const char *msg)
{
    char path[] = "/tmp/pinpool-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    ssize_t n;

    cr_assert_geq(fd, 0);
    unlink(path);
    dup2(fd, STDERR_FILENO);
    srv_log_write(level, "%s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = pread(fd, out, len - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
}

Test(log, text_line)
{
    char line[2048];

    srv_log_format = SRV_LOG_TEXT;
    capture(line, sizeof(line), SRV_LOG_WARN, "client s-1-ab left");
    cr_expect(strstr(line, " pinpool[") != NULL, "%s", line);
    cr_expect(strstr(line, "] warn: client s-1-ab left\n") != NULL, "%s", line);
}

Test(log, json_line_escapes_the_message)
{
    char line[2048], want[256];

    srv_log_format = SRV_LOG_JSON;
    capture(line, sizeof(line), SRV_LOG_INFO, "a \"quoted\" back\\slash\tand\nnewline");
    cr_expect_eq(line[0], '{', "%s", line);
    cr_expect(strstr(line, "\"ts\":\"20") != NULL, "%s", line);
    snprintf(want, sizeof(want), "\"pid\":%d,\"level\":\"info\",", (int)getpid());
    cr_expect(strstr(line, want) != NULL, "%s", line);
    cr_expect(strstr(line, "\"msg\":\"a \\\"quoted\\\" back\\\\slash\\u0009and\\u000anewline\"}\n") != NULL,
              "%s", line);
    cr_expect_eq(strchr(line, '\n'), line + strlen(line) - 1, "one line: %s", line);
}

Test(log, json_long_message_stays_one_valid_line)
{
    char line[4096], msg[3000];

    memset(msg, '"', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    srv_log_format = SRV_LOG_JSON;
    capture(line, sizeof(line), SRV_LOG_ERROR, msg);
    size_t n = strlen(line);
    cr_expect_leq(n, 1024);
    cr_expect(n > 2 && strcmp(line + n - 3, "\"}\n") == 0, "cut inside an escape: ...%s", line + n - 20);
}

Test(log, daemon_writes_json_lines, .timeout = 60)
{
    test_daemon_t d;
    char buf[8192];

    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "16MiB", "--chunk-size", "16MiB",
                                   "--log-format", "json", NULL), 0);
    cr_assert_eq(test_daemon_stop(&d), 0);
    /* test_daemon_stop removed the log; start once more and read it before stopping. */
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "16MiB", "--chunk-size", "16MiB",
                                     "--log-format", "json", NULL), 0);
    usleep(300000);
    FILE *f = fopen(d.log, "r");
    cr_assert_not_null(f);
    int lines = 0;
    while (fgets(buf, sizeof(buf), f) != NULL) {
        if (strncmp(buf, "E0", 2) == 0 || strncmp(buf, "W0", 2) == 0 || strncmp(buf, "I0", 2) == 0)
            continue; /* gRPC's own lines */
        lines++;
        size_t n = strlen(buf);
        cr_expect(buf[0] == '{' && n > 2 && strcmp(buf + n - 2, "}\n") == 0, "not a JSON line: %s", buf);
        cr_expect(strstr(buf, "\"level\":\"") != NULL, "%s", buf);
    }
    fclose(f);
    cr_expect_gt(lines, 0, "the daemon logged nothing");
    cr_expect_eq(test_daemon_stop(&d), 0);
}
