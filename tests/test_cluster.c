/*
 * test_cluster.c - Mooncake's placement knobs in the tier URI (replicas=N,
 * soft_pin=1, hard_pin=1, prefer_local=1) against a real Mooncake Store on
 * loopback (tests/mooncake.c: mooncake_master + mooncake_client processes
 * contributing segments), read back by Mooncake's own Python client
 * (tests/mooncake_peer.py "replicas": where each replica lies).
 * The two-daemon tests (--cluster) are in tests/cluster/ (make test-cluster).
 */
#include <criterion/criterion.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "grpc_call.h"
#include "mooncake.h"
#include "paths.h"
#include "pinpool.h"
#include "tier.h"
#include "users.h"
#include "util.h"

static tier_t *open_ok(const char *u)
{
    tier_t *t = NULL;
    char err[512] = "";
    int rc = tier_open(&t, u, err, sizeof(err));

    if (rc != 0)
        mc_dump_logs();
    cr_assert_eq(rc, 0, "tier_open(%s): %s (%s)", u, pinpool_err_name(rc), err);
    return t;
}

struct stats {
    char replicas[16], soft_pin[8], hard_pin[8], prefer_local[128];
};

static void add_stat(const char *name, const char *value, void *arg)
{
    struct stats *s = arg;

#define KEEP(f)                                                    \
    if (strcmp(name, #f) == 0)                                     \
        snprintf(s->f, sizeof(s->f), "%s", value);
    KEEP(replicas) KEEP(soft_pin) KEEP(hard_pin) KEEP(prefer_local)
#undef KEEP
}

/* The segments holding key's replicas (Mooncake's own client says), into
 * segs (n at most); their number. */
static int replicas_of(const char *key, char segs[][64], int n)
{
    char path[128], line[128];
    int k = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/replicas.txt", mc.dir);
    cr_assert_eq(mc_run_peer("replicas", key, path), 0, "no replicas of %s", key);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    while (k < n && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(segs[k++], 64, "%.63s", line);
    }
    fclose(f);
    return k;
}

static void put_one(tier_t *t, const char *key, size_t n, unsigned seed)
{
    char *b = malloc(n);

    test_fill(b, n, seed);
    cr_assert_eq(tier_put(t, key, strlen(key), b, n), 0, "put %s: %s", key, tier_errmsg());
    free(b);
}

TestSuite(placement, .fini = mc_teardown, .timeout = 110);

/* replicas=2 with two segments: every put, upserts included, has two
 * replicas on two different segments; without the knob one.  Stats say so. */
Test(placement, replicas_2_puts_two_copies_on_two_segments)
{
    char segs[4][64], u[1400], seg2[64];
    struct stats s = {0};

    mc_start_cluster("1000", "");
    mc.segments[0] = mc_start_segment("127.0.0.1", "256MB", "segment2", seg2, sizeof(seg2));
    cr_assert_str_neq(seg2, mc.segname);

    tier_t *one = open_ok(mc.uri);
    put_one(one, "single", 100000, 1);
    cr_assert_eq(replicas_of("single", segs, 4), 1, "without replicas= one copy");
    tier_report_stats(one, add_stat, &s);
    cr_assert_str_eq(s.replicas, "1");
    cr_assert_str_eq(s.soft_pin, "0");
    tier_close(one);

    snprintf(u, sizeof(u), "%s&replicas=2&soft_pin=1", mc.uri);
    tier_t *t = open_ok(u);
    put_one(t, "double", 3 << 20, 2);
    cr_assert_eq(replicas_of("double", segs, 4), 2);
    cr_assert_str_neq(segs[0], segs[1], "both copies on %s", segs[0]);
    put_one(t, "double", 1 << 20, 3); /* an upsert keeps the placement */
    cr_assert_eq(replicas_of("double", segs, 4), 2);
    tier_report_stats(t, add_stat, &s);
    cr_assert_str_eq(s.replicas, "2");
    cr_assert_str_eq(s.soft_pin, "1");
    cr_assert_str_eq(s.hard_pin, "0");
    cr_assert_str_eq(s.prefer_local, "0");
    tier_close(t);
}

/* prefer_local=1 on a tier that mounts its own segment (segment=SIZE): every
 * replica lies on that segment, which stats name; three segments in all, so
 * six puts landing there by chance would be a 1 in 243 event. */
Test(placement, prefer_local_puts_on_this_nodes_segment)
{
    char segs[4][64], u[1400], seg2[64], key[16];
    struct stats s = {0};

    mc_start_cluster("1000", "");
    mc.segments[0] = mc_start_segment("127.0.0.1", "256MB", "segment2", seg2, sizeof(seg2));
    snprintf(u, sizeof(u), "%s&segment=64MiB&prefer_local=1", mc.uri);
    tier_t *t = open_ok(u);
    tier_report_stats(t, add_stat, &s);
    cr_assert_str_neq(s.prefer_local, "0");
    cr_assert_str_neq(s.prefer_local, "1", "stats name the preferred segment");
    cr_assert_str_neq(s.prefer_local, mc.segname);
    cr_assert_str_neq(s.prefer_local, seg2);
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "near-%d", i);
        put_one(t, key, 200000, (unsigned)i);
        cr_assert_eq(replicas_of(key, segs, 4), 1);
        cr_assert_str_eq(segs[0], s.prefer_local, "%s lies on %s, not on this node's %s", key,
                         segs[0], s.prefer_local);
    }
    tier_close(t);

    /* local_segment= names another process's segment on this node */
    snprintf(u, sizeof(u), "%s&prefer_local=1&local_segment=%s", mc.uri, seg2);
    t = open_ok(u);
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "seg2-%d", i);
        put_one(t, key, 200000, (unsigned)i);
        cr_assert_eq(replicas_of(key, segs, 4), 1);
        cr_assert_str_eq(segs[0], seg2);
    }
    tier_close(t);
}

