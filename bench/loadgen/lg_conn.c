/*
 * lg_conn: the load generator's engine. One epoll loop per thread drives its
 * connection slots through one XMPP client state machine:
 *
 *   IDLE -> CONNECTING -> [HANDSHAKE]            (direct TLS)
 *        -> FEATURES -> [STARTTLS -> HANDSHAKE -> FEATURES]
 *        -> AUTH -> FEATURES -> BIND -> [SESSION] -> READY -> CLOSING -> IDLE
 *
 * A connection stops at its scenario's goal (after the TLS handshake, after
 * binding, or after initial presence) and is READY from there on.
 *
 * I/O: sockets are non-blocking and level-triggered. wolfSSL never touches
 * them: its receive callback reads from the slice of the thread's receive
 * buffer that recv() just filled, and its send callback hands ciphertext to
 * the same write path plaintext takes. wolfSSL only reports WANT_READ once it
 * has taken the whole slice, so nothing is left over between events and no
 * connection needs its own receive buffer. Writes go straight to the socket;
 * only what the socket refuses is copied into a per-connection backlog (freed
 * once sent, capped at LG_OUT_MAX).
 *
 * Teardown: a connection that fails or finishes is only marked DOOMED and put
 * on the thread's doomed list; the loop releases it at the end of the turn.
 * So no event handler ever frees a connection that a caller up the stack
 * (expat, wolfSSL, the chat partner) is still using, and new connections are
 * only opened after a turn's events are handled, so a stale event can never
 * reach a slot that was reused meanwhile.
 *
 * Timers: one timerfd per thread, armed one-shot at the earliest of the next
 * ramp slot, the oldest login or close deadline (FIFO lists: every entry gets
 * the same timeout, so the head is always the earliest) and the scenario's
 * next tick; disarmed when nothing waits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/sha.h>

#include "bench/loadgen/lg.h"

#define LG_OUT_MAX (256u * 1024)        /* per-connection backlog cap */
#define LG_BACKOFF_NS (100u * 1000000)  /* no new connections after a failed connect */
#define LG_EVENTS_PER_TURN 256

enum lg_state {
	ST_IDLE,       /* no socket; maybe in the start queue */
	ST_CONNECTING, /* TCP connect in flight */
	ST_HANDSHAKE,  /* TLS handshake */
	ST_FEATURES,   /* stream header sent, waiting for <stream:features/> */
	ST_STARTTLS,   /* <starttls/> sent, waiting for <proceed/> */
	ST_AUTH,       /* <auth/> sent, SASL exchange */
	ST_BIND,       /* bind iq sent */
	ST_SESSION,    /* session iq sent */
	ST_COMPONENT,  /* component stream opened: header, then <handshake/> awaited */
	ST_READY,      /* goal reached: the scenario drives it */
	ST_CLOSING,    /* our side closed, waiting for the server to close */
	ST_DOOMED,     /* released at the end of the loop turn */
};

/* ---- small things ------------------------------------------------------ */

uint64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lg_count(struct lg_thread *t, enum lg_counter which, uint64_t n)
{
	__atomic_fetch_add(&t->ctr.v[which], n, __ATOMIC_RELAXED);
}

uint64_t lg_counter_read(const struct lg_counters *c, enum lg_counter which)
{
	return __atomic_load_n(&c->v[which], __ATOMIC_RELAXED);
}

uint64_t lg_err_read(const struct lg_counters *c, enum lg_err e)
{
	return __atomic_load_n(&c->err[e], __ATOMIC_RELAXED);
}

static void count_error(struct lg_thread *t, enum lg_err e)
{
	__atomic_fetch_add(&t->ctr.err[e], 1, __ATOMIC_RELAXED);
	lg_count(t, LG_C_ERRORS, 1);
}

const char *lg_err_name(enum lg_err e)
{
	static const char *const names[LG_ERR_COUNT] = {
		[LG_ERR_CONNECT] = "connect", [LG_ERR_TLS] = "tls",
		[LG_ERR_AUTH] = "auth",       [LG_ERR_BIND] = "bind",
		[LG_ERR_PROTOCOL] = "protocol", [LG_ERR_STREAM] = "stream",
		[LG_ERR_CLOSED] = "closed",   [LG_ERR_TIMEOUT] = "timeout",
		[LG_ERR_LOCAL] = "local",
	};
	return (unsigned)e < LG_ERR_COUNT ? names[e] : "?";
}

int lg_pattern_parse(struct lg_pattern *p, const char *fmt)
{
	char *dst = p->prefix;
	size_t cap = sizeof p->prefix, len = 0;
	bool seen = false;

	for (const char *s = fmt; *s; s++) {
		char ch = *s;

		if (ch == '%') {
			s++;
			if (*s == 'd' || *s == 'u') {
				if (seen)
					return -EINVAL;
				seen = true;
				dst[len] = '\0';
				dst = p->suffix;
				cap = sizeof p->suffix;
				len = 0;
				continue;
			}
			if (*s != '%')
				return -EINVAL;
		}
		if (len + 1 >= cap)
			return -EINVAL;
		dst[len++] = ch;
	}
	dst[len] = '\0';
	return seen ? 0 : -EINVAL;
}

