/*
 * xmpp-loadgen: options, the phases of a run, progress and the figures.
 *
 * The main thread does no XMPP. It starts the worker threads, moves them
 * through the phases (log in, run, drain, stop) by setting one phase word and
 * waking each thread, prints progress on stderr once a second from the
 * threads' counters, and at the end one line per scenario on stdout:
 * key=value pairs, or a JSON object with --json. Every figure comes with the
 * load generator's own CPU use over the same interval (user + system time
 * over wall time, 100 = one core), so a reader can tell when the generator
 * rather than the server was the limit.
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread and taken here with
 * sigtimedwait(), so no code runs in a signal handler. The first ends the
 * current phase early and the run still reports; a second one during the
 * final close exits at once.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "bench/loadgen/lg.h"

#define MAX_SCENARIOS 8
#define PROGRESS_NS 1000000000u
#define POLL_NS 100000000u /* how often a wait looks at the counters */

/* ---- options ------------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: xmpp-loadgen [options] SCENARIO[,SCENARIO...]\n"
	      "scenarios: idle, chat, login, connect, component (run in the order given)\n"
	      "  --server HOST:PORT      c2s address (127.0.0.1:5222)\n"
	      "  --domain DOMAIN         XMPP domain of the accounts (localhost)\n"
	      "  --user-fmt FMT          account names, one %d (user%d)\n"
	      "  --password-fmt FMT      passwords, one %d (pass%d)\n"
	      "  --first N               number of the first account (1)\n"
	      "  --accounts N            idle, login, connect: accounts to use (100)\n"
	      "  --pairs N               chat: pairs of accounts (100)\n"
	      "  --window N              chat: messages in flight per client (1)\n"
	      "  --rate R                chat: offered messages/s in all, open loop (0: closed loop)\n"
	      "  --size N                chat: body bytes (at least the 46-byte header)\n"
	      "  --tls starttls|direct|none  (starttls)\n"
	      "  --ca FILE               verify the server certificate against FILE\n"
	      "  --mech PLAIN|SCRAM-SHA-1|SCRAM-SHA-256|SCRAM-SHA-256-PLUS  (SCRAM-SHA-256)\n"
	      "  --threads N             threads, each its own epoll loop (1)\n"
	      "  --source-range A-B      spread connections over source addresses\n"
	      "  --concurrency N         connections logging in at once (100)\n"
	      "  --ramp R                new connections per second, 0 = no limit (0)\n"
	      "  --duration S            measured seconds (10; idle: 0 holds until SIGINT)\n"
	      "  --timeout S             log-in and close timeout (30)\n"
	      "  --drain S               chat: wait for messages in flight (5)\n"
	      "  --no-warmup             login: no unmeasured first login per account, so\n"
	      "                          SCRAM keys are not cached before the window\n"
	      "  --scram-keys FILE       precomputed SCRAM-SHA-256 keys, lines \"USER SALT_B64\n"
	      "                          ITERATIONS SALTEDPASSWORD_HEX\", used when the server\n"
	      "                          sends that salt and count (no PBKDF2 per account)\n"
	      "  --component NAME        component: its address (e.g. cb1.localhost)\n"
	      "  --component-secret-file FILE  component: its secret (the first line)\n"
	      "  --component-server HOST:PORT  component listener (--server's host, 5223)\n"
	      "  --component-tls direct|none   (direct: TLS from the first byte)\n"
	      "  --json                  JSON instead of key=value on stdout\n",
	      f);
}

static int parse_uint(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);

	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);

	if (errno || end == s || *end || !(v >= 0) || v > 1e6)
		return -EINVAL;
	*out = v;
	return 0;
}

/* HOST:PORT or [V6]:PORT, numeric or resolvable. */
static int parse_address(const char *s, struct sockaddr_storage *out, socklen_t *out_len)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai;

	if (!colon || colon == s || (size_t)(colon - s) >= sizeof host)
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host) - 2);
		host[strlen(host) - 2] = '\0';
	}
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -EINVAL;
	memcpy(out, ai->ai_addr, ai->ai_addrlen);
	*out_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int parse_server(const char *s, struct lg_opts *o)
{
	return parse_address(s, &o->server, &o->server_len);
}

