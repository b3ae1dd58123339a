/*
 * dirs.c - the daemon's directories and the files in them (see dirs.h).
 *
 * srv_dir_open walks the path from / one component at a time with
 * openat(O_PATH | O_NOFOLLOW) relative to the directory before, so that what
 * it checked is what it opens next: a rename behind its back cannot swap a
 * checked directory for another one.  A symbolic link is read and its target
 * walked the same way (at most MAX_LINKS of them).
 * Never: follows a link it has not checked, chmods or chowns a directory it
 * did not make (except the last one, for its group, when asked).
 * Locking: none.
 */
#include "dirs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"

#define MAX_LINKS 32

/* Where a walk is: the directory reached (O_PATH), its path, and whether
 * others may write to it (then it is sticky: the walk checked that); what and
 * path (asked for) start every message. */
typedef struct walk {
    int fd;
    char at[PATH_MAX];
    bool shared;
    uid_t me;
    const char *what, *path;
} walk_t;

/* err = "<what> <path>: <fmt...>"; returns rc. */
__attribute__((format(printf, 5, 6))) static int fail(const walk_t *w, int rc, char *err,
                                                      size_t errlen, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%s %s: ", w->what, w->path);
    va_list ap;

    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* dir/name into out (cut if it does not fit: it is for messages and w->at). */
static void join(char *out, size_t len, const char *dir, const char *name)
{
    if (snprintf(out, len, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name) >= (int)len)
        out[len - 1] = '\0';
}

static int walk_root(walk_t *w, char *err, size_t errlen)
{
    struct stat st;

    if (w->fd >= 0)
        close(w->fd);
    w->fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (w->fd < 0 || fstat(w->fd, &st) != 0)
        return fail(w, -errno, err, errlen, "cannot open /: %s", strerror(errno));
    snprintf(w->at, sizeof(w->at), "/");
    w->shared = (st.st_mode & 022) != 0;
    if (st.st_uid != 0 && st.st_uid != w->me)
        return fail(w, -EPERM, err, errlen, "/ belongs to uid %u", (unsigned)st.st_uid);
    return 0;
}

/* Give a directory the daemon made (or the last one, for its group) its mode
 * and group.  0 or an error with err. */
static int fix_dir(const walk_t *w, int pathfd, const char *shown, mode_t mode, gid_t group,
                   char *err, size_t errlen)
{
    int fd = openat(pathfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0 || fchmod(fd, mode) != 0)
        rc = fail(w, -errno, err, errlen, "cannot make %s mode %04o: %s", shown, (unsigned)mode,
                  strerror(errno));
    else if (group != SRV_NO_GROUP && fchown(fd, (uid_t)-1, group) != 0)
        rc = fail(w, -errno, err, errlen, "cannot give %s to group %u: %s (the daemon must be "
                  "root or a member of that group)", shown, (unsigned)group, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* May the walk go into the directory st (at shown; last: the one asked for)?
 * 0, or -EPERM with err naming the path and the fix. */
static int check_dir(const walk_t *w, const struct stat *st, const char *shown, bool last,
                     char *err, size_t errlen)
{
    const char *whom = (st->st_mode & 002) ? "everyone" : "its group";
    char owner[128];

    if (w->shared && st->st_uid != w->me)
        return fail(w, -EPERM, err, errlen, "%s is in %s, which others can write to, and "
                    "belongs to %s, not to this daemon (uid %u): remove it and let the daemon "
                    "make it, or use another path", shown, w->at,
                    ipc_uid_name(st->st_uid, owner, sizeof(owner)), (unsigned)w->me);
    if (last && st->st_uid != w->me)
        return fail(w, -EPERM, err, errlen, "it belongs to %s, not to this daemon (uid %u): "
                    "remove it or `chown %u %s`, or use another path",
                    ipc_uid_name(st->st_uid, owner, sizeof(owner)), (unsigned)w->me, (unsigned)w->me,
                    shown);
    if (st->st_uid != w->me && st->st_uid != 0)
        return fail(w, -EPERM, err, errlen, "%s belongs to %s, who could replace what is inside "
                    "it: use a path whose every directory is root's or uid %u's", shown,
                    ipc_uid_name(st->st_uid, owner, sizeof(owner)), (unsigned)w->me);
    if (last && (st->st_mode & 022) != 0 && (st->st_mode & S_ISVTX) != 0)
        return fail(w, -EPERM, err, errlen, "it is shared (mode %04o): give the daemon a "
                    "directory of its own in it, e.g. %s/pinpool-%u", (unsigned)(st->st_mode & 07777),
                    shown, (unsigned)w->me);
    if (last && (st->st_mode & 022) != 0)
        return fail(w, -EPERM, err, errlen, "it is writable by %s (mode %04o): `chmod go-w %s`, "
                    "or remove it and let the daemon make it", whom,
                    (unsigned)(st->st_mode & 07777), shown);
    if (!last && (st->st_mode & 022) != 0 && (st->st_mode & S_ISVTX) == 0)
        return fail(w, -EPERM, err, errlen, "%s is writable by %s (mode %04o) and not sticky, "
                    "so they could replace what the daemon makes inside it: `chmod go-w %s`, "
                    "or use another path", shown, whom, (unsigned)(st->st_mode & 07777), shown);
    return 0;
}

/* The link name in w is trusted (see dirs.h): replace it in todo (where
 * what follows it already is) by its target.  0 or an error with err. */
static int follow(walk_t *w, const char *name, const struct stat *st, char *todo, size_t len,
                  char *err, size_t errlen)
{
    char shown[PATH_MAX], target[PATH_MAX], owner[128];
    size_t rest = strlen(todo);
    ssize_t n;

    join(shown, sizeof(shown), w->at, name);
    if ((w->shared && st->st_uid != w->me) || (st->st_uid != w->me && st->st_uid != 0))
        return fail(w, -EPERM, err, errlen, "%s is a symbolic link of %s in %s: remove it, or "
                    "use the path it points to", shown, ipc_uid_name(st->st_uid, owner, sizeof(owner)),
                    w->at);
    n = readlinkat(w->fd, name, target, sizeof(target) - 1);
    if (n <= 0)
        return fail(w, n == 0 ? -ENOENT : -errno, err, errlen, "cannot read the link %s: %s",
                    shown, n == 0 ? "empty" : strerror(errno));
    target[n] = '\0';
    if ((size_t)n + 1 + rest + 1 > len)
        return fail(w, -ENAMETOOLONG, err, errlen, "the path through %s is too long", shown);
    memmove(todo + n + 1, todo, rest + 1);
    memcpy(todo, target, (size_t)n);
    todo[n] = '/';
    return target[0] == '/' ? walk_root(w, err, errlen) : 0;
}

int srv_dir_open(const char *path, const char *what, gid_t group, char *err, size_t errlen)
{
    walk_t w = {.fd = -1, .me = geteuid(), .what = what, .path = path};
    mode_t mode = group == SRV_NO_GROUP ? 0700 : 0750;
    char todo[PATH_MAX];
    int links = 0, rc;

    if (path[0] != '/')
        return fail(&w, -EINVAL, err, errlen, "it must be an absolute path");
    if (strlen(path) >= sizeof(todo))
        return fail(&w, -ENAMETOOLONG, err, errlen, "the path is too long");
    snprintf(todo, sizeof(todo), "%s", path);
    rc = walk_root(&w, err, errlen);
    while (rc == 0) {
        char name[NAME_MAX + 1], shown[PATH_MAX];
        const char *p = todo, *rest;
        struct stat st;
        bool made = false, last;
        size_t n;
        int next;

        while (*p == '/')
            p++;
        n = strcspn(p, "/");
        rest = p + n;
        last = rest[strspn(rest, "/")] == '\0';
        if (n == 0) {
            rc = fail(&w, -EINVAL, err, errlen, "it cannot be /");
            break;
        }
        if (n > NAME_MAX) {
            rc = fail(&w, -ENAMETOOLONG, err, errlen, "a component is too long");
            break;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        memmove(todo, rest, strlen(rest) + 1);
        if (strcmp(name, ".") == 0 && !last)
            continue;
        if (strcmp(name, "..") == 0 || strcmp(name, ".") == 0) {
            rc = fail(&w, -EINVAL, err, errlen, "give it without '.' or '..'");
            break;
        }
        join(shown, sizeof(shown), w.at, name);
        next = openat(w.fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT) {
            if (mkdirat(w.fd, name, mode) == 0) {
                made = true;
            } else if (errno != EEXIST) {
                rc = fail(&w, -errno, err, errlen, "cannot make %s: %s", shown, strerror(errno));
                break;
            }
            next = openat(w.fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0 && (errno == ENOTDIR || errno == ELOOP) &&
            fstatat(w.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
            if (++links > MAX_LINKS) {
                rc = fail(&w, -ELOOP, err, errlen, "too many symbolic links");
                break;
            }
            rc = follow(&w, name, &st, todo, sizeof(todo), err, errlen);
            continue;
        }
        if (next < 0 || fstat(next, &st) != 0) {
            rc = fail(&w, -errno, err, errlen, "cannot open %s: %s", shown, strerror(errno));
            if (next >= 0)
                close(next);
            break;
        }
        if ((made || (last && group != SRV_NO_GROUP)) && st.st_uid == w.me) {
            rc = fix_dir(&w, next, shown, mode, group, err, errlen);
            if (rc == 0 && fstat(next, &st) != 0)
                rc = fail(&w, -errno, err, errlen, "cannot stat %s: %s", shown, strerror(errno));
        }
        if (rc == 0)
            rc = check_dir(&w, &st, shown, last, err, errlen);
        close(w.fd);
        w.fd = next;
        snprintf(w.at, sizeof(w.at), "%s", shown);
        w.shared = (st.st_mode & 022) != 0;
        if (rc == 0 && last) {
            next = openat(w.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (next < 0) {
                rc = fail(&w, -errno, err, errlen, "cannot open %s: %s", shown, strerror(errno));
                break;
            }
            close(w.fd);
            return next;
        }
    }
    if (w.fd >= 0)
        close(w.fd);
    return rc;
}

int srv_file_open_at(int dirfd, const char *name, int flags, mode_t mode, const char *shown,
                     char *err, size_t errlen)
{
    struct stat st;
    char owner[128];
    int fd, rc = 0;

    /* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
    fd = openat(dirfd, name, (flags & ~O_TRUNC) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode);
    if (fd < 0) {
        rc = -errno;
        if (errno == ELOOP)
            snprintf(err, errlen, "%s is a symbolic link: remove it (the daemon never follows "
                     "one there)", shown);
        else
            snprintf(err, errlen, "cannot open %s: %s", shown, strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot stat %s: %s", shown, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EPERM;
        snprintf(err, errlen, "%s is not a regular file: remove it", shown);
    } else if (st.st_uid != geteuid()) {
        rc = -EPERM;
        snprintf(err, errlen, "%s belongs to %s, not to this daemon (uid %u): remove it", shown,
                 ipc_uid_name(st.st_uid, owner, sizeof(owner)), (unsigned)geteuid());
    } else if (st.st_nlink != 1) {
        rc = -EPERM;
        snprintf(err, errlen, "%s has %u hard links (another name for the same file): remove it",
                 shown, (unsigned)st.st_nlink);
    } else if (fcntl(fd, F_SETFL, flags & ~O_TRUNC & (O_APPEND | O_NONBLOCK)) != 0 ||
               ((flags & O_TRUNC) && ftruncate(fd, 0) != 0)) {
        rc = -errno;
        snprintf(err, errlen, "cannot set up %s: %s", shown, strerror(errno));
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}
