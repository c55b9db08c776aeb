/*
 * xmppctl: the operator's command line.
 *
 * Node commands go to the running supervisor over the control socket
 * (supervisor/control.h). Account and call-bridge commands write the
 * node's LMDB store directly, so they work whether or not xmppd runs, and a
 * running node sees the change at the next login or component handshake.
 *
 * Exit status: 0 ok, 1 the command failed, 2 usage, 3 xmppd not reachable.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/config.h"
#include "common/jid.h"
#include "common/randstr.h"
#include "storage/accounts.h"
#include "storage/callbridges.h"
#include "supervisor/control.h"
#include "tools/diagnose.h"
#include "workers/sasl.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static void usage(FILE *to)
{
	fprintf(to,
		"usage: xmppctl [-c FILE] [-s SOCKET] COMMAND\n"
		"commands:\n"
		"  status                 node, workers, sessions, listeners, certificate\n"
		"  sessions               JID, worker, address and TLS of every session\n"
		"  reload                 reload configuration and certificates (like SIGHUP)\n"
		"  enable | disable       resume / stop accepting connections\n"
		"  stop                   graceful stop\n"
		"  cluster status         this node's cluster role and peers\n"
		"  user add JID           password from stdin, or generated and printed\n"
		"  user passwd JID        same password rule\n"
		"  user del JID\n"
		"  user list\n"
		"  user import            lines \"JID PASSWORD\" from stdin (add or replace)\n"
		"  user import-scram      lines \"JID SALT ITERATIONS STORED_KEY SERVER_KEY\"\n"
		"                         from stdin (add or replace): SCRAM-SHA-256 keys kept\n"
		"                         by another server, base64; the salt must be 16 bytes,\n"
		"                         iterations 4096 to 1000000. SHA-1 keys cannot be made\n"
		"                         from these, so such an account has none: SCRAM-SHA-1\n"
		"                         logins fail (not-authorized) while SCRAM-SHA-256(-PLUS)\n"
		"                         and PLAIN work, until `user passwd` sets both\n"
		"  callbridge add NAME    new call bridge: generate its secret, print it\n"
		"                         (fails if NAME exists: add-secret replaces)\n"
		"  callbridge add-secret NAME\n"
		"                         its secret from stdin (no echo on a terminal);\n"
		"                         adds NAME or replaces its secret\n"
		"  callbridge list        name, domain and secret of every call bridge\n"
		"  callbridge del NAME\n"
		"  diagnose [DOMAIN]      DNS, certificate and call-bridge checks, with fixes\n"
		"-c FILE is the node layout xmppd runs with (default: the built-in one).\n"
		"Call-bridge names are DNS labels (a-z, 0-9, '-'; upper case is folded).\n");
}

static int node_command(const struct config *cfg, const char *sock, const char *req)
{
	char *out = NULL;
	int rc = control_request(sock, req, &out);
	if (rc < 0) {
		fprintf(stderr, "xmppctl: cannot reach xmppd at %s: %s\n", sock, strerror(-rc));
		(void)cfg;
		return EXIT_UNREACHABLE;
	}
	fputs(out, stdout);
	free(out);
	return rc == 0 ? EXIT_OK : EXIT_FAILED;
}

/* Normalise JID into BARE; it must be an account of this node's domain. */
static int account_jid(const struct config *cfg, const char *arg, char *bare, size_t cap)
{
	struct jid j;
	if (jid_parse(&j, arg, strlen(arg)) < 0 || !j.local[0] || j.resource[0]) {
		fprintf(stderr, "xmppctl: %s is not a bare JID (user@domain)\n", arg);
		return -1;
	}
	if (strcmp(j.domain, cfg->domain)) {
		fprintf(stderr, "xmppctl: %s is not in this node's domain %s\n", arg, cfg->domain);
		return -1;
	}
	if (jid_bare(&j, bare, cap) < 0 || strlen(bare) > 200) {
		fprintf(stderr, "xmppctl: %s is too long\n", arg);
		return -1;
	}
	return 0;
}

