/*
 * daemon.c - see daemon.h.
 */
#include "daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <inttypes.h>

#include "internal.h"
#include "pinpool.h"
#include "util.h"

#define READY_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 10000

static const char *daemon_bin(void)
{
    const char *bin = getenv("PINPOOL_BIN");
    return bin != NULL ? bin : "build/pinpool";
}

/* The state directory: spill/<name>/{.lock, objects}; nothing deeper. */
static void rm_state(const char *state)
{
    if (state[0] != '\0' && strncmp(state, "/tmp/pinpool-test-", 18) == 0)
        test_rm_rf(state);
}

static int start_v(test_daemon_t *d, bool again, va_list ap)
{
    const char *argv[32];
    int argc = 0, out[2];

    if (again) {
        memset(d->ready, 0, sizeof(d->ready));
        if (mkdir(d->dir, 0700) != 0 && errno != EEXIST)
            return -1;
    } else {
        memset(d, 0, sizeof(*d));
        snprintf(d->dir, sizeof(d->dir), "/tmp/pinpool-test-XXXXXX");
        if (mkdtemp(d->dir) == NULL)
            return -1;
    }
    snprintf(d->socket, sizeof(d->socket), "%s/pinpool.sock", d->dir);
    if (!again || d->log[0] == '\0') /* again: a log of its own if d names one */
        snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
    snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
    argv[argc++] = daemon_bin();
    argv[argc++] = "serve";
    argv[argc++] = "--socket";
    argv[argc++] = d->socket;
    argv[argc++] = "--state-dir"; /* its default spill tier lives there */
    argv[argc++] = d->state;
    for (const char *a; argc < 30 && (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = a;
    argv[argc] = NULL;

    if (pipe2(out, O_CLOEXEC) != 0)
        return -1;
    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        int log = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(out[1], STDOUT_FILENO);
        if (log >= 0)
            dup2(log, STDERR_FILENO);
        setenv("GRPC_VERBOSITY", "ERROR", 1);
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(out[1]);
    /* Read stdout until the ready line. */
    size_t n = 0;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    while (n < sizeof(d->ready) - 1 && strchr(d->ready, '\n') == NULL) {
        if (poll(&p, 1, READY_TIMEOUT_MS) <= 0)
            break;
        ssize_t r = read(out[0], d->ready + n, sizeof(d->ready) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(out[0]);
    if (strncmp(d->ready, "pinpool ready:", 14) != 0) {
        fprintf(stderr, "daemon did not get ready; its log:\n");
        test_daemon_dump_log(d);
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
        return -1;
    }
    return 0;
}

int test_daemon_spawn(test_daemon_t *d, bool again, ...)
{
    va_list ap;
    int rc;

    va_start(ap, again);
    rc = start_v(d, again, ap);
    va_end(ap);
    return rc;
}

int test_daemon_kill(test_daemon_t *d, int sig)
{
    int status = 0;

    if (d->pid <= 0 || kill(d->pid, sig) != 0)
        return -1;
    while (waitpid(d->pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    d->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* SIGTERM, wait (bounded: then SIGKILL); the exit status, -1 if it was killed. */
static int stop_wait(test_daemon_t *d)
{
    int status = 0;

    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    for (int waited = 0; waited < STOP_TIMEOUT_MS; waited += 10) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

/* What a daemon leaves: its log, its state, its directory. */
static void remove_traces(test_daemon_t *d)
{
    unlink(d->log);
    rm_state(d->state);
    rmdir(d->dir); /* fails, and keeps the evidence, if anything else is left */
}

int test_daemon_stop(test_daemon_t *d)
{
    int rc;

    if (d->pid <= 0)
        return -1;
    rc = stop_wait(d);
    if (rc >= 0)
        remove_traces(d);
    return rc;
}

uint64_t test_daemon_used(const test_daemon_t *d)
{
    pinpool_ctx_t *ctx;
    pinpool_pool_info_t info;
    uint64_t used = UINT64_MAX;

    /* Without a session first; a daemon that lets in only sessions (an allow
     * list, --detached-clients no) answers a session's GetPoolInfo only. */
    for (int session = 0; session < 2 && used == UINT64_MAX; session++) {
        ctx = session ? pinpool_connect(d->socket) : pinpool__connect_rpc_only(d->socket);
        if (ctx != NULL && pinpool_err(ctx) == 0 && pinpool_pool_info(ctx, &info) == 0) {
            used = info.used_bytes;
            pinpool_pool_info_free(&info);
        }
        pinpool_close(ctx);
    }
    return used;
}

static int count_fds(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (dp == NULL)
        return -1;
    while ((e = readdir(dp)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dp);
    return n - 1; /* the directory stream's own */
}

int test_daemon_nfds(const test_daemon_t *d)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
    return count_fds(path) + 1; /* not our stream */
}

int test_nfds(void)
{
    return count_fds("/proc/self/fd");
}

void test_daemon_dump_log(const test_daemon_t *d)
{
    char line[512];
    FILE *f = fopen(d->log, "r");

    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL)
        fprintf(stderr, "  | %s", line);
    fclose(f);
}

void test_daemon_finish(test_daemon_t *d)
{
    if (d->pid <= 0)
        return;
    uint64_t used = test_daemon_used(d);
    int rc = stop_wait(d);
    if (rc != 0) /* its log says why (a sanitizer's report, say) */
        test_daemon_dump_log(d);
    remove_traces(d);
    test_fini_check(used == 0, "the pool still has %" PRIu64 " bytes in use at the end", used);
    test_fini_check(rc == 0, "the daemon exited with %d on SIGTERM", rc);
}

pinpool_ctx_t *test_connect(const test_daemon_t *d)
{
    pinpool_ctx_t *ctx = pinpool_connect(d->socket);
    cr_assert_not_null(ctx);
    cr_assert_eq(pinpool_err(ctx), 0, "connect: %s", pinpool_errmsg(ctx));
    return ctx;
}

void test_pool_info(pinpool_ctx_t *ctx, pinpool_pool_info_t *out)
{
    cr_assert_eq(pinpool_pool_info(ctx, out), 0, "%s", pinpool_errmsg(ctx));
    pinpool_pool_info_free(out);
}

int test_pinpool(char *out, size_t len, const char *fmt, ...)
{
    char cmd[1024], args[768];
    va_list ap;
    FILE *p;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "GRPC_VERBOSITY=NONE %s %s 2>&1", daemon_bin(), args);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    /* Read what does not fit too: a writer cut short would die of SIGPIPE. */
    for (char sink[4096]; fread(sink, 1, sizeof(sink), p) > 0;)
        ;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
