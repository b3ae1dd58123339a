/*
 * errors.c - error names and messages, version, size units (public helpers).
 */
#include <string.h>

#include "pinpool.h"
#include "pool.h"

const char *pinpool_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define XX(name, value, status, msg)                                           \
    case PINPOOL_E##name:                                                      \
        return msg;
        PINPOOL_ERRNO_MAP(XX)
#undef XX
    default:
        return err < 0 && err > -4096 ? strerror(-err) : "unknown error";
    }
}

const char *pinpool_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define XX(name, value, status, msg)                                           \
    case PINPOOL_E##name:                                                      \
        return "PINPOOL_E" #name;
        PINPOOL_ERRNO_MAP(XX)
#undef XX
    default: {
        const char *name = err < 0 && err > -4096 ? strerrorname_np(-err) : NULL;
        return name != NULL ? name : "UNKNOWN";
    }
    }
}

const char *pinpool_version(void)
{
    return PINPOOL_VERSION_STRING;
}

int pinpool_parse_size(const char *text, uint64_t *out)
{
    return pool_parse_size(text, out);
}

char *pinpool_format_size(uint64_t bytes, char *buf, size_t len)
{
    return pool_format_size(bytes, buf, len);
}
