/*
 * test_tier.c - the spill tier: the file backend (unit tests, crashes between
 * write and rename) and the Mooncake backend against a real Mooncake Store
 * started here on loopback (mooncake_master + a mooncake_client process that
 * contributes the memory; tests/mooncake.c), read back by an independent
 * Mooncake client.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mooncake.h"
#include "pinpool.h"
#include "tier.h"
#include "util.h"

extern void (*tier_file_test_before_rename)(void);

static char dir[64];
static char uri[128];

/* Names in the tier directory: objects, temp files, others (not .lock). */
static void count_names(int *objects, int *temps, int *others)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    *objects = *temps = *others = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, ".lock") == 0)
            continue;
        if (strncmp(e->d_name, ".tmp.", 5) == 0)
            (*temps)++;
        else if (strncmp(e->d_name, "o.", 2) == 0 || strncmp(e->d_name, "h.", 2) == 0)
            (*objects)++;
        else
            (*others)++;
    }
    closedir(d);
}

static void file_setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/pinpool-tier-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(uri, sizeof(uri), "file://%s/objs", dir);
    strcat(dir, "/objs");
}

static void file_teardown(void)
{
    char *slash = strrchr(dir, '/');

    *slash = '\0';
    test_rm_rf(dir);
}

static tier_t *open_ok(const char *u)
{
    tier_t *t = NULL;
    char err[512] = "";
    int rc = tier_open(&t, u, err, sizeof(err));

    cr_assert_eq(rc, 0, "tier_open(%s): %s (%s)", u, pinpool_err_name(rc), err);
    return t;
}

TestSuite(file, .init = file_setup, .fini = file_teardown, .timeout = 60);

Test(file, put_get_exists_size_remove_round_trip)
{
    tier_t *t = open_ok(uri);
    static const size_t sizes[] = {1, 7, 4095, 4096, 4097, 65536, 1 << 20, (1 << 20) + 13};
    char key[32];

    cr_assert_str_eq(tier_scheme(t), "file");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        char *in = malloc(n), *out = malloc(n + 100);
        uint64_t got = 0, size = 0;

        test_fill(in, n, (unsigned)i);
        snprintf(key, sizeof(key), "obj-%zu", n);
        cr_assert_eq(tier_exists(t, key, strlen(key)), 0);
        cr_assert_eq(tier_put(t, key, strlen(key), in, n), 0, "%s", tier_errmsg());
        cr_assert_eq(tier_exists(t, key, strlen(key)), 1);
        cr_assert_eq(tier_size(t, key, strlen(key), &size), 0);
        cr_assert_eq(size, n);
        memset(out, 0xAA, n + 100);
        cr_assert_eq(tier_get(t, key, strlen(key), out, n + 100, &got), 0, "%s", tier_errmsg());
        cr_assert_eq(got, n);
        cr_assert_eq(memcmp(in, out, n), 0, "object of %zu bytes differs", n);
        cr_assert_eq((unsigned char)out[n], 0xAA, "get wrote past the object");
        free(in);
        free(out);
    }
    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, (int64_t)(sizeof(sizes) / sizeof(sizes[0])));
    cr_assert_eq(st.puts, sizeof(sizes) / sizeof(sizes[0]));
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        snprintf(key, sizeof(key), "obj-%zu", sizes[i]);
        cr_assert_eq(tier_remove(t, key, strlen(key)), 0);
        cr_assert_eq(tier_exists(t, key, strlen(key)), 0);
    }
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, 0);
    cr_assert_eq(st.errors, 0);
    int objs, temps, others;
    count_names(&objs, &temps, &others);
    cr_assert_eq(objs + temps + others, 0);
    tier_close(t);
}

Test(file, put_replaces_whole_and_objects_survive_reopen)
{
    tier_t *t = open_ok(uri);
    char big[10000], small[10], out[10000];
    uint64_t got;

    test_fill(big, sizeof(big), 1);
    test_fill(small, sizeof(small), 2);
    cr_assert_eq(tier_put(t, "k", 1, big, sizeof(big)), 0);
    cr_assert_eq(tier_put(t, "k", 1, small, sizeof(small)), 0);
    cr_assert_eq(tier_get(t, "k", 1, out, sizeof(out), &got), 0);
    cr_assert_eq(got, sizeof(small));
    cr_assert_eq(memcmp(out, small, sizeof(small)), 0);
    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, 1, "a replace is not a new object");
    tier_close(t);

    t = open_ok(uri);
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, 1);
    cr_assert_eq(tier_get(t, "k", 1, out, sizeof(out), &got), 0);
    cr_assert_eq(got, sizeof(small));
    cr_assert_eq(memcmp(out, small, sizeof(small)), 0);
    tier_close(t);
}