/* Bad values, and knobs the C API driver cannot pass, fail at open with the
 * reason; prefer_local without any segment here says what it needs. */
Test(placement, bad_placement_values_fail_at_open_with_the_reason)
{
    static const char *bad[] = {"replicas=0", "replicas=17", "replicas=two", "soft_pin=2",
                                "prefer_local=yes", "hard_pin="};
    char u[1400], err[512];
    tier_t *t = NULL;
    int rc;

    mc_start_cluster("1000", "");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(u, sizeof(u), "%s&%s", mc.uri, bad[i]);
        err[0] = '\0';
        rc = tier_open(&t, u, err, sizeof(err));
        cr_assert_eq(rc, PINPOOL_EINVAL, "%s: %s (%s)", bad[i], pinpool_err_name(rc), err);
        cr_assert_neq(err[0], '\0');
    }
    snprintf(u, sizeof(u), "mooncake://%s?mode=dlopen&replicas=2", mc.master_addr);
    rc = tier_open(&t, u, err, sizeof(err));
    cr_assert_eq(rc, PINPOOL_EINVAL, "%s", err);
    cr_assert(strstr(err, "adapter") != NULL, "%s", err);

    snprintf(u, sizeof(u), "%s&prefer_local=1", mc.uri);
    rc = tier_open(&t, u, err, sizeof(err));
    cr_assert_neq(rc, 0, "prefer_local with no segment on this node");
    cr_assert(strstr(err, "local_segment") != NULL, "%s", err);
}

/* ---- --cluster: two daemons on one Mooncake ----------------------------------- */

#define MiB (1024ull * 1024)
#define BIG (64 * MiB)

static test_daemon_t na, nb; /* node a, node b */

static void cluster_teardown(void)
{
    int ra = na.pid > 0 ? test_daemon_stop(&na) : 0, rb = nb.pid > 0 ? test_daemon_stop(&nb) : 0;

    mc_teardown();
    test_fini_check(ra == 0 && rb == 0, "the daemons exited with %d and %d on SIGTERM", ra, rb);
}

