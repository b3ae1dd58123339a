/*
 * test_cluster.c - Mooncake's placement knobs in the tier URI (replicas=N,
 * soft_pin=1, hard_pin=1, prefer_local=1) against a real Mooncake Store on
 * loopback (tests/mooncake.c: mooncake_master + mooncake_client processes
 * contributing segments), read back by Mooncake's own Python client
 * (tests/mooncake_peer.py "replicas": where each replica lies).
 * The two-daemon tests (--cluster) are in tests/cluster/ (make test-cluster).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mooncake.h"
#include "pinpool.h"
#include "tier.h"
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
