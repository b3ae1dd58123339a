/*
 * tcpauth.h - the bearer token that gRPC calls over TCP (--listen) must carry.
 *
 * Owns: reading the token file (--listen-token-file), and making it when it is
 * absent: 128 random bits as 32 hex digits, mode 0600, the daemon's own.
 * Never: accepts a file that others could read or change (group or other
 * permission bits, another owner, not a regular file, a symbolic link).
 * No state and no lock: called once at start, on the main thread.
 */
#ifndef PINPOOL_SRV_TCPAUTH_H
#define PINPOOL_SRV_TCPAUTH_H

#include <stddef.h>

#include "config.h"

#define SRV_TOKEN_MAX 256 /* characters of a token, at most */

/*
 * The token for cfg's --listen: from --listen-token-file, or with "auto" from
 * STATE_DIR/listen-token (the state directory resolved and made as
 * srv_config_resolve does).  0 and the token in token (len >= SRV_TOKEN_MAX + 1)
 * and the file's path in path; or an error with a message that names the file
 * and the fix in err.
 */
int srv_tcp_token_load(srv_config_t *cfg, char *token, size_t len, char *path, size_t pathlen,
                       char *err, size_t errlen);

#endif
