/*
 * test_ipc.c - unit tests of ipc/: descriptor passing, unix sockets, the wire
 * protocol checks and the memfd host backend.
 *
 * Owns: nothing beyond each test's own sockets, files and mappings.
 * Never: touches a fixed path or port (temp dirs from mkdtemp only), or leaves
 * a descriptor open: every test ends by comparing /proc/self/fd with its start.
 * Locking: none; Criterion runs each test in its own process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "ipc.h"

#include "daemon.h"
#include "util.h"

#include "pinpool.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024u * 1024u)
#define CHUNK (4 * MiB)

/* ---- helpers --------------------------------------------------------------- */

/* Every test ends with as many descriptors open as it began with: the suites'
 * .init counts them, their .fini compares. */
static int base;

static void fds_before(void)
{
    base = test_nfds();
}

static void fds_after(void)
{
    int now = test_nfds();

    test_fini_check(now == base, "%d descriptors open at the end, %d at the start", now, base);
}

static void seqpair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0, "socketpair: %s",
                 strerror(errno));
}

static int small_memfd(const char *name, size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);

    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    return fd;
}

static int same_file(int a, int b)
{
    struct stat sa, sb;

    cr_assert_eq(fstat(a, &sa), 0);
    cr_assert_eq(fstat(b, &sb), 0);
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int is_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);

    cr_assert_geq(fl, 0);
    return (fl & FD_CLOEXEC) != 0;
}

static void close_all(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* The permissions ("rw-s", "---p") of the mapping holding addr; "" if none. */
static void perms_at(const void *addr, char out[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    uintptr_t a = (uintptr_t)addr;

    cr_assert_not_null(f);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        char perms[5];

        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && a >= lo && a < hi) {
            memcpy(out, perms, 5);
            break;
        }
    }
    fclose(f);
}

static void assert_perms(const void *addr, const char *want)
{
    char got[5];

    perms_at(addr, got);
    cr_assert_str_eq(got, want, "mapping at %p is \"%s\", want \"%s\"", addr, got, want);
}

static uint64_t pattern(uint64_t k, uint64_t seed)
{
    return (k * 0x9E3779B97F4A7C15ull) ^ seed;
}

static void fill(void *p, size_t bytes, uint64_t seed)
{
    uint64_t *w = p;

    for (size_t k = 0; k < bytes / 8; k++)
        w[k] = pattern(k, seed);
}

static int check(const void *p, size_t bytes, uint64_t seed)
{
    const uint64_t *w = p;

    for (size_t k = 0; k < bytes / 8; k++) {
        if (w[k] != pattern(k, seed))
            return 0;
    }
    return 1;
}

/* ---- descriptor passing ------------------------------------------------------ */

TestSuite(fdpass, .init = fds_before, .fini = fds_after);

