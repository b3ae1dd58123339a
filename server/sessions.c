/*
 * sessions.c - the clients: the client table, fd-socket sessions and their
 * tokens, the uids, what is charged to each (quotas), and who may come in.
 *
 * Owns: srv->clients, owners, tokens, heaviest and uids (the indexes of the
 * client records, srv_int.h), nclients, nkept, nsessions and the owner
 * numbers.  Every client has an owner number in the pools and a uid
 * (sessions: the peer's, from SO_PEERCRED; kept slices: their maker's; a
 * caller without a session acts as the daemon's own uid).  A session client
 * is made by srv_session_open for an fd-socket connection; its id is random
 * and starts with "s-", it carries a secret token that its calls must carry
 * too (access.c finds the session by it), and it lives as long as the
 * connection.  Any other id names a detached client (a stock gRPC caller,
 * the daemon's uid): it appears on its first allocation and goes when
 * nothing is charged to it.  An "s-" id whose session is gone is refused,
 * so that a call racing a dying client cannot leave memory without a lease.
 * Kept slices belong to a client named "kept:<tag>" of their uid (the tag is
 * a name in the uid's namespace: two uids may keep the same tag) that has no
 * session; it holds that one slice and goes with it.  Ordinary clients
 * cannot use the "kept:" prefix.
 * Charges (quotas): do_charge_client and do_charge_uid, called by slices.c
 * and objstore.c at every change, keep each client's and each uid's charge
 * (srv_int.h) up to date, so that a quota check is O(1) and the top clients
 * are a walk of an index; nothing here walks every client per call.
 * Admission: --allow-uid/--allow-gid (numbers parsed once at start, checked
 * on the peer's credentials: its uid, primary and supplementary groups; they
 * turn callers without a session away: access.c), --detached-clients,
 * --max-clients (kept clients do not count).
 * Never: allocates or frees slices itself (slices.c does; srv_session_close
 * frees a session's through it), or holds a client record across a dropped
 * lock: a detached client may be gone after it.
 * Locking (see srv_int.h): srv_session_open/close/admit and srv_pool_page
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

#include <xxhash.h>

/* A uid's clients: the others, then its kept slices, each by id. */
static int member_cmp(const struct srv_client *a, const struct srv_client *b)
{
    if (a->kept != b->kept)
        return a->kept ? 1 : -1;
    return strcmp(a->id, b->id);
}

static int owner_cmp(const struct srv_client *a, const struct srv_client *b)
{
    return a->owner < b->owner ? -1 : a->owner > b->owner;
}

/* Most charged first; owner numbers break ties (and are unique). */
static int charge_cmp(const struct srv_client *a, const struct srv_client *b)
{
    if (a->charge != b->charge)
        return a->charge > b->charge ? -1 : 1;
    return owner_cmp(a, b);
}

static int uid_cmp(const struct srv_uid *a, const struct srv_uid *b)
{
    return a->uid < b->uid ? -1 : a->uid > b->uid;
}

RB_GENERATE_STATIC(member_tree, srv_client, by_member, member_cmp)
RB_GENERATE_STATIC(charge_tree, srv_client, by_charge, charge_cmp)
RB_GENERATE_STATIC(ucharge_tree, srv_client, by_ucharge, charge_cmp)
RB_GENERATE_STATIC(uid_tree, srv_uid, node, uid_cmp)
#include "rbtree_end.h"

/* ---- the hash tables: clients by owner number, sessions by token (lock held) ---- */

#define CHASH_FIRST 64

static size_t owner_hash(uint64_t owner)
{
    return (size_t)XXH3_64bits(&owner, sizeof(owner));
}

/* Tokens and ids: strings. */
static size_t str_hash(const char *s)
{
    return (size_t)XXH3_64bits(s, strlen(s));
}

/* The chain link of c in h (owners, tokens or clients). */
static struct srv_client **chash_next(const srv_t *srv, const struct srv_chash *h,
                                      struct srv_client *c)
{
    return h == &srv->owners ? &c->next_owner
           : h == &srv->tokens ? &c->next_token
                               : &c->next_id;
}

static size_t chash_of(const srv_t *srv, const struct srv_chash *h, const struct srv_client *c)
{
    return h == &srv->owners   ? owner_hash(c->owner)
           : h == &srv->tokens ? str_hash(c->token)
                               : str_hash(c->id);
}

