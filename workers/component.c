/*
 * component.c: call bridges as XEP-0114 components, and the server's side
 * of the login hand-off (docs/callbridge.md).
 *
 * A stream goes (TLS_HANDSHAKE ->) WAIT_STREAM -> WAIT_AUTH (our header
 * sent, <handshake/> next) -> BOUND, or CLOSING. The bridge names itself in
 * the header's 'to' (NAME.DOMAIN, or the address the YAML maps NAME to);
 * its secret is read from the node's store at every handshake, so a secret
 * added with xmppctl works at once, and it is compared in constant time.
 *
 * A bound component is an entry of the session directory under its address,
 * so any worker routes stanzas to it. A second stream for the same address
 * replaces the first (the old one gets <conflict/>): a bridge whose old TCP
 * connection is half dead must never be locked out by it.
 *
 * Failed handshakes are answered later and later per source address
 * (FAIL_*): a bridge with a wrong secret retries in seconds anyway, while
 * guessing a secret from one address becomes slow. The table is in shared
 * memory (shm_fails), one for all workers: SO_REUSEPORT spreads one
 * address's connections over them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha.h>

#include "common/config.h"
#include "common/jid.h"
#include "common/log.h"
#include "storage/callbridges.h"
#include "workers/router.h"
#include "workers/sasl.h"
#include "workers/stanza.h"
#include "workers/tls.h"
#include "workers/worker.h"
#include "workers/xmlstream.h"

#define XMLNS_PING "urn:xmpp:ping"
#define XMLNS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define XMLNS_HANDOFF "urn:xmppd:callbridge-auth:1"
#define HANDOFF_ID_PREFIX "xmppd-auth-"
/* A stream must complete its handshake within this. */
#define HANDSHAKE_TIMEOUT_MS 30000

/* Failed handshakes per source address: the first FAIL_FREE within
 * FAIL_WINDOW_MS are answered at once, each later one waits twice as long
 * as the one before, up to FAIL_MAX_DELAY_MS. */
#define FAIL_FREE 3
#define FAIL_WINDOW_MS 60000
#define FAIL_MAX_DELAY_MS 16000

struct component {
	char name[CALLBRIDGE_NAME_MAX];
	char address[SESSDIR_JID_MAX];
	bool registered;            /* in the session directory */
	int64_t refuse_at_ms;       /* a failed handshake answered at this time */
};

static struct buf out;   /* what this file composes */
static struct buf stamp; /* a stanza with 'from' set */

static struct component *comp(struct conn *c)
{
	return (struct component *)c->proto;
}

/* C's peer without the port: what the failure table counts. */
static void peer_ip(const struct conn *c, char ip[SESSDIR_ADDR_MAX])
{
	snprintf(ip, SESSDIR_ADDR_MAX, "%s", c->peer);
	char *colon = strrchr(ip, ':');
	if (colon)
		*colon = '\0';
}

/* Record a failure from C's address; how long to wait before saying so.
 * *COUNT: failures from that address in the window, this one included. */
static int64_t fail_delay_ms(const struct conn *c, uint32_t *count)
{
	char ip[SESSDIR_ADDR_MAX];
	peer_ip(c, ip);
	struct shm_fails *t = &worker.shm->fails;
	int locked = shm_mutex_lock(&t->lock);
	if (locked < 0) { /* not expected: refuse as slowly as we ever do */
		*count = 0;
		return FAIL_MAX_DELAY_MS;
	}
	if (locked == 1) /* its holder died mid-update: start afresh */
		memset(t->slots, 0, sizeof t->slots);
	struct shm_fail_record *slot = NULL, *oldest = &t->slots[0];
	for (int i = 0; i < SHM_FAIL_SLOTS; i++) {
		if (!strncmp(t->slots[i].ip, ip, sizeof t->slots[i].ip)) {
			slot = &t->slots[i];
			break;
		}
		if (t->slots[i].last_ms < oldest->last_ms)
			oldest = &t->slots[i];
	}
	if (!slot || worker.now_ms - slot->last_ms > FAIL_WINDOW_MS) {
		slot = slot ? slot : oldest;
		snprintf(slot->ip, sizeof slot->ip, "%s", ip);
		slot->count = 0;
	}
	slot->count++;
	slot->last_ms = worker.now_ms;
	*count = slot->count;
	shm_mutex_unlock(&t->lock);
	if (*count <= FAIL_FREE)
		return 0;
	uint32_t doublings = *count - FAIL_FREE - 1;
	int64_t delay = 1000 << (doublings > 4 ? 4 : doublings);
	return delay > FAIL_MAX_DELAY_MS ? FAIL_MAX_DELAY_MS : delay;
}

