/*
 * tier_file.c - the file spill tier: one file per object in a directory.
 *
 * URI: file:///ABS/DIR[?fsync=0]  (or file:/ABS/DIR).  The directory is made
 * (mode 0700) if missing, and refused if another user could swap it or reach
 * what is in it (dirs.h: open_dir).  fsync=0 skips the fsyncs: puts stay atomic (a reader
 * or a restart sees the old object or the new one) but a power loss may lose
 * recent puts.  Default fsync=1.
 *
 * Owns: the directory, its lock file and every file in it.  Its functions
 * come in two kinds: the directory's (parse_uri, make_dirs, tfile_open: where
 * it is, that it may be used, the lock) and the objects' (sweep, the names,
 * the header, put/get/size/exists/remove/list), which never check the
 * directory itself.
 * Never: follows a name out of the directory: every name is made by
 * escaping the key (below) and used relative to the directory's fd.
 * Locking: no lock of its own; the file system orders concurrent calls (a put
 * and a get of one key race as rename(2) allows: the get sees either file).
 * One process owns a directory at a time: DIR/.lock is flock'ed while open,
 * so a second open (another daemon) fails instead of deleting its temp files;
 * a takeover hands the lock's descriptor itself to the new daemon
 * (open_claimed), which then owns the directory with the same lock.
 *
 * Names.  A key becomes "o." + the key with every byte outside [A-Za-z0-9_.-]
 * (and a leading '.') written as %XX: distinct keys give distinct names, no
 * name contains '/' or is "." or "..".  A key whose name would pass 240 bytes
 * is stored as "h." + 32 hex digits of two 64-bit hashes of the key; the file
 * carries the key, which get/exists/size compare, so a collision can never
 * return another key's bytes (a put that collides fails with PINPOOL_ETIER).
 *
 * File format (little endian): a header of 40 bytes (magic "PPTIER2\n", u64
 * payload size, u32 key length, u32 header length, u32 metadata length, u32
 * checksum (tier__checksum) of the payload, u32 checksum (tier__checksum) of the header up to the end of the
 * metadata with this field 0, u32 0), the key, the caller's metadata, zeros up
 * to the header length (a multiple of 4096, so the payload is page aligned),
 * then the payload.  Every open checks the header (magic, lengths against the
 * file's size, its CRC); every get checks the payload's CRC.  A file that
 * fails either is damaged (-EBADMSG); list removes the damaged ones it finds
 * (truncated, torn, of another format such as an older pinpool's PPTIER1)
 * and reports them; a damaged payload shows at its first get.
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

#define MAGIC "PPTIER2\n"
#define HDR_FIXED 40
#define HDR_MAX (HDR_FIXED + TIER_KEY_MAX + TIER_META_MAX)
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

static uint32_t header_len(size_t keylen, uint32_t metalen)
{
    return (uint32_t)((HDR_FIXED + keylen + metalen + HDR_ALIGN - 1) / HDR_ALIGN * HDR_ALIGN);
}

/* A header as read from a file. */
typedef struct hdr {
    unsigned char raw[HDR_MAX];
    uint64_t size;
    uint32_t keylen, hdrlen, metalen, crc;
    const unsigned char *key, *meta; /* into raw */
} hdr_t;

/* Fill raw with the header of an object (CRC included); returns its length. */
static size_t make_header(unsigned char *raw, const void *key, uint32_t keylen, const void *meta,
                          uint32_t metalen, uint64_t size, uint32_t crc)
{
    uint32_t hlen = header_len(keylen, metalen), hcrc, zero = 0;
    size_t n = HDR_FIXED + keylen + metalen;

    memset(raw, 0, HDR_FIXED);
    memcpy(raw, MAGIC, 8);
    memcpy(raw + 8, &size, 8);
    memcpy(raw + 16, &keylen, 4);
    memcpy(raw + 20, &hlen, 4);
    memcpy(raw + 24, &metalen, 4);
    memcpy(raw + 28, &crc, 4);
    memcpy(raw + 32, &zero, 4);
    memcpy(raw + HDR_FIXED, key, keylen);
    if (metalen > 0)
        memcpy(raw + HDR_FIXED + keylen, meta, metalen);
    hcrc = tier__checksum(raw, n);
    memcpy(raw + 32, &hcrc, 4);
    return n;
}

/* Read and check the header of the open file fd (name, for messages).
 * 0, or -EBADMSG with the reason (damaged or foreign), or -errno. */
