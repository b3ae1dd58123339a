/*
 * tests/cluster/test_nodes.c - `make test-cluster` (.ci/run runs it; not part
 * of `make test`: about a minute and a half of Mooncake processes): two
 * pinpool daemons of one --cluster on one machine that look like two nodes.
 *
 *   two_namespaces   node a and node b in network namespaces of their own
 *                    joined by a veth pair (10.77.0.1 / 10.77.0.2; two
 *                    loopback addresses where `ip netns` is refused), each
 *                    with its own Mooncake segment (segment=, prefer_local=1),
 *                    the master in a's namespace: a releases and spills 64 MiB,
 *                    b acquires it byte-exact across the veth; a removes it,
 *                    b's acquire answers NOT_FOUND.
 *   replicas         replicas=2 on two mooncake_client segments: the segment
 *                    process holding one copy is killed, b still acquires the
 *                    object byte-exact (while a single-copy object on that
 *                    segment is gone: the kill did take copies).
 *   master_restart   mooncake_master in HA mode with etcd (Debian etcd-server):
 *                    killed -9 and started again, the objects shared before
 *                    are acquirable on both nodes after it.
 * Every process a test starts is killed in its .fini; the namespaces and the
 * etcd data go with it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "mooncake.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1024ull * 1024)

static test_daemon_t na, nb;
static char ns[2][32];      /* the namespaces ("" when on loopback addresses) */
static char host[2][32];    /* each node's address */
static char wrap[2][128];   /* PINPOOL_BIN for each node: `ip netns exec NS pinpool` */
static char real_bin[512];
static pid_t etcd;

static void teardown(void)
{
    char cmd[256];
    int ra = na.pid > 0 ? test_daemon_stop(&na) : 0, rb = nb.pid > 0 ? test_daemon_stop(&nb) : 0;

    mc_stop(&etcd);
    mc_teardown();
    for (int i = 0; i < 2; i++)
        if (ns[i][0] != '\0') {
            snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", ns[i]);
            if (system(cmd) != 0)
                fprintf(stderr, "could not delete namespace %s\n", ns[i]);
        }
    test_fini_check(ra == 0 && rb == 0, "the daemons exited with %d and %d on SIGTERM", ra, rb);
}

static void note_bin(void)
{
    const char *b = getenv("PINPOOL_BIN");

    snprintf(real_bin, sizeof(real_bin), "%s", b != NULL ? b : "build/pinpool");
}

/* Can ip reach host:port from namespace ns (or here)?  A child joins ns. */
static bool ns_port_open(const char *nsname, const char *ip, int port)
{
    pid_t pid = fork();
    int st;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char path[96];
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        int fd, s;

        if (nsname[0] != '\0') {
            snprintf(path, sizeof(path), "/var/run/netns/%s", nsname);
            fd = open(path, O_RDONLY);
            if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
                _exit(2);
        }
        inet_pton(AF_INET, ip, &a.sin_addr);
        s = socket(AF_INET, SOCK_STREAM, 0);
        _exit(connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : 1);
    }
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Two namespaces joined by a veth pair; false (and loopback addresses) when
 * this machine refuses. */
static bool make_namespaces(void)
{
    char cmd[1024];
    int id = (int)(getpid() % 100000);

    snprintf(ns[0], sizeof(ns[0]), "ppc%d-a", id);
    snprintf(ns[1], sizeof(ns[1]), "ppc%d-b", id);
    snprintf(cmd, sizeof(cmd),
             "set -e; ip netns add %s; ip netns add %s; "
             "ip link add pa%d type veth peer name pb%d; "
             "ip link set pa%d netns %s; ip link set pb%d netns %s; "
             "ip -n %s addr add 10.77.0.1/24 dev pa%d; ip -n %s addr add 10.77.0.2/24 dev pb%d; "
             "ip -n %s link set pa%d up; ip -n %s link set pb%d up; "
             "ip -n %s link set lo up; ip -n %s link set lo up",
             ns[0], ns[1], id, id, id, ns[0], id, ns[1], ns[0], id, ns[1], id, ns[0], id, ns[1],
             id, ns[0], ns[1]);
    if (system(cmd) != 0) {
        for (int i = 0; i < 2; i++) {
            snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", ns[i]);
            if (system(cmd) != 0)
                ns[i][0] = '\0';
            ns[i][0] = '\0';
        }
        snprintf(host[0], sizeof(host[0]), "127.0.0.2");
        snprintf(host[1], sizeof(host[1]), "127.0.0.3");
        cr_log_warn("ip netns refused here: the nodes are 127.0.0.2 and 127.0.0.3");
        return false;
    }
    snprintf(host[0], sizeof(host[0]), "10.77.0.1");
    snprintf(host[1], sizeof(host[1]), "10.77.0.2");
    return true;
}

