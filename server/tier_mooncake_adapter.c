/*
 * tier_mooncake_adapter.c - the Mooncake tier's adapter driver: Mooncake's
 * Python client (the PyPI wheel, which exports no C API) in a child process,
 * server/mooncake_adapter.py.
 *
 * Owns: the child (m->pid), its end of the SOCK_SEQPACKET pair (m->sock), the
 * command sequence numbers, the memfd of the staging buffer that both
 * processes map and Mooncake registers (so no payload crosses the socket),
 * and the wire format (mooncake_adapter.py has the same table).
 *   request  <u16 op, u16 flags, u32 n, u64 seq> then HELLO: the options as
 *            JSON; SETBUF: <u64 size> with the memfd attached; others: n items
 *            of <u64 off, u64 len, u32 keylen> + the key bytes
 *   reply    <u64 seq, i32 status, u32 n> + n items of <i64 rc, i64 aux> + a
 *            message
 * Never: waits past the caller's deadline: a call that passes it, or a broken
 * or out-of-order reply, kills the adapter (m->dead) and fails; the next call
 * starts a new one.  Never leaves the child behind: PR_SET_PDEATHSIG, and
 * mc_close stops it.
 * Locking: none of its own; called with m->lock held (tier_mooncake.h).  The
 * child is forked from whichever thread made the call; between fork and exec
 * it uses async-signal-safe calls only.
 */
#include "tier_mooncake.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"
#include "pinpool.h"

/* Stop the adapter: EOF asks it to go (gently: after 2 s it is killed), or
 * SIGKILL at once when it no longer answers. */
void tier_mc_adapter_stop(mc_t *m, bool gently)
{
    if (m->sock >= 0)
        close(m->sock);
    m->sock = -1;
    if (m->pid > 0) {
        int status;
        uint64_t t0 = tier_mc_now_ms();

        if (!gently)
            kill(m->pid, SIGKILL);
        while (waitpid(m->pid, &status, WNOHANG) == 0) {
            if (tier_mc_now_ms() - t0 > 2000) {
                kill(m->pid, SIGKILL);
                waitpid(m->pid, &status, 0);
                break;
            }
            usleep(10000);
        }
    }
    m->pid = 0;
    m->dead = true;
}

int tier_mc_adapter_find(mc_t *m)
{
    char exe[4096];
    ssize_t n;
    /* Beside the daemon (the build copies it to BUILD/); installed and in a
     * `make dist` tree, PREFIX/libexec/pinpool/ beside PREFIX/bin/; from a
     * test or bench binary (BUILD/tests/, BUILD/bench/), their BUILD/. */
    static const char *const rel[] = {"/mooncake_adapter.py", "/../libexec/pinpool/mooncake_adapter.py",
                                      "/../mooncake_adapter.py"};

    if (m->adapter[0] != '\0')
        return access(m->adapter, R_OK) == 0 ? 0 : -errno;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -ENOENT;
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
        snprintf(m->adapter, sizeof(m->adapter), "%s%s", exe, rel[i]);
        if (access(m->adapter, R_OK) == 0)
            return 0;
    }
    m->adapter[0] = '\0';
    return -ENOENT;
}

/* Send one request (with an optional fd) and wait for its reply, at most until
 * deadline.  On timeout or a broken adapter it is killed and the call fails. */
static int adapter_call(mc_t *m, const void *req, size_t reqlen, int fd, void *rep, size_t replen,
                        size_t *got, uint64_t deadline)
{
    uint64_t seq;
    int rc;

    memcpy(&seq, (const char *)req + 8, 8);
    rc = ipc_send_msg(m->sock, req, reqlen, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
    if (rc < 0) {
        tier_mc_adapter_stop(m, false);
        return tier__fail(PINPOOL_ETIER, "mooncake adapter: send: %s (it is restarted on the "
                          "next call)", strerror(-rc));
    }
    for (;;) {
        struct pollfd pfd = {.fd = m->sock, .events = POLLIN};
        uint64_t now = tier_mc_now_ms();
        ssize_t r;
        uint64_t rseq;

        if (now >= deadline) {
            tier_mc_adapter_stop(m, false);
            return tier__fail(-ETIMEDOUT, "mooncake: no answer within timeout_ms=%d (master "
                              "%s unreachable?); the adapter was stopped and restarts on the "
                              "next call", m->timeout_ms, m->master);
        }
        rc = poll(&pfd, 1, (int)(deadline - now));
        if (rc < 0 && errno != EINTR) {
            rc = -errno;
            tier_mc_adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter: poll: %s", strerror(-rc));
        }
        if (rc <= 0)
            continue;
        r = recv(m->sock, rep, replen, 0);
        if (r < (ssize_t)REP_HDR) {
            tier_mc_adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter %s (see its log%s%s)",
                              r == 0 ? "exited" : "sent a short reply",
                              m->log[0] ? " " : "", m->log);
        }
        memcpy(&rseq, rep, 8);
        if (rseq != seq) {
            tier_mc_adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter: reply out of order");
        }
        *got = (size_t)r;
        return 0;
    }
}

