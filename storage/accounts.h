/*
 * accounts: the node's account store in LMDB (DATA_DIR/xmppd.mdb).
 *
 * One named database "accounts": key = bare JID (normalised, "local@domain"),
 * value = struct account_record (versioned, fixed size): salted SCRAM keys,
 * never the password. xmppctl writes; every worker reads with short read
 * transactions, so a change is seen by the next login without a restart.
 * The writer clears stale reader slots (mdb_reader_check) before each write,
 * so a worker killed inside a read transaction cannot pin old pages.
 * The same environment, through the same handle, holds the call bridges'
 * secrets (storage/callbridges.h; storage/store-internal.h says how).
 *
 * An LMDB environment must not cross fork(): each process opens its own.
 */
#ifndef XMPPD_ACCOUNTS_H
#define XMPPD_ACCOUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "workers/sasl.h"

struct accounts;

/* Open (creating if needed) DATA_DIR/xmppd.mdb. Returns NULL with a message in ERR. */
struct accounts *accounts_open(const char *data_dir, char *err, size_t errlen);
void accounts_close(struct accounts *a);

/* 0 and *OUT filled, -ENOENT, or another -errno. */
int accounts_get(struct accounts *a, const char *bare_jid, struct scram_creds *out);
/* Insert or replace. CREATE_ONLY: fail with -EEXIST if present. */
int accounts_put(struct accounts *a, const char *bare_jid, const struct scram_creds *c,
		 int create_only);
/* Insert or replace N accounts in one transaction (all or none). */
int accounts_put_many(struct accounts *a, size_t n, const char *const *bare_jids,
		      const struct scram_creds *creds, int create_only);
int accounts_del(struct accounts *a, const char *bare_jid);
/* Calls FN for each account in key order; returns the count or -errno.
 * FN runs inside the read transaction: it must not call accounts_* itself. */
int accounts_list(struct accounts *a, void (*fn)(const char *bare_jid, void *arg), void *arg);

#endif
