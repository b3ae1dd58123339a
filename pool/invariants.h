/*
 * invariants.h - the debug builds' check after every operation, for pool/'s
 * tables (pool.c's pool_check, objects.c's objs_check).
 *
 * Owns: POOL_CHECK_AFTER.  Never: costs anything without POOL_DEBUG (the
 * tests' objects are built with it, the shipped ones without).
 * Locking: the caller's (it runs inside the operation it checks).
 */
#ifndef PINPOOL_POOL_INVARIANTS_H
#define PINPOOL_POOL_INVARIANTS_H

#ifdef POOL_DEBUG
#include <stdio.h>
#include <stdlib.h>

/* check(obj, msg, len) != 0: an invariant of table who broke in operation op;
 * say which and abort, so that the test that did it fails there. */
#define POOL_CHECK_AFTER(check, obj, who, op)                                              \
    do {                                                                                   \
        char msg_[256];                                                                    \
        if (check((obj), msg_, sizeof(msg_)) != 0) {                                       \
            fprintf(stderr, "%s: invariant broken after %s: %s\n", (who), (op), msg_);     \
            abort();                                                                       \
        }                                                                                  \
    } while (0)
#else
#define POOL_CHECK_AFTER(check, obj, who, op) ((void)0)
#endif

#endif
