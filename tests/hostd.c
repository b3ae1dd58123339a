/*
 * hostd.c - see hostd.h.  A daemon started here dies with the test process
 * that started it (PR_SET_PDEATHSIG), so a failed or timed-out test leaves
 * none behind.
 */
#include "hostd.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"
#include "pinpool.h"

#define MiB (1024ull * 1024)

static const char *bin(void)
{
    const char *b = getenv("PINPOOL_BIN");
    return b != NULL ? b : "build/pinpool";
}

/*
 * `pinpool serve ARGS...` (NULL-terminated) with stderr appended to log.
 * Returns 0 once it printed its ready line (h->pid runs), else its exit status
 * (it is reaped); a daemon that does neither in 30 s is killed: -1.
 */
int hd_start(hd_t *h, const char *log, setup_fn setup, void *arg, ...)
{
    const char *argv[40] = {bin(), "serve"};
    int argc = 2, out[2], status;
    va_list ap;

    memset(h, 0, sizeof(*h));
    snprintf(h->log, sizeof(h->log), "%s", log);
    va_start(ap, arg);
    for (const char *a; argc < 38 && (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    h->pid = fork();
    cr_assert_geq(h->pid, 0);
    if (h->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        dup2(out[1], STDOUT_FILENO);
        if (fd >= 0)
            dup2(fd, STDERR_FILENO);
        setenv("GRPC_VERBOSITY", "ERROR", 1);
        if (setup != NULL)
            setup(arg);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* after setup: a change of uid clears it */
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    close(out[1]);
    size_t n = 0;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    while (n < sizeof(h->ready) - 1 && strchr(h->ready, '\n') == NULL) {
        if (poll(&p, 1, 30000) <= 0)
            break;
        ssize_t r = read(out[0], h->ready + n, sizeof(h->ready) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(out[0]);
    if (strncmp(h->ready, "pinpool ready:", 14) == 0)
        return 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
            h->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(10000);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    h->pid = 0;
    return -1;
}

/* SIGTERM and wait: the exit status (or -1 if it had to be killed). */
int hd_stop(hd_t *h)
{
    int status;

    if (h->pid <= 0)
        return -1;
    kill(h->pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(h->pid, &status, WNOHANG) == h->pid) {
            h->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(10000);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    h->pid = 0;
    return -1;
}

/* path's text into buf ("" when it cannot be read). */
char *slurp(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : 0;

    buf[n > 0 ? n : 0] = '\0';
    if (fd >= 0)
        close(fd);
    return buf;
}

long count_lines(const char *path)
{
    char buf[65536];
    long n = 0;
    ssize_t r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    while (fd >= 0 && (r = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
    if (fd >= 0)
        close(fd);
    return n;
}

void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* A fresh directory /tmp/pinpool-host-XXXXXX of mode into dir. */
void make_base(char *dir, size_t len, mode_t mode)
{
    snprintf(dir, len, "/tmp/pinpool-host-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(chmod(dir, mode), 0);
}

/* Open an fd-socket session by hand: the socket (kept open), and its HELLO in
 * *h; -1 when it cannot connect or no HELLO came within 5 s. */
int raw_session(const char *fdpath, ipc_hello_t *h)
{
    struct timeval tv = {.tv_sec = 5};
    size_t nfds;
    int fd = ipc_connect_seqpacket(fdpath);

    memset(h, 0, sizeof(*h));
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (ipc_recv_msg(fd, h, sizeof(*h), NULL, 0, &nfds) <= 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A session, a 1 MiB slice written and freed, GetPoolInfo: 0 when all of it works. */
int use_daemon(const char *socket)
{
    pinpool_ctx_t *ctx = pinpool_connect(socket);
    pinpool_pool_info_t info;
    pinpool_slice_t s;
    int rc = ctx == NULL ? -1 : pinpool_err(ctx);

    if (rc == 0)
        rc = pinpool_alloc(ctx, MiB, NULL, &s);
    if (rc == 0) {
        memset(s.ptr, 0x5a, MiB);
        rc = pinpool_free(ctx, s.id, NULL);
    }
    if (rc == 0 && (rc = pinpool_pool_info(ctx, &info)) == 0)
        pinpool_pool_info_free(&info);
    if (rc != 0 && ctx != NULL)
        fprintf(stderr, "use_daemon %s: %s (%s)\n", socket, pinpool_errmsg(ctx),
                pinpool_err_name(rc));
    pinpool_close(ctx);
    return rc;
}