/* LEN - 1 symbols and a NUL. */
static void generate_password(char *out, size_t len)
{
	if (randstr(out, len - 1, RANDSTR_UNAMBIGUOUS) < 0)
		abort(); /* no entropy: never hand out a guessable password */
}

/* Password from the first line of stdin when it is not a terminal; if that
 * is empty (or stdin is a terminal), generate one and say so. */
static int read_password(char *pw, size_t cap, int *generated)
{
	*generated = 0;
	pw[0] = '\0';
	if (!isatty(STDIN_FILENO)) {
		if (fgets(pw, (int)cap, stdin)) {
			pw[strcspn(pw, "\r\n")] = '\0';
		}
	}
	if (!pw[0]) {
		generate_password(pw, 21);
		*generated = 1;
	}
	return 0;
}

/* The node's LMDB store, creating the data directory: accounts and call
 * bridges may be added before the node first starts. NULL after a message. */
static struct accounts *open_store(const struct config *cfg)
{
	char err[512];

	if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "xmppctl: cannot create data directory %s: %s\n", cfg->data_dir,
			strerror(errno));
		return NULL;
	}
	struct accounts *acc = accounts_open(cfg->data_dir, err, sizeof err);
	if (!acc)
		fprintf(stderr, "xmppctl: %s\n", err);
	return acc;
}

static void print_account(const char *jid, void *arg)
{
	(void)arg;
	printf("%s\n", jid);
}

/* One line of an import into *CREDS. Returns the JID (inside LINE), or NULL
 * with *RC = 0 for a line to skip, -EBADMSG for a malformed one, or another
 * -errno when the keys could not be made. */
typedef const char *(*import_line_fn)(char *line, struct scram_creds *creds, int *rc);

/* Many accounts at once, one per line of stdin, committed in batches:
 * provisioning and benchmarks add thousands, where one transaction per
 * account would be dominated by fsync. EXPECTED describes a line, for the
 * error message. */
static int import_accounts(const struct config *cfg, struct accounts *acc,
			   import_line_fn parse, const char *expected)
{
	enum { BATCH = 512 };
	static char jids[BATCH][1100];
	static struct scram_creds creds[BATCH];
	const char *keys[BATCH];
	char line[2200];
	size_t n = 0, total = 0, lineno = 0;
	int rc = 0;
	for (;;) {
		bool eof = !fgets(line, sizeof line, stdin);
		if (!eof) {
			lineno++;
			line[strcspn(line, "\r\n")] = '\0';
			const char *jid = parse(line, &creds[n], &rc);
			if (!jid) {
				explicit_bzero(line, sizeof line);
				if (rc == 0)
					continue;
				if (rc == -EBADMSG) {
					fprintf(stderr, "xmppctl: stdin line %zu: expected %s\n", lineno,
						expected);
					rc = -EINVAL;
				}
				break;
			}
			rc = account_jid(cfg, jid, jids[n], sizeof jids[n]) < 0 ? -EINVAL : 0;
			explicit_bzero(line, sizeof line);
			if (rc < 0)
				break;
			keys[n] = jids[n];
			n++;
		}
		if (n == BATCH || (eof && n)) {
			rc = accounts_put_many(acc, n, keys, creds, 0);
			if (rc < 0)
				break;
			total += n;
			n = 0;
		}
		if (eof)
			break;
	}
	explicit_bzero(creds, sizeof creds);
	if (rc == 0)
		printf("imported %zu accounts\n", total);
	return rc;
}

/* "JID PASSWORD": salted keys made here (PBKDF2). */
static const char *password_line(char *line, struct scram_creds *creds, int *rc)
{
	*rc = 0;
	if (!line[0])
		return NULL;
	char *sp = strchr(line, ' ');
	if (!sp || !sp[1]) {
		*rc = -EBADMSG;
		return NULL;
	}
	*sp = '\0';
	*rc = scram_creds_new(sp + 1, strlen(sp + 1), SCRAM_DEFAULT_ITERATIONS, creds);
	return *rc < 0 ? NULL : line;
}

