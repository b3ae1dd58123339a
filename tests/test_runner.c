/*
 * test_runner.c - tests/run itself: the counts, the skipped tests it lists,
 * its total lines, and that it fails when a suite runs no test or a test's
 * teardown check fails (which Criterion 2.4 alone counts as passed).  It runs
 * tests/run (from the repository root, where make test runs) over
 * $PINPOOL_BUILD/tests/fixtures/suites (tests/fixtures/suites.c: passing,
 * skipping and failing tests chosen by the environment) and over two fake
 * binaries written here: one that reports no test, one that reports nothing.
 * Owns: a temp directory per test for the fakes.  Never runs a real suite.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

static char fixture[512];
static char out[64 * 1024];

static void setup(void)
{
    const char *build = getenv("PINPOOL_BUILD");

    snprintf(fixture, sizeof(fixture), "%s/tests/fixtures/suites", build != NULL ? build : "build");
    cr_assert_eq(access(fixture, X_OK), 0, "%s is not built (make test builds it)", fixture);
    cr_assert_eq(access("tests/run", X_OK), 0, "run from the repository root");
    /* BoxFort (Criterion's sandbox) tells a test process so by this variable;
     * a Criterion binary started with it aborts. */
    unsetenv("BXFI_MAP");
    unsetenv("FIXTURE_GPU");
    unsetenv("FIXTURE_FAIL");
    unsetenv("FIXTURE_TEARDOWN_FAIL");
}

TestSuite(runner, .init = setup, .timeout = 60);

/* tests/run with the arguments that fmt formats; its stdout and stderr in
 * out[]; returns its exit status. */
__attribute__((format(printf, 1, 2))) static int run(const char *fmt, ...)
{
    char args[1200], cmd[1400];
    size_t n = 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "tests/run %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    while (n < sizeof(out) - 1) {
        size_t got = fread(out + n, 1, sizeof(out) - 1 - n, p);
        if (got == 0)
            break;
        n += got;
    }
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "tests/run did not exit: %d", st);
    return WEXITSTATUS(st);
}

static const char *last_line(void)
{
    static char line[256];
    size_t n = strlen(out);

    while (n > 0 && out[n - 1] == '\n')
        n--;
    size_t start = n;
    while (start > 0 && out[start - 1] != '\n')
        start--;
    snprintf(line, sizeof(line), "%.*s", (int)(n - start), out + start);
    return line;
}

#define EXPECT_OUT(s) cr_expect(strstr(out, s) != NULL, "no \"%s\" in:\n%s", s, out)

Test(runner, counts_skipped_tests_and_lists_them)
{
    setenv("FIXTURE_GPU", "1", 1);
    cr_expect_eq(run("%s", fixture), 0, "%s", out);
    EXPECT_OUT("suites: 5 passed, 1 skipped, 0 failed");
    EXPECT_OUT("skipped: basic::skips: skipped on purpose");
    EXPECT_OUT("| Skipped: 1 ");
    cr_expect_str_eq(last_line(), "5 passed, 0 failed");
}

Test(runner, fails_when_every_test_of_a_suite_skips)
{
    cr_expect_eq(run("%s", fixture), 1, "%s", out);
    EXPECT_OUT("suites: 3 passed, 3 skipped, 0 failed");
    EXPECT_OUT("skipped: gpu::first: no GPU here");
    EXPECT_OUT("FAIL: gpu ran no test");
    cr_expect(strstr(out, "FAIL: basic") == NULL, "basic ran a test:\n%s", out);
    cr_expect_str_eq(last_line(), "3 passed, 0 failed");
}

Test(runner, a_suite_declared_may_skip_passes_with_its_reason)
{
    cr_expect_eq(run("--may-skip 'gpu=no GPU on this machine' %s", fixture), 0, "%s", out);
    EXPECT_OUT("gpu ran no test, allowed: no GPU on this machine");
    EXPECT_OUT("| Skipped: 3 ");
    /* Declaring another suite does not excuse this one. */
    cr_expect_eq(run("--may-skip 'basic=reason' %s", fixture), 1, "%s", out);
    EXPECT_OUT("FAIL: gpu ran no test");
}

Test(runner, a_failed_test_fails_the_run)
{
    setenv("FIXTURE_GPU", "1", 1);
    setenv("FIXTURE_FAIL", "1", 1);
    cr_expect_eq(run("%s %s", fixture, fixture), 1, "%s", out);
    EXPECT_OUT("suites: 4 passed, 1 skipped, 1 failed");
    EXPECT_OUT("| Skipped: 2 ");
    cr_expect_str_eq(last_line(), "8 passed, 2 failed");
}

/* Criterion 2.4 counts a test whose .fini failed as passed; tests/run does not. */
Test(runner, a_failed_teardown_fails_the_run)
{
    setenv("FIXTURE_GPU", "1", 1);
    setenv("FIXTURE_TEARDOWN_FAIL", "1", 1);
    cr_expect_eq(run("%s", fixture), 1, "%s", out);
    EXPECT_OUT("FAIL: teardown::passes_then_its_fini_checks failed in its setup or teardown");
    EXPECT_OUT("suites: 4 passed, 1 skipped, 1 failed");
    cr_expect_str_eq(last_line(), "4 passed, 1 failed");
}

/* A fake binary in a temp dir: a shell script with body. */
static void fake(char *path, size_t len, const char *dir, const char *name, const char *body)
{
    snprintf(path, len, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    cr_assert_eq(chmod(path, 0755), 0);
}

Test(runner, a_binary_with_no_test_or_no_report_fails)
{
    char dir[] = "/tmp/pinpool-runner-XXXXXX", empty[128], silent[128];

    cr_assert_not_null(mkdtemp(dir));
    /* What a Criterion 2.4 binary without a test prints and writes. */
    fake(empty, sizeof(empty), dir, "empty",
         "for a; do case $a in --tap=*) printf 'TAP version 13\\n1..0\\n# Criterion v2.4.1\\n' >\"${a#--tap=}\";; esac; done\n"
         "echo '[====] Synthesis: Tested: 0 | Passing: 0 | Failing: 0 | Crashing: 0 ' >&2");
    fake(silent, sizeof(silent), dir, "silent", "exit 0");
    cr_expect_eq(run("%s", empty), 1, "%s", out);
    EXPECT_OUT("empty: 0 passed, 0 skipped, 0 failed");
    EXPECT_OUT("FAIL: empty ran no test");
    cr_expect_eq(run("--may-skip 'empty=nothing to test' %s", empty), 0, "%s", out);
    cr_expect_eq(run("%s", silent), 1, "%s", out);
    EXPECT_OUT("silent: no Criterion summary or TAP report (exit 0)");
    unlink(empty);
    unlink(silent);
    rmdir(dir);
}
