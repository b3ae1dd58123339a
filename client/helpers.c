/*
 * helpers.c - the public helpers that need no context: the version and sizes
 * in human units (the error texts are pool/errors.c, below every layer).
 *
 * Owns: nothing but these wrappers.  Never: keeps state.  Locking: none.
 */
#include "pinpool.h"
#include "pool.h"

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