size_t lg_u64_dec(char *out, uint64_t v)
{
	char tmp[LG_U64_DEC_MAX];
	size_t n = 0;

	do {
		tmp[sizeof tmp - ++n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(out, tmp + sizeof tmp - n, n);
	return n;
}

int lg_pattern_format(const struct lg_pattern *p, uint32_t n, char *out, size_t cap)
{
	size_t pre = strlen(p->prefix), suf = strlen(p->suffix);
	char num[LG_U64_DEC_MAX];
	size_t len = lg_u64_dec(num, n);

	if (pre + len + suf >= cap)
		return -ENOSPC;
	memcpy(out, p->prefix, pre);
	memcpy(out + pre, num, len);
	memcpy(out + pre + len, p->suffix, suf + 1);
	return (int)(pre + len + suf);
}

static int parse_ipv4(const char *s, size_t len, uint32_t *out)
{
	char buf[INET_ADDRSTRLEN];
	struct in_addr a;

	if (len == 0 || len >= sizeof buf)
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	*out = ntohl(a.s_addr);
	return 0;
}

int lg_range_parse(const char *s, uint32_t *first, uint32_t *count)
{
	const char *dash = strchr(s, '-');
	uint32_t a, b;

	if (parse_ipv4(s, dash ? (size_t)(dash - s) : strlen(s), &a) < 0)
		return -EINVAL;
	b = a;
	if (dash && parse_ipv4(dash + 1, strlen(dash + 1), &b) < 0)
		return -EINVAL;
	/* b - a + 1 must fit: the whole address space is no source range */
	if (b < a || b - a == UINT32_MAX)
		return -EINVAL;
	*first = a;
	*count = b - a + 1;
	return 0;
}

int lg_xml_escape(const char *in, char *out, size_t cap)
{
	size_t len = 0;

	for (;;) {
		size_t run = strcspn(in, "&<>'\"");
		if (len + run >= cap)
			return -ENOSPC;
		memcpy(out + len, in, run);
		len += run;
		in += run;
		if (!*in)
			break;
		const char *rep;
		switch (*in++) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '\'': rep = "&apos;"; break;
		default: rep = "&quot;"; break;
		}
		size_t n = strlen(rep);
		if (len + n >= cap)
			return -ENOSPC;
		memcpy(out + len, rep, n);
		len += n;
	}
	out[len] = '\0';
	return (int)len;
}

/* ---- lists -------------------------------------------------------------- */

static void list_remove(struct lg_conn *c)
{
	struct lg_list *l = c->list;

	if (!l)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	c->list = NULL;
}

static void list_append(struct lg_list *l, struct lg_conn *c)
{
	list_remove(c);
	c->prev = l->tail;
	c->next = NULL;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	c->list = l;
}

/* ---- teardown ---------------------------------------------------------- */

static void conn_doom(struct lg_conn *c, bool failed, enum lg_err e)
{
	struct lg_thread *t = c->thread;

	if (c->state == ST_DOOMED || c->state == ST_IDLE)
		return;
	c->state = ST_DOOMED;
	c->failed = failed;
	c->err = e;
	list_remove(c);
	c->next = t->doomed; /* a plain stack: list_remove() left LIST NULL */
	t->doomed = c;
}

/* For XML event handlers: doom C and stop the parse. */
static int conn_fail(struct lg_conn *c, enum lg_err e)
{
	conn_doom(c, true, e);
	return -ECONNABORTED;
}

static void scram_discard(struct lg_conn *c)
{
	if (c->scram) {
		explicit_bzero(c->scram, sizeof *c->scram);
		free(c->scram);
		c->scram = NULL;
	}
}

/* Close the socket and free what the connection holds, keeping the parser for
 * the slot's next connection. */
static void conn_close_resources(struct lg_conn *c)
{
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
		c->thread->open--;
	}
	if (c->ssl) {
		wolfSSL_free(c->ssl);
		c->ssl = NULL;
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_cap = 0;
	scram_discard(c);
}

static void conn_release(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;

	conn_close_resources(c);
	if (c->in_progress) {
		c->in_progress = false;
		t->in_progress--;
	}
	if (c->failed) {
		count_error(t, c->err);
		if (!c->reached_goal)
			lg_count(t, LG_C_FAILED, 1);
	}
	if (c->reached_goal)
		__atomic_fetch_sub(&t->ctr.v[LG_C_ONLINE], 1, __ATOMIC_RELAXED);
	c->state = ST_IDLE;
	c->reached_goal = c->tls_done = c->authed = c->stream_open = false;
	c->session_needed = c->failed = c->drop_when_sent = false;
	c->io_err = 0;
	c->events = 0;
	t->scn->on_end(c);
}

static void thread_reap(struct lg_thread *t)
{
	while (t->doomed) {
		struct lg_conn *c = t->doomed;

		t->doomed = c->next;
		c->next = NULL;
		conn_release(c);
	}
}

/* ---- output ------------------------------------------------------------- */

static void conn_update_events(struct lg_conn *c)
{
	uint32_t want = c->state == ST_CONNECTING ? EPOLLOUT : EPOLLIN | (c->out_len ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.ptr = c };

	if (want == c->events || c->fd < 0)
		return;
	if (epoll_ctl(c->thread->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		conn_doom(c, true, LG_ERR_LOCAL);
		return;
	}
	c->events = want;
}

static int out_append(struct lg_conn *c, const uint8_t *data, size_t len)
{
	size_t need = c->out_len + len;

	if (need > LG_OUT_MAX)
		return -ENOBUFS;
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
		while (cap < need)
			cap *= 2;
		if (cap > LG_OUT_MAX)
			cap = LG_OUT_MAX;
		uint8_t *p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len = need;
	conn_update_events(c);
	return 0;
}

/* Wire bytes (ciphertext or plaintext stream): to the socket, the rest to the
 * backlog. */
static int conn_write_raw(struct lg_conn *c, const uint8_t *data, size_t len)
{
	if (c->out_len == 0) {
		ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				return -errno;
			n = 0;
		}
		data += n;
		len -= (size_t)n;
		if (len == 0)
			return 0;
	}
	return out_append(c, data, len);
}

static void conn_flush(struct lg_conn *c)
{
	while (c->out_len) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_doom(c, c->state != ST_CLOSING, LG_ERR_CLOSED);
			return;
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
	if (c->out_len == 0) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
		if (c->state == ST_CLOSING && c->drop_when_sent) {
			conn_doom(c, false, LG_ERR_CLOSED);
			return;
		}
	}
	conn_update_events(c);
}

static enum lg_err write_err_kind(int r)
{
	return r == -ENOBUFS || r == -ENOMEM ? LG_ERR_LOCAL : LG_ERR_CLOSED;
}

/* A stanza or stream fragment: through TLS once it is up. Dooms C on error. */
static int conn_send(struct lg_conn *c, const char *data, size_t len)
{
	int r;

	if (c->state == ST_DOOMED || c->fd < 0)
		return -ENOTCONN;
	if (c->tls_done) {
		c->io_err = 0;
		int n = wolfSSL_write(c->ssl, data, (int)len);
		r = n == (int)len ? 0 : c->io_err ? c->io_err : -EPROTO;
	} else {
		r = conn_write_raw(c, (const uint8_t *)data, len);
	}
	if (r < 0)
		conn_doom(c, true, r == -EPROTO ? LG_ERR_TLS : write_err_kind(r));
	return r;
}

static int conn_sendf(struct lg_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_sendf(struct lg_conn *c, const char *fmt, ...)
{
	char *buf = c->thread->scratch;
	size_t cap = sizeof c->thread->scratch;
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf, cap, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap) {
		conn_doom(c, true, LG_ERR_LOCAL);
		return -ENOSPC;
	}
	return conn_send(c, buf, (size_t)n);
}