Test(file, odd_keys_are_distinct_and_stay_inside_the_directory)
{
    tier_t *t = open_ok(uri);
    unsigned char bin[TIER_KEY_MAX], bin2[TIER_KEY_MAX];
    struct {
        const void *k;
        size_t n;
    } keys[] = {
        {"../../escape", 12}, {"a/b/c", 5}, {".", 1}, {"..", 2}, {"/etc/passwd", 11},
        {"%41", 3}, {"A", 1}, {"a\0b", 3}, {"a\0c", 3}, {"\xff\xfe", 2}, {" ", 1},
        {".hidden", 7}, {".tmp.looks-like-a-temp", 22}, {bin, sizeof(bin)}, {bin2, sizeof(bin2)},
        {bin, 100},
    };
    size_t nk = sizeof(keys) / sizeof(keys[0]);
    char out[64];
    uint64_t got;

    for (size_t i = 0; i < sizeof(bin); i++) {
        bin[i] = (unsigned char)(i * 7 + 1);
        bin2[i] = bin[i];
    }
    bin2[sizeof(bin2) - 1] ^= 1; /* differs only in its last byte: same length, other hash */
    for (size_t i = 0; i < nk; i++) {
        char val[16];

        snprintf(val, sizeof(val), "value-%zu", i);
        cr_assert_eq(tier_put(t, keys[i].k, keys[i].n, val, strlen(val) + 1), 0, "key %zu: %s",
                     i, tier_errmsg());
    }
    for (size_t i = 0; i < nk; i++) {
        char val[16];

        snprintf(val, sizeof(val), "value-%zu", i);
        cr_assert_eq(tier_get(t, keys[i].k, keys[i].n, out, sizeof(out), &got), 0, "key %zu", i);
        cr_assert_str_eq(out, val, "key %zu read another key's object", i);
    }
    int objs, temps, others;
    count_names(&objs, &temps, &others);
    cr_assert_eq(objs, (int)nk, "every key is one file in the directory (got %d)", objs);
    cr_assert_eq(temps + others, 0);
    /* nothing was created next to or above the directory */
    char parent[80];
    snprintf(parent, sizeof(parent), "%.*s", (int)(strrchr(dir, '/') - dir), dir);
    DIR *d = opendir(parent);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    cr_assert_eq(n, 1, "only objs/ in the parent");
    cr_assert_eq(access("/tmp/escape", F_OK), -1);
    tier_close(t);
}

Test(file, errors_are_exact)
{
    tier_t *t = open_ok(uri), *t2 = NULL;
    char buf[100], err[256];
    uint64_t got = 0, size;
    char longkey[TIER_KEY_MAX + 1];

    memset(longkey, 'x', sizeof(longkey));
    cr_assert_eq(tier_get(t, "none", 4, buf, sizeof(buf), &got), PINPOOL_ENOKEY);
    cr_assert_eq(tier_size(t, "none", 4, &size), PINPOOL_ENOKEY);
    cr_assert_eq(tier_remove(t, "none", 4), PINPOOL_ENOKEY);
    cr_assert_eq(tier_put(t, longkey, sizeof(longkey), "x", 1), PINPOOL_EINVAL);
    cr_assert(strstr(tier_errmsg(), "1 to 640 bytes") != NULL, "%s", tier_errmsg());
    cr_assert_eq(tier_put(t, "", 0, "x", 1), PINPOOL_EINVAL);
    cr_assert_eq(tier_put(t, "k", 1, "x", 0), PINPOOL_EINVAL);
    cr_assert_eq(tier_put(t, "k", 1, NULL, 5), PINPOOL_EINVAL);
    cr_assert_eq(tier_put(t, longkey, TIER_KEY_MAX, "x", 1), 0, "the longest key works");

    test_fill(buf, sizeof(buf), 3);
    cr_assert_eq(tier_put(t, "k", 1, buf, sizeof(buf)), 0);
    cr_assert_eq(tier_get(t, "k", 1, buf, 99, &got), -ENOBUFS);
    cr_assert_eq(got, 100, "a short buffer learns the size");

    /* one tier per directory */
    cr_assert_eq(tier_open(&t2, uri, err, sizeof(err)), PINPOOL_EBUSY);
    cr_assert(strstr(err, "in use") != NULL, "%s", err);

    static const char *bad[] = {"file:relative/dir", "file://host/dir", "nfs:///x",
                                "file:///tmp/x?fsync=2", "nocolon", "file:///tmp/x?what=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(tier_open(&t2, bad[i], err, sizeof(err)), PINPOOL_EINVAL, "%s", bad[i]);
        cr_assert_neq(err[0], '\0', "%s gives a reason", bad[i]);
    }
    cr_assert_neq(tier_open(&t2, "file:///proc/no/such", err, sizeof(err)), 0);
    cr_assert(strstr(err, "/proc/no/such") != NULL, "%s", err);

    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_assert_eq(st.not_found, 3);
    tier_close(t);
}

