/*
 * test_callbridges: the call-bridge secrets (storage/callbridges.c): name
 * and secret rules, the generator, and the store with real files in a
 * temporary directory, sharing the accounts' environment. Cross-process
 * cases fork, and each process opens its own environment, as LMDB requires.
 */
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/accounts.h"
#include "storage/callbridges.h"
#include "storage/store-internal.h"
#include "tests/unit/check.h"

static char dir[64];
static char db_path[128];

static struct accounts *open_or_die(void)
{
	char err[256];
	struct accounts *a = accounts_open(dir, err, sizeof err);
	if (!a) {
		printf("  %s\n", err);
		exit(2);
	}
	return a;
}

static void remove_store(void)
{
	char lock[160];
	snprintf(lock, sizeof lock, "%s-lock", db_path);
	unlink(db_path);
	unlink(lock);
}

/* 0 and the normalised name, or the error; OUT is "" on error. */
static int normalise(const char *name, char out[CALLBRIDGE_NAME_MAX])
{
	memset(out, 'x', CALLBRIDGE_NAME_MAX);
	return callbridge_name_normalise(name, out);
}

static void test_names(void)
{
	char out[CALLBRIDGE_NAME_MAX], name[80];

	CHECK(normalise("cb1", out) == 0);
	CHECK_STR(out, "cb1");
	CHECK(normalise("CallBridge-2", out) == 0);
	CHECK_STR(out, "callbridge-2");
	CHECK(normalise("a", out) == 0);
	CHECK_STR(out, "a");
	CHECK(normalise("007", out) == 0); /* digits may start a DNS label */
	CHECK_STR(out, "007");
	CHECK(normalise("a--b", out) == 0);

	memset(name, 'B', 63);
	name[63] = '\0';
	CHECK(normalise(name, out) == 0 && strlen(out) == 63 && out[62] == 'b');
	name[63] = 'b';
	name[64] = '\0';
	CHECK(normalise(name, out) == -EINVAL && out[0] == '\0'); /* 64: too long */

	static const char *const bad[] = {
		"", "-cb", "cb-", "-", "c_b", "c.b", "cb 1", " cb1", "cb1\n", "cb/1",
		"cb@1", "caf\xc3\xa9", "cb\x7f",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (normalise(bad[i], out) != -EINVAL || out[0] != '\0') {
			printf("  accepted name \"%s\"\n", bad[i]);
			CHECK(!"bad name accepted");
		}
	}
	CHECK(normalise(NULL, out) == -EINVAL);
}

static void test_secret_rules(void)
{
	char s[200];

	CHECK(callbridge_secret_valid("kvgP1SRzWVabhiPVAb1") == 0);
	CHECK(callbridge_secret_valid("12345678") == 0); /* CALLBRIDGE_SECRET_MIN */
	CHECK(callbridge_secret_valid("1234567") == -EINVAL);
	CHECK(callbridge_secret_valid("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") == 0);
	CHECK(callbridge_secret_valid("") == -EINVAL);
	CHECK(callbridge_secret_valid(NULL) == -EINVAL);
	CHECK(callbridge_secret_valid("has a space") == -EINVAL);
	CHECK(callbridge_secret_valid("has\ttab12") == -EINVAL);
	CHECK(callbridge_secret_valid("newline12\n") == -EINVAL);
	CHECK(callbridge_secret_valid("del\x7f""12345") == -EINVAL);
	CHECK(callbridge_secret_valid("caf\xc3\xa9""1234") == -EINVAL);

	memset(s, 'k', sizeof s);
	s[CALLBRIDGE_SECRET_MAX - 1] = '\0'; /* 127 characters: the longest */
	CHECK(callbridge_secret_valid(s) == 0);
	s[CALLBRIDGE_SECRET_MAX - 1] = 'k';
	s[CALLBRIDGE_SECRET_MAX] = '\0';
	CHECK(callbridge_secret_valid(s) == -EINVAL);
}

static int alphabet_index(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return 26 + c - 'a';
	if (c >= '0' && c <= '9')
		return 52 + c - '0';
	return -1;
}

static void test_generated_secrets(void)
{
	char a[CALLBRIDGE_SECRET_MAX], b[CALLBRIDGE_SECRET_MAX];

	CHECK(callbridge_secret_generate(a) == 0);
	CHECK(callbridge_secret_generate(b) == 0);
	CHECK(strlen(a) == CALLBRIDGE_SECRET_GEN && strlen(b) == CALLBRIDGE_SECRET_GEN);
	CHECK(strcmp(a, b) != 0);
	CHECK(callbridge_secret_valid(a) == 0);
	for (size_t i = 0; i < CALLBRIDGE_SECRET_GEN; i++)
		CHECK(alphabet_index(a[i]) >= 0);
}

