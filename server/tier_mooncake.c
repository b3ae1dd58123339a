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
 *                      beside the binary, in ../libexec/pinpool/ or in ../ from
 *                      it: the build, `make install` and `make dist` put it there)
 *   log=PATH           where the adapter's stderr (Mooncake's glog) goes
 *   master=ENTRY       what Mooncake's client is given as its master: default
 *                      HOST:PORT; etcd://H:P[;H:P...] finds the leader of
 *                      masters in HA mode (mooncake_master --enable_ha) and
 *                      follows it across a restart or fail-over
 * Placement, passed to every put (Mooncake's ReplicateConfig; the adapter only):
 *   replicas=N         replica_num (1..16, default 1): copies on N segments
 *                      (Mooncake places them on different segments, and makes
 *                      fewer, silently, when fewer segments exist)
 *   soft_pin=1         soft_pin_action ENABLE (with_soft_pin on older wheels):
 *                      evicted only after every unpinned object
 *   hard_pin=1         with_hard_pin: never evicted (the cluster's own records)
 *   prefer_local=1     the first replica on this node's segment: the daemon's own
 *                      (segment=SIZE) or local_segment=HOST:PORT (a
 *                      mooncake_client here); Mooncake's prefer_alloc_in_same_node
 *                      is refused by the wheel's client on every put
 *                      ("prefer_alloc_in_same_node is not supported",
 *                      INVALID_PARAMS, 0.3.13), so preferred_segment carries it
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
 * Each driver is a file of its own: tier_mooncake_dlopen.c and
 * tier_mooncake_adapter.c; tier_mooncake.h is what the three files share.
 *
 * Owns (this file): the options parsed from the URI, key encoding, the
 * mapping of Mooncake's results to pinpool errors, the staging buffer (grown
 * on demand), the batch engine that packs items into commands, and the
 * tier_ops_t table.
 * Never: talks to Mooncake itself: every command goes through a driver.
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
 * Objects hold the bytes only, so that any Mooncake client reads them as
 * they were put; the metadata and CRC of each, and the list of them all (the
 * wheel's client cannot list keys), are in the index that tier.c keeps under
 * the prefix (tier_index.c), whose ops->list is therefore NULL here.
 * Locking: m->lock serialises calls (one staging buffer, one command in
 * flight).  Keys: prefix + the key with bytes outside printable ASCII, and
 * '%', written %XX, so printable keys read the same from any Mooncake client.
 */
#include "tier_mooncake.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pinpool.h"
#include "pool.h"

const char *tier_mc_code_name(int64_t rc)
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
                          tier_mc_code_name(rc), rc);
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
    m->replicas = 1;
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
        STR(log) STR(local_segment)
#undef STR
        if (strcmp(name, "master") == 0) {
            if (strlen(val) >= sizeof(m->master_entry))
                goto toolong;
            strcpy(m->master_entry, val);
            continue;
        }
        if (strcmp(name, "replicas") == 0) {
            char *end;
            long v = strtol(val, &end, 10);

            if (*end != '\0' || v < 1 || v > 16)
                goto badval;
            m->replicas = (uint32_t)v;
            continue;
        }
        if ((strcmp(name, "soft_pin") == 0 || strcmp(name, "hard_pin") == 0 ||
             strcmp(name, "prefer_local") == 0) &&
            (strcmp(val, "0") == 0 || strcmp(val, "1") == 0)) {
            bool on = val[0] == '1';

            if (name[0] == 's')
                m->soft_pin = on;
            else if (name[0] == 'h')
                m->hard_pin = on;
            else
                m->prefer_local = on;
            continue;
        }
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
    if (m->master_entry[0] == '\0')
        snprintf(m->master_entry, sizeof(m->master_entry), "%s", m->master);
    if (strcmp(mode, "dlopen") == 0)
        m->use_dlopen = true;
    else if (strcmp(mode, "auto") == 0) {
        void *h = dlopen(m->lib, RTLD_NOW | RTLD_LOCAL);

        m->use_dlopen = h != NULL && dlsym(h, "mooncake_store_create") != NULL;
        if (h != NULL)
            dlclose(h);
    }
    if (m->use_dlopen && (m->replicas != 1 || m->soft_pin || m->hard_pin || m->prefer_local)) {
        snprintf(err, errlen, "spill tier '%s': replicas, soft_pin, hard_pin and prefer_local "
                 "need the adapter (mode=adapter): the C API driver passes no ReplicateConfig",
                 uri);
        return PINPOOL_EINVAL;
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

/* ---- the staging buffer -------------------------------------------------------------- */

int tier_mc_stage_map(mc_t *m, uint64_t len, int *fdout, void **mapout)
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

/* ---- one path over both drivers ------------------------------------------------------- */

/* The dlopen driver cannot be interrupted: its calls end when Mooncake's own
 * RPC timeouts say so.  The adapter's are bounded by deadline. */
static int run(mc_t *m, uint16_t op, mc_item_t *items, uint32_t n, uint64_t deadline)
{
    uint16_t flags = m->force_remove ? FLAG_FORCE : 0;

    if (m->use_dlopen)
        return tier_mc_dlopen_run(m, op, flags, items, n);
    return tier_mc_adapter_run(m, op, flags, items, n, deadline);
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
        return tier_mc_dlopen_setbuf(m, len);
    if (m->dead) { /* the restart maps a buffer of stage_len */
        char err[512];
        int rc;

        m->restarts++;
        rc = tier_mc_adapter_start(m, err, sizeof(err));
        if (rc != 0)
            return tier__fail(rc, "%s", err);
    }
    return tier_mc_adapter_setbuf(m, len);
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
        rc = tier_mc_dlopen_open(m, err, errlen);
        if (rc == 0 && (rc = tier_mc_dlopen_setbuf(m, m->buffer)) != 0)
            snprintf(err, errlen, "mooncake: %s", tier_errmsg());
    } else {
        rc = tier_mc_adapter_find(m);
        if (rc != 0) {
            snprintf(err, errlen, "mooncake: cannot find mooncake_adapter.py (%s); set "
                     "adapter=PATH or $PINPOOL_MOONCAKE_ADAPTER",
                     m->adapter[0] ? m->adapter
                                   : "not beside the binary, in ../libexec/pinpool/ or in ../ from it");
            rc = PINPOOL_ETIER;
            goto fail;
        }
        rc = tier_mc_adapter_start(m, err, errlen);
    }
    if (rc != 0)
        goto fail;
    *impl = m;
    return 0;

fail:
    if (m->pid > 0)
        tier_mc_adapter_stop(m, false);
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
        tier_mc_adapter_stop(m, true);
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
    uint64_t deadline = tier_mc_now_ms() + (uint64_t)m->timeout_ms; /* for the whole call */

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
    uint64_t deadline = tier_mc_now_ms() + (uint64_t)m->lease_wait_ms;
    int rc = mc_batch(m, OP_REMOVE, items, n);

    /* Leased objects: retry those alone until the lease ends or lease_wait_ms. */
    while (rc != 0 && m->lease_wait_ms > 0 && tier_mc_now_ms() < deadline) {
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

/* meta: the tier's index keeps it (Mooncake holds only the bytes). */
static int mc_put(void *impl, const void *key, size_t keylen, const void *buf, uint64_t len,
                  const void *meta, uint32_t metalen)
{
    tier_item_t it = {.key = key, .keylen = keylen, .buf = (void *)(uintptr_t)buf, .len = len};

    (void)meta;
    (void)metalen;
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
    add("master_entry", m->master_entry, arg);
    snprintf(v, sizeof(v), "%u", m->replicas);
    add("replicas", v, arg);
    add("soft_pin", m->soft_pin ? "1" : "0", arg);
    add("hard_pin", m->hard_pin ? "1" : "0", arg);
    add("prefer_local", m->prefer_local ? (m->preferred[0] ? m->preferred : "1") : "0", arg);
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
