/*
 * dns: asynchronous DNS lookups (c-ares) for processes that run their own
 * event loop (the call bridge's connector, xmpp-bridge-connect) and for
 * one-shot tools that just want answers (xmppctl diagnose, via dns_wait).
 *
 * A resolver owns one c-ares channel. The caller's loop asks which sockets
 * to poll (dns_fds) and for how long (dns_timeout_ms), then hands the poll
 * results back (dns_process); callbacks run from dns_process only, never
 * from inside dns_query_*. c-ares reuses socket numbers at once, so the fd
 * list is rebuilt every turn rather than cached.
 *
 * Status values, shared by every callback (negative errno convention):
 *   0            answers follow (count >= 1)
 *   -ENOENT      the name does not exist or has no records of that type
 *                (NXDOMAIN, NODATA, or an SRV answer of "." meaning the
 *                service is decidedly not available, RFC 2782)
 *   -ETIMEDOUT   no server answered in time
 *   -ECONNREFUSED the servers refused or failed (REFUSED, SERVFAIL)
 *   -EIO         any other resolver failure (bad reply, ...)
 *   -ECANCELED   the resolver was freed with the query pending
 *   -ENOMEM
 */
#ifndef XMPPD_DNS_H
#define XMPPD_DNS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX 256        /* bytes including NUL */
#define DNS_IP_MAX 46           /* INET6_ADDRSTRLEN */

struct dns_resolver;

struct dns_srv_target {
	char target[DNS_NAME_MAX];  /* host name, without the trailing dot */
	uint16_t port;
	uint16_t priority;
	uint16_t weight;
};

struct dns_addr {
	int family;                 /* AF_INET or AF_INET6 */
	char ip[DNS_IP_MAX];        /* numeric form */
};

typedef void (*dns_srv_cb)(void *arg, int status, const struct dns_srv_target *targets,
			   int count);
typedef void (*dns_addr_cb)(void *arg, int status, const struct dns_addr *addrs, int count);

/* SERVERS: NULL or "" for the system's /etc/resolv.conf, or a list
 * "IP[:PORT][,IP[:PORT]...]" (IPv6 as [addr]:port). TIMEOUT_MS: how long one
 * query may take in all, retries included. NULL with a message in ERR on
 * failure (bad server list, out of memory). */
struct dns_resolver *dns_new(const char *servers, int timeout_ms, char *err, size_t errlen);
/* Pending queries' callbacks run with -ECANCELED before it returns. */
void dns_free(struct dns_resolver *r);

/* Start a query. 0 when started (the callback will run exactly once, from
 * dns_process or dns_wait or dns_free), -errno when it could not start (the
 * callback will not run). NAME is copied. */
int dns_query_srv(struct dns_resolver *r, const char *name, dns_srv_cb cb, void *arg);
/* A and/or AAAA records of HOST; FAMILY is AF_INET, AF_INET6 or AF_UNSPEC
 * (both). A numeric HOST answers at once (from the next dns_process). */
int dns_query_addr(struct dns_resolver *r, const char *host, int family, dns_addr_cb cb,
		   void *arg);

/* Event-loop integration. dns_fds fills up to MAX pollfds (fd and events)
 * and returns how many; dns_timeout_ms returns the longest the caller may
 * sleep before calling dns_process again (-1: no query pending). dns_process
 * takes the pollfds after poll() (revents filled; N may be 0 for "timer
 * only") and runs whatever completed. */
int dns_fds(struct dns_resolver *r, struct pollfd *out, int max);
int dns_timeout_ms(struct dns_resolver *r);
void dns_process(struct dns_resolver *r, const struct pollfd *fds, int n);
/* Number of queries whose callbacks have not run yet. */
int dns_pending(const struct dns_resolver *r);

/* For blocking callers: poll and process until nothing is pending or
 * TIMEOUT_MS passed. 0, or -ETIMEDOUT (queries still pending). */
int dns_wait(struct dns_resolver *r, int timeout_ms);

/* RFC 2782 order, in place: ascending priority; within one priority, the
 * weighted random selection (weight 0 entries first in the running sum, so
 * they are picked rarely when others weigh more). RAND returns a uniform
 * 32-bit value; NULL uses getrandom. Tests pass their own to be exact. */
void dns_srv_order(struct dns_srv_target *targets, int count, uint32_t (*rand)(void *),
		   void *rand_arg);

/* Text for a status value above, e.g. "no records", "timed out". */
const char *dns_status_text(int status);

#endif