Test(file, batches_report_per_item)
{
    tier_t *t = open_ok(uri);
    enum { N = 64 };
    tier_item_t it[N + 1];
    char keys[N + 1][16];
    static char in[N][3000], out[N][3000];

    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "b%d", i);
        test_fill(in[i], sizeof(in[i]), (unsigned)i + 10);
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]), .buf = in[i],
                              .len = 1000 + (uint64_t)i * 30};
    }
    cr_assert_eq(tier_put_batch(t, it, N), 0, "%s", tier_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(it[i].rc, 0);

    snprintf(keys[N], sizeof(keys[N]), "missing");
    for (int i = 0; i <= N; i++)
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]), .buf = out[i % N],
                              .len = sizeof(out[0])};
    cr_assert_eq(tier_exists_batch(t, it, N + 1), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(it[i].rc, 1);
    cr_assert_eq(it[N].rc, 0);

    for (int i = 0; i <= N; i++)
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]), .buf = out[i % N],
                              .len = sizeof(out[0])};
    cr_assert_eq(tier_get_batch(t, it, N), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(it[i].got, 1000 + (uint64_t)i * 30);
        cr_assert_eq(memcmp(out[i], in[i], it[i].got), 0, "item %d", i);
    }
    /* a bad item fails alone */
    it[3].keylen = 0;
    cr_assert_eq(tier_remove_batch(t, it, N + 1), PINPOOL_EINVAL);
    for (int i = 0; i < N; i++)
        cr_assert_eq(it[i].rc, i == 3 ? PINPOOL_EINVAL : 0, "item %d: %d", i, it[i].rc);
    cr_assert_eq(it[N].rc, PINPOOL_ENOKEY);
    cr_assert_eq(tier_exists(t, "b3", 2), 1);
    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, 1);
    tier_close(t);
}

Test(file, big_object, .timeout = 120)
{
    tier_t *t = open_ok(uri);
    size_t n = (size_t)192 << 20;
    char *in = malloc(n), *out = malloc(n);
    uint64_t got;

    cr_assert(in != NULL && out != NULL);
    test_fill(in, n, 42);
    cr_assert_eq(tier_put(t, "big", 3, in, n), 0, "%s", tier_errmsg());
    memset(out, 0, n);
    cr_assert_eq(tier_get(t, "big", 3, out, n, &got), 0, "%s", tier_errmsg());
    cr_assert_eq(got, n);
    cr_assert_eq(memcmp(in, out, n), 0);
    cr_assert_eq(tier_remove(t, "big", 3), 0);
    free(in);
    free(out);
    tier_close(t);
}

static void crash_now(void)
{
    _exit(0);
}

/* Fork; in the child, *child gets the tier opened anew on uri (it _exits 3 if
 * it cannot).  Returns the pid (0 in the child). */
static pid_t fork_with_tier(tier_t **child)
{
    pid_t pid = fork();
    char err[256];

    cr_assert_geq(pid, 0);
    if (pid == 0 && tier_open(child, uri, err, sizeof(err)) != 0)
        _exit(3);
    return pid;
}

/* A child puts key (a new object, or over an old one) and dies between the
 * write of the temp file and the rename. */
