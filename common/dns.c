/*
 * dns: c-ares behind the small interface of dns.h.
 *
 * Every query is a struct dns_query that c-ares holds as its callback
 * argument. c-ares may call back synchronously (a numeric host, a bad name,
 * no memory) or from ares_process_fd; either way the c-ares callback only
 * stores the answer in the query and marks it complete. dns_process (or
 * dns_wait, or dns_free) then hands completed queries to the caller's
 * callback. This keeps the header's promise that callbacks never run inside
 * dns_query_*, and it means a caller's callback may start new queries.
 *
 * The overall timeout is ours, not c-ares's: c-ares retries with a per-try
 * timeout that doubles every round over the servers, so its total depends
 * on the number of servers. Each query carries a deadline; when it passes,
 * the caller gets -ETIMEDOUT and the query is "detached": it stays in
 * c-ares (which cannot cancel one query alone) until c-ares gives up on it,
 * and is freed then, or by dns_free.
 */
#include "common/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

enum dns_query_state {
	QUERY_RUNNING,          /* in c-ares, the caller waits */
	QUERY_COMPLETE,         /* answer stored, caller not told yet */
	QUERY_DETACHED,         /* caller told (timed out), still in c-ares */
};

struct dns_query {
	struct dns_query *next, *prev;
	struct dns_resolver *resolver;
	enum dns_query_state state;
	bool in_cares;          /* c-ares still holds this as its argument */
	int64_t deadline_ms;
	/* exactly one of these is set */
	dns_srv_cb srv_cb;
	dns_addr_cb addr_cb;
	void *arg;
	/* the answer, once complete */
	int status;
	int count;
	struct dns_srv_target *targets;
	struct dns_addr *addrs;
};

struct dns_resolver {
	ares_channel channel;
	int timeout_ms;
	int pending;            /* queries whose callbacks have not run */
	bool closing;
	struct dns_query *queries; /* every query still allocated */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

static void library_init(void)
{
	library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static int status_from_ares(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return 0;
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
	case ARES_ENONAME:
		return -ENOENT;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_EREFUSED:
	case ARES_ESERVFAIL:
	case ARES_ECONNREFUSED: /* c-ares: "could not contact DNS servers" */
		return -ECONNREFUSED;
	case ARES_ENOMEM:
		return -ENOMEM;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

const char *dns_status_text(int status)
{
	switch (status) {
	case 0:
		return "ok";
	case -ENOENT:
		return "no records";
	case -ETIMEDOUT:
		return "timed out";
	case -ECONNREFUSED:
		return "refused by the DNS servers";
	case -EIO:
		return "resolver error";
	case -ECANCELED:
		return "cancelled";
	case -ENOMEM:
		return "out of memory";
	case -EINVAL:
		return "invalid name";
	default:
		return "dns error";
	}
}

struct dns_resolver *dns_new(const char *servers, int timeout_ms, char *err, size_t errlen)
{
	struct dns_resolver *r = NULL;
	struct ares_options opts;
	int optmask, rc;

	pthread_once(&library_once, library_init);
	if (library_status != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(library_status));
		return NULL;
	}
	if (timeout_ms <= 0) {
		snprintf(err, errlen, "DNS timeout must be positive");
		return NULL;
	}
	r = calloc(1, sizeof *r);
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->timeout_ms = timeout_ms;

	/* A few tries inside our own deadline, so one lost UDP packet does
	 * not cost the whole query. */
	memset(&opts, 0, sizeof opts);
	opts.timeout = timeout_ms / 4 > 50 ? timeout_ms / 4 : 50;
	opts.tries = 3;
	optmask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	if (servers && *servers) {
		/* Servers of the caller's choosing (a test's dnsmasq, the
		 * deployment's DNS): ask them for exactly the names given,
		 * not /etc/hosts and not resolv.conf's search domains. */
		opts.lookups = (char *)"b";
		opts.ndomains = 0;
		opts.domains = NULL;
		optmask |= ARES_OPT_LOOKUPS | ARES_OPT_DOMAINS;
	}
	rc = ares_init_options(&r->channel, &opts, optmask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(r);
		return NULL;
	}
	if (servers && *servers) {
		struct ares_addr_port_node *list = NULL;

		rc = ares_set_servers_ports_csv(r->channel, servers);
		if (rc == ARES_SUCCESS)
			rc = ares_get_servers_ports(r->channel, &list);
		if (rc == ARES_SUCCESS && !list)
			rc = ARES_EBADSTR; /* e.g. "," alone */
		ares_free_data(list);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "bad DNS server list \"%s\": %s", servers,
				 rc == ARES_EBADSTR ? "expected IP[:PORT][,...]"
						    : ares_strerror(rc));
			ares_destroy(r->channel);
			free(r);
			return NULL;
		}
	}
	return r;
}

