/*
 * test_host.c - the daemon's files and its users, as a neighbour on the same
 * node would meet them (issue 12.5 and 12.7): socket, state and spill
 * directories and a lock file that another user prepared, --allow-uid and
 * --allow-gid names, and the group of the sockets.  Descriptors, signals and
 * memory are in test_limits.c.
 *
 * Owns: the daemons it starts (hostd.h) and the directories it makes in /tmp.
 * Tests that need another uid skip, saying why, where this is not root (CI
 * is).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "hostd.h"
#include "internal.h"
#include "ipc.h"
#include "pinpool.h"
#include "pinpool.pb-c.h"
#include "users.h"
#include "util.h"

#define MiB (1024ull * 1024)

static test_users_t users;

static void need_users(void)
{
    char why[128];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
}

/* ---- the filesystem (issue 12.5) ------------------------------------------------------- */

static int make_dir_as(void *arg)
{
    return mkdir((const char *)arg, 0700) == 0 ? 0 : 1;
}

/* A directory someone else made in /tmp where the daemon's would go (as
 * /tmp/pinpool-$UID is when XDG_RUNTIME_DIR is unset): refused, untouched. */
Test(host_fs, a_socket_dir_or_state_dir_another_user_made_is_refused, .timeout = 90)
{
    char base[64], theirs[96], sock[128], state[128], log[128], out[8192], msg[512];
    struct stat st;
    hd_t h;

    need_users();
    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(theirs, sizeof(theirs), "/tmp/pinpool-host-%d-ta", (int)getpid());
    rmdir(theirs);
    cr_assert_eq(test_run_as(&users.a, false, 0, make_dir_as, theirs), 0);

    snprintf(sock, sizeof(sock), "%s/pinpool.sock", theirs);
    snprintf(state, sizeof(state), "%s/state", base);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    snprintf(msg, sizeof(msg), "the socket directory %s: %s is in /tmp, which others can write "
             "to, and belongs to uid %u (pinpool-ta)", theirs, theirs, (unsigned)users.a.uid);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);
    cr_expect_eq(stat(theirs, &st), 0);
    cr_expect_eq(st.st_uid, users.a.uid, "their directory is still theirs");
    cr_expect_neq(access(sock, F_OK), 0, "no socket was made in it");

    /* The same directory as --state-dir (the default file tier lives there). */
    unlink(log);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", theirs,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    snprintf(msg, sizeof(msg), "--state-dir %s: %s is in /tmp, which others can write to, and "
             "belongs to uid %u", theirs, theirs, (unsigned)users.a.uid);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);
    cr_expect_neq(access(state, F_OK), 0);
    rmdir(theirs);
    test_rm_rf(base);
}

/* Writable by others, or under a directory others can write to that is not
 * sticky: refused with the path and the fix.  A sticky /tmp-like parent with
 * the daemon's own directory in it is fine. */
Test(host_fs, directories_others_can_write_to_are_refused, .timeout = 90)
{
    char base[64], open_[96], sock[160], state[128], log[128], out[8192], msg[512];
    hd_t h;

    if (geteuid() != 0)
        cr_skip_test("not root: the daemon's checks differ for a user's own tree");
    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(state, sizeof(state), "%s/state", base);
    snprintf(open_, sizeof(open_), "%s/open", base);
    cr_assert_eq(mkdir(open_, 0777), 0);
    cr_assert_eq(chmod(open_, 0777), 0);

    /* The socket directory itself. */
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", open_);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    snprintf(msg, sizeof(msg), "the socket directory %s: it is writable by everyone (mode 0777): "
             "`chmod go-w %s`", open_, open_);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);

    /* A directory above it. */
    unlink(log);
    snprintf(sock, sizeof(sock), "%s/mine/pinpool.sock", open_);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    snprintf(msg, sizeof(msg), "%s is writable by everyone (mode 0777) and not sticky", open_);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);

    /* --state-dir. */
    unlink(log);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", open_,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    snprintf(msg, sizeof(msg), "--state-dir %s: it is writable by everyone", open_);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);

    /* A sticky parent (like /tmp) with the daemon's own directory in it. */
    unlink(log);
    cr_assert_eq(chmod(open_, 01777), 0);
    snprintf(sock, sizeof(sock), "%s/mine/pinpool.sock", open_);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 0, "%s", slurp(log, out, sizeof(out)));
    cr_expect_eq(use_daemon(sock), 0);
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(base);
}

/* The lock file: a symbolic link or a hard link planted under its name is
 * refused and what it points to is untouched. */