size_t lg_conn_backlog(const struct lg_conn *c)
{
	return c->out_len;
}

bool lg_conn_online(const struct lg_conn *c)
{
	return c->state == ST_READY;
}

bool lg_conn_idle(const struct lg_conn *c)
{
	return c->state == ST_IDLE;
}

/* ---- TLS ---------------------------------------------------------------- */

static int tls_recv_cb(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct lg_conn *c = ctx;

	(void)ssl;
	if (c->rx_len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = (size_t)sz < c->rx_len ? (size_t)sz : c->rx_len;
	memcpy(buf, c->rx, n);
	c->rx += n;
	c->rx_len -= n;
	return (int)n;
}

static int tls_send_cb(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct lg_conn *c = ctx;
	int r = conn_write_raw(c, (const uint8_t *)buf, (size_t)sz);

	(void)ssl;
	if (r < 0) {
		c->io_err = r;
		return WOLFSSL_CBIO_ERR_GENERAL;
	}
	return sz;
}

static WOLFSSL_CTX *tls_ctx_new(const struct lg_opts *o)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLS_client_method());
	int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1 };

	if (!ctx)
		return NULL;
	wolfSSL_CTX_SetIORecv(ctx, tls_recv_cb);
	wolfSSL_CTX_SetIOSend(ctx, tls_send_cb);
	if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 2) != WOLFSSL_SUCCESS)
		goto fail;
	if (o->ca_file) {
		if (wolfSSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != WOLFSSL_SUCCESS) {
			fprintf(stderr, "xmpp-loadgen: cannot load CA file %s\n", o->ca_file);
			goto fail;
		}
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	} else {
		/* Measuring, not trusting: loopback test servers use self-signed
		 * certificates. --ca turns verification on. */
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

static void conn_reach_goal(struct lg_conn *c);
static int conn_stream_open(struct lg_conn *c);
static int conn_component_open(struct lg_conn *c);

/* The handshake made progress: done, waiting, or failed (C doomed). */
static void conn_tls_handshake(struct lg_conn *c)
{
	c->io_err = 0;
	int r = wolfSSL_connect(c->ssl);
	if (r != WOLFSSL_SUCCESS) {
		int e = wolfSSL_get_error(c->ssl, r);

		if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
			return;
		conn_doom(c, true, c->io_err ? write_err_kind(c->io_err) : LG_ERR_TLS);
		return;
	}
	c->tls_done = true;
	if (c->component)
		conn_component_open(c);
	else if (c->thread->scn->goal == LG_GOAL_CONNECT)
		conn_reach_goal(c);
	else if (conn_stream_open(c) == 0)
		c->state = ST_FEATURES;
}

static int conn_tls_begin(struct lg_conn *c)
{
	const struct lg_opts *o = c->thread->opts;

	c->ssl = wolfSSL_new(c->thread->tls);
	if (!c->ssl)
		return conn_fail(c, LG_ERR_LOCAL);
	wolfSSL_SetIOReadCtx(c->ssl, c);
	wolfSSL_SetIOWriteCtx(c->ssl, c);
	if (wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, o->domain,
			   (unsigned short)strlen(o->domain)) != WOLFSSL_SUCCESS ||
	    (o->ca_file && wolfSSL_check_domain_name(c->ssl, o->domain) != WOLFSSL_SUCCESS))
		return conn_fail(c, LG_ERR_LOCAL);
	c->state = ST_HANDSHAKE;
	c->stream_open = false;
	conn_tls_handshake(c); /* sends the ClientHello */
	return c->state == ST_DOOMED ? -ECONNABORTED : 0;
}

/* ---- the XMPP client state machine ------------------------------------- */

static int conn_stream_open(struct lg_conn *c)
{
	int r = conn_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT
			   "' xmlns:stream='" NS_STREAM "' to='%s' version='1.0'>",
			   c->thread->opts->domain_xml);
	if (r == 0)
		c->stream_open = true;
	return r;
}

/* ---- XEP-0114 components ------------------------------------------------ */