/* The component's secret: the first line of PATH, kept for the process. */
static int read_secret(const char *path, struct lg_opts *o)
{
	static char secret[512];
	FILE *f = fopen(path, "re");
	int rc = -EINVAL;

	if (!f)
		return -errno;
	if (fgets(secret, sizeof secret, f)) {
		secret[strcspn(secret, "\r\n")] = '\0';
		if (secret[0]) {
			o->comp_secret = secret;
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

enum {
	OPT_SERVER = 256, OPT_DOMAIN, OPT_USER, OPT_PASSWORD, OPT_FIRST, OPT_ACCOUNTS,
	OPT_PAIRS, OPT_WINDOW, OPT_RATE, OPT_SIZE, OPT_TLS, OPT_CA, OPT_MECH, OPT_THREADS,
	OPT_SOURCE, OPT_CONCURRENCY, OPT_RAMP, OPT_DURATION, OPT_TIMEOUT, OPT_DRAIN, OPT_JSON,
	OPT_NO_WARMUP, OPT_SCRAM_KEYS, OPT_COMPONENT, OPT_COMP_SECRET, OPT_COMP_SERVER,
	OPT_COMP_TLS, OPT_HELP,
};

static const struct option long_options[] = {
	{ "server", required_argument, NULL, OPT_SERVER },
	{ "domain", required_argument, NULL, OPT_DOMAIN },
	{ "user-fmt", required_argument, NULL, OPT_USER },
	{ "password-fmt", required_argument, NULL, OPT_PASSWORD },
	{ "first", required_argument, NULL, OPT_FIRST },
	{ "accounts", required_argument, NULL, OPT_ACCOUNTS },
	{ "pairs", required_argument, NULL, OPT_PAIRS },
	{ "window", required_argument, NULL, OPT_WINDOW },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "size", required_argument, NULL, OPT_SIZE },
	{ "tls", required_argument, NULL, OPT_TLS },
	{ "ca", required_argument, NULL, OPT_CA },
	{ "mech", required_argument, NULL, OPT_MECH },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "source-range", required_argument, NULL, OPT_SOURCE },
	{ "concurrency", required_argument, NULL, OPT_CONCURRENCY },
	{ "ramp", required_argument, NULL, OPT_RAMP },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "drain", required_argument, NULL, OPT_DRAIN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "no-warmup", no_argument, NULL, OPT_NO_WARMUP },
	{ "scram-keys", required_argument, NULL, OPT_SCRAM_KEYS },
	{ "component", required_argument, NULL, OPT_COMPONENT },
	{ "component-secret-file", required_argument, NULL, OPT_COMP_SECRET },
	{ "component-server", required_argument, NULL, OPT_COMP_SERVER },
	{ "component-tls", required_argument, NULL, OPT_COMP_TLS },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static int parse_tls(const char *s, enum lg_tls_mode *out)
{
	if (strcmp(s, "starttls") == 0)
		*out = LG_TLS_STARTTLS;
	else if (strcmp(s, "direct") == 0)
		*out = LG_TLS_DIRECT;
	else if (strcmp(s, "none") == 0)
		*out = LG_TLS_NONE;
	else
		return -EINVAL;
	return 0;
}

static int parse_mech(const char *s, enum sasl_mech *out)
{
	enum sasl_mech m = sasl_mech_from_name(s);

	if (m != SASL_MECH_PLAIN && m != SASL_MECH_SCRAM_SHA1 && m != SASL_MECH_SCRAM_SHA256 &&
	    m != SASL_MECH_SCRAM_SHA256_PLUS)
		return -EINVAL;
	*out = m;
	return 0;
}

static int parse_rate(const char *s, double *out)
{
	return parse_seconds(s, out); /* the same shape: a non-negative number */
}

/* One option; -EINVAL names it in the caller's message. */
static int apply_option(int opt, const char *arg, struct lg_opts *o, const char **user,
			const char **password, const char **keys)
{
	uint32_t v;

	switch (opt) {
	case OPT_SERVER: return parse_server(arg, o);
	case OPT_DOMAIN: o->domain = arg; return 0;
	case OPT_USER: *user = arg; return 0;
	case OPT_PASSWORD: *password = arg; return 0;
	case OPT_FIRST: return parse_uint(arg, 0, UINT32_MAX / 2, &o->first);
	case OPT_ACCOUNTS: return parse_uint(arg, 1, 10000000, &o->accounts);
	case OPT_PAIRS: return parse_uint(arg, 1, 5000000, &o->pairs);
	case OPT_WINDOW: return parse_uint(arg, 1, 10000, &o->window);
	case OPT_RATE: return parse_rate(arg, &o->rate);
	case OPT_SIZE: return parse_uint(arg, 0, 4096, &o->size);
	case OPT_TLS: return parse_tls(arg, &o->tls);
	case OPT_CA: o->ca_file = arg; return 0;
	case OPT_MECH: return parse_mech(arg, &o->mech);
	case OPT_THREADS: return parse_uint(arg, 1, 256, &v) < 0 ? -EINVAL : (o->threads = v, 0);
	case OPT_SOURCE: return lg_range_parse(arg, &o->src_first, &o->src_count);
	case OPT_CONCURRENCY:
		return parse_uint(arg, 1, 1000000, &v) < 0 ? -EINVAL : (o->concurrency = v, 0);
	case OPT_RAMP: return parse_rate(arg, &o->ramp);
	case OPT_DURATION: return parse_seconds(arg, &o->duration);
	case OPT_TIMEOUT: return parse_seconds(arg, &o->timeout);
	case OPT_DRAIN: return parse_seconds(arg, &o->drain);
	case OPT_JSON: o->json = true; return 0;
	case OPT_NO_WARMUP: o->no_warmup = true; return 0;
	case OPT_SCRAM_KEYS: *keys = arg; return 0;
	case OPT_COMPONENT: o->comp_name = arg; return 0;
	case OPT_COMP_SECRET: return read_secret(arg, o);
	case OPT_COMP_SERVER: return parse_address(arg, &o->comp_server, &o->comp_server_len);
	case OPT_COMP_TLS: /* a component stream has no STARTTLS */
		if (parse_tls(arg, &o->comp_tls) < 0 || o->comp_tls == LG_TLS_STARTTLS)
			return -EINVAL;
		return 0;
	default: return -EINVAL;
	}
}

static int parse_scenarios(char *list, const struct lg_scenario **out, unsigned *n)
{
	char *save = NULL;

	*n = 0;
	for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		if (*n == MAX_SCENARIOS || !(out[*n] = lg_scenario_find(s))) {
			fprintf(stderr, "xmpp-loadgen: unknown scenario '%s'\n", s);
			return -EINVAL;
		}
		(*n)++;
	}
	return *n ? 0 : -EINVAL;
}

