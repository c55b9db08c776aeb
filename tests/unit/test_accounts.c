/*
 * test_accounts: the LMDB account store (storage/accounts.c), with real
 * files in a temporary directory and real processes for the cross-process
 * cases (each process opens its own environment after fork, as the header
 * requires).
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/accounts.h"
#include "tests/unit/check.h"

static char dir[64];
static char db_path[128];

/* Distinct, quickly made credentials (one PBKDF2 round: this is a storage
 * test, not a KDF test). */
static struct scram_creds creds_for(uint8_t tag)
{
	struct scram_creds c;
	uint8_t salt[SCRAM_SALT_LEN];

	memset(salt, tag, sizeof salt);
	if (scram_creds_derive("pw", 2, salt, 1, &c) != 0)
		abort();
	c.iterations = 1000u + tag; /* tells records apart at a glance */
	return c;
}

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

struct names {
	char seen[8][64];
	int n;
};

static void collect(const char *bare_jid, void *arg)
{
	struct names *names = arg;
	if (names->n < 8)
		snprintf(names->seen[names->n], sizeof names->seen[0], "%s", bare_jid);
	names->n++;
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_round_trip(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds in[3] = { creds_for(1), creds_for(2), creds_for(3) }, out;
	const char *jids[3] = { "carol@example.com", "alice@example.com", "bob@example.com" };

	for (int i = 0; i < 3; i++)
		CHECK(accounts_put(a, jids[i], &in[i], 0) == 0);
	for (int i = 0; i < 3; i++) {
		memset(&out, 0, sizeof out);
		CHECK(accounts_get(a, jids[i], &out) == 0);
		CHECK(memcmp(&out, &in[i], sizeof out) == 0);
	}
	CHECK(accounts_get(a, "dave@example.com", &out) == -ENOENT);
	CHECK(accounts_get(a, "alice@example.co", &out) == -ENOENT);

	struct names names = { .n = 0 };
	CHECK(accounts_list(a, collect, &names) == 3);
	CHECK(names.n == 3);
	CHECK_STR(names.seen[0], "alice@example.com"); /* key order */
	CHECK_STR(names.seen[1], "bob@example.com");
	CHECK_STR(names.seen[2], "carol@example.com");

	CHECK(accounts_del(a, "bob@example.com") == 0);
	CHECK(accounts_get(a, "bob@example.com", &out) == -ENOENT);
	CHECK(accounts_del(a, "bob@example.com") == -ENOENT);
	names.n = 0;
	CHECK(accounts_list(a, collect, &names) == 2);
	CHECK_STR(names.seen[1], "carol@example.com");
	accounts_close(a);
	remove_store();
}

static void test_create_only(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds one = creds_for(1), two = creds_for(2), out;

	CHECK(accounts_put(a, "alice@example.com", &one, 1) == 0);
	CHECK(accounts_put(a, "alice@example.com", &two, 1) == -EEXIST);
	CHECK(accounts_get(a, "alice@example.com", &out) == 0);
	CHECK(memcmp(&out, &one, sizeof out) == 0); /* untouched */
	CHECK(accounts_put(a, "alice@example.com", &two, 0) == 0);
	CHECK(accounts_get(a, "alice@example.com", &out) == 0);
	CHECK(memcmp(&out, &two, sizeof out) == 0);
	accounts_close(a);
	remove_store();
}

static void test_bad_arguments(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds c = creds_for(1), out;
	char long_jid[600];

	memset(long_jid, 'x', sizeof long_jid - 1);
	long_jid[sizeof long_jid - 1] = '\0';
	CHECK(accounts_put(a, "", &c, 0) == -EINVAL);
	CHECK(accounts_put(a, NULL, &c, 0) == -EINVAL);
	CHECK(accounts_put(a, "alice@example.com", NULL, 0) == -EINVAL);
	CHECK(accounts_put(a, long_jid, &c, 0) == -ENAMETOOLONG);
	CHECK(accounts_get(a, long_jid, &out) == -ENAMETOOLONG);
	CHECK(accounts_del(a, "") == -EINVAL);
	c.iterations = 0;
	CHECK(accounts_put(a, "alice@example.com", &c, 0) == -EINVAL);
	CHECK(accounts_list(a, NULL, NULL) == -EINVAL);
	accounts_close(a);

	char err[256] = "";
	CHECK(accounts_open("/nonexistent-xmppd-dir", err, sizeof err) == NULL);
	CHECK(strstr(err, "/nonexistent-xmppd-dir/xmppd.mdb") != NULL);
	CHECK(strstr(err, "No such file") != NULL);
	CHECK(accounts_open("", err, sizeof err) == NULL);
	remove_store();
}

static void test_persists_and_files_are_private(void)
{
	struct scram_creds c = creds_for(7), out;
	struct accounts *a = open_or_die();
	struct stat st;
	char lock[160];

	CHECK(accounts_put(a, "alice@example.com", &c, 1) == 0);
	accounts_close(a);
	a = open_or_die();
	CHECK(accounts_get(a, "alice@example.com", &out) == 0);
	CHECK(memcmp(&out, &c, sizeof out) == 0);
	accounts_close(a);

	snprintf(lock, sizeof lock, "%s-lock", db_path);
	CHECK(stat(db_path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(stat(lock, &st) == 0 && (st.st_mode & 0777) == 0600);
	remove_store();
}

/* A record written by something else than accounts_put() (another version,
 * another size) is refused, not misread. Written by a child with raw LMDB
 * calls, since one process must not open the environment twice. */
static void test_foreign_records_refused(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds out;
	int status;

	pid_t pid = fork();
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *txn;
		MDB_dbi dbi;
		uint8_t v2[128] = { 2 }; /* version 2, right size */
		MDB_val k1 = { 5, "short" }, v1 = { 3, "abc" };
		MDB_val k2 = { 2, "v2" }, vv = { sizeof v2, v2 };
		int ok = mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 8) == 0 &&
			 mdb_env_set_mapsize(env, (size_t)256 << 20) == 0 &&
			 mdb_env_open(env, db_path, MDB_NOSUBDIR, 0600) == 0 &&
			 mdb_txn_begin(env, NULL, 0, &txn) == 0 &&
			 mdb_dbi_open(txn, "accounts", 0, &dbi) == 0 &&
			 mdb_put(txn, dbi, &k1, &v1, 0) == 0 && mdb_put(txn, dbi, &k2, &vv, 0) == 0 &&
			 mdb_txn_commit(txn) == 0;
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(accounts_get(a, "short", &out) == -EBADMSG);
	CHECK(accounts_get(a, "v2", &out) == -EBADMSG);
	accounts_close(a);
	remove_store();
}

/* Each side opens its own environment; a write committed by one is read by
 * the other's next call, with no reopen. */
static void test_other_process_sees_writes(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds c = creds_for(9), out;
	int to_child[2], to_parent[2], status;
	char byte;

	CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct accounts *b = open_or_die();
		struct scram_creds seen;
		int ok = accounts_get(b, "late@example.com", &seen) == -ENOENT; /* not yet */
		ok &= write(to_parent[1], "o", 1) == 1;           /* opened */
		ok &= read(to_child[0], &byte, 1) == 1;           /* parent wrote */
		ok &= accounts_get(b, "late@example.com", &seen) == 0 && seen.iterations == 1009;
		struct scram_creds mine = creds_for(4);
		ok &= accounts_put(b, "child@example.com", &mine, 1) == 0;
		ok &= write(to_parent[1], "w", 1) == 1;
		accounts_close(b);
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	CHECK(read(to_parent[0], &byte, 1) == 1 && byte == 'o');
	CHECK(accounts_put(a, "late@example.com", &c, 1) == 0);
	CHECK(write(to_child[1], "w", 1) == 1);
	CHECK(read(to_parent[0], &byte, 1) == 1 && byte == 'w');
	CHECK(accounts_get(a, "child@example.com", &out) == 0 && out.iterations == 1004);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(to_child[0]);
	close(to_child[1]);
	close(to_parent[0]);
	close(to_parent[1]);
	accounts_close(a);
	remove_store();
}

static int reader_signal_fd;

static void stop_inside_read_txn(const char *bare_jid, void *arg)
{
	(void)bare_jid;
	(void)arg;
	if (write(reader_signal_fd, "r", 1) != 1)
		_exit(1);
	for (;;)
		pause(); /* killed here, holding its read transaction */
}

/* A reader killed with SIGKILL inside a read transaction leaves its reader
 * slot behind. Writes still work, and because writers clear dead slots the
 * pages they free are reused: without that the file grows by a few pages per
 * write (the dead snapshot pins every page freed after it). */
static void test_killed_reader_does_not_pin_pages(void)
{
	struct accounts *a = open_or_die();
	struct scram_creds c = creds_for(1), out;
	int fds[2], status;
	char byte;

	CHECK(accounts_put(a, "alice@example.com", &c, 0) == 0);
	CHECK(pipe(fds) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		reader_signal_fd = fds[1];
		struct accounts *b = open_or_die();
		accounts_list(b, stop_inside_read_txn, NULL);
		_exit(1);
	}
	close(fds[1]);
	CHECK(pid > 0 && read(fds[0], &byte, 1) == 1 && byte == 'r');
	/* a live reader does not block a writer */
	CHECK(accounts_put(a, "bob@example.com", &c, 0) == 0);
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
	close(fds[0]);

	off_t before = file_size(db_path);
	/* 500 writes: about 8 MB of growth without the fix, a few pages with it */
	for (int i = 0; i < 500; i++) {
		c.iterations = 2000u + (uint32_t)i;
		if (accounts_put(a, "alice@example.com", &c, 0) != 0) {
			CHECK(!"put failed");
			break;
		}
	}
	off_t after = file_size(db_path);
	if (after - before >= 256 * 1024)
		printf("  file grew from %lld to %lld bytes\n", (long long)before,
		       (long long)after);
	CHECK(before > 0 && after - before < 256 * 1024);
	CHECK(accounts_get(a, "alice@example.com", &out) == 0 && out.iterations == 2499);
	accounts_close(a);
	remove_store();
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/test_accounts.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(db_path, sizeof db_path, "%s/xmppd.mdb", dir);

	RUN(test_round_trip);
	RUN(test_create_only);
	RUN(test_bad_arguments);
	RUN(test_persists_and_files_are_private);
	RUN(test_foreign_records_refused);
	RUN(test_other_process_sees_writes);
	RUN(test_killed_reader_does_not_pin_pages);

	remove_store();
	rmdir(dir);
	return check_exit();
}
