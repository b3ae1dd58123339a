/*
 * test_isolation.c - the uid is the boundary, also for descriptors, and no
 * slice shows stale bytes (issue 12, bullets 2 and 3), tried as an attacker
 * on the node would: the real daemon (memfd chunks, CPU-only), real client
 * processes, other users (tests/users.h) where the test is about them.
 *
 *   - a process that keeps a chunk descriptor past its session (another
 *     user, and the daemon's own uid): once the chunk has passed to another
 *     uid, reading through it shows none of the new owner's bytes, and
 *     writing and PUNCH_HOLE through it do not touch them;
 *   - placement: two uids never share a chunk; an idle chunk is reused by its
 *     uid without new memory, and gets new memory (counted in GetPoolInfo)
 *     exactly when it passes to another uid; within one uid a kept
 *     descriptor does reach later slices in its chunk (allowed: README,
 *     "Security model");
 *   - a new slice never shows bytes freed by another session: of the same
 *     uid, of another uid, or written by the daemon (a Put object);
 *   - used_bytes drops to 0 at once when a client dies, the bytes being
 *     zeroed show as cleaning_bytes;
 *   - a session maps no kept slice of another uid (its tag is not found),
 *     and acquires no object of another uid (its key is not found); the
 *     owner's object is intact after the try.
 *
 * Owns: its daemon (one per test, 16 MiB chunks), its child processes and
 * the pipes to them.  gRPC is used in this process only after the children
 * are forked (see test_daemon.c).  Never: leaves a child running (each one
 * waits on a pipe that closes with the test).
 * Locking: none; Criterion runs each test in its own process.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "internal.h"
#include "ipc.h"
#include "paths.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "users.h"
#include "util.h"

#define MiB (1024ull * 1024)
#define CHUNK (16 * MiB)
#define METHOD(name) "/pinpool.v1.PinPool/" name

static test_daemon_t d;
static test_users_t users;

static void stop(void)
{
    test_daemon_finish(&d);
}

TestSuite(isolation, .fini = stop, .timeout = 60);

static void need_users(void)
{
    char why[128];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
}

/* A daemon of chunks chunks of 16 MiB; with others (users), sessions of the
 * test users and of root are let in, and the socket directory and sockets
 * are opened to the users' shared group. */
static void start(unsigned chunks, bool others)
{
    char size[32], allow[64];

    snprintf(size, sizeof(size), "%uMiB", chunks * 16);
    if (!others) {
        cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", size, "--chunk-size", "16MiB",
                                       NULL), 0);
        return;
    }
    snprintf(allow, sizeof(allow), "0,%u,%u", (unsigned)users.a.uid, (unsigned)users.b.uid);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", size, "--chunk-size", "16MiB",
                                   "--allow-uid", allow, NULL), 0);
    /* Until --allow-gid sets the group of the socket directory itself. */
    char fdsock[160];
    ipc_fd_socket_path(d.socket, fdsock, sizeof(fdsock));
    cr_assert_eq(chmod(d.dir, 0711), 0);
    cr_assert_eq(chown(d.socket, 0, users.shared), 0);
    cr_assert_eq(chown(fdsock, 0, users.shared), 0);
    cr_assert_eq(chmod(d.socket, 0660), 0);
    cr_assert_eq(chmod(fdsock, 0660), 0);
}

/* ---- the children and the pipes to them --------------------------------------------- */

typedef struct child {
    pid_t pid;
    int to[2], from[2]; /* pipes: parent -> child, child -> parent */
} child_t;

typedef struct job {
    child_t *ch;
    int (*fn)(struct job *job);
    uint64_t arg;       /* what the test hands it */
    bool check;         /* fill_or_check: check, rather than fill */
} job_t;

/* In the child: tell the parent a number; wait for its word. */
static void say(job_t *j, uint64_t v)
{
    if (write(j->ch->from[1], &v, sizeof(v)) != sizeof(v))
        _exit(90);
}

static uint64_t hear(job_t *j)
{
    uint64_t v;

    if (read(j->ch->to[0], &v, sizeof(v)) != sizeof(v))
        _exit(91); /* the parent is gone: so are we */
    return v;
}

static int run_job(void *arg)
{
    job_t *j = arg;

    return j->fn(j);
}