/* --scram-keys: the accounts this run uses (chat: both ends of every pair). */
static int load_keys(struct lg_opts *o, const char *path, struct lg_keys *keys)
{
	uint32_t want = o->accounts > 2 * o->pairs ? o->accounts : 2 * o->pairs;
	unsigned bad_line;
	FILE *f = fopen(path, "re");
	int rc;

	if (!f) {
		rc = -errno;
		fprintf(stderr, "xmpp-loadgen: %s: %s\n", path, strerror(-rc));
		return rc;
	}
	rc = lg_keys_load(keys, f, &o->user, o->first, want, &bad_line);
	fclose(f);
	if (rc == -EINVAL)
		fprintf(stderr, "xmpp-loadgen: %s line %u: expected \"USER SALT_B64 ITERATIONS "
			"SALTEDPASSWORD_HEX\" with USER like --user-fmt\n", path, bad_line);
	else if (rc < 0)
		fprintf(stderr, "xmpp-loadgen: %s: %s\n", path, strerror(-rc));
	else
		o->keys = keys;
	return rc;
}

static int check_options(struct lg_opts *o, const char *user, const char *password)
{
	if (lg_pattern_parse(&o->user, user) < 0 || lg_pattern_parse(&o->password, password) < 0) {
		fprintf(stderr, "xmpp-loadgen: --user-fmt and --password-fmt need one %%d\n");
		return -EINVAL;
	}
	if (lg_xml_escape(o->domain, o->domain_xml, sizeof o->domain_xml) < 0 || !*o->domain) {
		fprintf(stderr, "xmpp-loadgen: --domain is empty or too long\n");
		return -EINVAL;
	}
	if (o->src_count && o->server.ss_family != AF_INET) {
		fprintf(stderr, "xmpp-loadgen: --source-range needs an IPv4 server\n");
		return -EINVAL;
	}
	if (o->mech == SASL_MECH_SCRAM_SHA256_PLUS && o->tls == LG_TLS_NONE) {
		fprintf(stderr, "xmpp-loadgen: %s binds to the TLS channel: not with --tls none\n",
			sasl_mech_name(o->mech));
		return -EINVAL;
	}
	if (o->timeout <= 0) {
		fprintf(stderr, "xmpp-loadgen: --timeout must be positive\n");
		return -EINVAL;
	}
	if (o->size < LG_BODY_HEADER_MAX)
		o->size = 0; /* just the header */
	if (o->comp_server_len == 0) {
		/* the component listener's usual port on --server's host */
		memcpy(&o->comp_server, &o->server, sizeof o->server);
		o->comp_server_len = o->server_len;
		if (o->comp_server.ss_family == AF_INET)
			((struct sockaddr_in *)&o->comp_server)->sin_port = htons(5223);
		else
			((struct sockaddr_in6 *)&o->comp_server)->sin6_port = htons(5223);
	}
	if (o->comp_name && lg_xml_escape(o->comp_name, o->comp_name_xml,
					  sizeof o->comp_name_xml) < 0) {
		fprintf(stderr, "xmpp-loadgen: --component is too long\n");
		return -EINVAL;
	}
	return 0;
}