/* Double h (or make its first buckets); false when out of memory (h as it was). */
static bool chash_grow(srv_t *srv, struct srv_chash *h)
{
    size_t nb = h->nb == 0 ? CHASH_FIRST : 2 * h->nb;
    struct srv_client **b = calloc(nb, sizeof(*b));

    if (b == NULL)
        return false;
    for (size_t i = 0; i < h->nb; i++)
        for (struct srv_client *c = h->b[i], *next; c != NULL; c = next) {
            struct srv_client **link = chash_next(srv, h, c);
            size_t k = chash_of(srv, h, c) & (nb - 1);
            next = *link;
            *link = b[k];
            b[k] = c;
        }
    free(h->b);
    h->b = b;
    h->nb = nb;
    return true;
}

/* Add c to h: 0, or -ENOMEM when h has no buckets at all yet and none can be made. */
static int chash_add(srv_t *srv, struct srv_chash *h, struct srv_client *c)
{
    if ((h->n >= h->nb && !chash_grow(srv, h)) && h->nb == 0)
        return -ENOMEM;
    size_t k = chash_of(srv, h, c) & (h->nb - 1);
    *chash_next(srv, h, c) = h->b[k];
    h->b[k] = c;
    h->n++;
    return 0;
}

static void chash_remove(srv_t *srv, struct srv_chash *h, struct srv_client *c)
{
    if (h->nb == 0)
        return;
    for (struct srv_client **p = &h->b[chash_of(srv, h, c) & (h->nb - 1)]; *p != NULL;
         p = chash_next(srv, h, *p))
        if (*p == c) {
            *p = *chash_next(srv, h, c);
            h->n--;
            return;
        }
}

/* ---- the uids (lock held) ---------------------------------------------------------- */

static struct srv_uid *do_find_uid(srv_t *srv, uid_t uid)
{
    struct srv_uid key = {.uid = uid};

    return RB_FIND(uid_tree, &srv->uids, &key);
}

/* uid's record, made if new; NULL: no memory. */
static struct srv_uid *do_get_uid(srv_t *srv, uid_t uid)
{
    struct srv_uid *u = do_find_uid(srv, uid);

    if (u == NULL && (u = calloc(1, sizeof(*u))) != NULL) {
        u->uid = uid;
        RB_INIT(&u->members);
        RB_INIT(&u->heaviest);
        RB_INSERT(uid_tree, &srv->uids, u);
    }
    return u;
}

/* A uid with no client and nothing charged goes. */
static void do_drop_uid_if_idle(srv_t *srv, struct srv_uid *u)
{
    if (u->nclients == 0 && u->charge == 0) {
        RB_REMOVE(uid_tree, &srv->uids, u);
        free(u);
    }
}

uint64_t do_uid_charge(srv_t *srv, uid_t uid)
{
    struct srv_uid *u = do_find_uid(srv, uid);

    return u != NULL ? u->charge : 0;
}

int do_charge_uid(srv_t *srv, uid_t uid, int64_t delta)
{
    struct srv_uid *u = delta > 0 ? do_get_uid(srv, uid) : do_find_uid(srv, uid);

    if (u == NULL)
        return delta > 0 ? -ENOMEM : 0;
    if (delta < 0 && (uint64_t)-delta > u->charge) {
        srv_error("internal: uid %u uncharged %" PRId64 " bytes with %" PRIu64 " charged",
                  (unsigned)uid, -delta, u->charge);
        u->charge = 0;
    } else {
        u->charge += (uint64_t)delta;
    }
    do_drop_uid_if_idle(srv, u);
    return 0;
}

void do_charge_client(srv_t *srv, struct srv_client *c, int64_t delta)
{
    if (c == NULL || delta == 0)
        return;
    RB_REMOVE(charge_tree, &srv->heaviest, c);
    RB_REMOVE(ucharge_tree, &c->u->heaviest, c);
    if (delta < 0 && (uint64_t)-delta > c->charge) {
        srv_error("internal: client %s uncharged %" PRId64 " bytes with %" PRIu64 " charged",
                  c->id, -delta, c->charge);
        c->charge = 0;
    } else {
        c->charge += (uint64_t)delta;
    }
    RB_INSERT(charge_tree, &srv->heaviest, c);
    RB_INSERT(ucharge_tree, &c->u->heaviest, c);
}

