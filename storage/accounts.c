/*
 * accounts: the LMDB account store (see accounts.h for who reads and writes).
 *
 * On-disk record: struct account_record below, in host byte order. The file
 * is node-local (clustered nodes mirror it from etcd, which has its own
 * encoding), so it never moves between machines of different endianness.
 * A record of another size or version is reported as -EBADMSG rather than
 * guessed at; a future version adds a case to record_decode().
 *
 * Every call is one short transaction: a read sees the latest committed
 * write (another process's too), and no reader pins pages past its call.
 * Writers first run mdb_reader_check(), which frees the reader slots of
 * processes that died inside a read transaction: LMDB itself never does, and
 * such a slot keeps every page freed after its snapshot from being reused,
 * so the file would grow with every write until the map is full.
 */
#include "storage/accounts.h"
#include "storage/store-internal.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACCOUNTS_FILE "xmppd.mdb"
#define ACCOUNTS_MAP_SIZE ((size_t)256 << 20)
#define ACCOUNTS_MAX_DBS 8
#define ACCOUNTS_MAX_READERS 512 /* every worker and tool process, with room */

#define ACCOUNT_RECORD_VERSION 1

struct account_record {
	uint32_t version;
	struct scram_creds creds;
};

/* The layout is a file format: changing struct scram_creds needs a new
 * record version, not a silent change of size. */
static_assert(sizeof(struct account_record) == 128, "account record layout changed");
static_assert(offsetof(struct account_record, creds) == 4, "account record layout changed");

/* Every database of the environment (storage/store-internal.h). */
static const char *const store_db_names[STORE_DB_COUNT] = {
	[STORE_DB_ACCOUNTS] = "accounts",
	[STORE_DB_CALLBRIDGES] = "callbridges",
};

struct accounts {
	MDB_env *env;
	MDB_dbi dbi[STORE_DB_COUNT];
};

MDB_env *store_env(struct accounts *a)
{
	return a->env;
}

MDB_dbi store_dbi(struct accounts *a, enum store_db db)
{
	return a->dbi[db];
}

/* LMDB returns errno values and its own MDB_* codes; callers see -errno. */
int store_errno(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
	case MDB_DBS_FULL:
		return -ENOSPC;
	case MDB_READERS_FULL:
		return -EAGAIN;
	case MDB_BAD_VALSIZE:
		return -EINVAL;
	case MDB_INVALID:
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_VERSION_MISMATCH:
	case MDB_INCOMPATIBLE:
		return -EBADMSG;
	default:
		return rc > 0 ? -rc : -EIO;
	}
}

struct accounts *accounts_open(const char *data_dir, char *err, size_t errlen)
{
	struct accounts *a = NULL;
	MDB_txn *txn = NULL;
	char path[PATH_MAX];
	int rc;

	if (!data_dir || !*data_dir) {
		snprintf(err, errlen, "accounts: no data directory");
		return NULL;
	}
	int n = snprintf(path, sizeof path, "%s/%s", data_dir, ACCOUNTS_FILE);
	if (n < 0 || (size_t)n >= sizeof path) {
		snprintf(err, errlen, "accounts: data directory path too long");
		return NULL;
	}
	a = calloc(1, sizeof *a);
	if (!a) {
		snprintf(err, errlen, "accounts: out of memory");
		return NULL;
	}
	const char *what = "mdb_env_create";
	if ((rc = mdb_env_create(&a->env)) != 0)
		goto fail;
	what = "configure";
	if ((rc = mdb_env_set_mapsize(a->env, ACCOUNTS_MAP_SIZE)) != 0 ||
	    (rc = mdb_env_set_maxdbs(a->env, ACCOUNTS_MAX_DBS)) != 0 ||
	    (rc = mdb_env_set_maxreaders(a->env, ACCOUNTS_MAX_READERS)) != 0)
		goto fail;
	/* one file plus "xmppd.mdb-lock", both 0600: they hold password keys */
	what = "open";
	if ((rc = mdb_env_open(a->env, path, MDB_NOSUBDIR, 0600)) != 0)
		goto fail;
	what = "create the databases in";
	if ((rc = mdb_reader_check(a->env, NULL)) != 0 ||
	    (rc = mdb_txn_begin(a->env, NULL, 0, &txn)) != 0)
		goto fail;
	for (int db = 0; db < STORE_DB_COUNT; db++)
		if ((rc = mdb_dbi_open(txn, store_db_names[db], MDB_CREATE, &a->dbi[db])) != 0)
			goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail;
	return a;
fail:
	snprintf(err, errlen, "accounts: cannot %s %s: %s", what, path, mdb_strerror(rc));
	if (txn)
		mdb_txn_abort(txn);
	if (a->env)
		mdb_env_close(a->env);
	free(a);
	return NULL;
}

void accounts_close(struct accounts *a)
{
	if (!a)
		return;
	mdb_env_close(a->env);
	free(a);
}