/* component needs its address and secret. */
static int check_scenarios(const struct lg_opts *o, const struct lg_scenario **scns,
			   unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (strcmp(scns[i]->name, "component") == 0 && (!o->comp_name || !o->comp_secret)) {
			fprintf(stderr, "xmpp-loadgen: component needs --component and "
				"--component-secret-file\n");
			return -EINVAL;
		}
	return 0;
}

static const char *option_name(int opt)
{
	for (const struct option *lo = long_options; lo->name; lo++)
		if (lo->val == opt)
			return lo->name;
	return "?";
}

static int parse_args(int argc, char **argv, struct lg_opts *o,
		      const struct lg_scenario **scns, unsigned *nscns, struct lg_keys *keys)
{
	const char *user = "user%d", *password = "pass%d", *keys_path = NULL;
	int opt;

	*o = (struct lg_opts){
		.domain = "localhost", .first = 1, .accounts = 100, .pairs = 100, .window = 1,
		.tls = LG_TLS_STARTTLS, .mech = SASL_MECH_SCRAM_SHA256, .threads = 1,
		.comp_tls = LG_TLS_DIRECT,
		.concurrency = 100, .duration = 10, .timeout = 30, .drain = 5,
	};
	if (parse_server("127.0.0.1:5222", o) < 0)
		return -EINVAL;
	while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		if (opt == 'h' || opt == OPT_HELP) {
			usage(stdout);
			exit(0);
		}
		if (opt == '?' || apply_option(opt, optarg, o, &user, &password, &keys_path) < 0) {
			if (opt != '?')
				fprintf(stderr, "xmpp-loadgen: bad value '%s' for --%s\n", optarg,
					option_name(opt));
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return -EINVAL;
	}
	if (parse_scenarios(argv[optind], scns, nscns) < 0 || check_options(o, user, password) < 0 ||
	    check_scenarios(o, scns, *nscns) < 0)
		return -EINVAL;
	return keys_path ? load_keys(o, keys_path, keys) : 0;
}

/* ---- the figures --------------------------------------------------------- */

struct report {
	bool json;
	bool first;
	FILE *f;
};

static void rep_key(struct report *r, const char *key)
{
	if (r->json)
		fprintf(r->f, "%s\"%s\":", r->first ? "{" : ",", key);
	else
		fprintf(r->f, "%s%s=", r->first ? "" : " ", key);
	r->first = false;
}

static void rep_int(struct report *r, const char *key, uint64_t v)
{
	rep_key(r, key);
	fprintf(r->f, "%" PRIu64, v);
}

static void rep_num(struct report *r, const char *key, double v)
{
	rep_key(r, key);
	fprintf(r->f, "%.1f", v);
}

/* Values are names from fixed tables: no quoting or escaping needed. */
static void rep_str(struct report *r, const char *key, const char *v)
{
	rep_key(r, key);
	fprintf(r->f, r->json ? "\"%s\"" : "%s", v);
}

static void rep_end(struct report *r)
{
	fputs(r->json ? "}\n" : "\n", r->f);
	fflush(r->f);
}

/* ---- a run ---------------------------------------------------------------- */

struct sample {
	uint64_t ns;
	double cpu_s;
	struct lg_counters ctr;
};

