/*
 * errors.c - the messages and names of the error codes (pinpool_errors.h).
 *
 * Owns: pinpool_strerror and pinpool_err_name, public functions of
 * libpinpool that the daemon uses as well (hence here, below every layer, and
 * named pinpool_ rather than pool_).
 * Never: allocates or keeps state; returns anything but a static string.
 * Locking: none needed; both functions are pure.
 */
#include <stddef.h>
#include <string.h>

#include "pinpool_errors.h"

typedef struct err_text {
    int code;
    const char *name, *msg;
} err_text_t;

static const err_text_t errs[] = {
#define XX(name, value, status, msg) {PINPOOL_E##name, "PINPOOL_E" #name, msg},
    PINPOOL_ERRNO_MAP(XX)
#undef XX
};

/* The entry of a PINPOOL_E* code; NULL for anything else. */
static const err_text_t *find(int err)
{
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        if (errs[i].code == err)
            return &errs[i];
    return NULL;
}

static int is_errno(int err)
{
    return err < 0 && err > -4096;
}

const char *pinpool_strerror(int err)
{
    const err_text_t *e = find(err);

    if (err == 0)
        return "success";
    if (e != NULL)
        return e->msg;
    return is_errno(err) ? strerror(-err) : "unknown error";
}

const char *pinpool_err_name(int err)
{
    const err_text_t *e = find(err);
    const char *name;

    if (err == 0)
        return "OK";
    if (e != NULL)
        return e->name;
    name = is_errno(err) ? strerrorname_np(-err) : NULL;
    return name != NULL ? name : "UNKNOWN";
}
