/*
 * test_session.c - libpinpool's session with its daemon (client/session.c,
 * client/client.c): a late answer on the fd socket is dropped, not handed to
 * the next request; after the daemon went every call says PINPOOL_ESESSION
 * and pinpool_reconnect makes a new session (arenas start over); a Put larger
 * than a message goes through a slice, every byte checked; and the library
 * refuses a socket another user may have planted (its directory's owner and
 * mode, the fd socket's peer uid, $PINPOOL_DAEMON_UID).
 *
 * late/: a relay between the library and the real daemon's fd socket (a
 * thread of the test: tests/test_session.c's relay_*) that can hold back an
 * answer; the gRPC socket is reached through a symlink in the relay's
 * directory.  trust/: fake listeners made as the test users (tests/users.c;
 * skipped when not root).
 *
 * Owns: its daemons, the relay thread and the fake listeners' processes (each
 * killed by its pid at the end of its test).  Never: runs a test that cannot
 * fail - all 9 fail against main's library at ca08b9b (built with a stand-in
 * pinpool_reconnect that fails): the held answer was waited for, calls after
 * a restart answered OK or ECONNECT, a Put over the limit was -EMSGSIZE, and
 * every fake listener was connected to.  Locking: the relay's flags are
 * atomics.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "ipc.h"
#include "paths.h"
#include "pinpool.h"
#include "users.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define CHUNK (16 * MiB)

static test_daemon_t d;

static void start(void)
{
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL),
                 0);
}

static void stop(void)
{
    test_daemon_finish(&d);
}

/* The bytes written through slice s (of ctx) are the slice's own: released
 * under key and acquired by another session (its own fd socket, its own
 * mapping), they compare equal. */
static void expect_slice_holds(pinpool_ctx_t *ctx, pinpool_slice_t *s, const char *key,
                               unsigned seed)
{
    pinpool_ctx_t *other = test_connect(&d);
    pinpool_slice_t t;

    test_fill(s->ptr, s->size, seed);
    cr_assert_eq(pinpool_release(ctx, s->id, key, 0), 0, "release: %s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_acquire(other, key, 0, &t), 0, "acquire: %s", pinpool_errmsg(other));
    cr_expect_eq(t.size, s->size);
    cr_expect(test_same(t.ptr, t.size, seed), "'%s': the daemon holds other bytes than the "
              "slice this process mapped", key);
    cr_expect_eq(pinpool_free(other, t.id, NULL), 0, "%s", pinpool_errmsg(other));
    pinpool_close(other);
}

/* ---- late: a relay that holds back an answer ------------------------------------------ */

typedef struct relay {
    char dir[64];
    char sock[128];     /* the gRPC socket's path through dir (a symlink) */
    char fdpath[160];   /* the relay's fd socket */
    char upstream[160]; /* the daemon's fd socket */
    int listener;
    int hold_ms;        /* atomic: hold each answer that long before passing it on */
    int held;           /* atomic: answers held and then passed on */
    int stop;           /* atomic */
    pthread_t thread;
} relay_t;

/* Pass one message from one socket to the other, descriptors included;
 * false when from closed. */
static bool relay_one(relay_t *r, int from, int to, bool answer)
{
    char buf[1024];
    int fds[IPC_MAX_FDS];
    size_t nfds = 0;
    ssize_t n = ipc_recv_msg(from, buf, sizeof(buf), fds, IPC_MAX_FDS, &nfds);
    int hold = __atomic_load_n(&r->hold_ms, __ATOMIC_ACQUIRE);

    if (n <= 0)
        return false;
    if (answer && hold > 0 && ipc_msg_check(buf, (size_t)n) == IPC_MSG_MAP_RESP)
        usleep((useconds_t)hold * 1000);
    ipc_send_msg(to, buf, (size_t)n, fds, nfds);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    if (answer && hold > 0 && ipc_msg_check(buf, (size_t)n) == IPC_MSG_MAP_RESP)
        __atomic_add_fetch(&r->held, 1, __ATOMIC_RELEASE);
    return true;
}

static void *relay_main(void *arg)
{
    relay_t *r = arg;
    struct pollfd a = {.fd = r->listener, .events = POLLIN};
    int client, up;

    while (poll(&a, 1, 100) == 0)
        if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
            return NULL;
    client = accept4(r->listener, NULL, NULL, SOCK_CLOEXEC);
    up = ipc_connect_seqpacket(r->upstream);
    if (client < 0 || up < 0)
        return NULL;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p[2] = {{.fd = client, .events = POLLIN}, {.fd = up, .events = POLLIN}};
        if (poll(p, 2, 100) <= 0)
            continue;
        if ((p[0].revents & (POLLIN | POLLHUP)) && !relay_one(r, client, up, false))
            break;
        if ((p[1].revents & (POLLIN | POLLHUP)) && !relay_one(r, up, client, true))
            break;
    }
    close(client);
    close(up);
    return NULL;
}