/* Every one of the 62 symbols comes out equally often. 20,000 secrets are
 * 480,000 symbols, about 7,742 of each (standard deviation about 87); a
 * plain "byte % 62" would give 8 of them 25% more (about 9,375), far past
 * the 6-sigma bound used here. */
static void test_generator_is_uniform(void)
{
	enum { SECRETS = 20000 };
	unsigned counts[62] = { 0 };
	char s[CALLBRIDGE_SECRET_MAX];
	double expected = (double)SECRETS * CALLBRIDGE_SECRET_GEN / 62;

	for (int i = 0; i < SECRETS; i++) {
		if (callbridge_secret_generate(s) != 0) {
			CHECK(!"generate failed");
			return;
		}
		for (size_t j = 0; j < CALLBRIDGE_SECRET_GEN; j++) {
			int k = alphabet_index(s[j]);
			CHECK(k >= 0);
			if (k >= 0)
				counts[k]++;
		}
	}
	for (int k = 0; k < 62; k++) {
		if (counts[k] < expected - 530 || counts[k] > expected + 530) {
			printf("  symbol %d drawn %u times, expected about %.0f\n", k, counts[k],
			       expected);
			CHECK(!"generator not uniform");
		}
	}
}

struct seen {
	char names[8][CALLBRIDGE_NAME_MAX];
	char secrets[8][CALLBRIDGE_SECRET_MAX];
	int n;
};

static void collect(const char *name, const char *secret, void *arg)
{
	struct seen *seen = arg;
	if (seen->n < 8) {
		snprintf(seen->names[seen->n], sizeof seen->names[0], "%s", name);
		snprintf(seen->secrets[seen->n], sizeof seen->secrets[0], "%s", secret);
	}
	seen->n++;
}

static void test_round_trip(void)
{
	struct accounts *a = open_or_die();
	char secret[CALLBRIDGE_SECRET_MAX];
	struct seen seen = { .n = 0 };

	CHECK(callbridges_list(a, collect, &seen) == 0 && seen.n == 0);
	CHECK(callbridges_get(a, "cb1", secret) == -ENOENT);
	CHECK(callbridges_del(a, "cb1") == -ENOENT);

	CHECK(callbridges_put(a, "cb2", "secret-two") == 0);
	CHECK(callbridges_put(a, "cb1", "secret-one") == 0);
	CHECK(callbridges_put(a, "bridge-10", "secret-ten") == 0);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK_STR(secret, "secret-one");
	CHECK(callbridges_get(a, "cb2", secret) == 0);
	CHECK_STR(secret, "secret-two");
	CHECK(callbridges_get(a, "cb", secret) == -ENOENT);
	CHECK(callbridges_get(a, "cb10", secret) == -ENOENT);

	CHECK(callbridges_list(a, collect, &seen) == 3 && seen.n == 3);
	CHECK_STR(seen.names[0], "bridge-10"); /* name order */
	CHECK_STR(seen.names[1], "cb1");
	CHECK_STR(seen.names[2], "cb2");
	CHECK_STR(seen.secrets[0], "secret-ten");
	CHECK_STR(seen.secrets[2], "secret-two");

	/* replace: put is insert-or-replace */
	CHECK(callbridges_put(a, "cb1", "secret-one-b") == 0);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK_STR(secret, "secret-one-b");
	seen.n = 0;
	CHECK(callbridges_list(a, collect, &seen) == 3);

	/* add is insert-only: an existing name keeps its secret */
	CHECK(callbridges_add(a, "cb1", "secret-one-c") == -EEXIST);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK_STR(secret, "secret-one-b");
	CHECK(callbridges_add(a, "cb3", "secret-three") == 0);
	CHECK(callbridges_get(a, "cb3", secret) == 0);
	CHECK_STR(secret, "secret-three");
	CHECK(callbridges_add(a, "CB3", "secret-three") == -EINVAL);
	CHECK(callbridges_del(a, "cb3") == 0);

	CHECK(callbridges_del(a, "cb1") == 0);
	CHECK(callbridges_get(a, "cb1", secret) == -ENOENT);
	CHECK(callbridges_del(a, "cb1") == -ENOENT);
	CHECK(callbridges_get(a, "cb2", secret) == 0); /* the others stay */
	seen.n = 0;
	CHECK(callbridges_list(a, collect, &seen) == 2);
	CHECK_STR(seen.names[1], "cb2");
	accounts_close(a);
	remove_store();
}

