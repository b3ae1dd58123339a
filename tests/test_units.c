/*
 * test_units.c - pool_parse_size and pool_format_size, table driven.
 *
 * Owns: nothing beyond its tables.  Never: touches a pool.  Locking: none.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <string.h>

#include "pinpool.h"
#include "pool.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

static const struct parse_case {
    const char *text;
    uint64_t want;
} good[] = {
    {"0", 0},
    {"1", 1},
    {"1048576", 1048576},
    {"18446744073709551615", UINT64_MAX},
    {"007", 7},
    {"100B", 100},
    {"100 B", 100},
    {"100b", 100},
    {"4k", 4 * KiB},
    {"4K", 4 * KiB},
    {"4KiB", 4 * KiB},
    {"4kib", 4 * KiB},
    {"4Ki", 4 * KiB},
    {"4 KiB", 4 * KiB},
    {"4kB", 4000},
    {"4KB", 4000},
    {"4kb", 4000},
    {"512MB", 512000000ull},
    {"512 MB", 512000000ull},
    {"512M", 512 * MiB},
    {"512MiB", 512 * MiB},
    {"140GB", 140000000000ull},
    {"140gb", 140000000000ull},
    {"140 GB", 140000000000ull},
    {"64GiB", 64 * GiB},
    {"64gib", 64 * GiB},
    {"64G", 64 * GiB},
    {"64g", 64 * GiB},
    {"3TiB", 3 * TiB},
    {"3T", 3 * TiB},
    {"2TB", 2000000000000ull},
    {"1.5GiB", 3 * GiB / 2},
    {"1.5 GiB", 3 * GiB / 2},
    {"1.50 GiB", 3 * GiB / 2},
    {"0.5k", 512},
    {"1.5", 1},                 /* fractions of a byte round down */
    {"2.999B", 2},
    {"1.3333K", 1365},          /* 1365.2992 */
    {"0.001KiB", 1},            /* 1.024 */
    {"0.0009KiB", 0},           /* 0.9216 */
    {"1.000000000000000000000000001T", TiB}, /* long fraction: exact */
    {"0.0000000000009094947017729282379150390625T", 1}, /* exactly 2^-40 T */
    {"16777215.99999999T", 16777216 * TiB - 10996}, /* 2^64 - 10995.1 */
};

Test(units, parse_good, .timeout = 10)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t got = 42;

        cr_expect_eq(pool_parse_size(good[i].text, &got), 0, "'%s' rejected", good[i].text);
        cr_expect_eq(got, good[i].want, "'%s' -> %" PRIu64 ", want %" PRIu64, good[i].text,
                     got, good[i].want);
    }
}

static const char *const bad[] = {
    "",
    " ",
    " 1",
    "1 ",
    "1  KiB",       /* two spaces */
    "1\tKiB",
    "-1",
    "+1",
    "-0",
    "abc",
    "KiB",
    ".5K",
    "1.",
    "1.K",
    "1..5K",
    "1.5.5K",
    "1,5K",
    "1e3",
    "0x10",
    "12abc",
    "12 abc",
    "12KiBs",
    "12KiB ",
    "12 KiB junk",
    "12iB",
    "12P",          /* not a documented unit */
    "12kk",
    "18446744073709551616",   /* 2^64 */
    "99999999999999999999999",
    "16777216T",              /* 2^64 */
    "16777216TiB",
    "18446744073709551615.9K",
    "18446744073709551615k",
    "18446744073.709551616GB", /* 2^64 */
    "18446744073.709551616G",
};

Test(units, parse_bad, .timeout = 10)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t got = 42;

        cr_expect_eq(pool_parse_size(bad[i], &got), PINPOOL_EINVAL, "'%s' accepted", bad[i]);
        cr_expect_eq(got, 42, "'%s' wrote *out on error", bad[i]);
    }
}

Test(units, parse_edges, .timeout = 10)
{
    uint64_t got = 42;

    cr_expect_eq(pool_parse_size(NULL, &got), PINPOOL_EINVAL);
    cr_expect_eq(pool_parse_size("1K", NULL), PINPOOL_EINVAL);
    /* the largest value that still fits, with a suffix and a fraction */
    cr_expect_eq(pool_parse_size("18446744073709551.615kB", &got), 0);
    cr_expect_eq(got, UINT64_MAX);
    cr_expect_eq(pool_parse_size("16777215.999999999999T", &got), 0);
    cr_expect_eq(got, UINT64_MAX - 1); /* 2^64 - 1.0995 */
    cr_expect_eq(pool_parse_size("18446744073.709551615GB", &got), 0);
    cr_expect_eq(got, UINT64_MAX);
    cr_expect_eq(pool_parse_size("18446744073.709551616GB", &got), PINPOOL_EINVAL);
}

static const struct format_case {
    uint64_t bytes;
    const char *want;
} fmt[] = {
    {0, "0 B"},
    {1, "1 B"},
    {100, "100 B"},
    {1023, "1023 B"},
    {1024, "1.00 KiB"},
    {1536, "1.50 KiB"},
    {1025, "1.00 KiB"},
    {1029, "1.00 KiB"},          /* 1.0049 */
    {1030, "1.01 KiB"},          /* 1.0059 */
    {MiB - 1, "1.00 MiB"},       /* 1023.999 KiB rounds up a unit */
    {MiB - 6, "1023.99 KiB"},    /* 1023.994 */
    {512 * MiB, "512.00 MiB"},
    {3 * GiB / 2, "1.50 GiB"},
    {64 * GiB, "64.00 GiB"},
    {140000000000ull, "130.39 GiB"},
    {3 * TiB, "3.00 TiB"},
    {1ull << 50, "1024.00 TiB"}, /* TiB is the largest unit */
    {UINT64_MAX, "16777216.00 TiB"},
};

Test(units, format, .timeout = 10)
{
    for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
        char buf[32];

        cr_expect_eq(pool_format_size(fmt[i].bytes, buf, sizeof(buf)), buf);
        cr_expect_str_eq(buf, fmt[i].want, "%" PRIu64 " -> '%s', want '%s'", fmt[i].bytes,
                         buf, fmt[i].want);
    }
}

Test(units, format_small_buffer, .timeout = 10)
{
    char buf[6];

    memset(buf, 'x', sizeof(buf));
    pool_format_size(3 * GiB / 2, buf, sizeof(buf));
    cr_expect_str_eq(buf, "1.50 ");
    cr_expect_null(pool_format_size(1, NULL, 10));
}

/* What pool_format_size writes, pool_parse_size reads back (to 1/100 unit). */
Test(units, round_trip, .timeout = 10)
{
    static const uint64_t sizes[] = {1, 1000, 1024, 4096, 3 * MiB / 2, 512 * MiB, 64 * GiB,
                                     3 * TiB};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char buf[32];
        uint64_t got;

        pool_format_size(sizes[i], buf, sizeof(buf));
        cr_expect_eq(pool_parse_size(buf, &got), 0, "'%s' rejected", buf);
        cr_expect_eq(got, sizes[i], "'%s' -> %" PRIu64, buf, got);
    }
}
