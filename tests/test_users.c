/*
 * test_users.c - the other-user helper (users.c) does become the user: the
 * attack tests that use it prove nothing otherwise.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "users.h"

static test_users_t users;

static void need_users(void)
{
    char why[128];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
}

static int whoami(void *arg)
{
    const test_user_t *u = arg;
    gid_t groups[8];
    int n = getgroups(8, groups);

    if (getuid() != u->uid || geteuid() != u->uid || getgid() != u->gid)
        return 1;
    return n == 1 && groups[0] == users.shared ? 2 : 3;
}

Test(users, run_as_becomes_the_user_with_or_without_the_shared_group)
{
    need_users();
    cr_expect_neq(users.a.uid, users.b.uid);
    cr_expect_neq(users.a.uid, 0u);
    cr_expect_eq(test_run_as(&users.a, true, users.shared, whoami, &users.a), 2);
    cr_expect_eq(test_run_as(&users.b, false, users.shared, whoami, &users.b), 3);
}

static int can_enter(void *arg)
{
    return access((const char *)arg, X_OK) == 0 ? 0 : 1;
}

Test(users, another_user_cannot_enter_a_0700_directory)
{
    char dir[] = "/tmp/pinpool-test-XXXXXX";

    need_users();
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(chmod(dir, 0700), 0);
    cr_expect_eq(test_run_as(&users.a, false, 0, can_enter, dir), 1);
    cr_assert_eq(chmod(dir, 0755), 0);
    cr_expect_eq(test_run_as(&users.a, false, 0, can_enter, dir), 0);
    rmdir(dir);
}