static void test_bad_arguments(void)
{
	struct accounts *a = open_or_die();
	char secret[CALLBRIDGE_SECRET_MAX];

	CHECK(callbridges_put(a, "CB1", "secret-one") == -EINVAL); /* not normalised */
	CHECK(callbridges_put(a, "cb_1", "secret-one") == -EINVAL);
	CHECK(callbridges_put(a, "", "secret-one") == -EINVAL);
	CHECK(callbridges_put(a, NULL, "secret-one") == -EINVAL);
	CHECK(callbridges_put(a, "cb1", "short") == -EINVAL);
	CHECK(callbridges_put(a, "cb1", "with space") == -EINVAL);
	CHECK(callbridges_put(a, "cb1", NULL) == -EINVAL);
	CHECK(callbridges_get(a, "cb1", secret) == -ENOENT); /* nothing written */
	CHECK(callbridges_put(a, "cb1", "secret-one") == 0);
	CHECK(callbridges_get(a, "CB1", secret) == -EINVAL);
	CHECK(callbridges_del(a, "CB1") == -EINVAL);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK(callbridges_list(a, NULL, NULL) == -EINVAL);
	accounts_close(a);
	remove_store();
}

static void count_account(const char *bare_jid, void *arg)
{
	(void)bare_jid;
	++*(int *)arg;
}

/* Accounts and bridges live side by side in one file without seeing each
 * other; a store made before the callbridges database existed gets it. */
static void test_shares_the_accounts_store(void)
{
	struct scram_creds c, out;
	uint8_t salt[SCRAM_SALT_LEN] = { 1 };
	char secret[CALLBRIDGE_SECRET_MAX];
	struct seen seen = { .n = 0 };
	int status, accounts = 0;

	/* an old store: only the "accounts" database, written with raw LMDB */
	pid_t pid = fork();
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		int ok = mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 8) == 0 &&
			 mdb_env_set_mapsize(env, (size_t)256 << 20) == 0 &&
			 mdb_env_open(env, db_path, MDB_NOSUBDIR, 0600) == 0 &&
			 mdb_txn_begin(env, NULL, 0, &txn) == 0 &&
			 mdb_dbi_open(txn, "accounts", MDB_CREATE, &dbi) == 0 &&
			 mdb_txn_commit(txn) == 0;
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	struct accounts *a = open_or_die();
	CHECK(scram_creds_derive("pw", 2, salt, 1, &c) == 0);
	CHECK(accounts_put(a, "cb1@example.com", &c, 1) == 0);
	CHECK(callbridges_put(a, "cb1", "secret-one") == 0);
	CHECK(accounts_get(a, "cb1", &out) == -ENOENT);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK(accounts_list(a, count_account, &accounts) == 1 && accounts == 1);
	CHECK(callbridges_list(a, collect, &seen) == 1);
	CHECK_STR(seen.names[0], "cb1");
	CHECK(accounts_del(a, "cb1@example.com") == 0);
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK_STR(secret, "secret-one");
	accounts_close(a);
	remove_store();
}

/* Durable and private: synchronous commits (no MDB_NOSYNC and friends), a
 * value there after reopening, and both files mode 0600. */
static void test_durable_and_private(void)
{
	struct accounts *a = open_or_die();
	char secret[CALLBRIDGE_SECRET_MAX], lock[160];
	unsigned int flags = 0;
	struct stat st;

	CHECK(mdb_env_get_flags(store_env(a), &flags) == 0);
	CHECK((flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC | MDB_WRITEMAP)) == 0);
	CHECK(callbridges_put(a, "cb1", "kvgP1SRzWVabhiPVAb1") == 0);
	accounts_close(a);

	a = open_or_die();
	CHECK(callbridges_get(a, "cb1", secret) == 0);
	CHECK_STR(secret, "kvgP1SRzWVabhiPVAb1");
	accounts_close(a);

	snprintf(lock, sizeof lock, "%s-lock", db_path);
	CHECK(stat(db_path, &st) == 0 && (st.st_mode & 07777) == 0600);
	CHECK(stat(lock, &st) == 0 && (st.st_mode & 07777) == 0600);
	remove_store();
}

/* Records callbridges_put() cannot write, put there by a child with raw
 * LMDB calls: get refuses them, list skips them, del still removes them. */