/* Start j->fn in a child process, as user u (NULL: as this process's uid). */
static void spawn(child_t *ch, job_t *j, const test_user_t *u)
{
    cr_assert_eq(pipe(ch->to), 0);
    cr_assert_eq(pipe(ch->from), 0);
    j->ch = ch;
    ch->pid = fork();
    cr_assert_geq(ch->pid, 0);
    if (ch->pid == 0) {
        close(ch->to[1]);
        close(ch->from[0]);
        _exit(u != NULL ? test_run_as(u, true, users.shared, run_job, j) : run_job(j));
    }
    close(ch->to[0]);
    close(ch->from[1]);
}

static uint64_t hear_from(child_t *ch, const char *what)
{
    uint64_t v = UINT64_MAX;

    cr_assert_eq(read(ch->from[0], &v, sizeof(v)), (ssize_t)sizeof(v),
                 "the child died before it said %s", what);
    return v;
}

static void tell(child_t *ch, uint64_t v)
{
    cr_assert_eq(write(ch->to[1], &v, sizeof(v)), (ssize_t)sizeof(v));
}

/* The child's exit status (its job's return value). */
static int reap(child_t *ch)
{
    int status;

    close(ch->to[1]);
    close(ch->from[0]);
    cr_assert_eq(waitpid(ch->pid, &status, 0), ch->pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- an attacker who keeps a chunk descriptor ----------------------------------------- */

/*
 * Opens a session by hand, allocates 1 MiB, asks for its chunk's descriptor
 * (MAP_REQ) and keeps it; ends the session; says which chunk; on the word,
 * reads the chunk through the kept descriptor (seed 9 is the victim's
 * pattern: 21 if it is there), writes 0xee over it and punches a hole in all
 * of it.  Exit 0 when it saw nothing of the victim's.
 */
static int keep_fd_attacker(job_t *j)
{
    const char *socket = d.socket;
    char fdpath[160];
    ipc_hello_t hello;
    ipc_map_req_t req = {0};
    ipc_map_resp_t resp;
    int fds[IPC_MAX_FDS], s, kept;
    size_t nfds = 0;
    char msg[256];
    pinpool__rpc_t *rpc;
    Pinpool__V1__AllocatePoolMemoryRequest areq = PINPOOL__V1__ALLOCATE_POOL_MEMORY_REQUEST__INIT;
    Pinpool__V1__AllocatePoolMemoryResponse *ar = NULL;
    uint32_t chunk;
    void *p;
    int rc;

    ipc_fd_socket_path(socket, fdpath, sizeof(fdpath));
    s = ipc_connect_seqpacket(fdpath);
    if (s < 0)
        return 10;
    if (ipc_recv_msg(s, &hello, sizeof(hello), NULL, 0, &nfds) != (ssize_t)sizeof(hello) ||
        hello.status != 0)
        return 11;
    if (pinpool__rpc_open(&rpc, socket) != 0)
        return 12;
    pinpool__rpc_set_token(rpc, hello.token);
    areq.client_id = hello.client_id;
    areq.device_id = -1;
    areq.size_bytes = MiB;
    rc = pinpool__rpc_call(rpc, METHOD("AllocatePoolMemory"), &areq.base,
                           &pinpool__v1__allocate_pool_memory_response__descriptor,
                           (ProtobufCMessage **)&ar, NULL, msg, sizeof(msg));
    if (rc != 0 || ar->n_chunks != 1) {
        fprintf(stderr, "attacker: alloc: %s\n", msg);
        return 13;
    }
    chunk = ar->chunks[0]->chunk_index;
    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 1, sizeof(req));
    req.slice_id = ar->slice_id;
    req.first_chunk = chunk;
    req.count = 1;
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    if (ipc_send_msg(s, &req, sizeof(req), NULL, 0) != 0 ||
        ipc_recv_msg(s, &resp, sizeof(resp), fds, IPC_MAX_FDS, &nfds) != (ssize_t)sizeof(resp) ||
        resp.status != 0 || nfds != 1)
        return 14;
    kept = fds[0];
    pinpool__rpc_close(rpc);
    close(s); /* the session ends: its slice goes; the descriptor stays ours */
    say(j, chunk);

    hear(j); /* the chunk has passed to the victim, who wrote its bytes */
    p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, kept, 0);
    if (p == MAP_FAILED)
        return 15;
    rc = test_same(p, CHUNK, 9) ? 21 : 0;
    memset(p, 0xee, CHUNK);
    if (fallocate(kept, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, CHUNK) != 0)
        rc = rc != 0 ? rc : 16;
    munmap(p, CHUNK);
    close(kept);
    say(j, 0);
    return rc;
}

