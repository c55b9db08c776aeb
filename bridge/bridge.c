/*
 * bridge: one XEP-0114 component connection, kept up (see bridge.h).
 *
 * The engine is a state machine driven by one poll() loop:
 *
 *   IDLE --timer--> SRV --> ADDR --> CONNECT --> TLS --> STREAM --> HANDSHAKE --> CONNECTED
 *     ^              |        |         |         |        |            |             |
 *     +--------------+--------+---------+---------+--------+------------+-------------+
 *                       fail(): next address, next target or next round
 *
 * A "round" is one list of targets: the SRV answer in RFC 2782 order, or
 * the one configured server. Each target is tried once per round; within a
 * target, each of its addresses is tried until one accepts TCP (a refused
 * or timed-out address says nothing about the others), but once a server
 * has answered, a TLS, certificate or XMPP failure fails the whole target.
 * Between attempts the loop sits in IDLE for the backoff delay, which
 * doubles from 0.5 s to 30 s with every failure and drop, and goes back to
 * 0.5 s when a connection has stayed up for 30 s: a bridge whose service
 * went away finds the next node within a second, and one with a broken
 * deployment (a wrong secret everywhere, a server that accepts the
 * handshake and hangs up at once) does not hammer it.
 *
 * Incoming XML goes through expat in namespace mode, streaming. Handlers
 * never tear the connection down themselves (that would free the parser
 * under its own feet): they set fail_reason and stop the parser, and the
 * read loop acts once XML_Parse has returned. Stanzas are small and only
 * a few fields matter (iq type, id, from, to, the payload's name, and the
 * login hand-off's three texts), so they are captured into fixed buffers,
 * not a tree.
 */
#include "bridge/bridge.h"

#include "common/dns.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/sha.h>

#include <arpa/inet.h>
#include <errno.h>
#include <expat.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DNS_TIMEOUT_MS 5000
#define CONNECT_TIMEOUT_MS 5000
/* TLS, stream header and handshake. The server answers repeated wrong
 * secrets more and more slowly: give it time rather than hang up first. */
#define LOGIN_TIMEOUT_MS 20000
#define KEEPALIVE_MS 30000
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
/* A connection that lasted this long resets the backoff. */
#define STABLE_MS 30000
/* A server that reads nothing while we queue this much is gone. */
#define OUT_MAX (256 * 1024)
#define FIELD_MAX 1024
#define SRV_SERVICE "_xmpp-component._tcp."

#define NS_SEP '\x01' /* expat's "URI<sep>local"; not a legal XML char */
#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_COMPONENT "jabber:component:accept"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_PING "urn:xmpp:ping"
#define NS_AUTH "urn:xmppd:callbridge-auth:1"

enum state {
	ST_IDLE,       /* waiting for the timer to start the next attempt */
	ST_SRV,        /* SRV lookup running */
	ST_ADDR,       /* address lookup for the current target */
	ST_CONNECT,    /* TCP connect in progress */
	ST_TLS,        /* TLS handshake */
	ST_STREAM,     /* our stream header sent, waiting for the server's */
	ST_HANDSHAKE,  /* handshake sent, waiting for <handshake/> */
	ST_CONNECTED,
};

enum stanza_kind { STANZA_OTHER, STANZA_IQ, STANZA_HANDSHAKE, STANZA_STREAM_ERROR };
enum payload { PAYLOAD_NONE, PAYLOAD_PING, PAYLOAD_AUTH, PAYLOAD_OTHER };
enum capture { CAPTURE_NONE, CAPTURE_USERNAME, CAPTURE_PASSWORD, CAPTURE_CLIENT };

struct field {
	char text[FIELD_MAX];
	size_t len;
	bool seen;
};

/* The stanza being parsed (depth 2 and below). */
struct stanza {
	enum stanza_kind kind;
	bool overflow;         /* an attribute did not fit: cannot answer it */
	char type[16];
	char id[FIELD_MAX], from[FIELD_MAX], to[FIELD_MAX];
	enum payload payload;  /* the first child element */
	bool in_payload;
	char condition[64];    /* stream error condition */
	enum capture capture;
	bool bad_fields;       /* auth texts too long, repeated or nested */
	struct field username, password, client;
};

struct target {
	char host[DNS_NAME_MAX];
	uint16_t port;
};

struct bridge {
	/* configuration */
	char *domain, *address, *secret;
	char server_host[DNS_NAME_MAX];
	uint16_t server_port;
	bool have_server, tls;
	bridge_auth_fn auth;
	void *auth_arg;
	bridge_log_fn log;
	void *log_arg;
	bridge_state_fn state_cb;
	void *state_arg;

	struct dns_resolver *dns;
	WOLFSSL_CTX *tls_ctx;
	int wake[2];                /* self-pipe written by bridge_stop */
	volatile sig_atomic_t stop;
	bool ran;

	/* where we are */
	enum state state;
	int64_t timer;              /* IDLE: when to go on; else a deadline */
	int64_t backoff_ms;
	struct target *targets;
	int ntargets, cur;          /* cur: the target being tried */
	int next;                   /* the target to try after IDLE */
	struct dns_addr *addrs;
	int naddrs, addr_i;

	/* the connection */
	int fd;
	WOLFSSL *ssl;
	short tls_want;             /* POLLIN/POLLOUT wolfSSL is waiting for */
	XML_Parser parser;
	int depth;
	struct stanza st;
	const char *fail_reason;    /* set by parser handlers */
	int io_errno;               /* last socket error seen by TLS I/O */
	char cert_error[640];
	char *out;
	size_t out_len, out_cap;
	int tls_chunk;              /* the length wolfSSL_write must retry */
	int64_t last_send;
	int64_t connected_at;
};

static pthread_once_t wolfssl_once = PTHREAD_ONCE_INIT;
static int wolfssl_status;

static void wolfssl_init(void)
{
	wolfssl_status = wolfSSL_Init();
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 3, 4)))
static void blog(struct bridge *b, enum bridge_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!b->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	b->log(b->log_arg, level, line);
}

static const struct target *current(const struct bridge *b)
{
	return &b->targets[b->cur];
}