static void test_foreign_records_refused(void)
{
	struct accounts *a = open_or_die();
	char secret[CALLBRIDGE_SECRET_MAX];
	struct seen seen = { .n = 0 };
	int status;

	CHECK(callbridges_put(a, "good", "secret-good") == 0);
	pid_t pid = fork();
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		char long_secret[CALLBRIDGE_SECRET_MAX];
		memset(long_secret, 'k', sizeof long_secret);
		MDB_val k1 = { 5, "short" }, v1 = { 3, "abc" };
		MDB_val k2 = { 5, "space" }, v2 = { 10, "has space!" };
		MDB_val k3 = { 3, "nul" }, v3 = { 10, "secret\0abc" };
		MDB_val k4 = { 4, "long" }, v4 = { sizeof long_secret, long_secret };
		MDB_val k5 = { 5, "UPPER" }, v5 = { 10, "secret-abc" };
		int ok = mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 8) == 0 &&
			 mdb_env_set_mapsize(env, (size_t)256 << 20) == 0 &&
			 mdb_env_open(env, db_path, MDB_NOSUBDIR, 0600) == 0 &&
			 mdb_txn_begin(env, NULL, 0, &txn) == 0 &&
			 mdb_dbi_open(txn, "callbridges", 0, &dbi) == 0 &&
			 mdb_put(txn, dbi, &k1, &v1, 0) == 0 && mdb_put(txn, dbi, &k2, &v2, 0) == 0 &&
			 mdb_put(txn, dbi, &k3, &v3, 0) == 0 && mdb_put(txn, dbi, &k4, &v4, 0) == 0 &&
			 mdb_put(txn, dbi, &k5, &v5, 0) == 0 && mdb_txn_commit(txn) == 0;
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(callbridges_get(a, "short", secret) == -EBADMSG);
	CHECK(callbridges_get(a, "space", secret) == -EBADMSG);
	CHECK(callbridges_get(a, "nul", secret) == -EBADMSG);
	CHECK(callbridges_get(a, "long", secret) == -EBADMSG);
	CHECK(callbridges_list(a, collect, &seen) == 1 && seen.n == 1);
	CHECK_STR(seen.names[0], "good");
	CHECK(callbridges_del(a, "short") == 0);
	CHECK(callbridges_get(a, "short", secret) == -ENOENT);
	accounts_close(a);
	remove_store();
}

/* What makes `xmppctl callbridge add` effective at once: a process that
 * already has the store open (a worker) reads the new secret at its next
 * call, with no reopen; a deletion likewise. */
static void test_other_process_sees_writes(void)
{
	struct accounts *a = open_or_die();
	int to_child[2], to_parent[2], status;
	char byte;

	CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct accounts *b = open_or_die();
		char seen[CALLBRIDGE_SECRET_MAX];
		int ok = callbridges_get(b, "cb1", seen) == -ENOENT;
		ok &= write(to_parent[1], "o", 1) == 1;
		ok &= read(to_child[0], &byte, 1) == 1; /* parent added cb1 */
		ok &= callbridges_get(b, "cb1", seen) == 0 && strcmp(seen, "fresh-secret") == 0;
		ok &= write(to_parent[1], "r", 1) == 1;
		ok &= read(to_child[0], &byte, 1) == 1; /* parent deleted cb1 */
		ok &= callbridges_get(b, "cb1", seen) == -ENOENT;
		accounts_close(b);
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	CHECK(read(to_parent[0], &byte, 1) == 1 && byte == 'o');
	CHECK(callbridges_put(a, "cb1", "fresh-secret") == 0);
	CHECK(write(to_child[1], "w", 1) == 1);
	CHECK(read(to_parent[0], &byte, 1) == 1 && byte == 'r');
	CHECK(callbridges_del(a, "cb1") == 0);
	CHECK(write(to_child[1], "d", 1) == 1);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(to_child[0]);
	close(to_child[1]);
	close(to_parent[0]);
	close(to_parent[1]);
	accounts_close(a);
	remove_store();
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/test_callbridges.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(db_path, sizeof db_path, "%s/xmppd.mdb", dir);

	RUN(test_names);
	RUN(test_secret_rules);
	RUN(test_generated_secrets);
	RUN(test_generator_is_uniform);
	RUN(test_round_trip);
	RUN(test_bad_arguments);
	RUN(test_shares_the_accounts_store);
	RUN(test_durable_and_private);
	RUN(test_foreign_records_refused);
	RUN(test_other_process_sees_writes);

	remove_store();
	rmdir(dir);
	return check_exit();
}