struct run {
	const struct lg_opts *o;
	const struct lg_scenario *scn;
	struct lg_thread *threads[256];
	unsigned nthreads;
	unsigned slots;
	int phase; /* the phase word the threads read */
	sigset_t signals;
	bool interrupted;
	uint64_t begin_ns, next_progress_ns;
	struct sample last; /* for the per-second rates in progress lines */
	struct sample login_start, run_start, run_end;
	struct lg_hist goal_hist, msg_hist;
};

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void take_sample(const struct run *r, struct sample *s)
{
	memset(s, 0, sizeof *s);
	s->ns = lg_now_ns();
	s->cpu_s = cpu_seconds();
	for (unsigned i = 0; i < r->nthreads; i++) {
		const struct lg_counters *c = &r->threads[i]->ctr;
		for (int k = 0; k < LG_C_COUNT; k++)
			s->ctr.v[k] += lg_counter_read(c, (enum lg_counter)k);
		for (int e = 0; e < LG_ERR_COUNT; e++)
			s->ctr.err[e] += lg_err_read(c, (enum lg_err)e);
	}
}

static double seconds_between(const struct sample *a, const struct sample *b)
{
	return (double)(b->ns - a->ns) / 1e9;
}

static double cpu_pct(const struct sample *a, const struct sample *b)
{
	double wall = seconds_between(a, b);

	/* getrusage() ticks are coarse: no figure for a near-empty interval */
	return wall >= 0.05 ? 100.0 * (b->cpu_s - a->cpu_s) / wall : 0;
}

static uint64_t delta(const struct sample *a, const struct sample *b, enum lg_counter k)
{
	return b->ctr.v[k] - a->ctr.v[k];
}

static bool is_chat(const struct lg_scenario *scn)
{
	return strcmp(scn->name, "chat") == 0;
}

static bool is_component(const struct lg_scenario *scn)
{
	return strcmp(scn->name, "component") == 0;
}

/* Scenarios that send messages: progress, drain and figures of messages. */
static bool has_messages(const struct lg_scenario *scn)
{
	return is_chat(scn) || is_component(scn);
}

static const char *phase_name(int phase)
{
	static const char *const names[] = { "login", "run", "drain", "stop" };
	return names[phase];
}

static void progress(struct run *r)
{
	struct sample now;

	take_sample(r, &now);
	double dt = seconds_between(&r->last, &now);
	if (dt <= 0)
		return;
	fprintf(stderr,
		"[%7.1fs] %-5s online=%" PRIu64 " done=%" PRIu64 " (%.0f/s) failed=%" PRIu64
		" errors=%" PRIu64,
		(double)(now.ns - r->begin_ns) / 1e9, phase_name(r->phase), now.ctr.v[LG_C_ONLINE],
		now.ctr.v[LG_C_DONE], (double)delta(&r->last, &now, LG_C_DONE) / dt,
		now.ctr.v[LG_C_FAILED], now.ctr.v[LG_C_ERRORS]);
	if (has_messages(r->scn)) {
		uint64_t slowest = 0;
		for (unsigned i = 0; i < r->nthreads; i++) {
			uint64_t ns = __atomic_exchange_n(&r->threads[i]->slowest_ns, 0,
							  __ATOMIC_RELAXED);
			slowest = ns > slowest ? ns : slowest;
		}
		fprintf(stderr, " sent=%.0f/s recv=%.0f/s slowest=%.1fms",
			(double)delta(&r->last, &now, LG_C_SENT) / dt,
			(double)delta(&r->last, &now, LG_C_RECEIVED) / dt, (double)slowest / 1e6);
	}
	fprintf(stderr, " cpu=%.0f%%\n", cpu_pct(&r->last, &now));
	r->last = now;
}

static void set_phase(struct run *r, enum lg_phase p)
{
	__atomic_store_n(&r->phase, (int)p, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < r->nthreads; i++)
		lg_thread_wake(r->threads[i]);
}

typedef bool (*run_done_fn)(const struct run *r);

/* Wait until DEADLINE_NS (0: none) or DONE says so, printing progress.
 * Returns false when a signal cut the wait short. */
static bool run_wait(struct run *r, uint64_t deadline_ns, run_done_fn done)
{
	for (;;) {
		uint64_t now = lg_now_ns();

		if ((done && done(r)) || (deadline_ns && now >= deadline_ns))
			return true;
		if (now >= r->next_progress_ns) {
			progress(r);
			r->next_progress_ns += PROGRESS_NS;
			continue;
		}
		uint64_t wake = r->next_progress_ns;
		if (deadline_ns && deadline_ns < wake)
			wake = deadline_ns;
		if (done && now + POLL_NS < wake)
			wake = now + POLL_NS;
		struct timespec ts = { .tv_sec = (time_t)((wake - now) / 1000000000u),
				       .tv_nsec = (long)((wake - now) % 1000000000u) };
		int sig = sigtimedwait(&r->signals, NULL, &ts);
		if (sig > 0) {
			fprintf(stderr, "xmpp-loadgen: %s, ending the %s phase\n", strsignal(sig),
				phase_name(r->phase));
			r->interrupted = true;
			return false;
		}
	}
}