static const char *reason_from_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return "connection refused";
	case ETIMEDOUT:
		return "connection timed out";
	case ECONNRESET:
	case EPIPE:
		return "connection lost";
	default:
		return "network error";
	}
}

/* ---- output ---- */

static void out_failed(struct bridge *b)
{
	/* the caller is in a handler or a flush: let the loop tear down */
	if (!b->fail_reason)
		b->fail_reason = "connection lost";
}

static void out_append(struct bridge *b, const char *s, size_t len)
{
	if (b->out_len + len > b->out_cap) {
		size_t cap = b->out_cap ? b->out_cap : 1024;
		char *p;

		while (cap < b->out_len + len)
			cap *= 2;
		if (cap > OUT_MAX) {
			out_failed(b);
			return;
		}
		p = realloc(b->out, cap);
		if (!p) {
			out_failed(b);
			return;
		}
		b->out = p;
		b->out_cap = cap;
	}
	memcpy(b->out + b->out_len, s, len);
	b->out_len += len;
}

static void out_str(struct bridge *b, const char *s)
{
	out_append(b, s, strlen(s));
}

/* S as XML attribute or text content. */
static void out_escaped(struct bridge *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': out_str(b, "&amp;"); break;
		case '<': out_str(b, "&lt;"); break;
		case '>': out_str(b, "&gt;"); break;
		case '\'': out_str(b, "&apos;"); break;
		case '"': out_str(b, "&quot;"); break;
		default: out_append(b, s, 1);
		}
	}
}

/* Send what is queued, as far as the socket takes it. 0, or -errno when the
 * connection is broken. */
static int flush(struct bridge *b)
{
	size_t done = 0;
	int rc = 0;

	while (done < b->out_len) {
		size_t left = b->out_len - done;

		if (b->ssl) {
			/* after WANT_WRITE wolfSSL must be called again with the
			 * same length: it has that record half sent */
			int chunk = b->tls_chunk ? b->tls_chunk : (left > 16384 ? 16384 : (int)left);
			int n = wolfSSL_write(b->ssl, b->out + done, chunk);

			if (n > 0) {
				b->tls_chunk = 0;
				done += (size_t)n;
				continue;
			}
			if (wolfSSL_get_error(b->ssl, n) == WOLFSSL_ERROR_WANT_WRITE) {
				b->tls_chunk = chunk;
				break;
			}
			rc = -(b->io_errno ? b->io_errno : EPIPE);
			break;
		} else {
			ssize_t n = send(b->fd, b->out + done, left, MSG_NOSIGNAL);

			if (n >= 0) {
				done += (size_t)n;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				rc = -errno;
			break;
		}
	}
	if (done) {
		memmove(b->out, b->out + done, b->out_len - done);
		b->out_len -= done;
		b->last_send = now_ms();
	}
	return rc;
}

/* ---- TLS ---- */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct bridge *b = ctx;
	ssize_t n;

	(void)ssl;
	n = recv(b->fd, buf, (size_t)sz, 0);
	if (n > 0)
		return (int)n;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_CONN_CLOSE;
	if (errno == EAGAIN)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (errno == EINTR)
		return WOLFSSL_CBIO_ERR_ISR;
	b->io_errno = errno;
	return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_GENERAL;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct bridge *b = ctx;
	ssize_t n;

	(void)ssl;
	n = send(b->fd, buf, (size_t)sz, MSG_NOSIGNAL); /* never SIGPIPE the host */
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	if (errno == EINTR)
		return WOLFSSL_CBIO_ERR_ISR;
	b->io_errno = errno;
	return errno == EPIPE ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_CONN_RST;
}

static bool ascii_case_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && strncasecmp(a, b, alen) == 0;
}

static size_t without_trailing_dot(const char *s, size_t len)
{
	return len && s[len - 1] == '.' ? len - 1 : len;
}

/* RFC 6125 6.4: a DNS-ID matches REF exactly (ASCII case-insensitive), or
 * as "*.rest" where '*' stands for exactly one whole, non-empty left-most
 * label and "rest" has at least two labels (no "*.com"). Partial wildcards
 * ("f*.example.com") are refused. */
static bool dns_id_matches(const char *id, size_t id_len, const char *ref)
{
	size_t ref_len = without_trailing_dot(ref, strlen(ref));
	const char *dot;

	id_len = without_trailing_dot(id, id_len);
	if (id_len == 0 || memchr(id, '\0', id_len))
		return false;
	if (id_len > 2 && id[0] == '*' && id[1] == '.') {
		const char *rest = id + 2;
		size_t rest_len = id_len - 2;

		if (memchr(rest, '*', rest_len) || !memchr(rest, '.', rest_len))
			return false;
		dot = memchr(ref, '.', ref_len);
		if (!dot || dot == ref)
			return false;
		return ascii_case_equal(dot + 1, ref_len - (size_t)(dot + 1 - ref), rest, rest_len);
	}
	if (memchr(id, '*', id_len))
		return false;
	return ascii_case_equal(id, id_len, ref, ref_len);
}

static bool is_ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Does a DNS SAN of X509 name the domain or the target host? On a
 * mismatch, the reason (with the names found) goes to CERT_ERROR. */
static bool cert_names_us(struct bridge *b, WOLFSSL_X509 *x509)
{
	const char *host = current(b)->host;
	bool check_host = !is_ip_literal(host);
	WOLFSSL_STACK *names;
	char seen[256] = "";
	size_t used = 0;
	bool ok = false;

	names = x509 ? wolfSSL_X509_get_ext_d2i(x509, NID_subject_alt_name, NULL, NULL) : NULL;
	/* wolfSSL's stacks push at the head: from the end is certificate order */
	for (int i = names ? wolfSSL_sk_GENERAL_NAME_num(names) - 1 : -1; i >= 0 && !ok; i--) {
		WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(names, i);
		const char *s;
		int len;

		if (!gn || gn->type != ASN_DNS_TYPE || !gn->d.dNSName)
			continue;
		s = (const char *)wolfSSL_ASN1_STRING_get0_data(gn->d.dNSName);
		len = wolfSSL_ASN1_STRING_length(gn->d.dNSName);
		if (!s || len <= 0)
			continue;
		ok = dns_id_matches(s, (size_t)len, b->domain) ||
		     (check_host && dns_id_matches(s, (size_t)len, host));
		/* for the log line: printable names only */
		if (used + (size_t)len + 3 < sizeof seen) {
			if (used) {
				memcpy(seen + used, ", ", 2);
				used += 2;
			}
			for (int k = 0; k < len; k++)
				seen[used++] = s[k] > ' ' && s[k] < 0x7f ? s[k] : '?';
			seen[used] = '\0';
		}
	}
	if (names)
		wolfSSL_GENERAL_NAMES_free(names);
	if (!ok && check_host)
		snprintf(b->cert_error, sizeof b->cert_error,
			 "its DNS names (%s) name neither %s nor %s", used ? seen : "none",
			 b->domain, host);
	else if (!ok)
		snprintf(b->cert_error, sizeof b->cert_error, "its DNS names (%s) do not name %s",
			 used ? seen : "none", b->domain);
	return ok;
}