/* "JID SALT ITERATIONS STORED_KEY SERVER_KEY": accounts migrated from another
 * server that stores SCRAM-SHA-256 keys, not passwords (and the bench runner,
 * which gives every server it compares the same salts and keys): no PBKDF2
 * here, the keys are stored as they come, SHA-256 only: the SHA-1 keys stay
 * zero, and as no client key hashes to zero SCRAM-SHA-1 fails like a wrong
 * password, while PLAIN checks only the SHA-256 keys. */
static const char *scram_line(char *line, struct scram_creds *creds, int *rc)
{
	char *save = NULL, *f[6];
	int n = 0;

	*rc = 0;
	if (!line[strspn(line, " \t")])
		return NULL;
	*rc = -EBADMSG;
	for (char *t = strtok_r(line, " \t", &save); t && n < 6; t = strtok_r(NULL, " \t", &save))
		f[n++] = t;
	if (n != 5)
		return NULL;
	memset(creds, 0, sizeof *creds);
	char *end;
	errno = 0;
	unsigned long it = strtoul(f[2], &end, 10);
	if (errno || *end || f[2][0] < '1' || f[2][0] > '9' || it < SCRAM_DEFAULT_ITERATIONS ||
	    it > 1000000)
		return NULL;
	creds->iterations = (uint32_t)it;
	uint8_t key[33];
	if (base64_decode(f[1], strlen(f[1]), creds->salt, sizeof creds->salt) != SCRAM_SALT_LEN ||
	    base64_decode(f[3], strlen(f[3]), key, sizeof key) != 32)
		return NULL;
	memcpy(creds->stored_key_sha256, key, 32);
	if (base64_decode(f[4], strlen(f[4]), key, sizeof key) != 32)
		return NULL;
	memcpy(creds->server_key_sha256, key, 32);
	explicit_bzero(key, sizeof key);
	*rc = 0;
	return f[0];
}