/*
 * Allocates the whole pool as slices of one chunk (j->arg of them), fills
 * each with seed 9, says the chunk of each (out: first chunk of slice i),
 * and on the word checks them all.  Exit 0 when its bytes are intact.
 */
static int whole_chunk_victim(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s[8];
    int rc = 0;

    if (pinpool_err(ctx) != 0) {
        fprintf(stderr, "victim: connect: %s\n", pinpool_errmsg(ctx));
        return 30;
    }
    for (uint64_t i = 0; i < j->arg; i++) {
        if (pinpool_alloc(ctx, CHUNK, NULL, &s[i]) != 0) {
            fprintf(stderr, "victim: alloc %" PRIu64 ": %s\n", i, pinpool_errmsg(ctx));
            return 31;
        }
        test_fill(s[i].ptr, CHUNK, 9);
    }
    say(j, 0);
    hear(j); /* the attacker did its worst */
    for (uint64_t i = 0; i < j->arg; i++)
        if (!test_same(s[i].ptr, CHUNK, 9))
            rc = 32;
    pinpool_close(ctx);
    return rc;
}

static uint64_t replacements(void)
{
    /* a session: a daemon with an allow list answers only sessions */
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_pool_info_t info;
    uint64_t n = UINT64_MAX;

    if (pinpool_err(ctx) == 0 && pinpool_pool_info(ctx, &info) == 0) {
        n = info.chunk_replacements;
        pinpool_pool_info_free(&info);
    }
    pinpool_close(ctx);
    return n;
}

/* The attacker (as attacker, NULL: this process's uid) keeps a descriptor of
 * chunk 0; the victim (as victim) fills both chunks, so one of its slices
 * lies in the attacker's old chunk. */
static void kept_descriptor_attack(const test_user_t *attacker, const test_user_t *victim)
{
    child_t ca, cv;
    job_t ja = {.fn = keep_fd_attacker}, jv = {.fn = whole_chunk_victim, .arg = 2};
    int ra, rv;

    need_users();
    start(2, true);
    spawn(&ca, &ja, attacker);
    cr_assert_eq(hear_from(&ca, "its chunk"), 0, "the attacker's slice is in chunk 0");
    spawn(&cv, &jv, victim);
    cr_assert_eq(hear_from(&cv, "that it wrote"), 0);
    tell(&ca, 1);
    hear_from(&ca, "that it is done");
    tell(&cv, 1);
    ra = reap(&ca);
    rv = reap(&cv);
    cr_expect_neq(ra, 21, "the kept descriptor shows the new owner's bytes");
    cr_expect_eq(ra, 0, "the attacker failed (%d)", ra);
    cr_expect_neq(rv, 32, "writes or PUNCH_HOLE through the kept descriptor reached the new "
                  "owner's bytes");
    cr_expect_eq(rv, 0, "the victim failed (%d)", rv);
    cr_expect_eq(replacements(), 1, "chunk 0 got fresh memory when it passed to another uid");
}

Test(isolation, kept_descriptor_of_another_user_reaches_only_old_memory)
{
    need_users();
    kept_descriptor_attack(&users.a, &users.b);
}

Test(isolation, kept_descriptor_of_the_daemons_uid_reaches_only_old_memory)
{
    need_users();
    kept_descriptor_attack(NULL, &users.a);
}

/* ---- placement by uid ------------------------------------------------------------------ */

/* Allocates j->arg bytes and says its chunk; on the word frees it and
 * allocates again, says that chunk; on the word exits. */
static int alloc_twice(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;

    if (pinpool_err(ctx) != 0)
        return 40;
    if (pinpool_alloc(ctx, j->arg, NULL, &s) != 0)
        return 41;
    memset(s.ptr, 0x5a, j->arg);
    say(j, s.start_offset / CHUNK);
    hear(j);
    if (pinpool_free(ctx, s.id, NULL) != 0 || pinpool_alloc(ctx, j->arg, NULL, &s) != 0)
        return 42;
    say(j, s.start_offset / CHUNK);
    hear(j);
    pinpool_close(ctx);
    return 0;
}

