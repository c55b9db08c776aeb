/*
 * diagnose: the checks the meeting appliance's troubleshooting guides make
 * by hand, run in one go and printed as findings an operator can act on.
 *
 * Every finding is one line "WORD  what was found", WORD being OK, INFO,
 * WARN or FAIL, followed for anything but OK by "cause:" and "fix:" lines.
 * The "what" part uses the words operators search for and that the rest of
 * xmppd and the call bridges log ("no DNS SRV records for
 * _xmpp-component._tcp.DOMAIN", "dns error"), so a finding, a log line and
 * a runbook entry meet in one search. Only FAIL makes the exit status 1: a
 * WARN is a set-up that works today but will bite (expiry in 20 days, no
 * bundle to check the chain against).
 *
 * DNS is checked the way clients and call bridges use it: all SRV queries
 * at once, then the address records of every target, then a TCP connect to
 * every target address and port, each phase bounded by --timeout, so a
 * dead DNS server or a black-holed port costs seconds, not minutes. A
 * query still running when its phase ends is cancelled by freeing that
 * phase's resolver, so a late answer can never change what a later phase
 * already decided.
 *
 * The certificate checks read files only, never the running node: the
 * operator runs diagnose before a reload to learn whether the new files are
 * right, and on a node that does not start to learn why. The key check is
 * tls_ctx_load()'s, the one xmppd itself makes (a real signature, since
 * Debian's wolfSSL accepts any P-256 key for any P-256 certificate).
 *
 * Which records must exist follows the node's listeners: a missing
 * _xmpp-client or _xmpp-component record is a FAIL when the node has a c2s
 * or component listener; otherwise (and for _xmpp-server, since federation
 * has no listener type yet) a missing record is INFO and problems with a
 * record that is published anyway are WARN.
 */
#include "tools/diagnose.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/dns.h"
#include "storage/accounts.h"
#include "storage/callbridges.h"
#include "workers/tls.h"

enum { EXIT_CLEAN = 0, EXIT_PROBLEM = 1, EXIT_USAGE = 2 };

#define DEFAULT_TIMEOUT_MS 3000
#define MAX_TIMEOUT_MS 600000
#define EXPIRY_WARN_DAYS 30
#define DAY_SECONDS 86400
/* A DNS name is at most 253 characters; the longest service prefix,
 * "_xmpp-component._tcp.", leaves this much for the domain. */
#define DOMAIN_MAX 232
/* More certificates than this in one PEM file is not a chain or a bundle
 * anyone deploys (Debian's whole CA list is about 150). */
#define MAX_PEM_CERTS 1024
/* Certificates of the certificate file considered as intermediates. */
#define MAX_CHAIN 16

enum verdict { V_OK, V_INFO, V_WARN, V_FAIL, V_COUNT };

static const char *const verdict_words[V_COUNT] = { "OK", "INFO", "WARN", "FAIL" };

enum service_id { SVC_CLIENT, SVC_SERVER, SVC_COMPONENT, SVC_COUNT };

struct service {
	const char *prefix;        /* "_xmpp-client._tcp" */
	const char *users;         /* who looks the record up, for the texts */
	const char *listener;      /* the listener type that serves it */
	uint16_t default_port;
	bool required;             /* the node has that listener */
	bool names_node;           /* its targets must be in the certificate */
	char name[DNS_NAME_MAX];   /* PREFIX.DOMAIN */
	int status;                /* dns.h status; 1 while the query runs */
	struct dns_srv_target *targets;
	int count;
};

struct host {
	const char *name;          /* points into a service's targets */
	int status;
	struct dns_addr *addrs;
	int count;
};

struct probe {
	const struct service *svc;
	const struct dns_srv_target *target;
	const struct dns_addr *addr;
	int fd;
	int status;                /* 0 connected, -errno, 1 while pending */
};

struct diag {
	const struct config *cfg;
	const char *domain;
	const char *dns_servers;   /* NULL: the system resolver */
	int timeout_ms;
	int counts[V_COUNT];
	unsigned dns_errors_explained;   /* which lookup errors had their hints */
	struct service svc[SVC_COUNT];
	struct host *hosts;
	int host_count;
	struct probe *probes;
	int probe_count;
};

/* ---- output ---------------------------------------------------------------- */

