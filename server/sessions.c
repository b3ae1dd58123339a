/*
 * sessions.c - the clients: the client table, fd-socket sessions and their
 * tokens, and who may come in.
 *
 * Owns: srv->clients (one record per client, by id), nclients, nkept and the
 * owner numbers.  Every client has an owner number in the pools and a uid
 * (sessions: the peer's, from SO_PEERCRED; kept slices: their maker's; a
 * caller without a session acts as the daemon's own uid).  A session
 * client is made by srv_session_open for an fd-socket connection; its id is
 * random and starts with "s-", it carries a secret token that its calls must
 * carry too (srv_authorize), and it lives as long as the connection.  Any
 * other id names a detached client (a stock gRPC caller): it appears on its
 * first allocation and goes when it holds nothing.  An "s-" id whose session
 * is gone is refused, so that a call racing a dying client cannot leave
 * memory without a lease.  Kept slices belong to a client named "kept:<tag>"
 * that has no session; it holds that one slice and goes with it.  Ordinary
 * clients cannot use the "kept:" prefix.
 * Admission: --allow-uid/--allow-gid (numbers parsed once at start, checked
 * on the peer's credentials: its uid, primary and supplementary groups; they
 * turn detached clients away), --detached-clients, --max-clients (kept
 * clients do not count).
 * Never: allocates or frees slices itself (slices.c does; srv_session_close
 * frees a session's through it), or holds a client record across a dropped
 * lock: a detached client may be gone after it.
 * Locking (see srv_int.h): srv_session_open/close/admit and srv_authorize
 * take srv->lock and never drop it; srv_session_token reads a token that
 * never changes; srv_check_name and srv_check_client_id touch no state; the
 * do_* helpers run under the lock.  A session's record stays valid
 * until srv_session_close, which only the fd socket's thread calls.
 */
#include "srv_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "pinpool.h"
#include "rbtree.h"

static int client_cmp(const struct srv_client *a, const struct srv_client *b)
{
    return strcmp(a->id, b->id);
}

RB_GENERATE_STATIC(client_tree, srv_client, node, client_cmp)
#include "rbtree_end.h"

/* ---- the client table (lock held) ----------------------------------------------- */

struct srv_client *do_find_client(srv_t *srv, const char *id)
{
    struct srv_client key;

    if (strlen(id) >= sizeof(key.id))
        return NULL;
    strcpy(key.id, id);
    return RB_FIND(client_tree, &srv->clients, &key);
}

static struct srv_client *do_add_client(srv_t *srv, const char *id, bool session)
{
    struct srv_client *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->owner = srv->next_owner++;
    c->uid = srv->uid; /* a caller without a session acts as the daemon's uid */
    c->session = session;
    RB_INSERT(client_tree, &srv->clients, c);
    srv->nclients++;
    return c;
}

static void do_remove_client(srv_t *srv, struct srv_client *c)
{
    RB_REMOVE(client_tree, &srv->clients, c);
    srv->nclients--;
    free(c);
}

struct srv_client *do_add_kept(srv_t *srv, const char *name, uid_t uid)
{
    struct srv_client *c = do_add_client(srv, name, false);

    if (c != NULL) {
        c->kept = true;
        c->uid = uid;
        srv->nkept++;
    }
    return c;
}

void do_drop_if_idle(srv_t *srv, struct srv_client *c)
{
    uint32_t n;

    if (c->session)
        return;
    do_owner_bytes(srv, c->owner, &n, NULL);
    if (n == 0) {
        if (c->kept)
            srv->nkept--;
        do_remove_client(srv, c);
    }
}

struct srv_client *do_client_of_owner(srv_t *srv, uint64_t owner)
{
    struct srv_client *c;

    RB_FOREACH(c, client_tree, &srv->clients)
        if (c->owner == owner)
            break;
    return c;
}