static void crash_during_put(const char *key, const void *val, size_t len)
{
    tier_t *t = NULL;
    pid_t pid = fork_with_tier(&t);
    int status;

    if (pid == 0) {
        tier_file_test_before_rename = crash_now;
        tier_put(t, key, strlen(key), val, len);
        _exit(4); /* the hook did not run */
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

Test(file, crash_between_write_and_rename_leaves_no_object)
{
    char old[5000], new[7000], out[7000];
    uint64_t got;
    int objs, temps, others;
    tier_t *t;

    test_fill(old, sizeof(old), 5);
    test_fill(new, sizeof(new), 6);
    t = open_ok(uri);
    cr_assert_eq(tier_put(t, "kept", 4, old, sizeof(old)), 0);
    tier_close(t);

    crash_during_put("fresh", new, sizeof(new)); /* a new key */
    count_names(&objs, &temps, &others);
    cr_assert_eq(temps, 1, "the crash left its temp file");
    cr_assert_eq(objs, 1);
    crash_during_put("kept", new, sizeof(new)); /* over an old object; its open cleaned */
    count_names(&objs, &temps, &others);
    cr_assert_eq(temps, 1);
    cr_assert_eq(objs, 1);

    t = open_ok(uri);
    count_names(&objs, &temps, &others);
    cr_assert_eq(temps, 0, "open deleted the stale temp files");
    cr_assert_eq(tier_exists(t, "fresh", 5), 0, "the crashed put is not visible");
    cr_assert_eq(tier_get(t, "fresh", 5, out, sizeof(out), &got), PINPOOL_ENOKEY);
    cr_assert_eq(tier_get(t, "kept", 4, out, sizeof(out), &got), 0);
    cr_assert_eq(got, sizeof(old), "the old object is intact");
    cr_assert_eq(memcmp(out, old, sizeof(old)), 0);
    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_assert_eq(st.objects, 1);
    tier_close(t);
}

Test(file, killed_mid_write_leaves_old_or_new_never_a_mix, .timeout = 120)
{
    size_t n = (size_t)64 << 20;
    char *a = malloc(n), *b = malloc(n), *out = malloc(n);
    uint64_t got;
    tier_t *t;

    test_fill(a, n, 7);
    test_fill(b, n, 8);
    t = open_ok(uri);
    cr_assert_eq(tier_put(t, "obj", 3, a, n), 0);
    tier_close(t);
    for (int round = 0; round < 3; round++) {
        tier_t *ct = NULL;
        pid_t pid = fork_with_tier(&ct);
        int objs, temps, others, status;

        if (pid == 0) {
            for (;;)
                tier_put(ct, "obj", 3, (round & 1) ? a : b, n);
        }
        /* kill it as soon as a temp file is being written (or after 2 s) */
        double t0 = test_now_s();
        do {
            count_names(&objs, &temps, &others);
            usleep(500);
        } while (temps == 0 && test_now_s() - t0 < 2);
        usleep((useconds_t)(round * 3000));
        kill(pid, SIGKILL);
        cr_assert_eq(waitpid(pid, &status, 0), pid);

        t = open_ok(uri);
        count_names(&objs, &temps, &others);
        cr_assert_eq(temps, 0);
        cr_assert_eq(objs, 1);
        cr_assert_eq(tier_get(t, "obj", 3, out, n, &got), 0, "%s", tier_errmsg());
        cr_assert_eq(got, n);
        cr_assert(memcmp(out, a, n) == 0 || memcmp(out, b, n) == 0, "round %d: a mix", round);
        tier_close(t);
    }
    free(a);
    free(b);
    free(out);
}

struct racer {
    tier_t *t;
    int id;
    int bad;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char buf[20000], out[20000];
    uint64_t got;

    for (int i = 0; i < 200; i++) {
        /* everyone replaces "shared" with a uniform object of its own byte */
        memset(buf, 'a' + r->id, sizeof(buf));
        if (tier_put(r->t, "shared", 6, buf, sizeof(buf) - (size_t)r->id * 1000) != 0)
            r->bad++;
        if (tier_get(r->t, "shared", 6, out, sizeof(out), &got) != 0) {
            r->bad++;
            continue;
        }
        for (uint64_t j = 1; j < got; j++)
            if (out[j] != out[0]) {
                r->bad++;
                break;
            }
        if (got != sizeof(buf) - (size_t)(out[0] - 'a') * 1000)
            r->bad++;
    }
    return NULL;
}

Test(file, concurrent_replace_never_shows_a_torn_object)
{
    struct racer r[4];
    char u[160];
    tier_t *t;

    snprintf(u, sizeof(u), "%s?fsync=0", uri);
    t = open_ok(u);
    for (int i = 0; i < 4; i++)
        r[i] = (struct racer){.t = t, .id = i};
    test_threads(4, race, r, sizeof(r[0]));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r[i].bad, 0, "thread %d saw %d bad results", i, r[i].bad);
    int objs, temps, others;
    count_names(&objs, &temps, &others);
    cr_assert_eq(objs, 1);
    cr_assert_eq(temps, 0);
    tier_close(t);
}

struct statcount {
    int n;
    char puts[32];
    char path[256];
};

static void add_stat(const char *name, const char *value, void *arg)
{
    struct statcount *s = arg;

    s->n++;
    if (strcmp(name, "puts") == 0)
        snprintf(s->puts, sizeof(s->puts), "%s", value);
    if (strcmp(name, "path") == 0)
        snprintf(s->path, sizeof(s->path), "%s", value);
}

Test(file, stats_callback_names_counters_and_backend_facts)
{
    tier_t *t = open_ok(uri);
    struct statcount s = {0};

    tier_put(t, "a", 1, "xyz", 3);
    tier_put(t, "b", 1, "xyz", 3);
    tier_report_stats(t, add_stat, &s);
    cr_assert_gt(s.n, 15);
    cr_assert_str_eq(s.puts, "2");
    cr_assert_str_eq(s.path, dir);
    tier_close(t);
}


/* What tier_list saw: keys with their metadata, and damage. */
struct listing {
    int objects, damaged;
    char keys[8][64];
    char metas[8][TIER_META_MAX + 1];
    char damage[512];
};

static int collect(const tier_entry_t *e, void *arg)
{
    struct listing *l = arg;

    if (e->damage != NULL) {
        l->damaged++;
        snprintf(l->damage, sizeof(l->damage), "%s: %s", e->where, e->damage);
        return 0;
    }
    if (l->objects < 8) {
        snprintf(l->keys[l->objects], sizeof(l->keys[0]), "%.*s", (int)e->keylen,
                 (const char *)e->key);
        snprintf(l->metas[l->objects], sizeof(l->metas[0]), "%.*s", (int)e->metalen,
                 (const char *)e->meta);
    }
    l->objects++;
    return 0;
}

static bool listed(const struct listing *l, const char *key, const char *meta)
{
    for (int i = 0; i < l->objects && i < 8; i++)
        if (strcmp(l->keys[i], key) == 0 && strcmp(l->metas[i], meta) == 0)
            return true;
    return false;
}

/* The file tier lists its objects with their metadata (after a reopen too);
 * a truncated file is reported as damaged and removed; a payload whose bytes
 * changed fails its get with -EBADMSG; reserved keys are refused. */
Test(file, list_metadata_and_damage)
{
    tier_t *t = open_ok(uri);
    char data[10000], out[10000], path[256];
    struct listing l = {0};
    uint64_t got;
    int fd;

    test_fill(data, sizeof(data), 4);
    cr_assert_eq(tier_put_meta(t, "a", 1, data, sizeof(data), "meta-a", 6), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_put_meta(t, "b/x", 3, data, 100, "mb", 2), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_put(t, "c", 1, data, 5000), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_put_meta(t, "d", 1, data, 10, data, TIER_META_MAX + 1), PINPOOL_EINVAL);
    cr_assert_eq(tier_put(t, TIER_RESERVED "x", strlen(TIER_RESERVED) + 1, data, 1),
                 PINPOOL_EINVAL, "the tier's own keys are refused");
    tier_close(t);
    t = open_ok(uri);
    cr_assert_eq(tier_list(t, collect, &l), 0, "%s", tier_errmsg());
    cr_assert_eq(l.objects, 3);
    cr_assert_eq(l.damaged, 0);
    cr_expect(listed(&l, "a", "meta-a") && listed(&l, "b/x", "mb") && listed(&l, "c", ""));

    /* the payload of a changes: its get says so */
    snprintf(path, sizeof(path), "%s/o.a", dir);
    fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0, "%s", path);
    cr_assert_eq(pwrite(fd, "!", 1, 4096 + 77), 1);
    close(fd);
    cr_assert_eq(tier_get(t, "a", 1, out, sizeof(out), &got), -EBADMSG);
    cr_expect(strstr(tier_errmsg(), "damaged") != NULL, "%s", tier_errmsg());
    /* c is truncated: the listing removes it */
    snprintf(path, sizeof(path), "%s/o.c", dir);
    cr_assert_eq(truncate(path, 4096 + 10), 0);
    memset(&l, 0, sizeof(l));
    cr_assert_eq(tier_list(t, collect, &l), 0);
    cr_expect_eq(l.objects, 2);
    cr_expect_eq(l.damaged, 1);
    cr_expect(strstr(l.damage, "o.c") != NULL && strstr(l.damage, "truncated") != NULL, "%s",
              l.damage);
    cr_expect_eq(access(path, F_OK), -1, "the damaged file is gone");
    tier_stats_t st;
    tier_get_stats(t, &st);
    cr_expect_eq(st.objects, 2);
    tier_close(t);
}

