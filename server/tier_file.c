/*
 * tier_file.c - the file spill tier: one file per object in a directory.
 *
 * URI: file:///ABS/DIR[?fsync=0]  (or file:/ABS/DIR).  The directory is made
 * (mode 0700) if missing, and refused if another user could swap it or reach
 * what is in it (dirs.h: open_dir).  fsync=0 skips the fsyncs: puts stay atomic (a reader
 * or a restart sees the old object or the new one) but a power loss may lose
 * recent puts.  Default fsync=1.
 *
 * Owns: the directory, its lock file and every file in it.
 * Never: follows a name out of the directory: every name is made by
 * escaping the key (below) and used relative to the directory's fd.
 * Locking: no lock of its own; the file system orders concurrent calls (a put
 * and a get of one key race as rename(2) allows: the get sees either file).
 * One process owns a directory at a time: DIR/.lock is flock'ed while open,
 * so a second open (another daemon) fails instead of deleting its temp files.
 *
 * Names.  A key becomes "o." + the key with every byte outside [A-Za-z0-9_.-]
 * (and a leading '.') written as %XX: distinct keys give distinct names, no
 * name contains '/' or is "." or "..".  A key whose name would pass 240 bytes
 * is stored as "h." + 32 hex digits of two 64-bit hashes of the key; the file
 * carries the key, which get/exists/size compare, so a collision can never
 * return another key's bytes (a put that collides fails with PINPOOL_ETIER).
 *
 * File format: a header (magic "PPTIER1\n", u64 payload size, u32 key length,
 * u32 header length), the key, zeros up to the header length (a multiple of
 * 4096, so the payload is page aligned), then the payload.
 *
 * Atomic put: write ".tmp.<random>" in the directory, fsync it, rename it onto
 * the object's name, fsync the directory.  A crash before the rename leaves
 * only the temp file, which open() deletes (all ".tmp." files: the lock says
 * no one else is writing).  Nothing else in the directory is ever touched.
 */
#include "tier.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirs.h"
#include "pinpool.h"

#define MAGIC "PPTIER1\n"
#define HDR_FIXED 24
#define HDR_ALIGN 4096u
#define NAME_MAX_LEN 240
#define TMP_PREFIX ".tmp."

typedef struct tfile {
    int dirfd;
    int lockfd;
    bool fsync;
    char path[4096];
    atomic_int_fast64_t objects;
} tfile_t;

#ifdef POOL_DEBUG
/* Test hook: called after the temp file is written and synced, before the
 * rename (tests/test_tier.c makes it _exit to simulate a crash). */
void (*tier_file_test_before_rename)(void);
#endif

/* ---- names ---------------------------------------------------------------------- */