/* --max-clients: 0, or PINPOOL_ENOSPC with msg when the table is full. */
static int do_room_for_client(const srv_t *srv, char *msg, size_t msglen)
{
    if (srv->cfg.max_clients != 0 && srv->nclients - srv->nkept >= srv->cfg.max_clients) {
        snprintf(msg, msglen, "the daemon already has %" PRIu32 " clients (--max-clients %"
                 PRIu64 ")", srv->nclients - srv->nkept, srv->cfg.max_clients);
        return PINPOOL_ENOSPC;
    }
    return 0;
}

int do_get_client(srv_t *srv, const char *id, struct srv_client **out, char *msg, size_t msglen)
{
    struct srv_client *c = do_find_client(srv, id);
    int rc;

    if (c == NULL) {
        if (strncmp(id, SESSION_PREFIX, strlen(SESSION_PREFIX)) == 0) {
            snprintf(msg, msglen, "client_id '%s' names an fd-socket session that has ended; "
                     "reconnect to get a new one", id);
            return PINPOOL_EPERM;
        }
        rc = do_room_for_client(srv, msg, msglen);
        if (rc != 0)
            return rc;
        c = do_add_client(srv, id, false);
        if (c == NULL) {
            snprintf(msg, msglen, "out of memory");
            return -ENOMEM;
        }
    }
    *out = c;
    return 0;
}

void do_foreach_usage(srv_t *srv, void (*fn)(const srv_client_usage_t *usage, void *arg),
                      void *arg)
{
    struct srv_client *c;

    RB_FOREACH(c, client_tree, &srv->clients) {
        srv_client_usage_t u = {.client_id = c->id};
        uint64_t dev = 0;
        u.bytes = do_owner_bytes(srv, c->owner, &u.slices, &dev) - dev;
        u.device_bytes = dev;
        u.pid = c->session ? (int32_t)c->cred.pid : 0;
        u.uid = c->session ? (uint32_t)c->cred.uid : 0;
        fn(&u, arg);
    }
}

void srv_clients_close(srv_t *srv)
{
    struct srv_client *c, *next;

    RB_FOREACH_SAFE(c, client_tree, &srv->clients, next) {
        RB_REMOVE(client_tree, &srv->clients, c);
        free(c);
    }
}

/* ---- names (no lock) ---------------------------------------------------------------- */

int srv_check_name(const char *what, const char *id, size_t max, char *msg, size_t msglen)
{
    size_t n = strlen(id);

    if (n == 0 || n > max) {
        snprintf(msg, msglen, "%s must be 1 to %zu characters (got %zu)", what, max, n);
        return PINPOOL_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e) {
            snprintf(msg, msglen, "%s must be printable ASCII without spaces", what);
            return PINPOOL_EINVAL;
        }
    return 0;
}

int srv_check_client_id(const char *id, char *msg, size_t msglen)
{
    int rc = srv_check_name("client_id", id, SRV_CLIENT_ID_LEN - 1, msg, msglen);

    if (rc == 0 && strncmp(id, KEPT_PREFIX, strlen(KEPT_PREFIX)) == 0) {
        snprintf(msg, msglen, "client_id may not start with '%s' (reserved for kept slices)",
                 KEPT_PREFIX);
        return PINPOOL_EINVAL;
    }
    return rc;
}

/* ---- sessions ------------------------------------------------------------------- */