Test(fdpass, one_fd, .timeout = 10)
{
    int sv[2], f, got[4];
    size_t nfds = 99;
    char buf[64];
    ssize_t n;

    seqpair(sv);
    f = small_memfd("one", 4096);
    cr_assert_eq(ipc_send_msg(sv[0], "hello", 5, &f, 1), 0);
    n = ipc_recv_msg(sv[1], buf, sizeof(buf), got, 4, &nfds);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(nfds, 1);
    cr_assert_neq(got[0], f);
    cr_assert(is_cloexec(got[0]));
    cr_assert(same_file(got[0], f));
    close(got[0]);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, max_fds, .timeout = 10)
{
    int sv[2], f[IPC_MAX_FDS], got[IPC_MAX_FDS];
    size_t nfds = 0;
    uint32_t msg = 0xdeadbeef, in = 0;

    seqpair(sv);
    for (int i = 0; i < IPC_MAX_FDS; i++)
        f[i] = small_memfd("many", 4096);
    cr_assert_eq(ipc_send_msg(sv[0], &msg, sizeof(msg), f, IPC_MAX_FDS), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], &in, sizeof(in), got, IPC_MAX_FDS, &nfds), (ssize_t)sizeof(in));
    cr_assert_eq(in, msg);
    cr_assert_eq(nfds, IPC_MAX_FDS);
    for (int i = 0; i < IPC_MAX_FDS; i++) {
        cr_assert(is_cloexec(got[i]), "fd %d", i);
        cr_assert(same_file(got[i], f[i]), "fd %d arrived out of order", i);
    }
    close_all(got, IPC_MAX_FDS);
    close_all(f, IPC_MAX_FDS);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, no_fds, .timeout = 10)
{
    int sv[2], got[2] = {-1, -1};
    size_t nfds = 7;
    char buf[16];

    seqpair(sv);
    cr_assert_eq(ipc_send_msg(sv[0], "abc", 3, NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), 3);
    cr_assert_eq(nfds, 0);
    cr_assert_eq(memcmp(buf, "abc", 3), 0);
    /* A receiver that takes no descriptors at all. */
    cr_assert_eq(ipc_send_msg(sv[0], "xy", 2, NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), NULL, 0, &nfds), 2);
    cr_assert_eq(nfds, 0);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, more_fds_than_maxfds, .timeout = 10)
{
    int sv[2], f[4], got[2] = {-1, -1};
    size_t nfds = 5;
    char buf[16];

    seqpair(sv);
    for (int i = 0; i < 4; i++)
        f[i] = small_memfd("trunc", 4096);
    cr_assert_eq(ipc_send_msg(sv[0], "four", 4, f, 4), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    /* maxfds 0 and one descriptor. */
    cr_assert_eq(ipc_send_msg(sv[0], "one", 3, f, 1), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), NULL, 0, &nfds), -EMSGSIZE);
    /* The stream goes on with the next message. */
    cr_assert_eq(ipc_send_msg(sv[0], "next", 4, f, 2), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), 4);
    cr_assert_eq(nfds, 2);
    close_all(got, 2);
    close_all(f, 4);
    close(sv[0]);
    close(sv[1]);
}

/* More descriptors than IPC_MAX_FDS, sent around ipc_send_msg: the kernel
 * truncates the control data (MSG_CTRUNC); what did arrive must be closed. */
Test(fdpass, control_truncated, .timeout = 10)
{
    enum { N = IPC_MAX_FDS + 10 };
    int sv[2], f, got[IPC_MAX_FDS];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * N)];
    } cbuf;
    int many[N];
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr msg = {0};
    struct cmsghdr *cmsg;
    size_t nfds = 3;
    char buf[16];

    seqpair(sv);
    f = small_memfd("ctrunc", 4096);
    for (int i = 0; i < N; i++)
        many[i] = f;
    memset(&cbuf, 0, sizeof(cbuf));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * N);
    memcpy(CMSG_DATA(cmsg), many, sizeof(many));
    cr_assert_eq(sendmsg(sv[0], &msg, 0), 1);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, IPC_MAX_FDS, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    /* The sender side refuses that many outright. */
    cr_assert_eq(ipc_send_msg(sv[0], "x", 1, many, IPC_MAX_FDS + 1), -EINVAL);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, oversize_payload, .timeout = 10)
{
    int sv[2], f[2], got[2];
    size_t nfds = 1;
    char big[200], buf[100];
    ipc_hdr_t hdr;
    static char huge[4 * MiB];

    seqpair(sv);
    memset(big, 'b', sizeof(big));
    f[0] = small_memfd("over0", 4096);
    f[1] = small_memfd("over1", 4096);
    cr_assert_eq(ipc_send_msg(sv[0], big, sizeof(big), NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), -EMSGSIZE);
    /* The same with descriptors attached: they must not leak. */
    cr_assert_eq(ipc_send_msg(sv[0], big, sizeof(big), f, 2), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), -EMSGSIZE);
    cr_assert_eq(nfds, 0);
    /* The truncated messages were consumed whole; the next one is intact. */
    ipc_hdr_init(&hdr, IPC_MSG_MAP_REQ, 9, sizeof(hdr));
    cr_assert_eq(ipc_send_msg(sv[0], &hdr, sizeof(hdr), NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 2, &nfds), (ssize_t)sizeof(hdr));
    cr_assert_eq(memcmp(buf, &hdr, sizeof(hdr)), 0);
    /* A message larger than the socket can ever hold: the sender is told. */
    cr_assert_eq(ipc_send_msg(sv[0], huge, sizeof(huge), NULL, 0), -EMSGSIZE);
    close_all(f, 2);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, bad_arguments, .timeout = 10)
{
    int sv[2], f;
    size_t nfds;
    char buf[8];

    seqpair(sv);
    f = small_memfd("args", 4096);
    cr_assert_eq(ipc_send_msg(sv[0], "x", 1, NULL, 1), -EINVAL);
    cr_assert_eq(ipc_send_msg(sv[0], NULL, 0, &f, 1), -EINVAL); /* would read as EOF */
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), NULL, 1, &nfds), -EINVAL);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), NULL, 0, NULL), -EINVAL);
    cr_assert_eq(ipc_send_msg(-1, "x", 1, NULL, 0), -EBADF);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, peer_closed, .timeout = 10)
{
    int sv[2], got[1];
    size_t nfds = 4;
    char buf[8];

    seqpair(sv);
    close(sv[0]);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), got, 1, &nfds), 0);
    cr_assert_eq(nfds, 0);
    /* Sending to a closed peer is EPIPE, never SIGPIPE. */
    cr_assert_eq(ipc_send_msg(sv[1], "x", 1, NULL, 0), -EPIPE);
    close(sv[1]);
}