int lg_component_handshake(const char *stream_id, const char *secret,
			   char out[LG_HANDSHAKE_HEX])
{
	uint8_t digest[WC_SHA_DIGEST_SIZE];
	char joined[1024];
	int n = snprintf(joined, sizeof joined, "%s%s", stream_id, secret);
	int rc = 0;

	if (n < 0 || (size_t)n >= sizeof joined)
		rc = -ENOSPC;
	else if (wc_ShaHash((const byte *)joined, (word32)n, digest) != 0)
		rc = -EIO;
	for (size_t i = 0; rc == 0 && i < sizeof digest; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
	explicit_bzero(joined, sizeof joined);
	return rc;
}

/* After TCP (plaintext) or the TLS handshake: the component's stream header.
 * The server answers with its own, whose id the handshake needs. */
static int conn_component_open(struct lg_conn *c)
{
	int r = conn_sendf(c, "<?xml version='1.0'?><stream:stream xmlns='" NS_COMPONENT
			   "' xmlns:stream='" NS_STREAM "' to='%s'>",
			   c->thread->opts->comp_name_xml);
	if (r == 0) {
		c->stream_open = true;
		c->state = ST_COMPONENT;
		c->sasl_step = 0; /* 0: header awaited, 1: <handshake/> awaited */
	}
	return r;
}

static int conn_on_component(struct lg_conn *c, const struct lg_xml_event *ev)
{
	char hex[LG_HANDSHAKE_HEX];

	if (ev->type == LG_EV_STREAM_OPEN && c->sasl_step == 0) {
		if (!ev->id)
			return conn_fail(c, LG_ERR_PROTOCOL);
		if (lg_component_handshake(ev->id, c->thread->opts->comp_secret, hex) < 0)
			return conn_fail(c, LG_ERR_LOCAL);
		c->sasl_step = 1;
		return conn_sendf(c, "<handshake>%s</handshake>", hex);
	}
	if (ev->type == LG_EV_HANDSHAKE && c->sasl_step == 1) {
		c->authed = true;
		conn_reach_goal(c);
		return 0;
	}
	return ev->type == LG_EV_STREAM_OPEN ? 0 : conn_fail(c, LG_ERR_PROTOCOL);
}

static void conn_reach_goal(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;

	list_remove(c);
	if (c->in_progress) {
		c->in_progress = false;
		t->in_progress--;
	}
	c->reached_goal = true;
	c->state = ST_READY;
	lg_hist_add(t->goal_hist, lg_now_ns() - c->started_ns);
	lg_count(t, LG_C_DONE, 1);
	lg_count(t, LG_C_ONLINE, 1);
	t->scn->on_goal(c);
}

/* The account's slot in the thread's SCRAM key cache (emptied when it held
 * another account), or NULL when the scenario keeps no keys. */
static struct scram_client_keys *conn_cached_keys(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;
	struct lg_key_slot *k;

	if (!t->keys)
		return NULL;
	k = &t->keys[(c->account - t->opts->first) % t->nkeys];
	if (k->account != c->account) {
		explicit_bzero(&k->keys, sizeof k->keys);
		k->account = c->account;
	}
	return &k->keys;
}

/* SASL failed: once our proof went out (step 1 on), cached keys may be the
 * reason (a password changed under an unchanged salt), so the account's next
 * login derives them afresh. */
static int conn_auth_fail(struct lg_conn *c)
{
	struct scram_client_keys *k = c->scram && c->sasl_step > 0 ? conn_cached_keys(c) : NULL;

	if (k)
		explicit_bzero(k, sizeof *k);
	return conn_fail(c, LG_ERR_AUTH);
}

/* RFC 9266 tls-exporter, as xmppd binds: only over TLS 1.3, because below
 * it the value is safe only with the extended master secret and wolfSSL does
 * not say whether that was negotiated. A server that lists its binding types
 * (XEP-0440) must list this one; to one that lists none we offer it anyway,
 * RFC 9266 making it the default for TLS 1.3. */
static int tls_exporter(struct lg_conn *c, const struct lg_features *f, uint8_t out[32])
{
	static const char label[] = "EXPORTER-Channel-Binding";

	if (!c->tls_done || wolfSSL_version(c->ssl) != TLS1_3_VERSION ||
	    (f->cb_listed && !f->cb_exporter))
		return -EOPNOTSUPP;
	if (wolfSSL_export_keying_material(c->ssl, out, 32, label, sizeof label - 1, NULL, 0, 0) !=
	    WOLFSSL_SUCCESS)
		return -EIO;
	return 0;
}

/* A SCRAM client nonce: 18 random bytes, base64. From the kernel rather than
 * scram_client_first(), whose DRBG is per process and unlocked while our
 * threads log in at the same time. */
static int scram_nonce(char *out, size_t cap)
{
	uint8_t raw[18];

	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return -EIO;
	return base64_encode(raw, sizeof raw, out, cap);
}

static int conn_auth_begin(struct lg_conn *c, const struct lg_features *f)
{
	struct lg_thread *t = c->thread;
	const struct lg_opts *o = t->opts;
	enum sasl_mech m = o->mech;
	bool plus = m == SASL_MECH_SCRAM_SHA256_PLUS;
	char user[128], pass[128], raw[768], b64[1100], cnonce[32];
	uint8_t cb[32];
	int raw_len, ulen, plen, r;

	if (!(f->mechs & (1u << m)) || (plus && tls_exporter(c, f, cb) < 0))
		return conn_fail(c, LG_ERR_AUTH);
	ulen = lg_pattern_format(&o->user, c->account, user, sizeof user);
	plen = lg_pattern_format(&o->password, c->account, pass, sizeof pass);
	if (ulen < 0 || plen < 0)
		return conn_fail(c, LG_ERR_LOCAL);
	if (m == SASL_MECH_PLAIN) {
		/* RFC 4616: [authzid] NUL authcid NUL passwd */
		raw[0] = '\0';
		memcpy(raw + 1, user, (size_t)ulen + 1);
		memcpy(raw + 2 + ulen, pass, (size_t)plen);
		raw_len = 2 + ulen + plen;
	} else {
		c->scram = calloc(1, sizeof *c->scram);
		if (!c->scram || scram_nonce(cnonce, sizeof cnonce) < 0) {
			explicit_bzero(pass, sizeof pass);
			return conn_fail(c, LG_ERR_LOCAL);
		}
		/* without -PLUS: "n", we choose not to bind ("y" would tell a
		 * server offering -PLUS that it was stripped) */
		raw_len = scram_client_first_with_nonce(c->scram, m, user, pass, plus ? cb : NULL,
							plus ? sizeof cb : 0, cnonce, raw,
							sizeof raw);
	}
	explicit_bzero(pass, sizeof pass);
	r = raw_len < 0 ? raw_len : base64_encode((const uint8_t *)raw, (size_t)raw_len, b64, sizeof b64);
	explicit_bzero(raw, sizeof raw);
	if (r < 0)
		return conn_fail(c, LG_ERR_AUTH);
	c->state = ST_AUTH;
	c->sasl_step = 0;
	return conn_sendf(c, "<auth xmlns='" NS_SASL "' mechanism='%s'>%s</auth>",
			  sasl_mech_name(m), r ? b64 : "=");
}

static int conn_on_features(struct lg_conn *c, const struct lg_features *f)
{
	const struct lg_opts *o = c->thread->opts;

	if (!c->authed) {
		if (o->tls == LG_TLS_STARTTLS && !c->tls_done) {
			if (!f->starttls)
				return conn_fail(c, LG_ERR_TLS);
			c->state = ST_STARTTLS;
			return conn_sendf(c, "<starttls xmlns='" NS_TLS "'/>");
		}
		if (c->thread->scn->goal == LG_GOAL_CONNECT) {
			conn_reach_goal(c); /* plaintext: the stream is the handshake */
			return 0;
		}
		return conn_auth_begin(c, f);
	}
	if (!f->bind)
		return conn_fail(c, LG_ERR_BIND);
	c->session_needed = f->session && !f->session_optional;
	c->state = ST_BIND;
	/* no resource: the server picks one, so connections sharing an
	 * account never conflict */
	return conn_sendf(c, "<iq type='set' id='bind'><bind xmlns='" NS_BIND "'/></iq>");
}

/* A SASL payload from the server, decoded into OUT (NUL-terminated). */
static int sasl_decode(const struct lg_xml_event *ev, char *out, size_t cap)
{
	int n = 0;

	if (ev->text_overflow)
		return -EMSGSIZE;
	/* "=" is an empty payload (RFC 6120 6.4.2) */
	if (!(ev->text_len == 1 && ev->text[0] == '='))
		n = base64_decode(ev->text, ev->text_len, (uint8_t *)out, cap - 1);
	if (n >= 0)
		out[n] = '\0';
	return n;
}

static int conn_on_challenge(struct lg_conn *c, const struct lg_xml_event *ev)
{
	char in[512], reply[768], b64[1100];
	int n = sasl_decode(ev, in, sizeof in), r;

	if (!c->scram || n < 0)
		return conn_fail(c, LG_ERR_AUTH);
	if (c->sasl_step == 0) {
		struct scram_client_keys once, *keys = conn_cached_keys(c);
		const struct scram_client_keys *pre = lg_keys_find(c->thread->opts->keys, c->account);

		/* --scram-keys: seed an empty cache slot, or lend a copy to a
		 * scenario that keeps no cache (the call may overwrite it when
		 * the server's salt or iteration count differ) */
		if (pre && keys && keys->mech == SASL_MECH_NONE)
			*keys = *pre;
		else if (pre && !keys)
			keys = memcpy(&once, pre, sizeof once);
		r = scram_client_final_cached(c->scram, keys, in, (size_t)n, reply, sizeof reply);
		if (keys == &once)
			explicit_bzero(&once, sizeof once);
		if (r < 0 || (r = base64_encode((const uint8_t *)reply, (size_t)r, b64, sizeof b64)) < 0)
			return conn_fail(c, LG_ERR_AUTH);
		c->sasl_step = 1;
		return conn_sendf(c, "<response xmlns='" NS_SASL "'>%s</response>", b64);
	}
	/* RFC 6120 6.3.10: server-final may come as a challenge, answered empty */
	if (c->sasl_step != 1 || scram_client_verify(c->scram, in, (size_t)n) != 0)
		return conn_auth_fail(c);
	c->sasl_step = 2;
	return conn_sendf(c, "<response xmlns='" NS_SASL "'/>");
}

static int conn_on_success(struct lg_conn *c, const struct lg_xml_event *ev)
{
	if (c->scram) {
		char in[512];
		int n = sasl_decode(ev, in, sizeof in);

		/* The server must prove it knows the password: in this <success/>
		 * (step 1) or in a challenge already verified (step 2). */
		if (c->sasl_step == 0 || n < 0)
			return conn_auth_fail(c);
		if (c->sasl_step == 1 && scram_client_verify(c->scram, in, (size_t)n) != 0)
			return conn_auth_fail(c);
		scram_discard(c);
	}
	c->authed = true;
	c->state = ST_FEATURES;
	if (conn_stream_open(c) < 0)
		return -ECONNABORTED;
	return LG_XML_RESTART;
}

static int conn_on_sasl(struct lg_conn *c, const struct lg_xml_event *ev)
{
	switch (ev->type) {
	case LG_EV_CHALLENGE:
		return conn_on_challenge(c, ev);
	case LG_EV_SUCCESS:
		return conn_on_success(c, ev);
	case LG_EV_SASL_FAILURE:
		return conn_auth_fail(c);
	default:
		return conn_fail(c, LG_ERR_PROTOCOL);
	}
}

static int conn_on_bind_reply(struct lg_conn *c, const struct lg_xml_event *ev)
{
	const char *want = c->state == ST_BIND ? "bind" : "sess";

	if (ev->type != LG_EV_IQ || !ev->id || strcmp(ev->id, want) != 0)
		return 0;
	if (ev->iq_type != LG_IQ_RESULT)
		return conn_fail(c, LG_ERR_BIND);
	if (c->state == ST_BIND && c->session_needed) {
		c->state = ST_SESSION;
		return conn_sendf(c, "<iq type='set' id='sess'><session xmlns='" NS_SESSION "'/></iq>");
	}
	if (c->thread->scn->goal == LG_GOAL_ONLINE && conn_sendf(c, "<presence/>") < 0)
		return -ECONNABORTED;
	conn_reach_goal(c);
	return 0;
}

/* Requests from the server: answer pings (a server may drop clients that do
 * not), refuse everything else as RFC 6120 8.2.3 asks. */
static int conn_answer_iq(struct lg_conn *c, const struct lg_xml_event *ev)
{
	char id[LG_XML_ID_MAX * 6], to[LG_XML_FROM_MAX * 6 + 8] = "";

	if ((ev->iq_type != LG_IQ_GET && ev->iq_type != LG_IQ_SET) || !ev->id)
		return 0;
	if (lg_xml_escape(ev->id, id, sizeof id) < 0)
		return 0;
	if (ev->from) {
		strcpy(to, " to='");
		if (lg_xml_escape(ev->from, to + 5, sizeof to - 6) < 0)
			return 0;
		strcat(to, "'");
	}
	/* a component must say which of its addresses answers (XEP-0114) */
	const char *from = c->component ? c->thread->opts->comp_name_xml : NULL;
	if (ev->iq_ping)
		return conn_sendf(c, "<iq type='result' id='%s'%s%s%s%s/>", id, to,
				  from ? " from='" : "", from ? from : "", from ? "'" : "");
	return conn_sendf(c, "<iq type='error' id='%s'%s%s%s%s><error type='cancel'>"
			  "<service-unavailable xmlns='" NS_STANZAS "'/></error></iq>", id, to,
			  from ? " from='" : "", from ? from : "", from ? "'" : "");
}

static int conn_on_ready(struct lg_conn *c, const struct lg_xml_event *ev)
{
	switch (ev->type) {
	case LG_EV_MESSAGE:
		c->thread->scn->on_message(c, ev);
		return 0;
	case LG_EV_IQ:
		return conn_answer_iq(c, ev);
	default:
		return 0;
	}
}

static int conn_on_xml(void *arg, const struct lg_xml_event *ev)
{
	struct lg_conn *c = arg;

	if (c->state == ST_CLOSING || c->state == ST_DOOMED)
		return 0; /* the server's close is seen as EOF */
	if (c->state == ST_COMPONENT) {
		/* a refused handshake is a stream error (<not-authorized/>) */
		if (ev->type == LG_EV_STREAM_ERROR)
			return conn_fail(c, c->sasl_step == 1 ? LG_ERR_AUTH : LG_ERR_STREAM);
		if (ev->type == LG_EV_STREAM_CLOSE)
			return conn_fail(c, LG_ERR_CLOSED);
		return conn_on_component(c, ev);
	}
	switch (ev->type) {
	case LG_EV_STREAM_OPEN:
	case LG_EV_PRESENCE:
	case LG_EV_OTHER:
		return 0;
	case LG_EV_STREAM_ERROR:
		return conn_fail(c, LG_ERR_STREAM);
	case LG_EV_STREAM_CLOSE:
		return conn_fail(c, LG_ERR_CLOSED);
	default:
		break;
	}
	switch (c->state) {
	case ST_FEATURES:
		if (ev->type != LG_EV_FEATURES)
			return conn_fail(c, LG_ERR_PROTOCOL);
		return conn_on_features(c, ev->features);
	case ST_STARTTLS:
		if (ev->type != LG_EV_PROCEED)
			return conn_fail(c, LG_ERR_TLS);
		return conn_tls_begin(c) < 0 ? -ECONNABORTED : LG_XML_RESTART;
	case ST_AUTH:
		return conn_on_sasl(c, ev);
	case ST_BIND:
	case ST_SESSION:
		return conn_on_bind_reply(c, ev);
	case ST_READY:
		return conn_on_ready(c, ev);
	default:
		return conn_fail(c, LG_ERR_PROTOCOL);
	}
}

/* ---- input ------------------------------------------------------------- */

static void conn_on_eof(struct lg_conn *c)
{
	conn_doom(c, c->state != ST_CLOSING, LG_ERR_CLOSED);
}

static void conn_xml_input(struct lg_conn *c, const char *data, size_t len)
{
	int r = lg_xml_feed(&c->xml, data, len);

	if (r < 0)
		conn_doom(c, true, LG_ERR_PROTOCOL); /* no-op when a handler doomed it */
}

static void conn_tls_input(struct lg_conn *c, const uint8_t *data, size_t len)
{
	struct lg_thread *t = c->thread;

	c->rx = data;
	c->rx_len = len;
	if (!c->tls_done)
		conn_tls_handshake(c);
	/* after the handshake the same bytes may hold application data */
	while (c->tls_done && c->state != ST_DOOMED) {
		int n = wolfSSL_read(c->ssl, t->plain, sizeof t->plain);

		if (n > 0) {
			conn_xml_input(c, (const char *)t->plain, (size_t)n);
			continue;
		}
		int e = wolfSSL_get_error(c->ssl, n);
		if (e == WOLFSSL_ERROR_WANT_READ)
			break;
		if (e == WOLFSSL_ERROR_ZERO_RETURN)
			conn_on_eof(c); /* close_notify */
		else
			conn_doom(c, c->state != ST_CLOSING, LG_ERR_TLS);
		break;
	}
	c->rx = NULL;
	c->rx_len = 0;
}

static void conn_on_readable(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;
	ssize_t n = recv(c->fd, t->rxbuf, sizeof t->rxbuf, 0);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_on_eof(c);
		return;
	}
	if (n == 0)
		conn_on_eof(c);
	else if (c->state == ST_CLOSING)
		return; /* discarded: only the server's EOF matters now */
	else if (c->ssl)
		conn_tls_input(c, t->rxbuf, (size_t)n);
	else
		conn_xml_input(c, (const char *)t->rxbuf, (size_t)n);
}