/* A daemon of cluster c1 named node on mc's tier (128 MiB pool, 64 MiB chunks). */
static void start_node(test_daemon_t *d, const char *node, const char *uri)
{
    if (test_daemon_start(d, "--mem-pool-size", "128MiB", "--chunk-size", "64MiB",
                          "--spill-low-watermark", "0", "--spill-tier", uri, "--cluster", "c1",
                          "--cluster-node", node, "--log-level", "debug", NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("node %s did not start with --cluster c1 --spill-tier %s", node, uri);
    }
}

/* Wait (20 s at most) until ctx's Exists of key answers want. */
static void wait_exists(pinpool_ctx_t *ctx, const char *key, int want)
{
    int rc = -1;

    for (double t0 = test_now_s(); test_now_s() - t0 < 20; usleep(20000))
        if ((rc = pinpool_exists(ctx, key)) == want)
            return;
    test_daemon_dump_log(&na);
    cr_assert_fail("exists(%s) is %d, not %d, after 20 s", key, rc, want);
}

/* acquire key on ctx: every byte of seed's pattern in size bytes; freed. */
static void acquire_same(pinpool_ctx_t *ctx, const char *key, uint64_t size, unsigned seed)
{
    pinpool_slice_t r;
    int rc = pinpool_acquire(ctx, key, 0, &r);

    if (rc != 0) {
        test_daemon_dump_log(&nb);
        cr_assert_fail("acquire %s: %s: %s", key, pinpool_err_name(rc), pinpool_errmsg(ctx));
    }
    cr_assert_eq(r.size, size);
    cr_assert(test_same(r.ptr, size, seed), "%s came back different", key);
    cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0, "%s", pinpool_errmsg(ctx));
}

/* Get key on ctx until it holds want (a new version travels through the
 * sharing queue: 20 s at most). */
static void wait_get(pinpool_ctx_t *ctx, const char *key, const char *want)
{
    char buf[64];
    uint64_t got = 0;
    int rc = -1;

    for (double t0 = test_now_s(); test_now_s() - t0 < 20; usleep(20000)) {
        memset(buf, 0, sizeof(buf));
        rc = pinpool_get(ctx, key, buf, sizeof(buf) - 1, &got);
        if (rc == 0 && strcmp(buf, want) == 0)
            return;
    }
    cr_assert_fail("get %s: %s '%s', not '%s', after 20 s", key, pinpool_err_name(rc), buf, want);
}

/* The tier stat name of d's GetPoolInfo (a snapshot the daemon refreshes
 * every second: asked until it is at least want, 10 s at most); its value. */
static long long stat_at_least(const test_daemon_t *d, const char *name, long long want)
{
    char target[200];
    long long v = -1;

    snprintf(target, sizeof(target), "unix:%s", d->socket);
    for (double t0 = test_now_s(); test_now_s() - t0 < 10; usleep(200000)) {
        test_call_opts_t o = {.target = target};
        Pinpool__V1__GetPoolInfoResponse *r = NULL;
        test_call_result_t res = test_call_info(&o, &r);

        cr_assert_eq(res.status, GRPC_STATUS_OK, "GetPoolInfo: %s", res.details);
        for (size_t i = 0; r->spill != NULL && i < r->spill->n_tier_stats; i++)
            if (strcmp(r->spill->tier_stats[i]->name, name) == 0)
                v = atoll(r->spill->tier_stats[i]->value);
        pinpool__v1__get_pool_info_response__free_unpacked(r, NULL);
        if (v >= want)
            return v;
    }
    cr_assert_fail("tier stat %s is %lld, not %lld or more, after 10 s", name, v, want);
    return v;
}

TestSuite(cluster, .fini = cluster_teardown, .timeout = 150);

/*
 * Node a releases a 64 MiB slice (and spills it: two more slices fill its
 * pool); node b acquires it byte-exact, twice (a fetch leaves a's object).
 * Small objects: a new version on either node is what the other reads; a
 * Remove on a (or b) is seen by the other at once: acquire, get and exists
 * answer NOT_FOUND, and nothing stale comes back.
 */