Test(fdpass, nonblocking_empty, .timeout = 10)
{
    int sv[2];
    size_t nfds;
    char buf[8];

    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], buf, sizeof(buf), NULL, 0, &nfds), -EAGAIN);
    close(sv[0]);
    close(sv[1]);
}

Test(fdpass, peer_cred, .timeout = 10)
{
    int sv[2];
    ipc_cred_t cred;

    seqpair(sv);
    cr_assert_eq(ipc_peer_cred(sv[0], &cred), 0);
    cr_assert_eq(cred.pid, getpid());
    cr_assert_eq(cred.uid, getuid());
    cr_assert_eq(cred.gid, getgid());
    cr_assert_eq(ipc_peer_cred(sv[0], NULL), -EINVAL);
    close(sv[0]);
    close(sv[1]);
}

/* ---- unix sockets ------------------------------------------------------------- */

TestSuite(sock, .init = fds_before, .fini = fds_after);

Test(sock, listen_connect, .timeout = 10)
{
    char dir[] = "/tmp/pinpool-test-XXXXXX";
    char path[PATH_MAX];
    struct stat st;
    int l, c, a, fl, got[1];
    size_t nfds;
    ipc_cred_t cred;
    ipc_map_req_t req, in;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fd.sock", dir);

    l = ipc_listen_seqpacket(path, 16);
    cr_assert_geq(l, 0, "listen: %s", strerror(-l));
    cr_assert(is_cloexec(l));
    fl = fcntl(l, F_GETFL);
    cr_assert(fl & O_NONBLOCK);
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISSOCK(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0660);

    c = ipc_connect_seqpacket(path);
    cr_assert_geq(c, 0, "connect: %s", strerror(-c));
    cr_assert(is_cloexec(c));
    cr_assert_eq(fcntl(c, F_GETFL) & O_NONBLOCK, 0);
    a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(a, 0);

    cr_assert_eq(ipc_peer_cred(a, &cred), 0);
    cr_assert_eq(cred.pid, getpid());
    cr_assert_eq(cred.uid, getuid());

    memset(&req, 0, sizeof(req));
    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 1, sizeof(req));
    req.slice_id = 42;
    req.count = 3;
    cr_assert_eq(ipc_send_msg(c, &req, sizeof(req), NULL, 0), 0);
    cr_assert_eq(ipc_recv_msg(a, &in, sizeof(in), got, 1, &nfds), (ssize_t)sizeof(in));
    cr_assert_eq(ipc_msg_check(&in, sizeof(in)), IPC_MSG_MAP_REQ);
    cr_assert_eq(in.slice_id, 42);
    close(a);
    close(c);
    close(l);

    /* A stale socket file is replaced. */
    l = ipc_listen_seqpacket(path, 16);
    cr_assert_geq(l, 0, "relisten: %s", strerror(-l));
    close(l);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(ipc_connect_seqpacket(path), -ENOENT);

    cr_assert_eq(rmdir(dir), 0);
}