static void relay_start(relay_t *r, const test_daemon_t *daemon)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/pinpool-relay-XXXXXX");
    cr_assert_not_null(mkdtemp(r->dir));
    snprintf(r->sock, sizeof(r->sock), "%s/pinpool.sock", r->dir);
    cr_assert_eq(symlink(daemon->socket, r->sock), 0);
    cr_assert_eq(ipc_fd_socket_path(r->sock, r->fdpath, sizeof(r->fdpath)), 0);
    cr_assert_eq(ipc_fd_socket_path(daemon->socket, r->upstream, sizeof(r->upstream)), 0);
    r->listener = ipc_listen_seqpacket(r->fdpath, 4);
    cr_assert_geq(r->listener, 0, "listen on %s: %s", r->fdpath, strerror(-r->listener));
    cr_assert_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_stop(relay_t *r)
{
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
    pthread_join(r->thread, NULL);
    close(r->listener);
    test_rm_rf(r->dir);
}

TestSuite(late, .init = start, .fini = stop, .timeout = 60);

/*
 * The daemon's answer to a slice's descriptors comes after the library gave
 * up on it: that request fails with PINPOOL_ETIMEOUT within the bound, the
 * late answer is dropped when it comes, and the next slices map their own
 * chunks (the daemon reads back what was written through them).  On main the
 * wait was not bounded by $PINPOOL_FD_TIMEOUT_MS (10 s, then every later
 * answer was the previous request's).
 */
Test(late, an_answer_after_the_request_gave_up_is_dropped_not_handed_to_the_next)
{
    relay_t r;
    pinpool_slice_t a, b, c;
    pinpool_ctx_t *ctx;
    double t0;
    int rc;

    relay_start(&r, &d);
    setenv("PINPOOL_FD_TIMEOUT_MS", "300", 1);
    ctx = pinpool_connect(r.sock);
    cr_assert_eq(pinpool_err(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_alloc(ctx, CHUNK, NULL, &a), 0, "%s", pinpool_errmsg(ctx));

    __atomic_store_n(&r.hold_ms, 1500, __ATOMIC_RELEASE);
    t0 = test_now_s();
    rc = pinpool_alloc(ctx, CHUNK, NULL, &b);
    cr_expect_eq(rc, PINPOOL_ETIMEOUT, "a held answer: %s (%s)", pinpool_err_name(rc),
                 pinpool_errmsg(ctx));
    cr_expect_lt(test_now_s() - t0, 1.2, "the wait was not bounded by $PINPOOL_FD_TIMEOUT_MS");
    if (rc == PINPOOL_ETIMEOUT)
        cr_expect(strstr(pinpool_errmsg(ctx), "PINPOOL_FD_TIMEOUT_MS") != NULL, "%s",
                  pinpool_errmsg(ctx));
    if (rc == 0)
        pinpool_free(ctx, b.id, NULL);
    for (int i = 0; i < 300 && __atomic_load_n(&r.held, __ATOMIC_ACQUIRE) == 0; i++)
        usleep(10000);
    cr_assert_eq(__atomic_load_n(&r.held, __ATOMIC_ACQUIRE), 1, "the held answer never went");
    __atomic_store_n(&r.hold_ms, 0, __ATOMIC_RELEASE);

    /* The late answer sits on the socket now; the next requests get their own. */
    cr_assert_eq(pinpool_alloc(ctx, CHUNK, NULL, &c), 0, "%s", pinpool_errmsg(ctx));
    expect_slice_holds(ctx, &c, "after-late", 3);
    expect_slice_holds(ctx, &a, "before-late", 1);
    cr_expect_eq(pinpool_err(ctx), 0, "the session must go on: %s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    unsetenv("PINPOOL_FD_TIMEOUT_MS");
    relay_stop(&r);
}

/* ---- restart: PINPOOL_ESESSION, pinpool_reconnect ------------------------------------ */

TestSuite(restart, .init = start, .fini = stop, .timeout = 90);

static void restart_daemon(int sig)
{
    int rc = test_daemon_kill(&d, sig);

    cr_assert(rc == 128 + sig || rc == 0, "the daemon ended with %d", rc);
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                     NULL), 0);
}