Test(cluster, one_node_releases_the_other_acquires_removes_and_versions_are_seen)
{
    pinpool_slice_t s, fill[2];
    uint64_t got;
    char buf[16];
    int rc;

    mc_start_cluster("1000", "");
    start_node(&na, "a", mc.uri);
    start_node(&nb, "b", mc.uri);
    pinpool_ctx_t *a = test_connect(&na), *b = test_connect(&nb);

    cr_assert_eq(pinpool_alloc(a, BIG, NULL, &s), 0, "%s", pinpool_errmsg(a));
    test_fill(s.ptr, BIG, 7);
    cr_assert_eq(pinpool_release(a, s.id, "model", 0), 0, "%s", pinpool_errmsg(a));
    wait_exists(b, "model", 1); /* shared: its record is in Mooncake */
    for (int i = 0; i < 2; i++) /* a's pool is full: "model" spills */
        cr_assert_eq(pinpool_alloc(a, BIG, NULL, &fill[i]), 0, "%s", pinpool_errmsg(a));
    acquire_same(b, "model", BIG, 7);
    acquire_same(b, "model", BIG, 7); /* a still holds it: b fetches again */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pinpool_free(a, fill[i].id, NULL), 0);
    /* the stats say so */
    stat_at_least(&na, "cluster_shared", 1);
    stat_at_least(&nb, "cluster_fetches", 2);
    cr_assert_eq(stat_at_least(&nb, "cluster_fetched_bytes", 2 * BIG), 2 * BIG);

    /* versions: the last put on any node is what every node reads */
    cr_assert_eq(pinpool_put(a, "cfg", "v1", 3, 0), 0, "%s", pinpool_errmsg(a));
    wait_get(b, "cfg", "v1");
    cr_assert_eq(pinpool_put(a, "cfg", "v2", 3, 0), 0, "%s", pinpool_errmsg(a));
    wait_get(b, "cfg", "v2");
    cr_assert_eq(pinpool_put(b, "cfg", "v3", 3, 0), 0, "%s", pinpool_errmsg(b));
    wait_get(a, "cfg", "v3"); /* a's v2 is stale: dropped, v3 fetched */
    wait_get(b, "cfg", "v3");

    /* an Acquire on the node that shared it ends it for every node before it
     * answers (its record goes then; the copy's removal may follow) */
    pinpool_slice_t t;
    cr_assert_eq(pinpool_alloc(a, MiB, NULL, &t), 0, "%s", pinpool_errmsg(a));
    test_fill(t.ptr, MiB, 9);
    cr_assert_eq(pinpool_release(a, t.id, "taken", 0), 0, "%s", pinpool_errmsg(a));
    wait_exists(b, "taken", 1);
    acquire_same(a, "taken", MiB, 9);
    cr_assert_eq(pinpool_exists(b, "taken"), 0, "b still finds 'taken' after a acquired it");
    rc = pinpool_acquire(b, "taken", 0, &t);
    cr_assert_eq(rc, PINPOOL_ENOKEY, "acquire after a's acquire: %s", pinpool_err_name(rc));

    /* a Remove on a: b sees nothing at once (no stale copy, no error but NOT_FOUND) */
    cr_assert_eq(pinpool_remove(a, "model"), 0, "%s", pinpool_errmsg(a));
    rc = pinpool_acquire(b, "model", 0, &s);
    cr_assert_eq(rc, PINPOOL_ENOKEY, "acquire after a's remove: %s: %s", pinpool_err_name(rc),
                 pinpool_errmsg(b));
    cr_assert_eq(pinpool_exists(b, "model"), 0);
    cr_assert_eq(pinpool_exists(a, "model"), 0);
    /* a Remove on b of the version b wrote: a's get says NOT_FOUND */
    cr_assert_eq(pinpool_remove(b, "cfg"), 0, "%s", pinpool_errmsg(b));
    rc = pinpool_get(a, "cfg", buf, sizeof(buf), &got);
    cr_assert_eq(rc, PINPOOL_ENOKEY, "get after b's remove: %s", pinpool_err_name(rc));
    cr_assert_eq(pinpool_remove(a, "cfg"), PINPOOL_ENOKEY);
    pinpool_close(a);
    pinpool_close(b);
}

/*
 * A record lost (the segment holding it died; here Mooncake's own client
 * removes it) is not a Remove: the node that shared the object still has its
 * copy in the tier (a Remove takes the copy first), so it keeps the object,
 * shares it again, and the other node finds it again.
 */