/* A refused connect means no server is listening, and a local shortage of
 * descriptors or ports does not end by retrying at once: either way the
 * thread pauses its new connections instead of spinning on failures. */
static void thread_back_off(struct lg_thread *t)
{
	t->backoff_until = lg_now_ns() + LG_BACKOFF_NS;
}

static void conn_on_connected(struct lg_conn *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		thread_back_off(c->thread);
		conn_doom(c, true, LG_ERR_CONNECT);
		return;
	}
	c->state = ST_FEATURES; /* until TLS says otherwise: lets writes through */
	conn_update_events(c);
	const struct lg_opts *o = c->thread->opts;
	if ((c->component ? o->comp_tls : o->tls) == LG_TLS_DIRECT)
		conn_tls_begin(c);
	else if (c->component)
		conn_component_open(c);
	else
		conn_stream_open(c);
}

static void conn_on_event(struct lg_conn *c, uint32_t events)
{
	if (c->fd < 0 || c->state == ST_DOOMED)
		return; /* released earlier in this turn */
	if (c->state == ST_CONNECTING) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_on_connected(c);
		return;
	}
	if (events & EPOLLOUT)
		conn_flush(c);
	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && c->state != ST_DOOMED)
		conn_on_readable(c);
}

/* ---- opening and closing ----------------------------------------------- */

