/*
 * hugepages.c - see hugepages.h.
 *
 * The kernel's view, per page size: /sys/kernel/mm/hugepages/hugepages-<kB>kB/
 * nr_hugepages (the pool; root may write it: /proc/sys/vm/nr_hugepages is the
 * same number for the default size), free_hugepages and resv_hugepages (free
 * pages already promised to mappings).  Writing a lower nr_hugepages frees
 * free pages at once; pages still in use (a client that still maps a chunk
 * of a daemon that stopped) become surplus and are freed with their last
 * user.  A reservation adds one chunk's pages beyond the pool's: a chunk
 * passing to another uid gets fresh pages before its old ones go
 * (chunk_replace).
 */
#include "hugepages.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "log.h"
#include "pinpool.h"
#include "srv.h"

static const char *page_name(uint64_t page)
{
    return page == IPC_HUGE_1G ? "1 GiB" : "2 MiB";
}

static void hp_path(char *buf, size_t len, uint64_t page, const char *file)
{
    snprintf(buf, len, "/sys/kernel/mm/hugepages/hugepages-%" PRIu64 "kB/%s", page >> 10, file);
}

static int64_t read_num(const char *path)
{
    long long v = -1;
    FILE *f = fopen(path, "re");

    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return (int64_t)v;
}

static int64_t hp_read(uint64_t page, const char *file)
{
    char path[128];

    hp_path(path, sizeof(path), page, file);
    return read_num(path);
}

/* Write nr_hugepages of that size: 0 or -errno. */
static int hp_write_nr(uint64_t page, int64_t n)
{
    char path[128], text[32];
    int fd, len, rc = 0;

    if (n < 0)
        n = 0;
    hp_path(path, sizeof(path), page, "nr_hugepages");
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    len = snprintf(text, sizeof(text), "%" PRId64 "\n", n);
    if (write(fd, text, (size_t)len) != len)
        rc = -errno;
    close(fd);
    return rc;
}

int64_t srv_huge_available(uint64_t page)
{
    int64_t f = hp_read(page, "free_hugepages"), r = hp_read(page, "resv_hugepages");

    if (f < 0)
        return -1;
    if (r < 0)
        r = 0;
    return f > r ? f - r : 0;
}

static uint64_t mem_available(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/meminfo", "re");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb << 10;
}