static int user_command(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *sub = argv[0];
	bool needs_jid = strcmp(sub, "list") != 0 && strcmp(sub, "import") != 0 &&
			 strcmp(sub, "import-scram") != 0;
	if ((needs_jid && argc != 2) || (!needs_jid && argc != 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	char bare[1100];
	if (needs_jid && account_jid(cfg, argv[1], bare, sizeof bare) < 0)
		return EXIT_FAILED;
	struct accounts *acc = open_store(cfg);
	if (!acc)
		return EXIT_FAILED;
	int status = EXIT_OK, rc = 0;
	if (!strcmp(sub, "list")) {
		rc = accounts_list(acc, print_account, NULL);
	} else if (!strcmp(sub, "import")) {
		rc = import_accounts(cfg, acc, password_line, "\"JID PASSWORD\"");
		if (rc == -EINVAL)
			status = EXIT_FAILED, rc = 0;
	} else if (!strcmp(sub, "import-scram")) {
		rc = import_accounts(cfg, acc, scram_line,
				     "\"JID SALT ITERATIONS STORED_KEY SERVER_KEY\" (base64, a "
				     "16-byte salt, 32-byte keys, 4096 to 1000000 iterations)");
		if (rc == -EINVAL)
			status = EXIT_FAILED, rc = 0;
	} else if (!strcmp(sub, "del")) {
		rc = accounts_del(acc, bare);
		if (rc == 0)
			printf("deleted %s\n", bare);
	} else if (!strcmp(sub, "add") || !strcmp(sub, "passwd")) {
		bool add = !strcmp(sub, "add");
		struct scram_creds creds;
		if (!add && (rc = accounts_get(acc, bare, &creds)) < 0)
			goto done;
		char pw[1024];
		int generated;
		read_password(pw, sizeof pw, &generated);
		rc = scram_creds_new(pw, strlen(pw), SCRAM_DEFAULT_ITERATIONS, &creds);
		if (rc == 0)
			rc = accounts_put(acc, bare, &creds, add);
		if (rc == 0) {
			printf("%s %s\n", add ? "added" : "password changed for", bare);
			if (generated)
				printf("password: %s\n", pw);
		}
		explicit_bzero(pw, sizeof pw);
		explicit_bzero(&creds, sizeof creds);
	} else {
		usage(stderr);
		status = EXIT_USAGE;
	}
done:
	if (rc < 0) {
		if (rc == -ENOENT)
			fprintf(stderr, "xmppctl: no such account: %s\n", bare);
		else if (rc == -EEXIST)
			fprintf(stderr, "xmppctl: %s exists already\n", bare);
		else
			fprintf(stderr, "xmppctl: %s: %s\n", sub, strerror(-rc));
		status = EXIT_FAILED;
	}
	accounts_close(acc);
	return status;
}

static volatile sig_atomic_t secret_read_signal;

static void note_secret_read_signal(int sig)
{
	secret_read_signal = sig;
}

/* The first line of stdin into BUF (CAP bytes), without its line end and
 * surrounding blanks (a secret has none; a pasted one may). On a terminal:
 * a prompt on stderr and no echo while it is typed. A terminating signal
 * (Ctrl-C) interrupts the read, and the terminal gets its echo back before
 * the signal takes effect. 0, -EMSGSIZE for a line of CAP bytes or more,
 * or another -errno; BUF is wiped on error. */
static int read_secret(const char *name, char *buf, size_t cap)
{
	static const int signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	struct sigaction old[sizeof signals / sizeof signals[0]];
	struct sigaction on_signal = { .sa_handler = note_secret_read_signal };
	struct termios saved, quiet;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	bool quiet_set = false, too_long = false;
	size_t len = 0, start = 0;
	int rc = 0;

	if (tty) {
		/* no SA_RESTART: the signal must end the blocking read() */
		sigemptyset(&on_signal.sa_mask);
		for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
			sigaction(signals[i], &on_signal, &old[i]);
		quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0) {
			rc = -errno;
			goto restore;
		}
		quiet_set = true;
		fprintf(stderr, "secret for call bridge %s: ", name);
	}
	for (;;) {
		char c;
		ssize_t n;

		if (secret_read_signal) {
			rc = -EINTR;
			break;
		}
		n = read(STDIN_FILENO, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0 || c == '\n')
			break;
		if (len + 1 < cap)
			buf[len++] = c;
		else
			too_long = true; /* read on to the line end all the same */
	}
	while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	while (start < len && (buf[start] == ' ' || buf[start] == '\t'))
		start++;
	memmove(buf, buf + start, len - start);
	buf[len - start] = '\0';
	if (rc == 0 && too_long)
		rc = -EMSGSIZE;
restore:
	if (rc < 0)
		explicit_bzero(buf, cap);
	if (quiet_set) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fputc('\n', stderr); /* the one the user typed was not echoed */
	}
	if (tty) {
		for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
			sigaction(signals[i], &old[i], NULL);
		if (secret_read_signal)
			raise(secret_read_signal); /* its own disposition now */
	}
	return rc;
}

static void print_callbridge(const char *name, const char *secret, void *arg)
{
	const struct config *cfg = arg;

	/* the meeting appliance's `xmpp callbridge list`, so runbooks carry over */
	printf("***\n"
	       "Callbridge : %s\n"
	       "Domain     : %s\n"
	       "Secret     : %s\n",
	       name, cfg->domain, secret);
}

/* `callbridge add` refuses an existing NAME: replacing a secret silently
 * would cut off the bridge that uses it, so that takes add-secret, which
 * says which it did. */