/* wolfSSL is built with WOLFSSL_ALWAYS_VERIFY_CB: this runs for every
 * certificate of the chain, so the leaf's names are checked here, during
 * the handshake, and a mismatch aborts it with an alert. */
static int verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct bridge *b = store->userCtx;

	if (!preverify) {
		if (!b->cert_error[0])
			snprintf(b->cert_error, sizeof b->cert_error, "%s (certificate %d of the chain)",
				 wolfSSL_X509_verify_cert_error_string(store->error),
				 store->error_depth);
		return 0;
	}
	if (wolfSSL_X509_STORE_CTX_get_error_depth(store) == 0 &&
	    !cert_names_us(b, wolfSSL_X509_STORE_CTX_get_current_cert(store)))
		return 0;
	return 1;
}

/* ---- connection teardown and moving on ---- */

static void conn_close(struct bridge *b)
{
	if (b->ssl) {
		wolfSSL_free(b->ssl);
		b->ssl = NULL;
	}
	if (b->fd >= 0) {
		close(b->fd);
		b->fd = -1;
	}
	if (b->parser) {
		XML_ParserFree(b->parser);
		b->parser = NULL;
	}
	explicit_bzero(&b->st, sizeof b->st);
	b->depth = 0;
	b->fail_reason = NULL;
	b->io_errno = 0;
	b->cert_error[0] = '\0';
	b->out_len = 0;
	b->tls_chunk = 0;
	b->tls_want = 0;
}

static void schedule(struct bridge *b, int next)
{
	b->state = ST_IDLE;
	b->next = next;
	b->timer = now_ms() + b->backoff_ms;
	blog(b, BRIDGE_LOG_DEBUG, "next attempt in %lld ms", (long long)b->backoff_ms);
	b->backoff_ms = b->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b->backoff_ms * 2;
}

static void tell_disconnected(struct bridge *b, const char *reason)
{
	blog(b, BRIDGE_LOG_WARN,
	     "XMPP component connection disconnected due to failure reason: \"%s\"", reason);
	if (b->state_cb)
		b->state_cb(b->state_arg, false, reason);
}

/* The DNS lookup, or every target of the round, failed. */
static void round_failed(struct bridge *b, const char *reason)
{
	tell_disconnected(b, reason);
	schedule(b, b->ntargets); /* past the end: resolve again */
}

/* The current attempt or connection ended for REASON. */
static void fail(struct bridge *b, const char *reason)
{
	bool was_connected = b->state == ST_CONNECTED;

	conn_close(b);
	if (was_connected) {
		if (now_ms() - b->connected_at >= STABLE_MS)
			b->backoff_ms = BACKOFF_MIN_MS;
		tell_disconnected(b, reason);
		schedule(b, b->cur + 1);
		return;
	}
	blog(b, BRIDGE_LOG_WARN, "failed to connect to %s due to %s", current(b)->host, reason);
	if (b->cur + 1 < b->ntargets)
		schedule(b, b->cur + 1);
	else
		round_failed(b, reason);
}

/* ---- XMPP ---- */

static void send_stream_header(struct bridge *b)
{
	out_str(b, "<?xml version='1.0'?><stream:stream xmlns='" NS_COMPONENT
		   "' xmlns:stream='" NS_STREAM "' to='");
	out_escaped(b, b->address);
	out_str(b, "'>");
}

static int send_handshake(struct bridge *b, const char *stream_id)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char digest[WC_SHA_DIGEST_SIZE];
	char text[2 * WC_SHA_DIGEST_SIZE + 1];
	wc_Sha sha;
	int rc;

	rc = wc_InitSha(&sha);
	if (rc == 0)
		rc = wc_ShaUpdate(&sha, (const byte *)stream_id, (word32)strlen(stream_id));
	if (rc == 0)
		rc = wc_ShaUpdate(&sha, (const byte *)b->secret, (word32)strlen(b->secret));
	if (rc == 0)
		rc = wc_ShaFinal(&sha, digest);
	wc_ShaFree(&sha);
	if (rc != 0)
		return -EIO;
	for (size_t i = 0; i < sizeof digest; i++) {
		text[2 * i] = hex[digest[i] >> 4];
		text[2 * i + 1] = hex[digest[i] & 15];
	}
	text[sizeof text - 1] = '\0';
	out_str(b, "<handshake>");
	out_str(b, text);
	out_str(b, "</handshake>");
	explicit_bzero(text, sizeof text);
	explicit_bzero(digest, sizeof digest);
	return 0;
}

/* "<iq type='TYPE' from='(their to)' to='(their from)' id='ID'" */
static void reply_start(struct bridge *b, const char *type)
{
	const struct stanza *st = &b->st;

	out_str(b, "<iq type='");
	out_str(b, type);
	out_str(b, "' from='");
	out_escaped(b, st->to[0] ? st->to : b->address);
	out_str(b, "' to='");
	out_escaped(b, st->from[0] ? st->from : b->domain);
	out_str(b, "' id='");
	out_escaped(b, st->id);
	out_str(b, "'");
}

static void reply_result(struct bridge *b)
{
	reply_start(b, "result");
	out_str(b, "/>");
}