Test(isolation, two_uids_never_share_a_chunk_and_an_idle_chunk_stays_its_uids)
{
    child_t ca, cb;
    job_t ja = {.fn = alloc_twice, .arg = MiB}, jb = {.fn = alloc_twice, .arg = MiB};
    uint64_t a1, b1, a2, b2;

    need_users();
    start(4, true);
    spawn(&ca, &ja, &users.a);
    a1 = hear_from(&ca, "its chunk");
    spawn(&cb, &jb, &users.b);
    b1 = hear_from(&cb, "its chunk");
    cr_expect_neq(a1, b1, "uid %u and uid %u share chunk %" PRIu64, (unsigned)users.a.uid,
                  (unsigned)users.b.uid, a1);
    tell(&ca, 1);
    a2 = hear_from(&ca, "its chunk again");
    tell(&cb, 1);
    b2 = hear_from(&cb, "its chunk again");
    cr_expect_eq(a2, a1, "a uid's idle chunk is reused by it");
    cr_expect_eq(b2, b1);
    tell(&ca, 1);
    tell(&cb, 1);
    cr_expect_eq(reap(&ca), 0);
    cr_expect_eq(reap(&cb), 0);
    cr_expect_eq(replacements(), 0, "no chunk changed uid");
}

/*
 * Within one uid a kept descriptor reaches later slices in its chunk: that
 * is allowed (a uid can ptrace its own processes anyway), and the chunk is
 * reused without new memory.  Both processes are this test's uid.
 */
static int same_uid_victim(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;

    (void)j;
    if (pinpool_err(ctx) != 0 || pinpool_alloc(ctx, CHUNK, NULL, &s) != 0)
        return 50;
    test_fill(s.ptr, CHUNK, 9);
    say(j, s.start_offset / CHUNK);
    hear(j);
    pinpool_close(ctx);
    return 0;
}

Test(isolation, same_uid_reuses_its_chunk_without_new_memory)
{
    child_t ca, cv;
    job_t ja = {.fn = keep_fd_attacker}, jv = {.fn = same_uid_victim};

    start(1, false);
    spawn(&ca, &ja, NULL);
    cr_assert_eq(hear_from(&ca, "its chunk"), 0);
    spawn(&cv, &jv, NULL);
    cr_assert_eq(hear_from(&cv, "its chunk"), 0, "the same uid gets its idle chunk back");
    tell(&ca, 1);
    hear_from(&ca, "that it is done");
    tell(&cv, 1);
    cr_expect_eq(reap(&ca), 21, "within one uid the kept descriptor reaches the chunk (allowed)");
    cr_expect_eq(reap(&cv), 0);
    cr_expect_eq(replacements(), 0);
}

/* ---- no stale bytes ---------------------------------------------------------------------- */

/*
 * Allocates the whole pool (j->arg bytes: one slice over every chunk), fills
 * it (seed 3) and frees it, or with j->check checks that it reads as zeros
 * (exit 60 if not).
 */
static int fill_or_check(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;
    const unsigned char *b;
    int rc = 0;

    if (pinpool_err(ctx) != 0)
        return 61;
    if (pinpool_alloc(ctx, j->arg, NULL, &s) != 0) {
        fprintf(stderr, "alloc: %s\n", pinpool_errmsg(ctx));
        return 62;
    }
    if (!j->check) {
        test_fill(s.ptr, j->arg, 3);
    } else {
        b = s.ptr;
        for (uint64_t i = 0; i < j->arg; i++)
            if (b[i] != 0) {
                fprintf(stderr, "byte %" PRIu64 " of the new slice is %#x\n", i, b[i]);
                rc = 60;
                break;
            }
    }
    pinpool_free(ctx, s.id, NULL);
    pinpool_close(ctx);
    return rc;
}

static int run_fill_or_check(const test_user_t *u, uint64_t bytes, bool check)
{
    child_t c;
    job_t j = {.fn = fill_or_check, .arg = bytes, .check = check};

    spawn(&c, &j, u);
    return reap(&c);
}