static uint64_t sum(const struct run *r, enum lg_counter k)
{
	uint64_t total = 0;

	for (unsigned i = 0; i < r->nthreads; i++)
		total += lg_counter_read(&r->threads[i]->ctr, k);
	return total;
}

static bool logins_settled(const struct run *r)
{
	return sum(r, LG_C_DONE) + sum(r, LG_C_FAILED) >= r->slots;
}

/* login: every account has had its one warm-up attempt. */
static bool warmup_settled(const struct run *r)
{
	return sum(r, LG_C_DONE) + sum(r, LG_C_FAILED) >= r->o->accounts;
}

/* Drained once every thread has left the run phase (until then one may
 * still send a message the sums below do not know of) and everything sent
 * has arrived. */
static bool chat_drained(const struct run *r)
{
	for (unsigned i = 0; i < r->nthreads; i++)
		if (__atomic_load_n(&r->threads[i]->phase_seen, __ATOMIC_ACQUIRE) != LG_PHASE_DRAIN)
			return false;
	return sum(r, LG_C_RECEIVED) + sum(r, LG_C_MSG_ERRORS) >= sum(r, LG_C_SENT);
}

static bool threads_exited(const struct run *r)
{
	for (unsigned i = 0; i < r->nthreads; i++)
		if (!__atomic_load_n(&r->threads[i]->exited, __ATOMIC_ACQUIRE))
			return false;
	return true;
}

static uint64_t deadline_after(double seconds)
{
	return seconds > 0 ? lg_now_ns() + (uint64_t)(seconds * 1e9) : 0;
}

static void stop_threads(struct run *r)
{
	set_phase(r, LG_PHASE_STOP);
	if (!run_wait(r, 0, threads_exited)) {
		fprintf(stderr, "xmpp-loadgen: interrupted again, exiting\n");
		exit(130);
	}
	for (unsigned i = 0; i < r->nthreads; i++) {
		pthread_join(r->threads[i]->tid, NULL);
		if (r->threads[i]->exit_err < 0)
			fprintf(stderr, "xmpp-loadgen: thread %u: %s\n", i,
				strerror(-r->threads[i]->exit_err));
		lg_hist_merge(&r->goal_hist, r->threads[i]->goal_hist);
		lg_hist_merge(&r->msg_hist, r->threads[i]->msg_hist);
	}
}

/* Log in (idle, chat), the measured window, drain (chat). A signal ends the
 * phase it arrives in and skips the rest; the caller still stops and reports. */
static void run_phases(struct run *r)
{
	const struct lg_opts *o = r->o;

	take_sample(r, &r->login_start);
	r->last = r->login_start;
	if (r->scn->login_phase)
		run_wait(r, 0, logins_settled);
	else if (lg_scenario_warmup(r->scn, o))
		run_wait(r, 0, warmup_settled);
	if (!r->interrupted)
		set_phase(r, LG_PHASE_RUN);
	take_sample(r, &r->run_start);
	if (!r->interrupted)
		run_wait(r, deadline_after(o->duration), NULL);
	take_sample(r, &r->run_end);
	if (has_messages(r->scn) && !r->interrupted) {
		set_phase(r, LG_PHASE_DRAIN);
		run_wait(r, deadline_after(o->drain), chat_drained);
	}
}

static void report_errors(struct report *rep, const struct sample *end)
{
	rep_int(rep, "errors", end->ctr.v[LG_C_ERRORS]);
	for (int e = 0; e < LG_ERR_COUNT; e++) {
		char key[32];

		if (end->ctr.err[e] == 0)
			continue;
		snprintf(key, sizeof key, "err_%s", lg_err_name((enum lg_err)e));
		rep_int(rep, key, end->ctr.err[e]);
	}
}