Test(sock, refuses_non_socket, .timeout = 10)
{
    char dir[] = "/tmp/pinpool-test-XXXXXX";
    char path[PATH_MAX], sub[PATH_MAX], longp[200], buf[16];
    int f;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/file", dir);
    f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(f, 0);
    cr_assert_eq(write(f, "keep", 4), 4);
    close(f);
    cr_assert_eq(ipc_listen_seqpacket(path, 1), -EEXIST);
    /* The file is untouched. */
    f = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(f, 0);
    cr_assert_eq(read(f, buf, sizeof(buf)), 4);
    cr_assert_eq(memcmp(buf, "keep", 4), 0);
    close(f);
    cr_assert_eq(unlink(path), 0);

    snprintf(sub, sizeof(sub), "%s/dir", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(ipc_listen_seqpacket(sub, 1), -EEXIST);
    cr_assert_eq(rmdir(sub), 0);

    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    cr_assert_eq(ipc_listen_seqpacket(longp, 1), -ENAMETOOLONG);
    cr_assert_eq(ipc_connect_seqpacket(longp), -ENAMETOOLONG);
    cr_assert_eq(ipc_listen_seqpacket("", 1), -EINVAL);

    cr_assert_eq(rmdir(dir), 0);
}

/* ---- the wire protocol ---------------------------------------------------------- */

static ipc_hello_t good_hello(void)
{
    ipc_hello_t h;

    memset(&h, 0, sizeof(h));
    ipc_hdr_init(&h.hdr, IPC_MSG_HELLO, 0, sizeof(h));
    snprintf(h.client_id, sizeof(h.client_id), "client-1");
    snprintf(h.backend, sizeof(h.backend), "memfd");
    h.chunk_size = CHUNK;
    h.num_chunks = 2;
    return h;
}

TestSuite(proto, .init = fds_before, .fini = fds_after);

Test(proto, accepts_good, .timeout = 10)
{
    ipc_hello_t h = good_hello();
    ipc_map_req_t req;
    ipc_map_resp_t resp;
    char unaligned[sizeof(ipc_hello_t) + 1];

    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 7, sizeof(req));
    ipc_hdr_init(&resp.hdr, IPC_MSG_MAP_RESP, UINT32_MAX, sizeof(resp));
    cr_assert_eq(h.hdr.magic, IPC_MAGIC);
    cr_assert_eq(h.hdr.version, IPC_VERSION);
    cr_assert_eq(req.hdr.seq, 7);
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), IPC_MSG_HELLO);
    cr_assert_eq(ipc_msg_check(&req, sizeof(req)), IPC_MSG_MAP_REQ);
    cr_assert_eq(ipc_msg_check(&resp, sizeof(resp)), IPC_MSG_MAP_RESP);
    memcpy(unaligned + 1, &h, sizeof(h));
    cr_assert_eq(ipc_msg_check(unaligned + 1, sizeof(h)), IPC_MSG_HELLO);
}