/* ---- Mooncake: a real store on loopback (tests/mooncake.c) ----------------------- */

TestSuite(mooncake, .fini = mc_teardown, .timeout = 110);

Test(mooncake, put_get_exists_remove_byte_exact)
{
    mc_start_cluster("1000", "");
    tier_t *t = open_ok(mc.uri);
    static const size_t sizes[] = {1, 4096, 100000, 3 << 20, 9 << 20}; /* the last > buffer */
    char key[32];
    uint64_t got, size;

    cr_assert_str_eq(tier_scheme(t), "mooncake");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        char *in = malloc(n), *out = malloc(n + 16);

        test_fill(in, n, (unsigned)i + 100);
        snprintf(key, sizeof(key), "mc-%zu", n);
        cr_assert_eq(tier_exists(t, key, strlen(key)), 0);
        cr_assert_eq(tier_put(t, key, strlen(key), in, n), 0, "put %zu: %s", n, tier_errmsg());
        cr_assert_eq(tier_exists(t, key, strlen(key)), 1);
        cr_assert_eq(tier_size(t, key, strlen(key), &size), 0);
        cr_assert_eq(size, n);
        memset(out, 0, n + 16);
        cr_assert_eq(tier_get(t, key, strlen(key), out, n + 16, &got), 0, "get %zu: %s", n,
                     tier_errmsg());
        cr_assert_eq(got, n);
        cr_assert_eq(memcmp(in, out, n), 0, "%zu bytes differ", n);
        if (n > 1) {
            cr_assert_eq(tier_get(t, key, strlen(key), out, n - 1, &got), -ENOBUFS);
            cr_assert_eq(got, n);
        }
        free(in);
        free(out);
    }
    /* put replaces (Mooncake's own put would keep the old bytes) */
    cr_assert_eq(tier_put(t, "mc-1", 4, "new bytes", 9), 0, "%s", tier_errmsg());
    char out[32];
    cr_assert_eq(tier_get(t, "mc-1", 4, out, sizeof(out), &got), 0);
    cr_assert_eq(got, 9);
    cr_assert_eq(memcmp(out, "new bytes", 9), 0);

    /* binary keys round-trip and stay distinct */
    cr_assert_eq(tier_put(t, "a\0b", 3, "one", 3), 0);
    cr_assert_eq(tier_put(t, "a\0c", 3, "two", 3), 0);
    cr_assert_eq(tier_put(t, "a%00b", 5, "three", 5), 0);
    cr_assert_eq(tier_get(t, "a\0b", 3, out, sizeof(out), &got), 0);
    cr_assert_eq(memcmp(out, "one", 3), 0);
    cr_assert_eq(tier_get(t, "a%00b", 5, out, sizeof(out), &got), 0);
    cr_assert_eq(memcmp(out, "three", 5), 0);

    /* a get grants a lease: remove says BUSY until it ends (1 s here) */
    cr_assert_eq(tier_remove(t, "mc-4096", 7), PINPOOL_EBUSY, "%s", tier_errmsg());
    cr_assert(strstr(tier_errmsg(), "lease") != NULL, "%s", tier_errmsg());
    cr_assert_eq(tier_exists(t, "mc-4096", 7), 1, "a refused remove leaves the object");
    usleep(1300000);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        snprintf(key, sizeof(key), "mc-%zu", sizes[i]);
        int rc = tier_remove(t, key, strlen(key));
        cr_assert_eq(rc, 0, "remove %s: %s %s", key, pinpool_err_name(rc), tier_errmsg());
        cr_assert_eq(tier_exists(t, key, strlen(key)), 0);
    }
    cr_assert_eq(tier_get(t, "mc-1", 4, out, sizeof(out), &got), PINPOOL_ENOKEY);
    cr_assert_eq(tier_remove(t, "mc-1", 4), PINPOOL_ENOKEY);
    tier_close(t);
}

