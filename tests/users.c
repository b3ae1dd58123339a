/*
 * users.c - see users.h.
 */
#include "users.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define GROUP "pinpool-tg"

static bool lookup(test_user_t *u, const char *name)
{
    struct passwd *pw = getpwnam(name);

    if (pw == NULL)
        return false;
    u->name = name;
    u->uid = pw->pw_uid;
    u->gid = pw->pw_gid;
    return true;
}

/* Run a shell command quietly; true if it exited 0. */
static bool sh(const char *cmd)
{
    char full[512];

    snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
    return system(full) == 0;
}

bool test_users_get(test_users_t *out, char *why, size_t whylen)
{
    static const char *names[2] = {"pinpool-ta", "pinpool-tb"};
    struct group *g;

    if (geteuid() != 0) {
        snprintf(why, whylen, "not root: cannot act as another user");
        return false;
    }
    if (getgrnam(GROUP) == NULL && !sh("groupadd -r " GROUP)) {
        snprintf(why, whylen, "groupadd %s failed", GROUP);
        return false;
    }
    for (int i = 0; i < 2; i++) {
        char cmd[256];
        test_user_t u;
        if (lookup(&u, names[i]))
            continue;
        snprintf(cmd, sizeof(cmd), "useradd -r -M -U -G %s -s /usr/sbin/nologin %s", GROUP,
                 names[i]);
        if (!sh(cmd) && !lookup(&u, names[i])) { /* another test may have raced us */
            snprintf(why, whylen, "useradd %s failed", names[i]);
            return false;
        }
    }
    g = getgrnam(GROUP);
    if (g == NULL || !lookup(&out->a, names[0]) || !lookup(&out->b, names[1])) {
        snprintf(why, whylen, "the test users are not there after useradd");
        return false;
    }
    out->shared = g->gr_gid;
    return true;
}

int test_run_as(const test_user_t *u, bool with_shared, gid_t shared, int (*fn)(void *arg),
                void *arg)
{
    int status;
    pid_t pid = fork();

    if (pid < 0)
        return -1;
    if (pid == 0) {
        gid_t groups[1] = {shared};
        if (setgroups(with_shared ? 1 : 0, groups) != 0 || setresgid(u->gid, u->gid, u->gid) != 0 ||
            setresuid(u->uid, u->uid, u->uid) != 0 || geteuid() != u->uid) {
            fprintf(stderr, "test_run_as %s: %s\n", u->name, strerror(errno));
            _exit(255);
        }
        _exit(fn(arg) & 0xff);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status) == 255 ? -1 : WEXITSTATUS(status);
}
