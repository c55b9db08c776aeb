/*
 * callbridges: the call bridges' secrets in the node's LMDB store (see
 * callbridges.h for who reads and writes them).
 *
 * On disk: key = the normalised name, value = the secret's bytes without a
 * NUL. Both are checked again when read, so a record this file could not
 * have written (another tool, a damaged mirror) is refused as -EBADMSG or
 * skipped by the listing, never handed to a handshake half-valid.
 *
 * The environment and the "callbridges" database belong to the accounts
 * handle (storage/store-internal.h): one environment per process.
 */
#include "storage/callbridges.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include "common/randstr.h"

#include "storage/store-internal.h"

static_assert(CALLBRIDGE_SECRET_GEN >= CALLBRIDGE_SECRET_MIN &&
		      CALLBRIDGE_SECRET_GEN < CALLBRIDGE_SECRET_MAX,
	      "a generated secret must pass callbridge_secret_valid()");

int callbridge_name_normalise(const char *name, char out[CALLBRIDGE_NAME_MAX])
{
	size_t len = name ? strnlen(name, CALLBRIDGE_NAME_MAX) : 0;

	/* a DNS label: the bridge's component address is NAME.DOMAIN */
	if (len == 0 || len >= CALLBRIDGE_NAME_MAX || name[0] == '-' || name[len - 1] == '-')
		goto invalid;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		else if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-')
			goto invalid;
		out[i] = c;
	}
	out[len] = '\0';
	return 0;
invalid:
	out[0] = '\0';
	return -EINVAL;
}

/* Printable ASCII without spaces: what survives a terminal, a shell
 * variable and the bridge's configuration file unchanged. */
static bool secret_bytes_valid(const char *s, size_t len)
{
	if (len < CALLBRIDGE_SECRET_MIN || len >= CALLBRIDGE_SECRET_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

int callbridge_secret_valid(const char *secret)
{
	if (!secret || !secret_bytes_valid(secret, strnlen(secret, CALLBRIDGE_SECRET_MAX)))
		return -EINVAL;
	return 0;
}

int callbridge_secret_generate(char out[CALLBRIDGE_SECRET_MAX])
{
	return randstr(out, CALLBRIDGE_SECRET_GEN, RANDSTR_ALNUM);
}

/* NAME as a key. It must already be normalised, so that "CB1" and "cb1"
 * can never become two bridges. */
static int name_key(const char *name, MDB_val *key)
{
	char norm[CALLBRIDGE_NAME_MAX];

	if (callbridge_name_normalise(name, norm) < 0 || strcmp(norm, name) != 0)
		return -EINVAL;
	*key = (MDB_val){ .mv_size = strlen(name), .mv_data = (void *)name };
	return 0;
}

static int secret_decode(const MDB_val *val, char secret[CALLBRIDGE_SECRET_MAX])
{
	if (!secret_bytes_valid(val->mv_data, val->mv_size))
		return -EBADMSG;
	memcpy(secret, val->mv_data, val->mv_size);
	secret[val->mv_size] = '\0';
	return 0;
}

int callbridges_get(struct accounts *store, const char *name, char secret[CALLBRIDGE_SECRET_MAX])
{
	MDB_txn *txn;
	MDB_val key, val;
	int rc;

	if ((rc = name_key(name, &key)) < 0)
		return rc;
	if ((rc = mdb_txn_begin(store_env(store), NULL, MDB_RDONLY, &txn)) != 0)
		return store_errno(rc);
	rc = mdb_get(txn, store_dbi(store, STORE_DB_CALLBRIDGES), &key, &val);
	rc = rc == 0 ? secret_decode(&val, secret) : store_errno(rc);
	mdb_txn_abort(txn);
	return rc;
}

static int put(struct accounts *store, const char *name, const char *secret, unsigned flags)
{
	MDB_txn *txn;
	MDB_val key, val;
	int rc;

	if ((rc = name_key(name, &key)) < 0)
		return rc;
	if (callbridge_secret_valid(secret) < 0)
		return -EINVAL;
	if ((rc = store_write_begin(store, &txn)) < 0)
		return rc;
	val = (MDB_val){ .mv_size = strlen(secret), .mv_data = (void *)secret };
	rc = mdb_put(txn, store_dbi(store, STORE_DB_CALLBRIDGES), &key, &val, flags);
	if (rc == 0)
		rc = mdb_txn_commit(txn); /* synchronous: durable on return */
	else
		mdb_txn_abort(txn);
	return rc == MDB_KEYEXIST ? -EEXIST : store_errno(rc);
}

int callbridges_put(struct accounts *store, const char *name, const char *secret)
{
	return put(store, name, secret, 0);
}

int callbridges_add(struct accounts *store, const char *name, const char *secret)
{
	/* one write transaction: two operators adding the same name at once
	 * cannot both succeed and hand out different secrets */
	return put(store, name, secret, MDB_NOOVERWRITE);
}

int callbridges_del(struct accounts *store, const char *name)
{
	MDB_txn *txn;
	MDB_val key;
	int rc;

	if ((rc = name_key(name, &key)) < 0)
		return rc;
	if ((rc = store_write_begin(store, &txn)) < 0)
		return rc;
	rc = mdb_del(txn, store_dbi(store, STORE_DB_CALLBRIDGES), &key, NULL);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	return store_errno(rc);
}

/* FN runs inside the read transaction: one consistent snapshot, and it must
 * not call back into the store (one transaction per thread). */
int callbridges_list(struct accounts *store,
		     void (*fn)(const char *name, const char *secret, void *arg), void *arg)
{
	char name[CALLBRIDGE_NAME_MAX], secret[CALLBRIDGE_SECRET_MAX];
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val key, val, unused;
	int count = 0;
	int rc;

	if (!fn)
		return -EINVAL;
	if ((rc = mdb_txn_begin(store_env(store), NULL, MDB_RDONLY, &txn)) != 0)
		return store_errno(rc);
	if ((rc = mdb_cursor_open(txn, store_dbi(store, STORE_DB_CALLBRIDGES), &cur)) != 0)
		goto out;
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size >= sizeof name)
			continue; /* not a key callbridges_put() can write */
		memcpy(name, key.mv_data, key.mv_size);
		name[key.mv_size] = '\0';
		if (strlen(name) != key.mv_size || name_key(name, &unused) < 0 ||
		    secret_decode(&val, secret) < 0)
			continue;
		fn(name, secret, arg);
		if (count < INT_MAX)
			count++;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
out:
	explicit_bzero(secret, sizeof secret);
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return rc ? store_errno(rc) : count;
}