/* PINPOOL_BIN wrappers that start the daemon in its namespace. */
static void make_wrappers(void)
{
    for (int i = 0; i < 2; i++) {
        FILE *f;

        snprintf(wrap[i], sizeof(wrap[i]), "%s/pinpool-%c", mc.dir, 'a' + i);
        f = fopen(wrap[i], "w");
        cr_assert_not_null(f);
        if (ns[i][0] != '\0')
            fprintf(f, "#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns[i], real_bin);
        else
            fprintf(f, "#!/bin/sh\nexec %s \"$@\"\n", real_bin);
        fclose(f);
        chmod(wrap[i], 0755);
    }
}

/* Node i ("a" or "b") of cluster c1 on tier uri (128 MiB pool, 64 MiB chunks). */
static void start_node(test_daemon_t *d, int i, const char *uri)
{
    char node[2] = {(char)('a' + i), 0};

    setenv("PINPOOL_BIN", wrap[i][0] ? wrap[i] : real_bin, 1);
    if (test_daemon_start(d, "--mem-pool-size", "128MiB", "--chunk-size", "64MiB",
                          "--spill-low-watermark", "0", "--spill-tier", uri, "--cluster", "c1",
                          "--cluster-node", node, "--log-level", "debug", NULL) != 0) {
        mc_dump_logs();
        cr_assert_fail("node %s did not start with --spill-tier %s", node, uri);
    }
    setenv("PINPOOL_BIN", real_bin, 1);
}

static void wait_exists(pinpool_ctx_t *ctx, const char *key, int want, double limit_s)
{
    int rc = -1;

    for (double t0 = test_now_s(); test_now_s() - t0 < limit_s; usleep(50000))
        if ((rc = pinpool_exists(ctx, key)) == want)
            return;
    test_daemon_dump_log(&na);
    cr_assert_fail("exists(%s) is %d, not %d, after %.0f s", key, rc, want, limit_s);
}

static void release_new(pinpool_ctx_t *ctx, const char *key, uint64_t size, unsigned seed)
{
    pinpool_slice_t s;

    cr_assert_eq(pinpool_alloc(ctx, size, NULL, &s), 0, "%s", pinpool_errmsg(ctx));
    test_fill(s.ptr, size, seed);
    cr_assert_eq(pinpool_release(ctx, s.id, key, 0), 0, "%s", pinpool_errmsg(ctx));
}

/* acquire key: size bytes of seed's pattern; freed.  Its time in ms. */
static double acquire_same(pinpool_ctx_t *ctx, test_daemon_t *d, const char *key, uint64_t size,
                           unsigned seed)
{
    pinpool_slice_t r;
    double t0 = test_now_s();
    int rc = pinpool_acquire(ctx, key, 0, &r);
    double ms = (test_now_s() - t0) * 1e3;

    if (rc != 0) {
        test_daemon_dump_log(d);
        mc_dump_logs();
        cr_assert_fail("acquire %s: %s: %s", key, pinpool_err_name(rc), pinpool_errmsg(ctx));
    }
    cr_assert_eq(r.size, size);
    cr_assert(test_same(r.ptr, size, seed), "%s came back different", key);
    cr_assert_eq(pinpool_free(ctx, r.id, NULL), 0, "%s", pinpool_errmsg(ctx));
    return ms;
}

/* The Mooncake package directory and a temp directory (mc_start_cluster's
 * first steps, without its processes). */
static void mc_prepare(void)
{
    char cmd[512];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "%s -c 'import mooncake.store, os; "
             "print(os.path.dirname(mooncake.__file__))' 2>/dev/null", mc_python());
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (fgets(mc.pkg, sizeof(mc.pkg), p) == NULL)
        mc.pkg[0] = '\0';
    pclose(p);
    cr_assert_neq(mc.pkg[0], '\0', "Mooncake is not installed for python3 (make test installs it)");
    mc.pkg[strcspn(mc.pkg, "\n")] = '\0';
    snprintf(mc.dir, sizeof(mc.dir), "/tmp/pinpool-mc-XXXXXX");
    cr_assert_not_null(mkdtemp(mc.dir));
    mc.master_port = mc_free_port();
    mc.meta_port = mc_free_port();
    mc.metrics_port = mc_free_port();
}