static void query_unlink(struct dns_query *q)
{
	struct dns_resolver *r = q->resolver;

	if (q->prev)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
}

static void query_free(struct dns_query *q)
{
	query_unlink(q);
	free(q->targets);
	free(q->addrs);
	free(q);
}

static struct dns_query *query_new(struct dns_resolver *r, dns_srv_cb srv_cb,
				   dns_addr_cb addr_cb, void *arg)
{
	struct dns_query *q = calloc(1, sizeof *q);

	if (!q)
		return NULL;
	q->resolver = r;
	q->state = QUERY_RUNNING;
	q->in_cares = true;
	q->deadline_ms = now_ms() + r->timeout_ms;
	q->srv_cb = srv_cb;
	q->addr_cb = addr_cb;
	q->arg = arg;
	q->next = r->queries;
	if (q->next)
		q->next->prev = q;
	r->queries = q;
	r->pending++;
	return q;
}

/* c-ares is done with Q: keep the answer for the caller, or free Q if the
 * caller was already told. */
static void query_finished_in_cares(struct dns_query *q, int status)
{
	q->in_cares = false;
	if (q->state == QUERY_DETACHED) {
		query_free(q);
		return;
	}
	if (q->state == QUERY_RUNNING) { /* else it timed out: keep that */
		q->status = status;
		q->state = QUERY_COMPLETE;
	}
}

/* Strip one trailing dot; false if NAME does not fit OUT. */
static bool copy_name(char *out, const char *name)
{
	size_t len = strlen(name);

	if (len && name[len - 1] == '.')
		len--;
	if (len >= DNS_NAME_MAX)
		return false;
	memcpy(out, name, len);
	out[len] = '\0';
	return true;
}

static void srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	struct ares_srv_reply *replies = NULL, *rep;
	int n = 0, result;

	(void)timeouts;
	if (status != ARES_SUCCESS || q->state != QUERY_RUNNING) {
		query_finished_in_cares(q, status_from_ares(status));
		return;
	}
	status = ares_parse_srv_reply(abuf, alen, &replies);
	if (status != ARES_SUCCESS) {
		query_finished_in_cares(q, status_from_ares(status));
		return;
	}
	for (rep = replies; rep; rep = rep->next)
		n++;
	result = -ENOENT;
	q->targets = n ? calloc((size_t)n, sizeof *q->targets) : NULL;
	if (n && !q->targets) {
		result = -ENOMEM;
	} else {
		for (rep = replies; rep; rep = rep->next) {
			struct dns_srv_target *t = &q->targets[q->count];

			/* A target of "." (empty once parsed) says the service
			 * is decidedly not available (RFC 2782); a name that
			 * does not fit is no target we could use. */
			if (!copy_name(t->target, rep->host) || !t->target[0])
				continue;
			t->port = rep->port;
			t->priority = rep->priority;
			t->weight = rep->weight;
			q->count++;
		}
		if (q->count)
			result = 0;
	}
	ares_free_data(replies);
	query_finished_in_cares(q, result);
}