static int read_header(tfile_t *tf, int fd, const char *name, hdr_t *h)
{
    struct stat st;
    uint32_t hcrc, zero = 0;
    size_t want;
    ssize_t n;
    const char *why;

    if (fstat(fd, &st) != 0)
        return tier__fail(-errno, "stat %s/%s: %s", tf->path, name, strerror(errno));
    want = (uint64_t)st.st_size < sizeof(h->raw) ? (size_t)st.st_size : sizeof(h->raw);
    do
        n = pread(fd, h->raw, want, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return tier__fail(-errno, "read %s/%s: %s", tf->path, name, strerror(errno));
    why = "shorter than a header";
    if ((size_t)n < HDR_FIXED)
        goto bad;
    why = "not a pinpool tier object of this format (no PPTIER2 header)";
    if (memcmp(h->raw, MAGIC, 8) != 0)
        goto bad;
    memcpy(&h->size, h->raw + 8, 8);
    memcpy(&h->keylen, h->raw + 16, 4);
    memcpy(&h->hdrlen, h->raw + 20, 4);
    memcpy(&h->metalen, h->raw + 24, 4);
    memcpy(&h->crc, h->raw + 28, 4);
    memcpy(&hcrc, h->raw + 32, 4);
    why = "a header with impossible lengths";
    if (h->keylen == 0 || h->keylen > TIER_KEY_MAX || h->metalen > TIER_META_MAX ||
        h->hdrlen != header_len(h->keylen, h->metalen) ||
        (size_t)n < HDR_FIXED + h->keylen + h->metalen)
        goto bad;
    memcpy(h->raw + 32, &zero, 4);
    why = "a header whose CRC does not match (torn or overwritten)";
    if (tier__checksum(h->raw, HDR_FIXED + h->keylen + h->metalen) != hcrc)
        goto bad;
    memcpy(h->raw + 32, &hcrc, 4);
    why = "truncated (or longer than its header says)";
    if ((uint64_t)st.st_size != h->hdrlen + h->size)
        goto bad;
    h->key = h->raw + HDR_FIXED;
    h->meta = h->raw + HDR_FIXED + h->keylen;
    return 0;
bad:
    return tier__fail(-EBADMSG, "%s/%s is damaged: %s", tf->path, name, why);
}

/*
 * Open the object of key and check its header.  Returns the fd and fills
 * *h, or PINPOOL_ENOKEY / -EBADMSG (damaged) / -errno.
 */
static int open_object(tfile_t *tf, const void *key, size_t keylen, hdr_t *h)
{
    char name[NAME_MAX_LEN + 1];
    bool hashed;
    int fd, rc;

    key_name(key, keylen, name, &hashed);
    fd = openat(tf->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return PINPOOL_ENOKEY;
        return tier__fail(-errno, "open %s/%s: %s", tf->path, name, strerror(errno));
    }
    rc = read_header(tf, fd, name, h);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    if (h->keylen != keylen || memcmp(h->key, key, keylen) != 0) {
        close(fd);
        if (!hashed) /* a plain name is the key's own: another key inside is damage */
            return tier__fail(-EBADMSG, "%s/%s holds another key", tf->path, name);
        return PINPOOL_ENOKEY; /* a hash name held by another key */
    }
    return fd;
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

/* Delete the temp files a crash left behind (the lock says no one else is
 * writing) and count the objects.  0, or an error with err. */
static int sweep(tfile_t *tf, char *err, size_t errlen)
{
    DIR *d = NULL;
    struct dirent *e;
    int64_t objects = 0;
    uint32_t stale = 0;
    int fd = dup(tf->dirfd), rc;

    if (fd < 0 || (d = fdopendir(fd)) == NULL) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "spill tier: cannot list %s: %s", tf->path, strerror(-rc));
        return rc;
    }
    rewinddir(d); /* the dup shares dirfd's offset */
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
    return 0;
}

/* tfile_open, or with claim >= 0 tfile_open_claimed: the directory's lock
 * is claim (a takeover: the daemon before flock'ed it; the lock belongs to
 * the open file description, which claim shares), checked to be DIR/.lock. */