static void say(struct diag *d, enum verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void hint(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct diag *d, enum verdict v, const char *fmt, ...)
{
	va_list ap;

	d->counts[v]++;
	printf("%-4s  ", verdict_words[v]);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* The "cause:" and "fix:" lines under a finding. */
static void hint(const char *label, const char *fmt, ...)
{
	va_list ap;

	printf("      %-6s ", label);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void section(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void section(const char *fmt, ...)
{
	va_list ap;

	putchar('\n');
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void format_date(time_t t, char *out, size_t cap)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, cap, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(out, cap, "(unknown date)");
}

/* ---- options --------------------------------------------------------------- */

static void usage(FILE *to)
{
	fprintf(to,
		"usage: xmppctl diagnose [--dns-server IP[:PORT][,...]] [--timeout MS] [DOMAIN]\n"
		"  Checks the DNS SRV records, the certificate and the call-bridge secrets\n"
		"  of DOMAIN (default: the configured domain). --dns-server: the DNS\n"
		"  servers to ask (default: /etc/resolv.conf); --timeout: how long each DNS\n"
		"  query and each connection may take (default %d ms).\n"
		"Exit status: 0 nothing FAILed, 1 something did, 2 usage.\n",
		DEFAULT_TIMEOUT_MS);
}

/* Letters, digits, '-', '_' and dots between non-empty labels. */
static bool plausible_domain(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_') || ++label > 63)
			return false;
	}
	return label > 0;
}

/* 0, or EXIT_USAGE after a message; -1 when --help was answered. */
static int parse_args(struct diag *d, int argc, char **argv)
{
	static const struct option options[] = {
		{ "dns-server", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	d->domain = d->cfg->domain;
	d->timeout_ms = DEFAULT_TIMEOUT_MS;
	optind = 0;   /* xmppctl's own getopt ran first: start afresh */
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		char *end;
		long ms;

		switch (opt) {
		case 'd':
			d->dns_servers = optarg;
			break;
		case 't':
			errno = 0;
			ms = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || ms < 1 || ms > MAX_TIMEOUT_MS) {
				fprintf(stderr, "xmppctl diagnose: --timeout %s: expected "
						"milliseconds, 1-%d\n", optarg, MAX_TIMEOUT_MS);
				return EXIT_USAGE;
			}
			d->timeout_ms = (int)ms;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc - optind == 1)
		d->domain = argv[optind];
	if (!plausible_domain(d->domain)) {
		fprintf(stderr, "xmppctl diagnose: \"%s\" is not a domain name (letters, digits, "
				"'-', dots; at most %d characters)\n", d->domain, DOMAIN_MAX);
		return EXIT_USAGE;
	}
	return 0;
}

/* ---- DNS and ports ---------------------------------------------------------- */

static bool has_listener(const struct config *cfg, enum listener_type type, uint16_t *port)
{
	for (int i = 0; i < cfg->listener_count; i++)
		if (cfg->listeners[i].type == type) {
			if (port)
				*port = cfg->listeners[i].port;
			return true;
		}
	return false;
}

static void services_init(struct diag *d)
{
	struct service *c = &d->svc[SVC_CLIENT], *s = &d->svc[SVC_SERVER],
		       *k = &d->svc[SVC_COMPONENT];

	c->prefix = "_xmpp-client._tcp";
	c->users = "clients";
	c->listener = "c2s";
	c->default_port = 5222;
	c->required = has_listener(d->cfg, LISTENER_C2S, &c->default_port);
	c->names_node = true;

	s->prefix = "_xmpp-server._tcp";
	s->users = "other XMPP domains (federation)";
	s->listener = "s2s";
	s->default_port = 5269;
	s->required = false;    /* no s2s listener type exists yet */
	s->names_node = false;

	k->prefix = "_xmpp-component._tcp";
	k->users = "call bridges";
	k->listener = "component";
	k->default_port = 5223;
	k->required = has_listener(d->cfg, LISTENER_COMPONENT, &k->default_port);
	k->names_node = true;

	for (int i = 0; i < SVC_COUNT; i++) {
		/* Fits: plausible_domain() bounds the domain. */
		snprintf(d->svc[i].name, sizeof d->svc[i].name, "%s.%s", d->svc[i].prefix,
			 d->domain);
		d->svc[i].status = 1;
	}
}

static int srv_compare(const void *a, const void *b)
{
	const struct dns_srv_target *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	if (x->weight != y->weight)
		return x->weight > y->weight ? -1 : 1;
	return strcasecmp(x->target, y->target);
}

static void on_srv(void *arg, int status, const struct dns_srv_target *targets, int count)
{
	struct service *s = arg;

	if (status == 0 && count <= 0)
		status = -ENOENT;
	if (status == 0) {
		s->targets = calloc((size_t)count, sizeof *targets);
		if (s->targets) {
			memcpy(s->targets, targets, (size_t)count * sizeof *targets);
			/* Priority order, and the same order every run, whatever
			 * the server's rotation: findings are compared by eye. */
			qsort(s->targets, (size_t)count, sizeof *targets, srv_compare);
			s->count = count;
		} else {
			status = -ENOMEM;
		}
	}
	s->status = status;
}

static void on_addr(void *arg, int status, const struct dns_addr *addrs, int count)
{
	struct host *h = arg;

	if (status == 0 && count <= 0)
		status = -ENOENT;
	if (status == 0) {
		h->addrs = calloc((size_t)count, sizeof *addrs);
		if (h->addrs) {
			memcpy(h->addrs, addrs, (size_t)count * sizeof *addrs);
			h->count = count;
		} else {
			status = -ENOMEM;
		}
	}
	h->status = status;
}

static struct host *find_host(struct diag *d, const char *name)
{
	for (int i = 0; i < d->host_count; i++)
		if (!strcasecmp(d->hosts[i].name, name))
			return &d->hosts[i];
	return NULL;
}

/* Run one phase's queries on a resolver of its own. START starts them (its
 * failures are recorded in the entries); the resolver is freed at the end,
 * so what did not answer in time ends as -ECANCELED. 0 or -errno (no
 * resolver: ERR says why). */
static int dns_phase(struct diag *d, void (*start)(struct diag *, struct dns_resolver *),
		     char *err, size_t errlen)
{
	struct dns_resolver *r = dns_new(d->dns_servers, d->timeout_ms, err, errlen);

	if (!r)
		return -EINVAL;
	start(d, r);
	/* A little past the resolver's own deadline, so its -ETIMEDOUT (with
	 * the right words) normally arrives before we give up on it. */
	dns_wait(r, d->timeout_ms + 500);
	dns_free(r);
	return 0;
}

static void start_srv(struct diag *d, struct dns_resolver *r)
{
	for (int i = 0; i < SVC_COUNT; i++) {
		int rc = dns_query_srv(r, d->svc[i].name, on_srv, &d->svc[i]);
		if (rc < 0)
			d->svc[i].status = rc;
	}
}

static void start_addr(struct diag *d, struct dns_resolver *r)
{
	for (int i = 0; i < d->host_count; i++) {
		struct host *h = &d->hosts[i];
		int rc = dns_query_addr(r, h->name, AF_UNSPEC, on_addr, h);
		if (rc < 0)
			h->status = rc;
	}
}

/* The distinct SRV targets of every service that answered. */
static int collect_hosts(struct diag *d)
{
	size_t total = 0;

	for (int i = 0; i < SVC_COUNT; i++)
		total += (size_t)d->svc[i].count;
	if (!total)
		return 0;
	d->hosts = calloc(total, sizeof *d->hosts);
	if (!d->hosts)
		return -ENOMEM;
	for (int i = 0; i < SVC_COUNT; i++)
		for (int t = 0; t < d->svc[i].count; t++) {
			const char *name = d->svc[i].targets[t].target;
			if (find_host(d, name))
				continue;
			d->hosts[d->host_count].name = name;
			d->hosts[d->host_count].status = 1;
			d->host_count++;
		}
	return 0;
}

static int probe_start(struct probe *p, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof ss);
	if (p->addr->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, p->addr->ip, &s6->sin6_addr) != 1)
			return -EINVAL;
		len = sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (inet_pton(AF_INET, p->addr->ip, &s4->sin_addr) != 1)
			return -EINVAL;
		len = sizeof *s4;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
		close(fd);
		return 0;
	}
	if (errno != EINPROGRESS) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	p->fd = fd;
	return 1;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for the pending connects, all at once, until the timeout. */
static int probes_wait(struct diag *d)
{
	struct pollfd *pfds = calloc((size_t)d->probe_count, sizeof *pfds);
	int64_t deadline = monotonic_ms() + d->timeout_ms;
	int *index = calloc((size_t)d->probe_count, sizeof *index);
	int rc = 0;

	if (!pfds || !index) {
		rc = -ENOMEM;
		goto out;
	}
	for (;;) {
		int polled = 0, ready, left;

		for (int i = 0; i < d->probe_count; i++)
			if (d->probes[i].status == 1) {
				pfds[polled] = (struct pollfd){ .fd = d->probes[i].fd,
								.events = POLLOUT };
				index[polled++] = i;
			}
		left = (int)(deadline - monotonic_ms());
		if (polled == 0 || left <= 0)
			break;
		ready = poll(pfds, (nfds_t)polled, left);
		if (ready < 0 && errno != EINTR) {
			rc = -errno;
			goto out;
		}
		for (int k = 0; k < polled && ready > 0; k++) {
			struct probe *p = &d->probes[index[k]];
			int soerr = 0;
			socklen_t len = sizeof soerr;

			if (!pfds[k].revents)
				continue;
			ready--;
			if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
				soerr = errno;
			p->status = -soerr;
			close(p->fd);
			p->fd = -1;
		}
	}
out:
	for (int i = 0; i < d->probe_count; i++)
		if (d->probes[i].status == 1) {
			close(d->probes[i].fd);
			d->probes[i].fd = -1;
			d->probes[i].status = -ETIMEDOUT;
		}
	free(pfds);
	free(index);
	return rc;
}

/* One connect per SRV record and address of its target. */
static int run_probes(struct diag *d)
{
	size_t total = 0;

	for (int i = 0; i < SVC_COUNT; i++)
		for (int t = 0; t < d->svc[i].count; t++) {
			struct host *h = find_host(d, d->svc[i].targets[t].target);
			if (h && h->status == 0)
				total += (size_t)h->count;
		}
	if (!total)
		return 0;
	d->probes = calloc(total, sizeof *d->probes);
	if (!d->probes)
		return -ENOMEM;
	for (int i = 0; i < SVC_COUNT; i++)
		for (int t = 0; t < d->svc[i].count; t++) {
			const struct dns_srv_target *target = &d->svc[i].targets[t];
			struct host *h = find_host(d, target->target);

			for (int a = 0; h && h->status == 0 && a < h->count; a++) {
				struct probe *p = &d->probes[d->probe_count++];
				p->svc = &d->svc[i];
				p->target = target;
				p->addr = &h->addrs[a];
				p->fd = -1;
				p->status = probe_start(p, target->port);
			}
		}
	return probes_wait(d);
}

static const char *dns_server_text(const struct diag *d)
{
	return d->dns_servers && *d->dns_servers ? d->dns_servers : "the system resolver";
}

static void report_lookup_error(struct diag *d, const struct service *s, enum verdict v,
				const char *name, int status)
{
	unsigned bit;

	if (status == -ECANCELED)
		status = -ETIMEDOUT;   /* our phase deadline, not the resolver's */
	say(d, v, "dns error looking up %s: %s", name, dns_status_text(status));
	/* A broken server fails every lookup alike: explain it once. */
	bit = status == -ETIMEDOUT ? 1u : status == -ECONNREFUSED ? 2u : 4u;
	if (d->dns_errors_explained & bit) {
		hint("cause:", "as above");
		return;
	}
	d->dns_errors_explained |= bit;
	switch (status) {
	case -ETIMEDOUT:
		hint("cause:", "no answer from %s within %d ms: the server is down or "
		     "unreachable (firewall, wrong address)", dns_server_text(d), d->timeout_ms);
		hint("fix:", "check the DNS servers in /etc/resolv.conf (or --dns-server) "
		     "and that UDP and TCP port 53 reach them");
		break;
	case -ECONNREFUSED:
		hint("cause:", "nothing answers DNS at %s, or the server refused the query "
		     "or failed (REFUSED, SERVFAIL): it does not serve %s, or its zone is "
		     "broken", dns_server_text(d), d->domain);
		hint("fix:", "ask a server that serves %s (--dns-server, /etc/resolv.conf), "
		     "or repair its zone (named-checkzone)", d->domain);
		break;
	default:
		hint("cause:", "the resolver failed, and %s that use it fail the same way",
		     s->users);
		hint("fix:", "check the DNS servers in /etc/resolv.conf (or --dns-server)");
		break;
	}
}

static void report_missing_srv(struct diag *d, const struct service *s)
{
	if (!s->required) {
		say(d, V_INFO, "no DNS SRV records for %s (not checked: no %s listener "
			       "configured)", s->name, s->listener);
		return;
	}
	say(d, V_FAIL, "no DNS SRV records for %s", s->name);
	if (s == &d->svc[SVC_COMPONENT])
		hint("cause:", "call bridges find the XMPP service through this record; "
		     "without it they log \"No DNS SRV records for %s\" and disconnect "
		     "with \"dns error\"", s->name);
	else
		hint("cause:", "clients look this record up to find the nodes of %s "
		     "(RFC 6120 section 3.2); without it they try %s itself on port 5222",
		     d->domain, d->domain);
	hint("fix:", "publish one SRV record per node in the %s zone, e.g. "
	     "\"%s. 3600 IN SRV 10 50 %u NODE-FQDN.\" (the port of the node's %s "
	     "listener), and an A record for NODE-FQDN", d->domain, s->name,
	     (unsigned)s->default_port, s->listener);
}

static void report_connect(struct diag *d, const struct probe *p, enum verdict bad)
{
	const struct dns_srv_target *t = p->target;
	const struct service *s = p->svc;

	if (p->status == 0) {
		say(d, V_OK, "%s:%u (%s) accepts TCP connections", t->target, (unsigned)t->port,
		    p->addr->ip);
		return;
	}
	say(d, bad, "cannot connect to %s:%u (%s), the SRV target of %s: %s", t->target,
	    (unsigned)t->port, p->addr->ip, s->name, strerror(-p->status));
	if (!s->required) {
		hint("cause:", "nothing accepts connections there, and this node has no %s "
		     "listener configured", s->listener);
		hint("fix:", "remove the %s record if the service is not offered, or point "
		     "it at a server that offers it", s->name);
		return;
	}
	if (p->status == -ETIMEDOUT)
		hint("cause:", "no answer within %d ms: a firewall drops the traffic, or %s "
		     "is not the address of that node", d->timeout_ms, p->addr->ip);
	else
		hint("cause:", "nothing accepts connections there: xmppd is not running on "
		     "that node, or its %s listener uses another address or port",
		     s->listener);
	hint("fix:", "start xmppd on %s, or make the SRV record's port and the node's %s "
	     "listener (listeners: in its YAML) agree, or open port %u in the firewall",
	     t->target, s->listener, (unsigned)t->port);
}

static void report_service(struct diag *d, const struct service *s)
{
	enum verdict bad = s->required ? V_FAIL : V_WARN;
	char list[1024];
	size_t used = 0;

	if (s->status == -ENOENT) {
		report_missing_srv(d, s);
		return;
	}
	if (s->status != 0) {
		report_lookup_error(d, s, s->required ? V_FAIL : V_INFO, s->name, s->status);
		return;
	}
	list[0] = '\0';
	for (int t = 0; t < s->count && used < sizeof list; t++) {
		int n = snprintf(list + used, sizeof list - used, "%s%s:%u (priority %u, weight %u)",
				 t ? ", " : "", s->targets[t].target, (unsigned)s->targets[t].port,
				 (unsigned)s->targets[t].priority, (unsigned)s->targets[t].weight);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	say(d, V_OK, "%s: %d SRV record%s: %s%s", s->name, s->count, s->count == 1 ? "" : "s",
	    list, used >= sizeof list ? "..." : "");
	if (!s->required)
		printf("      (published, though this node has no %s listener)\n", s->listener);

	for (int t = 0; t < s->count; t++) {
		const struct dns_srv_target *target = &s->targets[t];
		const struct host *h = find_host(d, target->target);

		if (!h)
			continue;
		if (h->status == -ENOENT) {
			say(d, bad, "%s, the SRV target of %s, has no A or AAAA record",
			    target->target, s->name);
			hint("cause:", "%s cannot reach it: an SRV target must be a host name "
			     "with address records (not a CNAME, RFC 2782)", s->users);
			hint("fix:", "add an A (or AAAA) record for %s, or correct the SRV "
			     "record's target", target->target);
		} else if (h->status != 0) {
			report_lookup_error(d, s, bad, target->target, h->status);
		}
		for (int i = 0; i < d->probe_count; i++)
			if (d->probes[i].target == target)
				report_connect(d, &d->probes[i], bad);
	}
}

static void check_dns(struct diag *d)
{
	char err[256];
	int rc;

	section("DNS: %s, asking %s (timeout %d ms)", d->domain, dns_server_text(d),
		d->timeout_ms);
	if (dns_phase(d, start_srv, err, sizeof err) < 0) {
		say(d, V_FAIL, "dns error: cannot set up the resolver: %s", err);
		hint("cause:", "the DNS server list (--dns-server or /etc/resolv.conf) "
		     "cannot be used");
		hint("fix:", "give servers as IP[:PORT][,IP[:PORT]...], or repair "
		     "/etc/resolv.conf");
		return;
	}
	rc = collect_hosts(d);
	if (rc == 0 && d->host_count && dns_phase(d, start_addr, err, sizeof err) < 0)
		rc = -ENOMEM;   /* it just worked for the SRV phase */
	if (rc == 0)
		rc = run_probes(d);
	if (rc < 0) {
		say(d, V_FAIL, "could not finish the DNS checks: %s", strerror(-rc));
		hint("cause:", "this machine ran out of memory or file descriptors");
		hint("fix:", "run diagnose again");
		return;
	}
	for (int i = 0; i < SVC_COUNT; i++)
		report_service(d, &d->svc[i]);
}

/* ---- certificate ------------------------------------------------------------- */

/* RFC 6125 section 6.4: NAME is PATTERN, ignoring case and a trailing dot,
 * or PATTERN is "*.REST" and NAME is one more label in front of REST. Only
 * a whole left-most label may be a wildcard, and "*.com"-like patterns (one
 * label after the star) match nothing, as browsers decide. */
static bool san_matches(const char *pattern, const char *name)
{
	size_t plen = strlen(pattern), nlen = strlen(name);
	const char *dot;

	if (plen && pattern[plen - 1] == '.')
		plen--;
	if (nlen && name[nlen - 1] == '.')
		nlen--;
	if (plen == 0 || nlen == 0)
		return false;
	if (pattern[0] != '*')
		return plen == nlen && !strncasecmp(pattern, name, nlen);
	if (plen < 3 || pattern[1] != '.' || !memchr(pattern + 2, '.', plen - 2) ||
	    memchr(pattern + 2, '*', plen - 2))
		return false;
	dot = memchr(name, '.', nlen);
	if (!dot || dot == name)
		return false;
	return (size_t)(name + nlen - dot) == plen - 1 &&
	       !strncasecmp(dot, pattern + 1, plen - 1);
}

/* The SAN of INFO that covers NAME, copied into OUT; false when none. */
static bool cert_names(const struct tls_cert_info *info, const char *name, char *out,
		       size_t cap)
{
	const char *p = info->sans;

	while (*p) {
		size_t n = strcspn(p, ",");
		char san[256];

		if (n < sizeof san) {
			memcpy(san, p, n);
			san[n] = '\0';
			if (san_matches(san, name)) {
				snprintf(out, cap, "%s", san);
				return true;
			}
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

static void check_name(struct diag *d, const struct tls_cert_info *info, const char *name,
		       const char *why)
{
	char san[256];

	if (cert_names(info, name, san, sizeof san)) {
		say(d, V_OK, "certificate names %s (%s), by its DNS name %s", name, why, san);
		return;
	}
	say(d, V_FAIL, "certificate does not name %s (%s): its DNS names are: %s", name, why,
	    info->sans[0] ? info->sans : "(none)");
	hint("cause:", "clients and call bridges that connect to %s check that the "
	     "certificate's subjectAltName lists it (RFC 6125; the CN does not count) and "
	     "refuse the connection (hostname mismatch)%s", name,
	     strstr(info->sans, "...") ? "; the certificate lists more names than "
					 "diagnose could read" : "");
	hint("fix:", "issue a certificate whose subjectAltName has DNS:%s (a wildcard "
	     "DNS:*.%s covers one level below %s), install it (tls.certificate) and run "
	     "xmppctl reload", name, d->domain, d->domain);
}

/* The first service whose targets must be in the certificate and that
 * names HOST; NULL when none does. */
static const struct service *service_naming(const struct diag *d, const char *host)
{
	for (int i = 0; i < SVC_COUNT; i++)
		for (int t = 0; d->svc[i].names_node && t < d->svc[i].count; t++)
			if (!strcasecmp(d->svc[i].targets[t].target, host))
				return &d->svc[i];
	return NULL;
}

/* The domain and every node the client and component records name, each
 * once. */
static void check_names(struct diag *d, const struct tls_cert_info *info)
{
	check_name(d, info, d->domain, "the XMPP domain");
	for (int h = 0; h < d->host_count; h++) {
		const char *host = d->hosts[h].name;
		const struct service *s = service_naming(d, host);
		char why[DNS_NAME_MAX + 32];

		if (!s || !strcasecmp(host, d->domain))
			continue;
		snprintf(why, sizeof why, "SRV target of %s", s->name);
		check_name(d, info, host, why);
	}
}

static void check_key(struct diag *d, const char *key, const char *cert)
{
	struct tls_ctx *ctx;
	char err[CONFIG_PATH_MAX * 2 + 64];

	/* Not readable is a different mistake (the wrong user) with another fix. */
	if (access(key, R_OK) < 0) {
		int e = errno;
		say(d, V_FAIL, "cannot read the key %s: %s", key, strerror(e));
		if (e == EACCES)
			hint("cause:", "the key is readable by the user xmppd runs as only");
		else
			hint("cause:", "tls.key names a file that does not exist");
		hint("fix:", e == EACCES ? "run xmppctl diagnose as that user"
					 : "set tls.key to the certificate's key file");
		return;
	}
	ctx = tls_ctx_load(key, cert, NULL, err, sizeof err);
	if (ctx) {
		tls_ctx_free(ctx);
		say(d, V_OK, "key %s matches the certificate (signed and verified a test "
			     "message)", key);
		return;
	}
	say(d, V_FAIL, "%s", err);   /* "key K does not match certificate C" */
	hint("cause:", "tls.key is not the private key the certificate was issued for "
	     "(e.g. the key of an older certificate or of another node), or not a PEM key; "
	     "xmppd would refuse to load the pair (reload failed)");
	hint("fix:", "set tls.key to the key the certificate request (CSR) was made with, or "
	     "issue a certificate for this key; then xmppctl reload");
}

struct certs {
	WOLFSSL_X509 **list;
	int count;
};

static void certs_free(struct certs *c)
{
	for (int i = 0; i < c->count; i++)
		wolfSSL_X509_free(c->list[i]);
	free(c->list);
	c->list = NULL;
	c->count = 0;
}

/* Every certificate of the PEM file PATH, in file order. 0 (possibly none)
 * or -errno. */
static int certs_read(const char *path, struct certs *out)
{
	WOLFSSL_BIO *bio;
	WOLFSSL_X509 *x;
	FILE *f;
	int rc = 0;

	out->list = NULL;
	out->count = 0;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	bio = wolfSSL_BIO_new_fp(f, BIO_CLOSE);
	if (!bio) {
		fclose(f);
		return -ENOMEM;
	}
	while ((x = wolfSSL_PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		WOLFSSL_X509 **grown;

		if (out->count == MAX_PEM_CERTS) {
			wolfSSL_X509_free(x);
			rc = -EFBIG;
			break;
		}
		grown = realloc(out->list, (size_t)(out->count + 1) * sizeof *grown);
		if (!grown) {
			wolfSSL_X509_free(x);
			rc = -ENOMEM;
			break;
		}
		out->list = grown;
		out->list[out->count++] = x;
	}
	wolfSSL_ERR_clear_error();   /* the end of the file reads as an error */
	wolfSSL_BIO_free(bio);
	if (rc < 0)
		certs_free(out);
	return rc;
}

static void name_text(WOLFSSL_X509_NAME *name, char *out, int cap)
{
	if (!name || !wolfSSL_X509_NAME_oneline(name, out, cap))
		snprintf(out, (size_t)cap, "(unreadable name)");
}

/* Issued by itself: the subject is the issuer and its own key verifies the
 * signature. */
static bool self_signed(WOLFSSL_X509 *x)
{
	WOLFSSL_EVP_PKEY *pub;
	bool yes;

	if (wolfSSL_X509_NAME_cmp(wolfSSL_X509_get_subject_name(x),
				  wolfSSL_X509_get_issuer_name(x)) != 0)
		return false;
	pub = wolfSSL_X509_get_pubkey(x);
	yes = pub && wolfSSL_X509_verify(x, pub) == WOLFSSL_SUCCESS;
	wolfSSL_EVP_PKEY_free(pub);
	return yes;
}

static int verify_der(WOLFSSL_CERT_MANAGER *cm, WOLFSSL_X509 *x)
{
	const unsigned char *der;
	int len;

	der = wolfSSL_X509_get_der(x, &len);
	if (!der || len <= 0)
		return ASN_PARSE_E;
	return wolfSSL_CertManagerVerifyBuffer(cm, der, len, WOLFSSL_FILETYPE_ASN1);
}

static int add_anchor(WOLFSSL_CERT_MANAGER *cm, WOLFSSL_X509 *x)
{
	const unsigned char *der;
	int len;

	der = wolfSSL_X509_get_der(x, &len);
	if (!der || len <= 0)
		return ASN_PARSE_E;
	return wolfSSL_CertManagerLoadCABuffer(cm, der, len, WOLFSSL_FILETYPE_ASN1);
}

/* Verify CHAIN's leaf (CHAIN->list[0]) with the certificates of BUNDLE as
 * trust anchors and the rest of CHAIN as untrusted intermediates. An
 * intermediate becomes an anchor only once it verified itself, so a
 * self-made CA in the certificate file proves nothing. Returns wolfSSL's
 * result (WOLFSSL_SUCCESS or a negative error code). */
static int chain_verify(const struct certs *chain, const struct certs *bundle)
{
	WOLFSSL_CERT_MANAGER *cm = wolfSSL_CertManagerNew();
	bool used[MAX_CHAIN] = { false };
	bool progress = true;
	int rc;

	if (!cm)
		return MEMORY_E;
	for (int i = 0; i < bundle->count; i++)
		add_anchor(cm, bundle->list[i]);   /* non-CA entries are skipped */
	while (progress) {
		progress = false;
		for (int i = 1; i < chain->count && i < MAX_CHAIN; i++)
			if (!used[i] && verify_der(cm, chain->list[i]) == WOLFSSL_SUCCESS &&
			    add_anchor(cm, chain->list[i]) == WOLFSSL_SUCCESS)
				used[i] = progress = true;
	}
	rc = verify_der(cm, chain->list[0]);
	wolfSSL_CertManagerFree(cm);
	return rc;
}

static void check_chain(struct diag *d, const char *cert, const struct certs *chain)
{
	const char *bundle = d->cfg->tls_bundle;
	WOLFSSL_X509 *leaf = chain->list[0];
	bool own = self_signed(leaf);
	struct certs anchors;
	char issuer[256];
	int rc;

	name_text(wolfSSL_X509_get_issuer_name(leaf), issuer, sizeof issuer);
	if (!bundle[0]) {
		if (own) {
			say(d, V_WARN, "the certificate is self-signed and no CA bundle is "
				       "configured (tls.bundle)");
			hint("cause:", "clients and call bridges accept it only if they were "
			     "given this very certificate to trust; browsers refuse it");
			hint("fix:", "install a certificate from a CA the clients trust, with "
			     "tls.bundle set to that CA's chain; or give every client and call "
			     "bridge this certificate (%s)", cert);
		} else {
			say(d, V_WARN, "no CA bundle configured (tls.bundle): cannot verify the "
				       "chain of the certificate (issuer %s)", issuer);
			hint("cause:", "xmppd sends the certificate without its intermediates; "
			     "clients must trust the issuer itself");
			hint("fix:", "set tls.bundle to the CA chain that issued the "
			     "certificate, then xmppctl reload");
		}
		return;
	}
	rc = certs_read(bundle, &anchors);
	if (rc < 0 || anchors.count == 0) {
		say(d, V_FAIL, "cannot read the CA bundle %s: %s", bundle,
		    rc < 0 ? strerror(-rc) : "no PEM certificate in it");
		hint("cause:", "tls.bundle must name a PEM file with the CA certificates "
		     "(and intermediates) that issued the certificate");
		hint("fix:", "correct tls.bundle or the file, then xmppctl reload");
		return;
	}
	rc = chain_verify(chain, &anchors);
	certs_free(&anchors);
	if (rc == WOLFSSL_SUCCESS || rc == ASN_AFTER_DATE_E || rc == ASN_BEFORE_DATE_E) {
		/* wolfSSL reports a date error only when the chain itself is
		 * sound; the expiry finding below says what is wrong with it. */
		say(d, V_OK, "certificate chain verifies against the bundle %s (issuer %s)%s",
		    bundle, issuer, rc == WOLFSSL_SUCCESS ? "" : ", apart from its dates");
		return;
	}
	if (rc == ASN_NO_SIGNER_E) {
		say(d, V_FAIL, "certificate chain does not verify against the bundle %s: no "
			       "certificate in it issued %s", bundle,
		    own ? "this self-signed certificate" : issuer);
		hint("cause:", own ? "the certificate is self-signed, and the bundle does not "
				     "contain it"
				   : "the bundle belongs to another CA, or an intermediate "
				     "certificate is missing");
		hint("fix:", "set tls.bundle to the chain of the CA that issued the "
		     "certificate (issuer %s), then xmppctl reload", issuer);
		return;
	}
	say(d, V_FAIL, "certificate chain does not verify against the bundle %s: %s", bundle,
	    rc == ASN_SIG_CONFIRM_E ? "a signature does not verify"
				    : wolfSSL_ERR_reason_error_string((unsigned long)rc));
	hint("cause:", "the certificate was not issued by the certificates in the bundle, or "
	     "one of them is damaged");
	hint("fix:", "reinstall the certificate and the CA chain the CA delivered with it, "
	     "then xmppctl reload");
}

static void check_expiry(struct diag *d, const struct tls_cert_info *info)
{
	time_t now = time(NULL);
	char when[64];

	if (now < info->not_before) {
		format_date(info->not_before, when, sizeof when);
		say(d, V_FAIL, "certificate not valid yet: valid from %s", when);
		hint("cause:", "clients refuse it until then; the clock of this machine or "
		     "of the CA is wrong, or it was installed too early");
		hint("fix:", "check the system clock (timedatectl, NTP), or install the "
		     "certificate in use until then");
		return;
	}
	format_date(info->not_after, when, sizeof when);
	if (now >= info->not_after) {
		say(d, V_FAIL, "certificate expired on %s", when);
		hint("cause:", "clients and call bridges refuse an expired certificate");
		hint("fix:", "renew the certificate, install it and run xmppctl reload");
		return;
	}
	if (info->not_after - now < EXPIRY_WARN_DAYS * DAY_SECONDS) {
		say(d, V_WARN, "certificate expires on %s, in %ld days", when,
		    (long)((info->not_after - now) / DAY_SECONDS));
		hint("cause:", "after that date clients and call bridges refuse it");
		hint("fix:", "renew it before then, install it and run xmppctl reload");
		return;
	}
	say(d, V_OK, "certificate valid until %s (%ld days)", when,
	    (long)((info->not_after - now) / DAY_SECONDS));
}

static void check_certificate(struct diag *d)
{
	const struct config *cfg = d->cfg;
	char key[CONFIG_PATH_MAX + 16], cert[CONFIG_PATH_MAX + 16];
	struct tls_cert_info info;
	struct certs chain = { NULL, 0 };
	int rc;

	/* the files the node uses: configured, or its self-signed pair */
	config_tls_paths(cfg, key, cert, sizeof key);
	section("certificate: %s", cert);
	rc = tls_global_init();
	if (rc == 0)
		rc = tls_cert_file_info(cert, &info);
	if (rc == 0)
		rc = certs_read(cert, &chain);
	if (rc == 0 && chain.count == 0)
		rc = -EINVAL;
	if (rc < 0) {
		say(d, V_FAIL, "cannot read the certificate %s: %s", cert,
		    rc == -EINVAL ? "not a PEM certificate" : strerror(-rc));
		if (!cfg->tls_cert[0] && rc == -ENOENT) {
			hint("cause:", "with no tls.key and tls.certificate in the YAML, xmppd "
			     "makes a self-signed pair in %s/tls at its first start, which "
			     "has not happened yet", cfg->data_dir);
			hint("fix:", "start xmppd once, or set tls.key and tls.certificate to "
			     "the key and certificate files");
		} else {
			hint("cause:", "tls.certificate must name a readable PEM file, the "
			     "server's certificate first");
			hint("fix:", "set tls.key and tls.certificate to the key and "
			     "certificate files, then xmppctl reload");
		}
		goto out;
	}
	say(d, V_OK, "certificate %s: subject CN=%s, SHA-256 %s", cert,
	    info.subject_cn[0] ? info.subject_cn : "(none)", info.sha256_fp);
	check_names(d, &info);
	check_key(d, key, cert);
	check_chain(d, cert, &chain);
	check_expiry(d, &info);
out:
	certs_free(&chain);
}

/* ---- call-bridge secrets ------------------------------------------------------ */

struct bridge_list {
	int count;
	int bad;
	char names[512];
};

static void add_bridge(const char *name, const char *secret, void *arg)
{
	struct bridge_list *b = arg;
	size_t used = strlen(b->names);

	b->count++;
	if (callbridge_secret_valid(secret) < 0)
		b->bad++;
	/* Names only: a secret never reaches the screen or a support ticket. */
	if (used + strlen(name) + 6 < sizeof b->names)
		snprintf(b->names + used, sizeof b->names - used, "%s%s", used ? ", " : "", name);
	else if (!strstr(b->names, "..."))
		snprintf(b->names + used, sizeof b->names - used, "%s", ", ...");
}

static void check_callbridges(struct diag *d)
{
	const struct config *cfg = d->cfg;
	bool component = has_listener(cfg, LISTENER_COMPONENT, NULL);
	struct bridge_list bridges = { 0, 0, "" };
	char path[CONFIG_PATH_MAX + 16], err[512];
	struct accounts *store = NULL;
	int rc = 0;

	section("call bridges: %s", cfg->data_dir);
	/* No store yet means no secrets; opening it would create one, and
	 * diagnose changes nothing. */
	snprintf(path, sizeof path, "%s/xmppd.mdb", cfg->data_dir);
	if (access(path, F_OK) == 0) {
		store = accounts_open(cfg->data_dir, err, sizeof err);
		if (!store) {
			say(d, V_FAIL, "cannot open the node's store %s: %s", path, err);
			hint("cause:", "the call-bridge secrets cannot be read; xmppd cannot "
			     "read them either if this is its user");
			hint("fix:", "run xmppctl diagnose as the user xmppd runs as");
			return;
		}
		rc = callbridges_list(store, add_bridge, &bridges);
		accounts_close(store);
	}
	if (rc < 0) {
		say(d, V_FAIL, "cannot list the call-bridge secrets in %s: %s", path,
		    strerror(-rc));
		hint("cause:", "the node's store is damaged or unreadable");
		hint("fix:", "restore %s from a backup, or add the secrets again "
		     "(xmppctl callbridge add-secret NAME)", path);
		return;
	}
	if (bridges.count > 0) {
		say(d, V_OK, "%d call-bridge secret%s stored: %s", bridges.count,
		    bridges.count == 1 ? "" : "s", bridges.names);
		if (!component)
			printf("      (this node has no component listener: call bridges "
			       "cannot connect to it)\n");
		if (bridges.bad) {
			say(d, V_WARN, "%d stored call-bridge secret%s not acceptable (%d-%d "
				       "printable characters without spaces)", bridges.bad,
			    bridges.bad == 1 ? " is" : "s are", CALLBRIDGE_SECRET_MIN,
			    CALLBRIDGE_SECRET_MAX - 1);
			hint("cause:", "written by another tool or an older version");
			hint("fix:", "xmppctl callbridge add NAME for a new secret, and give it "
			     "to the call bridge");
		}
		return;
	}
	if (!component) {
		say(d, V_INFO, "no call-bridge secrets stored (no component listener "
			       "configured)");
		return;
	}
	say(d, V_FAIL, "no call-bridge secrets stored, but a component listener is "
		       "configured");
	hint("cause:", "every call bridge that connects is refused: the log says "
	     "\"authentication failure for call bridge NAME\"");
	hint("fix:", "xmppctl callbridge add NAME, and enter the secret it prints on the "
	     "call bridge (xmppctl callbridge add-secret NAME on the other nodes)");
}

/* ---- main ------------------------------------------------------------------ */

int diagnose_main(const struct config *cfg, int argc, char **argv)
{
	struct diag d;
	int rc;

	memset(&d, 0, sizeof d);
	d.cfg = cfg;
	rc = parse_args(&d, argc, argv);
	if (rc)
		return rc < 0 ? EXIT_CLEAN : rc;
	services_init(&d);
	printf("xmppctl diagnose %s (configuration %s)\n", d.domain, cfg->source);
	check_dns(&d);
	check_certificate(&d);
	check_callbridges(&d);
	printf("\nsummary: %d OK, %d WARN, %d FAIL, %d INFO: %s\n", d.counts[V_OK],
	       d.counts[V_WARN], d.counts[V_FAIL], d.counts[V_INFO],
	       d.counts[V_FAIL] ? "something is wrong: see the FAIL findings above"
				: "nothing is wrong");
	fflush(stdout);

	for (int i = 0; i < SVC_COUNT; i++)
		free(d.svc[i].targets);
	for (int i = 0; i < d.host_count; i++)
		free(d.hosts[i].addrs);
	free(d.hosts);
	free(d.probes);
	return d.counts[V_FAIL] ? EXIT_PROBLEM : EXIT_CLEAN;
}