static bool local_shortage(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM ||
	       err == EADDRNOTAVAIL || err == EADDRINUSE;
}

static int socket_open(struct lg_thread *t, bool component)
{
	const struct lg_opts *o = t->opts;
	const struct sockaddr_storage *to = component ? &o->comp_server : &o->server;
	socklen_t to_len = component ? o->comp_server_len : o->server_len;
	int one = 1;
	int fd = socket(to->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		goto fail;
	if (o->src_count && to->ss_family == AF_INET) {
		uint64_t i = (t->src_next++ * (uint64_t)t->nthreads + t->id) % o->src_count;
		struct sockaddr_in src = {
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl(o->src_first + (uint32_t)i),
		};
		/* the port is chosen at connect() time, per destination, so
		 * each source address has its own full ephemeral range */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
		    bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
			goto fail;
	}
	if (connect(fd, (const struct sockaddr *)to, to_len) < 0 &&
	    errno != EINPROGRESS)
		goto fail;
	return fd;
fail:;
	int err = errno;
	close(fd);
	return -err;
}

static void conn_start(struct lg_conn *c, uint64_t now)
{
	struct lg_thread *t = c->thread;
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	int fd;

	lg_count(t, LG_C_STARTED, 1);
	c->state = ST_CONNECTING;
	c->started_ns = now;
	c->deadline_ns = now + (uint64_t)(t->opts->timeout * 1e9);
	c->in_progress = true;
	t->in_progress++;
	list_append(&t->login_wait, c);

	/* the parser outlives connections: one per slot, reset for each */
	if (c->xml.parser) {
		lg_xml_reset(&c->xml);
	} else if (lg_xml_init(&c->xml, conn_on_xml, c) < 0) {
		conn_doom(c, true, LG_ERR_LOCAL);
		return;
	}
	fd = socket_open(t, c->component);
	if (fd < 0) {
		thread_back_off(t);
		conn_doom(c, true, local_shortage(-fd) ? LG_ERR_LOCAL : LG_ERR_CONNECT);
		return;
	}
	c->fd = fd;
	t->open++;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		conn_doom(c, true, LG_ERR_LOCAL);
		return;
	}
	c->events = EPOLLOUT;
}

