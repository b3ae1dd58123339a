/*
 * manifest_versions.c - a name's versions (pinpool.h, "Tensor manifests"):
 * list, drop (refused while a live session has the version attached: each
 * reader leaves a marker object, checked against the sessions GetPoolInfo
 * lists), collect (what publishers that died before their commit left), and
 * freeing every object and slice of one version.
 * Owns: nothing past a call.
 * Never: frees a version's bytes before the record stops naming it (drop
 * writes the record first); collects a version whose publisher's session is
 * alive; trusts that the daemon can list keys (it cannot: a dead reader's
 * marker is left behind, harmless, since it names a dead session).
 * Locking: none of its own; the calls are the daemon's.  One writer of a
 * name's record at a time (pinpool.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cudaload.h"
#include "internal.h"
#include "manifest_int.h"

/* ---- a version's objects ------------------------------------------------------------------ */

/* Remove the manifest objects of version v ("@V", "@V+K"): parts of them
 * when known (a committed version), else up to the first one missing (the
 * parts are written in order, so a publisher that died left a prefix). */
void pinpool__remove_parts(pinpool_ctx_t *ctx, const char *name, uint64_t v, uint32_t parts)
{
    char key[PINPOOL__KEY_MAX];

    for (uint32_t k = 0; k < PINPOOL_MANIFEST_MAX_BYTES / PINPOOL__MAN_PART; k++) {
        char suffix[16] = "";
        if (k > 0)
            snprintf(suffix, sizeof(suffix), "+%" PRIu32, k);
       pinpool__mkey(key, name, v, suffix);
        int rc = pinpool_remove(ctx, key);
        if (parts > 0 ? k + 1 >= parts : rc != 0)
            break;
    }
}

/* Free everything version v of name holds: its kept segments (the tags in
 * clients, plus nseg by number), released segments 0..nseg-1, its manifest,
 * its publisher marker.  The first error is returned; the rest go on. */
static int free_version(pinpool_ctx_t *ctx, const char *name, uint64_t v, uint32_t nseg,
                        uint32_t parts, const clients_t *c)
{
    uint64_t h = pinpool__xxh3(name, strlen(name));
    char key[PINPOOL__KEY_MAX], tag[PINPOOL__MAN_KEY];
    int first = 0, rc;

    for (uint32_t i = 0; c != NULL && c->have && i < c->info.num_usage; i++) {
        uint64_t tv;
        uint32_t seg;
        if (pinpool__tag_of(c->info.usage[i].client_id, h, &tv, &seg) && tv == v && seg >= nseg) {
           pinpool__seg_tag(tag, name, v, seg);
            rc = pinpool__free_kept(ctx, tag);
            first = first != 0 ? first : rc;
        }
    }
    for (uint32_t s = 0; s < nseg; s++) {
       pinpool__seg_tag(tag, name, v, s);
        rc = pinpool__free_kept(ctx, tag);
        first = first != 0 ? first : rc;
       pinpool__released_key(key, tag);
        rc = pinpool__remove_quiet(ctx, key);
        first = first != 0 ? first : rc;
    }
   pinpool__remove_parts(ctx, name, v, parts);
   pinpool__mkey(key, name, v, "~pub");
   pinpool__remove_quiet(ctx, key);
    return first;
}

/* Is version v being published by a live session?  *who gets its client id. */
bool pinpool__publisher_alive(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c,
                            char *who, size_t wholen)
{
    char key[PINPOOL__KEY_MAX];
    uint8_t *b = NULL;
    size_t len = 0;
    bool alive = false;

   pinpool__mkey(key, name, v, "~pub");
    if (pinpool__get_obj(ctx, key, 64, &b, &len) != 0)
        return false;
    if (len > 0 && len < 64) {
        char id[64];
        memcpy(id, b, len);
        id[len] = '\0';
        alive = pinpool__live(c, id) != NULL;
        snprintf(who, wholen, "%s", id);
    }
    free(b);
    return alive;
}