static void reply_error(struct bridge *b, const char *type, const char *condition)
{
	reply_start(b, "error");
	out_str(b, "><error type='");
	out_str(b, type);
	out_str(b, "'><");
	out_str(b, condition);
	out_str(b, " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
}

/* S for a log line: at most 64 bytes, controls and quotes as '?'. */
static void printable(char *dst, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 1 < cap && n < 64; s++)
		dst[n++] = (unsigned char)*s < ' ' || *s == 0x7f || *s == '"' ? '?' : *s;
	dst[n] = '\0';
}

static void handle_auth(struct bridge *b)
{
	char user[72], client[72];
	struct stanza *st = &b->st;
	bool ok = false;

	if (!st->bad_fields && st->username.seen && st->password.seen && b->auth)
		ok = b->auth(b->auth_arg, st->username.text, st->password.text,
			     st->client.text);
	explicit_bzero(st->password.text, sizeof st->password.text);
	st->password.len = 0;
	/* the user name is what the server logs too; the password never */
	printable(user, sizeof user, st->username.text);
	printable(client, sizeof client, st->client.seen ? st->client.text : "(unknown)");
	blog(b, BRIDGE_LOG_INFO, "login hand-off for \"%s\" from %s: %s", user, client,
	     ok ? "accepted" : "refused");
	if (ok)
		reply_result(b);
	else
		reply_error(b, "auth", "not-authorized");
}

static void handle_iq(struct bridge *b)
{
	struct stanza *st = &b->st;
	bool get = strcmp(st->type, "get") == 0, set = strcmp(st->type, "set") == 0;

	if (!get && !set)
		return; /* results and errors answer nothing we asked */
	if (st->overflow) {
		blog(b, BRIDGE_LOG_WARN, "iq with an oversized attribute ignored");
		return;
	}
	if (get && st->payload == PAYLOAD_PING) {
		reply_result(b);
	} else if (set && st->payload == PAYLOAD_AUTH && strcmp(st->from, b->domain) == 0) {
		/* Only the server itself (from the bare domain, which no client
		 * can forge) may hand a login over: otherwise any user who can
		 * address the bridge could test passwords through it. */
		handle_auth(b);
	} else {
		reply_error(b, "cancel", "service-unavailable");
	}
}

static void handle_stanza(struct bridge *b)
{
	struct stanza *st = &b->st;

	switch (st->kind) {
	case STANZA_HANDSHAKE:
		if (b->state == ST_HANDSHAKE) {
			b->state = ST_CONNECTED;
			b->connected_at = now_ms();
			blog(b, BRIDGE_LOG_INFO, "connected to %s:%u (%s) as %s", current(b)->host,
			     current(b)->port, b->addrs[b->addr_i].ip, b->address);
			if (b->state_cb)
				b->state_cb(b->state_arg, true, NULL);
		}
		break;
	case STANZA_STREAM_ERROR:
		blog(b, BRIDGE_LOG_WARN, "stream error from %s: %s", current(b)->host,
		     st->condition[0] ? st->condition : "(no condition)");
		/* before the handshake succeeded, a stream error is the server
		 * refusing us (not-authorized, or an address it does not know) */
		b->fail_reason = b->state == ST_CONNECTED ? "stream error" : "authentication failure";
		XML_StopParser(b->parser, XML_FALSE);
		break;
	case STANZA_IQ:
		if (b->state == ST_CONNECTED)
			handle_iq(b);
		break;
	case STANZA_OTHER:
		break;
	}
}

static bool name_is(const char *name, const char *ns, const char *local)
{
	size_t n = strlen(ns);

	return strncmp(name, ns, n) == 0 && name[n] == NS_SEP && strcmp(name + n + 1, local) == 0;
}

static const char *local_name(const char *name)
{
	const char *sep = strchr(name, NS_SEP);

	return sep ? sep + 1 : name;
}

static bool copy_attr(char *dst, size_t cap, const char *value)
{
	size_t len = strlen(value);

	if (len >= cap)
		return false;
	memcpy(dst, value, len + 1);
	return true;
}

static void stream_start(struct bridge *b, const char *name, const char **atts)
{
	const char *id = NULL;

	if (!name_is(name, NS_STREAM, "stream")) {
		blog(b, BRIDGE_LOG_WARN, "%s sent no XMPP stream", current(b)->host);
		b->fail_reason = "stream error";
		XML_StopParser(b->parser, XML_FALSE);
		return;
	}
	for (int i = 0; atts[i]; i += 2)
		if (strcmp(atts[i], "id") == 0)
			id = atts[i + 1];
	if (b->state != ST_STREAM)
		return;
	if (!id || !*id || strlen(id) >= FIELD_MAX) {
		blog(b, BRIDGE_LOG_WARN, "%s sent a stream header without a usable id",
		     current(b)->host);
		b->fail_reason = "stream error";
		XML_StopParser(b->parser, XML_FALSE);
		return;
	}
	if (send_handshake(b, id) < 0) {
		b->fail_reason = "tls error";
		XML_StopParser(b->parser, XML_FALSE);
		return;
	}
	b->state = ST_HANDSHAKE;
}

static void stanza_start(struct bridge *b, const char *name, const char **atts)
{
	struct stanza *st = &b->st;

	explicit_bzero(st, sizeof *st);
	if (name_is(name, NS_COMPONENT, "iq"))
		st->kind = STANZA_IQ;
	else if (name_is(name, NS_COMPONENT, "handshake"))
		st->kind = STANZA_HANDSHAKE;
	else if (name_is(name, NS_STREAM, "error"))
		st->kind = STANZA_STREAM_ERROR;
	for (int i = 0; atts[i]; i += 2) {
		const char *k = atts[i], *v = atts[i + 1];
		bool ok = true;

		if (strcmp(k, "type") == 0)
			ok = copy_attr(st->type, sizeof st->type, v);
		else if (strcmp(k, "id") == 0)
			ok = copy_attr(st->id, sizeof st->id, v);
		else if (strcmp(k, "from") == 0)
			ok = copy_attr(st->from, sizeof st->from, v);
		else if (strcmp(k, "to") == 0)
			ok = copy_attr(st->to, sizeof st->to, v);
		if (!ok)
			st->overflow = true;
	}
}