Test(cluster, a_lost_record_is_shared_again_by_the_node_holding_the_object)
{
    char rec[128];
    struct passwd *pw = getpwuid(geteuid());

    cr_assert_not_null(pw);
    mc_start_cluster("1000", "");
    start_node(&na, "a", mc.uri);
    start_node(&nb, "b", mc.uri);
    pinpool_ctx_t *a = test_connect(&na), *b = test_connect(&nb);
    pinpool_slice_t s;

    cr_assert_eq(pinpool_alloc(a, 8 * MiB, NULL, &s), 0, "%s", pinpool_errmsg(a));
    test_fill(s.ptr, 8 * MiB, 5);
    cr_assert_eq(pinpool_release(a, s.id, "kept", 0), 0, "%s", pinpool_errmsg(a));
    wait_exists(b, "kept", 1);
    snprintf(rec, sizeof(rec), "c1/r/%s/kept", pw->pw_name);
    cr_assert_eq(mc_run_peer("remove", rec, "-"), 0, "no record %s", rec);
    cr_assert_eq(pinpool_exists(b, "kept"), 0, "the record is gone");
    char *buf = malloc(8 * MiB);
    uint64_t got = 0;
    int rc = pinpool_get(a, "kept", buf, 8 * MiB, &got); /* a still has it: shares it again */
    cr_assert_eq(rc, 0, "a's get: %s: %s", pinpool_err_name(rc), pinpool_errmsg(a));
    cr_assert(got == 8 * MiB && test_same(buf, 8 * MiB, 5));
    free(buf);
    wait_exists(b, "kept", 1);
    acquire_same(b, "kept", 8 * MiB, 5);
    cr_assert_eq(pinpool_remove(a, "kept"), 0, "%s", pinpool_errmsg(a));
    pinpool_close(a);
    pinpool_close(b);
}

/* As another user on node b: uid 0's "secret" is not there for it (Exists
 * false, Get NOT_FOUND), and its own "secret" is its own. */
static int other_user_on_b(void *arg)
{
    pinpool_ctx_t *c = pinpool_connect(arg);
    char buf[32] = "";
    uint64_t got = 0;

    if (pinpool_err(c) != 0) {
        fprintf(stderr, "connect: %s\n", pinpool_errmsg(c));
        return 10;
    }
    int e = pinpool_exists(c, "secret");
    int g = pinpool_get(c, "secret", buf, sizeof(buf) - 1, &got);
    int p = pinpool_put(c, "secret", "theirs", 6, 0);
    g = g == PINPOOL_ENOKEY ? 0 : g == 0 ? 1 : g; /* 1: it read root's bytes */
    pinpool_close(c);
    fprintf(stderr, "as uid %u on b: exists %d, get %d ('%s'), put %d\n", (unsigned)getuid(), e, g,
            buf, p);
    return e == 0 && g == 0 && p == 0 ? 0 : 1;
}

/*
 * Ownership across nodes (a cluster principal is the owner's user name): an
 * object root shares from node a is readable by root on node b, and by no
 * other user there; that user's object under the same key does not replace
 * root's on either node.
 */
Test(cluster, another_user_on_another_node_cannot_read_or_replace_an_object)
{
    test_users_t users;
    char why[128], allow[64], fdsock[160];

    if (!test_users_get(&users, why, sizeof(why)))
        cr_skip_test("%s", why);
    mc_start_cluster("1000", "");
    start_node(&na, "a", mc.uri);
    snprintf(allow, sizeof(allow), "0,%u", (unsigned)users.a.uid);
    if (test_daemon_start(&nb, "--mem-pool-size", "128MiB", "--chunk-size", "64MiB",
                          "--spill-low-watermark", "0", "--spill-tier", mc.uri, "--cluster", "c1",
                          "--cluster-node", "b", "--allow-uid", allow, NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("node b did not start");
    }
    ipc_fd_socket_path(nb.socket, fdsock, sizeof(fdsock)); /* open to the test users' group */
    cr_assert_eq(chmod(nb.dir, 0711), 0);
    cr_assert_eq(chown(nb.socket, 0, users.shared), 0);
    cr_assert_eq(chown(fdsock, 0, users.shared), 0);
    cr_assert_eq(chmod(nb.socket, 0660), 0);
    cr_assert_eq(chmod(fdsock, 0660), 0);

    pinpool_ctx_t *a = test_connect(&na), *b = test_connect(&nb);
    cr_assert_eq(pinpool_put(a, "secret", "root's", 6, 0), 0, "%s", pinpool_errmsg(a));
    wait_get(b, "secret", "root's"); /* shared: root on b reads it */
    int rc = test_run_as(&users.a, true, users.shared, other_user_on_b, nb.socket);
    cr_expect_eq(rc, 0, "another user on node b saw or replaced root's object (exit %d)", rc);
    wait_get(b, "secret", "root's");
    wait_get(a, "secret", "root's");
    cr_assert_eq(pinpool_remove(a, "secret"), 0, "%s", pinpool_errmsg(a));
    pinpool_close(a);
    pinpool_close(b);
}
