/*
 * tier_mooncake.c - the Mooncake Store spill tier.
 *
 * URI: mooncake://HOST:PORT[?k=v&...] where HOST:PORT is mooncake_master's RPC
 * address.  Parameters (values may be %XX-escaped):
 *   metadata=URL       transfer-engine metadata server; default
 *                      http://HOST:8080/metadata (mooncake_master
 *                      --enable_http_metadata_server), or P2PHANDSHAKE, etcd://...
 *   protocol=tcp|rdma  transfer protocol (default tcp); device=NAMES for rdma
 *   local_hostname=H   this client's address in the cluster (default 127.0.0.1
 *                      when HOST is a loopback address, else gethostname())
 *   segment=SIZE       memory this client contributes to the cluster (default 0:
 *                      objects live in other clients' segments, e.g. a
 *                      mooncake_client process; with SIZE > 0 objects stored in
 *                      it vanish when the daemon's Mooncake client exits)
 *   local_buffer=SIZE  Mooncake's local transfer buffer (default 16MiB)
 *   buffer=SIZE        staging buffer, grown on demand for larger objects (64MiB)
 *   prefix=STR         prepended to every key (a namespace; default none)
 *   timeout_ms=N       bound on every call, setup included (default 30000)
 *   lease_wait_ms=N    remove retries for up to N ms while a reader's lease
 *                      holds the object (default 0: PINPOOL_EBUSY at once)
 *   force_remove=1     remove with force=true, ignoring leases (only if no one
 *                      else reads these keys)
 *   mode=auto|adapter|dlopen  how to reach Mooncake (below; default auto)
 *   lib=PATH           libmooncake_store.so for dlopen ($PINPOOL_MOONCAKE_LIB)
 *   python=PATH        interpreter for the adapter ($PINPOOL_PYTHON, python3)
 *   adapter=PATH       mooncake_adapter.py ($PINPOOL_MOONCAKE_ADAPTER; default:
 *                      next to the binary, or ../server/ or ../../server/ from it)
 *   log=PATH           where the adapter's stderr (Mooncake's glog) goes
 *
 * Two ways to Mooncake, one code path above them (a "driver" runs a batch of
 * items whose bytes lie in the staging buffer):
 *   dlopen   Mooncake's C API (store_c.h), in libmooncake_store.so built with
 *            -DWITH_STORE_C_SHARED=ON, bound at run time (no build
 *            dependency).  The client runs in the daemon: its signal handlers
 *            for SIGINT/SIGTERM/SIGHUP are replaced by the daemon's again
 *            right after setup.  The C API has no upsert: a put removes first.
 *   adapter  the PyPI wheel (mooncake-transfer-engine[-non-cuda]) exports no C
 *            API, only a Python client; server/mooncake_adapter.py runs it in a
 *            child process.  Commands go over a SOCK_SEQPACKET pair; the bytes
 *            stay in a memfd staging buffer mapped by both processes and
 *            registered with Mooncake: no payload crosses a pipe.
 *   auto picks dlopen when the library loads, else the adapter.
 *
 * Mooncake's facts and what this file does about them:
 *   - put on an existing key is a no-op: put = upsert (adapter) or remove +
 *     put (C API), so put always replaces (tier.h's contract).
 *   - get/exists grant a lease (~10 s) during which remove fails with
 *     OBJECT_HAS_LEASE: remove returns PINPOOL_EBUSY (after lease_wait_ms).
 *   - objects live in the memory of the client that contributed the segment:
 *     the default segment=0 keeps them out of the daemon's process.
 *   - a dead master makes each call fail with RPC_FAIL after ~4 s; a call
 *     that passes timeout_ms kills the adapter (the next call starts a new
 *     one), so nothing waits longer than timeout_ms.
 *
 * Locking: m->lock serialises calls (one staging buffer, one command in
 * flight).  Keys: prefix + the key with bytes outside printable ASCII, and
 * '%', written %XX, so printable keys read the same from any Mooncake client.
 */
#include "tier.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "pinpool.h"
#include "pool.h"

enum { OP_HELLO = 1, OP_SETBUF, OP_PUT, OP_GET, OP_EXISTS, OP_SIZE, OP_REMOVE };
#define FLAG_FORCE 1u

/* Mooncake's error codes (mooncake-store/include/types.h) that we act on. */
#define MC_INVALID_PARAMS (-600)
#define MC_NO_AVAILABLE_HANDLE (-200)
#define MC_OBJECT_NOT_FOUND (-704)
#define MC_OBJECT_HAS_LEASE (-706)

#define REQ_MAX (64 * 1024)  /* one command message */
#define BATCH_MAX 512        /* items per command */
#define REQ_HDR 16
#define ITEM_HDR 20
#define REP_HDR 16
#define KEYBUF (3 * TIER_KEY_MAX + 256 + 1)