int do_quota_check(srv_t *srv, const struct srv_client *c, uint64_t c_add, uid_t uid,
                   uint64_t u_add, const char *what, char *msg, size_t msglen)
{
    const srv_config_t *cfg = &srv->cfg;
    char a[32], b[32], q[32], h[32];
    uint64_t add = c_add;

    if (c != NULL && !c->kept && cfg->client_quota != 0 && add > 0 &&
        c->charge + add > cfg->client_quota) {
        snprintf(msg, msglen, "client %s would hold %s with this %s of %s (it holds %s: its "
                 "slices, the kept slices and objects it made); --client-quota is %s", c->id,
                 pool_format_size(c->charge + add, a, sizeof(a)), what,
                 pool_format_size(add, b, sizeof(b)), pool_format_size(c->charge, h, sizeof(h)),
                 pool_format_size(cfg->client_quota, q, sizeof(q)));
        return PINPOOL_ENOSPC;
    }
    uint64_t have = do_uid_charge(srv, uid);
    add = u_add;
    if (cfg->user_quota != 0 && add > 0 && have + add > cfg->user_quota) {
        snprintf(msg, msglen, "uid %u would hold %s with this %s of %s (it holds %s: the "
                 "slices, kept slices and objects of all its clients, spilled ones too); "
                 "--user-quota is %s", (unsigned)uid,
                 pool_format_size(have + add, a, sizeof(a)), what,
                 pool_format_size(add, b, sizeof(b)), pool_format_size(have, h, sizeof(h)),
                 pool_format_size(cfg->user_quota, q, sizeof(q)));
        return PINPOOL_ENOSPC;
    }
    return 0;
}

/* ---- the client table (lock held) ----------------------------------------------- */

struct srv_client *do_find_client(srv_t *srv, const char *id)
{
    struct srv_client *c;

    if (strlen(id) >= SRV_CLIENT_ID_LEN || srv->clients.nb == 0)
        return NULL;
    for (c = srv->clients.b[str_hash(id) & (srv->clients.nb - 1)]; c != NULL; c = c->next_id)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

struct srv_client *do_find_kept(srv_t *srv, uid_t uid, const char *name)
{
    struct srv_uid *u = do_find_uid(srv, uid);
    struct srv_client key;

    if (u == NULL || strlen(name) >= sizeof(key.id))
        return NULL;
    strcpy(key.id, name);
    key.kept = true;
    return RB_FIND(member_tree, &u->members, &key);
}

struct srv_client *do_find_token(srv_t *srv, const char *token)
{
    struct srv_client *c;

    if (token == NULL || token[0] == '\0' || strlen(token) >= IPC_TOKEN_LEN ||
        srv->tokens.nb == 0)
        return NULL;
    for (c = srv->tokens.b[str_hash(token) & (srv->tokens.nb - 1)]; c != NULL;
         c = c->next_token)
        if (strcmp(c->token, token) == 0)
            return c;
    return NULL;
}

struct srv_client *do_client_of_owner(srv_t *srv, uint64_t owner)
{
    struct srv_client *c;

    if (owner == 0 || srv->owners.nb == 0)
        return NULL;
    for (c = srv->owners.b[owner_hash(owner) & (srv->owners.nb - 1)]; c != NULL;
         c = c->next_owner)
        if (c->owner == owner)
            return c;
    return NULL;
}

/* A new client of uid (NULL: no memory).  Sessions get their token after. */
/* owner 0: the next owner number; else that one (a takeover restores them). */
static void do_remove_client(srv_t *srv, struct srv_client *c);

static struct srv_client *do_add_client_as(srv_t *srv, const char *id, bool session, bool kept,
                                           uid_t uid, uint64_t owner)
{
    struct srv_client *c = calloc(1, sizeof(*c));

    if (c == NULL || (c->u = do_get_uid(srv, uid)) == NULL) {
        free(c);
        return NULL;
    }
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->owner = owner != 0 ? owner : srv->next_owner++;
    if (c->owner >= srv->next_owner)
        srv->next_owner = c->owner + 1;
    if (chash_add(srv, &srv->owners, c) != 0 ||
        (!kept && chash_add(srv, &srv->clients, c) != 0)) {
        chash_remove(srv, &srv->owners, c);
        do_drop_uid_if_idle(srv, c->u);
        free(c);
        return NULL;
    }
    c->uid = uid;
    c->session = session;
    c->kept = kept;
    RB_INSERT(member_tree, &c->u->members, c);
    RB_INSERT(charge_tree, &srv->heaviest, c);
    RB_INSERT(ucharge_tree, &c->u->heaviest, c);
    c->u->nclients++;
    srv->nclients++;
    if (kept)
        srv->nkept++;
    if (session) {
        c->u->nsessions++;
        srv->nsessions++;
    }
    return c;
}

static struct srv_client *do_add_client(srv_t *srv, const char *id, bool session, bool kept,
                                        uid_t uid)
{
    return do_add_client_as(srv, id, session, kept, uid, 0);
}

struct srv_client *do_restore_client(srv_t *srv, const struct srv_client *saved)
{
    struct srv_client *c;