static void put_req_hdr(char *buf, uint16_t op, uint16_t flags, uint32_t n, uint64_t seq)
{
    memcpy(buf, &op, 2);
    memcpy(buf + 2, &flags, 2);
    memcpy(buf + 4, &n, 4);
    memcpy(buf + 8, &seq, 8);
}

/* A reply's status and message; returns the status. */
static int32_t rep_status(const char *rep, size_t len, uint32_t n, char *msg, size_t msglen)
{
    int32_t st;
    size_t off = REP_HDR + (size_t)n * 16;

    memcpy(&st, rep + 8, 4);
    snprintf(msg, msglen, "%.*s", off < len ? (int)(len - off) : 0, off < len ? rep + off : "");
    return st;
}

/* Give the adapter a staging buffer of len bytes (replacing the old one). */
int tier_mc_adapter_setbuf(mc_t *m, uint64_t len)
{
    char req[REQ_HDR + 8], rep[4096 + REP_HDR], msg[512];
    size_t got;
    int fd, rc;
    void *p;

    rc = tier_mc_stage_map(m, len, &fd, &p);
    if (rc != 0)
        return tier__fail(rc, "staging buffer of %" PRIu64 " bytes: %s", len, strerror(-rc));
    put_req_hdr(req, OP_SETBUF, 0, 0, ++m->seq);
    memcpy(req + REQ_HDR, &len, 8);
    rc = adapter_call(m, req, sizeof(req), fd, rep, sizeof(rep), &got,
                      tier_mc_now_ms() + (uint64_t)m->timeout_ms);
    if (rc == 0 && (rc = rep_status(rep, got, 0, msg, sizeof(msg))) != 0)
        rc = tier__fail(PINPOOL_ETIER, "mooncake adapter: %s", msg);
    if (rc != 0) {
        munmap(p, len);
        close(fd);
        return rc;
    }
    if (m->stage != NULL)
        munmap(m->stage, m->stage_len);
    if (m->memfd >= 0)
        close(m->memfd);
    m->stage = p;
    m->stage_len = len;
    m->memfd = fd;
    return 0;
}

