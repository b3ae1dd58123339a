/*
 * tier_mooncake_dlopen.c - the Mooncake tier's dlopen driver: Mooncake's C API
 * (store_c.h) in libmooncake_store.so, built with -DWITH_STORE_C_SHARED=ON
 * and bound at run time with dlopen/dlsym (no build dependency).
 *
 * Owns: the library handle (m->dl), the bound functions (m->c), the client
 * (m->store) and the registration of the staging buffer.  The client runs in
 * the daemon: setup installs its own SIGINT/SIGTERM/SIGHUP handlers, which
 * are replaced by the daemon's again right after.  The C API has no upsert:
 * a put removes first.
 * Never: dlcloses a library whose client was set up (it keeps threads and
 * handlers), or bounds a call by the tier's timeout_ms (a call cannot be
 * interrupted; Mooncake's own RPC timeouts end it).
 * Locking: none of its own; called with m->lock held (tier_mooncake.h).
 */
#include "tier_mooncake.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "pinpool.h"

int tier_mc_dlopen_open(mc_t *m, char *err, size_t errlen)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction saved[3];
    int rc;

    m->dl = dlopen(m->lib, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        snprintf(err, errlen, "mooncake: dlopen %s: %s (build Mooncake with "
                 "-DWITH_STORE_C_SHARED=ON, or use mode=adapter)", m->lib, dlerror());
        return PINPOOL_ETIER;
    }
#define SYM(field, name)                                                                  \
    do {                                                                                  \
        *(void **)&m->c.field = dlsym(m->dl, name);                                       \
        if (m->c.field == NULL) {                                                         \
            snprintf(err, errlen, "mooncake: %s has no %s: not Mooncake's store C API",   \
                     m->lib, name);                                                       \
            return PINPOOL_ETIER;                                                         \
        }                                                                                 \
    } while (0)
    SYM(create, "mooncake_store_create");
    SYM(destroy, "mooncake_store_destroy");
    SYM(setup, "mooncake_store_setup");
    SYM(put_from, "mooncake_store_put_from");
    SYM(get_into, "mooncake_store_get_into");
    SYM(is_exist, "mooncake_store_is_exist");
    SYM(get_size, "mooncake_store_get_size");
    SYM(remove, "mooncake_store_remove");
    SYM(register_buffer, "mooncake_store_register_buffer");
    SYM(unregister_buffer, "mooncake_store_unregister_buffer");
    SYM(batch_put_from, "mooncake_store_batch_put_from");
    SYM(batch_get_into, "mooncake_store_batch_get_into");
    SYM(batch_is_exist, "mooncake_store_batch_is_exist");
#undef SYM
    m->store = m->c.create();
    if (m->store == NULL) {
        snprintf(err, errlen, "mooncake: mooncake_store_create failed");
        return PINPOOL_ETIER;
    }
    /* The client installs its own SIGINT/SIGTERM/SIGHUP handlers: keep ours. */
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], NULL, &saved[i]);
    rc = m->c.setup(m->store, m->hostname, m->metadata, m->segment, m->local_buffer, m->protocol,
                    m->device, m->master_entry);
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &saved[i], NULL);
    if (rc != 0) {
        snprintf(err, errlen, "mooncake: mooncake_store_setup(master %s, metadata %s) returned "
                 "%d (%s)", m->master, m->metadata, rc, tier_mc_code_name(rc));
        return PINPOOL_ETIER;
    }
    snprintf(m->replace, sizeof(m->replace), "remove+put");
    return 0;
}

int tier_mc_dlopen_setbuf(mc_t *m, uint64_t len)
{
    void *p;
    int fd, rc = tier_mc_stage_map(m, len, &fd, &p);

    if (rc != 0)
        return tier__fail(rc, "staging buffer of %" PRIu64 " bytes: %s", len, strerror(-rc));
    rc = m->c.register_buffer(m->store, p, len);
    if (rc != 0) {
        munmap(p, len);
        return tier__fail(PINPOOL_ETIER, "mooncake_store_register_buffer: %d", rc);
    }
    if (m->stage != NULL) {
        m->c.unregister_buffer(m->store, m->stage);
        munmap(m->stage, m->stage_len);
    }
    m->stage = p;
    m->stage_len = len;
    return 0;
}

int tier_mc_dlopen_run(mc_t *m, uint16_t op, uint16_t flags, mc_item_t *items, uint32_t n)
{
    char *base = m->stage;

    for (uint32_t i = 0; i < n; i++) {
        mc_item_t *it = &items[i];

        it->aux = 0;
        switch (op) {
        case OP_PUT:
            it->rc = m->c.remove(m->store, it->key, (flags & FLAG_FORCE) != 0);
            if (it->rc == 0 || it->rc == MC_OBJECT_NOT_FOUND)
                it->rc = m->c.put_from(m->store, it->key, base + it->off, it->len, NULL);
            break;
        case OP_GET:
            it->rc = m->c.get_into(m->store, it->key, base + it->off, it->len);
            if (it->rc == MC_INVALID_PARAMS)
                it->aux = m->c.get_size(m->store, it->key);
            break;
        case OP_EXISTS:
            it->rc = m->c.is_exist(m->store, it->key);
            break;
        case OP_SIZE:
            it->rc = m->c.get_size(m->store, it->key);
            break;
        case OP_REMOVE:
            it->rc = m->c.remove(m->store, it->key, (flags & FLAG_FORCE) != 0);
            break;
        }
    }
    return 0;
}