void lg_conn_queue(struct lg_conn *c)
{
	if (c->state == ST_IDLE && c->thread->phase != LG_PHASE_STOP)
		list_append(&c->thread->start_queue, c);
}

/* Our half of the close: </stream:stream> when a stream is open on the
 * current layer, then close_notify over TLS. Returns false when C is doomed
 * (an interrupted attempt, or the close could not be written). */
static bool conn_send_close(struct lg_conn *c)
{
	if (c->state == ST_IDLE || c->state == ST_DOOMED || c->state == ST_CLOSING)
		return false;
	if (!c->reached_goal) {
		conn_doom(c, false, LG_ERR_CLOSED); /* interrupted, not failed */
		return false;
	}
	if (c->stream_open && conn_send(c, "</stream:stream>", 16) < 0)
		return false;
	if (c->tls_done) {
		c->io_err = 0;
		wolfSSL_shutdown(c->ssl); /* close_notify; we do not wait for theirs */
		if (c->io_err) {
			conn_doom(c, false, LG_ERR_CLOSED);
			return false;
		}
	}
	c->stream_open = false;
	return true;
}

/* Our close is out (or queued): wait for the server's, at most --timeout. */
static void conn_wait_close(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;

	c->state = ST_CLOSING;
	c->deadline_ns = lg_now_ns() + (uint64_t)(t->opts->timeout * 1e9);
	list_append(&t->close_wait, c);
}

void lg_conn_close(struct lg_conn *c)
{
	if (conn_send_close(c))
		conn_wait_close(c);
}

void lg_conn_drop(struct lg_conn *c)
{
	if (!conn_send_close(c))
		return;
	if (c->out_len == 0) {
		conn_doom(c, false, LG_ERR_CLOSED); /* released, not failed */
		return;
	}
	/* the socket has not taken all of it yet: conn_flush releases C once
	 * it has, or the server's close or the timeout comes first */
	conn_wait_close(c);
	c->drop_when_sent = true;
}

struct piece_buf {
	char *p;
	size_t len, cap;
	bool full;
};