Test(proto, rejects_bad, .timeout = 10)
{
    ipc_hello_t good = good_hello(), h;
    ipc_map_req_t req;
    char big[sizeof(ipc_hello_t) + 8];

    h = good;
    h.hdr.magic ^= 1;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "magic");
    h = good;
    h.hdr.version = 0;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "version 0");
    h.hdr.version = IPC_VERSION + 1;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "version 2");
    h = good;
    h.hdr.type = 0;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "type 0");
    h.hdr.type = IPC_MSG_MAP_RESP + 1;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "type 4");
    h.hdr.type = 0xffff;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "type 0xffff");
    /* A known type whose size is not the message's. */
    h = good;
    h.hdr.type = IPC_MSG_MAP_REQ;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "hello-sized map_req");
    /* hdr.len wrong, n right. */
    h = good;
    h.hdr.len = sizeof(h) - 1;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "len short");
    h.hdr.len = sizeof(h) + 8;
    memset(big, 0, sizeof(big));
    memcpy(big, &h, sizeof(h));
    cr_assert_eq(ipc_msg_check(big, sizeof(big)), PINPOOL_EPROTO, "len long, n long");
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "len long");
    /* hdr.len right, n wrong. */
    h = good;
    cr_assert_eq(ipc_msg_check(&h, sizeof(h) - 1), PINPOOL_EPROTO, "n short");
    memcpy(big, &h, sizeof(h));
    cr_assert_eq(ipc_msg_check(big, sizeof(big)), PINPOOL_EPROTO, "n long");
    cr_assert_eq(ipc_msg_check(&h, sizeof(ipc_hdr_t) - 1), PINPOOL_EPROTO, "shorter than a header");
    cr_assert_eq(ipc_msg_check(&h, 0), PINPOOL_EPROTO, "empty");
    cr_assert_eq(ipc_msg_check(NULL, sizeof(h)), PINPOOL_EPROTO, "NULL");
    /* Unterminated strings in HELLO. */
    h = good;
    memset(h.client_id, 'c', sizeof(h.client_id));
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "client_id");
    h = good;
    memset(h.backend, 'b', sizeof(h.backend));
    cr_assert_eq(ipc_msg_check(&h, sizeof(h)), PINPOOL_EPROTO, "backend");
    /* MAP_REQ carrying HELLO's size in its header. */
    ipc_hdr_init(&req.hdr, IPC_MSG_MAP_REQ, 1, sizeof(ipc_hello_t));
    cr_assert_eq(ipc_msg_check(&req, sizeof(req)), PINPOOL_EPROTO, "map_req len");
}

/* ---- the memfd backend ------------------------------------------------------------ */

/* The backend under test (ipc_host_backend("memfd"), checked by registry). */
static const ipc_host_ops_t *const ops = &ipc_host_memfd;

TestSuite(memfd, .init = fds_before, .fini = fds_after);

Test(memfd, registry, .timeout = 10)
{
    cr_assert_eq(ipc_host_backend("memfd"), &ipc_host_memfd);
    cr_assert_str_eq(ipc_host_memfd.name, "memfd");
    cr_assert_null(ipc_host_backend("nope"));
    cr_assert_null(ipc_host_backend(""));
    cr_assert_null(ipc_host_backend(NULL));
}

/* Daemon: two 4 MiB chunks; a forked client maps them, checks the daemon's
 * pattern and writes its own, which the daemon then sees. */