/* Keys are non-empty C strings within LMDB's key size limit. */
static int make_key(struct accounts *a, const char *bare_jid, MDB_val *key)
{
	if (!bare_jid || !*bare_jid)
		return -EINVAL;
	size_t len = strlen(bare_jid);
	if (len > (size_t)mdb_env_get_maxkeysize(a->env))
		return -ENAMETOOLONG;
	*key = (MDB_val){ .mv_size = len, .mv_data = (void *)bare_jid };
	return 0;
}

static int record_decode(const MDB_val *val, struct scram_creds *out)
{
	struct account_record rec;

	if (val->mv_size != sizeof rec)
		return -EBADMSG;
	memcpy(&rec, val->mv_data, sizeof rec); /* LMDB values are not aligned */
	if (rec.version != ACCOUNT_RECORD_VERSION) {
		explicit_bzero(&rec, sizeof rec);
		return -EBADMSG;
	}
	*out = rec.creds;
	explicit_bzero(&rec, sizeof rec);
	return 0;
}

int accounts_get(struct accounts *a, const char *bare_jid, struct scram_creds *out)
{
	MDB_txn *txn;
	MDB_val key, val;
	int rc;

	if ((rc = make_key(a, bare_jid, &key)) < 0)
		return rc;
	if ((rc = mdb_txn_begin(a->env, NULL, MDB_RDONLY, &txn)) != 0)
		return store_errno(rc);
	rc = mdb_get(txn, a->dbi[STORE_DB_ACCOUNTS], &key, &val);
	rc = rc == 0 ? record_decode(&val, out) : store_errno(rc);
	mdb_txn_abort(txn);
	return rc;
}

/* Run one write: clear dead readers' slots first (see the top of the file). */
int store_write_begin(struct accounts *a, MDB_txn **txn)
{
	int rc = mdb_reader_check(a->env, NULL);

	if (rc == 0)
		rc = mdb_txn_begin(a->env, NULL, 0, txn);
	return store_errno(rc);
}

int accounts_put_many(struct accounts *a, size_t n, const char *const *bare_jids,
		      const struct scram_creds *creds, int create_only)
{
	struct account_record rec;
	MDB_txn *txn;
	MDB_val key, val;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (creds[i].iterations == 0)
			return -EINVAL;
		if ((rc = make_key(a, bare_jids[i], &key)) < 0)
			return rc;
	}
	if ((rc = store_write_begin(a, &txn)) < 0)
		return rc;
	memset(&rec, 0, sizeof rec);
	rec.version = ACCOUNT_RECORD_VERSION;
	for (size_t i = 0; i < n && rc == 0; i++) {
		make_key(a, bare_jids[i], &key);
		rec.creds = creds[i];
		val = (MDB_val){ .mv_size = sizeof rec, .mv_data = &rec };
		rc = mdb_put(txn, a->dbi[STORE_DB_ACCOUNTS], &key, &val,
			     create_only ? MDB_NOOVERWRITE : 0);
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn); /* frees TXN, even on failure */
	else
		mdb_txn_abort(txn);
	explicit_bzero(&rec, sizeof rec);
	return store_errno(rc);
}

int accounts_put(struct accounts *a, const char *bare_jid, const struct scram_creds *c,
		 int create_only)
{
	if (!c)
		return -EINVAL;
	return accounts_put_many(a, 1, &bare_jid, c, create_only);
}

int accounts_del(struct accounts *a, const char *bare_jid)
{
	MDB_txn *txn;
	MDB_val key;
	int rc;

	if ((rc = make_key(a, bare_jid, &key)) < 0)
		return rc;
	if ((rc = store_write_begin(a, &txn)) < 0)
		return rc;
	rc = mdb_del(txn, a->dbi[STORE_DB_ACCOUNTS], &key, NULL);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	return store_errno(rc);
}

/* FN runs inside the read transaction, so it sees one consistent snapshot;
 * it must not call back into accounts_* (one transaction per thread). */
int accounts_list(struct accounts *a, void (*fn)(const char *bare_jid, void *arg), void *arg)
{
	char name[512]; /* LMDB's default key limit is 511 bytes */
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val key, val;
	int count = 0;
	int rc;

	if (!fn)
		return -EINVAL;
	if ((rc = mdb_txn_begin(a->env, NULL, MDB_RDONLY, &txn)) != 0)
		return store_errno(rc);
	if ((rc = mdb_cursor_open(txn, a->dbi[STORE_DB_ACCOUNTS], &cur)) != 0)
		goto out;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size >= sizeof name || memchr(key.mv_data, 0, key.mv_size))
			continue; /* not a key accounts_put() can write */
		memcpy(name, key.mv_data, key.mv_size);
		name[key.mv_size] = '\0';
		fn(name, arg);
		if (count < INT_MAX)
			count++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
out:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return rc ? store_errno(rc) : count;
}