static void put(struct piece_buf *b, const char *s, size_t n)
{
	if (n > b->cap - b->len) {
		b->full = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* <message to='TO' [from='FROM'] type='chat'><body>BODY</body></message>;
 * TO and FROM are already escaped. */
static int conn_send_message(struct lg_conn *c, const char *to, size_t to_len,
			     const char *from, const char *body, size_t len)
{
	struct piece_buf b = { .p = c->thread->scratch, .cap = sizeof c->thread->scratch };

	if (c->state != ST_READY)
		return -ENOTCONN;
	/* refused short of the hard cap: a full backlog skips a message here
	 * instead of failing the connection in conn_send() */
	if (c->out_len + b.cap > LG_OUT_MAX)
		return -ENOBUFS;
	PUT_LIT(&b, "<message to='");
	put(&b, to, to_len);
	if (from) {
		PUT_LIT(&b, "' from='");
		put(&b, from, strlen(from));
	}
	PUT_LIT(&b, "' type='chat'><body>");
	put(&b, body, len);
	PUT_LIT(&b, "</body></message>");
	if (b.full)
		return -ENOSPC;
	return conn_send(c, b.p, b.len);
}

int lg_conn_send_chat(struct lg_conn *c, uint32_t to, const char *body, size_t len)
{
	const struct lg_opts *o = c->thread->opts;
	char user[128], jid[1024];
	size_t dom = strlen(o->domain_xml);
	int n;

	if (lg_pattern_format(&o->user, to, user, sizeof user) < 0 ||
	    (n = lg_xml_escape(user, jid, sizeof jid - dom - 1)) < 0)
		return -ENOSPC;
	jid[n] = '@';
	memcpy(jid + n + 1, o->domain_xml, dom);
	return conn_send_message(c, jid, (size_t)n + 1 + dom, c->component ? o->comp_name_xml : NULL,
				 body, len);
}

int lg_conn_send_to_component(struct lg_conn *c, const char *body, size_t len)
{
	const char *to = c->thread->opts->comp_name_xml;

	return conn_send_message(c, to, strlen(to), NULL, body, len);
}

/* ---- the thread --------------------------------------------------------- */

static void ramp_refill(struct lg_thread *t, uint64_t now)
{
	double burst = t->ramp / 100 > 1 ? t->ramp / 100 : 1; /* 10 ms worth */

	t->ramp_tokens += (double)(now - t->ramp_at) * t->ramp / 1e9;
	if (t->ramp_tokens > burst)
		t->ramp_tokens = burst;
	t->ramp_at = now;
}

static void thread_start_queued(struct lg_thread *t, uint64_t now)
{
	if (t->phase == LG_PHASE_STOP || now < t->backoff_until)
		return;
	if (t->ramp > 0)
		ramp_refill(t, now);
	while (t->start_queue.head && t->in_progress < t->max_in_progress &&
	       now >= t->backoff_until) {
		if (t->ramp > 0) {
			if (t->ramp_tokens < 1)
				break;
			t->ramp_tokens -= 1;
		}
		struct lg_conn *c = t->start_queue.head;
		list_remove(c);
		conn_start(c, now);
	}
}

static void thread_expire(struct lg_thread *t, uint64_t now)
{
	struct lg_conn *c;

	while ((c = t->login_wait.head) && c->deadline_ns <= now)
		conn_doom(c, true, LG_ERR_TIMEOUT);
	while ((c = t->close_wait.head) && c->deadline_ns <= now)
		conn_doom(c, true, LG_ERR_TIMEOUT);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
	return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

static void thread_arm_timer(struct lg_thread *t, uint64_t now)
{
	uint64_t at = 0;

	if (t->login_wait.head)
		at = earliest(at, t->login_wait.head->deadline_ns);
	if (t->close_wait.head)
		at = earliest(at, t->close_wait.head->deadline_ns);
	if (t->start_queue.head && t->in_progress < t->max_in_progress &&
	    t->phase != LG_PHASE_STOP) {
		uint64_t start = now;
		if (t->ramp > 0 && t->ramp_tokens < 1)
			start = now + (uint64_t)((1 - t->ramp_tokens) * 1e9 / t->ramp) + 1;
		if (start < t->backoff_until)
			start = t->backoff_until;
		at = earliest(at, start);
	}
	if (t->scn->next_tick)
		at = earliest(at, t->scn->next_tick(t, now));
	if (at == t->timer_at)
		return;
	struct itimerspec its = {
		.it_value = { .tv_sec = (time_t)(at / 1000000000u), .tv_nsec = (long)(at % 1000000000u) },
	};
	if (timerfd_settime(t->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
		t->timer_at = at;
}

static void thread_on_timer(struct lg_thread *t)
{
	uint64_t expirations;

	if (read(t->timerfd, &expirations, sizeof expirations) < 0)
		return;
	t->timer_at = 0; /* one-shot: it fired, so it is disarmed */
	uint64_t now = lg_now_ns();
	thread_expire(t, now);
	if (t->scn->on_tick)
		t->scn->on_tick(t, now);
}

static void thread_on_phase(struct lg_thread *t)
{
	if (t->phase == LG_PHASE_STOP) {
		while (t->start_queue.head)
			list_remove(t->start_queue.head);
		for (unsigned i = 0; i < t->nconns; i++)
			lg_conn_close(&t->conns[i]);
	}
	t->scn->on_phase(t);
}

static void thread_on_control(struct lg_thread *t)
{
	uint64_t v;

	if (read(t->ctlfd, &v, sizeof v) < 0)
		return;
	enum lg_phase p = (enum lg_phase)__atomic_load_n(t->phase_word, __ATOMIC_ACQUIRE);
	if (p != t->phase) {
		t->phase = p;
		thread_on_phase(t);
	}
	/* after thread_on_phase: nothing of the old phase runs from now on */
	__atomic_store_n(&t->phase_seen, (int)p, __ATOMIC_RELEASE);
}

int lg_thread_poll(struct lg_thread *t, int timeout_ms)
{
	struct epoll_event evs[LG_EVENTS_PER_TURN];
	int n = epoll_wait(t->epfd, evs, LG_EVENTS_PER_TURN, timeout_ms);

	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		void *p = evs[i].data.ptr;

		if (p == &t->timerfd)
			thread_on_timer(t);
		else if (p == &t->ctlfd)
			thread_on_control(t);
		else
			conn_on_event(p, evs[i].events);
	}
	uint64_t now = lg_now_ns();
	thread_reap(t);
	thread_start_queued(t, now);
	thread_reap(t); /* starts that failed at once */
	thread_arm_timer(t, now);
	return t->phase == LG_PHASE_STOP && t->open == 0 ? 0 : 1;
}

static void *thread_main(void *arg)
{
	struct lg_thread *t = arg;
	int r;

	/* the first turn does not wait: it opens the first connections */
	for (int timeout = 0; (r = lg_thread_poll(t, timeout)) > 0; timeout = -1)
		;
	t->exit_err = r;
	/* Debian's wolfSSL keeps an ECC fixed-point cache per thread (FP_ECC with
	 * thread-local storage); only the thread itself can free it. */
	wc_ecc_fp_free();
	__atomic_store_n(&t->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

int lg_thread_start(struct lg_thread *t)
{
	return -pthread_create(&t->tid, NULL, thread_main, t);
}

int lg_thread_wake(struct lg_thread *t)
{
	uint64_t one = 1;

	return write(t->ctlfd, &one, sizeof one) == sizeof one ? 0 : -errno;
}

static int watch(struct lg_thread *t, int fd, void *tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

	return epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static unsigned share(double total, unsigned id, unsigned n)
{
	unsigned whole = (unsigned)total;

	return whole / n + (id < whole % n);
}

int lg_thread_new(struct lg_thread **out, unsigned id, unsigned nthreads,
		  const struct lg_opts *opts, const struct lg_scenario *scn,
		  const int *phase_word)
{
	struct lg_thread *t = calloc(1, sizeof *t);
	int r = -ENOMEM;

	if (!t)
		return -ENOMEM;
	t->epfd = t->timerfd = t->ctlfd = -1;
	t->id = id;
	t->nthreads = nthreads;
	t->opts = opts;
	t->scn = scn;
	t->phase_word = phase_word;
	t->phase = (enum lg_phase)__atomic_load_n(phase_word, __ATOMIC_ACQUIRE);
	t->phase_seen = (int)t->phase;
	t->nconns = scn->slots(opts, id, nthreads);
	t->max_in_progress = share(opts->concurrency, id, nthreads);
	if (t->max_in_progress == 0)
		t->max_in_progress = 1;
	t->ramp = opts->ramp / nthreads;
	t->ramp_at = lg_now_ns();
	t->conns = calloc(t->nconns ? t->nconns : 1, sizeof *t->conns);
	t->goal_hist = calloc(1, sizeof *t->goal_hist);
	t->msg_hist = calloc(1, sizeof *t->msg_hist);
	if (!t->conns || !t->goal_hist || !t->msg_hist)
		goto fail;
	if (scn->repeat_logins && opts->mech != SASL_MECH_PLAIN && opts->accounts > 0) {
		t->nkeys = opts->accounts < LG_KEY_CACHE_MAX ? opts->accounts : LG_KEY_CACHE_MAX;
		t->keys = calloc(t->nkeys, sizeof *t->keys);
		if (!t->keys)
			goto fail;
	}
	for (unsigned i = 0; i < t->nconns; i++) {
		t->conns[i].thread = t;
		t->conns[i].fd = -1;
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	t->ctlfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->epfd < 0 || t->timerfd < 0 || t->ctlfd < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = watch(t, t->timerfd, &t->timerfd)) < 0 || (r = watch(t, t->ctlfd, &t->ctlfd)) < 0)
		goto fail;
	if (opts->tls != LG_TLS_NONE && !(t->tls = tls_ctx_new(opts))) {
		r = -EINVAL;
		goto fail;
	}
	scn->setup(t);
	*out = t;
	return 0;
fail:
	lg_thread_free(t);
	return r;
}

void lg_thread_free(struct lg_thread *t)
{
	if (!t)
		return;
	for (unsigned i = 0; t->conns && i < t->nconns; i++) {
		conn_close_resources(&t->conns[i]);
		lg_xml_free(&t->conns[i].xml);
	}
	if (t->tls)
		wolfSSL_CTX_free(t->tls);
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->timerfd >= 0)
		close(t->timerfd);
	if (t->ctlfd >= 0)
		close(t->ctlfd);
	if (t->keys)
		explicit_bzero(t->keys, t->nkeys * sizeof *t->keys);
	free(t->keys);
	free(t->conns);
	free(t->goal_hist);
	free(t->msg_hist);
	free(t);
}