Test(mooncake, batches_and_lease_wait)
{
    mc_start_cluster("1000", "lease_wait_ms=5000");
    tier_t *t = open_ok(mc.uri);
    enum { N = 40 };
    tier_item_t it[N + 1];
    char keys[N + 1][16];
    char *in[N], *out[N];

    for (int i = 0; i < N; i++) {
        size_t n = 50000 + (size_t)i * 7919; /* several groups in the 4 MiB buffer */
        snprintf(keys[i], sizeof(keys[i]), "batch-%d", i);
        in[i] = malloc(n);
        out[i] = malloc(n);
        test_fill(in[i], n, (unsigned)i + 300);
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]), .buf = in[i], .len = n};
    }
    cr_assert_eq(tier_put_batch(t, it, N), 0, "%s", tier_errmsg());
    snprintf(keys[N], sizeof(keys[N]), "missing");
    for (int i = 0; i <= N; i++)
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i])};
    cr_assert_eq(tier_exists_batch(t, it, N + 1), 0, "%s", tier_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(it[i].rc, 1, "item %d", i);
    cr_assert_eq(it[N].rc, 0);
    for (int i = 0; i < N; i++)
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]), .buf = out[i],
                              .len = 50000 + (uint64_t)i * 7919};
    cr_assert_eq(tier_get_batch(t, it, N), 0, "%s", tier_errmsg());
    for (int i = 0; i < N; i++) {
        cr_assert_eq(it[i].got, it[i].len);
        cr_assert_eq(memcmp(in[i], out[i], it[i].len), 0, "item %d differs", i);
    }
    /* leased by the get above: remove waits (lease_wait_ms) and then succeeds */
    for (int i = 0; i <= N; i++)
        it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i])};
    double t0 = test_now_s();
    cr_assert_eq(tier_remove_batch(t, it, N + 1), PINPOOL_ENOKEY, "%s", tier_errmsg());
    for (int i = 0; i < N; i++)
        cr_assert_eq(it[i].rc, 0, "item %d: %s", i, pinpool_err_name(it[i].rc));
    cr_assert_lt(test_now_s() - t0, 5.0);
    for (int i = 0; i < N; i++) {
        free(in[i]);
        free(out[i]);
    }
    tier_close(t);
}