static void payload_start(struct bridge *b, const char *name, const char **atts)
{
	struct stanza *st = &b->st;

	if (st->kind == STANZA_STREAM_ERROR) {
		if (!st->condition[0] && strncmp(name, NS_STREAM_ERRORS, strlen(NS_STREAM_ERRORS)) == 0 &&
		    strcmp(local_name(name), "text") != 0)
			snprintf(st->condition, sizeof st->condition, "%s", local_name(name));
		return;
	}
	if (st->payload != PAYLOAD_NONE)
		return; /* an iq has one payload; the rest does not count */
	st->in_payload = true;
	if (name_is(name, NS_PING, "ping")) {
		st->payload = PAYLOAD_PING;
	} else if (name_is(name, NS_AUTH, "authenticate")) {
		st->payload = PAYLOAD_AUTH;
		for (int i = 0; atts[i]; i += 2)
			if (strcmp(atts[i], "mechanism") == 0 && strcmp(atts[i + 1], "PLAIN") != 0)
				st->bad_fields = true; /* nothing else is defined */
	} else {
		st->payload = PAYLOAD_OTHER;
	}
}

static void auth_field_start(struct bridge *b, const char *name)
{
	struct stanza *st = &b->st;
	struct field *f = NULL;

	if (!st->in_payload || st->payload != PAYLOAD_AUTH)
		return;
	if (name_is(name, NS_AUTH, "username")) {
		st->capture = CAPTURE_USERNAME;
		f = &st->username;
	} else if (name_is(name, NS_AUTH, "password")) {
		st->capture = CAPTURE_PASSWORD;
		f = &st->password;
	} else if (name_is(name, NS_AUTH, "address")) {
		st->capture = CAPTURE_CLIENT;
		f = &st->client;
	}
	if (f && f->seen)
		st->bad_fields = true;
	if (f)
		f->seen = true;
}

static void XMLCALL on_start(void *data, const char *name, const char **atts)
{
	struct bridge *b = data;

	b->depth++;
	if (b->depth == 1)
		stream_start(b, name, atts);
	else if (b->depth == 2)
		stanza_start(b, name, atts);
	else if (b->depth == 3)
		payload_start(b, name, atts);
	else if (b->depth == 4)
		auth_field_start(b, name);
	else if (b->st.capture != CAPTURE_NONE)
		b->st.bad_fields = true; /* markup inside a text field */
}

static void XMLCALL on_end(void *data, const char *name)
{
	struct bridge *b = data;

	(void)name;
	if (b->depth == 4) {
		b->st.capture = CAPTURE_NONE;
	} else if (b->depth == 3) {
		b->st.in_payload = false;
	} else if (b->depth == 2) {
		handle_stanza(b);
		explicit_bzero(&b->st, sizeof b->st);
	} else if (b->depth == 1) {
		b->fail_reason = "stream closed";
		XML_StopParser(b->parser, XML_FALSE);
	}
	b->depth--;
}

static void XMLCALL on_text(void *data, const char *s, int len)
{
	struct bridge *b = data;
	struct stanza *st = &b->st;
	struct field *f;

	switch (st->capture) {
	case CAPTURE_USERNAME: f = &st->username; break;
	case CAPTURE_PASSWORD: f = &st->password; break;
	case CAPTURE_CLIENT: f = &st->client; break;
	default: return;
	}
	if (f->len + (size_t)len >= sizeof f->text) {
		st->bad_fields = true;
		return;
	}
	memcpy(f->text + f->len, s, (size_t)len);
	f->len += (size_t)len;
	f->text[f->len] = '\0';
}

