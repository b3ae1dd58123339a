/*
 * memroom.c - how much memory the daemon may still commit, and the host pool
 * that stops growing where that runs out (see srv_int.h).
 *
 * Owns: reading the limits - the memory cgroup of this process and of every
 * cgroup above it (v1 memory.limit_in_bytes and memory.usage_in_bytes, v2
 * memory.max and memory.current; inactive page cache counts as free, the
 * kernel reclaims it first) and MemAvailable from /proc/meminfo - and
 * srv->pool_short, set once when the next chunk does not fit.
 * Never: blocks on anything but reads of /proc and /sys (a few microseconds),
 * which happen without srv->lock; lets a chunk be made that would leave less
 * than SRV_MEM_KEEP: the kernel would OOM-kill the daemon for it.
 * Locking: srv_mem_room takes none; do_chunk_fits runs under srv->lock (a
 * chunk thread's), srv_pool_short_of takes it.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pinpool.h"

#define UNLIMITED (1ull << 62) /* v1 says 9223372036854771712 for no limit */

/* The first number of file (or of its line starting with key), or false. */
static bool read_u64(const char *path, const char *key, uint64_t *out)
{
    char line[256];
    size_t klen = key != NULL ? strlen(key) : 0;
    bool ok = false;
    FILE *f = fopen(path, "re");

    if (f == NULL)
        return false;
    while (!ok && fgets(line, sizeof(line), f) != NULL) {
        if (key != NULL && (strncmp(line, key, klen) != 0 || line[klen] != ' '))
            continue;
        const char *p = line + klen;
        char *end;
        while (*p == ' ' || *p == ':' || *p == '\t')
            p++;
        if (strncmp(p, "max", 3) == 0) { /* v2 memory.max */
            *out = UINT64_MAX;
            ok = true;
            break;
        }
        errno = 0;
        *out = strtoull(p, &end, 10);
        ok = errno == 0 && end != p;
        if (key == NULL)
            break;
    }
    fclose(f);
    return ok;
}

/* The mount point of the cgroup hierarchy (v2: fstype cgroup2; v1: the one
 * with the memory controller) and its root, from /proc/self/mountinfo. */