    if (saved->owner == 0 || do_client_of_owner(srv, saved->owner) != NULL ||
        (!saved->kept && do_find_client(srv, saved->id) != NULL))
        return NULL;
    c = do_add_client_as(srv, saved->id, saved->session, saved->kept, saved->uid, saved->owner);
    if (c == NULL)
        return NULL;
    c->maker = saved->maker;
    c->cred = saved->cred;
    if (saved->session) {
        memcpy(c->token, saved->token, sizeof(c->token));
        if (chash_add(srv, &srv->tokens, c) != 0) {
            do_remove_client(srv, c);
            return NULL;
        }
    }
    return c;
}

void do_each_uid_charge(srv_t *srv, void (*fn)(uid_t uid, uint64_t charge, void *arg),
                        void *arg)
{
    struct srv_uid *u;

    RB_FOREACH(u, uid_tree, &srv->uids)
        fn(u->uid, u->charge, arg);
}

static void do_remove_client(srv_t *srv, struct srv_client *c)
{
    struct srv_uid *u = c->u;

    if (!c->kept)
        chash_remove(srv, &srv->clients, c);
    if (c->session && c->token[0] != '\0')
        chash_remove(srv, &srv->tokens, c);
    RB_REMOVE(member_tree, &u->members, c);
    chash_remove(srv, &srv->owners, c);
    RB_REMOVE(charge_tree, &srv->heaviest, c);
    RB_REMOVE(ucharge_tree, &u->heaviest, c);
    u->nclients--;
    srv->nclients--;
    if (c->kept)
        srv->nkept--;
    if (c->session) {
        u->nsessions--;
        srv->nsessions--;
    }
    free(c);
    do_drop_uid_if_idle(srv, u);
}

struct srv_client *do_add_kept(srv_t *srv, const char *name, uid_t uid, uint64_t maker)
{
    struct srv_client *c = do_add_client(srv, name, false, true, uid);

    if (c != NULL)
        c->maker = maker;
    return c;
}

void do_drop_if_idle(srv_t *srv, struct srv_client *c)
{
    if (!c->session && c->charge == 0)
        do_remove_client(srv, c);
}

/* --max-clients: 0, or PINPOOL_ENOSPC with msg when the table is full. */
int do_room_for_client(const srv_t *srv, char *msg, size_t msglen)
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
        /* a caller without a session acts as the daemon's uid */
        c = do_add_client(srv, id, false, false, srv->uid);
        if (c == NULL) {
            snprintf(msg, msglen, "out of memory");
            return -ENOMEM;
        }
    }
    *out = c;
    return 0;
}

/* ---- listing (lock held) ---------------------------------------------------------- */

static void do_usage(srv_t *srv, const struct srv_client *c, srv_client_usage_t *u)
{
    uint64_t dev = 0;

    memset(u, 0, sizeof(*u));
    u->client_id = c->id;
    u->bytes = do_owner_bytes(srv, c->owner, &u->slices, &dev) - dev;
    u->device_bytes = dev;
    u->pid = c->session ? (int32_t)c->cred.pid : 0;
    u->uid = (uint32_t)c->uid;
    u->charged = c->charge;
    u->session = c->session;
    u->kept = c->kept;
}

/*
 * Page tokens (opaque to callers): by id "i/UID/K/ID" (K 1 for a kept
 * client), the last client of the page in the order (uid, kept, id); by
 * bytes "b/CHARGE/OWNER", the last one in the order (charge desc, owner).
 */
