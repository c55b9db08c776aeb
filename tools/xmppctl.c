/*
 * xmppctl: the operator's command line.
 *
 * Node commands go to the running supervisor over the control socket
 * (supervisor/control.h). Account commands write the node's LMDB store
 * directly, so they work whether or not xmppd runs, and a running node sees
 * the change at the next login.
 *
 * Exit status: 0 ok, 1 the command failed, 2 usage, 3 xmppd not reachable.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/jid.h"
#include "storage/accounts.h"
#include "supervisor/control.h"
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
		"-c FILE is the node layout xmppd runs with (default: the built-in one).\n");
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

static void generate_password(char *out, size_t len)
{
	static const char alphabet[] =
		"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
	unsigned char rnd[64];
	if (getrandom(rnd, len, 0) != (ssize_t)len)
		abort(); /* no entropy: never hand out a guessable password */
	for (size_t i = 0; i + 1 < len; i++)
		out[i] = alphabet[rnd[i] % (sizeof alphabet - 1)];
	out[len - 1] = '\0';
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

static void print_account(const char *jid, void *arg)
{
	(void)arg;
	printf("%s\n", jid);
}

/* Many accounts at once ("JID PASSWORD" lines), committed in batches:
 * provisioning and benchmarks add thousands, where one transaction per
 * account would be dominated by fsync. */
static int user_import(const struct config *cfg, struct accounts *acc)
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
			char *sp = strchr(line, ' ');
			if (!line[0])
				continue;
			if (!sp || !sp[1]) {
				fprintf(stderr, "xmppctl: stdin line %zu: expected \"JID PASSWORD\"\n",
					lineno);
				rc = -EINVAL;
				break;
			}
			*sp = '\0';
			if (account_jid(cfg, line, jids[n], sizeof jids[n]) < 0) {
				rc = -EINVAL;
				break;
			}
			rc = scram_creds_new(sp + 1, strlen(sp + 1), SCRAM_DEFAULT_ITERATIONS,
					     &creds[n]);
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

static int user_command(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *sub = argv[0];
	bool needs_jid = strcmp(sub, "list") != 0 && strcmp(sub, "import") != 0;
	if ((needs_jid && argc != 2) || (!needs_jid && argc != 1)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	char bare[1100];
	if (needs_jid && account_jid(cfg, argv[1], bare, sizeof bare) < 0)
		return EXIT_FAILED;
	/* accounts may be added before the node first starts */
	if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "xmppctl: cannot create data directory %s: %s\n", cfg->data_dir,
			strerror(errno));
		return EXIT_FAILED;
	}
	char err[512];
	struct accounts *acc = accounts_open(cfg->data_dir, err, sizeof err);
	if (!acc) {
		fprintf(stderr, "xmppctl: %s\n", err);
		return EXIT_FAILED;
	}
	int status = EXIT_OK, rc = 0;
	if (!strcmp(sub, "list")) {
		rc = accounts_list(acc, print_account, NULL);
	} else if (!strcmp(sub, "import")) {
		rc = user_import(cfg, acc);
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
