/*
 * access.c - who a caller is, and what it may do: the policy of every
 * method, as one table, and the one function that applies it.
 *
 * Owns: the policy table (rules[], a row per operation of srv.h's srv_op_t:
 * each gRPC method, the Batch* methods as their item's, and the fd socket's
 * MAP_REQ) and the principal of a call.  The principal is the uid:
 *   - a call that carries a session's token ("pinpool-token" metadata: every
 *     call libpinpool makes on a context with a session) is that session,
 *     of its peer's uid (SO_PEERCRED), found in O(1) by the token;
 *   - a call without a token (a stock gRPC client over the unix socket, a
 *     TCP caller with the bearer token) has no session and acts as the
 *     daemon's own uid; it is let in only where detached clients are
 *     (--detached-clients yes and no --allow-uid/--allow-gid): otherwise
 *     every method refuses it, Ping and GetPoolInfo included;
 *   - a token that names no session is refused (the session ended, or the
 *     daemon restarted).
 * Admin = root and the daemon's uid: GetPoolInfo shows them every client;
 * they have no other power over another uid's things.  What "allowed" means
 * is the row's: a call acts for the client its client_id names (a session's
 * id only with that session's token; another id only for a caller without
 * a session), on slices that client holds (and, for FREE and MAP, slices its
 * uid keeps), on kept tags and object keys in its uid's namespace (another
 * uid's are never found: Exists says false, Get NOT_FOUND), and on the
 * ipc device pools only as their one uid (do_device_pool_access; a vmm
 * device pool keeps uids apart by chunk, slices.c).
 * Never: changes a client, a slice or an object (the rooms do, after asking
 * here), or waits.
 * Locking (see srv_int.h): srv_access takes srv->lock; the do_* functions run
 * under it; rules[] is constant.
 */
#include "srv_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "pinpool.h"

/* Who may call. */
enum who {
    WHO_CALLER,  /* a session by its token; a caller without one where detached clients are let in */
    WHO_SESSION, /* the fd socket's own session (MAP_REQ) */
};

typedef struct rule {
    const char *method;  /* the gRPC method(s), for a person */
    enum who who;
    bool names_client;   /* the request's client_id: the client the call acts for */
    bool makes_client;   /* it may make a detached client: --max-clients */
    bool kept_too;       /* a slice the caller's uid keeps counts as the client's own */
    const char *acts_on; /* what it reads or changes, and what "allowed" means */
} rule_t;

static const rule_t rules[SRV_NOPS] = {
    [SRV_OP_ALLOC] = {"AllocatePoolMemory", WHO_CALLER, true, true, false,
                      "a new slice of the client (charged to it and its uid); with keep, a tag "
                      "new in its uid's namespace; a device slice only as the device pools' uid"},
    [SRV_OP_FREE] = {"FreePoolMemory", WHO_CALLER, true, false, true,
                     "a slice the client holds, or one its uid keeps; slice 0: all the client's"},
    [SRV_OP_ATTACH] = {"AttachPoolMemory", WHO_CALLER, true, false, false,
                       "the slice kept under a tag in the client's uid's namespace"},
    [SRV_OP_RELEASE] = {"ReleasePoolMemory", WHO_CALLER, true, false, false,
                        "a host slice the client holds; the object is named in its uid's "
                        "namespace"},
    [SRV_OP_ACQUIRE] = {"AcquirePoolMemory", WHO_CALLER, true, true, false,
                        "an object of the client's uid's namespace"},
    [SRV_OP_PUT] = {"Put, BatchPut", WHO_CALLER, false, false, false,
                    "an object of the caller's uid's namespace (charged to its session too)"},
    [SRV_OP_GET] = {"Get, BatchGet", WHO_CALLER, false, false, false,
                    "an object of the caller's uid's namespace"},
    [SRV_OP_EXISTS] = {"Exists, BatchExists", WHO_CALLER, false, false, false,
                       "a key of the caller's uid's namespace (another uid's: false)"},
    [SRV_OP_REMOVE] = {"Remove, BatchRemove", WHO_CALLER, false, false, false,
                       "an object of the caller's uid's namespace"},
    [SRV_OP_INFO] = {"GetPoolInfo", WHO_CALLER, false, false, false,
                     "the pool's totals; the clients of the caller's uid (every uid's for root "
                     "and the daemon's uid)"},
    [SRV_OP_CONFIG] = {"GetServerConfig", WHO_CALLER, false, false, false, "the options"},
    [SRV_OP_PING] = {"Ping", WHO_CALLER, false, false, false, "nothing"},
    [SRV_OP_MAP] = {"MAP_REQ (fd socket)", WHO_SESSION, false, false, true,
                    "the chunk descriptors of a host slice the session holds, or one its uid "
                    "keeps, in its uid's chunks"},
};

/* May callers without a session come in?  Not with --detached-clients no,
 * nor with an allow list (such a caller cannot be identified). */
static bool detached_ok(const srv_config_t *cfg)
{
    return strcmp(cfg->detached_clients, "no") != 0 && cfg->allow_uid[0] == '\0' &&
           cfg->allow_gid[0] == '\0';
}

static bool is_session_id(const char *id)
{
    return id != NULL && strncmp(id, SESSION_PREFIX, strlen(SESSION_PREFIX)) == 0;
}