static uint64_t hash64(const unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;

    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The file name of key into name (>= NAME_MAX_LEN + 1 bytes); *hashed says
 * whether it is a hash name. */
static void key_name(const void *key, size_t keylen, char *name, bool *hashed)
{
    char esc[3 * TIER_KEY_MAX + 1];
    int n = tier__escape_key(key, keylen, esc, sizeof(esc), NULL);

    *hashed = n < 0 || n + 2 > NAME_MAX_LEN;
    if (!*hashed) {
        name[0] = 'o';
        name[1] = '.';
        memcpy(name + 2, esc, (size_t)n + 1);
    } else {
        snprintf(name, NAME_MAX_LEN + 1, "h.%016" PRIx64 "%016" PRIx64,
                 hash64(key, keylen, 0), hash64(key, keylen, 0x9e3779b97f4a7c15ull));
    }
}

static bool is_object_name(const char *n)
{
    return strncmp(n, "o.", 2) == 0 || strncmp(n, "h.", 2) == 0;
}

/* ---- I/O helpers -------------------------------------------------------------------- */

/* All of len bytes at off, written (write) or read, in pieces of at most
 * 1 GiB; EINTR is retried.  0, -errno, or -EIO when a read ends early (the
 * file is shorter than its header says). */
static int pio_all(int fd, void *buf, uint64_t len, uint64_t off, bool write)
{
    char *p = buf;

    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t n = write ? pwrite(fd, p, chunk, (off_t)off) : pread(fd, p, chunk, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0 && !write)
            return -EIO;
        p += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off)
{
    return pio_all(fd, (void *)(uintptr_t)buf, len, off, true);
}

static int pread_all(int fd, void *buf, uint64_t len, uint64_t off)
{
    return pio_all(fd, buf, len, off, false);
}

static uint32_t header_len(size_t keylen)
{
    return (uint32_t)((HDR_FIXED + keylen + HDR_ALIGN - 1) / HDR_ALIGN * HDR_ALIGN);
}

/*
 * Open the object of key and check its header.  Returns the fd and fills
 * *size and *hdrlen, or PINPOOL_ENOKEY / -EIO (corrupt) / -errno.
 */
static int open_object(tfile_t *tf, const void *key, size_t keylen, uint64_t *size,
                       uint32_t *hdrlen)
{
    char name[NAME_MAX_LEN + 1];
    unsigned char hdr[HDR_FIXED + TIER_KEY_MAX];
    bool hashed;
    uint32_t klen, hlen;
    uint64_t sz;
    struct stat st;
    int fd, rc;

    key_name(key, keylen, name, &hashed);
    fd = openat(tf->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return PINPOOL_ENOKEY;
        return tier__fail(-errno, "open %s/%s: %s", tf->path, name, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    rc = pread_all(fd, hdr, HDR_FIXED + keylen > (uint64_t)st.st_size ? (uint64_t)st.st_size
                                                                         : HDR_FIXED + keylen, 0);
    if (rc != 0)
        goto fail;
    rc = -EIO;
    if ((uint64_t)st.st_size < HDR_FIXED + keylen || memcmp(hdr, MAGIC, 8) != 0)
        goto corrupt;
    memcpy(&sz, hdr + 8, 8);
    memcpy(&klen, hdr + 16, 4);
    memcpy(&hlen, hdr + 20, 4);
    if (hlen != header_len(klen) || (uint64_t)st.st_size != hlen + sz)
        goto corrupt;
    if (klen != keylen || memcmp(hdr + HDR_FIXED, key, keylen) != 0) {
        close(fd);
        return PINPOOL_ENOKEY; /* a hash name held by another key */
    }
    *size = sz;
    *hdrlen = hlen;
    return fd;

corrupt:
    tier__fail(rc, "%s/%s is not a pinpool tier object of its key (corrupt or foreign)",
               tf->path, name);
    close(fd);
    return rc;
fail:
    tier__fail(rc, "read %s/%s: %s", tf->path, name, strerror(-rc));
    close(fd);
    return rc;
}

/* ---- the operations ------------------------------------------------------------------ */

static int parse_uri(const char *uri, char *path, size_t pathlen, bool *do_fsync, char *err,
                     size_t errlen)
{
    const char *p = uri + strlen("file:");
    const char *q;
    size_t n;

    if (strncmp(p, "//", 2) == 0) {
        p += 2;
        if (*p != '/') { /* file://host/... */
            snprintf(err, errlen, "spill tier '%s': use file:///ABSOLUTE/DIR (no host)", uri);
            return PINPOOL_EINVAL;
        }
    }
    if (*p != '/') {
        snprintf(err, errlen, "spill tier '%s': the directory must be an absolute path", uri);
        return PINPOOL_EINVAL;
    }
    q = strchr(p, '?');
    n = q != NULL ? (size_t)(q - p) : strlen(p);
    if (n >= pathlen) {
        snprintf(err, errlen, "spill tier '%s': path too long", uri);
        return PINPOOL_EINVAL;
    }
    memcpy(path, p, n);
    path[n] = '\0';
    *do_fsync = true;
    while (q != NULL) {
        const char *kv = q + 1;

        q = strchr(kv, '&');
        n = q != NULL ? (size_t)(q - kv) : strlen(kv);
        if (n == 7 && strncmp(kv, "fsync=0", 7) == 0) {
            *do_fsync = false;
        } else if (n == 7 && strncmp(kv, "fsync=1", 7) == 0) {
            *do_fsync = true;
        } else if (n > 0) {
            snprintf(err, errlen, "spill tier '%s': unknown parameter '%.*s' (file tiers take "
                     "fsync=0|1)", uri, (int)n, kv);
            return PINPOOL_EINVAL;
        }
    }
    return 0;
}

/* The directory: made 0700 where missing, or refused when it, or one above
 * it, lets another user swap or reach what is in it (dirs.h).  0 and
 * tf->dirfd, or an error with err. */
static int open_dir(tfile_t *tf, char *err, size_t errlen)
{
    tf->dirfd = srv_dir_open(tf->path, "spill tier: the directory", SRV_NO_GROUP, err, errlen);
    return tf->dirfd < 0 ? tf->dirfd : 0;
}

static int tfile_open(void **impl, const char *uri, char *err, size_t errlen)
{
    tfile_t *tf = calloc(1, sizeof(*tf));
    DIR *d = NULL;
    struct dirent *e;
    int rc, fd;
    int64_t objects = 0;
    uint32_t stale = 0;

    if (tf == NULL)
        return -ENOMEM;
    tf->dirfd = tf->lockfd = -1;
    rc = parse_uri(uri, tf->path, sizeof(tf->path), &tf->fsync, err, errlen);
    if (rc != 0)
        goto fail;
    rc = open_dir(tf, err, errlen);
    if (rc != 0)
        goto fail;
    tf->lockfd = openat(tf->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (tf->lockfd < 0 || flock(tf->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? PINPOOL_EBUSY : -errno;
        snprintf(err, errlen, "spill tier: %s/.lock: %s", tf->path,
                 errno == EWOULDBLOCK ? "the directory is in use by another tier (another "
                                        "daemon?)" : strerror(errno));
        goto fail;
    }
    /* Delete what a crash left behind, count the objects. */
    fd = dup(tf->dirfd);
    if (fd < 0 || (d = fdopendir(fd)) == NULL) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "spill tier: cannot list %s: %s", tf->path, strerror(-rc));
        goto fail;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            if (unlinkat(tf->dirfd, e->d_name, 0) == 0)
                stale++;
        } else if (is_object_name(e->d_name)) {
            objects++;
        }
    }
    closedir(d);
    if (stale > 0 && tf->fsync)
        fsync(tf->dirfd);
    atomic_init(&tf->objects, objects);
    *impl = tf;
    return 0;

fail:
    if (tf->lockfd >= 0)
        close(tf->lockfd);
    if (tf->dirfd >= 0)
        close(tf->dirfd);
    free(tf);
    return rc;
}

static void tfile_close(void *impl)
{
    tfile_t *tf = impl;

    close(tf->lockfd);
    close(tf->dirfd);
    free(tf);
}

static int tfile_put(void *impl, const void *key, size_t keylen, const void *buf, uint64_t len)
{
    tfile_t *tf = impl;
    char name[NAME_MAX_LEN + 1], tmp[64];
    unsigned char hdr[HDR_FIXED + TIER_KEY_MAX];
    uint32_t hlen = header_len(keylen), klen = (uint32_t)keylen;
    uint64_t rnd[2];
    bool hashed, existed = false;
    int fd, rc;

    key_name(key, keylen, name, &hashed);
    if (hashed) {
        uint64_t sz;
        uint32_t h;
        int ofd = open_object(tf, key, keylen, &sz, &h);

        if (ofd >= 0) {
            close(ofd);
        } else if (ofd == PINPOOL_ENOKEY && faccessat(tf->dirfd, name, F_OK, 0) == 0) {
            return tier__fail(PINPOOL_ETIER, "%s/%s holds another key (hash collision)",
                              tf->path, name);
        }
    }
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return tier__fail(-EIO, "getrandom failed");
    snprintf(tmp, sizeof(tmp), TMP_PREFIX "%016" PRIx64 "%016" PRIx64, rnd[0], rnd[1]);
    fd = openat(tf->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return tier__fail(-errno, "create %s/%s: %s", tf->path, tmp, strerror(errno));

    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, MAGIC, 8);
    memcpy(hdr + 8, &len, 8);
    memcpy(hdr + 16, &klen, 4);
    memcpy(hdr + 20, &hlen, 4);
    memcpy(hdr + HDR_FIXED, key, keylen);
    rc = pwrite_all(fd, hdr, HDR_FIXED + keylen, 0);
    if (rc == 0 && ftruncate(fd, (off_t)hlen) != 0) /* the padding, without writing it */
        rc = -errno;
    if (rc == 0)
        rc = pwrite_all(fd, buf, len, hlen);
    if (rc == 0 && tf->fsync && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        unlinkat(tf->dirfd, tmp, 0);
        return tier__fail(rc, "write %s/%s (%" PRIu64 " bytes): %s", tf->path, tmp, len,
                          strerror(-rc));
    }
#ifdef POOL_DEBUG
    if (tier_file_test_before_rename != NULL)
        tier_file_test_before_rename();
#endif
    if (renameat2(tf->dirfd, tmp, tf->dirfd, name, RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST) {
            existed = true;
        } else if (errno == EINVAL || errno == ENOSYS) { /* no NOREPLACE on this fs */
            existed = faccessat(tf->dirfd, name, F_OK, 0) == 0;
        } else {
            rc = -errno;
            goto rename_failed;
        }
        if (renameat(tf->dirfd, tmp, tf->dirfd, name) != 0) {
            rc = -errno;
            goto rename_failed;
        }
    }
    if (!existed)
        atomic_fetch_add(&tf->objects, 1);
    if (tf->fsync && fsync(tf->dirfd) != 0)
        return tier__fail(-errno, "fsync %s: %s", tf->path, strerror(errno));
    return 0;

rename_failed:
    unlinkat(tf->dirfd, tmp, 0);
    return tier__fail(rc, "rename %s/%s to %s: %s", tf->path, tmp, name, strerror(-rc));
}

static int tfile_get(void *impl, const void *key, size_t keylen, void *buf, uint64_t len,
                     uint64_t *got)
{
    tfile_t *tf = impl;
    uint64_t size;
    uint32_t hlen;
    int fd = open_object(tf, key, keylen, &size, &hlen), rc;

    if (fd < 0)
        return fd;
    *got = size;
    if (size > len) {
        close(fd);
        return tier__fail(-ENOBUFS, "the object is %" PRIu64 " bytes, the buffer %" PRIu64, size,
                          len);
    }
    rc = pread_all(fd, buf, size, hlen);
    close(fd);
    if (rc != 0)
        return tier__fail(rc, "read from %s: %s", tf->path, strerror(-rc));
    return 0;
}

static int tfile_size(void *impl, const void *key, size_t keylen, uint64_t *size)
{
    uint32_t hlen;
    int fd = open_object(impl, key, keylen, size, &hlen);

    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

static int tfile_exists(void *impl, const void *key, size_t keylen)
{
    tfile_t *tf = impl;
    char name[NAME_MAX_LEN + 1];
    bool hashed;
    uint64_t size;
    int rc;

    key_name(key, keylen, name, &hashed);
    if (!hashed) {
        if (faccessat(tf->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
            return 1;
        return errno == ENOENT ? 0 : tier__fail(-errno, "%s/%s: %s", tf->path, name,
                                                strerror(errno));
    }
    rc = tfile_size(impl, key, keylen, &size);
    return rc == 0 ? 1 : rc == PINPOOL_ENOKEY ? 0 : rc;
}

static int tfile_remove(void *impl, const void *key, size_t keylen)
{
    tfile_t *tf = impl;
    char name[NAME_MAX_LEN + 1];
    bool hashed;

    key_name(key, keylen, name, &hashed);
    if (hashed) {
        int rc = tfile_exists(impl, key, keylen);

        if (rc <= 0)
            return rc == 0 ? PINPOOL_ENOKEY : rc;
    }
    if (unlinkat(tf->dirfd, name, 0) != 0) {
        if (errno == ENOENT)
            return PINPOOL_ENOKEY;
        return tier__fail(-errno, "unlink %s/%s: %s", tf->path, name, strerror(errno));
    }
    atomic_fetch_sub(&tf->objects, 1);
    if (tf->fsync)
        fsync(tf->dirfd);
    return 0;
}

static int64_t tfile_count(void *impl)
{
    tfile_t *tf = impl;

    return atomic_load(&tf->objects);
}

static void tfile_describe(void *impl, void (*add)(const char *name, const char *value, void *arg),
                           void *arg)
{
    tfile_t *tf = impl;

    add("path", tf->path, arg);
    add("fsync", tf->fsync ? "1" : "0", arg);
}

const tier_ops_t tier_file_ops = {
    .scheme = "file",
    .open = tfile_open,
    .close = tfile_close,
    .put = tfile_put,
    .get = tfile_get,
    .exists = tfile_exists,
    .size = tfile_size,
    .remove = tfile_remove,
    .count = tfile_count,
    .describe = tfile_describe,
};
