/*
 * users.h - other users for the tests that attack the daemon as a neighbour
 * would: two unprivileged users and a group they share.
 *
 * Owns: the users pinpool-ta and pinpool-tb and the group pinpool-tg (made
 * with useradd/groupadd the first time a test asks, when running as root, as
 * CI does; they are left in place for later runs).  Not root: every function
 * here says so and the caller skips (cr_skip_test) - an attack test that
 * cannot change uid proves nothing.
 */
#ifndef PINPOOL_TEST_USERS_H
#define PINPOOL_TEST_USERS_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_user {
    const char *name;
    uid_t uid;
    gid_t gid; /* its own primary group */
} test_user_t;

typedef struct test_users {
    test_user_t a, b;
    gid_t shared; /* pinpool-tg: both a and b are members */
} test_users_t;

/* Make sure the users exist and fill *out.  false (with why) when this
 * process is not root or the users cannot be made. */
bool test_users_get(test_users_t *out, char *why, size_t whylen);

/*
 * Run fn(arg) in a child process as user u (its primary group, plus the
 * shared group when with_shared), and return what fn returned (its exit
 * status: 0..255), or 128 + the signal that killed it, or -1 if the child
 * could not become u.  The child's stdio is the caller's.
 */
int test_run_as(const test_user_t *u, bool with_shared, gid_t shared, int (*fn)(void *arg),
                void *arg);

#endif