void do_principal_of(const srv_t *srv, struct srv_client *session, srv_principal_t *p)
{
    p->session = session;
    p->uid = session != NULL ? session->uid : srv->uid;
    p->admin = p->uid == 0 || p->uid == srv->uid;
}

int do_access(srv_t *srv, srv_op_t op, const char *token, const char *client_id,
              srv_principal_t *p, char *msg, size_t msglen)
{
    const rule_t *r = (unsigned)op < SRV_NOPS ? &rules[op] : NULL;
    struct srv_client *s = NULL, *named;
    int rc;

    do_principal_of(srv, NULL, p);
    if (r == NULL || r->who != WHO_CALLER) {
        snprintf(msg, msglen, "internal: operation %d has no row for gRPC callers", (int)op);
        return PINPOOL_EINTERNAL;
    }
    /* Names first: a bad one is the caller's mistake, whoever it is. */
    if (r->names_client) {
        rc = srv_check_client_id(client_id != NULL ? client_id : "", msg, msglen);
        if (rc != 0)
            return rc;
    }
    if (token != NULL && token[0] != '\0') {
        s = do_find_token(srv, token);
        if (s == NULL) {
            if (r->names_client && is_session_id(client_id))
                snprintf(msg, msglen, "calls for session '%s' must carry its token (the '%s' "
                         "metadata from the fd socket's greeting)", client_id, "pinpool-token");
            else
                snprintf(msg, msglen, "%s: the call's pinpool-token names no session of this "
                         "daemon (the session ended, or the daemon restarted): reconnect",
                         r->method);
            return PINPOOL_EPERM;
        }
    } else if (!detached_ok(&srv->cfg)) {
        snprintf(msg, msglen, "%s: this daemon serves only clients with an fd-socket session "
                 "(libpinpool opens one; --detached-clients no, or an --allow-uid/--allow-gid "
                 "list, turns callers without one away), and this call carries no session "
                 "token", r->method);
        return PINPOOL_EPERM;
    }
    do_principal_of(srv, s, p);
    if (!r->names_client)
        return 0;
    named = do_find_client(srv, client_id);
    if (is_session_id(client_id)) {
        if (named == NULL) {
            snprintf(msg, msglen, "client_id '%s' names an fd-socket session that has ended; "
                     "reconnect to get a new one", client_id);
            return PINPOOL_EPERM;
        }
        if (named != s) {
            snprintf(msg, msglen, "calls for session '%s' must carry its token (the '%s' "
                     "metadata from the fd socket's greeting)", client_id, "pinpool-token");
            return PINPOOL_EPERM;
        }
        return 0;
    }
    if (s != NULL) {
        snprintf(msg, msglen, "session '%s' acts as its own client_id, not as '%s'", s->id,
                 client_id);
        return PINPOOL_EPERM;
    }
    /* A detached client (the daemon's uid): a new one takes a place. */
    if (r->makes_client && named == NULL)
        return do_room_for_client(srv, msg, msglen);
    return 0;
}

int srv_access(srv_t *srv, srv_op_t op, const char *token, const char *client_id, char *msg,
               size_t msglen)
{
    srv_principal_t p;
    int rc;

    pthread_mutex_lock(&srv->lock);
    rc = do_access(srv, op, token, client_id, &p, msg, msglen);
    pthread_mutex_unlock(&srv->lock);
    return rc;
}

int do_may_use_slice(srv_t *srv, srv_op_t op, const srv_principal_t *p,
                     const struct srv_client *c, const struct srv_client *holder,
                     uint64_t slice_id, char *msg, size_t msglen)
{
    const rule_t *r = &rules[op];

    (void)srv;
    if (holder != NULL && holder == c)
        return 0;
    if (holder != NULL && holder->kept && r->kept_too && holder->uid == p->uid)
        return 0;
    if (holder != NULL && holder->kept && holder->uid != p->uid)
        snprintf(msg, msglen, "slice %" PRIu64 " is kept by another uid; uid %u may not use it "
                 "(%s: %s)", slice_id, (unsigned)p->uid, r->method, r->acts_on);
    else
        snprintf(msg, msglen, "slice %" PRIu64 " belongs to another client (%s: %s)", slice_id,
                 r->method, r->acts_on);
    return PINPOOL_EPERM;
}

int do_device_pool_access(srv_t *srv, uid_t uid, char *msg, size_t msglen)
{
    if (!srv->dev_uid_set) {
        srv->dev_uid = uid;
        srv->dev_uid_set = true;
        srv_info("the ipc device pools belong to uid %u from now on (the first to allocate in one; "
                 "--device-pool-uid names it at start)", (unsigned)uid);
        return 0;
    }
    if (uid == srv->dev_uid)
        return 0;
    snprintf(msg, msglen, "the device pools belong to uid %u (%s); uid %u may not use them: a "
             "device pool is one cudaMalloc shared by its CUDA IPC handle, so whoever gets a "
             "slice of it can reach all of it. To share a GPU among users start the daemon with "
             "--device-backend vmm (where the driver exports GPU memory as descriptors), or run "
             "one daemon per user, or use host slices", (unsigned)srv->dev_uid,
             srv->cfg.ndevice_uid != 0 ? "--device-pool-uid" : "the first uid that allocated in one",
             (unsigned)uid);
    return PINPOOL_EPERM;
}