Test(memfd, share_with_child, .timeout = 30)
{
    ipc_chunk_t c[2];
    char err[256] = "";
    void *range;
    int sv[2], fds[2], status;
    pid_t pid;
    ipc_map_resp_t resp;
    char done;
    size_t nfds;

    cr_assert_eq(ops->reserve(2 * CHUNK, &range), 0);
    for (uint32_t i = 0; i < 2; i++) {
        int rc = ops->chunk_create(&c[i], (char *)range + i * CHUNK, CHUNK, i, err, sizeof(err));

        cr_assert_eq(rc, 0, "chunk_create: %d %s", rc, err);
        cr_assert_eq(c[i].addr, (char *)range + i * CHUNK);
        cr_assert_eq(c[i].size, CHUNK);
        cr_assert(is_cloexec(c[i].fd));
        fds[i] = c[i].fd;
    }
    assert_perms(range, "rw-s");
    fill(range, 2 * CHUNK, 0x1111);

    seqpair(sv);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* The client.  No Criterion asserts here: exit codes say what failed. */
        int got[IPC_MAX_FDS];
        int child_base, rc;
        void *at;
        ipc_map_resp_t in;

        close(sv[0]);
        for (int i = 0; i < 2; i++)
            ops->chunk_destroy(&c[i]); /* the daemon's copies are not the client's */
        ops->release(range, 2 * CHUNK);
        child_base = test_nfds();
        if (ipc_recv_msg(sv[1], &in, sizeof(in), got, IPC_MAX_FDS, &nfds) != (ssize_t)sizeof(in))
            _exit(10);
        if (ipc_msg_check(&in, sizeof(in)) != IPC_MSG_MAP_RESP || in.count != 2 || nfds != 2)
            _exit(11);
        if (ops->reserve(2 * CHUNK, &at) != 0)
            _exit(12);
        rc = ops->map(at, CHUNK, got, (uint32_t)nfds, IPC_MAP_CPU);
        if (rc != 0)
            _exit(13);
        if (test_nfds() != child_base) /* map closed the descriptors */
            _exit(14);
        if (!check(at, 2 * CHUNK, 0x1111))
            _exit(15);
        fill(at, 2 * CHUNK, 0x2222);
        ops->unmap(at, CHUNK, 2);
        ops->release(at, 2 * CHUNK);
        if (ipc_send_msg(sv[1], "d", 1, NULL, 0) != 0)
            _exit(16);
        close(sv[1]);
        if (test_nfds() != child_base - 1)
            _exit(17);
        _exit(0);
    }

    close(sv[1]);
    memset(&resp, 0, sizeof(resp));
    ipc_hdr_init(&resp.hdr, IPC_MSG_MAP_RESP, 1, sizeof(resp));
    resp.count = 2;
    cr_assert_eq(ipc_send_msg(sv[0], &resp, sizeof(resp), fds, 2), 0);
    cr_assert_eq(ipc_recv_msg(sv[0], &done, 1, NULL, 0, &nfds), 1);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    cr_assert(check(range, 2 * CHUNK, 0x2222), "the child's writes are not visible");

    for (int i = 0; i < 2; i++)
        ops->chunk_destroy(&c[i]);
    ops->release(range, 2 * CHUNK);
    close(sv[0]);
}

/* A chunk cannot be resized by anyone: not through a received descriptor,
 * not by the daemon itself, and no more seals can be changed. */
Test(memfd, sealed, .timeout = 10)
{
    ipc_chunk_t c;
    char err[256] = "", link[128], path[64];
    void *range;
    int sv[2], got[1], seals;
    size_t nfds;
    ssize_t n;
    struct stat st;

    cr_assert_eq(ops->reserve(CHUNK, &range), 0);
    cr_assert_eq(ops->chunk_create(&c, range, CHUNK, 3, err, sizeof(err)), 0, "%s", err);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", c.fd);
    n = readlink(path, link, sizeof(link) - 1);
    cr_assert_gt(n, 0);
    link[n] = '\0';
    cr_assert_not_null(strstr(link, "memfd:pinpool-chunk-3"), "%s", link);

    seals = fcntl(c.fd, F_GET_SEALS);
    cr_assert_eq(seals, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);

    seqpair(sv);
    cr_assert_eq(ipc_send_msg(sv[0], "c", 1, &c.fd, 1), 0);
    cr_assert_eq(ipc_recv_msg(sv[1], path, sizeof(path), got, 1, &nfds), 1);
    cr_assert_eq(nfds, 1);
    errno = 0;
    cr_assert_eq(ftruncate(got[0], 0), -1);
    cr_assert_eq(errno, EPERM);
    errno = 0;
    cr_assert_eq(ftruncate(got[0], 2 * CHUNK), -1);
    cr_assert_eq(errno, EPERM);
    errno = 0;
    cr_assert_eq(fcntl(got[0], F_ADD_SEALS, F_SEAL_WRITE), -1);
    cr_assert_eq(errno, EPERM);
    errno = 0;
    cr_assert_eq(pwrite(got[0], "x", 1, CHUNK), -1, "writing past the end grew the chunk");
    cr_assert_eq(errno, EPERM);
    cr_assert_eq(fstat(got[0], &st), 0);
    cr_assert_eq(st.st_size, CHUNK);
    /* Pages were committed up front. */
    cr_assert_geq((uint64_t)st.st_blocks * 512, CHUNK);
    /* Still writable in place, through either end. */
    cr_assert_eq(pwrite(got[0], "y", 1, 0), 1);
    cr_assert_eq(((char *)range)[0], 'y');

    close(got[0]);
    close(sv[0]);
    close(sv[1]);
    ops->chunk_destroy(&c);
    ops->release(range, CHUNK);
}