static void token_of(const struct srv_client *c, bool by_bytes, char *out, size_t len)
{
    if (by_bytes)
        snprintf(out, len, "b/%" PRIu64 "/%" PRIu64, c->charge, c->owner);
    else
        snprintf(out, len, "i/%u/%d/%s", (unsigned)c->uid, c->kept ? 1 : 0, c->id);
}

/* Parse a page token into key (and *uid for "i/"): 0, or PINPOOL_EINVAL. */
static int parse_token(const char *t, bool by_bytes, struct srv_client *key, uid_t *uid)
{
    unsigned long long a, b;
    unsigned u;
    int kept, n = 0;

    memset(key, 0, sizeof(*key));
    if (by_bytes) {
        if (sscanf(t, "b/%llu/%llu%n", &a, &b, &n) != 2 || t[n] != '\0')
            return PINPOOL_EINVAL;
        key->charge = a;
        key->owner = b;
        return 0;
    }
    if (sscanf(t, "i/%u/%d/%n", &u, &kept, &n) != 2 || n == 0 || (kept != 0 && kept != 1) ||
        strlen(t + n) == 0 || strlen(t + n) >= sizeof(key->id))
        return PINPOOL_EINVAL;
    strcpy(key->id, t + n);
    key->kept = kept == 1;
    *uid = (uid_t)u;
    return 0;
}

/* The first client after key in u's members (key NULL: the first one). */
static struct srv_client *member_after(struct srv_uid *u, struct srv_client *key)
{
    struct srv_client *c;

    if (key == NULL)
        return RB_MIN(member_tree, &u->members);
    c = RB_NFIND(member_tree, &u->members, key);
    if (c != NULL && member_cmp(c, key) == 0)
        c = RB_NEXT(member_tree, &u->members, c);
    return c;
}

int do_page_clients(srv_t *srv, const srv_principal_t *p, const srv_info_query_t *q,
                    void (*fn)(const srv_client_usage_t *usage, void *arg), void *arg,
                    srv_info_page_t *page, char *msg, size_t msglen)
{
    uint32_t want = q->page_size == 0 ? SRV_PAGE_DEFAULT
                    : q->page_size > SRV_PAGE_MAX ? SRV_PAGE_MAX : q->page_size;
    bool one = q->one_uid || !p->admin;
    uid_t only = q->one_uid ? (uid_t)q->uid : p->uid;
    const char *tok = q->page_token != NULL ? q->page_token : "";
    struct srv_client key, *c = NULL, *last = NULL;
    struct srv_uid *u = NULL;
    uid_t from = 0;
    uint32_t n = 0;

    memset(page, 0, sizeof(*page));
    page->all_visible = p->admin;
    page->caller_uid = (uint32_t)p->uid;
    if (!p->admin && q->one_uid && (uid_t)q->uid != p->uid) {
        snprintf(msg, msglen, "uid %u may list only its own clients (uid %u's are shown to "
                 "root and the daemon's uid)", (unsigned)p->uid, (unsigned)q->uid);
        return PINPOOL_EPERM;
    }
    if (strlen(tok) >= SRV_PAGE_TOKEN_LEN ||
        (tok[0] != '\0' && parse_token(tok, q->by_bytes, &key, &from) != 0)) {
        snprintf(msg, msglen, "page_token '%.64s' is not one this daemon handed out (take "
                 "next_page_token of the reply before; \"\" for the first page)", tok);
        return PINPOOL_EINVAL;
    }
    if (one) {
        u = do_find_uid(srv, only);
        page->matching = u != NULL ? u->nclients : 0;
    } else {
        page->matching = srv->nclients;
    }
    if (one && u == NULL)
        return 0;
    if (q->by_bytes) {
        /* The index by charge, daemon-wide or the uid's. */
        if (tok[0] == '\0')
            c = one ? RB_MIN(ucharge_tree, &u->heaviest) : RB_MIN(charge_tree, &srv->heaviest);
        else if (one)
            c = RB_NFIND(ucharge_tree, &u->heaviest, &key);
        else
            c = RB_NFIND(charge_tree, &srv->heaviest, &key);
        if (c != NULL && tok[0] != '\0' && charge_cmp(c, &key) == 0)
            c = one ? RB_NEXT(ucharge_tree, &u->heaviest, c) : RB_NEXT(charge_tree, &srv->heaviest, c);
        for (; c != NULL && n < want; n++) {
            srv_client_usage_t usage;
            do_usage(srv, c, &usage);
            fn(&usage, arg);
            last = c;
            c = one ? RB_NEXT(ucharge_tree, &u->heaviest, c) : RB_NEXT(charge_tree, &srv->heaviest, c);
        }
    } else {
        /* By (uid, kept, id): the uids in order, each one's members. */
        struct srv_uid ukey = {.uid = from};
        if (!one)
            u = tok[0] == '\0' ? RB_MIN(uid_tree, &srv->uids) : RB_NFIND(uid_tree, &srv->uids, &ukey);
        else if (tok[0] != '\0' && from != only)
            return 0; /* a token of another listing: nothing after it here */
        c = u == NULL ? NULL
            : member_after(u, tok[0] != '\0' && u->uid == from ? &key : NULL);
        while (u != NULL && n < want) {
            if (c == NULL) {
                u = one ? NULL : RB_NEXT(uid_tree, &srv->uids, u);
                c = u != NULL ? RB_MIN(member_tree, &u->members) : NULL;
                continue;
            }
            srv_client_usage_t usage;
            do_usage(srv, c, &usage);
            fn(&usage, arg);
            last = c;
            n++;
            c = RB_NEXT(member_tree, &u->members, c);
        }
        /* Is there anything after last? */
        while (c == NULL && u != NULL && !one) {
            u = RB_NEXT(uid_tree, &srv->uids, u);
            c = u != NULL ? RB_MIN(member_tree, &u->members) : NULL;
        }
    }
    if (c != NULL && last != NULL)
        token_of(last, q->by_bytes, page->next_token, sizeof(page->next_token));
    return 0;
}