/* A server has no business sending a DTD: refuse rather than expand. */
static void XMLCALL on_doctype(void *data, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	struct bridge *b = data;

	(void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
	b->fail_reason = "stream error";
	XML_StopParser(b->parser, XML_FALSE);
}

static int parser_new(struct bridge *b)
{
	b->parser = XML_ParserCreateNS("UTF-8", NS_SEP);
	if (!b->parser)
		return -ENOMEM;
	XML_SetUserData(b->parser, b);
	XML_SetElementHandler(b->parser, on_start, on_end);
	XML_SetCharacterDataHandler(b->parser, on_text);
	XML_SetStartDoctypeDeclHandler(b->parser, on_doctype);
	/* The server is trusted not to drip-feed huge tokens, and deferral
	 * would hold back a complete stanza until more bytes arrive. */
	XML_SetReparseDeferralEnabled(b->parser, XML_FALSE);
	return 0;
}

/* ---- reading ---- */

/* Read and parse everything available: until the socket would block, since
 * wolfSSL may hold decrypted bytes that no poll() would announce. The
 * connection may be gone after (fail() was called). */
static void conn_read(struct bridge *b)
{
	char buf[16384];

	for (;;) {
		int n;

		if (b->ssl) {
			n = wolfSSL_read(b->ssl, buf, sizeof buf);
			if (n <= 0) {
				int err = wolfSSL_get_error(b->ssl, n);

				if (err == WOLFSSL_ERROR_WANT_READ)
					return;
				if (err == WOLFSSL_ERROR_WANT_WRITE) {
					b->tls_want = POLLOUT;
					return;
				}
				fail(b, b->io_errno ? reason_from_errno(b->io_errno) : "connection lost");
				return;
			}
		} else {
			ssize_t r = recv(b->fd, buf, sizeof buf, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && errno == EAGAIN)
				return;
			if (r <= 0) {
				fail(b, r < 0 ? reason_from_errno(errno) : "connection lost");
				return;
			}
			n = (int)r;
		}
		b->tls_want = 0;
		if (XML_Parse(b->parser, buf, n, XML_FALSE) == XML_STATUS_ERROR && !b->fail_reason) {
			blog(b, BRIDGE_LOG_WARN, "malformed XML from %s: %s", current(b)->host,
			     XML_ErrorString(XML_GetErrorCode(b->parser)));
			b->fail_reason = "stream error";
		}
		if (!b->fail_reason && flush(b) < 0)
			b->fail_reason = "connection lost";
		if (b->fail_reason) {
			if (strcmp(b->fail_reason, "stream closed") == 0 && b->state == ST_CONNECTED) {
				/* answer the close before hanging up */
				out_str(b, "</stream:stream>");
				flush(b);
			}
			fail(b, b->fail_reason);
			return;
		}
	}
}

/* ---- connecting ---- */

static void start_xmpp(struct bridge *b)
{
	b->state = ST_STREAM;
	send_stream_header(b);
	if (flush(b) < 0) {
		fail(b, "connection lost");
		return;
	}
	conn_read(b); /* the server's header may be in already */
}

static void tls_step(struct bridge *b)
{
	int rc = wolfSSL_connect(b->ssl), err;

	if (rc == WOLFSSL_SUCCESS) {
		b->tls_want = 0;
		blog(b, BRIDGE_LOG_DEBUG, "TLS with %s: %s %s", current(b)->host,
		     wolfSSL_get_version(b->ssl), wolfSSL_get_cipher_name(b->ssl));
		start_xmpp(b);
		return;
	}
	err = wolfSSL_get_error(b->ssl, rc);
	if (err == WOLFSSL_ERROR_WANT_READ) {
		b->tls_want = POLLIN;
		return;
	}
	if (err == WOLFSSL_ERROR_WANT_WRITE) {
		b->tls_want = POLLOUT;
		return;
	}
	if (b->cert_error[0]) {
		blog(b, BRIDGE_LOG_WARN, "certificate of %s not accepted: %s", current(b)->host,
		     b->cert_error);
		fail(b, "certificate error");
	} else if (b->io_errno) {
		fail(b, reason_from_errno(b->io_errno));
	} else {
		char text[WOLFSSL_MAX_ERROR_SZ];

		wolfSSL_ERR_error_string_n((unsigned long)err, text, sizeof text);
		blog(b, BRIDGE_LOG_WARN, "TLS handshake with %s failed: %s", current(b)->host, text);
		fail(b, "tls error");
	}
}

static void tcp_connected(struct bridge *b)
{
	b->timer = now_ms() + LOGIN_TIMEOUT_MS;
	if (parser_new(b) < 0) {
		fail(b, "network error");
		return;
	}
	if (!b->tls) {
		start_xmpp(b);
		return;
	}
	b->state = ST_TLS;
	b->ssl = wolfSSL_new(b->tls_ctx);
	if (!b->ssl) {
		fail(b, "tls error");
		return;
	}
	wolfSSL_SSLSetIORecv(b->ssl, io_recv);
	wolfSSL_SSLSetIOSend(b->ssl, io_send);
	wolfSSL_SetIOReadCtx(b->ssl, b);
	wolfSSL_SetIOWriteCtx(b->ssl, b);
	wolfSSL_set_verify(b->ssl, WOLFSSL_VERIFY_PEER, verify_cb);
	wolfSSL_SetCertCbCtx(b->ssl, b);
	if (wolfSSL_UseSNI(b->ssl, WOLFSSL_SNI_HOST_NAME, b->domain,
			   (unsigned short)strlen(b->domain)) != WOLFSSL_SUCCESS) {
		fail(b, "tls error");
		return;
	}
	tls_step(b);
}

static void set_socket_options(int fd)
{
	int on = 1, idle = 30, interval = 10, count = 3;
	/* unacknowledged data (a keep-alive to a vanished host) ends the
	 * connection after this long, instead of TCP's many minutes */
	unsigned int user_timeout = 45000;

	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* Connect to the current target's addresses from addr_i on. */
static void connect_next_address(struct bridge *b, const char *reason)
{
	const struct target *t = current(b);

	for (; b->addr_i < b->naddrs; b->addr_i++) {
		const struct dns_addr *a = &b->addrs[b->addr_i];
		struct sockaddr_storage ss;
		socklen_t len;

		memset(&ss, 0, sizeof ss);
		if (a->family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

			sin->sin_family = AF_INET;
			sin->sin_port = htons(t->port);
			inet_pton(AF_INET, a->ip, &sin->sin_addr);
			len = sizeof *sin;
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(t->port);
			inet_pton(AF_INET6, a->ip, &sin6->sin6_addr);
			len = sizeof *sin6;
		}
		blog(b, BRIDGE_LOG_INFO, "connecting to %s:%u (%s)", t->host, t->port, a->ip);
		b->fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (b->fd < 0) {
			reason = reason_from_errno(errno);
			continue;
		}
		set_socket_options(b->fd);
		if (connect(b->fd, (struct sockaddr *)&ss, len) == 0) {
			tcp_connected(b);
			return;
		}
		if (errno == EINPROGRESS) {
			b->state = ST_CONNECT;
			b->timer = now_ms() + CONNECT_TIMEOUT_MS;
			return;
		}
		reason = reason_from_errno(errno);
		blog(b, BRIDGE_LOG_DEBUG, "%s: %s", a->ip, strerror(errno));
		close(b->fd);
		b->fd = -1;
	}
	fail(b, reason);
}

static void connect_finished(struct bridge *b)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == 0) {
		tcp_connected(b);
		return;
	}
	close(b->fd);
	b->fd = -1;
	b->addr_i++;
	connect_next_address(b, reason_from_errno(err));
}

static void on_addr(void *arg, int status, const struct dns_addr *addrs, int count)
{
	struct bridge *b = arg;
	struct dns_addr *copy;

	if (b->state != ST_ADDR)
		return; /* stopped meanwhile */
	if (status < 0) {
		blog(b, BRIDGE_LOG_WARN, "cannot resolve %s: %s", current(b)->host,
		     dns_status_text(status));
		fail(b, "dns error");
		return;
	}
	copy = malloc((size_t)count * sizeof *copy);
	if (!copy) {
		fail(b, "dns error");
		return;
	}
	memcpy(copy, addrs, (size_t)count * sizeof *copy);
	free(b->addrs);
	b->addrs = copy;
	b->naddrs = count;
	b->addr_i = 0;
	connect_next_address(b, "connection refused");
}

static void start_target(struct bridge *b, int index)
{
	int rc;

	b->cur = index;
	b->state = ST_ADDR;
	rc = dns_query_addr(b->dns, current(b)->host, AF_UNSPEC, on_addr, b);
	if (rc < 0) {
		blog(b, BRIDGE_LOG_WARN, "cannot resolve %s: %s", current(b)->host,
		     dns_status_text(rc));
		fail(b, "dns error");
	}
}