static void addr_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct dns_query *q = arg;
	struct ares_addrinfo_node *node;
	int n = 0, result = -ENOENT;

	(void)timeouts;
	if (status != ARES_SUCCESS || q->state != QUERY_RUNNING) {
		ares_freeaddrinfo(res);
		query_finished_in_cares(q, status_from_ares(status));
		return;
	}
	for (node = res ? res->nodes : NULL; node; node = node->ai_next)
		n++;
	q->addrs = n ? calloc((size_t)n, sizeof *q->addrs) : NULL;
	if (n && !q->addrs) {
		result = -ENOMEM;
		goto done;
	}
	for (node = res ? res->nodes : NULL; node; node = node->ai_next) {
		struct dns_addr a = { .family = node->ai_family };
		const void *src;
		bool seen = false;

		if (node->ai_family == AF_INET)
			src = &((const struct sockaddr_in *)(const void *)node->ai_addr)->sin_addr;
		else if (node->ai_family == AF_INET6)
			src = &((const struct sockaddr_in6 *)(const void *)node->ai_addr)->sin6_addr;
		else
			continue;
		if (!inet_ntop(node->ai_family, src, a.ip, sizeof a.ip))
			continue;
		for (int i = 0; i < q->count && !seen; i++)
			seen = strcmp(q->addrs[i].ip, a.ip) == 0;
		if (!seen)
			q->addrs[q->count++] = a;
	}
	if (q->count)
		result = 0;
done:
	ares_freeaddrinfo(res);
	query_finished_in_cares(q, result);
}

static int check_name(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	return len == 0 || len >= DNS_NAME_MAX ? -EINVAL : 0;
}

int dns_query_srv(struct dns_resolver *r, const char *name, dns_srv_cb cb, void *arg)
{
	struct dns_query *q;
	int rc = check_name(name);

	if (rc)
		return rc;
	if (r->closing)
		return -ECANCELED;
	q = query_new(r, cb, NULL, arg);
	if (!q)
		return -ENOMEM;
	ares_query(r->channel, name, ns_c_in, ns_t_srv, srv_answer, q);
	return 0;
}

/* A numeric HOST is its own answer (c-ares 1.18 sends an IPv4 literal to
 * the DNS servers when asked for AF_UNSPEC). True when Q is complete. */
static bool numeric_answer(struct dns_query *q, const char *host, int family)
{
	unsigned char buf[sizeof(struct in6_addr)];
	int found = 0;

	if (inet_pton(AF_INET, host, buf) == 1)
		found = AF_INET;
	else if (inet_pton(AF_INET6, host, buf) == 1)
		found = AF_INET6;
	if (!found)
		return false;
	q->in_cares = false;
	q->state = QUERY_COMPLETE;
	q->status = -ENOENT; /* a literal of the other family */
	if (family != AF_UNSPEC && family != found)
		return true;
	q->addrs = calloc(1, sizeof *q->addrs);
	if (!q->addrs) {
		q->status = -ENOMEM;
		return true;
	}
	q->addrs[0].family = found;
	inet_ntop(found, buf, q->addrs[0].ip, sizeof q->addrs[0].ip);
	q->count = 1;
	q->status = 0;
	return true;
}

int dns_query_addr(struct dns_resolver *r, const char *host, int family, dns_addr_cb cb,
		   void *arg)
{
	struct ares_addrinfo_hints hints = {
		.ai_family = family,
		.ai_socktype = SOCK_STREAM,
	};
	struct dns_query *q;
	int rc = check_name(host);

	if (rc)
		return rc;
	if (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC)
		return -EAFNOSUPPORT;
	if (r->closing)
		return -ECANCELED;
	q = query_new(r, NULL, cb, arg);
	if (!q)
		return -ENOMEM;
	if (numeric_answer(q, host, family))
		return 0;
	ares_getaddrinfo(r->channel, host, NULL, &hints, addr_answer, q);
	return 0;
}

