/*
 * fuzz_gms.c - libFuzzer target over the GMS decoder (server/gms_wire.c):
 * each input is one message, the bytes after a frame's 4-byte length.
 *
 * Checked: gms_decode returns 0 or -1 and nothing else; on -1 it says why;
 * on 0 the request's type is one it knows, its strings are NUL-terminated
 * within their bounds and its value lies inside the input.  The sanitizers
 * catch a read past the input, and a decoder that allocates from a count in
 * the input shows in peak RSS (-rss_limit_mb).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gms_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void invariant(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_gms: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256] = "";
    gms_req_t r;
    int rc = gms_decode(data, size, &r, why, sizeof(why));

    invariant(rc == 0 || rc == -1, "gms_decode returns 0 or -1");
    if (rc != 0) {
        invariant(why[0] != '\0', "a refusal says why");
        return 0;
    }
    invariant((unsigned)r.type < GMS_NREQ, "a known type");
    invariant(strnlen(r.tag, sizeof(r.tag)) <= GMS_MAX_TAG, "tag bounded");
    invariant(strnlen(r.id, sizeof(r.id)) <= GMS_ID_LEN, "allocation_id bounded");
    invariant(strnlen(r.key, sizeof(r.key)) <= GMS_MAX_KEY, "key bounded");
    invariant(r.value_len <= GMS_MAX_VALUE, "value bounded");
    invariant(r.value == NULL || (r.value >= data && r.value + r.value_len <= data + size),
              "the value lies inside the input");
    return 0;
}
