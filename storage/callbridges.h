/*
 * callbridges: the call bridges' shared secrets, in the node's LMDB store
 * (the same environment as the accounts: one LMDB environment per process,
 * see storage/accounts.h), named database "callbridges": key = bridge name,
 * value = its secret.
 *
 * The XEP-0114 handshake needs SHA-1(stream id + secret), so the secret
 * itself is kept (not a hash); the file is mode 0600 and no log line ever
 * carries a secret. Writes commit synchronously (durable when the command
 * returns); workers read with short read transactions at every component
 * handshake, so `xmppctl callbridge add` takes effect without a restart.
 *
 * Names: 1-63 characters from a-z 0-9 '-' (a DNS label, since the bridge's
 * address is NAME.DOMAIN), not starting or ending with '-'; upper case is
 * folded to lower case by callbridge_name_normalise.
 * Secrets: CALLBRIDGE_SECRET_MIN to CALLBRIDGE_SECRET_MAX - 1 printable
 * ASCII characters without spaces.
 */
#ifndef XMPPD_CALLBRIDGES_H
#define XMPPD_CALLBRIDGES_H

#include <stddef.h>

#define CALLBRIDGE_NAME_MAX 64     /* bytes including NUL */
#define CALLBRIDGE_SECRET_MIN 8    /* accepted by add-secret */
#define CALLBRIDGE_SECRET_GEN 24   /* length of a generated secret (>= 19) */
#define CALLBRIDGE_SECRET_MAX 128  /* bytes including NUL */

struct accounts; /* the node's store handle: storage/accounts.h */

/* Copy NAME lower-cased into OUT (CALLBRIDGE_NAME_MAX bytes). 0, or -EINVAL
 * when it is not a valid name. */
int callbridge_name_normalise(const char *name, char out[CALLBRIDGE_NAME_MAX]);
/* 0 when SECRET is acceptable, -EINVAL otherwise. */
int callbridge_secret_valid(const char *secret);
/* A new random secret of CALLBRIDGE_SECRET_GEN letters and digits
 * (uniform, from getrandom), NUL-terminated. 0 or -errno. */
int callbridge_secret_generate(char out[CALLBRIDGE_SECRET_MAX]);

/* 0 and SECRET filled (NUL-terminated), -ENOENT, or another -errno.
 * NAME must be normalised. */
int callbridges_get(struct accounts *store, const char *name, char secret[CALLBRIDGE_SECRET_MAX]);
/* Insert or replace. 0 or -errno (-EINVAL for a bad name or secret). */
int callbridges_put(struct accounts *store, const char *name, const char *secret);
/* Insert only: -EEXIST if NAME is there already, else as callbridges_put. */
int callbridges_add(struct accounts *store, const char *name, const char *secret);
/* 0 or -ENOENT. */
int callbridges_del(struct accounts *store, const char *name);
/* FN for each bridge in name order, inside one read transaction (FN must
 * not call callbridges_* or accounts_*). Returns the count or -errno. */
int callbridges_list(struct accounts *store,
		     void (*fn)(const char *name, const char *secret, void *arg), void *arg);

#endif
