/*
 * test_manifest_format.c - the tensor manifest format (client/manifest.c) with
 * no daemon: a manifest written here from pinpool.h's description (not with
 * the library's encoder) parses to its fields; each broken field is refused
 * with a message that names it; random and corrupted manifests (with the
 * checksum and content hash mended, so that the checks behind them are
 * reached) never crash the parser and are never accepted with a tensor outside
 * its segment.  The manifests in the daemon: tests/test_manifest.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pinpool.h"

/* ---- a manifest written from pinpool.h's description ---------------------------------- */

static void w32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void w64(uint8_t *p, uint64_t v)
{
    w32(p, (uint32_t)v);
    w32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define HDR 96
#define SEG 64
#define TEN 176

/* The content hash as pinpool.h defines it, over the tensor records in buf. */
static uint64_t spec_content_hash(const uint8_t *buf, size_t len)
{
    uint32_t nseg = g32(buf + 40), nt = g32(buf + 44), nstr = g32(buf + 48);
    const uint8_t *t = buf + HDR + (size_t)SEG * nseg, *strs = t + (size_t)TEN * nt;
    XXH3_state_t *st = XXH3_createState();

    XXH3_64bits_reset(st);
    for (uint32_t i = 0; i < nt; i++, t += TEN) {
        uint32_t off = g32(t), n = g32(t + 4), ndim = g32(t + 12);
        uint8_t rec[8 + 16 * 8 + 8];
        size_t k = 0;
        if (off > nstr || n > nstr - off || ndim > 8 || (size_t)(strs - buf) + nstr > len)
            break; /* a broken record: whatever hash, the parser refuses it elsewhere */
        w32(rec + k, g32(t + 8)), k += 4;
        w32(rec + k, ndim), k += 4;
        for (uint32_t d = 0; d < ndim; d++) {
            memcpy(rec + k, t + 40 + 8 * d, 8), k += 8;
            memcpy(rec + k, t + 104 + 8 * d, 8), k += 8;
        }
        memcpy(rec + k, t + 168, 8), k += 8;
        uint8_t l[4];
        w32(l, n);
        XXH3_64bits_update(st, l, 4);
        XXH3_64bits_update(st, strs + off, n);
        XXH3_64bits_update(st, rec, k);
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* Mend the content hash (when mend_content) and the checksum of buf. */
static void mend(uint8_t *buf, size_t len, bool mend_content)
{
    if (len < HDR)
        return;
    uint32_t nseg = g32(buf + 40), nt = g32(buf + 44);
    if (mend_content && nseg <= 4096 && nt <= (1u << 20) &&
        HDR + (uint64_t)SEG * nseg + (uint64_t)TEN * nt + g32(buf + 48) == len)
        w64(buf + 72, spec_content_hash(buf, len));
    w64(buf + 80, 0);
    w64(buf + 80, XXH3_64bits(buf, len));
}

/* "demo" v3: segment 0 of 4096 bytes; "a" F32 [4,8] at 0 (128 bytes), "bias"
 * BF16 [3] at 256 (stride 2: 10 bytes), "s" I64 scalar at 512. */
static size_t spec_manifest(uint8_t *buf)
{
    static const char *names[] = {"a", "bias", "s"};
    const char *name = "demo", *meta = "{\"k\":1}";
    uint32_t nstr = 4 + 7 + 1 + 4 + 1;
    size_t len = HDR + SEG + 3 * TEN + nstr;
    uint8_t *p;

    memset(buf, 0, len);
    memcpy(buf, "PPWMANIF", 8);
    w32(buf + 8, 1);
    w32(buf + 12, HDR);
    w64(buf + 16, len);
    w64(buf + 24, 3);
    w64(buf + 32, 1700000000000000000ull);
    w32(buf + 40, 1);
    w32(buf + 44, 3);
    w32(buf + 48, nstr);
    w32(buf + 52, 4);
    w32(buf + 56, 7);
    w32(buf + 60, (uint32_t)-1);
    w32(buf + 64, 1);
    w32(buf + 68, 1);
    p = buf + HDR;
    w64(p, 4096);
    memcpy(p + 16, "wt:0123456789abcdef.3.0", 23);
    uint8_t *strs = buf + HDR + SEG + 3 * TEN;
    memcpy(strs, name, 4);
    memcpy(strs + 4, meta, 7);
    uint32_t at = 11;
    struct { int dtype; uint32_t ndim; int64_t shape[2], strides[2]; uint64_t off, nbytes; } t[3] = {
        {PINPOOL_DTYPE_F32, 2, {4, 8}, {8, 1}, 0, 128},
        {PINPOOL_DTYPE_BF16, 1, {3, 0}, {2, 0}, 256, 10},
        {PINPOOL_DTYPE_I64, 0, {0, 0}, {0, 0}, 512, 8},
    };
    p = buf + HDR + SEG;
    for (int i = 0; i < 3; i++, p += TEN) {
        size_t n = strlen(names[i]);
        memcpy(strs + at, names[i], n);
        w32(p, at);
        w32(p + 4, (uint32_t)n);
        at += (uint32_t)n;
        w32(p + 8, (uint32_t)t[i].dtype);
        w32(p + 12, t[i].ndim);
        w64(p + 24, t[i].off);
        w64(p + 32, t[i].nbytes);
        for (uint32_t d = 0; d < t[i].ndim; d++) {
            w64(p + 40 + 8 * d, (uint64_t)t[i].shape[d]);
            w64(p + 104 + 8 * d, (uint64_t)t[i].strides[d]);
        }
        w64(p + 168, 0x1111111111111111ull * (uint64_t)(i + 1));
    }
    mend(buf, len, true);
    return len;
}

TestSuite(manifest_format, .timeout = 120);

Test(manifest_format, dtypes)
{
    cr_expect_str_eq(pinpool_dtype_name(PINPOOL_DTYPE_BF16), "BF16");
    cr_expect_eq(pinpool_dtype_size(PINPOOL_DTYPE_BF16), 2);
    cr_expect_eq(pinpool_dtype_size(PINPOOL_DTYPE_F64), 8);
    cr_expect_eq(pinpool_dtype_size(PINPOOL_DTYPE_F8_E4M3), 1);
    cr_expect_eq(pinpool_dtype_from_name("F8_E5M2"), PINPOOL_DTYPE_F8_E5M2);
    cr_expect_eq(pinpool_dtype_from_name("bf16"), 0, "names are safetensors', case as written");
    cr_expect_null(pinpool_dtype_name(0));
    cr_expect_null(pinpool_dtype_name(99));
    cr_expect_eq(pinpool_dtype_size(-3), 0);
    for (int d = PINPOOL_DTYPE_BOOL; d <= PINPOOL_DTYPE_F8_E5M2; d++)
        cr_expect_eq(pinpool_dtype_from_name(pinpool_dtype_name(d)), d);
}

Test(manifest_format, a_manifest_written_from_the_header_parses)
{
    uint8_t buf[2048];
    size_t len = spec_manifest(buf);
    pinpool_manifest_t *m = NULL;
    pinpool_manifest_info_t info;
    pinpool_tensor_t t;
    char err[256];
    uint32_t i;

    cr_assert_eq(pinpool_manifest_parse(buf, len, &m, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(pinpool_manifest_info(m, &info), 0);
    cr_expect_str_eq(info.name, "demo");
    cr_expect_eq(info.version, 3);
    cr_expect_eq(info.device_id, PINPOOL_HOST);
    cr_expect_eq(info.placement, PINPOOL_MANIFEST_KEPT);
    cr_expect_eq(info.num_tensors, 3);
    cr_expect_eq(info.num_segments, 1);
    cr_expect_eq(info.data_bytes, 4096);
    cr_expect_eq(info.manifest_bytes, len);
    cr_expect_eq(info.metadata_len, 7);
    cr_expect(memcmp(info.metadata, "{\"k\":1}", 7) == 0);
    cr_expect_eq(info.attached_device, -2);
    cr_assert_eq(pinpool_manifest_find(m, "bias", &i), 0);
    cr_assert_eq(pinpool_manifest_tensor(m, i, &t), 0);
    cr_expect_str_eq(t.name, "bias");
    cr_expect_eq(t.dtype, PINPOOL_DTYPE_BF16);
    cr_expect(t.ndim == 1 && t.shape[0] == 3 && t.strides[0] == 2 && t.offset == 256 && t.nbytes == 10);
    cr_expect_null(t.ptr, "not attached");
    cr_expect_eq(pinpool_manifest_find(m, "bia", NULL), PINPOOL_ENOENT);
    cr_expect_eq(pinpool_manifest_find(m, "biass", NULL), PINPOOL_ENOENT);
    cr_expect_eq(pinpool_manifest_find(m, "s", &i), 0);
    cr_expect_eq(pinpool_manifest_tensor(m, 3, &t), PINPOOL_EINVAL);
    cr_expect_eq(pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_EINVAL, "parsed: not attachable");
    const void *b;
    size_t n;
    cr_expect_eq(pinpool_manifest_bytes(m, &b, &n), 0);
    cr_expect(n == len && memcmp(b, buf, len) == 0);
    pinpool_manifest_close(m);
}

/* One broken field: set the bytes, mend (or not), expect the refusal. */
typedef struct breakage {
    const char *what;
    size_t at;     /* byte offset; ~0: the length changes instead */
    int width;     /* 1, 4, 8 */
    uint64_t value;
    bool keep_checksum;
    const char *needle;
} breakage_t;

#define T0 (HDR + SEG)        /* the first tensor record */
#define T1 (HDR + SEG + TEN)  /* the second */

static const breakage_t breakages[] = {
    {"magic", 0, 1, 'Q', false, "not a pinpool manifest"},
    {"format 2", 8, 4, 2, false, "a newer pinpool wrote it"},
    {"header bytes", 12, 4, 100, false, "format 1's is 96"},
    {"total", 16, 8, 4096, false, "were read"},
    {"checksum", HDR + SEG + 3 * TEN + 6, 1, 'X', true, "checksum does not match"},
    {"version 0", 24, 8, 0, false, "version 0"},
    {"segments", 40, 4, 2, false, "make"},
    {"too many segments", 40, 4, 5000, false, "at most 4096"},
    {"too many tensors", 44, 4, 2000000, false, "at most"},
    {"strings", 48, 4, 1000, false, "make"},
    {"name length", 52, 4, 0, false, "its name is 0 bytes"},
    {"name past strings", 52, 4, 300, false, "its name is 300 bytes"},
    {"metadata", 56, 4, 100, false, "do not fit"},
    {"device", 60, 4, 5000, false, "device 5000"},
    {"placement", 64, 4, 7, false, "placement 7"},
    {"released on a GPU", 60, 4, 0, false, NULL}, /* device 0 is fine while kept... */
    {"hash algorithm", 68, 4, 9, false, "hash 9"},
    {"reserved", 88, 8, 1, false, "reserved header bytes"},
    {"segment size 0", HDR, 8, 0, false, "is 0 bytes"},
    {"segment reserved", HDR + 8, 8, 5, false, "reserved bytes are not 0"},
    {"segment key empty", HDR + 16, 1, 0, false, "its key is empty"},
    {"segment key bytes", HDR + 16, 1, ' ', false, "not printable"},
    {"tensor name length", T0 + 4, 4, 0, false, "its name is 0 bytes"},
    {"tensor name offset", T0, 4, 999, false, "lies outside"},
    {"tensor name over the manifest name", T0, 4, 0, false, "lies outside"},
    {"dtype", T0 + 8, 4, 99, false, "unknown dtype 99"},
    {"ndim", T0 + 12, 4, 9, false, "9 dimensions"},
    {"tensor flags", T0 + 20, 4, 1, false, "flags 0x1"},
    {"unused dimension", T0 + 40 + 8 * 5, 8, 3, false, "is past its"},
    {"negative shape", T0 + 40, 8, (uint64_t)-4, false, "must be >= 0"},
    {"shape past its bytes", T0 + 40, 8, 5, false, "more than its 128"},
    {"overflowing shape", T0 + 40, 8, 1ull << 62, false, "overflow 64 bits"},
    {"segment index", T0 + 16, 4, 1, false, "segment 1 of 1"},
    {"bytes outside the segment", T0 + 24, 8, 4000, false, "lie outside segment 0"},
    {"huge offset", T0 + 24, 8, UINT64_MAX - 8, false, "lie outside segment 0"},
    {"misaligned offset", T1 + 24, 8, 257, false, "not a multiple"},
    {"duplicate name", T1 + 4, 4, 1, false, "two tensors are named 'b'"},
    {"hash", T1 + 168, 8, 5, true, "content hash does not match"},
};

Test(manifest_format, each_broken_field_is_refused_with_a_reason)
{
    uint8_t base[2048], buf[2048];
    size_t len = spec_manifest(base);
    char err[256];

    for (size_t k = 0; k < sizeof(breakages) / sizeof(breakages[0]); k++) {
        const breakage_t *b = &breakages[k];
        pinpool_manifest_t *m = NULL;
        memcpy(buf, base, len);
        if (b->width == 1)
            buf[b->at] = (uint8_t)b->value;
        else if (b->width == 4)
            w32(buf + b->at, (uint32_t)b->value);
        else
            w64(buf + b->at, b->value);
        if (strcmp(b->what, "released on a GPU") == 0)
            w32(buf + 64, 2);
        if (strcmp(b->what, "duplicate name") == 0) /* "bias" -> "b", and "a" -> "b" too */
            buf[HDR + SEG + 3 * TEN + 11] = 'b';
        if (strcmp(b->what, "hash") == 0) /* mend only the checksum: the content hash is stale */
            mend(buf, len, false);
        else if (!b->keep_checksum)
            mend(buf, len, true);
        int rc = pinpool_manifest_parse(buf, len, &m, err, sizeof(err));
        cr_expect_eq(rc, -EBADMSG, "%s: parse returned %d (%s)", b->what, rc, err);
        const char *needle = b->needle != NULL ? b->needle : "released segments on GPU 0";
        cr_expect(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", b->what, err, needle);
        cr_expect_null(m, "%s: *out set on failure", b->what);
    }
    cr_expect_eq(pinpool_manifest_parse(base, 95, NULL, err, sizeof(err)), PINPOOL_EINVAL);
    pinpool_manifest_t *m = NULL;
    cr_expect_eq(pinpool_manifest_parse(base, 95, &m, err, sizeof(err)), -EBADMSG);
    cr_expect(strstr(err, "at least 96 bytes") != NULL, "%s", err);
    cr_expect_eq(pinpool_manifest_parse(NULL, 0, &m, NULL, 0), -EBADMSG, "no error buffer: no crash");
    cr_expect_eq(pinpool_manifest_parse(base, len - 1, &m, err, sizeof(err)), -EBADMSG);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* What an accepted manifest must promise: every tensor inside its segment. */
static void check_accepted(pinpool_manifest_t *m)
{
    pinpool_manifest_info_t info;
    cr_assert_eq(pinpool_manifest_info(m, &info), 0);
    for (uint32_t i = 0; i < info.num_tensors; i++) {
        pinpool_tensor_t t;
        uint32_t j;
        cr_assert_eq(pinpool_manifest_tensor(m, i, &t), 0);
        cr_assert(t.nbytes == 0 || t.segment < info.num_segments);
        cr_assert_eq(pinpool_manifest_find(m, t.name, &j), 0, "'%s' not found by name", t.name);
        cr_assert_eq(j, i);
        cr_assert(t.offset % (uint64_t)pinpool_dtype_size(t.dtype) == 0);
    }
}

Test(manifest_format, random_and_corrupt_manifests_never_crash_the_parser, .timeout = 120)
{
    uint8_t base[2048], buf[4096];
    size_t len = spec_manifest(base);
    static const uint64_t interesting[] = {0, 1, 2, 7, 8, 96, 255, 256, 4095, 4096, 65535,
                                           1u << 20, UINT32_MAX, UINT32_MAX - 1, 1ull << 31,
                                           1ull << 32, 1ull << 63, UINT64_MAX, UINT64_MAX - 7};
    int accepted = 0, refused = 0;
    char err[256];

    for (int it = 0; it < 60000; it++) {
        size_t n = len;
        memcpy(buf, base, len);
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = (size_t)(rnd() % n);
            switch (rnd() % 6) {
            case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: buf[at] = (uint8_t)rnd(); break;
            case 2: /* a field-aligned 32-bit value */
                at &= ~(size_t)3;
                if (at + 4 <= n)
                    w32(buf + at, (uint32_t)interesting[rnd() % 19]);
                break;
            case 3:
                at &= ~(size_t)7;
                if (at + 8 <= n)
                    w64(buf + at, interesting[rnd() % 19]);
                break;
            case 4: n = (size_t)(rnd() % (len + 64)); break; /* truncated or extended */
            default: w64(buf + 16, n); break;                /* the length kept honest */
            }
            if (n > sizeof(buf))
                n = sizeof(buf);
        }
        if (rnd() % 4 != 0)
            mend(buf, n, rnd() % 2 == 0); /* reach the checks behind the checksum */
        pinpool_manifest_t *m = NULL;
        int rc = pinpool_manifest_parse(buf, n, &m, err, sizeof(err));
        cr_assert(rc == 0 || rc == -EBADMSG, "iteration %d: %d", it, rc);
        if (rc == 0) {
            check_accepted(m);
            pinpool_manifest_close(m);
            accepted++;
        } else {
            cr_assert(err[0] != '\0', "a refusal without a reason");
            cr_assert_null(m);
            refused++;
        }
    }
    for (int it = 0; it < 5000; it++) { /* bytes that only start right */
        size_t n = HDR + (size_t)(rnd() % 2000);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rnd();
        memcpy(buf, "PPWMANIF", 8);
        w32(buf + 8, 1);
        w32(buf + 12, HDR);
        w64(buf + 16, n);
        mend(buf, n, true);
        pinpool_manifest_t *m = NULL;
        int rc = pinpool_manifest_parse(buf, n, &m, err, sizeof(err));
        cr_assert(rc == 0 || rc == -EBADMSG);
        if (rc == 0) {
            check_accepted(m);
            pinpool_manifest_close(m);
        }
    }
    cr_log_info("fuzz: %d accepted, %d refused", accepted, refused);
    cr_expect_gt(refused, 1000);
    cr_expect_gt(accepted, 100, "some mutations are harmless (hash bytes, metadata)");
}