Test(mooncake, an_independent_client_reads_what_the_tier_wrote)
{
    mc_start_cluster("1000", "prefix=pinpool%2F");
    tier_t *t = open_ok(mc.uri);
    size_t n = (size_t)6 << 20;
    char *in = malloc(n), *out = malloc(n), path[128];
    uint64_t got;
    FILE *f;

    test_fill(in, n, 77);
    cr_assert_eq(tier_put(t, "weights/layer.0", 15, in, n), 0, "%s", tier_errmsg());
    snprintf(path, sizeof(path), "%s/peer.bin", mc.dir);
    cr_assert_eq(mc_run_peer("get", "pinpool/weights/layer.0", path), 0,
                 "the Python client could not read the key (see peer.log)");
    f = fopen(path, "rb");
    cr_assert_not_null(f);
    memset(out, 0, n);
    cr_assert_eq(fread(out, 1, n + 1, f), n, "the Python client read another size");
    fclose(f);
    cr_assert_eq(memcmp(in, out, n), 0, "the Python client read other bytes");

    /* and the other way: what it writes, the tier reads */
    test_fill(in, n / 3, 78);
    f = fopen(path, "wb");
    cr_assert_eq(fwrite(in, 1, n / 3, f), n / 3);
    fclose(f);
    cr_assert_eq(mc_run_peer("put", "pinpool/from-python", path), 0);
    cr_assert_eq(tier_get(t, "from-python", 11, out, n, &got), 0, "%s", tier_errmsg());
    cr_assert_eq(got, n / 3);
    cr_assert_eq(memcmp(in, out, n / 3), 0);
    free(in);
    free(out);
    tier_close(t);
}


/* The Mooncake client cannot list keys: the tier keeps an index under the
 * prefix.  It survives a reopen, lists what was put with its metadata, and
 * drops what was removed. */
Test(mooncake, the_index_lists_across_a_reopen)
{
    mc_start_cluster("1000", "prefix=pinpool%2F");
    tier_t *t = open_ok(mc.uri);
    char data[20000], out[20000], path[128];
    struct listing l = {0};
    uint64_t got;

    snprintf(path, sizeof(path), "%s/peer.bin", mc.dir);
    test_fill(data, sizeof(data), 5);
    cr_assert_eq(tier_put_meta(t, "k1", 2, data, sizeof(data), "m1", 2), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_put_meta(t, "k2", 2, data, 3000, "m2", 2), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_put_meta(t, "k3", 2, data, 10, "m3", 2), 0, "%s", tier_errmsg());
    cr_assert_eq(tier_remove(t, "k3", 2), 0, "%s", tier_errmsg());
    tier_close(t);
    t = open_ok(mc.uri);
    cr_assert_eq(tier_list(t, collect, &l), 0, "%s", tier_errmsg());
    cr_expect_eq(l.objects, 2, "%d listed", l.objects);
    cr_expect(listed(&l, "k1", "m1") && listed(&l, "k2", "m2"));
    cr_assert_eq(tier_get(t, "k1", 2, out, sizeof(out), &got), 0, "%s", tier_errmsg());
    cr_assert_eq(memcmp(out, data, sizeof(data)), 0);

    /* The listing's exists left a lease on k2: the remove may be refused; the
     * index then marks it dead, and a reopen removes it, never lists it. */
    int rc = tier_remove(t, "k2", 2);
    cr_assert(rc == 0 || rc == PINPOOL_EBUSY, "%s: %s", pinpool_err_name(rc), tier_errmsg());
    cr_log_info("remove of k2 right after the listing: %s", pinpool_err_name(rc));
    tier_close(t);
    t = open_ok(mc.uri);
    memset(&l, 0, sizeof(l));
    cr_assert_eq(tier_list(t, collect, &l), 0, "%s", tier_errmsg());
    cr_expect_eq(l.objects, 1, "k2 was removed: not listed");
    cr_expect_eq(mc_run_peer("get", "pinpool/.pinpool.index.00", path) == 0 ||
                 mc_run_peer("get", "pinpool/k1", path) == 0, 1,
                 "the index and the objects are under the prefix");
    tier_close(t);
}

struct killer {
    double delay;
    pid_t *pid;
};

static void *kill_later(void *arg)
{
    struct killer *k = arg;

    usleep((useconds_t)(k->delay * 1e6));
    mc_stop(k->pid);
    return NULL;
}