static void report_latency(struct report *rep, const char *prefix, const struct lg_hist *h)
{
	char key[32];

	snprintf(key, sizeof key, "%sp50_us", prefix);
	rep_int(rep, key, lg_hist_percentile(h, 50) / 1000);
	snprintf(key, sizeof key, "%sp99_us", prefix);
	rep_int(rep, key, lg_hist_percentile(h, 99) / 1000);
	snprintf(key, sizeof key, "%smax_us", prefix);
	rep_int(rep, key, h->max / 1000);
}

static const char *tls_name(enum lg_tls_mode m)
{
	return m == LG_TLS_STARTTLS ? "starttls" : m == LG_TLS_DIRECT ? "direct" : "none";
}

static double per_second(uint64_t n, double seconds)
{
	return seconds > 0 ? (double)n / seconds : 0;
}

/* idle, chat: the log-in phase before the measured window. */
static void report_login_phase(struct report *rep, const struct run *r)
{
	const struct sample *s0 = &r->run_start;
	double login_s = seconds_between(&r->login_start, s0);

	rep_int(rep, "accounts", r->slots);
	rep_int(rep, "online", r->run_end.ctr.v[LG_C_ONLINE]);
	rep_int(rep, "failed", r->run_end.ctr.v[LG_C_FAILED]);
	rep_num(rep, "login_s", login_s);
	rep_num(rep, "login_rate", per_second(s0->ctr.v[LG_C_DONE], login_s));
	rep_num(rep, "login_cpu_pct", cpu_pct(&r->login_start, s0));
	report_latency(rep, "login_", &r->goal_hist);
}

/* Sent and delivered count everything up to the end of the drain; the rate
 * is what was delivered inside the measured window. */
static void report_chat(struct report *rep, const struct run *r, const struct sample *end)
{
	const struct lg_opts *o = r->o;
	uint64_t sent = end->ctr.v[LG_C_SENT], got = end->ctr.v[LG_C_RECEIVED];
	double run_s = seconds_between(&r->run_start, &r->run_end);

	if (is_component(r->scn)) {
		/* each way: the component's own counts, the clients' the rest */
		uint64_t comp_sent = end->ctr.v[LG_C_COMP_SENT];
		uint64_t comp_got = end->ctr.v[LG_C_COMP_RECEIVED];

		rep_int(rep, "clients", o->accounts);
		rep_int(rep, "to_component_sent", sent - comp_sent);
		rep_int(rep, "to_component_delivered", comp_got);
		rep_int(rep, "from_component_sent", comp_sent);
		rep_int(rep, "from_component_delivered", got - comp_got);
	} else {
		rep_int(rep, "pairs", o->pairs);
	}
	rep_int(rep, "window", o->window);
	rep_num(rep, "offered_rate", o->rate);
	rep_int(rep, "size", o->size);
	rep_int(rep, "sent", sent);
	rep_int(rep, "delivered", got);
	rep_num(rep, "rate", per_second(delta(&r->run_start, &r->run_end, LG_C_RECEIVED), run_s));
	rep_int(rep, "lost", sent > got ? sent - got : 0);
	rep_int(rep, "out_of_order", end->ctr.v[LG_C_OUT_OF_ORDER]);
	rep_int(rep, "msg_errors", end->ctr.v[LG_C_MSG_ERRORS]);
	rep_int(rep, "stalled", end->ctr.v[LG_C_STALLED]);
	report_latency(rep, "", &r->msg_hist);
}

/* login, connect: what happened inside the measured window. */
static void report_attempts(struct report *rep, const struct run *r)
{
	const struct sample *s0 = &r->run_start, *s1 = &r->run_end;
	uint64_t done = delta(s0, s1, LG_C_DONE);

	if (lg_scenario_warmup(r->scn, r->o)) {
		rep_num(rep, "warmup_s", seconds_between(&r->login_start, s0));
		rep_int(rep, "warmup_logins", s0->ctr.v[LG_C_DONE]);
	}
	rep_int(rep, "concurrency", r->slots);
	rep_int(rep, "attempts", delta(s0, s1, LG_C_STARTED));
	rep_int(rep, r->scn->goal == LG_GOAL_CONNECT ? "connects" : "logins", done);
	rep_int(rep, "failed", delta(s0, s1, LG_C_FAILED));
	rep_num(rep, "rate", per_second(done, seconds_between(s0, s1)));
	report_latency(rep, "", &r->goal_hist);
}