Test(memfd, destroy_keeps_reservation, .timeout = 10)
{
    ipc_chunk_t c[2];
    char err[256];
    void *range;

    cr_assert_eq(ops->reserve(2 * CHUNK, &range), 0);
    assert_perms(range, "---p");
    for (uint32_t i = 0; i < 2; i++)
        cr_assert_eq(ops->chunk_create(&c[i], (char *)range + i * CHUNK, CHUNK, i, err, sizeof(err)), 0);
    cr_assert_eq(test_nfds(), base + 2);
    assert_perms(range, "rw-s");
    assert_perms((char *)range + CHUNK, "rw-s");

    ops->chunk_destroy(&c[0]);
    cr_assert_eq(c[0].fd, -1);
    cr_assert_null(c[0].addr);
    cr_assert_eq(test_nfds(), base + 1);
    assert_perms(range, "---p");
    assert_perms((char *)range + CHUNK - 1, "---p");
    assert_perms((char *)range + CHUNK, "rw-s");
    ops->chunk_destroy(&c[0]); /* a destroyed chunk may be destroyed again */

    /* The slot can hold a new chunk. */
    cr_assert_eq(ops->chunk_create(&c[0], range, CHUNK, 5, err, sizeof(err)), 0);
    assert_perms(range, "rw-s");

    ops->chunk_destroy(&c[0]);
    ops->chunk_destroy(&c[1]);
    assert_perms((char *)range + CHUNK, "---p");
    ops->release(range, 2 * CHUNK);
    assert_perms(range, "");
    assert_perms((char *)range + CHUNK, "");
}

Test(memfd, create_fails_cleanly, .timeout = 10)
{
    ipc_chunk_t c, before;
    char err[256];
    void *range;
    struct rlimit old, lim;
    int rc;

    cr_assert_eq(ops->reserve(CHUNK, &range), 0);
    memset(&c, 0xab, sizeof(c));
    before = c;

    err[0] = '\0';
    cr_assert_eq(ops->chunk_create(&c, range, CHUNK - 1, 0, err, sizeof(err)), -EINVAL);
    cr_assert_neq(err[0], '\0');
    cr_assert_eq(ops->chunk_create(&c, (char *)range + 1, CHUNK, 0, NULL, 0), -EINVAL);
    cr_assert_eq(memcmp(&c, &before, sizeof(c)), 0);

    /* Files may not grow past 1 MiB: ftruncate fails inside the constructor. */
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = MiB;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    err[0] = '\0';
    rc = ops->chunk_create(&c, range, CHUNK, 7, err, sizeof(err));
    cr_assert_eq(rc, -EFBIG, "rc %d", rc);
    cr_assert_not_null(strstr(err, "chunk 7"), "%s", err);
    cr_assert_eq(memcmp(&c, &before, sizeof(c)), 0, "a failed create wrote *c");
    assert_perms(range, "---p");
    cr_assert_eq(test_nfds(), base);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

    cr_assert_eq(ops->chunk_create(&c, range, CHUNK, 7, err, sizeof(err)), 0, "%s", err);
    ops->chunk_destroy(&c);
    ops->release(range, CHUNK);
}