typedef struct mc_item {
    char key[KEYBUF]; /* encoded: prefix + escaped key */
    uint32_t keylen;
    uint64_t off, len;  /* in the staging buffer */
    int64_t rc, aux;
} mc_item_t;

/* The C API of store_c.h, bound with dlsym. */
typedef struct mc_capi {
    void *(*create)(void);
    void (*destroy)(void *);
    int (*setup)(void *, const char *, const char *, uint64_t, uint64_t, const char *,
                 const char *, const char *);
    int (*put_from)(void *, const char *, void *, size_t, const void *);
    int64_t (*get_into)(void *, const char *, void *, size_t);
    int (*is_exist)(void *, const char *);
    int64_t (*get_size)(void *, const char *);
    int (*remove)(void *, const char *, int);
    int (*register_buffer)(void *, void *, size_t);
    int (*unregister_buffer)(void *, void *);
    int (*batch_put_from)(void *, const char **, void **, const size_t *, size_t, const void *,
                          int *);
    int (*batch_get_into)(void *, const char **, void **, const size_t *, size_t, int64_t *);
    int (*batch_is_exist)(void *, const char **, size_t, int *);
} mc_capi_t;

typedef struct mc {
    pthread_mutex_t lock;
    /* configuration */
    char master[256], metadata[512], protocol[16], device[128], hostname[256], prefix[256];
    char lib[1024], python[1024], adapter[4096], log[1024];
    uint64_t segment, local_buffer, buffer;
    int timeout_ms, lease_wait_ms;
    bool force_remove, use_dlopen;
    /* staging buffer, mapped here */
    void *stage;
    uint64_t stage_len;
    /* adapter */
    pid_t pid;
    int sock, memfd;
    uint64_t seq;
    bool dead; /* start a new adapter before the next call */
    char replace[32];
    uint32_t restarts;
    /* dlopen */
    void *dl;
    mc_capi_t c;
    void *store;
    /* one command and its reply (under lock) */
    char req[REQ_MAX];
    char rep[REP_HDR + BATCH_MAX * 16 + 4096 + 64];
} mc_t;

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *mc_code_name(int64_t rc)
{
    switch (rc) {
    case -1: return "INTERNAL_ERROR";
    case -10: return "BUFFER_OVERFLOW";
    case -101: return "SEGMENT_NOT_FOUND";
    case -200: return "NO_AVAILABLE_HANDLE";
    case -400: return "INVALID_KEY";
    case -500: return "WRITE_FAIL";
    case -600: return "INVALID_PARAMS";
    case -700: return "INVALID_WRITE";
    case -701: return "INVALID_READ";
    case -702: return "INVALID_REPLICA";
    case -703: return "REPLICA_IS_NOT_READY";
    case -704: return "OBJECT_NOT_FOUND";
    case -705: return "OBJECT_ALREADY_EXISTS";
    case -706: return "OBJECT_HAS_LEASE";
    case -800: return "TRANSFER_FAIL";
    case -900: return "RPC_FAIL";
    case -1000: return "ETCD_OPERATION_ERROR";
    case -1010: return "UNAVAILABLE_IN_CURRENT_STATUS";
    default: return "error";
    }
}

/* A Mooncake result as a pinpool error (with the message set). */
static int mc_error(int64_t rc, const char *what, const char *key)
{
    switch (rc) {
    case MC_OBJECT_NOT_FOUND:
        return PINPOOL_ENOKEY;
    case MC_OBJECT_HAS_LEASE:
        return tier__fail(PINPOOL_EBUSY, "mooncake %s '%s': a reader holds a lease on it "
                          "(OBJECT_HAS_LEASE); retry after the lease (~10 s by default)",
                          what, key);
    case MC_NO_AVAILABLE_HANDLE:
        return tier__fail(-ENOSPC, "mooncake %s '%s': no segment has room (NO_AVAILABLE_HANDLE)",
                          what, key);
    default:
        return tier__fail(PINPOOL_ETIER, "mooncake %s '%s': %s (%" PRId64 ")", what, key,
                          mc_code_name(rc), rc);
    }
}

/* ---- URI ------------------------------------------------------------------------ */

static int unescape(const char *s, size_t n, char *out, size_t outlen)
{
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned v;

        if (c == '%' && i + 2 < n + 0 && sscanf(s + i + 1, "%2x", &v) == 1) {
            c = (char)v;
            i += 2;
        }
        if (j + 1 >= outlen)
            return -1;
        out[j++] = c;
    }
    out[j] = '\0';
    return 0;
}

static bool is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
           strcmp(host, "[::1]") == 0;
}