static bool in_ids(const uint32_t *ids, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* --allow-uid / --allow-gid (parsed once at start, config.c): the peer's uid,
 * its primary group or one of its supplementary groups. */
static bool allowed(const srv_config_t *cfg, const ipc_cred_t *cred, const uint32_t *groups,
                    size_t ngroups)
{
    if (cfg->nallow_uids == 0 && cfg->nallow_gids == 0)
        return true;
    if (in_ids(cfg->allow_uids, cfg->nallow_uids, (uint32_t)cred->uid) ||
        in_ids(cfg->allow_gids, cfg->nallow_gids, (uint32_t)cred->gid))
        return true;
    for (size_t i = 0; groups != NULL && i < ngroups; i++)
        if (in_ids(cfg->allow_gids, cfg->nallow_gids, groups[i]))
            return true;
    return false;
}

int srv_session_admit(srv_t *srv, const ipc_cred_t *cred, const uint32_t *groups,
                      size_t ngroups, char *msg, size_t msglen)
{
    const srv_config_t *cfg = &srv->cfg;
    int rc;

    if (!allowed(cfg, cred, groups, ngroups)) {
        snprintf(msg, msglen, "uid %u (gid %u, %zu supplementary group%s) is not in "
                 "--allow-uid / --allow-gid", (unsigned)cred->uid, (unsigned)cred->gid, ngroups,
                 ngroups == 1 ? "" : "s");
        return PINPOOL_EPERM;
    }
    pthread_mutex_lock(&srv->lock);
    rc = do_room_for_client(srv, msg, msglen);
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

static void random_hex(char *out, size_t bytes)
{
    uint8_t rnd[32];

    if (bytes > sizeof(rnd) || getrandom(rnd, bytes, 0) != (ssize_t)bytes)
        abort(); /* the kernel's CSPRNG does not fail for small reads */
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", rnd[i]);
}

srv_client_t *srv_session_open(srv_t *srv, const ipc_cred_t *cred, char *id, size_t idlen)
{
    char hex[25], name[SRV_CLIENT_ID_LEN];
    struct srv_client *c;

    random_hex(hex, 12);
    snprintf(name, sizeof(name), SESSION_PREFIX "%d-%s", (int)cred->pid, hex);
    pthread_mutex_lock(&srv->lock);
    c = do_add_client(srv, name, true);
    if (c != NULL) {
        c->cred = *cred;
        c->uid = cred->uid;
        random_hex(c->token, 16);
    }
    pthread_mutex_unlock(&srv->lock);
    if (c != NULL)
        snprintf(id, idlen, "%s", c->id);
    return c;
}

const char *srv_session_token(const srv_client_t *c)
{
    return c->token;
}

/* Compare without an early exit, so that timing says nothing about the token. */
static bool same_token(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);

    for (size_t i = 0; i < na && i < nb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

int srv_authorize(srv_t *srv, const char *client_id, const char *token, char *msg, size_t msglen)
{
    const srv_config_t *cfg = &srv->cfg;
    struct srv_client *c;
    int rc = 0;

    if (strncmp(client_id, SESSION_PREFIX, strlen(SESSION_PREFIX)) != 0) {
        if (strcmp(cfg->detached_clients, "no") == 0 || cfg->allow_uid[0] != '\0' ||
            cfg->allow_gid[0] != '\0') {
            snprintf(msg, msglen, "this daemon serves only clients with an fd-socket session "
                     "(libpinpool does that); client_id '%s' has none", client_id);
            return PINPOOL_EPERM;
        }
        return 0;
    }
    pthread_mutex_lock(&srv->lock);
    c = do_find_client(srv, client_id);
    if (c != NULL && !same_token(c->token, token != NULL ? token : "")) {
        snprintf(msg, msglen, "calls for session '%s' must carry its token (the '%s' metadata "
                 "from the fd socket's greeting)", client_id, "pinpool-token");
        rc = PINPOOL_EPERM;
    }
    pthread_mutex_unlock(&srv->lock);
    return rc; /* an ended session is refused by the call itself */
}

void srv_session_close(srv_t *srv, srv_client_t *c)
{
    uint64_t freed = 0;
    uint32_t n;
    char sz[32];

    pthread_mutex_lock(&srv->lock);
    n = do_free_owner(srv, c->owner, &freed);
    srv_info("client %s (pid %d) left; %" PRIu32 " slice%s (%s) back to the pool", c->id,
             (int)c->cred.pid, n, n == 1 ? "" : "s", pool_format_size(freed, sz, sizeof(sz)));
    do_remove_client(srv, c);
    pthread_mutex_unlock(&srv->lock);
}
