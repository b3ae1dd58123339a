/*
 * test_manifest.c - tensor manifests (client/manifest.c, client/manifest_store.c).
 *
 * manifest_format: the format as pinpool.h documents it, written here from
 * the document (not with the library's encoder): a valid manifest parses to
 * its fields; each broken field is refused with a message that names it;
 * random and corrupted manifests (with checksum and content hash mended, so
 * that the checks behind them are reached) never crash the parser and are
 * never accepted with a tensor outside its segment.
 * manifest: against the real daemon (memfd host pool): publish, open, find,
 * attach and verify; versions, a reader of an old version, drop waiting for
 * its readers; the commit is atomic (a reader during a publish sees the old
 * version, a publisher killed before its commit leaves it current and its
 * slices to collect); a manifest of several parts; a spillable manifest
 * spilled and restored byte-exact, and whole after a daemon restart (a kept
 * one's attach then says its slices are gone); argument errors.
 * manifest_mock: device manifests on the stand-in driver (tests/mock/libcuda.c):
 * published by one process, attached without a copy by another, verified
 * through the host, a write through the reader's pointer found; a host
 * manifest copied to the device.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "daemon.h"
#include "mockcuda.h"
#include "pinpool.h"
#include "util.h"

#define MiB (1ull << 20)

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

/* ---- against the daemon ------------------------------------------------------------------ */

TEST_DAEMON_SUITE(manifest);

#define EXPECT_ERR(ctx, call, want, needle)                                                    \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        cr_expect_eq(rc_, (want), "%s: %s, want %s (%s)", #call, pinpool_err_name(rc_),        \
                     pinpool_err_name(want), pinpool_errmsg(ctx));                             \
        const char *nd_ = (needle);                                                            \
        if (nd_ != NULL)                                                                       \
            cr_expect(strstr(pinpool_errmsg(ctx), nd_) != NULL,                                \
                      "%s: message '%s' lacks '%s'", #call, pinpool_errmsg(ctx), nd_);         \
    } while (0)

static pinpool_tensor_desc_t desc(const char *name, int dtype, uint32_t ndim, const int64_t *shape)
{
    pinpool_tensor_desc_t td;
    memset(&td, 0, sizeof(td));
    td.name = name;
    td.dtype = dtype;
    td.ndim = ndim;
    for (uint32_t i = 0; i < ndim && i < PINPOOL_MANIFEST_MAX_DIMS; i++)
        td.shape[i] = shape[i];
    return td;
}

/* Publish name with n tensors "t<i>" of F32 [rows, 1000] filled with seed + i;
 * opts may be NULL.  Returns the version. */