/* ---- stream output -------------------------------------------------------- */

static void stream_header(struct conn *c, const char *from)
{
	out.len = 0;
	if (!c->stream_id[0])
		stanza_random_id(c->stream_id, sizeof c->stream_id);
	buf_add_str(&out, "<?xml version='1.0'?><stream:stream xmlns='" XMLNS_COMPONENT
			  "' xmlns:stream='" XMLNS_STREAMS "' id='");
	buf_add_str(&out, c->stream_id);
	if (from && *from) {
		buf_add_str(&out, "' from='");
		buf_add_esc(&out, from);
	}
	buf_add_str(&out, "'>");
	conn_write(c, out.data, out.len);
	c->stream_open = true;
}

static void stream_error(struct conn *c, const char *condition, const char *text)
{
	if (c->state == C2S_CLOSING || c->fd_closed)
		return;
	if (!c->stream_open)
		stream_header(c, comp(c) ? comp(c)->address : NULL);
	stanza_build_stream_error(&out, condition, text);
	conn_write(c, out.data, out.len);
	log_info("closing component stream from %s%s%s: %s%s%s", c->peer,
		 comp(c) && comp(c)->name[0] ? " call bridge " : "",
		 comp(c) ? comp(c)->name : "", condition, text ? ": " : "", text ? text : "");
	c->state = C2S_CLOSING;
	conn_close(c);
}

/* ---- the handshake -------------------------------------------------------- */

static int on_stream_open(void *ctx, const char *ns, const char *name, const char *default_ns,
			  const struct xml_attr *attrs, int attr_count)
{
	struct conn *c = ctx;
	struct component *cp = comp(c);
	if (c->state != C2S_WAIT_STREAM)
		return 1;
	if (strcmp(ns, XMLNS_STREAMS) || strcmp(name, "stream")) {
		stream_error(c, "invalid-namespace", "expected <stream:stream>");
		return 1;
	}
	if (strcmp(default_ns, XMLNS_COMPONENT)) {
		stream_error(c, "invalid-namespace",
			     "the content namespace must be " XMLNS_COMPONENT);
		return 1;
	}
	const char *to = NULL;
	for (int i = 0; i < attr_count; i++)
		if (!attrs[i].ns[0] && !strcmp(attrs[i].name, "to"))
			to = attrs[i].value;
	struct jid j;
	if (!to || jid_parse(&j, to, strlen(to)) < 0 || j.local[0] || j.resource[0] ||
	    strlen(j.domain) >= sizeof cp->address ||
	    config_callbridge_name(worker.cfg, j.domain, cp->name) < 0) {
		stream_error(c, "host-unknown", "not a call bridge address of this domain");
		return 1;
	}
	memcpy(cp->address, j.domain, strlen(j.domain) + 1);
	stream_header(c, cp->address);
	c->state = C2S_WAIT_AUTH;
	return 0;
}