void do_foreach_uid(srv_t *srv, const srv_principal_t *p,
                    void (*fn)(const srv_uid_usage_t *usage, void *arg), void *arg)
{
    struct srv_uid *u;
    uint32_t n = 0;

    RB_FOREACH(u, uid_tree, &srv->uids) {
        if (!p->admin && u->uid != p->uid)
            continue;
        if (n++ == SRV_UIDS_MAX)
            break;
        srv_uid_usage_t usage = {.uid = (uint32_t)u->uid, .clients = u->nclients,
                                 .sessions = u->nsessions, .charged = u->charge};
        fn(&usage, arg);
    }
}

void srv_clients_close(srv_t *srv)
{
    struct srv_client *c, *next;
    struct srv_uid *u, *unext;

    for (size_t i = 0; i < srv->owners.nb; i++)
        for (c = srv->owners.b[i]; c != NULL; c = next) {
            next = c->next_owner;
            free(c);
        }
    free(srv->owners.b);
    free(srv->tokens.b);
    free(srv->clients.b);
    memset(&srv->owners, 0, sizeof(srv->owners));
    memset(&srv->tokens, 0, sizeof(srv->tokens));
    memset(&srv->clients, 0, sizeof(srv->clients));
    RB_FOREACH_SAFE(u, uid_tree, &srv->uids, unext) {
        RB_REMOVE(uid_tree, &srv->uids, u);
        free(u);
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
    c = do_add_client(srv, name, true, false, cred->uid);
    if (c != NULL) {
        c->cred = *cred;
        random_hex(c->token, 16); /* 128 bits: no two sessions share one */
        if (chash_add(srv, &srv->tokens, c) != 0) {
            do_remove_client(srv, c); /* token[0] != 0 but not in tokens: harmless */
            c = NULL;
        }
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

void srv_session_close(srv_t *srv, srv_client_t *c)
{
    uint64_t freed = 0;
    uint32_t n;
    char sz[32];

    pthread_mutex_lock(&srv->lock);
    n = do_free_owner(srv, c, &freed);
    srv_info("client %s (pid %d) left; %" PRIu32 " slice%s (%s) back to the pool", c->id,
             (int)c->cred.pid, n, n == 1 ? "" : "s", pool_format_size(freed, sz, sizeof(sz)));
    do_remove_client(srv, c); /* what it made that outlives it stays charged to its uid */
    pthread_mutex_unlock(&srv->lock);
}