static uint64_t publish(pinpool_ctx_t *ctx, const char *name, int n, int64_t rows, unsigned seed,
                        const pinpool_manifest_opts_t *opts)
{
    pinpool_publish_t *pub = NULL;
    uint64_t v = 0;
    char tn[32];

    cr_assert_eq(pinpool_manifest_begin(ctx, name, opts, &pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        int64_t shape[2] = {rows + i, 1000};
        snprintf(tn, sizeof(tn), "t%d", i);
        pinpool_tensor_desc_t td = desc(tn, PINPOOL_DTYPE_F32, 2, shape);
        cr_assert_eq(pinpool_manifest_add(pub, &td, NULL), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(pinpool_manifest_alloc(pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        pinpool_tensor_t t;
        cr_assert_eq(pinpool_manifest_dest(pub, (uint32_t)i, &t), 0);
        void *src = malloc(t.nbytes);
        test_fill(src, t.nbytes, seed + (unsigned)i);
        cr_assert_eq(pinpool_manifest_write(pub, (uint32_t)i, src, t.nbytes), 0, "%s",
                     pinpool_errmsg(ctx));
        free(src);
    }
    cr_assert_eq(pinpool_manifest_commit(pub, &v), 0, "%s", pinpool_errmsg(ctx));
    return v;
}

/* Every tensor of the attached host manifest m holds seed + i's pattern. */
static void expect_bytes(pinpool_manifest_t *m, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        pinpool_tensor_t t;
        uint32_t k;
        char tn[32];
        snprintf(tn, sizeof(tn), "t%d", i);
        cr_assert_eq(pinpool_manifest_find(m, tn, &k), 0);
        cr_assert_eq(pinpool_manifest_tensor(m, k, &t), 0);
        cr_assert_not_null(t.ptr);
        cr_expect(test_same(t.ptr, t.nbytes, seed + (unsigned)i), "tensor %s: bytes differ", tn);
        cr_expect_eq((uintptr_t)t.ptr % 256, 0, "tensor %s is not 256-byte aligned", tn);
    }
}

Test(manifest, publish_open_attach_verify_and_versions)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t opts = {.device_id = PINPOOL_HOST, .metadata = "{\"model\":\"tiny\"}"};
    uint64_t v1 = publish(ctx, "tiny/llama", 5, 100, 10, &opts);
    pinpool_manifest_t *m = NULL;
    pinpool_manifest_info_t info;
    uint64_t vs[8], cur = 0;
    uint32_t n = 0, bad = 99;

    cr_expect_eq(v1, 1);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_info(m, &info), 0);
    cr_expect_eq(info.version, 1);
    cr_expect_eq(info.num_tensors, 5);
    cr_expect_eq(info.num_segments, 1);
    cr_expect_eq(info.hash_algo, 1);
    cr_expect(info.metadata_len == 16 && memcmp(info.metadata, "{\"model\":\"tiny\"}", 16) == 0);
    EXPECT_ERR(ctx, pinpool_manifest_verify(m, NULL), PINPOOL_EINVAL, "attach");
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, 0), PINPOOL_ECUDA, NULL); /* a copy needs CUDA here */
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_EINVAL, "attached already");
    expect_bytes(m, 5, 10);
    cr_expect_eq(pinpool_manifest_verify(m, &bad), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_find(m, "nope", NULL), PINPOOL_ENOENT, "has no tensor 'nope'");

    /* The same version opened twice in one context shares the mapping. */
    pinpool_manifest_t *m2 = NULL;
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 1, &m2), 0);
    cr_assert_eq(pinpool_manifest_attach(m2, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_t a, b;
    pinpool_manifest_tensor(m, 0, &a);
    pinpool_manifest_tensor(m2, 0, &b);
    cr_expect_eq(a.ptr, b.ptr);
    pinpool_manifest_close(m2);
    expect_bytes(m, 5, 10); /* still mapped for m */

    /* A write through a reader's pointer is found by verify, naming the tensor. */
    uint32_t k;
    cr_assert_eq(pinpool_manifest_find(m, "t3", &k), 0);
    pinpool_tensor_t t3;
    pinpool_manifest_tensor(m, k, &t3);
    ((unsigned char *)t3.ptr)[7] ^= 1;
    EXPECT_ERR(ctx, pinpool_manifest_verify(m, &bad), -EBADMSG, "tensor 't3'");
    cr_expect_eq(bad, k);
    ((unsigned char *)t3.ptr)[7] ^= 1;
    pinpool_manifest_close(m);

    uint64_t v2 = publish(ctx, "tiny/llama", 3, 7, 50, NULL);
    cr_expect_eq(v2, 2);
    cr_assert_eq(pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), 0);
    cr_expect(n == 2 && vs[0] == 1 && vs[1] == 2 && cur == 2, "n %u cur %" PRIu64, n, cur);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 3, 50);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "tiny/llama", 1, &m), 0, "the old version stays");
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 5, 10);
    pinpool_manifest_close(m);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "tiny/llama", 9, &m), PINPOOL_ENOKEY,
               "no committed version 9");
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "nobody", 0, &m), PINPOOL_ENOKEY, "no manifest named");

    EXPECT_ERR(ctx, pinpool_manifest_drop(ctx, "tiny/llama", 2, 0), PINPOOL_EINVAL, "current one");
    cr_assert_eq(pinpool_manifest_drop(ctx, "tiny/llama", 1, 0), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "tiny/llama", 1, &m), PINPOOL_ENOKEY, NULL);
    cr_assert_eq(pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), 0);
    cr_expect(n == 1 && vs[0] == 2);
    cr_assert_eq(pinpool_manifest_drop(ctx, "tiny/llama", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_versions(ctx, "tiny/llama", vs, 8, &n, &cur), PINPOOL_ENOKEY, NULL);
    pinpool_pool_info_t pi;
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "drop frees every kept segment");
    cr_expect_eq(pi.spill.objects, 0, "drop removes the record, manifests and markers");
    pinpool_close(ctx);
}

