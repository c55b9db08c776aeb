/*
 * xmpp-bridge-connect: connect to the XMPP service as a call bridge would,
 * and stay connected (or, with --once, report whether it worked). For
 * operators testing a deployment's DNS, certificates and secrets, and for
 * the tests. See bridge/README.md.
 *
 * The secret never comes from the command line (other users see argv in
 * ps): --secret-file FILE (its first line) or XMPP_BRIDGE_SECRET.
 */
#include "bridge/bridge.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct user {
	char *name, *password;
};

struct program {
	struct bridge *bridge;
	struct user *users;
	int nusers;
	bool once, verbose;
	int result;     /* --once: 0 connected, 1 failed */
};

static struct bridge *stop_target;

static void on_signal(int sig)
{
	(void)sig;
	if (stop_target)
		bridge_stop(stop_target);
}

static void log_line(void *arg, enum bridge_log_level level, const char *line)
{
	static const char *const names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
	const struct program *p = arg;
	struct timeval tv;
	struct tm tm;
	char when[32];

	if (level == BRIDGE_LOG_DEBUG && !p->verbose)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03dZ %s %s\n", when, (int)(tv.tv_usec / 1000), names[level], line);
	fflush(stderr);
}

static void on_state(void *arg, bool connected, const char *reason)
{
	struct program *p = arg;

	(void)reason;
	if (!p->once)
		return;
	p->result = connected ? 0 : 1;
	bridge_stop(p->bridge);
}

/* Compare in time that depends on the lengths only, not on where the
 * bytes differ. */