/* Append to buf (len bytes, *n used so far; a message: cut when full). */
__attribute__((format(printf, 4, 5))) static void appendf(char *buf, size_t len, size_t *n,
                                                          const char *fmt, ...)
{
    va_list ap;
    int k;

    if (*n >= len)
        return;
    va_start(ap, fmt);
    k = vsnprintf(buf + *n, len - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n = *n + (size_t)k < len ? *n + (size_t)k : len;
}

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- the ledger ----------------------------------------------------------------- */

/* SRV_HUGE_LEDGER, made if missing (make), and only if it is root's and no
 * one else may write into it: the fd, or -1 with why. */
static int ledger_dir(bool make, char *why, size_t len)
{
    struct stat st;
    int fd;

    if (make && mkdir(SRV_HUGE_LEDGER, 0700) != 0 && errno != EEXIST) {
        snprintf(why, len, "cannot make %s: %s", SRV_HUGE_LEDGER, strerror(errno));
        return -1;
    }
    fd = open(SRV_HUGE_LEDGER, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, len, "cannot open %s: %s", SRV_HUGE_LEDGER, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || st.st_uid != 0 || (st.st_mode & 022) != 0) {
        snprintf(why, len, "%s is not a directory of root's that only root may write", SRV_HUGE_LEDGER);
        close(fd);
        return -1;
    }
    return fd;
}

/* The process-wide lock around nr_hugepages changes: its fd (flock held), or -1. */
static int ledger_lock(int dir)
{
    int fd = openat(dir, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    return fd;
}

static void ledger_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* drops the flock */
}

/*
 * Under the lock: every ledger file whose lock can be taken belongs to a
 * daemon that is gone without giving its pages back (SIGKILL, a crash):
 * give them back now and drop the file.
 */
static void give_back_stale(int dir)
{
    int d2 = dup(dir);
    DIR *dp = d2 >= 0 ? fdopendir(d2) : NULL;
    struct dirent *e;

    if (dp == NULL) {
        if (d2 >= 0)
            close(d2);
        return;
    }
    while ((e = readdir(dp)) != NULL) {
        size_t n = strlen(e->d_name);
        unsigned long long pages = 0, kb = 0;
        char text[128];
        int pid = 0, fd;
        ssize_t got;

        if (n < 4 || strcmp(e->d_name + n - 3, ".hp") != 0)
            continue;
        fd = openat(dir, e->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) { /* its daemon lives */
            close(fd);
            continue;
        }
        got = pread(fd, text, sizeof(text) - 1, 0);
        text[got > 0 ? got : 0] = '\0';
        if (sscanf(text, "pages=%llu kb=%llu pid=%d", &pages, &kb, &pid) == 3 &&
            (kb == IPC_HUGE_2M >> 10 || kb == IPC_HUGE_1G >> 10) && pages > 0) {
            uint64_t page = (uint64_t)kb << 10;
            int64_t nr = hp_read(page, "nr_hugepages");
            int rc = nr < 0 ? -ENOENT : hp_write_nr(page, nr - (int64_t)pages);
            if (rc == 0)
                srv_warn("gave back %llu %s huge pages that pinpool pid %d reserved and never gave "
                         "back (it was killed or crashed): nr_hugepages %" PRId64 " -> %" PRId64,
                         pages, page_name(page), pid, nr, hp_read(page, "nr_hugepages"));
            else
                srv_warn("cannot give back %llu %s huge pages left reserved by pinpool pid %d: %s",
                         pages, page_name(page), pid, strerror(-rc));
        }
        unlinkat(dir, e->d_name, 0);
        close(fd);
    }
    closedir(dp);
}

/* Under the lock: this daemon's ledger file, locked for its lifetime. */
static void ledger_add(int dir, srv_huge_t *h)
{
    char text[128];
    int fd, n;

    snprintf(h->ledger, sizeof(h->ledger), "%d-%" PRIu64 "kB.hp", (int)getpid(), h->page >> 10);
    for (int tries = 0; tries < 2; tries++) {
        fd = openat(dir, h->ledger, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            break;
        unlinkat(dir, h->ledger, 0); /* a dead daemon's of the same pid, already given back */
    }
    n = snprintf(text, sizeof(text), "pages=%" PRIu64 " kb=%" PRIu64 " pid=%d\n", h->added,
                 h->page >> 10, (int)getpid());
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0 || write(fd, text, (size_t)n) != n) {
        srv_warn("cannot record the reserved huge pages in %s/%s (%s): if this daemon is killed "
                 "with SIGKILL they stay reserved until root lowers nr_hugepages", SRV_HUGE_LEDGER,
                 h->ledger, strerror(errno));
        if (fd >= 0) {
            unlinkat(dir, h->ledger, 0);
            close(fd);
        }
        h->ledger[0] = '\0';
        return;
    }
    h->ledger_fd = fd;
}

/* ---- the plan ------------------------------------------------------------------- */

/* Raise the kernel's pool of one of the sizes in pages[] (best first) by
 * what a pool of bytes (plus one chunk) needs beyond what is free.  true and
 * *h filled, or false with why. */
static bool reserve(const srv_config_t *cfg, const uint64_t *pages, int npages, uint64_t bytes,
                    srv_huge_t *h, char *why, size_t len)
{
    char a[32], b[32], k[32];
    size_t n = 0;
    bool ok = false;
    int dir, lock;

    if (geteuid() != 0) {
        snprintf(why, len, "--huge-pages reserve needs root to raise nr_hugepages (this daemon "
                 "runs as uid %u)", (unsigned)geteuid());
        return false;
    }
    dir = ledger_dir(true, why, len);
    if (dir < 0)
        return false;
    lock = ledger_lock(dir);
    if (lock < 0) {
        snprintf(why, len, "cannot lock %s/.lock: %s", SRV_HUGE_LEDGER, strerror(errno));
        close(dir);
        return false;
    }
    give_back_stale(dir);
    why[0] = '\0';
    for (int i = 0; i < npages && !ok; i++) {
        uint64_t page = pages[i], need = bytes / page + cfg->chunk_size / page;
        int64_t free_now = srv_huge_available(page), nr0 = hp_read(page, "nr_hugepages"), nr1;
        uint64_t add = free_now >= 0 && (uint64_t)free_now < need ? need - (uint64_t)free_now : 0;
        uint64_t room = mem_available();
        double t0 = now_s();
        int rc;

        if (nr0 < 0 || free_now < 0)
            continue;
        if (add * page + SRV_MEM_KEEP > room) {
            appendf(why, len, &n, "%sreserving %" PRIu64 " %s "
                                  "pages (%s) would leave less than %s of MemAvailable (%s)",
                                  n ? "; " : "", add, page_name(page),
                                  pool_format_size(add * page, a, sizeof(a)),
                                  pool_format_size(SRV_MEM_KEEP, k, sizeof(k)),
                                  pool_format_size(room, b, sizeof(b)));
            continue;
        }
        rc = hp_write_nr(page, nr0 + (int64_t)add);
        nr1 = hp_read(page, "nr_hugepages");
        if (rc != 0 || nr1 < nr0 + (int64_t)add) {
            int64_t got = nr1 > nr0 ? nr1 - nr0 : 0;
            if (got > 0)
                hp_write_nr(page, nr1 - got); /* a part is no use: give it back */
            if (rc != 0)
                appendf(why, len, &n, "%scannot write the %s "
                                      "nr_hugepages: %s", n ? "; " : "", page_name(page),
                                      strerror(-rc));
            else
                appendf(why, len, &n, "%sthe kernel granted %"
                                      PRId64 " of %" PRIu64 " %s pages (memory too fragmented?)",
                                      n ? "; " : "", got, add, page_name(page));
            continue;
        }
        h->page = page;
        h->need = bytes / page;
        h->added = add;
        snprintf(h->why, sizeof(h->why), "reserved %" PRIu64 " %s huge pages in %.0f ms (the pool's "
                 "%" PRIu64 " and one chunk's to spare; nr_hugepages %" PRId64 " -> %" PRId64
                 "; given back at exit)", add, page_name(page), (now_s() - t0) * 1e3, h->need,
                 nr0, nr1);
        if (add > 0)
            ledger_add(dir, h);
        ok = true;
    }
    if (!ok && why[0] == '\0')
        snprintf(why, len, "this kernel offers no huge pages to reserve");
    ledger_unlock(lock);
    close(dir);
    return ok;
}

int srv_huge_setup(srv_config_t *cfg, srv_huge_t *h)
{
    const char *be = cfg->host_backend;
    bool required = strcmp(be, "hugetlb") == 0 || strcmp(be, "hugetlb-cpu") == 0;
    bool wanted = required || strcmp(be, "auto") == 0;
    uint64_t nchunks = (cfg->mem_pool_size + cfg->chunk_size - 1) / cfg->chunk_size;
    uint64_t bytes = nchunks * cfg->chunk_size;
    uint64_t pages[2];
    char why[320] = "", a[32];
    int npages = 0;
    size_t n = 0;

    memset(h, 0, sizeof(*h));
    h->ledger_fd = -1;
    if (geteuid() == 0) { /* what a daemon killed with SIGKILL left reserved */
        int dir = ledger_dir(false, why, sizeof(why));
        int lock = dir >= 0 ? ledger_lock(dir) : -1;
        if (lock >= 0)
            give_back_stale(dir);
        ledger_unlock(lock);
        if (dir >= 0)
            close(dir);
        why[0] = '\0';
    }
    if (!wanted) {
        snprintf(why, sizeof(why), "--host-backend %s uses no huge pages", be);
        if (strcmp(cfg->huge_pages, "reserve") == 0)
            srv_info("--huge-pages reserve: nothing to reserve, %s", why);
        goto none;
    }
    if (strcmp(cfg->huge_pages, "never") == 0) {
        snprintf(why, sizeof(why), "--huge-pages never");
        goto none;
    }
    /* auto takes huge pages only for hugetlb, which needs CUDA (ipc_host_auto) */
    if ((required ? ipc_host_hugetlb_cpu.probe : ipc_host_hugetlb.probe)(why, sizeof(why)) != 0)
        goto none;
    if (cfg->chunk_size % IPC_HUGE_1G == 0 && hp_read(IPC_HUGE_1G, "nr_hugepages") >= 0)
        pages[npages++] = IPC_HUGE_1G;
    if (hp_read(IPC_HUGE_2M, "nr_hugepages") >= 0)
        pages[npages++] = IPC_HUGE_2M;
    if (npages == 0) {
        snprintf(why, sizeof(why), "this kernel offers no 2 MiB huge pages (/sys/kernel/mm/hugepages)");
        goto none;
    }
    for (int i = 0; i < npages; i++) {
        int64_t avail = srv_huge_available(pages[i]);
        uint64_t need = bytes / pages[i];
        if (avail >= 0 && (uint64_t)avail >= need) {
            h->page = pages[i];
            h->need = need;
            snprintf(h->why, sizeof(h->why), "%" PRIu64 " of %" PRId64 " free %s huge pages "
                     "(HugePages_Free less reserved)", need, avail, page_name(pages[i]));
            goto found;
        }
        appendf(why, sizeof(why), &n, "%s%" PRIu64 " %s pages needed, %" PRId64 " free", n ? ", " : "",
                              need, page_name(pages[i]), avail < 0 ? 0 : avail);
    }
    if (strcmp(cfg->huge_pages, "reserve") == 0) {
        if (reserve(cfg, pages, npages, bytes, h, why, sizeof(why)))
            goto found;
        goto none;
    }
    appendf(why, sizeof(why), &n, " for the %s pool "
                          "(HugePages_Free; set vm.nr_hugepages, or --huge-pages reserve as root)",
                          pool_format_size(bytes, a, sizeof(a)));
none:
    h->page = 0;
    snprintf(h->why, sizeof(h->why), "%s", why);
    cfg->huge_page = 0;
    snprintf(cfg->huge_why, sizeof(cfg->huge_why), "%s", why);
    if (required) {
        srv_error("--host-backend %s needs huge pages for the pool and has none: %s", be, why);
        return -1;
    }
    return 0;
found:
    cfg->huge_page = h->page;
    snprintf(cfg->huge_why, sizeof(cfg->huge_why), "%s", h->why);
    srv_info("huge pages: %s", h->why);
    return 0;
}

void srv_huge_release(srv_huge_t *h)
{
    char why[256];
    int dir, lock;

    if (h == NULL || h->added == 0) {
        if (h != NULL && h->ledger_fd >= 0)
            close(h->ledger_fd);
        if (h != NULL)
            h->ledger_fd = -1;
        return;
    }
    dir = ledger_dir(false, why, sizeof(why));
    lock = dir >= 0 ? ledger_lock(dir) : -1;
    int64_t nr = hp_read(h->page, "nr_hugepages");
    int rc = nr < 0 ? -ENOENT : hp_write_nr(h->page, nr - (int64_t)h->added);
    if (rc == 0)
        srv_info("gave back %" PRIu64 " %s huge pages (nr_hugepages %" PRId64 " -> %" PRId64 ")",
                 h->added, page_name(h->page), nr, hp_read(h->page, "nr_hugepages"));
    else
        srv_warn("cannot give back %" PRIu64 " %s huge pages: %s; lower nr_hugepages by hand",
                 h->added, page_name(h->page), strerror(-rc));
    if (dir >= 0 && h->ledger[0] != '\0')
        unlinkat(dir, h->ledger, 0);
    if (h->ledger_fd >= 0)
        close(h->ledger_fd);
    h->ledger_fd = -1;
    h->added = 0;
    ledger_unlock(lock);
    if (dir >= 0)
        close(dir);
}