static int parse_uri(mc_t *m, const char *uri, char *err, size_t errlen)
{
    const char *p = uri + strlen("mooncake:"), *q, *colon;
    char host[256], val[4096], mode[16] = "auto";
    size_t n;
    const char *env;

    if (strncmp(p, "//", 2) != 0)
        goto bad;
    p += 2;
    q = strchr(p, '?');
    n = q != NULL ? (size_t)(q - p) : strlen(p);
    colon = memrchr(p, ':', n);
    if (n == 0 || n >= sizeof(m->master) || colon == NULL || colon == p || colon + 1 == p + n)
        goto bad;
    memcpy(m->master, p, n);
    m->master[n] = '\0';
    snprintf(host, sizeof(host), "%.*s", (int)(colon - p), p);
    snprintf(m->metadata, sizeof(m->metadata), "http://%s:8080/metadata", host);
    snprintf(m->protocol, sizeof(m->protocol), "tcp");
    if (is_loopback(host))
        snprintf(m->hostname, sizeof(m->hostname), "127.0.0.1");
    else if (gethostname(m->hostname, sizeof(m->hostname)) != 0)
        snprintf(m->hostname, sizeof(m->hostname), "localhost");
    m->local_buffer = 16u << 20;
    m->buffer = 64u << 20;
    m->timeout_ms = 30000;
    snprintf(m->lib, sizeof(m->lib), "%s",
             (env = getenv("PINPOOL_MOONCAKE_LIB")) != NULL ? env : "libmooncake_store.so");
    snprintf(m->python, sizeof(m->python), "%s",
             (env = getenv("PINPOOL_PYTHON")) != NULL ? env : "python3");
    if ((env = getenv("PINPOOL_MOONCAKE_ADAPTER")) != NULL)
        snprintf(m->adapter, sizeof(m->adapter), "%s", env);

    while (q != NULL) {
        const char *kv = q + 1, *eq;
        char name[32];
        uint64_t num = 0;

        q = strchr(kv, '&');
        n = q != NULL ? (size_t)(q - kv) : strlen(kv);
        if (n == 0)
            continue;
        eq = memchr(kv, '=', n);
        if (eq == NULL || (size_t)(eq - kv) >= sizeof(name) ||
            unescape(eq + 1, n - (size_t)(eq - kv) - 1, val, sizeof(val)) != 0) {
            snprintf(err, errlen, "spill tier '%s': bad parameter '%.*s'", uri, (int)n, kv);
            return PINPOOL_EINVAL;
        }
        snprintf(name, sizeof(name), "%.*s", (int)(eq - kv), kv);
#define STR(field)                                                                     \
        if (strcmp(name, #field) == 0) {                                               \
            if (strlen(val) >= sizeof(m->field))                                       \
                goto toolong;                                                          \
            strcpy(m->field, val);                                                     \
            continue;                                                                  \
        }
        STR(metadata) STR(protocol) STR(device) STR(prefix) STR(lib) STR(python) STR(adapter)
        STR(log)
#undef STR
        if (strcmp(name, "local_hostname") == 0) {
            if (strlen(val) >= sizeof(m->hostname))
                goto toolong;
            strcpy(m->hostname, val);
        } else if (strcmp(name, "mode") == 0 && (strcmp(val, "auto") == 0 ||
                   strcmp(val, "adapter") == 0 || strcmp(val, "dlopen") == 0)) {
            strcpy(mode, val);
        } else if (strcmp(name, "segment") == 0 || strcmp(name, "local_buffer") == 0 ||
                   strcmp(name, "buffer") == 0) {
            if (pool_parse_size(val, &num) != 0)
                goto badval;
            if (strcmp(name, "segment") == 0)
                m->segment = num;
            else if (strcmp(name, "local_buffer") == 0)
                m->local_buffer = num;
            else if (num < 4096)
                goto badval;
            else
                m->buffer = num;
        } else if (strcmp(name, "timeout_ms") == 0 || strcmp(name, "lease_wait_ms") == 0) {
            char *end;
            long v = strtol(val, &end, 10);

            if (*end != '\0' || v < 0 || v > 3600000 || (v == 0 && name[0] == 't'))
                goto badval;
            if (name[0] == 't')
                m->timeout_ms = (int)v;
            else
                m->lease_wait_ms = (int)v;
        } else if (strcmp(name, "force_remove") == 0 && (strcmp(val, "0") == 0 ||
                                                         strcmp(val, "1") == 0)) {
            m->force_remove = val[0] == '1';
        } else {
            snprintf(err, errlen, "spill tier '%s': unknown parameter or value '%s=%s' (see "
                     "server/tier_mooncake.c for the list)", uri, name, val);
            return PINPOOL_EINVAL;
        }
        continue;
badval:
        snprintf(err, errlen, "spill tier '%s': bad value for %s: '%s'", uri, name, val);
        return PINPOOL_EINVAL;
toolong:
        snprintf(err, errlen, "spill tier '%s': value of %s is too long", uri, name);
        return PINPOOL_EINVAL;
    }
    if (strcmp(mode, "dlopen") == 0)
        m->use_dlopen = true;
    else if (strcmp(mode, "auto") == 0) {
        void *h = dlopen(m->lib, RTLD_NOW | RTLD_LOCAL);

        m->use_dlopen = h != NULL && dlsym(h, "mooncake_store_create") != NULL;
        if (h != NULL)
            dlclose(h);
    }
    return 0;
bad:
    snprintf(err, errlen, "spill tier '%s': expected mooncake://MASTER_HOST:PORT[?k=v&...]", uri);
    return PINPOOL_EINVAL;
}

static int encode_key(const mc_t *m, const void *key, size_t keylen, mc_item_t *it)
{
    static const char printable[] =
        "!\"#$&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
        "abcdefghijklmnopqrstuvwxyz{|}~";
    size_t pl = strlen(m->prefix);
    int n;

    memcpy(it->key, m->prefix, pl);
    n = tier__escape_key(key, keylen, it->key + pl, sizeof(it->key) - pl, printable);
    if (n < 0)
        return tier__fail(PINPOOL_EINVAL, "key too long once encoded");
    it->keylen = (uint32_t)(pl + (size_t)n);
    return 0;
}

/* ---- the adapter process ------------------------------------------------------------- */

/* Stop the adapter: EOF asks it to go (gently: after 2 s it is killed), or
 * SIGKILL at once when it no longer answers. */
static void adapter_stop(mc_t *m, bool gently)
{
    if (m->sock >= 0)
        close(m->sock);
    m->sock = -1;
    if (m->pid > 0) {
        int status;
        uint64_t t0 = now_ms();

        if (!gently)
            kill(m->pid, SIGKILL);
        while (waitpid(m->pid, &status, WNOHANG) == 0) {
            if (now_ms() - t0 > 2000) {
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

static int find_adapter(mc_t *m)
{
    char exe[4096];
    ssize_t n;
    static const char *const rel[] = {"/mooncake_adapter.py", "/../server/mooncake_adapter.py",
                                      "/../../server/mooncake_adapter.py"};

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
        adapter_stop(m, false);
        return tier__fail(PINPOOL_ETIER, "mooncake adapter: send: %s (it is restarted on the "
                          "next call)", strerror(-rc));
    }
    for (;;) {
        struct pollfd pfd = {.fd = m->sock, .events = POLLIN};
        uint64_t now = now_ms();
        ssize_t r;
        uint64_t rseq;

        if (now >= deadline) {
            adapter_stop(m, false);
            return tier__fail(-ETIMEDOUT, "mooncake: no answer within timeout_ms=%d (master "
                              "%s unreachable?); the adapter was stopped and restarts on the "
                              "next call", m->timeout_ms, m->master);
        }
        rc = poll(&pfd, 1, (int)(deadline - now));
        if (rc < 0 && errno != EINTR) {
            rc = -errno;
            adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter: poll: %s", strerror(-rc));
        }
        if (rc <= 0)
            continue;
        r = recv(m->sock, rep, replen, 0);
        if (r < (ssize_t)REP_HDR) {
            adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter %s (see its log%s%s)",
                              r == 0 ? "exited" : "sent a short reply",
                              m->log[0] ? " " : "", m->log);
        }
        memcpy(&rseq, rep, 8);
        if (rseq != seq) {
            adapter_stop(m, false);
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

static int stage_map(mc_t *m, uint64_t len, int *fdout, void **mapout)
{
    int fd = -1;
    void *p;

    if (!m->use_dlopen) {
        fd = memfd_create("pinpool-mooncake-stage", MFD_CLOEXEC);
        if (fd < 0)
            return -errno;
        if (ftruncate(fd, (off_t)len) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    } else {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (p == MAP_FAILED) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return -e;
    }
    *fdout = fd;
    *mapout = p;
    return 0;
}

/* Give the adapter a staging buffer of len bytes (replacing the old one). */
static int adapter_setbuf(mc_t *m, uint64_t len)
{
    char req[REQ_HDR + 8], rep[4096 + REP_HDR], msg[512];
    size_t got;
    int fd, rc;
    void *p;

    rc = stage_map(m, len, &fd, &p);
    if (rc != 0)
        return tier__fail(rc, "staging buffer of %" PRIu64 " bytes: %s", len, strerror(-rc));
    put_req_hdr(req, OP_SETBUF, 0, 0, ++m->seq);
    memcpy(req + REQ_HDR, &len, 8);
    rc = adapter_call(m, req, sizeof(req), fd, rep, sizeof(rep), &got,
                      now_ms() + (uint64_t)m->timeout_ms);
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

static int adapter_start(mc_t *m, char *err, size_t errlen)
{
    int sv[2], rc, logfd = -1;
    pid_t pid;
    char json[2048], req[REQ_HDR + sizeof(json)], rep[4096 + REP_HDR], msg[1024];
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
                 "\"local_buffer\":%" PRIu64 "}",
                 m->master, m->metadata, m->protocol, m->device, m->hostname, m->segment,
                 m->local_buffer);
    if (n < 0 || (size_t)n >= sizeof(json) || strpbrk(m->master, "\"\\") ||
        strpbrk(m->metadata, "\"\\") || strpbrk(m->hostname, "\"\\") ||
        strpbrk(m->device, "\"\\") || strpbrk(m->protocol, "\"\\")) {
        adapter_stop(m, false);
        snprintf(err, errlen, "mooncake: parameters contain quotes or are too long");
        return PINPOOL_EINVAL;
    }
    put_req_hdr(req, OP_HELLO, 0, 0, ++m->seq);
    memcpy(req + REQ_HDR, json, (size_t)n);
    rc = adapter_call(m, req, REQ_HDR + (size_t)n, -1, rep, sizeof(rep), &got,
                      now_ms() + (uint64_t)m->timeout_ms);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake adapter (%s %s) did not start: %s", m->python, m->adapter,
                 tier_errmsg());
        return rc;
    }
    if (rep_status(rep, got, 0, msg, sizeof(msg)) != 0) {
        adapter_stop(m, false);
        snprintf(err, errlen, "mooncake: %s", msg);
        return PINPOOL_ETIER;
    }
    snprintf(m->replace, sizeof(m->replace), "%.31s", msg);
    if (m->stage != NULL) { /* a restart: a fresh buffer of the same size */
        munmap(m->stage, m->stage_len);
        close(m->memfd);
        m->stage = NULL;
        m->memfd = -1;
    }
    rc = adapter_setbuf(m, len);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake: %s", tier_errmsg());
        adapter_stop(m, false);
        return rc;
    }
    return 0;
}

/* Run op over items (all in the staging buffer) through the adapter. */
static int adapter_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n,
                       uint64_t deadline)
{
    char *req = m->req, *rep = m->rep;
    size_t len = REQ_HDR, got;
    char msg[512];
    int rc;

    if (m->dead) {
        char err[512];

        m->restarts++;
        rc = adapter_start(m, err, sizeof(err));
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
            adapter_stop(m, false);
            return tier__fail(PINPOOL_ETIER, "mooncake adapter: %u results for %u items", rn, n);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        memcpy(&items[i].rc, rep + REP_HDR + (size_t)i * 16, 8);
        memcpy(&items[i].aux, rep + REP_HDR + (size_t)i * 16 + 8, 8);
    }
    return 0;
}

/* ---- the C API (dlopen) ------------------------------------------------------------- */

static int capi_open(mc_t *m, char *err, size_t errlen)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction saved[3];
    int rc;

    m->dl = dlopen(m->lib, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        snprintf(err, errlen, "mooncake: dlopen %s: %s (build Mooncake with "
                 "-DWITH_STORE_C_SHARED=ON, or use mode=adapter)", m->lib, dlerror());
        return PINPOOL_ETIER;
    }
#define SYM(field, name)                                                                  \
    do {                                                                                  \
        *(void **)&m->c.field = dlsym(m->dl, name);                                       \
        if (m->c.field == NULL) {                                                         \
            snprintf(err, errlen, "mooncake: %s has no %s: not Mooncake's store C API",   \
                     m->lib, name);                                                       \
            return PINPOOL_ETIER;                                                         \
        }                                                                                 \
    } while (0)
    SYM(create, "mooncake_store_create");
    SYM(destroy, "mooncake_store_destroy");
    SYM(setup, "mooncake_store_setup");
    SYM(put_from, "mooncake_store_put_from");
    SYM(get_into, "mooncake_store_get_into");
    SYM(is_exist, "mooncake_store_is_exist");
    SYM(get_size, "mooncake_store_get_size");
    SYM(remove, "mooncake_store_remove");
    SYM(register_buffer, "mooncake_store_register_buffer");
    SYM(unregister_buffer, "mooncake_store_unregister_buffer");
    SYM(batch_put_from, "mooncake_store_batch_put_from");
    SYM(batch_get_into, "mooncake_store_batch_get_into");
    SYM(batch_is_exist, "mooncake_store_batch_is_exist");
#undef SYM
    m->store = m->c.create();
    if (m->store == NULL) {
        snprintf(err, errlen, "mooncake: mooncake_store_create failed");
        return PINPOOL_ETIER;
    }
    /* The client installs its own SIGINT/SIGTERM/SIGHUP handlers: keep ours. */
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], NULL, &saved[i]);
    rc = m->c.setup(m->store, m->hostname, m->metadata, m->segment, m->local_buffer, m->protocol,
                    m->device, m->master);
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &saved[i], NULL);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake: mooncake_store_setup(master %s, metadata %s) returned "
                 "%d (%s)", m->master, m->metadata, rc, mc_code_name(rc));
        return PINPOOL_ETIER;
    }
    snprintf(m->replace, sizeof(m->replace), "remove+put");
    return 0;
}