Test(isolation, a_new_slice_shows_nothing_another_session_of_the_uid_freed)
{
    start(2, false);
    cr_assert_eq(run_fill_or_check(NULL, 2 * CHUNK, false), 0);
    cr_expect_eq(run_fill_or_check(NULL, 2 * CHUNK, true), 0,
                 "the same extent, in another session of the same uid, shows the freed bytes");
}

Test(isolation, a_new_slice_shows_nothing_another_uid_freed)
{
    need_users();
    start(2, true);
    cr_assert_eq(run_fill_or_check(&users.a, 2 * CHUNK, false), 0);
    cr_expect_eq(run_fill_or_check(&users.b, 2 * CHUNK, true), 0,
                 "the same extent, for another uid, shows the freed bytes");
    cr_expect_eq(replacements(), 2, "both chunks passed to the other uid with fresh memory");
}

/* Bytes the daemon wrote (a Put object, then removed) are zeroed too. */
static int put_and_remove(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool__connect_rpc_only(d.socket);
    char *buf = malloc(j->arg);
    int rc = 0;

    if (pinpool_err(ctx) != 0 || buf == NULL)
        return 70;
    test_fill(buf, j->arg, 4);
    if (pinpool_put(ctx, "stale", buf, j->arg, 0) != 0 || pinpool_remove(ctx, "stale") != 0)
        rc = 71;
    free(buf);
    pinpool_close(ctx);
    return rc;
}

Test(isolation, a_new_slice_shows_nothing_of_a_removed_object)
{
    child_t c;
    job_t j = {.fn = put_and_remove, .arg = MiB};

    start(1, false);
    spawn(&c, &j, NULL);
    cr_assert_eq(reap(&c), 0);
    cr_expect_eq(run_fill_or_check(NULL, CHUNK, true), 0, "a new slice shows a removed object");
}

/* A dying client: used_bytes drops at once, what it held is zeroed. */
static int hold_and_die(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;

    if (pinpool_err(ctx) != 0 || pinpool_alloc(ctx, j->arg, NULL, &s) != 0)
        return 80;
    test_fill(s.ptr, j->arg, 5);
    say(j, 0);
    hear(j);
    _exit(0); /* no pinpool_close: the lease ends with the process */
}

Test(isolation, used_drops_at_once_when_a_client_dies)
{
    child_t c;
    job_t j = {.fn = hold_and_die, .arg = 2 * CHUNK};
    pinpool_pool_info_t info;
    pinpool_ctx_t *ctx;
    int i;

    start(2, false);
    spawn(&c, &j, NULL);
    hear_from(&c, "that it holds");
    tell(&c, 1);
    cr_assert_eq(reap(&c), 0);
    ctx = pinpool__connect_rpc_only(d.socket);
    for (i = 0; i < 200; i++) { /* the daemon sees the hang-up on its event loop */
        cr_assert_eq(pinpool_pool_info(ctx, &info), 0);
        pinpool_pool_info_free(&info);
        if (info.used_bytes == 0)
            break;
        usleep(5000);
    }
    cr_expect_eq(info.used_bytes, 0, "used_bytes %" PRIu64 " after the client died",
                 info.used_bytes);
    cr_expect_leq(info.cleaning_bytes, 2 * CHUNK);
    cr_expect_eq(info.used_bytes + info.cleaning_bytes + info.free_bytes, info.ready_bytes);
    for (i = 0; i < 400 && info.cleaning_bytes != 0; i++) {
        usleep(5000);
        cr_assert_eq(pinpool_pool_info(ctx, &info), 0);
        pinpool_pool_info_free(&info);
    }
    cr_expect_eq(info.cleaning_bytes, 0, "the cleaner never finished");
    cr_expect_eq(info.free_bytes, 2 * CHUNK);
    pinpool_close(ctx);
}

/* ---- kept slices and objects across uids ---------------------------------------------------- */

static int keep_one(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_alloc_opts_t o = {.device_id = PINPOOL_HOST, .tag = "mine", .flags = PINPOOL_ALLOC_KEEP};
    pinpool_slice_t s;

    (void)j;
    if (pinpool_err(ctx) != 0 || pinpool_alloc(ctx, MiB, &o, &s) != 0)
        return 90;
    pinpool_close(ctx);
    return 0;
}

/* Attaches the kept slice "mine": exit 0 if not found (a tag is a name in its
 * uid's namespace: another uid's is never found), 1 if mapped (and then frees
 * it, when j->arg). */