/* Run the callback of every query whose answer is in (or, when CANCEL, of
 * every query not yet told). One at a time from the head, because a
 * callback may start queries (added at the head) or complete none. */
static void deliver(struct dns_resolver *r, bool cancel)
{
	for (;;) {
		struct dns_query *q;
		int status;

		for (q = r->queries; q; q = q->next)
			if (q->state == QUERY_COMPLETE || (cancel && q->state == QUERY_RUNNING))
				break;
		if (!q)
			return;
		status = q->state == QUERY_COMPLETE && !cancel ? q->status : -ECANCELED;
		r->pending--;
		if (status == 0 && q->srv_cb)
			q->srv_cb(q->arg, 0, q->targets, q->count);
		else if (status == 0)
			q->addr_cb(q->arg, 0, q->addrs, q->count);
		else if (q->srv_cb)
			q->srv_cb(q->arg, status, NULL, 0);
		else
			q->addr_cb(q->arg, status, NULL, 0);
		if (q->in_cares) {
			/* only when CANCEL took a running query */
			q->state = QUERY_DETACHED;
		} else {
			query_free(q);
		}
	}
}

static void expire(struct dns_resolver *r)
{
	int64_t now = now_ms();

	for (struct dns_query *q = r->queries; q; q = q->next) {
		if (q->state == QUERY_RUNNING && now >= q->deadline_ms) {
			q->status = -ETIMEDOUT;
			q->state = QUERY_COMPLETE;
			/* stays in c-ares; deliver() marks it detached */
		}
	}
}

void dns_free(struct dns_resolver *r)
{
	if (!r)
		return;
	r->closing = true;
	/* c-ares calls every query back with ARES_EDESTRUCTION */
	ares_destroy(r->channel);
	deliver(r, true);
	while (r->queries) /* detached ones c-ares has now released */
		query_free(r->queries);
	free(r);
}

int dns_fds(struct dns_resolver *r, struct pollfd *out, int max)
{
	ares_socket_t socks[ARES_GETSOCK_MAXNUM];
	int bits = ares_getsock(r->channel, socks, ARES_GETSOCK_MAXNUM);
	int n = 0;

	for (int i = 0; i < ARES_GETSOCK_MAXNUM && n < max; i++) {
		short events = 0;

		if (ARES_GETSOCK_READABLE(bits, i))
			events |= POLLIN;
		if (ARES_GETSOCK_WRITABLE(bits, i))
			events |= POLLOUT;
		if (!events)
			break; /* c-ares fills the array from the start */
		out[n].fd = socks[i];
		out[n].events = events;
		out[n].revents = 0;
		n++;
	}
	return n;
}

int dns_timeout_ms(struct dns_resolver *r)
{
	struct timeval tv, *tvp;
	int64_t best = -1, now = now_ms();

	for (struct dns_query *q = r->queries; q; q = q->next) {
		int64_t left;

		if (q->state == QUERY_COMPLETE)
			return 0;
		if (q->state != QUERY_RUNNING)
			continue;
		left = q->deadline_ms > now ? q->deadline_ms - now : 0;
		if (best < 0 || left < best)
			best = left;
	}
	tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp) {
		/* round up, so we do not wake just before c-ares is due */
		int64_t t = (int64_t)tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000;

		if (best < 0 || t < best)
			best = t;
	}
	return best > 60000 ? 60000 : (int)best;
}

void dns_process(struct dns_resolver *r, const struct pollfd *fds, int n)
{
	for (int i = 0; i < n; i++) {
		ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

		if (fds[i].revents & (POLLIN | POLLERR | POLLHUP))
			rfd = fds[i].fd;
		if (fds[i].revents & POLLOUT)
			wfd = fds[i].fd;
		if (rfd != ARES_SOCKET_BAD || wfd != ARES_SOCKET_BAD)
			ares_process_fd(r->channel, rfd, wfd);
	}
	/* c-ares's own retry and timeout timers */
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	expire(r);
	deliver(r, false);
}