static int capi_setbuf(mc_t *m, uint64_t len)
{
    void *p;
    int fd, rc = stage_map(m, len, &fd, &p);

    if (rc != 0)
        return tier__fail(rc, "staging buffer of %" PRIu64 " bytes: %s", len, strerror(-rc));
    rc = m->c.register_buffer(m->store, p, len);
    if (rc != 0) {
        munmap(p, len);
        return tier__fail(PINPOOL_ETIER, "mooncake_store_register_buffer: %d", rc);
    }
    if (m->stage != NULL) {
        m->c.unregister_buffer(m->store, m->stage);
        munmap(m->stage, m->stage_len);
    }
    m->stage = p;
    m->stage_len = len;
    return 0;
}

static int capi_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n)
{
    char *base = m->stage;

    for (uint32_t i = 0; i < n; i++) {
        mc_item_t *it = &items[i];

        it->aux = 0;
        switch (op) {
        case OP_PUT:
            it->rc = m->c.remove(m->store, it->key, (flags & FLAG_FORCE) != 0);
            if (it->rc == 0 || it->rc == MC_OBJECT_NOT_FOUND)
                it->rc = m->c.put_from(m->store, it->key, base + it->off, it->len, NULL);
            break;
        case OP_GET:
            it->rc = m->c.get_into(m->store, it->key, base + it->off, it->len);
            if (it->rc == MC_INVALID_PARAMS)
                it->aux = m->c.get_size(m->store, it->key);
            break;
        case OP_EXISTS:
            it->rc = m->c.is_exist(m->store, it->key);
            break;
        case OP_SIZE:
            it->rc = m->c.get_size(m->store, it->key);
            break;
        case OP_REMOVE:
            it->rc = m->c.remove(m->store, it->key, (flags & FLAG_FORCE) != 0);
            break;
        }
    }
    return 0;
}