static void report(const struct run *r)
{
	const struct lg_opts *o = r->o;
	struct report rep = { .json = o->json, .first = true, .f = stdout };
	struct sample end;
	struct rusage ru;

	take_sample(r, &end);
	getrusage(RUSAGE_SELF, &ru);
	rep_str(&rep, "scenario", r->scn->name);
	rep_str(&rep, "tls", tls_name(o->tls));
	if (r->scn->goal != LG_GOAL_CONNECT)
		rep_str(&rep, "mech", sasl_mech_name(o->mech));
	rep_int(&rep, "threads", r->nthreads);
	if (r->scn->login_phase)
		report_login_phase(&rep, r);
	rep_num(&rep, "duration_s", seconds_between(&r->run_start, &r->run_end));
	if (has_messages(r->scn))
		report_chat(&rep, r, &end);
	else if (!r->scn->login_phase)
		report_attempts(&rep, r);
	rep_num(&rep, "cpu_pct", cpu_pct(&r->run_start, &r->run_end));
	rep_int(&rep, "rss_mb", (uint64_t)ru.ru_maxrss / 1024);
	report_errors(&rep, &end); /* the whole run, closing included */
	if (r->interrupted)
		rep_str(&rep, "interrupted", "yes");
	rep_end(&rep);
}

static void free_threads(struct run *r)
{
	for (unsigned i = 0; i < r->nthreads; i++)
		lg_thread_free(r->threads[i]);
	r->nthreads = 0;
}

static int run_scenario(const struct lg_opts *o, const struct lg_scenario *scn,
			const sigset_t *signals, bool *interrupted)
{
	struct run *r = calloc(1, sizeof *r);
	int err = 0;

	if (!r)
		return -ENOMEM;
	r->o = o;
	r->scn = scn;
	r->signals = *signals;
	r->phase = scn->login_phase || lg_scenario_warmup(scn, o) ? LG_PHASE_LOGIN : LG_PHASE_RUN;
	r->slots = lg_scenario_slots(scn, o, o->threads);
	r->begin_ns = lg_now_ns();
	r->next_progress_ns = r->begin_ns + PROGRESS_NS;
	fprintf(stderr, "xmpp-loadgen: %s with %u connection slots on %u threads\n", scn->name,
		r->slots, o->threads);
	for (unsigned i = 0; i < o->threads; i++) {
		err = lg_thread_new(&r->threads[i], i, o->threads, o, scn, &r->phase);
		if (err < 0)
			goto fail;
		r->nthreads++;
	}
	for (unsigned i = 0; i < r->nthreads; i++) {
		err = lg_thread_start(r->threads[i]);
		if (err < 0) {
			/* the started ones are told to stop and joined */
			r->nthreads = i;
			stop_threads(r);
			r->nthreads = o->threads;
			goto fail;
		}
	}
	run_phases(r);
	stop_threads(r);
	report(r);
	*interrupted = r->interrupted;
	free_threads(r);
	free(r);
	return 0;
fail:
	fprintf(stderr, "xmpp-loadgen: cannot set up %s: %s\n", scn->name, strerror(-err));
	free_threads(r);
	free(r);
	return err;
}

/* Each connection is a descriptor; the default soft limit (1024) would cap
 * the load long before the server. */
static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_max < need) {
		struct rlimit want = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < need)
		fprintf(stderr, "xmpp-loadgen: only %llu file descriptors for %llu connections\n",
			(unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

int main(int argc, char **argv)
{
	struct lg_opts o;
	struct lg_keys keys = { 0 };
	const struct lg_scenario *scns[MAX_SCENARIOS];
	unsigned nscns, most = 0;
	sigset_t signals;
	bool interrupted = false;
	int rc = 0;

	if (parse_args(argc, argv, &o, scns, &nscns, &keys) < 0)
		return 2;
	for (unsigned i = 0; i < nscns; i++) {
		unsigned n = lg_scenario_slots(scns[i], &o, o.threads);
		most = n > most ? n : most;
	}
	raise_nofile((rlim_t)most + 16 + 4 * o.threads);
	/* blocked before any thread exists, so every thread inherits it */
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
		fprintf(stderr, "xmpp-loadgen: wolfSSL_Init failed\n");
		lg_keys_free(&keys);
		return 1;
	}
	for (unsigned i = 0; i < nscns && !interrupted; i++)
		if (run_scenario(&o, scns[i], &signals, &interrupted) < 0)
			rc = 1;
	wolfSSL_Cleanup();
	lg_keys_free(&keys);
	return rc;
}