/* Wait (up to 2 s) until the daemon counts n sessions: it sees a process's
 * end when its fd socket closes. */
static void wait_sessions(pinpool_ctx_t *ctx, uint32_t n)
{
    for (int i = 0; i < 200; i++) {
        pinpool_pool_info_t pi;
        uint32_t k = 0;
        cr_assert_eq(pinpool_pool_info(ctx, &pi), 0);
        for (uint32_t j = 0; j < pi.num_usage; j++)
            k += pi.usage[j].pid != 0 && strncmp(pi.usage[j].client_id, "kept:", 5) != 0;
        pinpool_pool_info_free(&pi);
        if (k == n)
            return;
        usleep(10000);
    }
    cr_assert_fail("the daemon still counts other sessions than %u", n);
}

static int go_fd = -1; /* in a child: where later bytes from the parent come */

/* A child process for the tests below, forked before this process holds any
 * gRPC state (a forked gRPC client cannot be used): it waits for a byte on
 * cmd, then runs body; it dies by itself after 60 s. */
static pid_t child(int cmd[2], int up[2], void (*body)(int up_fd))
{
    cr_assert_eq(pipe(cmd), 0);
    cr_assert_eq(pipe(up), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char c;
        alarm(60);
        if (read(cmd[0], &c, 1) != 1)
            _exit(1);
        go_fd = cmd[0];
        body(up[1]);
        _exit(0);
    }
    return pid;
}

/* Attach version 2 of "w", say the client id, and wait to be killed. */
static void reader_body(int up_fd)
{
    pinpool_ctx_t *c = pinpool_connect(d.socket);
    pinpool_manifest_t *mm = NULL;
    char id[64] = "";

    if (pinpool_manifest_open(c, "w", 2, &mm) != 0 || pinpool_manifest_attach(mm, PINPOOL_HOST) != 0)
        _exit(2);
    snprintf(id, sizeof(id), "%s", pinpool_client_id(c));
    if (write(up_fd, id, sizeof(id)) != (ssize_t)sizeof(id))
        _exit(3);
    pause();
}