Test(host_fs, a_planted_lock_link_leaves_its_target_untouched, .timeout = 90)
{
    char base[64], run[96], lock[160], sock[128], state[128], target[128], log[128];
    char out[8192];
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(state, sizeof(state), "%s/state", base);
    snprintf(run, sizeof(run), "%s/run", base);
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", run);
    snprintf(lock, sizeof(lock), "%s.lock", sock);
    snprintf(target, sizeof(target), "%s/precious", base); /* stands for /etc/shadow */
    cr_assert_eq(mkdir(run, 0700), 0);
    write_file(target, "precious\n");

    cr_assert_eq(symlink(target, lock), 0);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "is a symbolic link: remove it");
    cr_expect_str_eq(slurp(target, out, sizeof(out)), "precious\n");

    unlink(lock);
    cr_assert_eq(link(target, lock), 0);
    unlink(log);
    cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 1, "%s", slurp(log, out, sizeof(out)));
    hd_stop(&h);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "has 2 hard links");
    cr_expect_str_eq(slurp(target, out, sizeof(out)), "precious\n");
    test_rm_rf(base);
}

/* A lock file left by a daemon that died: flock decides, not the pid in it. */
Test(host_fs, a_stale_lock_file_is_taken_over, .timeout = 90)
{
    char base[64], run[96], lock[160], sock[128], state[128], log[128], out[8192], pid[32];
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(state, sizeof(state), "%s/state", base);
    snprintf(run, sizeof(run), "%s/run", base);
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", run);
    snprintf(lock, sizeof(lock), "%s.lock", sock);
    cr_assert_eq(mkdir(run, 0700), 0);
    write_file(lock, "999999999\n"); /* no such pid */

    cr_assert_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", NULL), 0, "%s", slurp(log, out, sizeof(out)));
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "left by pid 999999999, which no longer holds it");
    snprintf(pid, sizeof(pid), "%d\n", (int)h.pid);
    cr_expect_str_eq(slurp(lock, out, sizeof(out)), pid);
    cr_expect_eq(use_daemon(sock), 0);
    cr_expect_eq(hd_stop(&h), 0);
    cr_expect_neq(access(lock, F_OK), 0, "the lock file goes with the daemon");
    test_rm_rf(base);
}

typedef struct paths {
    char sock[128], fdsock[136], run[96], spill[256], state[128];
} paths_t;

/* As another user: nothing of the daemon's can be moved, replaced or entered. */
static int meddle(void *arg)
{
    const paths_t *p = arg;
    char moved[160];
    int bad = 0;

    snprintf(moved, sizeof(moved), "%s.moved", p->sock);
    bad |= rename(p->sock, moved) == 0 || errno != EACCES;
    bad |= (unlink(p->fdsock) == 0 || errno != EACCES) << 1;
    bad |= (mkdir(moved, 0700) == 0 || errno != EACCES) << 2;
    bad |= (opendir(p->spill) != NULL || errno != EACCES) << 3;
    bad |= (access(p->state, X_OK) == 0) << 4;
    bad |= (access(p->run, X_OK) == 0) << 5;
    return bad;
}

Test(host_fs, another_user_cannot_move_the_sockets_or_enter_the_spill_directory, .timeout = 90)
{
    char base[64], log[128], out[8192];
    paths_t p;
    hd_t h;

    need_users();
    make_base(base, sizeof(base), 0755); /* others may come this far */
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(p.run, sizeof(p.run), "%s/run", base);
    snprintf(p.sock, sizeof(p.sock), "%s/pinpool.sock", p.run);
    snprintf(p.fdsock, sizeof(p.fdsock), "%s.fd", p.sock);
    snprintf(p.state, sizeof(p.state), "%s/state", base);
    snprintf(p.spill, sizeof(p.spill), "%s/spill", p.state);
    cr_assert_eq(hd_start(&h, log, NULL, NULL, "--socket", p.sock, "--state-dir", p.state,
                          "--mem-pool-size", "32MiB", NULL), 0, "%s", slurp(log, out, sizeof(out)));
    cr_expect_eq(test_run_as(&users.a, true, users.shared, meddle, &p), 0,
                 "bits of what another user could do (1 rename, 2 unlink, 4 mkdir, 8 list the "
                 "spill directory, 16 enter --state-dir, 32 enter the socket directory)");
    cr_expect_eq(use_daemon(p.sock), 0);
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(base);
}

/* ---- users and groups (issue 12.5, 12.7) ------------------------------------------------ */

Test(host_users, allow_lists_refuse_what_is_neither_a_number_nor_a_name, .timeout = 90)
{
    static const char *bad[][2] = {
        {"--allow-uid", "alice-of-pinpool"}, {"--allow-uid", "12x"}, {"--allow-uid", "0,,1"},
        {"--allow-gid", "no-such-group-of-pinpool"}, {"--allow-gid", "-1"},
    };
    char base[64], log[128], sock[128], state[128], out[8192], msg[512];
    hd_t h;

    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(sock, sizeof(sock), "%s/run/pinpool.sock", base);
    snprintf(state, sizeof(state), "%s/state", base);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unlink(log);
        cr_expect_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                              "--mem-pool-size", "32MiB", bad[i][0], bad[i][1], NULL), 2,
                     "%s %s: %s", bad[i][0], bad[i][1], slurp(log, out, sizeof(out)));
        hd_stop(&h);
        if (strchr(bad[i][1], ',') != NULL)
            snprintf(msg, sizeof(msg), "%s: '%s' has an empty entry", bad[i][0], bad[i][1]);
        else
            snprintf(msg, sizeof(msg), "%s: '%s' is neither a number nor a", bad[i][0], bad[i][1]);
        TEST_EXPECT_IN(slurp(log, out, sizeof(out)), msg);
    }
    test_rm_rf(base);
}

