/*
 * units.c - sizes in human units: pool_parse_size and pool_format_size.
 *
 * Owns: the one table of size suffixes that the CLI, the config and the
 * client library (pinpool_parse_size) accept.
 * Never: allocates, uses floating point (every result is exact), or touches
 * any state besides its arguments; *out is left alone on error.
 * Locking: none needed; both functions are pure.
 */
#include "pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

#include "pinpool_errors.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

/*
 * Suffixes, matched case-insensitively.  Decimal ones end in "B" after the
 * prefix (kB, MB, GB, TB); binary ones are the bare letter, the letter + "i",
 * or the IEC name (K, Ki, KiB).  So "gb" is 10^9 and "g" is 2^30.
 */
static const struct unit {
    const char *name;
    uint64_t mult;
} units[] = {
    {"", 1}, {"b", 1},
    {"k", KiB}, {"ki", KiB}, {"kib", KiB}, {"kb", 1000ull},
    {"m", MiB}, {"mi", MiB}, {"mib", MiB}, {"mb", 1000000ull},
    {"g", GiB}, {"gi", GiB}, {"gib", GiB}, {"gb", 1000000000ull},
    {"t", TiB}, {"ti", TiB}, {"tib", TiB}, {"tb", 1000000000000ull},
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * floor(0.<digits> * mult) for the n digits at frac, exactly: from the last
 * digit to the first, carry = floor((d * mult + carry) / 10).  That equals
 * floor((d * mult + x) / 10) for the real tail x because d * mult is whole.
 * mult <= 2^40, so nothing overflows.
 */
static uint64_t frac_times(const char *frac, size_t n, uint64_t mult)
{
    uint64_t carry = 0;

    while (n-- > 0)
        carry = ((uint64_t)(frac[n] - '0') * mult + carry) / 10;
    return carry;
}

int pool_parse_size(const char *text, uint64_t *out)
{
    const char *p = text, *frac = NULL;
    const struct unit *u = NULL;
    uint64_t whole = 0, total;
    size_t nfrac = 0, i;

    if (text == NULL || out == NULL || !is_digit(*p))
        return PINPOOL_EINVAL;
    for (; is_digit(*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');

        if (whole > (UINT64_MAX - d) / 10)
            return PINPOOL_EINVAL;
        whole = whole * 10 + d;
    }
    if (*p == '.') {
        frac = ++p;
        while (is_digit(*p))
            p++;
        nfrac = (size_t)(p - frac);
        if (nfrac == 0)
            return PINPOOL_EINVAL; /* "1." */
    }
    if (*p == ' ') {
        p++;
        if (*p == '\0')
            return PINPOOL_EINVAL; /* a space must lead to a unit */
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].name) == 0) {
            u = &units[i];
            break;
        }
    }
    if (u == NULL)
        return PINPOOL_EINVAL;

    if (whole > UINT64_MAX / u->mult)
        return PINPOOL_EINVAL;
    total = whole * u->mult;
    if (frac != NULL) {
        uint64_t part = frac_times(frac, nfrac, u->mult);

        if (part > UINT64_MAX - total)
            return PINPOOL_EINVAL;
        total += part;
    }
    *out = total;
    return 0;
}

/*
 * bytes < 1024: "N B"; else two decimals in the largest binary unit that
 * keeps the number >= 1, rounded half up ("1.50 GiB"), moving to the next
 * unit when the rounding reaches 1024.00.  Exact integer arithmetic.
 */
char *pool_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const names[] = {"KiB", "MiB", "GiB", "TiB"};
    unsigned k, shift;
    uint64_t whole, hundredths;

    if (buf == NULL || len == 0)
        return buf;
    if (bytes < KiB) {
        snprintf(buf, len, "%" PRIu64 " B", bytes);
        return buf;
    }
    for (k = 0; k + 1 < 4 && bytes >= (KiB << (10 * (k + 1))); k++)
        ;
    for (;;) {
        shift = 10 * (k + 1);
        whole = bytes >> shift;
        /* the remainder is < 2^40, so remainder * 100 fits */
        hundredths = ((bytes & ((1ull << shift) - 1)) * 100 + (1ull << (shift - 1))) >> shift;
        if (hundredths == 100) {
            whole++;
            hundredths = 0;
        }
        if (whole < 1024 || k + 1 == 4)
            break;
        k++;
    }
    snprintf(buf, len, "%" PRIu64 ".%02" PRIu64 " %s", whole, hundredths, names[k]);
    return buf;
}