static int open_as(void **impl, const char *uri, int claim, char *err, size_t errlen)
{
    tfile_t *tf = calloc(1, sizeof(*tf));
    struct stat a, b;
    int rc;

    if (tf == NULL) {
        if (claim >= 0)
            close(claim);
        return -ENOMEM;
    }
    tf->dirfd = -1;
    tf->lockfd = claim;
    rc = parse_uri(uri, tf->path, sizeof(tf->path), &tf->fsync, err, errlen);
    if (rc != 0)
        goto fail;
    rc = open_dir(tf, err, errlen);
    if (rc != 0)
        goto fail;
    if (claim >= 0 && (fstat(claim, &a) != 0 ||
                       fstatat(tf->dirfd, ".lock", &b, AT_SYMLINK_NOFOLLOW) != 0 ||
                       a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
        snprintf(err, errlen, "spill tier: the lock handed over is not %s/.lock", tf->path);
        rc = PINPOOL_EINVAL;
        goto fail;
    }
    if (claim < 0)
        tf->lockfd = openat(tf->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (tf->lockfd < 0 || flock(tf->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? PINPOOL_EBUSY : -errno;
        snprintf(err, errlen, "spill tier: %s/.lock: %s", tf->path,
                 errno == EWOULDBLOCK ? "the directory is in use by another tier (another "
                                        "daemon?)" : strerror(errno));
        goto fail;
    }
    rc = sweep(tf, err, errlen);
    if (rc != 0)
        goto fail;
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

static int tfile_open(void **impl, const char *uri, char *err, size_t errlen)
{
    return open_as(impl, uri, -1, err, errlen);
}

static int tfile_open_claimed(void **impl, const char *uri, int fd, char *err, size_t errlen)
{
    return open_as(impl, uri, fd, err, errlen);
}

static int tfile_claim_fd(void *impl)
{
    return ((tfile_t *)impl)->lockfd;
}

static void tfile_close(void *impl)
{
    tfile_t *tf = impl;

    close(tf->lockfd);
    close(tf->dirfd);
    free(tf);
}

static int tfile_put(void *impl, const void *key, size_t keylen, const void *buf, uint64_t len,
                     const void *meta, uint32_t metalen)
{
    tfile_t *tf = impl;
    char name[NAME_MAX_LEN + 1], tmp[64];
    unsigned char hdr[HDR_MAX];
    uint32_t hlen = header_len(keylen, metalen);
    uint64_t rnd[2];
    size_t n;
    bool hashed, existed = false;
    int fd, rc;

    key_name(key, keylen, name, &hashed);
    if (hashed) {
        hdr_t h;
        int ofd = open_object(tf, key, keylen, &h);

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

    n = make_header(hdr, key, (uint32_t)keylen, meta, metalen, len, tier__checksum(buf, len));
    rc = pwrite_all(fd, hdr, n, 0);
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
    hdr_t h;
    int fd = open_object(tf, key, keylen, &h), rc;

    if (fd < 0)
        return fd;
    *got = h.size;
    if (h.size > len) {
        close(fd);
        return tier__fail(-ENOBUFS, "the object is %" PRIu64 " bytes, the buffer %" PRIu64,
                          h.size, len);
    }
    rc = pread_all(fd, buf, h.size, h.hdrlen);
    close(fd);
    if (rc != 0)
        return tier__fail(rc, "read from %s: %s", tf->path, strerror(-rc));
    if (tier__checksum(buf, h.size) != h.crc)
        return tier__fail(-EBADMSG, "the object in %s is damaged: its bytes do not match "
                          "their checksum (tier__checksum)", tf->path);
    return 0;
}

static int tfile_size(void *impl, const void *key, size_t keylen, uint64_t *size)
{
    hdr_t h;
    int fd = open_object(impl, key, keylen, &h);

    if (fd < 0)
        return fd;
    *size = h.size;
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

        if (rc <= 0 && rc != -EBADMSG) /* a damaged file goes too */
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

/* Every object in the directory, to fn; damaged ones are removed, then reported. */
static int tfile_list(void *impl, tier_list_fn fn, void *arg)
{
    tfile_t *tf = impl;
    DIR *d = NULL;
    struct dirent *e;
    int fd = dup(tf->dirfd), rc = 0;

    if (fd < 0 || (d = fdopendir(fd)) == NULL) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        return tier__fail(rc, "cannot list %s: %s", tf->path, strerror(-rc));
    }
    rewinddir(d); /* the dup shares dirfd's offset, where the last listing ended */
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char where[sizeof(tf->path) + 258];
        tier_entry_t te = {.where = where};
        hdr_t h;
        int ofd;

        if (!is_object_name(e->d_name))
            continue;
        snprintf(where, sizeof(where), "%s/%s", tf->path, e->d_name);
        ofd = openat(tf->dirfd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (ofd < 0 && errno == ENOENT)
            continue;
        int hrc = ofd < 0 ? -errno : read_header(tf, ofd, e->d_name, &h);
        if (ofd >= 0)
            close(ofd);
        if (hrc == 0) {
            char own[NAME_MAX_LEN + 1];
            bool hashed;

            key_name(h.key, h.keylen, own, &hashed);
            if (strcmp(own, e->d_name) != 0) /* copied or renamed: not where its key lives */
                hrc = tier__fail(-EBADMSG, "%s is damaged: its key belongs in %s", where, own);
        }
        if (hrc == 0) {
            te.key = h.key;
            te.keylen = h.keylen;
            te.size = h.size;
            te.meta = h.meta;
            te.metalen = h.metalen;
        } else if (hrc == -EBADMSG || hrc == -ELOOP) {
            te.damage = hrc == -ELOOP ? "a symbolic link, not a file" : tier_errmsg();
            if (unlinkat(tf->dirfd, e->d_name, 0) == 0) {
                atomic_fetch_sub(&tf->objects, 1);
            }
        } else {
            rc = tier__fail(hrc, "read %s: %s", where, strerror(-hrc));
            break;
        }
        rc = fn(&te, arg);
    }
    closedir(d);
    if (tf->fsync)
        fsync(tf->dirfd);
    return rc;
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
    .list = tfile_list,
    .count = tfile_count,
    .describe = tfile_describe,
    .claim_fd = tfile_claim_fd,
    .open_claimed = tfile_open_claimed,
};
