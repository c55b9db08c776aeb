/*
 * bridge: the call bridge's side of the XMPP component connection
 * (XEP-0114), as a library an appliance's call bridge links and as the
 * engine of xmpp-bridge-connect. docs/callbridge.md is the contract with
 * the server.
 *
 * What it does, once bridge_run() is called:
 *   - finds the service: _xmpp-component._tcp.DOMAIN SRV records in RFC 2782
 *     order, each target's A/AAAA records (common/dns.h), or the one server
 *     the configuration names;
 *   - connects over TLS from the first byte (TLS 1.2+), verifies the chain
 *     against the CA file and checks that a DNS SAN names the domain or the
 *     target host (RFC 6125: exact, or '*' as the whole left-most label; no
 *     fallback to the subject CN);
 *   - opens the stream to the component address, sends the handshake
 *     (lower-case hex SHA-1 of stream id + secret), waits for <handshake/>;
 *   - keeps the connection: answers XEP-0199 pings, the login hand-off
 *     (urn:xmppd:callbridge-auth:1, from the domain only) through the auth
 *     callback, service-unavailable to any other iq get/set; a whitespace
 *     keep-alive every 30 s, TCP keep-alive and a TCP user timeout to notice
 *     a server that vanished without closing;
 *   - on any failure goes on with the next target, after a pause that
 *     doubles from 0.5 s to 30 s and goes back to 0.5 s once a connection
 *     has stayed up for 30 s; when the targets are used up it resolves SRV
 *     again.
 *
 * Threading: one thread. Everything, callbacks included, runs inside
 * bridge_run() on the caller's thread; only bridge_stop() may be called
 * from elsewhere (a signal handler, another thread).
 *
 * Logging: one line per event through the log callback, in the appliance's
 * words (operators and tests search for them):
 *   connecting to HOST:PORT (IP)
 *   connected to HOST:PORT (IP) as ADDRESS
 *   failed to connect to HOST due to REASON
 *   No DNS SRV records for _xmpp-component._tcp.DOMAIN
 *   XMPP component connection disconnected due to failure reason: "REASON"
 * REASON is one of "dns error", "connection refused", "connection timed
 * out", "network error", "tls error", "certificate error", "authentication
 * failure", "stream error", "stream closed", "connection lost", "handshake
 * timed out". The "disconnected" line comes when an established connection
 * ends, and when a round of targets (or the DNS lookup) failed. No secret or
 * password is ever passed to the log callback.
 */
#ifndef XMPPD_BRIDGE_H
#define XMPPD_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

#define BRIDGE_DEFAULT_PORT 5223

enum bridge_log_level {
	BRIDGE_LOG_DEBUG,
	BRIDGE_LOG_INFO,
	BRIDGE_LOG_WARN,
	BRIDGE_LOG_ERROR,
};

/* LINE has no newline. */
typedef void (*bridge_log_fn)(void *arg, enum bridge_log_level level, const char *line);

/* The login hand-off: true accepts USERNAME with PASSWORD. CLIENT_ADDRESS
 * is the client's "IP:PORT" as the server saw it (for the bridge's own
 * logs). Runs inside bridge_run(): answer promptly (the server gives up
 * after auth_timeout_ms, 10 s by default). PASSWORD is wiped after the
 * call; do not keep the pointer. */
typedef bool (*bridge_auth_fn)(void *arg, const char *username, const char *password,
			       const char *client_address);

/* CONNECTED true: a handshake succeeded (REASON NULL). false: the
 * connection ended, or a round of targets failed, for REASON (the word of
 * the log line). */
typedef void (*bridge_state_fn)(void *arg, bool connected, const char *reason);

struct bridge_config {
	const char *name;           /* the call bridge's name, e.g. "cb1" */
	const char *domain;         /* the XMPP domain */
	const char *address;        /* component address; NULL: NAME.DOMAIN */
	const char *secret;         /* shared with `xmppctl callbridge add` */
	const char *server;         /* NULL: DNS SRV; else "HOST[:PORT]",
				     * IPv6 as "[ADDR]:PORT"; port 5223 */
	const char *dns_servers;    /* NULL: the system's; else as dns_new() */
	const char *ca_file;        /* PEM trust anchors; NULL: the system's */
	bool no_tls;                /* plaintext (a listener with tls: none) */

	bridge_auth_fn auth;        /* NULL: every login refused */
	void *auth_arg;
	bridge_log_fn log;          /* NULL: silent */
	void *log_arg;
	bridge_state_fn state;      /* NULL: not told */
	void *state_arg;
};

struct bridge;

/* Validate CFG and copy what it points to (the caller may free it after).
 * NULL with a message in ERR on a bad configuration (missing name, domain
 * or secret, bad server or DNS server list, unreadable CA file) or when out
 * of memory. Starts nothing. */
struct bridge *bridge_new(const struct bridge_config *cfg, char *err, size_t errlen);
/* Closes the connection if one is open (no stream close sent: call
 * bridge_stop and let bridge_run return for that). Wipes the secret. */
void bridge_free(struct bridge *b);

/* Run until bridge_stop(): connect, keep the connection, reconnect. Once
 * per bridge (-EALREADY after). Returns 0 after a stop (an open stream is
 * closed properly first), or -errno when the loop itself cannot go on. */
int bridge_run(struct bridge *b);
/* Async-signal-safe and thread-safe: make bridge_run() return soon. */
void bridge_stop(struct bridge *b);

/* The component address in use (NAME.DOMAIN unless configured). */
const char *bridge_address(const struct bridge *b);

#endif