Test(manifest, a_reader_keeps_its_version_and_drop_waits_for_it)
{
    int cmd[2], up[2];
    pid_t pid = child(cmd, up, reader_body);
    pinpool_ctx_t *pubctx = test_connect(&d), *reader = test_connect(&d);
    pinpool_manifest_t *m = NULL;

    publish(pubctx, "w", 2, 300, 1, NULL);
    cr_assert_eq(pinpool_manifest_open(reader, "w", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(reader));
    uint64_t v2 = publish(pubctx, "w", 2, 200, 9, NULL);
    cr_expect_eq(v2, 2);
    expect_bytes(m, 2, 1); /* version 1's bytes, still mapped, untouched */
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 1, 0), PINPOOL_EBUSY,
               pinpool_client_id(reader));
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 0, 0), PINPOOL_EBUSY, "close it first");
    pinpool_manifest_close(m);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 1, 0), 0, "%s", pinpool_errmsg(pubctx));

    /* A reader that dies holds nothing up: its marker names a dead session
     * (and stays behind: the daemon lists no keys, so drop cannot find it). */
    publish(pubctx, "w", 1, 10, 2, NULL); /* v3: v2 can be dropped alone */
    char id[64] = "";
    cr_assert_eq(write(cmd[1], "g", 1), 1);
    close(up[1]);
    cr_assert_eq(read(up[0], id, sizeof(id)), (ssize_t)sizeof(id), "the reader died");
    close(up[0]);
    close(cmd[0]);
    close(cmd[1]);
    EXPECT_ERR(pubctx, pinpool_manifest_drop(pubctx, "w", 2, 0), PINPOOL_EBUSY, id);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_expect(test_daemon_used(&d) > 0);
    wait_sessions(pubctx, 2);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 2, 0), 0, "%s", pinpool_errmsg(pubctx));
    cr_expect_eq(pinpool_manifest_versions(pubctx, "w", NULL, 0, NULL, NULL), 0);
    char key[160];
    snprintf(key, sizeof(key), "weights:w@2~r:%s", id);
    cr_expect_eq(pinpool_exists(pubctx, key), 1, "the dead reader's marker (documented leftover)");
    pinpool_remove(pubctx, key);
    cr_expect_eq(pinpool_manifest_drop(pubctx, "w", 0, 0), 0, "%s", pinpool_errmsg(pubctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(reader);
    pinpool_close(pubctx);
}

/* A second publisher of "atomic": everything but the commit, then a byte on
 * up, then it waits on go_fd (for a commit that never comes: it is killed). */
static void publisher_body(int up_fd)
{
    pinpool_ctx_t *c = pinpool_connect(d.socket);
    pinpool_publish_t *pub = NULL;
    int64_t shape[1] = {3 << 20};
    pinpool_tensor_desc_t dd = desc("big", PINPOOL_DTYPE_U8, 1, shape);
    char c1;

    if (pinpool_manifest_begin(c, "atomic", NULL, &pub) != 0 || pinpool_manifest_add(pub, &dd, NULL) != 0 ||
        pinpool_manifest_alloc(pub) != 0)
        _exit(3);
    pinpool_tensor_t t;
    pinpool_manifest_dest(pub, 0, &t);
    memset(t.ptr, 0x77, t.nbytes);
    if (write(up_fd, "r", 1) != 1 || read(go_fd, &c1, 1) != 1)
        _exit(4);
    _exit(pinpool_manifest_commit(pub, NULL) == 0 ? 0 : 5);
}

Test(manifest, the_commit_is_atomic_and_a_killed_publisher_is_collected, .timeout = 60)
{
    int cmd[2], up[2];
    pid_t pid = child(cmd, up, publisher_body);
    pinpool_ctx_t *ctx = test_connect(&d);
    uint64_t base_used;

    uint64_t v1 = publish(ctx, "atomic", 3, 400, 3, NULL);
    base_used = test_daemon_used(&d);
    char r1;
    cr_assert_eq(write(cmd[1], "g", 1), 1);
    cr_assert_eq(read(up[0], &r1, 1), 1, "the second publisher died");
    /* Mid-publish: readers see version 1, whole. */
    pinpool_manifest_t *m = NULL;
    uint64_t cur = 0;
    uint32_t n = 0;
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, v1, "a reader during a publish sees the old version");
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    expect_bytes(m, 3, 3);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_versions(ctx, "atomic", NULL, 0, &n, &cur), 0);
    cr_expect(n == 1 && cur == v1);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "atomic", 2, &m), PINPOOL_ENOKEY, "being published");
    pinpool_publish_t *pub2 = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "atomic", NULL, &pub2), PINPOOL_EBUSY,
               "is publishing 'atomic' version 2");
    cr_expect_gt(test_daemon_used(&d), base_used + (3u << 20) - 1, "the half-made version's slice");
    uint32_t collected = 99;
    cr_assert_eq(pinpool_manifest_collect(ctx, "atomic", &collected), 0);
    cr_expect_eq(collected, 0, "a live publisher's version is not collected");

    kill(pid, SIGKILL); /* before its commit */
    int status;
    waitpid(pid, &status, 0);
    close(cmd[0]);
    close(cmd[1]);
    close(up[0]);
    close(up[1]);
    wait_sessions(ctx, 1);
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0);
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, v1, "a publisher killed before its commit leaves the old version");
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_collect(ctx, "atomic", &collected), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(collected, 1);
    cr_expect_eq(test_daemon_used(&d), base_used, "its slice is freed");

    /* The next version skips the dead one's number; the commit flips it. */
    uint64_t v3 = publish(ctx, "atomic", 1, 10, 40, NULL);
    cr_expect_eq(v3, 3, "versions are never reused");
    cr_assert_eq(pinpool_manifest_open(ctx, "atomic", 0, &m), 0);
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.version, 3);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_drop(ctx, "atomic", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
}