static void on_srv(void *arg, int status, const struct dns_srv_target *found, int count)
{
	struct bridge *b = arg;
	struct dns_srv_target *sorted;
	struct target *targets;
	char list[512];
	size_t used = 0;

	if (b->state != ST_SRV)
		return;
	if (status == -ENOENT) {
		blog(b, BRIDGE_LOG_WARN, "No DNS SRV records for " SRV_SERVICE "%s", b->domain);
		round_failed(b, "dns error");
		return;
	}
	if (status < 0) {
		blog(b, BRIDGE_LOG_WARN, "DNS SRV lookup for " SRV_SERVICE "%s failed: %s",
		     b->domain, dns_status_text(status));
		round_failed(b, "dns error");
		return;
	}
	sorted = malloc((size_t)count * sizeof *sorted);
	targets = malloc((size_t)count * sizeof *targets);
	if (!sorted || !targets) {
		free(sorted);
		free(targets);
		round_failed(b, "dns error");
		return;
	}
	memcpy(sorted, found, (size_t)count * sizeof *sorted);
	dns_srv_order(sorted, count, NULL, NULL);
	list[0] = '\0';
	for (int i = 0; i < count; i++) {
		snprintf(targets[i].host, sizeof targets[i].host, "%s", sorted[i].target);
		targets[i].port = sorted[i].port;
		if (used < sizeof list)
			used += (size_t)snprintf(list + used, sizeof list - used, "%s%s:%u",
						 i ? ", " : "", sorted[i].target, sorted[i].port);
	}
	free(sorted);
	free(b->targets);
	b->targets = targets;
	b->ntargets = count;
	blog(b, BRIDGE_LOG_INFO, SRV_SERVICE "%s: %s", b->domain, list);
	start_target(b, 0);
}

static void start_round(struct bridge *b)
{
	int rc;

	if (b->have_server) {
		start_target(b, 0);
		return;
	}
	b->state = ST_SRV;
	{
		char name[DNS_NAME_MAX];

		snprintf(name, sizeof name, SRV_SERVICE "%s", b->domain);
		rc = dns_query_srv(b->dns, name, on_srv, b);
	}
	if (rc < 0) {
		blog(b, BRIDGE_LOG_WARN, "DNS SRV lookup for " SRV_SERVICE "%s failed: %s",
		     b->domain, dns_status_text(rc));
		round_failed(b, "dns error");
	}
}

/* ---- the loop ---- */

static void on_timer(struct bridge *b)
{
	int64_t now = now_ms();

	switch (b->state) {
	case ST_IDLE:
		if (now < b->timer)
			return;
		if (b->next < b->ntargets)
			start_target(b, b->next);
		else
			start_round(b);
		break;
	case ST_CONNECT:
		if (now < b->timer)
			return;
		close(b->fd);
		b->fd = -1;
		b->addr_i++;
		connect_next_address(b, "connection timed out");
		break;
	case ST_TLS:
	case ST_STREAM:
	case ST_HANDSHAKE:
		if (now >= b->timer)
			fail(b, "handshake timed out");
		break;
	case ST_CONNECTED:
		/* with output stuck, the TCP user timeout is the judge */
		if (!b->out_len && now - b->last_send >= KEEPALIVE_MS) {
			out_str(b, " ");
			if (flush(b) < 0)
				fail(b, "connection lost");
		}
		break;
	case ST_SRV:
	case ST_ADDR:
		break; /* the resolver's own timeout answers */
	}
}

static int timeout_for(struct bridge *b)
{
	int64_t now = now_ms(), until = -1;
	int dns = dns_timeout_ms(b->dns);

	switch (b->state) {
	case ST_IDLE:
	case ST_CONNECT:
	case ST_TLS:
	case ST_STREAM:
	case ST_HANDSHAKE:
		until = b->timer;
		break;
	case ST_CONNECTED:
		if (!b->out_len)
			until = b->last_send + KEEPALIVE_MS;
		break;
	case ST_SRV:
	case ST_ADDR:
		break;
	}
	if (until >= 0) {
		int64_t t = until > now ? until - now : 0;

		if (dns < 0 || t < dns)
			dns = (int)(t > 60000 ? 60000 : t);
	}
	return dns;
}

static void conn_events(struct bridge *b, short revents)
{
	switch (b->state) {
	case ST_CONNECT:
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			connect_finished(b);
		break;
	case ST_TLS:
		if (revents)
			tls_step(b);
		break;
	case ST_STREAM:
	case ST_HANDSHAKE:
	case ST_CONNECTED:
		if (revents & POLLOUT) {
			if (b->tls_want == POLLOUT) {
				b->tls_want = 0;
				conn_read(b); /* a read that had to write first */
				if (b->fd < 0)
					break;
			}
			if (flush(b) < 0) {
				fail(b, "connection lost");
				break;
			}
		}
		if (revents & (POLLIN | POLLERR | POLLHUP))
			conn_read(b);
		break;
	default:
		break;
	}
}

static short conn_poll_events(const struct bridge *b)
{
	switch (b->state) {
	case ST_CONNECT:
		return POLLOUT;
	case ST_TLS:
		return b->tls_want ? b->tls_want : POLLIN;
	case ST_STREAM:
	case ST_HANDSHAKE:
	case ST_CONNECTED:
		return (short)(POLLIN | (b->out_len || b->tls_want == POLLOUT ? POLLOUT : 0));
	default:
		return 0;
	}
}

static void close_gracefully(struct bridge *b)
{
	if (b->state == ST_CONNECTED) {
		out_str(b, "</stream:stream>");
		flush(b);
		if (b->ssl)
			wolfSSL_shutdown(b->ssl);
		blog(b, BRIDGE_LOG_INFO, "disconnected from %s (stopped)", current(b)->host);
	}
	conn_close(b);
	b->state = ST_IDLE;
}