static bool same_secret(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;

	for (size_t i = 0; i < la && i < lb; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

static bool check_login(void *arg, const char *username, const char *password,
			const char *client_address)
{
	const struct program *p = arg;
	bool ok = false;

	(void)client_address;
	for (int i = 0; i < p->nusers; i++)
		if (strcmp(p->users[i].name, username) == 0)
			ok = same_secret(p->users[i].password, password);
	return ok;
}

static void strip_newline(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

/* First line of PATH into *OUT (malloc'd). 0 or -errno. */
static int read_secret_file(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	if (!f)
		return -errno;
	if (getline(&line, &cap, f) < 0) {
		rc = ferror(f) ? -EIO : -ENODATA;
		free(line);
		line = NULL;
	} else {
		strip_newline(line);
		if (!*line) {
			rc = -ENODATA;
			free(line);
			line = NULL;
		}
	}
	fclose(f);
	*out = line;
	return rc;
}

/* "username password" lines; '#' comments and blank lines skipped. */
static int read_users(const char *path, struct program *p)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	int rc = 0, lineno = 0;

	if (!f) {
		fprintf(stderr, "xmpp-bridge-connect: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) >= 0) {
		char *name = line, *password, *end;
		struct user *grown;

		lineno++;
		strip_newline(line);
		name += strspn(name, " \t");
		if (!*name || *name == '#')
			continue;
		end = name + strcspn(name, " \t");
		password = end + strspn(end, " \t");
		if (!*end || !*password) {
			fprintf(stderr, "xmpp-bridge-connect: %s:%d: expected \"username password\"\n",
				path, lineno);
			rc = -1;
			break;
		}
		*end = '\0';
		grown = realloc(p->users, (size_t)(p->nusers + 1) * sizeof *grown);
		if (!grown) {
			rc = -1;
			break;
		}
		p->users = grown;
		p->users[p->nusers].name = strdup(name);
		p->users[p->nusers].password = strdup(password);
		p->nusers++;
		if (!p->users[p->nusers - 1].name || !p->users[p->nusers - 1].password) {
			fprintf(stderr, "xmpp-bridge-connect: out of memory\n");
			rc = -1;
			break;
		}
	}
	if (line) {
		explicit_bzero(line, cap);
		free(line);
	}
	fclose(f);
	return rc;
}

static void free_users(struct program *p)
{
	for (int i = 0; i < p->nusers; i++) {
		if (p->users[i].password) {
			explicit_bzero(p->users[i].password, strlen(p->users[i].password));
			free(p->users[i].password);
		}
		free(p->users[i].name);
	}
	free(p->users);
}

static void usage(FILE *to)
{
	fprintf(to,
		"usage: xmpp-bridge-connect --name NAME --domain DOMAIN [--address ADDRESS]\n"
		"           [--server HOST[:PORT]] [--dns-server IP[:PORT][,...]] [--ca FILE]\n"
		"           [--no-tls] [--secret-file FILE] [--users FILE] [--once] [--verbose]\n"
		"The secret is the first line of --secret-file, or $XMPP_BRIDGE_SECRET.\n"
		"Without --server, _xmpp-component._tcp.DOMAIN SRV records name the servers.\n"
		"--users: \"username password\" lines accepted in the login hand-off.\n"
		"--once: exit 0 after the first successful handshake, 1 after the first\n"
		"        failure (every target tried once); otherwise run until SIGTERM.\n");
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "domain", required_argument, NULL, 'd' },
		{ "address", required_argument, NULL, 'a' },
		{ "server", required_argument, NULL, 's' },
		{ "dns-server", required_argument, NULL, 'D' },
		{ "ca", required_argument, NULL, 'c' },
		{ "no-tls", no_argument, NULL, 'T' },
		{ "secret-file", required_argument, NULL, 'S' },
		{ "users", required_argument, NULL, 'u' },
		{ "once", no_argument, NULL, '1' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct program p = { .result = 1 };
	struct bridge_config cfg = { 0 };
	const char *secret_file = NULL, *users_file = NULL;
	char *secret = NULL, err[512];
	struct sigaction sa;
	int opt, rc, status = 2;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'n': cfg.name = optarg; break;
		case 'd': cfg.domain = optarg; break;
		case 'a': cfg.address = optarg; break;
		case 's': cfg.server = optarg; break;
		case 'D': cfg.dns_servers = optarg; break;
		case 'c': cfg.ca_file = optarg; break;
		case 'T': cfg.no_tls = true; break;
		case 'S': secret_file = optarg; break;
		case 'u': users_file = optarg; break;
		case '1': p.once = true; break;
		case 'v': p.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || !cfg.name || !cfg.domain) {
		usage(stderr);
		return 2;
	}
	if (secret_file) {
		rc = read_secret_file(secret_file, &secret);
		if (rc < 0) {
			fprintf(stderr, "xmpp-bridge-connect: %s: %s\n", secret_file,
				rc == -ENODATA ? "no secret in the first line" : strerror(-rc));
			return 2;
		}
	} else if (getenv("XMPP_BRIDGE_SECRET") && *getenv("XMPP_BRIDGE_SECRET")) {
		secret = strdup(getenv("XMPP_BRIDGE_SECRET"));
		if (!secret) {
			fprintf(stderr, "xmpp-bridge-connect: out of memory\n");
			return 2;
		}
	} else {
		fprintf(stderr, "xmpp-bridge-connect: no secret: use --secret-file FILE or "
				"XMPP_BRIDGE_SECRET\n");
		return 2;
	}
	if (users_file && read_users(users_file, &p) < 0)
		goto out;

	cfg.secret = secret;
	cfg.auth = check_login;
	cfg.auth_arg = &p;
	cfg.log = log_line;
	cfg.log_arg = &p;
	cfg.state = on_state;
	cfg.state_arg = &p;
	p.bridge = bridge_new(&cfg, err, sizeof err);
	explicit_bzero(secret, strlen(secret));
	if (!p.bridge) {
		fprintf(stderr, "xmpp-bridge-connect: %s\n", err);
		goto out;
	}

	signal(SIGPIPE, SIG_IGN);
	stop_target = p.bridge;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	rc = bridge_run(p.bridge);
	if (rc < 0) {
		fprintf(stderr, "xmpp-bridge-connect: %s\n", strerror(-rc));
		status = 1;
	} else {
		status = p.once ? p.result : 0;
	}
	stop_target = NULL;
	bridge_free(p.bridge);
out:
	free(secret);
	free_users(&p);
	return status;
}