static bool cgroup_mount(bool v2, char *mnt, size_t mlen, char *root, size_t rlen)
{
    char line[1024];
    bool found = false;
    FILE *f = fopen("/proc/self/mountinfo", "re");

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char r[512], m[512], fstype[64], opts[512];
        const char *dash = strstr(line, " - ");
        if (dash == NULL || sscanf(line, "%*s %*s %*s %511s %511s", r, m) != 2 ||
            sscanf(dash + 3, "%63s %*s %511s", fstype, opts) != 2)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") == 0
               : strcmp(fstype, "cgroup") == 0 && strstr(opts, "memory") != NULL) {
            snprintf(mnt, mlen, "%s", m);
            snprintf(root, rlen, "%s", r);
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* This process's cgroup path in the v2 hierarchy or the v1 memory one. */
static bool own_cgroup(bool v2, char *path, size_t len)
{
    char line[1024];
    bool found = false;
    FILE *f = fopen("/proc/self/cgroup", "re");

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char *c1 = strchr(line, ':'), *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        line[strcspn(line, ":")] = '\0';
        const char *ctrls = c1 + 1;
        bool match = v2 ? strcmp(line, "0") == 0 && ctrls[0] == '\0'
                        : (strcmp(ctrls, "memory") == 0 || strstr(ctrls, "memory,") == ctrls ||
                           strstr(ctrls, ",memory") != NULL);
        if (match) {
            c2[1 + strcspn(c2 + 1, "\n")] = '\0';
            snprintf(path, len, "%s", c2 + 1);
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* The least room under the limits of the cgroup and those above it, in one
 * hierarchy; *where says which cgroup and its numbers.  false: no limit. */
static bool cgroup_room(bool v2, uint64_t *room, char *where, size_t wlen)
{
    char mnt[512], root[512], cg[512], dir[1536];
    bool limited = false;

    if (!cgroup_mount(v2, mnt, sizeof(mnt), root, sizeof(root)) || !own_cgroup(v2, cg, sizeof(cg)))
        return false;
    size_t rl = strlen(root);
    const char *rel = strcmp(root, "/") != 0 && strncmp(cg, root, rl) == 0 ? cg + rl : cg;
    snprintf(dir, sizeof(dir), "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel);
    if (access(dir, F_OK) != 0) /* a cgroup namespace: the mount is our cgroup */
        snprintf(dir, sizeof(dir), "%s", mnt);
    for (;;) {
        char f[1600];
        uint64_t limit, usage, inactive = 0;
        snprintf(f, sizeof(f), "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
        bool have = read_u64(f, NULL, &limit);
        snprintf(f, sizeof(f), "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
        have = have && read_u64(f, NULL, &usage);
        if (have && limit < UNLIMITED) {
            snprintf(f, sizeof(f), "%s/memory.stat", dir);
            read_u64(f, v2 ? "inactive_file" : "total_inactive_file", &inactive);
            uint64_t used = usage > inactive ? usage - inactive : 0;
            uint64_t r = limit > used ? limit - used : 0;
            if (!limited || r < *room) {
                char a[32], b[32];
                *room = r;
                if (snprintf(where, wlen, "the cgroup %s allows %s (memory.%s) and %s of it is "
                             "in use", dir, pool_format_size(limit, a, sizeof(a)),
                             v2 ? "max" : "limit_in_bytes",
                             pool_format_size(used, b, sizeof(b))) >= (int)wlen)
                    where[wlen - 1] = '\0'; /* a message: cut */
            }
            limited = true;
        }
        if (strlen(dir) <= strlen(mnt))
            break;
        *strrchr(dir, '/') = '\0';
    }
    return limited;
}

uint64_t srv_mem_room(char *why, size_t whylen)
{
    uint64_t room = UINT64_MAX, r, avail;
    char where[512];

    snprintf(why, whylen, "nothing limits it");
    for (int v2 = 0; v2 <= 1; v2++)
        if (cgroup_room(v2 != 0, &r, where, sizeof(where)) && r < room) {
            room = r;
            snprintf(why, whylen, "%s", where);
        }
    if (read_u64("/proc/meminfo", "MemAvailable", &avail) && avail <= UINT64_MAX / 1024 &&
        avail * 1024 < room) {
        char a[32];
        room = avail * 1024;
        snprintf(why, whylen, "the node has %s available (MemAvailable)",
                 pool_format_size(room, a, sizeof(a)));
    }
    if (room == UINT64_MAX)
        return room;
    return room > SRV_MEM_KEEP ? room - SRV_MEM_KEEP : 0;
}

bool do_chunk_fits(srv_t *srv, uint64_t room, const char *why)
{
    uint64_t size = srv->cfg.chunk_size;
    uint32_t making = 0;
    char a[32], b[32], c[32], k[32];

    if (srv->pool_short[0] != '\0')
        return false;
    /* Chunks picked but not made yet: their memory is not all counted in room. */
    for (uint32_t i = srv->ready; i < srv->next_chunk; i++)
        making += !srv->created[i];
    if (room >= (uint64_t)(making + 1) * size)
        return true;
    snprintf(srv->pool_short, sizeof(srv->pool_short), "%s; another %s chunk would leave less "
             "than %s for the daemon itself", why, pool_format_size(size, a, sizeof(a)),
             pool_format_size(SRV_MEM_KEEP, k, sizeof(k)));
    srv_warn("the pool stops growing at %s of %s: %s (GetPoolInfo: stopped_short)",
             pool_format_size((uint64_t)srv->next_chunk * size, b, sizeof(b)),
             pool_format_size(srv->capacity, c, sizeof(c)), srv->pool_short);
    if (srv->next_chunk == 0 && srv->chunk_err == 0) {
        srv->chunk_err = -ENOMEM;
        snprintf(srv->chunk_errmsg, sizeof(srv->chunk_errmsg), "not one %s chunk fits: %s",
                 pool_format_size(size, a, sizeof(a)), why);
    }
    return false;
}

bool srv_pool_short_of(srv_t *srv, char *why, size_t whylen)
{
    bool done;

    pthread_mutex_lock(&srv->lock);
    done = srv->pool_short[0] != '\0' && srv->ready == srv->next_chunk;
    if (done)
        snprintf(why, whylen, "%s", srv->pool_short);
    pthread_mutex_unlock(&srv->lock);
    return done;
}