/* The client side, in one process: map, see the daemon's bytes, unmap. */
Test(memfd, map_unmap, .timeout = 10)
{
    ipc_chunk_t c[2];
    char err[256];
    void *drange, *crange;
    int fds[2];

    cr_assert_eq(ops->reserve(2 * CHUNK, &drange), 0);
    for (uint32_t i = 0; i < 2; i++)
        cr_assert_eq(ops->chunk_create(&c[i], (char *)drange + i * CHUNK, CHUNK, i, err, sizeof(err)), 0);
    fill(drange, 2 * CHUNK, 0x3333);

    cr_assert_eq(ops->reserve(2 * CHUNK, &crange), 0);
    for (int i = 0; i < 2; i++)
        fds[i] = fcntl(c[i].fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_eq(ops->map(crange, CHUNK, fds, 2, IPC_MAP_CPU | IPC_MAP_GPU), 0);
    cr_assert_eq(test_nfds(), base + 2); /* only the chunks' own */
    assert_perms(crange, "rw-s");
    cr_assert(check(crange, 2 * CHUNK, 0x3333));
    ((volatile uint64_t *)crange)[CHUNK / 8] = 77;
    cr_assert_eq(((volatile uint64_t *)drange)[CHUNK / 8], 77);
    ops->unmap(crange, CHUNK, 2);
    assert_perms(crange, "---p");
    assert_perms((char *)crange + 2 * CHUNK - 1, "---p");
    ops->release(crange, 2 * CHUNK);

    for (int i = 0; i < 2; i++)
        ops->chunk_destroy(&c[i]);
    ops->release(drange, 2 * CHUNK);
}

/* map() owns the descriptors on every path and undoes a half-done mapping. */
Test(memfd, map_fails_cleanly, .timeout = 10)
{
    ipc_chunk_t c;
    char err[256];
    void *drange, *crange;
    int fds[3];

    cr_assert_eq(ops->reserve(CHUNK, &drange), 0);
    cr_assert_eq(ops->chunk_create(&c, drange, CHUNK, 0, err, sizeof(err)), 0);
    cr_assert_eq(ops->reserve(3 * CHUNK, &crange), 0);

    /* Second descriptor too small for a chunk: the first chunk is unmapped
     * again and all three descriptors are closed. */
    fds[0] = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    fds[1] = small_memfd("small", 4096);
    fds[2] = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_eq(ops->map(crange, CHUNK, fds, 3, IPC_MAP_CPU), PINPOOL_EPROTO);
    assert_perms(crange, "---p");
    assert_perms((char *)crange + 3 * CHUNK - 1, "---p");
    cr_assert_eq(test_nfds(), base + 1);

    /* A descriptor that is not a file at all. */
    fds[0] = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_eq(pipe2(&fds[1], O_CLOEXEC), 0);
    cr_assert_eq(ops->map(crange, CHUNK, fds, 3, 0), PINPOOL_EPROTO);
    assert_perms(crange, "---p");
    cr_assert_eq(test_nfds(), base + 1);

    /* Bad arguments: the descriptors are still taken. */
    fds[0] = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_eq(ops->map(NULL, CHUNK, fds, 1, 0), -EINVAL);
    fds[0] = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    cr_assert_eq(ops->map(crange, CHUNK + 1, fds, 1, 0), -EINVAL);
    cr_assert_eq(ops->map(crange, CHUNK, NULL, 0, 0), 0); /* nothing to map */
    cr_assert_eq(test_nfds(), base + 1);

    ops->release(crange, 3 * CHUNK);
    ops->chunk_destroy(&c);
    ops->release(drange, CHUNK);
}