/* ---- one path over both drivers ------------------------------------------------------- */

/* The dlopen driver cannot be interrupted: its calls end when Mooncake's own
 * RPC timeouts say so.  The adapter's are bounded by deadline. */
static int run(mc_t *m, uint16_t op, mc_item_t *items, uint32_t n, uint64_t deadline)
{
    uint16_t flags = m->force_remove ? FLAG_FORCE : 0;

    if (m->use_dlopen)
        return capi_run(m, op, flags, items, n);
    return adapter_run(m, op, flags, items, n, deadline);
}

static int grow_stage(mc_t *m, uint64_t need)
{
    uint64_t len = m->stage_len;

    if (need <= len)
        return 0;
    while (len < need)
        len = len * 2;
    len = (len + 4095) & ~(uint64_t)4095;
    if (m->use_dlopen)
        return capi_setbuf(m, len);
    if (m->dead) { /* the restart maps a buffer of stage_len */
        char err[512];
        int rc;

        m->restarts++;
        rc = adapter_start(m, err, sizeof(err));
        if (rc != 0)
            return tier__fail(rc, "%s", err);
    }
    return adapter_setbuf(m, len);
}

static int mc_open(void **impl, const char *uri, char *err, size_t errlen)
{
    mc_t *m = calloc(1, sizeof(*m));
    int rc;

    if (m == NULL)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    m->sock = m->memfd = -1;
    rc = parse_uri(m, uri, err, errlen);
    if (rc != 0)
        goto fail;
    if (m->use_dlopen) {
        rc = capi_open(m, err, errlen);
        if (rc == 0 && (rc = capi_setbuf(m, m->buffer)) != 0)
            snprintf(err, errlen, "mooncake: %s", tier_errmsg());
    } else {
        rc = find_adapter(m);
        if (rc != 0) {
            snprintf(err, errlen, "mooncake: cannot find mooncake_adapter.py (%s); set "
                     "adapter=PATH or $PINPOOL_MOONCAKE_ADAPTER",
                     m->adapter[0] ? m->adapter : "not next to the binary");
            rc = PINPOOL_ETIER;
            goto fail;
        }
        rc = adapter_start(m, err, errlen);
    }
    if (rc != 0)
        goto fail;
    *impl = m;
    return 0;

fail:
    if (m->pid > 0)
        adapter_stop(m, false);
    if (m->store != NULL)
        m->c.destroy(m->store);
    if (m->stage != NULL)
        munmap(m->stage, m->stage_len);
    if (m->memfd >= 0)
        close(m->memfd);
    if (m->dl != NULL)
        dlclose(m->dl);
    pthread_mutex_destroy(&m->lock);
    free(m);
    return rc;
}