TestSuite(nodes, .init = note_bin, .fini = teardown, .timeout = 240);

Test(nodes, two_namespaces_one_spills_the_other_acquires_across_the_veth)
{
    char bin[600], a[4][160], log[160], uri[2][1400];
    bool netns = make_namespaces();
    pinpool_slice_t s, fill[2];

    mc_prepare();
    make_wrappers();
    /* the master in a's namespace, on a's address */
    snprintf(bin, sizeof(bin), "%s/mooncake_master", mc.pkg);
    snprintf(a[0], sizeof(a[0]), "--rpc_port=%d", mc.master_port);
    snprintf(a[1], sizeof(a[1]), "--http_metadata_server_port=%d", mc.meta_port);
    snprintf(a[2], sizeof(a[2]), "--rpc_address=%s", host[0]);
    snprintf(a[3], sizeof(a[3]), "--http_metadata_server_host=%s", host[0]);
    char *ip[] = {"/usr/sbin/ip", "netns", "exec", ns[0], bin, a[0], a[1], a[2], a[3],
                  "--enable_http_metadata_server=true", "--rpc_thread_num=2",
                  "--default_kv_lease_ttl=1000", "--client_ttl=4", NULL};
    snprintf(log, sizeof(log), "%s/master.log", mc.dir);
    mc.master = mc_spawn(log, netns ? ip : ip + 4);
    for (double t0 = test_now_s(); !ns_port_open(ns[1], host[0], mc.master_port);) {
        if (test_now_s() - t0 > 20) {
            mc_dump_logs();
            cr_assert_fail("mooncake_master did not listen on %s:%d within 20 s", host[0],
                           mc.master_port);
        }
        usleep(100000);
    }
    cr_log_info("nodes: %s (a) and %s (b)%s", host[0], host[1],
                netns ? ", network namespaces joined by a veth pair" : ", loopback");
    for (int i = 0; i < 2; i++) /* each node's own segment; its copies there */
        snprintf(uri[i], sizeof(uri[i]),
                 "mooncake://%s:%d?metadata=http://%s:%d/metadata&local_hostname=%s"
                 "&segment=160MiB&prefer_local=1&buffer=4MiB&timeout_ms=15000"
                 "&log=%s/adapter-%c.log",
                 host[0], mc.master_port, host[0], mc.meta_port, host[i], mc.dir, 'a' + i);
    start_node(&na, 0, uri[0]);
    start_node(&nb, 1, uri[1]);
    pinpool_ctx_t *ca = test_connect(&na), *cb = test_connect(&nb);

    release_new(ca, "model", 64 * MiB, 11);
    wait_exists(cb, "model", 1, 30);
    for (int i = 0; i < 2; i++) /* a's pool is full: "model" spills */
        cr_assert_eq(pinpool_alloc(ca, 64 * MiB, NULL, &fill[i]), 0, "%s", pinpool_errmsg(ca));
    double ms = acquire_same(cb, &nb, "model", 64 * MiB, 11);
    cr_log_info("b acquired a's 64 MiB across %s in %.1f ms (%.2f GB/s)",
                netns ? "the veth" : "loopback", ms, 64.0 * MiB / (ms / 1e3) / 1e9);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pinpool_free(ca, fill[i].id, NULL), 0);

    cr_assert_eq(pinpool_remove(ca, "model"), 0, "%s", pinpool_errmsg(ca));
    int rc = pinpool_acquire(cb, "model", 0, &s);
    cr_assert_eq(rc, PINPOOL_ENOKEY, "b's acquire after a's remove: %s: %s",
                 pinpool_err_name(rc), pinpool_errmsg(cb));
    cr_assert_eq(pinpool_exists(cb, "model"), 0);
    pinpool_close(ca);
    pinpool_close(cb);
}