/* Lower-case hex SHA-1 of the stream id followed by the secret (XEP-0114). */
static int handshake_digest(const char *stream_id, const char *secret, char hex[41])
{
	wc_Sha sha;
	uint8_t digest[WC_SHA_DIGEST_SIZE];
	if (wc_InitSha(&sha) != 0)
		return -EIO;
	int rc = wc_ShaUpdate(&sha, (const uint8_t *)stream_id, (word32)strlen(stream_id)) ||
		 wc_ShaUpdate(&sha, (const uint8_t *)secret, (word32)strlen(secret)) ||
		 wc_ShaFinal(&sha, digest);
	wc_ShaFree(&sha);
	for (int i = 0; i < WC_SHA_DIGEST_SIZE; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	explicit_bzero(digest, sizeof digest);
	return rc ? -EIO : 0;
}

static void handshake_failed(struct conn *c)
{
	struct component *cp = comp(c);
	uint32_t failures;
	int64_t delay = fail_delay_ms(c, &failures);
	log_warn("authentication failure for call bridge %s from %s (%u from this address "
		 "within a minute; worker %d)",
		 cp->name, c->peer, failures, worker.index);
	if (delay == 0) {
		stream_error(c, "not-authorized", NULL);
		return;
	}
	log_info("answering call bridge %s from %s in %lld ms (%u failures from this address)",
		 cp->name, c->peer, (long long)delay, failures);
	/* answered by component_tick; input meanwhile is ignored */
	cp->refuse_at_ms = worker.now_ms + delay;
	c->state = C2S_SASL;
}

static void register_component(struct conn *c)
{
	struct component *cp = comp(c);
	struct sessdir_entry e, old;
	memset(&e, 0, sizeof e);
	snprintf(e.jid, sizeof e.jid, "%s", cp->address);
	e.worker = (uint16_t)worker.index;
	e.conn_id = c->id;
	e.conn_gen = c->gen;
	e.tls = c->tls_active;
	e.available = 1;
	e.since_ms = worker.now_ms;
	snprintf(e.address, sizeof e.address, "%s", c->peer);
	int rc = sessdir_add(worker.sessdir, &e, &old);
	if (rc < 0) {
		log_warn("cannot register call bridge %s: session directory: %s", cp->name,
			 strerror(-rc));
		stream_error(c, "resource-constraint", NULL);
		return;
	}
	cp->registered = true;
	c->authenticated = true;
	c->state = C2S_BOUND;
	conn_write_str(c, "<handshake/>");
	log_info("call bridge %s connected from %s as %s on worker %d%s", cp->name, c->peer,
		 cp->address, worker.index, c->tls_active ? " (TLS)" : "");
	if (rc == 1) {
		log_info("call bridge %s connected again: closing its older stream from %s",
			 cp->name, old.address);
		if (old.worker == (uint16_t)worker.index) {
			struct conn *o = conn_lookup(old.conn_id, old.conn_gen);
			if (o && o != c) {
				comp(o)->registered = false; /* the entry is ours now */
				stream_error(o, "conflict", "replaced by a new connection");
			}
		} else {
			route_kick(&old);
		}
	}
}

static void handle_handshake(struct conn *c, const struct xml_stanza *st)
{
	struct component *cp = comp(c);
	if (strcmp(st->head.ns, XMLNS_COMPONENT) || strcmp(st->head.name, "handshake") ||
	    !st->tree) {
		stream_error(c, "not-authorized", "handshake first");
		return;
	}
	char secret[CALLBRIDGE_SECRET_MAX], expected[41], given[41] = "";
	const struct xml_node *n = st->tree;
	bool known = callbridges_get(worker.accounts, cp->name, secret) == 0;
	if (!known)
		snprintf(secret, sizeof secret, "-"); /* the same work either way */
	bool ok = handshake_digest(c->stream_id, secret, expected) == 0 && n->text_len == 40;
	explicit_bzero(secret, sizeof secret);
	if (n->text_len == 40)
		for (int i = 0; i < 40; i++)
			given[i] = (char)(n->text[i] >= 'A' && n->text[i] <= 'F' ? n->text[i] + 32
									       : n->text[i]);
	ok = (ct_memcmp(given, expected, 40) == 0) & ok & known;
	explicit_bzero(expected, sizeof expected);
	if (!ok)
		handshake_failed(c);
	else
		register_component(c);
}

/* ---- stanzas from a bound component --------------------------------------- */

/* "xmppd-auth-W-ID-GEN-SEQ": which client attempt an answer is for. */
static bool parse_handoff_id(const char *id, int *w, uint32_t *conn_id, uint32_t *conn_gen,
			     uint32_t *seq)
{
	size_t plen = strlen(HANDOFF_ID_PREFIX);
	if (!id || strncmp(id, HANDOFF_ID_PREFIX, plen))
		return false;
	unsigned a, b, g, s;
	int used = 0;
	if (sscanf(id + plen, "%u-%u-%u-%u%n", &a, &b, &g, &s, &used) != 4 || id[plen + used] ||
	    a >= (unsigned)worker.cfg->worker_count)
		return false;
	*w = (int)a;
	*conn_id = b;
	*conn_gen = g;
	*seq = s;
	return true;
}

/* An iq reply, or a request, addressed to the domain itself. */
static void handle_server_stanza(struct conn *c, const struct xml_stanza *st,
				 enum stanza_kind kind, enum stanza_type type, const char *from)
{
	if (kind != ST_IQ)
		return; /* messages and presence to the server: nothing to do */
	const char *id = st->head.id;
	int w;
	uint32_t cid, gen, seq;
	if ((type == TY_RESULT || type == TY_ERROR) &&
	    parse_handoff_id(id, &w, &cid, &gen, &seq)) {
		const char *cond = "temporary-auth-failure";
		/* the <error/> child in whatever content namespace the library
		 * chose (slixmpp writes jabber:client) */
		for (const struct xml_node *n = st->tree ? st->tree->first_child : NULL; n;
		     n = n->next)
			if (!strcmp(n->name, "error") && xml_child(n, XMLNS_STANZAS, "not-authorized"))
				cond = "not-authorized";
		route_auth_answer(w, cid, gen, seq, type == TY_RESULT, cond);
		return;
	}
	if (type != TY_GET && type != TY_SET)
		return;
	const struct xml_node *q = st->tree ? st->tree->first_child : NULL;
	out.len = 0;
	if (type == TY_GET && q && !strcmp(q->ns, XMLNS_PING) && !strcmp(q->name, "ping")) {
		buf_add_str(&out, "<iq type='result' from='");
		buf_add_esc(&out, worker.cfg->domain);
		buf_add_str(&out, "' to='");
		buf_add_esc(&out, from);
		buf_add_str(&out, "' id='");
		buf_add_esc(&out, id ? id : "");
		buf_add_str(&out, "'/>");
	} else {
		stanza_build_error(&out, ST_IQ, worker.cfg->domain, from, id,
				   "service-unavailable");
	}
	conn_write(c, out.data, out.len);
}

static void handle_bound_stanza(struct conn *c, const struct xml_stanza *st)
{
	struct component *cp = comp(c);
	enum stanza_kind kind = stanza_kind_of(st->head.ns, st->head.name);
	if (kind == ST_OTHER) {
		stream_error(c, "unsupported-stanza-type", NULL);
		return;
	}
	atomic_fetch_add_explicit(&worker.slot->stanzas_in, 1, memory_order_relaxed);
	enum stanza_type type = stanza_type_of(kind, st->head.type);
	if (type == TY_INVALID || !st->head.to ||
	    (kind == ST_IQ && (!st->head.id || type == TY_NONE))) {
		stream_error(c, "invalid-xml", "a stanza needs a valid type, and a 'to'");
		return;
	}
	/* 'from' must be the component's address or a JID under it */
	char from[3 * JID_PART_MAX + 3];
	struct jid f;
	const char *given = st->head.from ? st->head.from : cp->address;
	if (jid_parse(&f, given, strlen(given)) < 0 || strcmp(f.domain, cp->address) ||
	    jid_full(&f, from, sizeof from) < 0) {
		stream_error(c, "invalid-from", NULL);
		return;
	}
	struct jid to;
	char to_norm[3 * JID_PART_MAX + 3];
	if (jid_parse(&to, st->head.to, strlen(st->head.to)) < 0 ||
	    jid_full(&to, to_norm, sizeof to_norm) < 0) {
		if (kind != ST_PRESENCE) {
			stanza_build_error(&out, kind, st->head.to, from, st->head.id,
					   "jid-malformed");
			conn_write(c, out.data, out.len);
		}
		return;
	}
	if (!strcmp(to.domain, worker.cfg->domain) && !to.local[0] && !to.resource[0]) {
		handle_server_stanza(c, st, kind, type, from);
		return;
	}
	if (stanza_set_from(&stamp, st->raw, st->raw_len, st->start_tag_len, from) < 0) {
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	struct routed r = { .kind = kind, .type = type, .id = st->head.id, .from = from,
			    .to = to_norm, .bytes = stamp.data, .len = stamp.len };
	route_stanza(&r, &to);
}

/* ---- parser callbacks ----------------------------------------------------- */

static bool on_stanza_start(void *ctx, const struct xml_stanza_head *head)
{
	struct conn *c = ctx;
	if (c->state != C2S_BOUND)
		return true; /* the handshake: its text is needed */
	/* only what is addressed to the domain itself is read further */
	return head->to && !strcmp(head->to, worker.cfg->domain);
}

static int on_stanza(void *ctx, const struct xml_stanza *st)
{
	struct conn *c = ctx;
	switch (c->state) {
	case C2S_WAIT_AUTH:
		handle_handshake(c, st);
		break;
	case C2S_BOUND:
		handle_bound_stanza(c, st);
		break;
	case C2S_SASL:   /* a refusal is pending: ignore */
	case C2S_CLOSING:
		break;
	default:
		stream_error(c, "not-authorized", NULL);
		break;
	}
	return c->state == C2S_CLOSING ? 1 : 0;
}

static const struct xmlstream_callbacks callbacks = {
	.on_stream_open = on_stream_open,
	.on_stanza_start = on_stanza_start,
	.on_stanza = on_stanza,
	.on_stream_close = conn_answer_stream_close,
};

/* ---- the login hand-off ---------------------------------------------------- */

struct bridge_pick {
	struct sessdir_entry best;
	bool found;
};

static void consider_bridge(const char *name, const char *secret, void *arg)
{
	(void)secret;
	struct bridge_pick *pick = arg;
	char address[SESSDIR_JID_MAX];
	struct sessdir_entry e;
	if (config_callbridge_address(worker.cfg, name, address, sizeof address) < 0 ||
	    sessdir_lookup_full(worker.sessdir, address, &e) < 0)
		return;
	/* the bridge connected longest: the stablest choice while bridges
	 * come and go */
	if (!pick->found || e.since_ms < pick->best.since_ms) {
		pick->best = e;
		pick->found = true;
	}
}

int component_auth_request(struct conn *c, uint32_t seq, const char *user, const char *password,
			   struct sessdir_entry *bridge)
{
	struct bridge_pick pick = { .found = false };
	int rc = callbridges_list(worker.accounts, consider_bridge, &pick);
	if (rc < 0)
		return rc;
	if (!pick.found)
		return -ENOENT;
	char id[80];
	snprintf(id, sizeof id, HANDOFF_ID_PREFIX "%d-%u-%u-%u", worker.index, c->id, c->gen, seq);
	struct buf iq = { 0 };
	buf_add_str(&iq, "<iq type='set' from='");
	buf_add_esc(&iq, worker.cfg->domain);
	buf_add_str(&iq, "' to='");
	buf_add_esc(&iq, pick.best.jid);
	buf_add_str(&iq, "' id='");
	buf_add_str(&iq, id);
	buf_add_str(&iq, "'><authenticate xmlns='" XMLNS_HANDOFF "' mechanism='PLAIN'><username>");
	buf_add_esc(&iq, user);
	buf_add_str(&iq, "</username><password>");
	buf_add_esc(&iq, password);
	buf_add_str(&iq, "</password><address>");
	buf_add_esc(&iq, c->peer);
	rc = buf_add_str(&iq, "</address></authenticate></iq>");
	if (rc == 0) {
		struct routed r = { .kind = ST_IQ, .type = TY_SET, .id = id,
				    .from = worker.cfg->domain, .to = pick.best.jid,
				    .bytes = iq.data, .len = iq.len, .hops = ROUTE_MAX_HOPS };
		route_to_entry(&pick.best, &r);
		*bridge = pick.best;
	}
	if (iq.data)
		explicit_bzero(iq.data, iq.cap);
	buf_free(&iq);
	return rc;
}

/* ---- entry points from the loop --------------------------------------------- */

static int component_open(struct conn *c)
{
	c->proto = calloc(1, sizeof(struct component));
	c->xml = xmlstream_new(&callbacks, c, worker.cfg->max_stanza_size, worker.cfg->max_depth);
	if (!c->proto || !c->xml) {
		log_error("out of memory for a new component connection from %s", c->peer);
		return -ENOMEM;
	}
	c->state = C2S_WAIT_STREAM;
	return 0;
}

static void component_input(struct conn *c, const char *data, size_t len)
{
	if (c->state == C2S_CLOSING || c->fd_closed)
		return;
	size_t consumed = len;
	enum xs_error rc = xmlstream_feed(c->xml, data, len, &consumed);
	if (rc != XS_OK && rc != XS_ERR_CALLBACK)
		stream_error(c, xs_error_condition(rc), xmlstream_error_text(c->xml));
}

static void component_tls_ready(struct conn *c)
{
	c->state = C2S_WAIT_STREAM;
	tls_conn_trim(c->tls);
}

static void component_closed(struct conn *c)
{
	struct component *cp = comp(c);
	if (!cp)
		return;
	if (cp->registered) {
		sessdir_del(worker.sessdir, cp->address, (uint16_t)worker.index, c->id, c->gen);
		log_info("call bridge %s disconnected (%s)", cp->name, c->peer);
	}
	free(cp);
	c->proto = NULL;
}

static void component_tick(struct conn *c)
{
	struct component *cp = comp(c);
	if (c->xml) {
		size_t held = xmlstream_memory(c->xml);
		xmlstream_trim(c->xml);
		if (xmlstream_memory(c->xml) < held)
			worker_released(held - xmlstream_memory(c->xml));
	}
	if (c->state == C2S_SASL && worker.now_ms >= cp->refuse_at_ms) {
		stream_error(c, "not-authorized", NULL);
		return;
	}
	if (c->state == C2S_BOUND || c->state == C2S_CLOSING || c->state == C2S_SASL ||
	    worker.now_ms - c->opened_ms <= HANDSHAKE_TIMEOUT_MS)
		return;
	if (c->state == C2S_TLS_HANDSHAKE || !c->stream_open) {
		c->state = C2S_CLOSING;
		conn_close(c);
		return;
	}
	stream_error(c, "connection-timeout", "no handshake in time");
}

void component_fini(void)
{
	buf_free(&out);
	buf_free(&stamp);
}

const struct conn_handler component_handler = {
	.open = component_open,
	.input = component_input,
	.tls_ready = component_tls_ready,
	.closed = component_closed,
	.tick = component_tick,
	.stream_error = stream_error,
};
