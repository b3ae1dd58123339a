/*
 * tcpauth.c - the TCP bearer token file (see tcpauth.h).
 *
 * The file holds one line: the token (16 to SRV_TOKEN_MAX printable
 * characters without spaces).  It is opened O_NOFOLLOW and checked with
 * fstat on the descriptor read from, so that what is checked is what is read.
 * A missing file is made with O_CREAT|O_EXCL (a file planted meanwhile makes
 * the open fail rather than be written through).
 */
#include "tcpauth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pinpool.h"

#define TOKEN_MIN 16
#define TOKEN_BYTES 16 /* 128 random bits */

/* Make path with a fresh random token: 0, or -errno with err. */
static int make_token_file(const char *path, char *err, size_t errlen)
{
    unsigned char raw[TOKEN_BYTES];
    char hex[2 * TOKEN_BYTES + 2];
    ssize_t n;
    int fd;

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        snprintf(err, errlen, "--listen-token-file %s: cannot get random bytes: %s", path,
                 strerror(errno));
        return -EIO;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    hex[2 * TOKEN_BYTES] = '\n';
    hex[2 * TOKEN_BYTES + 1] = '\0';
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "--listen-token-file %s: cannot create it: %s", path, strerror(e));
        return -e;
    }
    n = write(fd, hex, 2 * TOKEN_BYTES + 1);
    if (n != 2 * TOKEN_BYTES + 1 || fsync(fd) != 0) {
        int e = n < 0 ? errno : EIO;
        close(fd);
        unlink(path);
        snprintf(err, errlen, "--listen-token-file %s: cannot write it: %s", path, strerror(e));
        return -e;
    }
    close(fd);
    return 0;
}

/* Read and check the token in path: 0, -ENOENT (absent), or another error with err. */
static int read_token_file(const char *path, char *token, size_t len, char *err, size_t errlen)
{
    char buf[SRV_TOKEN_MAX + 8];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return -ENOENT;
        if (e == ELOOP)
            snprintf(err, errlen, "--listen-token-file %s is a symbolic link; give the file "
                     "itself", path);
        else
            snprintf(err, errlen, "--listen-token-file %s: cannot open it: %s", path,
                     strerror(e));
        return -e;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "--listen-token-file %s is not a regular file", path);
        return PINPOOL_EPERM;
    }
    if (st.st_uid != geteuid()) {
        close(fd);
        snprintf(err, errlen, "--listen-token-file %s belongs to uid %u, not to the daemon's "
                 "uid %u: anyone who can change it decides who may call over TCP (chown it, "
                 "or remove it and the daemon makes a new one)", path, (unsigned)st.st_uid,
                 (unsigned)geteuid());
        return PINPOOL_EPERM;
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        snprintf(err, errlen, "--listen-token-file %s has mode %04o: others may read the "
                 "token; make it 0600 (chmod 600 %s)", path, (unsigned)(st.st_mode & 07777),
                 path);
        return PINPOOL_EPERM;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "--listen-token-file %s: cannot read it: %s", path,
                 strerror(errno));
        return PINPOOL_EPERM;
    }
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    bool ok = n >= TOKEN_MIN && n <= SRV_TOKEN_MAX && (size_t)n < len;
    for (ssize_t i = 0; ok && i < n; i++)
        ok = buf[i] > ' ' && buf[i] < 0x7f;
    if (!ok) {
        snprintf(err, errlen, "--listen-token-file %s must hold one line of %d to %d printable "
                 "characters without spaces (remove it and the daemon makes one)", path,
                 TOKEN_MIN, SRV_TOKEN_MAX);
        return PINPOOL_EINVAL;
    }
    memcpy(token, buf, (size_t)n + 1);
    return 0;
}

int srv_tcp_token_load(srv_config_t *cfg, char *token, size_t len, char *path, size_t pathlen,
                       char *err, size_t errlen)
{
    int rc;

    if (strcmp(cfg->listen_token_file, "auto") == 0) {
        rc = srv_config_resolve(cfg, err, errlen);
        if (rc != 0)
            return rc;
        if ((size_t)snprintf(path, pathlen, "%s/listen-token", cfg->state_dir) >= pathlen) {
            snprintf(err, errlen, "--state-dir is too long for the token file; pass "
                     "--listen-token-file");
            return PINPOOL_EINVAL;
        }
    } else if ((size_t)snprintf(path, pathlen, "%s", cfg->listen_token_file) >= pathlen) {
        snprintf(err, errlen, "--listen-token-file: the path is too long");
        return PINPOOL_EINVAL;
    }
    rc = read_token_file(path, token, len, err, errlen);
    if (rc == -ENOENT) {
        rc = make_token_file(path, err, errlen);
        if (rc == 0)
            rc = read_token_file(path, token, len, err, errlen);
    }
    return rc;
}