/* The segments holding key's replicas (Mooncake's own client), a line each. */
static int replicas_of(const char *key, char segs[][64], int n)
{
    char path[128], line[128];
    int k = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/replicas.txt", mc.dir);
    if (mc_run_peer("replicas", key, path) != 0)
        return 0;
    f = fopen(path, "r");
    cr_assert_not_null(f);
    while (k < n && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(segs[k++], 64, "%.63s", line);
    }
    fclose(f);
    return k;
}

Test(nodes, replicas_2_survive_the_death_of_one_segment)
{
    char segs[4][64], seg2[64], uri[1400], path[160];
    FILE *f;

    note_bin();
    mc_start_cluster("1000", "");
    mc.segments[0] = mc_start_segment("127.0.0.1", "512MB", "segment2", seg2, sizeof(seg2));
    snprintf(uri, sizeof(uri), "%s&replicas=2", mc.uri);
    start_node(&na, 0, uri);
    start_node(&nb, 1, uri);
    pinpool_ctx_t *ca = test_connect(&na), *cb = test_connect(&nb);

    release_new(ca, "twice", 24 * MiB, 21);
    wait_exists(cb, "twice", 1, 30);
    char copy[256] = "c1/", cmd[512];
    snprintf(cmd, sizeof(cmd), "sed -n \"s/.*shared 'twice' of [^ ]* as '\\([^']*\\)'.*/\\1/p\" "
             "'%s' | tail -n 1", na.log);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (fgets(copy + 3, sizeof(copy) - 3, p) == NULL)
        copy[3] = '\0';
    pclose(p);
    copy[strcspn(copy, "\n")] = '\0';
    cr_assert_neq(copy[3], '\0', "a's log names no shared copy of 'twice'");
    cr_assert_eq(replicas_of(copy, segs, 4), 2, "a's copy %s has two replicas", copy);
    cr_assert_str_neq(segs[0], segs[1]);
    /* a control: one copy only, put by Mooncake's own client; the segment it
     * lies on is the one killed */
    snprintf(path, sizeof(path), "%s/single.bin", mc.dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "one copy only");
    fclose(f);
    cr_assert_eq(mc_run_peer("put", "single", path), 0);
    cr_assert_eq(replicas_of("single", segs, 4), 1);
    bool first = strcmp(segs[0], mc.segname) == 0;
    cr_log_info("killing segment %s (the one holding 'single')", segs[0]);
    mc_stop(first ? &mc.client : &mc.segments[0]);
    usleep(6 * 1000000); /* the master's --client_ttl (4 s) ends the dead segment */
    cr_assert_neq(mc_run_peer("get", "single", path), 0, "the single copy died with its segment");
    acquire_same(cb, &nb, "twice", 24 * MiB, 21);
    acquire_same(ca, &na, "twice", 24 * MiB, 21); /* and on a, from its own copy */
    cr_assert_eq(pinpool_exists(cb, "twice"), 0, "a's acquire ended it");
    pinpool_close(ca);
    pinpool_close(cb);
}

/* The master's log has "serving, role=leader" n times (within limit_s). */
static void wait_leader(int n, double limit_s)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "test $(grep -c 'serving, role=leader' %s/master.log) -ge %d",
             mc.dir, n);
    for (double t0 = test_now_s(); system(cmd) != 0; usleep(100000))
        if (test_now_s() - t0 > limit_s) {
            mc_dump_logs();
            cr_assert_fail("mooncake_master is not serving as leader within %.0f s", limit_s);
        }
}

static void start_ha_master(int etcd_port)
{
    char bin[600], a[6][160], log[160];

    snprintf(bin, sizeof(bin), "%s/mooncake_master", mc.pkg);
    snprintf(a[0], sizeof(a[0]), "--rpc_port=%d", mc.master_port);
    snprintf(a[1], sizeof(a[1]), "--http_metadata_server_port=%d", mc.meta_port);
    snprintf(a[2], sizeof(a[2]), "--metrics_port=%d", mc.metrics_port);
    snprintf(a[3], sizeof(a[3]), "--etcd_endpoints=127.0.0.1:%d", etcd_port);
    char *argv[] = {bin, a[0], a[1], a[2], a[3], "--enable_ha=true", "--enable_oplog=true",
                    "--rpc_address=127.0.0.1", "--enable_http_metadata_server=true",
                    "--http_metadata_server_host=127.0.0.1", "--rpc_thread_num=2",
                    "--default_kv_lease_ttl=1000", "--client_ttl=4", NULL};
    snprintf(log, sizeof(log), "%s/master.log", mc.dir);
    mc.master = mc_spawn(log, argv);
}

