/*
 * store-internal: what the modules keeping a database in the node's LMDB
 * environment (DATA_DIR/xmppd.mdb) share. For storage/ only: everyone else
 * holds the store as an opaque struct accounts (storage/accounts.h).
 *
 * LMDB forbids opening one environment twice in a process, so there is one
 * handle, made by accounts_open(), and it opens every named database listed
 * here, creating the missing ones, in the write transaction it runs anyway.
 * Databases are never opened later: a reader then needs no write lock, and
 * mdb_dbi_open() never runs beside another transaction, which LMDB forbids.
 * A new database is one more entry here and in accounts.c's name table.
 */
#ifndef XMPPD_STORE_INTERNAL_H
#define XMPPD_STORE_INTERNAL_H

#include <lmdb.h>

struct accounts;

enum store_db {
	STORE_DB_ACCOUNTS,    /* storage/accounts.c */
	STORE_DB_CALLBRIDGES, /* storage/callbridges.c */
	STORE_DB_COUNT
};

MDB_env *store_env(struct accounts *store);
MDB_dbi store_dbi(struct accounts *store, enum store_db db);

/* An LMDB return code as 0 or -errno (MDB_NOTFOUND is -ENOENT). */
int store_errno(int mdb_rc);

/* Begin a write transaction, first clearing the reader slots of dead
 * processes (see accounts.c). 0 or -errno. Commits are synchronous: the
 * environment is opened without MDB_NOSYNC, so a committed write is on disk. */
int store_write_begin(struct accounts *store, MDB_txn **txn);

#endif
