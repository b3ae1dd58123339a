/*
 * test_install.c - `make install` into a temp DESTDIR, then a tiny program
 * built against the installed tree with pkg-config alone (both public
 * headers: pinpool.h includes pinpool_errors.h), run against the installed
 * daemon.
 *
 * Owns: its temp directory (removed at the end) and the daemon it starts.
 * Needs: the build directory as $PINPOOL_BUILD and the sanitizer as
 * $PINPOOL_TEST_SANITIZE (make test sets both); runs make from the repository
 * root (the current directory under make test).
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "pinpool.h"

static char tmp[64];

/* Run cmd with sh; its output (stdout and stderr) into out. Returns the exit status. */
static int run(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t outlen, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    FILE *p;
    size_t n = 0;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    out[0] = '\0';
    while (n + 1 < outlen) {
        size_t r = fread(out + n, 1, outlen - 1 - n, p);
        if (r == 0)
            break;
        n += r;
    }
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static bool exists(const char *rel, mode_t type)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s%s", tmp, rel);
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

static const char prog[] =
    "#include <pinpool.h>\n"
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "int main(int argc, char **argv) {\n"
    "    char buf[32];\n"
    "    printf(\"version %s %s\\n\", pinpool_version(), pinpool_format_size(3u << 20, buf, sizeof(buf)));\n"
    "    printf(\"error %d %s: %s\\n\", PINPOOL_ENOSPC, pinpool_err_name(PINPOOL_ENOSPC),\n"
    "           pinpool_strerror(PINPOOL_ENOSPC));\n"
    "    if (argc < 2) return 0;\n"
    "    pinpool_ctx_t *ctx = pinpool_connect(argv[1]);\n"
    "    pinpool_slice_t s;\n"
    "    if (pinpool_err(ctx) != 0 || pinpool_alloc(ctx, 1 << 20, NULL, &s) != 0) {\n"
    "        printf(\"failed: %s\\n\", pinpool_errmsg(ctx));\n"
    "        return 1;\n"
    "    }\n"
    "    memset(s.ptr, 7, s.size);\n"
    "    int rc = pinpool_free(ctx, s.id, NULL);\n"
    "    pinpool_close(ctx);\n"
    "    printf(\"alloc+free %s\\n\", rc == 0 ? \"ok\" : \"failed\");\n"
    "    return rc != 0;\n"
    "}\n";

Test(install, destdir_tree_builds_and_links_a_client, .timeout = 300)
{
    const char *build = getenv("PINPOOL_BUILD"), *san = getenv("PINPOOL_TEST_SANITIZE");
    char out[16384], path[512], flags[128] = "";

    if (build == NULL || *build == '\0')
        build = "build";
    if (san != NULL && *san != '\0')
        snprintf(flags, sizeof(flags), "-fsanitize=%s", san);
    snprintf(tmp, sizeof(tmp), "/tmp/pinpool-install-XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));

    int rc = run(out, sizeof(out), "make -s --no-print-directory install BUILD=%s DESTDIR=%s PREFIX=/usr/local",
                 build, tmp);
    cr_assert_eq(rc, 0, "make install failed:\n%s", out);
    cr_expect(exists("/usr/local/bin/pinpool", S_IFREG));
    cr_expect(exists("/usr/local/libexec/pinpool/mooncake_adapter.py", S_IFREG),
              "the Mooncake tier finds its adapter in ../libexec/pinpool/ from the daemon");
    cr_expect(exists("/usr/local/lib/libpinpool.so.0", S_IFREG), "libpinpool.so.0 resolves to the library");
    cr_expect(exists("/usr/local/lib/libpinpool.so", S_IFREG));
    cr_expect(exists("/usr/local/include/pinpool.h", S_IFREG));
    cr_expect(exists("/usr/local/include/pinpool_errors.h", S_IFREG), "pinpool.h includes it");
    cr_expect(exists("/usr/local/lib/pkgconfig/pinpool.pc", S_IFREG));
    cr_expect(exists("/usr/local/lib/systemd/system/pinpool.service", S_IFREG));

    rc = run(out, sizeof(out), "cat %s/usr/local/lib/systemd/system/pinpool.service", tmp);
    cr_expect(strstr(out, "ExecStart=/usr/local/bin/pinpool serve") != NULL, "%s", out);
    cr_expect(strstr(out, "LimitMEMLOCK=infinity") != NULL, "%s", out);
    cr_expect(strstr(out, "RuntimeDirectory=pinpool") != NULL, "%s", out);
    cr_expect(strstr(out, "@BINDIR@") == NULL && strstr(out, "@PREFIX@") == NULL,
              "a template field was left: %s", out);

    /* pkg-config alone finds everything; the library's own deps come along. */
    rc = run(out, sizeof(out),
             "PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=%s/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=%s "
             "pkg-config --modversion --cflags --libs pinpool", tmp, tmp);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, PINPOOL_VERSION_STRING) != NULL, "%s", out);
    snprintf(path, sizeof(path), "%s/prog.c", tmp);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(prog, f);
    fclose(f);
    rc = run(out, sizeof(out),
             "cd %s && PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=%s/usr/local/lib/pkgconfig "
             "PKG_CONFIG_SYSROOT_DIR=%s cc %s -Wall -Werror -o prog prog.c "
             "$(PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=%s/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=%s "
             "pkg-config --cflags --libs pinpool)",
             tmp, tmp, tmp, flags, tmp, tmp);
    cr_assert_eq(rc, 0, "compiling against the installed tree failed:\n%s", out);

    /* The installed daemon serves the installed library. */
    test_daemon_t d;
    snprintf(path, sizeof(path), "%s/usr/local/bin/pinpool", tmp);
    setenv("PINPOOL_BIN", path, 1);
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "16MiB", "--chunk-size", "16MiB", NULL), 0);
    rc = run(out, sizeof(out), "LD_LIBRARY_PATH=%s/usr/local/lib %s/prog %s", tmp, tmp, d.socket);
    int stop = test_daemon_stop(&d);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "version " PINPOOL_VERSION_STRING " 3.00 MiB") != NULL, "%s", out);
    cr_expect(strstr(out, "alloc+free ok") != NULL, "%s", out);
    cr_expect(strstr(out, "error -1005 PINPOOL_ENOSPC: no free extent is large enough") != NULL,
              "the error list and its functions come with the installed header and library: %s",
              out);
    cr_expect_eq(stop, 0);
    run(out, sizeof(out), "rm -rf %s", tmp);
}