Test(manifest, a_publisher_that_exits_without_commit_is_collected_by_the_next_one)
{
    pid_t pid = fork(); /* before this process holds any gRPC state */

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pinpool_ctx_t *c = pinpool_connect(d.socket);
        pinpool_publish_t *pub = NULL;
        int64_t shape[1] = {1 << 20};
        pinpool_tensor_desc_t dd = desc("x", PINPOOL_DTYPE_U8, 1, shape);
        if (pinpool_manifest_begin(c, "left", NULL, &pub) != 0 || pinpool_manifest_add(pub, &dd, NULL) != 0 ||
            pinpool_manifest_alloc(pub) != 0)
            _exit(3);
        _exit(0); /* no commit, no abort, no close */
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pinpool_ctx_t *ctx = test_connect(&d);
    wait_sessions(ctx, 1);
    pinpool_manifest_t *m = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "left", 0, &m), PINPOOL_ENOKEY, "being published");
    cr_expect_gt(test_daemon_used(&d), (1u << 20) - 1);
    /* begin collects it (its session is gone) and takes the next version */
    uint64_t v = publish(ctx, "left", 1, 1, 5, NULL);
    cr_expect_eq(v, 2);
    cr_assert_eq(pinpool_manifest_drop(ctx, "left", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, abort_and_argument_errors)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_publish_t *pub = NULL;
    pinpool_manifest_opts_t o = {.device_id = 0, .flags = PINPOOL_MANIFEST_SPILLABLE};
    int64_t sh[2] = {4, 4};
    char longname[PINPOOL_MANIFEST_NAME_MAX + 2];

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "a@b", NULL, &pub), PINPOOL_EINVAL, "@!~#+");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "has space", NULL, &pub), PINPOOL_EINVAL, "character 4");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, longname, NULL, &pub), PINPOOL_EINVAL, "1 to 200");
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "host manifests");
    o = (pinpool_manifest_opts_t){.device_id = PINPOOL_HOST, .alignment = 48};
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "power of two");
    o = (pinpool_manifest_opts_t){.device_id = PINPOOL_HOST, .flags = 0x80};
    EXPECT_ERR(ctx, pinpool_manifest_begin(ctx, "m", &o, &pub), PINPOOL_EINVAL, "unknown flags");
    cr_expect_null(pub);

    cr_assert_eq(pinpool_manifest_begin(ctx, "m", NULL, &pub), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_desc_t t = desc("w", PINPOOL_DTYPE_F16, 2, sh);
    cr_assert_eq(pinpool_manifest_add(pub, &t, NULL), 0);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "added twice");
    t = desc("bad", 77, 2, sh);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "unknown dtype 77");
    t = desc("deep", PINPOOL_DTYPE_F16, 2, sh);
    t.ndim = 9;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "9 dimensions");
    t = desc("neg", PINPOOL_DTYPE_F16, 2, (int64_t[2]){3, -1});
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "negative");
    t = desc("short", PINPOOL_DTYPE_F32, 2, sh);
    t.nbytes = 63;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "reach 64 bytes");
    t = desc("strided", PINPOOL_DTYPE_F32, 2, sh);
    t.flags = PINPOOL_TENSOR_STRIDED;
    t.strides[0] = 1;
    t.strides[1] = 4; /* a transposed 4x4: 64 bytes */
    cr_expect_eq(pinpool_manifest_add(pub, &t, NULL), 0, "%s", pinpool_errmsg(ctx));
    t = desc("tied", PINPOOL_DTYPE_F16, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    uint32_t tied;
    cr_expect_eq(pinpool_manifest_add(pub, &t, &tied), 0, "%s", pinpool_errmsg(ctx));
    t = desc("toobig", PINPOOL_DTYPE_F32, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "do not fit");
    t.alias_of = 9;
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "not an earlier tensor");
    t = desc("empty", PINPOOL_DTYPE_F32, 2, (int64_t[2]){0, 5});
    cr_expect_eq(pinpool_manifest_add(pub, &t, NULL), 0);
    pinpool_tensor_t dst;
    EXPECT_ERR(ctx, pinpool_manifest_dest(pub, 0, &dst), PINPOOL_EINVAL, "alloc first");
    EXPECT_ERR(ctx, pinpool_manifest_commit(pub, NULL), PINPOOL_EINVAL, "alloc"); /* frees pub */
    cr_expect_eq(test_daemon_used(&d) > 0, 1, "(only the record and objects remain)");

    /* A second attempt: alloc, then abort frees the slices and the record entry. */
    cr_assert_eq(pinpool_manifest_begin(ctx, "m", NULL, &pub), 0);
    t = desc("w", PINPOOL_DTYPE_F16, 2, sh);
    pinpool_manifest_add(pub, &t, NULL);
    t = desc("tied", PINPOOL_DTYPE_F16, 2, sh);
    t.flags = PINPOOL_TENSOR_ALIAS;
    t.alias_of = 0;
    pinpool_manifest_add(pub, &t, &tied);
    cr_assert_eq(pinpool_manifest_alloc(pub), 0);
    pinpool_tensor_t t0, t1;
    pinpool_manifest_dest(pub, 0, &t0);
    pinpool_manifest_dest(pub, tied, &t1);
    cr_expect_eq(t0.ptr, t1.ptr, "an alias shares its base's bytes");
    t = desc("late", PINPOOL_DTYPE_F16, 2, sh);
    EXPECT_ERR(ctx, pinpool_manifest_add(pub, &t, NULL), PINPOOL_EINVAL, "allocated already");
    EXPECT_ERR(ctx, pinpool_manifest_write(pub, 0, t0.ptr, 33), PINPOOL_EINVAL, "holds 32 bytes");
    pinpool_manifest_abort(pub);
    pinpool_pool_info_t pi;
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "abort frees the kept segments");
    pinpool_manifest_t *m = NULL;
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "m", 0, &m), PINPOOL_ENOKEY, NULL);
    cr_expect_eq(pinpool_manifest_drop(ctx, "m", 0, 0), 0, "the record of a name with no version "
                 "goes too: %s", pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_drop(ctx, "m", 0, 0), PINPOOL_ENOKEY, "no manifest named 'm'");
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, a_manifest_of_many_tensors_is_written_in_parts, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_publish_t *pub = NULL;
    const int n = 9000;
    char tn[160];
    int64_t sh[1] = {3};

    cr_assert_eq(pinpool_manifest_begin(ctx, "many", NULL, &pub), 0);
    for (int i = 0; i < n; i++) {
        snprintf(tn, sizeof(tn), "model.layers.%d.a_rather_long_parameter_name_to_make_the_manifest_"
                 "larger_than_one_part.weight", i);
        pinpool_tensor_desc_t t = desc(tn, PINPOOL_DTYPE_I32, 1, sh);
        cr_assert_eq(pinpool_manifest_add(pub, &t, NULL), 0, "%s", pinpool_errmsg(ctx));
    }
    cr_assert_eq(pinpool_manifest_alloc(pub), 0, "%s", pinpool_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        int32_t v[3] = {i, -i, 7};
        cr_assert_eq(pinpool_manifest_write(pub, (uint32_t)i, v, sizeof(v)), 0);
    }
    cr_assert_eq(pinpool_manifest_commit(pub, NULL), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_exists(ctx, "weights:many@1+2"), 1, "three parts of 1 MiB");
    pinpool_manifest_t *m = NULL;
    cr_assert_eq(pinpool_manifest_open(ctx, "many", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_gt(info.manifest_bytes, 2 * MiB);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0);
    for (int i = 0; i < n; i += 997) {
        uint32_t k;
        pinpool_tensor_t t;
        snprintf(tn, sizeof(tn), "model.layers.%d.a_rather_long_parameter_name_to_make_the_manifest_"
                 "larger_than_one_part.weight", i);
        cr_assert_eq(pinpool_manifest_find(m, tn, &k), 0);
        pinpool_manifest_tensor(m, k, &t);
        const int32_t *v = t.ptr;
        cr_expect(v[0] == i && v[1] == -i && v[2] == 7);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    /* a missing part is a damaged manifest, said so */
    cr_assert_eq(pinpool_remove(ctx, "weights:many@1+1"), 0);
    EXPECT_ERR(ctx, pinpool_manifest_open(ctx, "many", 0, &m), -EBADMSG, "'weights:many@1+1' is gone");
    cr_assert_eq(pinpool_manifest_drop(ctx, "many", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
}

Test(manifest, a_spillable_manifest_survives_a_spill_and_restore, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t o = {.device_id = PINPOOL_HOST, .flags = PINPOOL_MANIFEST_SPILLABLE,
                                 .segment_bytes = 10 * MiB};
    /* 4 tensors of ~4.4-5.6 MiB: 3 segments, about 20 MiB of a 64 MiB pool */
    uint64_t v = publish(ctx, "cold", 4, 1150, 70, &o);
    pinpool_manifest_t *m = NULL;
    pinpool_pool_info_t pi;
    pinpool_slice_t fill[4];

    cr_assert_eq(pinpool_manifest_open(ctx, "cold", v, &m), 0);
    pinpool_manifest_info_t info;
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.placement, PINPOOL_MANIFEST_RELEASED);
    cr_expect_geq(info.num_segments, 2);
    pinpool_manifest_close(m);
    test_pool_info(ctx, &pi);
    cr_expect_eq(pi.num_kept, 0, "spillable segments are released objects, not kept slices");
    /* Fill the pool: the daemon must spill the released segments to make room. */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pinpool_alloc(ctx, 14 * MiB, NULL, &fill[i]), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.spills, 1, "nothing was spilled");
    cr_expect_geq(pi.spill.objects_spilled, 1);
    for (int i = 0; i < 4; i++)
        pinpool_free(ctx, fill[i].id, NULL);
    cr_assert_eq(pinpool_manifest_open(ctx, "cold", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    test_pool_info(ctx, &pi);
    cr_expect_geq(pi.spill.restores, 1, "attach restored the spilled segments");
    expect_bytes(m, 4, 70);
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    /* While this reader holds them, another waits and then is told why. */
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "cold", 0, &m), 0);
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "released again at close: %s",
                 pinpool_errmsg(ctx));
    expect_bytes(m, 4, 70);
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_drop(ctx, "cold", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

Test(manifest, across_a_daemon_restart_a_spillable_manifest_stays_and_a_kept_one_says_why, .timeout = 90)
{
    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_opts_t spill = {.device_id = PINPOOL_HOST, .flags = PINPOOL_MANIFEST_SPILLABLE};
    pinpool_manifest_t *m = NULL;

    publish(ctx, "persist", 3, 500, 80, &spill);
    publish(ctx, "kept", 1, 100, 90, NULL);
    pinpool_close(ctx);
    /* SIGTERM: the daemon writes every named object to its tier; kept slices die with it
     * (test_daemon_stop would remove the state directory: stop it by hand) */
    int status = 0;
    cr_assert_eq(kill(d.pid, SIGTERM), 0);
    cr_assert_eq(waitpid(d.pid, &status, 0), d.pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    d.pid = 0;
    cr_assert_eq(test_daemon_restart(&d, "--mem-pool-size", "64MiB", "--chunk-size", "16MiB", NULL), 0);
    ctx = test_connect(&d);
    cr_assert_eq(pinpool_manifest_open(ctx, "persist", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    cr_assert_eq(pinpool_manifest_attach(m, PINPOOL_HOST), 0, "%s", pinpool_errmsg(ctx));
    expect_bytes(m, 3, 80);
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    cr_assert_eq(pinpool_manifest_open(ctx, "kept", 0, &m), 0, "the record and manifest persist: %s",
                 pinpool_errmsg(ctx));
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_ENOKEY, "the daemon restarted");
    pinpool_manifest_close(m);
    cr_expect_eq(pinpool_manifest_drop(ctx, "persist", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_manifest_drop(ctx, "kept", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_daemon_used(&d), 0);
    pinpool_close(ctx);
}

/* ---- device manifests on the stand-in driver ------------------------------------------ */

TestSuite(manifest_mock, .timeout = 90);

Test(manifest_mock, a_device_manifest_is_attached_by_another_process_without_a_copy)
{
    test_use_mock_cuda();
    cr_assert_eq(test_daemon_start(&d, "--mem-pool-size", "128MiB", "--chunk-size", "16MiB", "--host-backend",
                                   "vmm", "--device-pool-size", "64MiB", NULL), 0);
    pid_t pid = fork(); /* the publisher: before this process holds any gRPC state */
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pinpool_ctx_t *c = pinpool_connect(d.socket);
        pinpool_manifest_opts_t o = {.device_id = 0, .segment_bytes = 4 * MiB, .hash_threads = 2};
        pinpool_publish_t *pub = NULL;
        if (pinpool_manifest_begin(c, "gpu", &o, &pub) != 0)
            _exit(2);
        for (int i = 0; i < 3; i++) {
            int64_t sh[2] = {1000 + 500 * i, 1024};
            char tn[8];
            snprintf(tn, sizeof(tn), "t%d", i);
            pinpool_tensor_desc_t t = desc(tn, PINPOOL_DTYPE_BF16, 2, sh);
            if (pinpool_manifest_add(pub, &t, NULL) != 0)
                _exit(3);
        }
        if (pinpool_manifest_alloc(pub) != 0)
            _exit(4);
        for (uint32_t i = 0; i < 3; i++) {
            pinpool_tensor_t t;
            pinpool_manifest_dest(pub, i, &t);
            void *src = malloc(t.nbytes);
            test_fill(src, t.nbytes, 100 + i);
            if (t.device_id != 0 || pinpool_manifest_write(pub, i, src, t.nbytes) != 0)
                _exit(5);
            free(src);
        }
        int rc = pinpool_manifest_commit(pub, NULL);
        if (rc != 0)
            fprintf(stderr, "commit: %s\n", pinpool_errmsg(c));
        pinpool_close(c);
        _exit(rc == 0 ? 0 : 6);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "publisher status %d", status);

    pinpool_ctx_t *ctx = test_connect(&d);
    pinpool_manifest_t *m = NULL;
    pinpool_manifest_info_t info;
    cr_assert_eq(pinpool_manifest_open(ctx, "gpu", 0, &m), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.device_id, 0);
    cr_expect_eq(info.num_segments, 3, "4 MiB segments: one tensor each");
    EXPECT_ERR(ctx, pinpool_manifest_attach(m, PINPOOL_HOST), PINPOOL_EINVAL, "on that GPU");
    unsigned long long before = test_mock_device_bytes();
    cr_assert_eq(pinpool_manifest_attach(m, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(test_mock_device_bytes(), before, "no device memory allocated: no copy");
    for (int i = 0; i < 3; i++) {
        pinpool_tensor_t t;
        pinpool_manifest_tensor(m, (uint32_t)i, &t);
        cr_expect_eq(t.device_id, 0);
        cr_expect(test_same(t.ptr, t.nbytes, 100 + (unsigned)i), "t%d: bytes differ", i);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_tensor_t t1;
    pinpool_manifest_tensor(m, 1, &t1);
    ((unsigned char *)t1.ptr)[12345] ^= 0x40; /* the stand-in's device memory is host memory */
    EXPECT_ERR(ctx, pinpool_manifest_verify(m, NULL), -EBADMSG, "tensor 't1'");
    ((unsigned char *)t1.ptr)[12345] ^= 0x40;
    pinpool_manifest_close(m);

    /* A host manifest copied to the device at attach. */
    pinpool_manifest_opts_t o = {.device_id = PINPOOL_HOST};
    publish(ctx, "hostcopy", 2, 600, 30, &o);
    cr_assert_eq(pinpool_manifest_open(ctx, "hostcopy", 0, &m), 0);
    before = test_mock_device_bytes();
    cr_assert_eq(pinpool_manifest_attach(m, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_info(m, &info);
    cr_expect_eq(info.attached_device, 0);
    cr_expect_eq(test_mock_device_bytes(), before + info.data_bytes, "one device copy");
    for (int i = 0; i < 2; i++) {
        pinpool_tensor_t t;
        pinpool_manifest_tensor(m, (uint32_t)i, &t);
        cr_expect_eq(t.device_id, 0);
        cr_expect(test_same(t.ptr, t.nbytes, 30 + (unsigned)i), "copy of t%d: bytes differ", i);
    }
    cr_expect_eq(pinpool_manifest_verify(m, NULL), 0, "%s", pinpool_errmsg(ctx));
    pinpool_manifest_close(m);
    cr_expect_eq(test_mock_device_bytes(), before, "the copy is freed at close");
    cr_expect_eq(pinpool_manifest_drop(ctx, "gpu", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    cr_expect_eq(pinpool_manifest_drop(ctx, "hostcopy", 0, 0), 0, "%s", pinpool_errmsg(ctx));
    pinpool_close(ctx);
    test_daemon_finish(&d);
}