static void mc_close(void *impl)
{
    mc_t *m = impl;

    if (m->use_dlopen) {
        if (m->stage != NULL)
            m->c.unregister_buffer(m->store, m->stage);
        m->c.destroy(m->store);
        /* The library keeps threads and handlers: it is never dlclose'd. */
    } else {
        adapter_stop(m, true);
        if (m->memfd >= 0)
            close(m->memfd);
    }
    if (m->stage != NULL)
        munmap(m->stage, m->stage_len);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/*
 * The batch engine.  Items go in groups that fit the staging buffer, one
 * command message and BATCH_MAX; an item larger than the buffer grows it and
 * goes alone.  For get, an item's room is min(its len, what is left).
 */
static int mc_batch(mc_t *m, uint16_t op, tier_item_t *items, size_t n)
{
    mc_item_t *mi = calloc(n < BATCH_MAX ? n : BATCH_MAX, sizeof(*mi));
    size_t i = 0;
    int rc = 0;
    uint64_t deadline = now_ms() + (uint64_t)m->timeout_ms; /* for the whole call */

    if (mi == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    while (i < n) {
        uint32_t k = 0;
        uint64_t used = 0;
        size_t msg = REQ_HDR, first = i;
        bool bytes = op == OP_PUT || op == OP_GET;

        /* An item alone larger than the buffer: grow it. */
        if (bytes && items[i].len > m->stage_len && (rc = grow_stage(m, items[i].len)) != 0) {
            items[i++].rc = rc;
            continue;
        }
        while (i < n && k < BATCH_MAX) {
            tier_item_t *it = &items[i];
            mc_item_t *x = &mi[k];
            uint64_t need = bytes ? (it->len + 63) & ~(uint64_t)63 : 0;

            if (encode_key(m, it->key, it->keylen, x) != 0) {
                it->rc = PINPOOL_EINVAL;
                i++;
                continue;
            }
            if (k > 0 && (used + need > m->stage_len || msg + ITEM_HDR + x->keylen > REQ_MAX))
                break;
            x->off = used;
            x->len = bytes ? it->len : 0;
            if (op == OP_PUT && it->len > 0)
                memcpy((char *)m->stage + used, it->buf, it->len);
            used += need;
            msg += ITEM_HDR + x->keylen;
            k++;
            i++;
        }
        if (k == 0)
            continue;
        rc = run(m, op, mi, k, deadline);
        /* map results back onto the items of this group (skipping bad keys) */
        for (size_t j = first, x = 0; j < i && x < k; j++) {
            tier_item_t *it = &items[j];
            mc_item_t *r = &mi[x];

            if (it->rc == PINPOOL_EINVAL)
                continue;
            x++;
            if (rc != 0) {
                it->rc = rc;
                continue;
            }
            switch (op) {
            case OP_PUT:
                it->rc = r->rc == 0 ? 0 : mc_error(r->rc, "put", r->key);
                break;
            case OP_GET:
                if (r->rc >= 0) {
                    it->got = (uint64_t)r->rc;
                    it->rc = 0;
                    if (it->got > 0)
                        memcpy(it->buf, (char *)m->stage + r->off, it->got);
                } else if (r->rc == MC_INVALID_PARAMS && r->aux > 0) {
                    it->got = (uint64_t)r->aux;
                    it->rc = tier__fail(-ENOBUFS, "the object is %" PRId64 " bytes, the buffer "
                                        "%" PRIu64, r->aux, it->len);
                } else {
                    it->rc = mc_error(r->rc, "get", r->key);
                }
                break;
            case OP_EXISTS:
                it->rc = r->rc == 1 ? 1 : r->rc == 0 ? 0 : mc_error(r->rc, "exists", r->key);
                break;
            case OP_SIZE:
                if (r->rc >= 0) {
                    it->got = (uint64_t)r->rc;
                    it->rc = 0;
                } else {
                    it->rc = mc_error(r->rc, "size", r->key);
                }
                break;
            case OP_REMOVE:
                it->rc = r->rc == 0 ? 0 : mc_error(r->rc, "remove", r->key);
                break;
            }
        }
        /* A dead adapter, a timeout, or a master that answered no item of
         * this group (RPC_FAIL on all): the rest would wait as long, so they
         * fail now with the same error. */
        bool unreachable = rc == 0;
        for (uint32_t x = 0; x < k && unreachable; x++)
            unreachable = mi[x].rc == -900;
        if (rc == -ETIMEDOUT || (rc != 0 && m->dead) || unreachable) {
            int why = rc != 0 ? rc : items[i - 1].rc;

            for (; i < n; i++)
                items[i].rc = why;
            break;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&m->lock);
    free(mi);
    for (size_t j = 0; j < n && rc == 0; j++)
        if (items[j].rc < 0 || (op != OP_EXISTS && items[j].rc != 0))
            rc = items[j].rc;
    return rc;
}

static int mc_put_batch(void *impl, tier_item_t *items, size_t n)
{
    return mc_batch(impl, OP_PUT, items, n);
}

/* A get whose object is larger than the staging buffer but fits the caller's
 * buffer is retried after growing the staging buffer. */
static int mc_get_batch(void *impl, tier_item_t *items, size_t n)
{
    mc_t *m = impl;
    int rc = mc_batch(m, OP_GET, items, n);

    if (rc == 0)
        return 0;
    rc = 0;
    for (size_t i = 0; i < n; i++) {
        tier_item_t *it = &items[i];

        if (it->rc == -ENOBUFS && it->got <= it->len) {
            uint64_t room = it->len;

            it->len = it->got;
            mc_batch(m, OP_GET, it, 1);
            it->len = room;
        }
        if (rc == 0 && it->rc != 0)
            rc = it->rc;
    }
    return rc;
}

static int mc_exists_batch(void *impl, tier_item_t *items, size_t n)
{
    return mc_batch(impl, OP_EXISTS, items, n);
}

static int mc_remove_batch(void *impl, tier_item_t *items, size_t n)
{
    mc_t *m = impl;
    uint64_t deadline = now_ms() + (uint64_t)m->lease_wait_ms;
    int rc = mc_batch(m, OP_REMOVE, items, n);

    /* Leased objects: retry those alone until the lease ends or lease_wait_ms. */
    while (rc != 0 && m->lease_wait_ms > 0 && now_ms() < deadline) {
        bool again = false;

        usleep(100000);
        rc = 0;
        for (size_t i = 0; i < n; i++) {
            if (items[i].rc == PINPOOL_EBUSY) {
                mc_batch(m, OP_REMOVE, &items[i], 1);
                again |= items[i].rc == PINPOOL_EBUSY;
            }
            if (rc == 0 && items[i].rc != 0)
                rc = items[i].rc;
        }
        if (!again)
            break;
    }
    return rc;
}

static int mc_put(void *impl, const void *key, size_t keylen, const void *buf, uint64_t len)
{
    tier_item_t it = {.key = key, .keylen = keylen, .buf = (void *)(uintptr_t)buf, .len = len};

    return mc_put_batch(impl, &it, 1);
}

static int mc_get(void *impl, const void *key, size_t keylen, void *buf, uint64_t len,
                  uint64_t *got)
{
    tier_item_t it = {.key = key, .keylen = keylen, .buf = buf, .len = len};
    int rc = mc_get_batch(impl, &it, 1);

    *got = it.got;
    return rc;
}

static int mc_exists(void *impl, const void *key, size_t keylen)
{
    tier_item_t it = {.key = key, .keylen = keylen};

    mc_exists_batch(impl, &it, 1);
    return it.rc;
}

static int mc_size(void *impl, const void *key, size_t keylen, uint64_t *size)
{
    tier_item_t it = {.key = key, .keylen = keylen};
    int rc = mc_batch(impl, OP_SIZE, &it, 1);

    *size = it.got;
    return rc;
}

static int mc_remove(void *impl, const void *key, size_t keylen)
{
    tier_item_t it = {.key = key, .keylen = keylen};

    return mc_remove_batch(impl, &it, 1);
}

static void mc_describe(void *impl, void (*add)(const char *name, const char *value, void *arg),
                        void *arg)
{
    mc_t *m = impl;
    char v[64];

    pthread_mutex_lock(&m->lock);
    add("master", m->master, arg);
    add("metadata", m->metadata, arg);
    add("mode", m->use_dlopen ? "dlopen" : "adapter", arg);
    add("replace", m->replace, arg);
    snprintf(v, sizeof(v), "%" PRIu64, m->stage_len);
    add("staging_bytes", v, arg);
    snprintf(v, sizeof(v), "%u", m->restarts);
    add("adapter_restarts", v, arg);
    snprintf(v, sizeof(v), "%d", (int)m->pid);
    add("adapter_pid", v, arg);
    pthread_mutex_unlock(&m->lock);
}

const tier_ops_t tier_mooncake_ops = {
    .scheme = "mooncake",
    .open = mc_open,
    .close = mc_close,
    .put = mc_put,
    .get = mc_get,
    .exists = mc_exists,
    .size = mc_size,
    .remove = mc_remove,
    .put_batch = mc_put_batch,
    .get_batch = mc_get_batch,
    .exists_batch = mc_exists_batch,
    .remove_batch = mc_remove_batch,
    .describe = mc_describe,
};
