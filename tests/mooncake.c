/*
 * mooncake.c - see mooncake.h.
 */
#include "mooncake.h"
#include "util.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

mc_cluster_t mc;

const char *mc_python(void)
{
    const char *p = getenv("PINPOOL_PYTHON");

    return p != NULL ? p : "python3";
}

int mc_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int s = socket(AF_INET, SOCK_STREAM, 0), port;

    cr_assert_geq(s, 0);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(s);
    return port;
}

bool mc_port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;

    close(s);
    return ok;
}

pid_t mc_spawn(const char *log, char *const argv[])
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

        dup2(fd, 1);
        dup2(fd, 2);
        setpgid(0, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

void mc_stop(pid_t *pid)
{
    int status;

    if (*pid <= 0)
        return;
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
    *pid = 0;
}

void mc_dump_logs(void)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "tail -n 15 %s/*.log >&2", mc.dir);
    if (system(cmd) != 0)
        fprintf(stderr, "no logs\n");
}

void mc_start_master(const char *lease)
{
    char bin[600], a[5][128], log[128];

    snprintf(bin, sizeof(bin), "%s/mooncake_master", mc.pkg);
    snprintf(a[0], sizeof(a[0]), "--rpc_port=%d", mc.master_port);
    snprintf(a[1], sizeof(a[1]), "--http_metadata_server_port=%d", mc.meta_port);
    snprintf(a[2], sizeof(a[2]), "--metrics_port=%d", mc.metrics_port);
    snprintf(a[3], sizeof(a[3]), "--default_kv_lease_ttl=%s", lease);
    snprintf(a[4], sizeof(a[4]), "--client_ttl=%d", 4);
    char *argv[] = {bin, a[0], a[1], a[2], a[3], a[4], "--rpc_address=127.0.0.1",
                    "--enable_http_metadata_server=true", "--http_metadata_server_host=127.0.0.1",
                    "--rpc_thread_num=2", NULL};
    snprintf(log, sizeof(log), "%s/master.log", mc.dir);
    mc.master = mc_spawn(log, argv);
    for (double t0 = test_now_s(); !mc_port_open(mc.master_port) || !mc_port_open(mc.meta_port);) {
        if (test_now_s() - t0 > 20) {
            mc_dump_logs();
            cr_assert_fail("mooncake_master did not listen within 20 s");
        }
        usleep(50000);
    }
}

pid_t mc_start_segment(const char *host, const char *size, const char *logname, char *name,
                       size_t namelen)
{
    char bin[600], a[5][160], log[128], cmd[512];
    FILE *p;
    pid_t pid;

    snprintf(bin, sizeof(bin), "%s/mooncake_client", mc.pkg);
    snprintf(a[0], sizeof(a[0]), "--port=%d", mc_free_port());
    snprintf(a[1], sizeof(a[1]), "--master_server_address=%s", mc.master_addr);
    snprintf(a[2], sizeof(a[2]), "--metadata_server=%s", mc.metadata);
    snprintf(a[3], sizeof(a[3]), "--global_segment_size=%s", size);
    snprintf(a[4], sizeof(a[4]), "--host=%s", host);
    char *argv[] = {bin, a[0], a[1], a[2], a[3], a[4], "--protocol=tcp", NULL};
    snprintf(log, sizeof(log), "%s/%s.log", mc.dir, logname);
    pid = mc_spawn(log, argv);
    for (double t0 = test_now_s();;) {
        snprintf(cmd, sizeof(cmd), "grep -qs 'Starting real client service' %s", log);
        if (system(cmd) == 0)
            break;
        if (test_now_s() - t0 > 20 || waitpid(pid, NULL, WNOHANG) != 0) {
            mc_dump_logs();
            cr_assert_fail("mooncake_client did not start within 20 s");
        }
        usleep(50000);
    }
    /* its segment's name: HOST:PORT of its transfer engine */
    snprintf(cmd, sizeof(cmd), "sed -n 's/.*parseHostNameWithPort. server_name: \\([^ ]*\\) "
             "port: \\([0-9]*\\).*/\\1:\\2/p' %s | head -n 1", log);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (fgets(name, (int)namelen, p) == NULL)
        name[0] = '\0';
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    cr_assert_neq(name[0], '\0', "no segment name in %s", log);
    return pid;
}

void mc_start_cluster(const char *lease, const char *extra_params)
{
    char cmd[512];
    FILE *p;

    snprintf(cmd, sizeof(cmd), "%s -c 'import mooncake.store, os; "
             "print(os.path.dirname(mooncake.__file__))' 2>/dev/null", mc_python());
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    if (fgets(mc.pkg, sizeof(mc.pkg), p) == NULL)
        mc.pkg[0] = '\0';
    if (pclose(p) != 0 || mc.pkg[0] == '\0')
        cr_skip_test("Mooncake is not installed for python3 (make test installs it: pip install "
                     "mooncake-transfer-engine-non-cuda; it also needs libibverbs1)");
    mc.pkg[strcspn(mc.pkg, "\n")] = '\0';
    snprintf(mc.dir, sizeof(mc.dir), "/tmp/pinpool-mc-XXXXXX");
    cr_assert_not_null(mkdtemp(mc.dir));
    mc.master_port = mc_free_port();
    mc.meta_port = mc_free_port();
    mc.metrics_port = mc_free_port();
    snprintf(mc.master_addr, sizeof(mc.master_addr), "127.0.0.1:%d", mc.master_port);
    snprintf(mc.metadata, sizeof(mc.metadata), "http://127.0.0.1:%d/metadata", mc.meta_port);
    mc_start_master(lease);

    /* the process that contributes the memory objects live in */
    mc.client = mc_start_segment("127.0.0.1", "512MB", "client", mc.segname, sizeof(mc.segname));
    snprintf(mc.uri, sizeof(mc.uri),
             "mooncake://%s?metadata=%s&buffer=4MiB&timeout_ms=15000&log=%s/adapter.log%s%s",
             mc.master_addr, mc.metadata, mc.dir, extra_params[0] ? "&" : "", extra_params);
}

void mc_teardown(void)
{
    for (int i = 0; i < MC_MAX_SEGMENTS; i++)
        mc_stop(&mc.segments[i]);
    mc_stop(&mc.client);
    mc_stop(&mc.master);
    if (mc.dir[0] != '\0')
        test_rm_rf(mc.dir);
    mc.dir[0] = '\0';
}

int mc_run_peer(const char *op, const char *key, const char *path)
{
    char cmd[2048];
    int st;

    snprintf(cmd, sizeof(cmd), "timeout 60 %s tests/mooncake_peer.py %s %s %s '%s' %s "
             ">>%s/peer.log 2>&1", mc_python(), mc.master_addr, mc.metadata, op, key, path, mc.dir);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