/* Whether reading p faults (in a child: the parent stays). */
static bool faults(const void *p)
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        volatile const unsigned char *q = p;
        signal(SIGSEGV, SIG_DFL); /* not a sanitizer's handler: die of it */
        signal(SIGBUS, SIG_DFL);
        _exit(q[0] == 0x5a ? 3 : 2);
    }
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS);
}

static void expect_esession(pinpool_ctx_t *ctx, int rc, const char *what)
{
    cr_expect_eq(rc, PINPOOL_ESESSION, "%s after the daemon went: %s (%s)", what,
                 pinpool_err_name(rc), pinpool_errmsg(ctx));
    if (rc == PINPOOL_ESESSION)
        cr_expect(strstr(pinpool_errmsg(ctx), "pinpool_reconnect") != NULL, "%s: %s", what,
                  pinpool_errmsg(ctx));
}

/*
 * The daemon is killed and a new one starts on the socket under a connected
 * context: every call says PINPOOL_ESESSION (one error, with the way out),
 * so does pinpool_err; pinpool_reconnect while no daemon runs is
 * PINPOOL_ECONNECT and changes nothing; with the new daemon it makes a new
 * session: new slices map and hold their bytes, the old ones are unmapped
 * (touching one faults), an arena made before leases anew and says
 * PINPOOL_ESESSION for a block of the old leases.
 */