int tier_mc_adapter_start(mc_t *m, char *err, size_t errlen)
{
    int sv[2], rc, logfd = -1;
    pid_t pid;
    char json[3072], req[REQ_HDR + sizeof(json)], rep[4096 + REP_HDR], msg[1024];
    char *argv[] = {m->python, "-u", m->adapter, NULL};
    size_t got;
    int n;
    uint64_t len = m->stage_len != 0 ? m->stage_len : m->buffer;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    if (m->log[0] != '\0')
        logfd = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        close(sv[0]);
        close(sv[1]);
        if (logfd >= 0)
            close(logfd);
        return rc;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec. */
        sigset_t all;

        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setsid(); /* the terminal's ^C is the daemon's to handle */
        if (dup2(sv[1], 3) != 3)
            _exit(127);
        if (logfd >= 0)
            dup2(logfd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(sv[1]);
    if (logfd >= 0)
        close(logfd);
    m->pid = pid;
    m->sock = sv[0];
    m->dead = false;

    n = snprintf(json, sizeof(json),
                 "{\"master\":\"%s\",\"metadata_server\":\"%s\",\"protocol\":\"%s\","
                 "\"device\":\"%s\",\"local_hostname\":\"%s\",\"segment\":%" PRIu64 ","
                 "\"local_buffer\":%" PRIu64 ",\"replicas\":%u,\"soft_pin\":%d,"
                 "\"hard_pin\":%d,\"prefer_local\":%d,\"local_segment\":\"%s\"}",
                 m->master_entry, m->metadata, m->protocol, m->device, m->hostname, m->segment,
                 m->local_buffer, m->replicas, m->soft_pin, m->hard_pin, m->prefer_local,
                 m->local_segment);
    if (n < 0 || (size_t)n >= sizeof(json) || strpbrk(m->master_entry, "\"\\") ||
        strpbrk(m->metadata, "\"\\") || strpbrk(m->hostname, "\"\\") ||
        strpbrk(m->device, "\"\\") || strpbrk(m->protocol, "\"\\") ||
        strpbrk(m->local_segment, "\"\\")) {
        tier_mc_adapter_stop(m, false);
        snprintf(err, errlen, "mooncake: parameters contain quotes or are too long");
        return PINPOOL_EINVAL;
    }
    put_req_hdr(req, OP_HELLO, 0, 0, ++m->seq);
    memcpy(req + REQ_HDR, json, (size_t)n);
    rc = adapter_call(m, req, REQ_HDR + (size_t)n, -1, rep, sizeof(rep), &got,
                      tier_mc_now_ms() + (uint64_t)m->timeout_ms);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake adapter (%s %s) did not start: %s", m->python, m->adapter,
                 tier_errmsg());
        return rc;
    }
    if (rep_status(rep, got, 0, msg, sizeof(msg)) != 0) {
        tier_mc_adapter_stop(m, false);
        snprintf(err, errlen, "mooncake: %s", msg);
        return PINPOOL_ETIER;
    }
    /* "upsert" or "remove+put", then "|" and the segment it prefers (prefer_local) */
    {
        char *bar = strchr(msg, '|');

        m->preferred[0] = '\0';
        if (bar != NULL) {
            *bar = '\0';
            snprintf(m->preferred, sizeof(m->preferred), "%s", bar + 1);
        }
        snprintf(m->replace, sizeof(m->replace), "%.31s", msg);
    }
    if (m->stage != NULL) { /* a restart: a fresh buffer of the same size */
        munmap(m->stage, m->stage_len);
        close(m->memfd);
        m->stage = NULL;
        m->memfd = -1;
    }
    rc = tier_mc_adapter_setbuf(m, len);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake: %s", tier_errmsg());
        tier_mc_adapter_stop(m, false);
        return rc;
    }
    return 0;
}

/* Run op over items (all in the staging buffer) through the adapter. */
int tier_mc_adapter_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n,
                        uint64_t deadline)
{
    char *req = m->req, *rep = m->rep;
    size_t len = REQ_HDR, got;
    char msg[512];
    int rc;

    if (m->dead) {
        char err[512];

        m->restarts++;
        rc = tier_mc_adapter_start(m, err, sizeof(err));
        if (rc != 0)
            return tier__fail(rc, "%s", err);
    }
    put_req_hdr(req, op, flags, n, ++m->seq);
    for (uint32_t i = 0; i < n; i++) {
        memcpy(req + len, &items[i].off, 8);
        memcpy(req + len + 8, &items[i].len, 8);
        memcpy(req + len + 16, &items[i].keylen, 4);
        memcpy(req + len + ITEM_HDR, items[i].key, items[i].keylen);
        len += ITEM_HDR + items[i].keylen;
    }
    rc = adapter_call(m, req, len, -1, rep, sizeof(m->rep), &got, deadline);
    if (rc != 0)
        return rc;
    if (rep_status(rep, got, 0, msg, sizeof(msg)) != 0)
        return tier__fail(PINPOOL_ETIER, "mooncake adapter: %s", msg);
    {
        uint32_t rn;

        memcpy(&rn, rep + 12, 4);
        if (rn != n || got < REP_HDR + (size_t)n * 16) {
            tier_mc_adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter: %u results for %u items", rn, n);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        memcpy(&items[i].rc, rep + REP_HDR + (size_t)i * 16, 8);
        memcpy(&items[i].aux, rep + REP_HDR + (size_t)i * 16 + 8, 8);
    }
    return 0;
}
