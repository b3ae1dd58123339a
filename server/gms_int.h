/*
 * gms_int.h - what gms.c (connections, the lock) and gms_ops.c (the
 * requests of a locked connection) share: the store, the connection, the
 * daemon's GMS state.  Loop thread only (gms.h); no locks.
 */
#ifndef PINPOOL_SRV_GMS_INT_H
#define PINPOOL_SRV_GMS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "gms.h"
#include "gms_wire.h"
#include "ipc.h"
#include "listener.h"

#define GMS_MAX_ALLOCS 65536        /* allocations in one store */
#define GMS_MAX_META 65536          /* metadata keys in one store */
#define GMS_MAX_META_BYTES (256u << 20) /* their keys and values together */

typedef struct gms_alloc {
    char id[GMS_ID_LEN + 1];
    uint64_t size, aligned, slot, handle;
    size_t rank; /* its place in slot order, while the layout hash is computed */
    char tag[GMS_MAX_TAG + 1];
} gms_alloc_t;

typedef struct gms_meta {
    char key[GMS_MAX_KEY + 1];
    char id[GMS_ID_LEN + 1];
    uint64_t offset;
    uint8_t *value;
    size_t len;
} gms_meta_t;

typedef enum gms_mode { GMS_MODE_NONE, GMS_MODE_WAITING, GMS_MODE_RW, GMS_MODE_RO } gms_mode_t;

typedef struct gms_conn gms_conn_t;
typedef struct gms_store gms_store_t;

/* One GPU and tag: one socket, one layout. */
struct gms_store {
    srv_gms_t *g;
    gms_store_t *next;
    srv_listener_t *listener;
    int device;
    char name[96]; /* "GPU 0 tag weights", for the log and errors */
    /* the lock */
    gms_conn_t *rw;
    unsigned ro, waiting_writers;
    gms_conn_t *qhead, *qtail; /* handshakes waiting, in arrival order */
    bool committed, has_owner;
    uint32_t owner; /* the uid whose layout this is (has_owner) */
    /* the layout: allocations sorted by id, metadata sorted by key */
    gms_alloc_t **allocs;
    size_t nallocs, cap_allocs;
    gms_meta_t **meta;
    size_t nmeta, cap_meta;
    uint64_t bytes, meta_bytes, next_slot;
    char hash[65];
};

struct gms_conn {
    ev_io io, wio;
    ev_timer timer; /* the lock wait's timeout */
    srv_gms_t *g;
    gms_store_t *st;
    gms_conn_t *prev, *next;   /* all connections */
    gms_conn_t *qprev, *qnext; /* the store's wait queue */
    ipc_cred_t cred;
    unsigned session;
    gms_mode_t mode;
    gms_lock_t want;
    bool closing; /* end once the output is sent */
    bool broken;  /* end now */
    char refused[256]; /* why admission refused it (answered to its first frame), or "" */
    uint8_t *in;
    size_t in_len, in_cap;
    uint32_t frame_len;
    uint8_t *out;
    size_t out_len, out_off;
    int out_fd; /* to send with out's first byte still unsent, or -1 */
};

struct srv_gms {
    struct ev_loop *loop;
    srv_t *srv;
    int dirfd;
    gms_store_t *stores;
    gms_conn_t *conns;
    unsigned next_session;
    bool closing;
};

/* gms.c */
int gms_send(gms_conn_t *c, gms_out_t *o, int fd);
int gms_send_error(gms_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gms_store_clear(gms_store_t *st);
const char *gms_state_name(const gms_store_t *st);
void gms_try_grant(gms_store_t *st);
/* gms_ops.c: answer r on c (locked RW or RO); errors are ErrorResponses. */
void gms_handle(gms_conn_t *c, const gms_req_t *r);
/* GetRuntimeStateResponse (before a handshake). */
void gms_runtime_state(gms_conn_t *c);

#endif