int bridge_run(struct bridge *b)
{
	int rc = 0;

	if (b->ran)
		return -EALREADY;
	b->ran = true;
	b->state = ST_IDLE;
	b->next = b->ntargets; /* a fresh round at once */
	b->timer = now_ms();
	while (!b->stop) {
		struct pollfd fds[2 + 16];
		int nfds = 0, conn_slot = -1, dns_n, timeout;

		fds[nfds++] = (struct pollfd){ .fd = b->wake[0], .events = POLLIN };
		if (b->fd >= 0 && conn_poll_events(b)) {
			conn_slot = nfds;
			fds[nfds++] = (struct pollfd){ .fd = b->fd, .events = conn_poll_events(b) };
		}
		dns_n = dns_fds(b->dns, fds + nfds, 16);
		timeout = timeout_for(b);
		if (poll(fds, (nfds_t)(nfds + dns_n), timeout) < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		if (fds[0].revents) {
			char drain[64];

			while (read(b->wake[0], drain, sizeof drain) > 0)
				;
		}
		if (b->stop)
			break;
		/* the connection first: DNS answers may open a new socket */
		if (conn_slot >= 0 && fds[conn_slot].revents)
			conn_events(b, fds[conn_slot].revents);
		dns_process(b->dns, fds + nfds, dns_n);
		on_timer(b);
	}
	close_gracefully(b);
	return rc;
}

void bridge_stop(struct bridge *b)
{
	int saved = errno;
	ssize_t n;

	b->stop = 1;
	n = write(b->wake[1], "x", 1); /* full pipe: a wake-up is pending anyway */
	(void)n;
	errno = saved;
}

const char *bridge_address(const struct bridge *b)
{
	return b->address;
}

/* ---- setup ---- */

/* "HOST[:PORT]", "[V6]:PORT", or a bare IPv6 literal. */
static int parse_server(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon, *end;
	size_t len;

	*port = BRIDGE_DEFAULT_PORT;
	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end)
			return -EINVAL;
		len = (size_t)(end - s - 1);
		s++;
		colon = end[1] == ':' ? end + 1 : NULL;
		if (!colon && end[1])
			return -EINVAL;
	} else {
		colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':'))
			colon = NULL; /* an IPv6 literal without brackets */
		len = colon ? (size_t)(colon - s) : strlen(s);
	}
	if (len == 0 || len >= cap)
		return -EINVAL;
	memcpy(host, s, len);
	host[len] = '\0';
	if (colon) {
		char *stop;
		long p;

		errno = 0;
		p = strtol(colon + 1, &stop, 10);
		if (errno || stop == colon + 1 || *stop || p < 1 || p > 65535)
			return -EINVAL;
		*port = (uint16_t)p;
	}
	return 0;
}

static bool plain_name(const char *s)
{
	if (!s || !*s || strlen(s) >= DNS_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || strchr("<>&'\"/@", *s))
			return false;
	return true;
}

struct bridge *bridge_new(const struct bridge_config *cfg, char *err, size_t errlen)
{
	struct bridge *b;
	char dns_err[256];

	if (!plain_name(cfg->name) || !plain_name(cfg->domain)) {
		snprintf(err, errlen, "a call bridge needs a name and a domain (no spaces)");
		return NULL;
	}
	if (!cfg->secret || !*cfg->secret) {
		snprintf(err, errlen, "no secret given");
		return NULL;
	}
	if (cfg->address && !plain_name(cfg->address)) {
		snprintf(err, errlen, "bad component address");
		return NULL;
	}
	b = calloc(1, sizeof *b);
	if (!b) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	b->fd = -1;
	b->wake[0] = b->wake[1] = -1;
	b->backoff_ms = BACKOFF_MIN_MS;
	b->tls = !cfg->no_tls;
	b->auth = cfg->auth;
	b->auth_arg = cfg->auth_arg;
	b->log = cfg->log;
	b->log_arg = cfg->log_arg;
	b->state_cb = cfg->state;
	b->state_arg = cfg->state_arg;
	b->domain = strdup(cfg->domain);
	b->secret = strdup(cfg->secret);
	if (cfg->address)
		b->address = strdup(cfg->address);
	else if (asprintf(&b->address, "%s.%s", cfg->name, cfg->domain) < 0)
		b->address = NULL;
	if (!b->domain || !b->secret || !b->address) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (cfg->server) {
		if (parse_server(cfg->server, b->server_host, sizeof b->server_host,
				 &b->server_port) < 0) {
			snprintf(err, errlen, "bad server \"%s\": expected HOST[:PORT]", cfg->server);
			goto fail;
		}
		b->targets = malloc(sizeof *b->targets);
		if (!b->targets) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		memcpy(b->targets[0].host, b->server_host, sizeof b->server_host);
		b->targets[0].port = b->server_port;
		b->ntargets = 1;
		b->have_server = true;
	}
	b->dns = dns_new(cfg->dns_servers, DNS_TIMEOUT_MS, dns_err, sizeof dns_err);
	if (!b->dns) {
		snprintf(err, errlen, "%s", dns_err);
		goto fail;
	}
	if (pipe2(b->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	if (b->tls) {
		pthread_once(&wolfssl_once, wolfssl_init);
		if (wolfssl_status != WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "wolfSSL_Init failed");
			goto fail;
		}
		b->tls_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
		if (!b->tls_ctx || wolfSSL_CTX_SetMinVersion(b->tls_ctx, WOLFSSL_TLSV1_2) !=
					   WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "cannot set up TLS");
			goto fail;
		}
		if (cfg->ca_file) {
			if (wolfSSL_CTX_load_verify_locations(b->tls_ctx, cfg->ca_file, NULL) !=
			    WOLFSSL_SUCCESS) {
				snprintf(err, errlen, "cannot load CA certificates from %s",
					 cfg->ca_file);
				goto fail;
			}
		} else if (wolfSSL_CTX_load_system_CA_certs(b->tls_ctx) != WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "cannot load the system's CA certificates");
			goto fail;
		}
	}
	return b;
fail:
	bridge_free(b);
	return NULL;
}

void bridge_free(struct bridge *b)
{
	if (!b)
		return;
	conn_close(b);
	b->state = ST_IDLE; /* dns_free's cancellations find nothing to do */
	dns_free(b->dns);
	if (b->tls_ctx)
		wolfSSL_CTX_free(b->tls_ctx);
	if (b->wake[0] >= 0)
		close(b->wake[0]);
	if (b->wake[1] >= 0)
		close(b->wake[1]);
	if (b->secret) {
		explicit_bzero(b->secret, strlen(b->secret));
		free(b->secret);
	}
	free(b->domain);
	free(b->address);
	free(b->targets);
	free(b->addrs);
	free(b->out);
	free(b);
}