Test(mooncake, master_killed_mid_batch_errors_then_recovers, .timeout = 150)
{
    mc_start_cluster("1000", "timeout_ms=8000");
    tier_t *t = open_ok(mc.uri);
    enum { N = 48 };
    size_t n = 1 << 20; /* 48 MiB a batch: 12 commands through the 4 MiB buffer */
    char *in = malloc(n * N), *out = malloc(n);
    tier_item_t it[N];
    char keys[N][32];
    double worst = 0, first = 0;
    int ok_items = 0, failed_items = 0, rc;
    uint64_t got;

    test_fill(in, n * N, 9);
    for (int round = 0; round < 3; round++) {
        pthread_t th;
        struct killer k = {.pid = &mc.master};

        for (int i = 0; i < N; i++) {
            snprintf(keys[i], sizeof(keys[i]), "spill-%d-%d", round, i);
            it[i] = (tier_item_t){.key = keys[i], .keylen = strlen(keys[i]),
                                  .buf = in + (size_t)i * n, .len = n};
        }
        if (round == 1) { /* kill the master halfway through this batch */
            k.delay = first / 2;
            pthread_create(&th, NULL, kill_later, &k);
        }
        double t0 = test_now_s();
        rc = tier_put_batch(t, it, N);
        double dt = test_now_s() - t0;
        if (round == 0) {
            cr_assert_eq(rc, 0, "%s", tier_errmsg());
            first = dt;
            continue;
        }
        if (round == 1)
            pthread_join(th, NULL);
        worst = dt > worst ? dt : worst;
        for (int i = 0; i < N; i++) {
            ok_items += it[i].rc == 0;
            failed_items += it[i].rc != 0;
            cr_assert(it[i].rc == 0 || it[i].rc == PINPOOL_ETIER || it[i].rc == -ETIMEDOUT,
                      "item %d: %s", i, pinpool_err_name(it[i].rc));
        }
        cr_log_info("round %d (master killed after %.3f s of a %.3f s batch): %s, %s, %.1f s",
                    round, first / 2, first, pinpool_err_name(rc), tier_errmsg(), dt);
    }
    cr_log_info("after the kill: %d items stored, %d failed", ok_items, failed_items);
    cr_assert_geq(failed_items, N, "a whole batch without a master must fail");
    cr_assert_lt(worst, 8.0 + 3.0, "a batch took %.1f s (timeout_ms 8000)", worst);

    /* a new master on the same ports: puts work again (bounded wait) */
    mc_start_master("1000");
    rc = -1;
    for (double t0 = test_now_s(); test_now_s() - t0 < 45;) {
        rc = tier_put(t, "after", 5, in, n);
        if (rc == 0)
            break;
        usleep(500000);
    }
    cr_assert_eq(rc, 0, "puts did not resume after the master came back: %s", tier_errmsg());
    cr_assert_eq(tier_get(t, "after", 5, out, n, &got), 0, "%s", tier_errmsg());
    cr_assert_eq(got, n);
    cr_assert_eq(memcmp(in, out, n), 0);
    for (int i = 0; i < N; i++)
        it[i].buf = in + (size_t)i * n;
    cr_assert_eq(tier_put_batch(t, it, N), 0, "a whole batch after recovery: %s", tier_errmsg());
    free(in);
    free(out);
    tier_close(t);
}

Test(mooncake, adapter_killed_is_restarted_and_bad_configs_fail_fast)
{
    mc_start_cluster("1000", "");
    tier_t *t = open_ok(mc.uri), *t2 = NULL;
    struct statcount s = {0};
    char err[512], u[1200];
    pid_t apid;
    uint64_t got;
    char out[16];

    cr_assert_eq(tier_put(t, "k", 1, "v1", 2), 0);
    tier_report_stats(t, add_stat, &s);
    cr_assert_gt(s.n, 15);
    apid = 0;
    {
        char cmd[256];
        FILE *p;
        snprintf(cmd, sizeof(cmd), "pgrep -P %d -f mooncake_adapter.py", (int)getpid());
        p = popen(cmd, "r");
        if (fscanf(p, "%d", &apid) != 1)
            apid = 0;
        pclose(p);
    }
    cr_assert_gt(apid, 0, "no adapter process");
    kill(apid, SIGKILL);
    usleep(100000);
    int rc = tier_get(t, "k", 1, out, sizeof(out), &got);
    cr_assert_neq(rc, 0, "a call on a dead adapter fails");
    cr_assert_eq(rc, PINPOOL_ETIER, "%s: %s", pinpool_err_name(rc), tier_errmsg());
    rc = tier_get(t, "k", 1, out, sizeof(out), &got);
    cr_assert_eq(rc, 0, "the next call restarts it: %s", tier_errmsg());
    cr_assert_eq(memcmp(out, "v1", 2), 0);
    tier_close(t);

    /* nothing listens there: open fails within its timeout, with a reason */
    snprintf(u, sizeof(u),
             "mooncake://127.0.0.1:%d?metadata=%s&timeout_ms=10000&log=%s/nomaster.log",
             mc_free_port(), mc.metadata, mc.dir);
    double t0 = test_now_s();
    rc = tier_open(&t2, u, err, sizeof(err));
    cr_assert_neq(rc, 0);
    cr_assert_lt(test_now_s() - t0, 12.0);
    cr_log_info("open with no master: %s: %s", pinpool_err_name(rc), err);
    cr_assert_neq(err[0], '\0');

    snprintf(u, sizeof(u), "mooncake://%s?mode=dlopen&lib=/nonexistent/libmooncake_store.so",
             mc.master_addr);
    cr_assert_eq(tier_open(&t2, u, err, sizeof(err)), PINPOOL_ETIER);
    cr_assert(strstr(err, "WITH_STORE_C_SHARED") != NULL, "%s", err);
    cr_assert_eq(tier_open(&t2, "mooncake://nohostport", err, sizeof(err)), PINPOOL_EINVAL);
    snprintf(u, sizeof(u), "mooncake://%s?bogus=1", mc.master_addr);
    cr_assert_eq(tier_open(&t2, u, err, sizeof(err)), PINPOOL_EINVAL);
}