/* The daemon runs as another user (pinpool-ta): its own user by name is
 * admitted, root is not. */
static void become_a(void *arg)
{
    const test_user_t *u = arg;
    gid_t none[1] = {0};

    if (setgroups(0, none) != 0 || setresgid(u->gid, u->gid, u->gid) != 0 ||
        setresuid(u->uid, u->uid, u->uid) != 0)
        _exit(126);
}

static int connect_as(void *arg)
{
    return use_daemon((const char *)arg) == 0 ? 0 : 1;
}

Test(host_users, allow_uid_takes_a_user_name, .timeout = 90)
{
    char base[64], run[96], state[96], sock[128], log[128], out[8192];
    ipc_hello_t hello;
    int fd;
    hd_t h;

    need_users();
    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    /* The daemon (pinpool-ta) makes its directories in /tmp itself. */
    snprintf(run, sizeof(run), "/tmp/pinpool-host-%d-run", (int)getpid());
    snprintf(state, sizeof(state), "/tmp/pinpool-host-%d-state", (int)getpid());
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", run);
    cr_assert_eq(hd_start(&h, log, become_a, &users.a, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", "--allow-uid", "pinpool-ta", NULL), 0, "%s",
                 slurp(log, out, sizeof(out)));
    snprintf(out, sizeof(out), "%s.fd", sock);
    fd = raw_session(out, &hello); /* root reaches any socket; it is not in the list */
    cr_expect_eq(hello.status, PINPOOL_EPERM, "root was let in: %d %s", hello.status, hello.reason);
    TEST_EXPECT_IN(hello.reason, "uid 0 (gid 0");
    if (fd >= 0)
        close(fd);
    cr_expect_eq(test_run_as(&users.a, false, 0, connect_as, sock), 0, "pinpool-ta was refused");
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(run);
    test_rm_rf(state);
    test_rm_rf(base);
}

Test(host_users, allow_gid_gives_the_sockets_to_the_group, .timeout = 90)
{
    char base[64], run[96], sock[128], fdsock[136], state[128], log[128], out[8192];
    struct stat st;
    hd_t h;

    need_users();
    make_base(base, sizeof(base), 0755);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(run, sizeof(run), "%s/run", base);
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", run);
    snprintf(fdsock, sizeof(fdsock), "%s.fd", sock);
    snprintf(state, sizeof(state), "%s/state", base);
    cr_assert_eq(hd_start(&h, log, NULL, NULL, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", "--allow-gid", "pinpool-tg", NULL), 0, "%s",
                 slurp(log, out, sizeof(out)));
    cr_expect_eq(stat(run, &st), 0);
    cr_expect_eq(st.st_gid, users.shared);
    cr_expect_eq(st.st_mode & 07777, 0750u, "mode %o", st.st_mode & 07777);
    cr_expect_eq(stat(sock, &st), 0);
    cr_expect_eq(st.st_gid, users.shared);
    cr_expect_eq(st.st_mode & 0777, 0660u);
    cr_expect_eq(stat(fdsock, &st), 0);
    cr_expect_eq(st.st_gid, users.shared);
    cr_expect_eq(st.st_mode & 0777, 0660u);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "sockets: group");
    /* A member through a supplementary group (its primary group is its own). */
    cr_expect_eq(test_run_as(&users.a, true, users.shared, connect_as, sock), 0,
                 "a member of pinpool-tg was refused");
    cr_expect_neq(test_run_as(&users.b, false, 0, connect_as, sock), 0,
                  "pinpool-tb, not in the group here, got in");
    cr_expect_eq(hd_stop(&h), 0);
    test_rm_rf(base);
}

/* A daemon that cannot give its sockets to the group says so at start. */
Test(host_users, allow_gid_of_a_group_the_daemon_cannot_give_sockets_to_is_refused, .timeout = 90)
{
    char base[64], run[96], state[96], sock[128], log[128], out[8192];
    hd_t h;

    need_users();
    make_base(base, sizeof(base), 0700);
    snprintf(log, sizeof(log), "%s/log", base);
    snprintf(run, sizeof(run), "/tmp/pinpool-host-%d-run", (int)getpid());
    snprintf(state, sizeof(state), "/tmp/pinpool-host-%d-state", (int)getpid());
    snprintf(sock, sizeof(sock), "%s/pinpool.sock", run);
    cr_expect_eq(hd_start(&h, log, become_a, &users.a, "--socket", sock, "--state-dir", state,
                          "--mem-pool-size", "32MiB", "--allow-gid", "root", NULL), 1, "%s",
                 slurp(log, out, sizeof(out)));
    hd_stop(&h);
    TEST_EXPECT_IN(slurp(log, out, sizeof(out)), "is neither root nor a member of it");
    test_rm_rf(run);
    test_rm_rf(state);
    test_rm_rf(base);
}