static int attach_kept(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;
    int rc;

    if (pinpool_err(ctx) != 0)
        return 91;
    rc = pinpool_attach(ctx, "mine", 0, &s);
    if (rc != 0 && rc != PINPOOL_ENOENT)
        fprintf(stderr, "attach: %s\n", pinpool_errmsg(ctx));
    if (rc == 0 && (j->arg ? pinpool_free(ctx, s.id, NULL) : pinpool_detach(ctx, s.id)) != 0)
        rc = 92;
    pinpool_close(ctx);
    return rc == 0 ? 1 : rc == PINPOOL_ENOENT ? 0 : 93;
}

Test(isolation, a_session_maps_no_kept_slice_of_another_uid)
{
    child_t c;
    job_t keep = {.fn = keep_one}, other = {.fn = attach_kept}, same = {.fn = attach_kept};

    need_users();
    start(2, true);
    spawn(&c, &keep, &users.a);
    cr_assert_eq(reap(&c), 0);
    spawn(&c, &other, &users.b);
    cr_expect_eq(reap(&c), 0, "uid %u mapped a kept slice in uid %u's memory",
                 (unsigned)users.b.uid, (unsigned)users.a.uid);
    same.arg = 1;
    spawn(&c, &same, &users.a);
    cr_expect_eq(reap(&c), 1, "its own uid maps it");
    /* the kept slice was freed by its uid above; if not, the teardown says so */
}

/* Acquires the object "obj" (made by root's Put): exit 0 when it is not found
 * (a key is a name in its uid's namespace), 1 when it got it. */
static int acquire_obj(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;
    int rc;

    (void)j;
    if (pinpool_err(ctx) != 0)
        return 100;
    rc = pinpool_acquire(ctx, "obj", 0, &s);
    if (rc != 0 && rc != PINPOOL_ENOKEY)
        fprintf(stderr, "acquire: %s\n", pinpool_errmsg(ctx));
    if (rc == 0)
        pinpool_free(ctx, s.id, NULL);
    pinpool_close(ctx);
    return rc == 0 ? 1 : rc == PINPOOL_ENOKEY ? 0 : 101;
}

/* Puts "obj" and allocates a slice beside it; says that slice's chunk; on the
 * word gets "obj" back (exit 0 when its bytes are intact) and removes it. */
static int put_obj(job_t *j)
{
    pinpool_ctx_t *ctx = pinpool_connect(d.socket);
    pinpool_slice_t s;
    char *buf = malloc(j->arg);
    uint64_t got = 0;
    int rc = 0;

    if (pinpool_err(ctx) != 0 || buf == NULL)
        return 110;
    test_fill(buf, j->arg, 6);
    if (pinpool_put(ctx, "obj", buf, j->arg, 0) != 0 || pinpool_alloc(ctx, MiB, NULL, &s) != 0)
        rc = 111;
    say(j, rc == 0 ? s.start_offset / CHUNK : UINT64_MAX); /* a slice of root's, beside it */
    hear(j);
    memset(buf, 0, j->arg);
    if (rc == 0 && (pinpool_get(ctx, "obj", buf, j->arg, &got) != 0 || got != j->arg ||
                    !test_same(buf, j->arg, 6)))
        rc = 112;
    if (pinpool_remove(ctx, "obj") != 0)
        rc = rc != 0 ? rc : 113;
    free(buf);
    pinpool_close(ctx);
    return rc;
}

/* Objects belong to their uid: another uid's acquire does not find them
 * (wave 2 moved the bytes into the acquirer's chunks; now it never gets
 * them), and the owner's object is intact after the try. */
Test(isolation, an_object_of_another_uid_is_never_acquired)
{
    child_t cp, ca;
    job_t put = {.fn = put_obj, .arg = MiB}, acq = {.fn = acquire_obj};

    need_users();
    start(2, true);
    spawn(&cp, &put, NULL);
    hear_from(&cp, "its chunk");
    spawn(&ca, &acq, &users.a);
    cr_expect_eq(reap(&ca), 0, "uid %u acquired root's object", (unsigned)users.a.uid);
    tell(&cp, 1);
    cr_expect_eq(reap(&cp), 0, "root's object is not intact after another uid's acquire");
}