int pinpool_manifest_collect(pinpool_ctx_t *ctx, const char *name, uint32_t *collected)
{
    char msg[256], who[64];
    clients_t c = {.have = false};
    name_rec_t *r = NULL;
    uint64_t *cand = NULL, h;
    uint32_t ncand = 0, done = 0, cap = 0;
    bool changed = false;
    int rc = pinpool__check(ctx, true, true, NULL);

    if (rc == 0 && pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        rc = pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if (rc == 0 && (r = malloc(sizeof(*r))) == NULL)
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
    /* The record before the sessions: a publisher that began before the record
     * was read had its session before the snapshot, so it is seen alive. */
    if (rc == 0)
        rc = pinpool__rec_read(ctx, name, r);
    if (rc == 0)
        rc = pinpool__clients_read(ctx, &c);
    if (rc != 0)
        goto out;
    h = pinpool__xxh3(name, strlen(name));
    /* Candidates: versions being made, and versions whose kept slices exist
     * but that the record does not name as committed. */
    for (uint32_t i = 0; i < r->n + c.info.num_usage; i++) {
        uint64_t v = 0;
        uint32_t seg;
        if (i < r->n) {
            if (r->e[i].state == PINPOOL__REC_PENDING)
                v = r->e[i].version;
        } else if (pinpool__tag_of(c.info.usage[i - r->n].client_id, h, &v, &seg)) {
            rec_entry_t *e = pinpool__rec_find(r, v);
            if (e != NULL && e->state == PINPOOL__REC_COMMITTED)
                v = 0;
        }
        bool seen = v == 0;
        for (uint32_t k = 0; k < ncand && !seen; k++)
            seen = cand[k] == v;
        if (seen)
            continue;
        if (ncand == cap) {
            uint32_t ncap = cap ? 2 * cap : 16;
            uint64_t *nc = realloc(cand, ncap * sizeof(*nc));
            if (nc == NULL) {
                rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
                goto out;
            }
            cand = nc;
            cap = ncap;
        }
        cand[ncand++] = v;
    }
    for (uint32_t k = 0; k < ncand; k++) {
        uint64_t v = cand[k];
        if (pinpool__publisher_alive(ctx, name, v, &c, who, sizeof(who)))
            continue;
        rec_entry_t *e = pinpool__rec_find(r, v);
        int frc = free_version(ctx, name, v, e != NULL ? e->nseg : 0, 0, &c);
        if (frc != 0 && rc == 0)
            rc = frc;
        if (frc == 0) {
            if (e != NULL) {
               pinpool__rec_del(r, v);
                changed = true;
            }
            done++;
        }
    }
    if (changed) {
        int wrc = pinpool__rec_write(ctx, name, r);
        rc = rc != 0 ? rc : wrc;
    }
out:
    if (collected != NULL)
        *collected = done;
   pinpool__clients_free(&c);
    free(cand);
    free(r);
    return rc;
}

/* Forget version v in name's record (re-read first: the record may have moved on). */
void pinpool__unrecord(pinpool_ctx_t *ctx, const char *name, uint64_t v)
{
    name_rec_t *r = malloc(sizeof(*r));

    if (r != NULL && pinpool__rec_read(ctx, name, r) == 0 && pinpool__rec_find(r, v) != NULL) {
       pinpool__rec_del(r, v);
       pinpool__rec_write(ctx, name, r);
    }
    free(r);
}

/* ---- versions ------------------------------------------------------------------------------- */

int pinpool_manifest_versions(pinpool_ctx_t *ctx, const char *name, uint64_t *versions, uint32_t cap,
                              uint32_t *n, uint64_t *current)
{
    name_rec_t *r;
    char msg[256];
    uint32_t k = 0;
    int rc = pinpool__check(ctx, false, name != NULL && (versions != NULL || cap == 0),
                            "name and versions");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    r = malloc(sizeof(*r));
    if (r == NULL)
        return pinpool__fail(ctx, -ENOMEM, "out of memory");
    rc = pinpool__rec_read(ctx, name, r);
    if (rc == 0 && (!r->found || r->current == 0))
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s' is committed", name);
    if (rc == 0) {
        /* entries are kept in the order they were begun: versions ascend */
        for (uint32_t i = 0; i < r->n; i++)
            if (r->e[i].state == PINPOOL__REC_COMMITTED) {
                if (k < cap)
                    versions[k] = r->e[i].version;
                k++;
            }
        if (n != NULL)
            *n = k;
        if (current != NULL)
            *current = r->current;
    }
    free(r);
    return rc;
}

/* PINPOOL_EBUSY naming the first live session with a marker on version v. */
static int busy_check(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c)
{
    char key[PINPOOL__KEY_MAX], suffix[80];

    for (uint32_t i = 0; i < c->info.num_usage; i++) {
        const pinpool_client_usage_t *u = &c->info.usage[i];
        if (!pinpool__is_session(u))
            continue;
        snprintf(suffix, sizeof(suffix), "~r:%s", u->client_id);
       pinpool__mkey(key, name, v, suffix);
        int rc = pinpool_exists(ctx, key);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return pinpool__fail(ctx, PINPOOL_EBUSY, "manifest '%s' version %" PRIu64 " is attached "
                                 "by client %s (pid %" PRId32 "%s): it must close it first (or drop "
                                 "with PINPOOL_MANIFEST_FORCE)", name, v, u->client_id, u->pid,
                                 strcmp(u->client_id, pinpool_client_id(ctx)) == 0 ? ", this one" : "");
    }
    return 0;
}

/* Remove the reader markers of live sessions on version v (a forced drop). */
static void remove_markers(pinpool_ctx_t *ctx, const char *name, uint64_t v, const clients_t *c)
{
    char key[PINPOOL__KEY_MAX], suffix[80];

    for (uint32_t i = 0; i < c->info.num_usage; i++)
        if (pinpool__is_session(&c->info.usage[i])) {
            snprintf(suffix, sizeof(suffix), "~r:%s", c->info.usage[i].client_id);
           pinpool__mkey(key, name, v, suffix);
           pinpool__remove_quiet(ctx, key);
        }
}

int pinpool_manifest_drop(pinpool_ctx_t *ctx, const char *name, uint64_t version, uint32_t flags)
{
    name_rec_t *r = NULL;
    clients_t c = {.have = false};
    char msg[256], who[64];
    uint64_t *drop = NULL;
    uint32_t *nsegs = NULL, *nparts = NULL, ndrop = 0;
    int rc = pinpool__check(ctx, true, name != NULL, "name");

    if (rc != 0)
        return rc;
    if (pinpool__manifest_check_name(name, msg, sizeof(msg)) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "%s", msg);
    if ((flags & ~PINPOOL_MANIFEST_FORCE) != 0)
        return pinpool__fail(ctx, PINPOOL_EINVAL, "unknown flags 0x%" PRIx32, flags);
    r = malloc(sizeof(*r));
    drop = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*drop));
    nsegs = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*nsegs));
    nparts = malloc(PINPOOL_MANIFEST_MAX_VERSIONS * sizeof(*nparts));
    if (r == NULL || drop == NULL || nsegs == NULL || nparts == NULL) {
        rc = pinpool__fail(ctx, -ENOMEM, "out of memory");
        goto out;
    }
    rc = pinpool__rec_read(ctx, name, r);
    if (rc == 0)
        rc = pinpool__clients_read(ctx, &c);
    if (rc != 0)
        goto out;
    if (!r->found) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "no manifest named '%s'", name);
        goto out;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        rec_entry_t *e = &r->e[i];
        if (version != 0 && e->version != version)
            continue;
        if (e->state == PINPOOL__REC_PENDING) {
            if (version != 0) {
                rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "'%s' version %" PRIu64 " is not committed "
                                   "(pinpool_manifest_collect frees a dead publisher's)", name, version);
                goto out;
            }
            if (!(flags & PINPOOL_MANIFEST_FORCE) &&
               pinpool__publisher_alive(ctx, name, e->version, &c, who, sizeof(who))) {
                rc = pinpool__fail(ctx, PINPOOL_EBUSY, "'%s' version %" PRIu64 " is being published "
                                   "by client %s", name, e->version, who);
                goto out;
            }
        } else {
            if (version != 0 && e->version == r->current) {
                rc = pinpool__fail(ctx, PINPOOL_EINVAL, "version %" PRIu64 " is the current one of "
                                   "'%s': publish a newer one first, or drop the whole name (version 0)",
                                   version, name);
                goto out;
            }
            if (!(flags & PINPOOL_MANIFEST_FORCE)) {
                rc = busy_check(ctx, name, e->version, &c);
                if (rc != 0)
                    goto out;
            }
        }
        drop[ndrop] = e->version;
        nparts[ndrop] = e->parts;
        nsegs[ndrop++] = e->nseg;
    }
    if (ndrop == 0 && version != 0) {
        rc = pinpool__fail(ctx, PINPOOL_ENOKEY, "manifest '%s' has no version %" PRIu64, name, version);
        goto out;
    }
    /* The record stops naming them first; then their bytes go. */
    for (uint32_t k = 0; k < ndrop; k++)
       pinpool__rec_del(r, drop[k]);
    if (version == 0)
        r->current = 0; /* readers see no manifest from here on */
    rc = pinpool__rec_write(ctx, name, r);
    if (rc != 0)
        goto out;
    for (uint32_t k = 0; k < ndrop; k++) {
        remove_markers(ctx, name, drop[k], &c);
        int frc = free_version(ctx, name, drop[k], nsegs[k], nparts[k], &c);
        rc = rc != 0 ? rc : frc;
    }
    if (version == 0) {
        char key[PINPOOL__KEY_MAX];
       pinpool__mkey(key, name, 0, "!a");
       pinpool__remove_quiet(ctx, key);
       pinpool__mkey(key, name, 0, "!b");
       pinpool__remove_quiet(ctx, key);
    }
out:
   pinpool__clients_free(&c);
    free(r);
    free(drop);
    free(nsegs);
    free(nparts);
    return rc;
}