Test(nodes, a_master_in_ha_mode_restarts_and_objects_shared_before_come_back)
{
    char a[5][200], log[160], uri[1400], ent[48];
    int ep = mc_free_port(), pp = mc_free_port();

    note_bin();
    if (access("/usr/bin/etcd", X_OK) != 0)
        cr_skip_test("no /usr/bin/etcd (Debian etcd-server): the master's HA mode needs it");
    mc_prepare();
    snprintf(a[0], sizeof(a[0]), "--data-dir=%s/etcd", mc.dir);
    snprintf(a[1], sizeof(a[1]), "--listen-client-urls=http://127.0.0.1:%d", ep);
    snprintf(a[2], sizeof(a[2]), "--advertise-client-urls=http://127.0.0.1:%d", ep);
    snprintf(a[3], sizeof(a[3]), "--listen-peer-urls=http://127.0.0.1:%d", pp);
    snprintf(a[4], sizeof(a[4]), "--initial-advertise-peer-urls=http://127.0.0.1:%d", pp);
    char init[160];
    snprintf(init, sizeof(init), "--initial-cluster=default=http://127.0.0.1:%d", pp);
    char *ev[] = {"/usr/bin/etcd", a[0], a[1], a[2], a[3], a[4], init, NULL};
    snprintf(log, sizeof(log), "%s/etcd.log", mc.dir);
    etcd = mc_spawn(log, ev);
    for (double t0 = test_now_s(); !mc_port_open(ep); usleep(100000))
        cr_assert_lt(test_now_s() - t0, 20, "etcd did not listen within 20 s");
    snprintf(mc.master_addr, sizeof(mc.master_addr), "127.0.0.1:%d", mc.master_port);
    snprintf(mc.metadata, sizeof(mc.metadata), "http://127.0.0.1:%d/metadata", mc.meta_port);
    start_ha_master(ep);
    wait_leader(1, 30);
    /* the segment and the daemons find the master through etcd */
    snprintf(ent, sizeof(ent), "etcd://127.0.0.1:%d", ep);
    snprintf(mc.master_addr, sizeof(mc.master_addr), "%s", ent);
    mc.client = mc_start_segment("127.0.0.1", "512MB", "client", mc.segname, sizeof(mc.segname));
    snprintf(uri, sizeof(uri),
             "mooncake://127.0.0.1:%d?master=etcd%%3A%%2F%%2F127.0.0.1%%3A%d&metadata=%s"
             "&buffer=4MiB&timeout_ms=15000&log=%s/adapter.log",
             mc.master_port, ep, mc.metadata, mc.dir);
    start_node(&na, 0, uri);
    start_node(&nb, 1, uri);
    pinpool_ctx_t *ca = test_connect(&na), *cb = test_connect(&nb);

    release_new(ca, "before", 16 * MiB, 31);
    release_new(cb, "b-before", 8 * MiB, 32);
    wait_exists(cb, "before", 1, 30);
    wait_exists(ca, "b-before", 1, 30);

    mc_stop(&mc.master); /* kill -9, then a new master: the leader again */
    start_ha_master(ep);
    wait_leader(2, 60);
    /* the clients find the new leader and mount their segments again */
    for (double t0 = test_now_s(); pinpool_exists(cb, "before") != 1; usleep(200000))
        if (test_now_s() - t0 > 60) {
            mc_dump_logs();
            cr_assert_fail("'before' is not in the cluster 60 s after the master restarted");
        }
    acquire_same(cb, &nb, "before", 16 * MiB, 31);
    acquire_same(ca, &na, "b-before", 8 * MiB, 32);
    acquire_same(ca, &na, "before", 16 * MiB, 31);
    pinpool_close(ca);
    pinpool_close(cb);
}