Test(restart, every_call_says_esession_until_reconnect_makes_a_new_session)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_arena_t *arena = NULL;
    pinpool_slice_t a, s;
    char old_id[64], buf[16];
    void *blk = NULL, *blk2 = NULL;
    uint64_t got;

    cr_assert_eq(pinpool_arena_create(ctx, CHUNK, NULL, &arena), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_arena_alloc(arena, 4096, 0, &blk), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_alloc(ctx, CHUNK, NULL, &a), 0, "%s", pinpool_errmsg(ctx));
    memset(a.ptr, 0x5a, a.size);
    snprintf(old_id, sizeof(old_id), "%s", pinpool_client_id(ctx));

    cr_assert_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
    cr_expect_eq(pinpool_err(ctx), PINPOOL_ESESSION, "pinpool_err after the daemon went: %s",
                 pinpool_err_name(pinpool_err(ctx)));
    cr_expect_eq(pinpool_reconnect(ctx), PINPOOL_ECONNECT, "no daemon runs: %s",
                 pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_err(ctx), PINPOOL_ESESSION, "a failed reconnect changes nothing");
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                     NULL), 0);

    cr_expect_eq(pinpool_err(ctx), PINPOOL_ESESSION); /* errmsg: the failed reconnect's */
    expect_esession(ctx, pinpool_alloc(ctx, MiB, NULL, &s), "pinpool_alloc");
    expect_esession(ctx, pinpool_free(ctx, a.id, NULL), "pinpool_free");
    expect_esession(ctx, pinpool_ping(ctx), "pinpool_ping");
    expect_esession(ctx, pinpool_put(ctx, "k", "v", 1, 0), "pinpool_put");
    expect_esession(ctx, pinpool_get(ctx, "k", buf, sizeof(buf), &got), "pinpool_get");
    expect_esession(ctx, pinpool_arena_alloc(arena, 4096, 0, &blk2), "pinpool_arena_alloc");
    cr_expect_eq(((unsigned char *)a.ptr)[0], 0x5a, "the old mapping stays until reconnect");

    cr_assert_eq(pinpool_reconnect(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_err(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_str_neq(pinpool_client_id(ctx), old_id);
    cr_expect(faults(a.ptr), "a pointer into a slice of the old session still reaches memory");
    cr_assert_eq(pinpool_alloc(ctx, CHUNK, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    expect_slice_holds(ctx, &s, "new-session", 7);
    cr_expect_eq(pinpool_arena_free(arena, blk), PINPOOL_ESESSION, "an old block: %s",
                 pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_arena_alloc(arena, 4096, 0, &blk2), 0, "%s", pinpool_errmsg(ctx));
    memset(blk2, 0x33, 4096);
    cr_expect_eq(pinpool_arena_free(arena, blk2), 0, "%s", pinpool_errmsg(ctx));
    pinpool_arena_destroy(arena);
    pinpool_close(ctx);
}

/* A clean stop (SIGTERM) and a restart: the same one error, and the session
 * a reconnect makes is the new daemon's only client. */
Test(restart, a_clean_stop_and_restart_too)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_pool_info_t info;
    pinpool_slice_t s;

    cr_assert_eq(pinpool_alloc(ctx, MiB, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    restart_daemon(SIGTERM);
    expect_esession(ctx, pinpool_alloc(ctx, MiB, NULL, &s), "pinpool_alloc");
    cr_assert_eq(pinpool_reconnect(ctx), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &info);
    cr_expect_eq(info.num_clients, 1);
    cr_expect_eq(info.used_bytes, 0, "the old session's slice came back");
    pinpool_close(ctx);
}

/* A context whose pinpool_connect failed (no daemon yet) is reconnected
 * once one runs, and then works like any other. */
Test(restart, a_context_that_never_connected_is_reconnected)
{
    pinpool_ctx_t *ctx;
    pinpool_slice_t s;

    cr_assert_eq(test_daemon_kill(&d, SIGTERM), 0);
    ctx = pinpool_connect(d.socket);
    cr_assert_eq(pinpool_err(ctx), PINPOOL_ECONNECT, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_alloc(ctx, MiB, NULL, &s), PINPOOL_ECLOSED);
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                     NULL), 0);
    cr_assert_eq(pinpool_reconnect(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_err(ctx), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_str_neq(pinpool_client_id(ctx), "");
    cr_assert_eq(pinpool_alloc(ctx, CHUNK, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    expect_slice_holds(ctx, &s, "late-connect", 21);
    pinpool_close(ctx);
}

typedef struct caller {
    pinpool_ctx_t *ctx;
    int index;
    int *stop;
    int calls, unexpected, last_bad;
    char bad_msg[256];
} caller_t;

/* Calls that touch no slice memory (a reconnect unmaps it), until *stop: each
 * answers, with OK or with one of the errors a restart explains. */
static void *caller_main(void *arg)
{
    caller_t *c = arg;
    char key[32], buf[64];
    pinpool_slice_t s;
    uint64_t got;

    snprintf(key, sizeof(key), "caller-%d", c->index);
    memset(buf, c->index, sizeof(buf));
    while (!__atomic_load_n(c->stop, __ATOMIC_ACQUIRE)) {
        int rc[5];
        rc[0] = pinpool_put(c->ctx, key, buf, sizeof(buf), 0);
        rc[1] = pinpool_get(c->ctx, key, buf, sizeof(buf), &got);
        rc[2] = pinpool_exists(c->ctx, key);
        rc[3] = pinpool_alloc(c->ctx, 64 * 1024, NULL, &s);
        rc[4] = rc[3] == 0 ? pinpool_free(c->ctx, s.id, NULL) : 0;
        for (int i = 0; i < 5; i++) {
            bool ok = rc[i] == 0 || rc[i] == PINPOOL_ESESSION || rc[i] == PINPOOL_ECONNECT ||
                      (i == 1 && rc[i] == PINPOOL_ENOKEY) || (i == 2 && rc[i] == 1) ||
                      (i == 4 && rc[i] == PINPOOL_ENOENT);
            if (!ok) {
                c->unexpected++;
                c->last_bad = rc[i];
                snprintf(c->bad_msg, sizeof(c->bad_msg), "call %d: %s", i,
                         pinpool_errmsg(c->ctx));
            }
        }
        c->calls++;
    }
    return NULL;
}

/*
 * Four threads call on one context while the daemon is killed and restarted
 * three times and the main thread reconnects it: every call answers, OK or
 * with an error a restart explains (ESESSION, ECONNECT while none runs; a key
 * or slice of the old session gone), nothing crashes, and at the end the
 * context works and holds nothing of the old sessions.
 */
Test(restart, calls_on_other_threads_while_the_context_reconnects)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pthread_t th[4];
    caller_t c[4];
    int stop = 0, total = 0;
    pinpool_pool_info_t info;

    for (int i = 0; i < 4; i++) {
        c[i] = (caller_t){.ctx = ctx, .index = i, .stop = &stop};
        cr_assert_eq(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    }
    for (int round = 0; round < 3; round++) {
        int rc;
        usleep(200000);
        restart_daemon(SIGKILL);
        for (int i = 0; i < 100 && (rc = pinpool_reconnect(ctx)) != 0; i++)
            usleep(20000);
        cr_assert_eq(rc, 0, "%s", pinpool_errmsg(ctx));
    }
    usleep(200000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += c[i].calls;
        cr_expect_eq(c[i].unexpected, 0, "thread %d: %d unexpected answers, the last %s (%s)",
                     i, c[i].unexpected, pinpool_err_name(c[i].last_bad), c[i].bad_msg);
    }
    cr_expect_gt(total, 12, "the threads made %d rounds of calls", total);
    cr_expect_eq(pinpool_err(ctx), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf(key, sizeof(key), "caller-%d", i);
        pinpool_remove(ctx, key);
    }
    test_pool_info(ctx, &info);
    cr_expect_eq(info.used_bytes, 0, "%llu bytes still used", (unsigned long long)info.used_bytes);
    pinpool_close(ctx);
}

/* ---- big: Put and Get above the message limit -------------------------------------- */

static void start_small_messages(void)
{
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB",
                                   "--max-message-size", "1MiB", NULL), 0);
}

TestSuite(big, .init = start_small_messages, .fini = stop, .timeout = 60);

/* The object under key, acquired and compared byte for byte with seed's
 * pattern, then released again under key. */
static void expect_object(pinpool_ctx_t *ctx, const char *key, uint64_t len, unsigned seed)
{
    pinpool_slice_t s;

    cr_assert_eq(pinpool_acquire(ctx, key, 0, &s), 0, "acquire '%s': %s", key,
                 pinpool_errmsg(ctx));
    cr_expect_eq(s.size, len);
    cr_expect(test_same(s.ptr, len, seed), "'%s': other bytes than put", key);
    cr_assert_eq(pinpool_release(ctx, s.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
}

/*
 * With --max-message-size 1MiB, a 3 MiB + 1 byte Put stores every byte
 * (through a slice), replaces an object there, and is replaced by a small
 * Put; a Get of it is -EMSGSIZE naming the limit and the way (acquire).  On
 * main such a Put was -EMSGSIZE.
 */
Test(big, a_put_larger_than_a_message_goes_through_a_slice)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    uint64_t len = 3 * MiB + 1, got = 0;
    unsigned char *v = malloc(len), small[100];
    int rc;

    cr_assert_not_null(v);
    test_fill(v, len, 11);
    rc = pinpool_put(ctx, "big", v, len, 0);
    cr_assert_eq(rc, 0, "put of 3 MiB over a 1 MiB limit: %s (%s)", pinpool_err_name(rc),
                 pinpool_errmsg(ctx));
    expect_object(ctx, "big", len, 11);

    test_fill(v, len, 12); /* replaces */
    cr_assert_eq(pinpool_put(ctx, "big", v, len, 0), 0, "%s", pinpool_errmsg(ctx));
    expect_object(ctx, "big", len, 12);
    cr_expect_eq(pinpool_exists(ctx, "big"), 1);

    rc = pinpool_get(ctx, "big", v, len, &got);
    cr_expect_eq(rc, -EMSGSIZE, "get over the limit: %s", pinpool_err_name(rc));
    cr_expect(strstr(pinpool_errmsg(ctx), "pinpool_acquire") != NULL, "%s", pinpool_errmsg(ctx));

    test_fill(small, sizeof(small), 13); /* a small Put replaces a big object */
    cr_assert_eq(pinpool_put(ctx, "big", small, sizeof(small), 0), 0, "%s", pinpool_errmsg(ctx));
    memset(v, 0, sizeof(small));
    cr_assert_eq(pinpool_get(ctx, "big", v, len, &got), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(got, sizeof(small));
    cr_expect(test_same(v, sizeof(small), 13));
    cr_expect_eq(pinpool_remove(ctx, "big"), 0);
    free(v);
    pinpool_close(ctx);
}

/* ---- trust: a socket another user may have planted ------------------------------------ */

typedef struct fake {
    char dir[64];   /* made by the user */
    char fdpath[128];
    int pipe[2];
} fake_t;

/* As the test user: a directory of its own with a listening fd socket in it,
 * held by a grandchild (which says its pid, then waits to be killed). */
static int fake_listen(void *arg)
{
    fake_t *f = arg;
    pid_t pid;
    int fd;

    snprintf(f->dir, sizeof(f->dir), "/tmp/pinpool-fake-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return 1;
    snprintf(f->fdpath, sizeof(f->fdpath), "%s/pinpool.sock.fd", f->dir);
    fd = ipc_listen_seqpacket(f->fdpath, 4);
    if (fd < 0)
        return 2;
    pid = fork();
    if (pid == 0) {
        pid_t me = getpid();
        if (write(f->pipe[1], &me, sizeof(me)) != sizeof(me) ||
            write(f->pipe[1], f->dir, sizeof(f->dir)) != sizeof(f->dir))
            _exit(1);
        for (;;)
            pause();
    }
    return pid > 0 ? 0 : 3;
}

/* A fake listener as user u: its pid, the directory (owned by u) in dir. */
static pid_t fake_start(const test_user_t *u, char *dir, size_t len)
{
    fake_t f;
    pid_t pid = -1;

    memset(&f, 0, sizeof(f));
    cr_assert_eq(pipe(f.pipe), 0);
    cr_assert_eq(test_run_as(u, false, 0, fake_listen, &f), 0, "the fake listener as %s",
                 u->name);
    cr_assert_eq(read(f.pipe[0], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
    cr_assert_eq(read(f.pipe[0], f.dir, sizeof(f.dir)), (ssize_t)sizeof(f.dir));
    close(f.pipe[0]);
    close(f.pipe[1]);
    snprintf(dir, len, "%s", f.dir);
    return pid;
}

static void fake_stop(pid_t pid, const char *dir)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    test_rm_rf(dir);
}

static int connect_err(const char *sock, char *msg, size_t len)
{
    pinpool_ctx_t *ctx = pinpool_connect(sock);
    int rc = pinpool_err(ctx);

    snprintf(msg, len, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    return rc;
}

static void users_or_skip(test_users_t *u)
{
    char why[256];

    if (!test_users_get(u, why, sizeof(why)))
        cr_skip_test("%s", why);
}

static void trust_init(void)
{
    setenv("PINPOOL_FD_TIMEOUT_MS", "300", 1); /* the fakes never greet */
    unsetenv("PINPOOL_DAEMON_UID");
}

TestSuite(trust, .init = trust_init, .timeout = 60);

/*
 * Another user's directory where the daemon's would be (a squatted
 * /tmp/pinpool-$UID): refused before connecting, PINPOOL_EPERM naming the
 * owner and PINPOOL_DAEMON_UID; with PINPOOL_DAEMON_UID=that user it is
 * trusted (the fake then does not greet: a timeout, not a refusal).  On main
 * the library connected and waited for the greeting.
 */
Test(trust, a_directory_of_another_user_is_refused)
{
    char dir[64], sock[128], msg[512];
    test_users_t u;
    pid_t pid;
    int rc;

    users_or_skip(&u);
    pid = fake_start(&u.a, dir, sizeof(dir));
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", dir);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_EPERM, "%s: %s", pinpool_err_name(rc), msg);
    cr_expect(strstr(msg, "pinpool-ta") != NULL && strstr(msg, "PINPOOL_DAEMON_UID") != NULL,
              "%s", msg);

    setenv("PINPOOL_DAEMON_UID", u.a.name, 1);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_ETIMEOUT, "trusted by PINPOOL_DAEMON_UID: %s: %s",
                 pinpool_err_name(rc), msg);
    unsetenv("PINPOOL_DAEMON_UID");
    fake_stop(pid, dir);
}

/*
 * A listener of another user in a directory this process trusts (root's,
 * 0755): the directory passes, the fd socket's peer uid (SO_PEERCRED) does
 * not - PINPOOL_EPERM naming that uid; PINPOOL_DAEMON_UID=its uid (a number)
 * trusts it.
 */
Test(trust, a_listener_of_another_user_is_refused)
{
    char dir[64], mine[64] = "/tmp/pinpool-mine-XXXXXX", from[128], to[128], sock[128],
         msg[512], uid[16];
    test_users_t u;
    pid_t pid;
    int rc;

    users_or_skip(&u);
    pid = fake_start(&u.b, dir, sizeof(dir));
    cr_assert_not_null(mkdtemp(mine));
    cr_assert_eq(chmod(mine, 0755), 0);
    snprintf(from, sizeof(from), "%s/pinpool.sock.fd", dir);
    snprintf(to, sizeof(to), "%s/pinpool.sock.fd", mine);
    cr_assert_eq(rename(from, to), 0, "%s", strerror(errno)); /* the listener stays */
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", mine);

    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_EPERM, "%s: %s", pinpool_err_name(rc), msg);
    cr_expect(strstr(msg, "pinpool-tb") != NULL && strstr(msg, "runs as") != NULL, "%s", msg);

    snprintf(uid, sizeof(uid), "%u", (unsigned)u.b.uid);
    setenv("PINPOOL_DAEMON_UID", uid, 1);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_ETIMEOUT, "trusted by PINPOOL_DAEMON_UID: %s: %s",
                 pinpool_err_name(rc), msg);
    setenv("PINPOOL_DAEMON_UID", "no-such-user-pinpool", 1);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_EINVAL, "%s: %s", pinpool_err_name(rc), msg);
    unsetenv("PINPOOL_DAEMON_UID");
    fake_stop(pid, dir);
    test_rm_rf(mine);
}

/* A directory that others may write to (where anyone could have put the
 * socket): refused, whoever owns it. */
Test(trust, a_directory_others_may_write_is_refused)
{
    char mine[64] = "/tmp/pinpool-open-XXXXXX", fdpath[128], sock[128], msg[512];
    int fd, rc;

    cr_assert_not_null(mkdtemp(mine));
    snprintf(fdpath, sizeof(fdpath), "%s/pinpool.sock.fd", mine);
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", mine);
    fd = ipc_listen_seqpacket(fdpath, 4);
    cr_assert_geq(fd, 0);
    cr_assert_eq(chmod(mine, 0777), 0);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_EPERM, "%s: %s", pinpool_err_name(rc), msg);
    cr_expect(strstr(msg, "writable by everyone") != NULL, "%s", msg);
    cr_assert_eq(chmod(mine, 0720), 0);
    rc = connect_err(sock, msg, sizeof(msg));
    cr_expect_eq(rc, PINPOOL_EPERM, "%s: %s", pinpool_err_name(rc), msg);
    cr_expect(strstr(msg, "writable by its group") != NULL, "%s", msg);
    close(fd);
    test_rm_rf(mine);
}