static int callbridge_command(const struct config *cfg, int argc, char **argv)
{
	static const char *const subs[] = { "add", "add-secret", "list", "del" };
	bool known = false;

	for (size_t i = 0; argc >= 1 && i < sizeof subs / sizeof subs[0]; i++)
		known |= !strcmp(argv[0], subs[i]);
	if (!known || argc != (strcmp(argv[0], "list") ? 2 : 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *sub = argv[0];
	char name[CALLBRIDGE_NAME_MAX] = "", secret[CALLBRIDGE_SECRET_MAX];
	if (argc == 2 && callbridge_name_normalise(argv[1], name) < 0) {
		fprintf(stderr, "xmppctl: \"%s\" is not a call bridge name: 1-63 letters, digits "
				"and '-', not starting or ending with '-'\n", argv[1]);
		return EXIT_FAILED;
	}
	struct accounts *store = open_store(cfg);
	if (!store)
		return EXIT_FAILED;
	int status = EXIT_OK, rc = 0;
	if (!strcmp(sub, "list")) {
		rc = callbridges_list(store, print_callbridge, (void *)cfg);
		if (rc == 0)
			printf("no call bridges\n");
		rc = rc > 0 ? 0 : rc;
	} else if (!strcmp(sub, "del")) {
		rc = callbridges_del(store, name);
		if (rc == 0)
			printf("deleted call bridge %s\n", name);
	} else if (!strcmp(sub, "add")) {
		if ((rc = callbridge_secret_generate(secret)) == 0 &&
		    (rc = callbridges_add(store, name, secret)) == 0)
			printf("added call bridge %s\nsecret: %s\n", name, secret);
	} else { /* add-secret */
		rc = read_secret(name, secret, sizeof secret);
		if (rc == 0 && !secret[0]) {
			fprintf(stderr, "xmppctl: no secret on stdin\n");
			status = EXIT_FAILED;
		} else if (rc == -EMSGSIZE || (rc == 0 && callbridge_secret_valid(secret) < 0)) {
			fprintf(stderr, "xmppctl: not a valid secret: %d to %d printable ASCII "
					"characters without spaces, on one line\n",
				CALLBRIDGE_SECRET_MIN, CALLBRIDGE_SECRET_MAX - 1);
			status = EXIT_FAILED, rc = 0;
		} else if (rc == 0) {
			char old[CALLBRIDGE_SECRET_MAX];
			bool existed = callbridges_get(store, name, old) != -ENOENT;
			explicit_bzero(old, sizeof old);
			rc = callbridges_put(store, name, secret);
			if (rc == 0)
				printf("%s call bridge %s\n", existed ? "new secret for" : "added",
				       name);
		}
	}
	explicit_bzero(secret, sizeof secret);
	if (rc < 0) {
		if (rc == -ENOENT)
			fprintf(stderr, "xmppctl: no such call bridge: %s\n", name);
		else if (rc == -EEXIST)
			fprintf(stderr, "xmppctl: call bridge %s exists already (callbridge "
					"add-secret replaces its secret)\n", name);
		else
			fprintf(stderr, "xmppctl: callbridge %s: %s\n", sub, strerror(-rc));
		status = EXIT_FAILED;
	}
	accounts_close(store);
	return status;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *sock = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "+c:s:h")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 's':
			sock = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	static struct config cfg;
	char err[CONFIG_ERR_MAX];
	if (path) {
		if (config_load(&cfg, path, err, sizeof err) < 0) {
			/* A file that does not parse here would not parse in
			 * xmppd either (same parser): the reload fails, and
			 * the running node keeps its configuration. */
			if (!strcmp(argv[0], "reload")) {
				printf("reload failed: %s (xmppd keeps running with its "
				       "current configuration)\n", err);
				return EXIT_FAILED;
			}
			fprintf(stderr, "xmppctl: %s\n", err);
			return EXIT_FAILED;
		}
	} else {
		config_default(&cfg);
	}
	if (!sock)
		sock = cfg.control_socket;

	const char *cmd = argv[0];
	if (!strcmp(cmd, "user"))
		return user_command(&cfg, argc - 1, argv + 1);
	if (!strcmp(cmd, "callbridge"))
		return callbridge_command(&cfg, argc - 1, argv + 1);
	if (!strcmp(cmd, "diagnose")) {
		optind = 0; /* glibc: start getopt afresh for diagnose's own options */
		return diagnose_main(&cfg, argc, argv);
	}
	if (!strcmp(cmd, "cluster")) {
		if (argc != 2 || strcmp(argv[1], "status")) {
			fprintf(stderr, "xmppctl: cluster: only 'cluster status' exists on a "
					"standalone node (clustering is not built yet)\n");
			return EXIT_USAGE;
		}
		return node_command(&cfg, sock, "cluster status");
	}
	static const char *const simple[] = { "status", "sessions", "reload", "enable",
					      "disable", "stop" };
	for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
		if (!strcmp(cmd, simple[i])) {
			if (argc != 1) {
				usage(stderr);
				return EXIT_USAGE;
			}
			return node_command(&cfg, sock, cmd);
		}
	usage(stderr);
	return EXIT_USAGE;
}