int dns_pending(const struct dns_resolver *r)
{
	return r->pending;
}

int dns_wait(struct dns_resolver *r, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (r->pending > 0) {
		struct pollfd fds[ARES_GETSOCK_MAXNUM];
		int64_t left = deadline - now_ms();
		int n, t;

		if (left <= 0)
			return -ETIMEDOUT;
		n = dns_fds(r, fds, ARES_GETSOCK_MAXNUM);
		t = dns_timeout_ms(r);
		if (t < 0 || t > left)
			t = (int)left;
		if (poll(fds, (nfds_t)n, t) < 0 && errno != EINTR)
			return -errno;
		dns_process(r, fds, n);
	}
	return 0;
}

static uint32_t system_rand(void *arg)
{
	uint32_t v;

	(void)arg;
	/* 4 bytes from the urandom pool never fail short after boot */
	if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
		v = (uint32_t)now_ms();
	return v;
}

/* A uniform value in [0, N) from 32-bit RAND, without modulo bias. N above
 * 2^32 (more than 65537 records of one priority) cannot come from one DNS
 * answer; it is served with two draws all the same. */
static uint64_t uniform(uint64_t n, uint32_t (*rand)(void *), void *rand_arg)
{
	uint64_t v, limit;

	if (n <= UINT64_C(1) << 32) {
		limit = (UINT64_C(1) << 32) / n * n;
		do
			v = rand(rand_arg);
		while (v >= limit);
	} else {
		limit = UINT64_MAX - UINT64_MAX % n;
		do
			v = (uint64_t)rand(rand_arg) << 32 | rand(rand_arg);
		while (v >= limit);
	}
	return v % n;
}

/* Weighted selection within T[0..N) (one priority), RFC 2782 section
 * "Weight": weight-0 entries first in the running sum, a uniform number in
 * [0, sum], the first entry whose running sum reaches it goes next. */
static void order_one_priority(struct dns_srv_target *t, int n, uint32_t (*rand)(void *),
			       void *rand_arg)
{
	/* weight 0 to the front, keeping the received order otherwise */
	for (int i = 1; i < n; i++) {
		if (t[i].weight != 0)
			continue;
		struct dns_srv_target zero = t[i];
		int j = i;

		while (j > 0 && t[j - 1].weight != 0) {
			t[j] = t[j - 1];
			j--;
		}
		t[j] = zero;
	}
	for (int done = 0; done < n - 1; done++) {
		uint64_t sum = 0, running = 0, pick;
		int chosen = n - 1;

		for (int i = done; i < n; i++)
			sum += t[i].weight;
		pick = uniform(sum + 1, rand, rand_arg);
		for (int i = done; i < n; i++) {
			running += t[i].weight;
			if (running >= pick) {
				chosen = i;
				break;
			}
		}
		/* move the chosen one to DONE, the rest keep their order
		 * (so weight-0 entries stay at the front) */
		struct dns_srv_target c = t[chosen];

		memmove(&t[done + 1], &t[done], (size_t)(chosen - done) * sizeof *t);
		t[done] = c;
	}
}

void dns_srv_order(struct dns_srv_target *targets, int count, uint32_t (*rand)(void *),
		   void *rand_arg)
{
	if (!rand)
		rand = system_rand;
	/* stable insertion sort by priority: lists are a handful of records */
	for (int i = 1; i < count; i++) {
		struct dns_srv_target cur = targets[i];
		int j = i;

		while (j > 0 && targets[j - 1].priority > cur.priority) {
			targets[j] = targets[j - 1];
			j--;
		}
		targets[j] = cur;
	}
	for (int start = 0; start < count;) {
		int end = start + 1;

		while (end < count && targets[end].priority == targets[start].priority)
			end++;
		order_one_priority(targets + start, end - start, rand, rand_arg);
		start = end;
	}
}
