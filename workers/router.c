/*
 * router.c: delivery of accepted stanzas (see router.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "workers/router.h"
#include "workers/stanza.h"
#include "workers/worker.h"
#include "workers/xmlstream.h"
#include "storage/accounts.h"

#define BARE_FANOUT 64

enum route_kind {
	ROUTE_DELIVER = 1, /* stanza for connection (id, gen) */
	ROUTE_KICK,        /* close connection (id, gen) with <conflict/> */
	ROUTE_PROBE,       /* send (id, gen)'s presence to FROM */
	ROUTE_AUTH,        /* the login hand-off's answer for client (id, gen) */
};

/* Header of an inter-worker message; the variable parts follow in order:
 * to, from, id (unescaped), then the stanza bytes. For ROUTE_AUTH, 'type'
 * is 1 for accepted, 'id' carries the refusal's condition and SEQ the
 * attempt it answers. */
struct route_hdr {
	uint8_t kind;
	uint8_t stanza;   /* enum stanza_kind */
	uint8_t type;     /* enum stanza_type */
	uint8_t hops;
	uint32_t conn_id;
	uint32_t conn_gen;
	uint32_t seq;
	uint16_t to_len, from_len, id_len, pad;
	uint32_t stanza_len;
};

static struct buf build; /* inter-worker messages and error replies */

/* ---- stanza names --------------------------------------------------------- */

enum stanza_kind stanza_kind_of(const char *ns, const char *name)
{
	if (strcmp(ns, XMLNS_CLIENT) != 0 && strcmp(ns, XMLNS_COMPONENT) != 0)
		return ST_OTHER;
	if (!strcmp(name, "message"))
		return ST_MESSAGE;
	if (!strcmp(name, "presence"))
		return ST_PRESENCE;
	if (!strcmp(name, "iq"))
		return ST_IQ;
	return ST_OTHER;
}

enum stanza_type stanza_type_of(enum stanza_kind k, const char *t)
{
	if (!t)
		return TY_NONE;
	if (!strcmp(t, "error"))
		return TY_ERROR;
	switch (k) {
	case ST_MESSAGE:
		if (!strcmp(t, "normal")) return TY_NORMAL;
		if (!strcmp(t, "chat")) return TY_CHAT;
		if (!strcmp(t, "groupchat")) return TY_GROUPCHAT;
		if (!strcmp(t, "headline")) return TY_HEADLINE;
		return TY_INVALID;
	case ST_PRESENCE:
		if (!strcmp(t, "unavailable")) return TY_UNAVAILABLE;
		if (!strcmp(t, "probe")) return TY_PROBE;
		if (!strcmp(t, "subscribe") || !strcmp(t, "subscribed") ||
		    !strcmp(t, "unsubscribe") || !strcmp(t, "unsubscribed"))
			return TY_SUBSCRIPTION;
		return TY_INVALID;
	case ST_IQ:
		if (!strcmp(t, "get")) return TY_GET;
		if (!strcmp(t, "set")) return TY_SET;
		if (!strcmp(t, "result")) return TY_RESULT;
		return TY_INVALID;
	default:
		return TY_INVALID;
	}
}

const char *stanza_kind_name(enum stanza_kind k)
{
	return k == ST_MESSAGE ? "message" : k == ST_PRESENCE ? "presence" : "iq";
}

static const char *error_type_of(const char *condition)
{
	if (!strcmp(condition, "jid-malformed") || !strcmp(condition, "bad-request"))
		return "modify";
	if (!strcmp(condition, "resource-constraint"))
		return "wait";
	if (!strcmp(condition, "not-authorized"))
		return "auth";
	return "cancel";
}

void stanza_build_error(struct buf *b, enum stanza_kind kind, const char *err_from,
			const char *err_to, const char *id, const char *condition)
{
	b->len = 0;
	buf_add_str(b, "<");
	buf_add_str(b, stanza_kind_name(kind));
	if (err_from && *err_from) {
		buf_add_str(b, " from='");
		buf_add_esc(b, err_from);
		buf_add_str(b, "'");
	}
	buf_add_str(b, " to='");
	buf_add_esc(b, err_to);
	buf_add_str(b, "' type='error'");
	if (id) {
		buf_add_str(b, " id='");
		buf_add_esc(b, id);
		buf_add_str(b, "'");
	}
	buf_add_str(b, "><error type='");
	buf_add_str(b, error_type_of(condition));
	buf_add_str(b, "'><");
	buf_add_str(b, condition);
	buf_add_str(b, " xmlns='" XMLNS_STANZAS "'/></error></");
	buf_add_str(b, stanza_kind_name(kind));
	buf_add_str(b, ">");
}

void stanza_build_stream_error(struct buf *b, const char *condition, const char *text)
{
	b->len = 0;
	buf_add_str(b, "<stream:error><");
	buf_add_str(b, condition);
	buf_add_str(b, " xmlns='" XMLNS_STREAM_ERRORS "'/>");
	if (text) {
		buf_add_str(b, "<text xmlns='" XMLNS_STREAM_ERRORS "'>");
		buf_add_esc(b, text);
		buf_add_str(b, "</text>");
	}
	buf_add_str(b, "</stream:error></stream:stream>");
}

/* ---- delivery ------------------------------------------------------------- */

/* A component's directory entry is its bare address: no '@', no '/'. */
static bool entry_is_component(const struct sessdir_entry *e)
{
	return !strchr(e->jid, '@') && !strchr(e->jid, '/');
}

static void deliver_local(struct conn *t, const char *bytes, size_t len)
{
	if (conn_write(t, bytes, len) < 0) {
		log_warn("output to %s failed (peer not reading?); closing", t->peer);
		t->state = C2S_CLOSING;
		conn_close(t);
		return;
	}
	atomic_fetch_add_explicit(&worker.slot->stanzas_out, 1, memory_order_relaxed);
}

static void send_route(int target, uint32_t conn_id, uint32_t conn_gen, enum route_kind rk,
		       const struct routed *r, uint32_t seq)
{
	struct route_hdr h = {
		.kind = rk,
		.stanza = (uint8_t)r->kind,
		.type = (uint8_t)r->type,
		.hops = r->hops,
		.conn_id = conn_id,
		.conn_gen = conn_gen,
		.seq = seq,
	};
	const char *to = r->to ? r->to : "", *from = r->from ? r->from : "", *id = r->id ? r->id : "";
	size_t to_len = strlen(to), from_len = strlen(from), id_len = strlen(id);
	if (to_len > UINT16_MAX || from_len > UINT16_MAX || id_len > UINT16_MAX ||
	    r->len > UINT32_MAX)
		return;
	h.to_len = (uint16_t)to_len;
	h.from_len = (uint16_t)from_len;
	h.id_len = (uint16_t)id_len;
	h.stanza_len = (uint32_t)r->len;
	size_t var = to_len + from_len + id_len;
	struct buf *b = &build;
	b->len = 0;
	if (buf_reserve(b, var + r->len + 1) < 0) { /* never NULL, even when empty */
		log_error("out of memory routing a stanza to worker %d", target);
		return;
	}
	memcpy(b->data, to, to_len);
	memcpy(b->data + to_len, from, from_len);
	memcpy(b->data + to_len + from_len, id, id_len);
	memcpy(b->data + var, r->bytes, r->len);
	if (worker_send_to(target, &h, sizeof h, b->data, var + r->len) < 0)
		log_error("cannot queue a stanza for worker %d", target);
}

static void route_to_bare(const struct routed *r, const char *bare);

/* TO is not one of this domain's users: a component's address or a JID
 * under it. */
static bool addressed_to_component(const char *to)
{
	struct jid j;
	return jid_parse(&j, to, strlen(to)) == 0 && strcmp(j.domain, worker.cfg->domain) != 0;
}

int route_lookup(const char *jid, struct sessdir_entry *out)
{
	struct jid j;
	if (jid_parse(&j, jid, strlen(jid)) < 0)
		return -ENOENT;
	if (!strcmp(j.domain, worker.cfg->domain))
		return sessdir_lookup_full(worker.sessdir, jid, out);
	if (sessdir_lookup_full(worker.sessdir, j.domain, out) == 0 && entry_is_component(out))
		return 0;
	return -ENOENT;
}

void route_bounce(const struct routed *r, const char *condition)
{
	if (r->type == TY_ERROR || r->type == TY_RESULT || !r->from || !*r->from)
		return;
	struct buf err = { 0 };
	stanza_build_error(&err, r->kind, r->to, r->from, r->id, condition);
	struct sessdir_entry e;
	if (err.data && route_lookup(r->from, &e) == 0) {
		struct routed er = {
			.kind = r->kind, .type = TY_ERROR, .id = r->id, .from = r->to,
			.to = r->from, .bytes = err.data, .len = err.len, .hops = ROUTE_MAX_HOPS,
		};
		route_to_entry(&e, &er);
	}
	free(err.data);
}

/* R's recipient is gone: for a client's full JID, RFC 6121 8.5.3.2 for
 * messages (try the bare JID), errors for iq, silence for presence; a
 * component that went away answers nothing, so its senders are told. */
static void recipient_gone(const struct routed *r, bool component)
{
	if (r->kind == ST_MESSAGE) {
		if (r->type == TY_ERROR)
			return;
		if (component || r->type == TY_GROUPCHAT || r->hops >= ROUTE_MAX_HOPS) {
			route_bounce(r, "service-unavailable");
			return;
		}
		char bare[SESSDIR_JID_MAX];
		const char *slash = strchr(r->to, '/');
		size_t n = slash ? (size_t)(slash - r->to) : strlen(r->to);
		if (n >= sizeof bare)
			return;
		memcpy(bare, r->to, n);
		bare[n] = '\0';
		struct routed again = *r;
		again.hops++;
		route_to_bare(&again, bare);
	} else if (r->kind == ST_IQ && (r->type == TY_GET || r->type == TY_SET)) {
		route_bounce(r, "service-unavailable");
	}
}

void route_to_entry(const struct sessdir_entry *e, const struct routed *r)
{
	if (e->worker != (uint16_t)worker.index) {
		send_route(e->worker, e->conn_id, e->conn_gen, ROUTE_DELIVER, r, 0);
		return;
	}
	struct conn *t = conn_lookup(e->conn_id, e->conn_gen);
	if (t && t->state == C2S_BOUND)
		deliver_local(t, r->bytes, r->len);
	else
		recipient_gone(r, entry_is_component(e));
}

/* RFC 6121 8.5.2: a stanza to a bare JID of an existing account, whose
 * sessions are the N in ES. */
static void route_to_sessions(const struct routed *r, const struct sessdir_entry *es, int n)
{
	int best = -129;
	int targets = 0;
	for (int i = 0; i < n; i++)
		if (es[i].available && es[i].priority >= 0 && es[i].priority > best)
			best = es[i].priority;
	switch (r->kind) {
	case ST_MESSAGE:
		if (r->type == TY_GROUPCHAT) {
			route_bounce(r, "service-unavailable");
			return;
		}
		for (int i = 0; i < n; i++) {
			if (!es[i].available || es[i].priority < 0)
				continue;
			/* headline: every non-negative resource; chat and
			 * normal: the highest-priority ones */
			if (r->type != TY_HEADLINE && es[i].priority != best)
				continue;
			route_to_entry(&es[i], r);
			targets++;
		}
		/* No offline storage yet: say so rather than drop silently. */
		if (!targets && r->type != TY_HEADLINE && r->type != TY_ERROR)
			route_bounce(r, "service-unavailable");
		return;
	case ST_PRESENCE:
		for (int i = 0; i < n; i++)
			if (es[i].available)
				route_to_entry(&es[i], r);
		return;
	case ST_IQ:
		route_bounce(r, "service-unavailable");
		return;
	default:
		return;
	}
}

static void route_to_bare(const struct routed *r, const char *bare)
{
	struct sessdir_entry es[BARE_FANOUT];
	int n = sessdir_lookup_bare(worker.sessdir, bare, es, BARE_FANOUT, NULL);

	route_to_sessions(r, es, n);
}

/* No session of BARE is online: does the account exist? (A session proves
 * it, so only stanzas to someone not logged in read the account store; an
 * LMDB read for every message was 7% of a worker's time in the chat
 * benchmark.) */
static bool account_exists(const char *bare)
{
	struct scram_creds creds;

	return worker.cfg->auth != AUTH_INTERNAL || accounts_get(worker.accounts, bare, &creds) == 0;
}

/* A user of this domain. */
static void route_to_user(const struct routed *r, const struct jid *to)
{
	char bare[SESSDIR_JID_MAX];
	if (jid_bare(to, bare, sizeof bare) < 0) {
		route_bounce(r, "service-unavailable");
		return;
	}
	if (to->resource[0]) {
		struct sessdir_entry e;
		if (sessdir_lookup_full(worker.sessdir, r->to, &e) == 0)
			route_to_entry(&e, r);
		else if (sessdir_lookup_bare(worker.sessdir, bare, &e, 1, NULL) == 0 &&
			 !account_exists(bare))
			route_bounce(r, "service-unavailable"); /* no such user */
		else
			recipient_gone(r, false);
		return;
	}
	struct sessdir_entry es[BARE_FANOUT];
	int n = sessdir_lookup_bare(worker.sessdir, bare, es, BARE_FANOUT, NULL);
	if (n == 0 && !account_exists(bare))
		route_bounce(r, "service-unavailable"); /* no such user */
	else
		route_to_sessions(r, es, n);
}

void route_stanza(const struct routed *r, const struct jid *to)
{
	if (!strcmp(to->domain, worker.cfg->domain)) {
		route_to_user(r, to);
		return;
	}
	struct sessdir_entry e;
	if (sessdir_lookup_full(worker.sessdir, to->domain, &e) == 0 && entry_is_component(&e)) {
		route_to_entry(&e, r);
		return;
	}
	if (r->kind == ST_PRESENCE)
		return;
	char name[64];
	if (config_callbridge_name(worker.cfg, to->domain, name) == 0)
		route_bounce(r, "service-unavailable"); /* a bridge's address, not connected */
	else
		route_bounce(r, "remote-server-not-found"); /* federation is a later issue */
}

/* ---- requests between workers --------------------------------------------- */

void route_kick(const struct sessdir_entry *e)
{
	struct routed k = { .kind = ST_OTHER, .bytes = "", .len = 0 };
	send_route(e->worker, e->conn_id, e->conn_gen, ROUTE_KICK, &k, 0);
}

void route_probe(const struct sessdir_entry *e, const char *from)
{
	struct routed r = { .kind = ST_PRESENCE, .type = TY_PROBE, .from = from, .to = e->jid,
			    .bytes = "", .len = 0 };
	send_route(e->worker, e->conn_id, e->conn_gen, ROUTE_PROBE, &r, 0);
}

void route_auth_answer(int worker_index, uint32_t conn_id, uint32_t conn_gen, uint32_t seq,
		       bool ok, const char *condition)
{
	if (worker_index == worker.index) {
		struct conn *t = conn_lookup(conn_id, conn_gen);
		if (t)
			c2s_auth_answer(t, seq, ok, condition);
		return;
	}
	struct routed r = { .kind = ST_OTHER, .type = ok ? 1 : 0, .id = condition,
			    .bytes = "", .len = 0 };
	send_route(worker_index, conn_id, conn_gen, ROUTE_AUTH, &r, seq);
}

void router_inbound(const void *msg, size_t len)
{
	struct route_hdr h;
	if (len < sizeof h)
		return;
	memcpy(&h, msg, sizeof h);
	const char *p = (const char *)msg + sizeof h;
	size_t var = (size_t)h.to_len + h.from_len + h.id_len;
	if (len < sizeof h + var + h.stanza_len)
		return;
	char *to = strndup(p, h.to_len);
	char *from = strndup(p + h.to_len, h.from_len);
	char *id = h.id_len ? strndup(p + h.to_len + h.from_len, h.id_len) : NULL;
	if (!to || !from || (h.id_len && !id)) {
		log_error("out of memory taking a stanza from another worker");
		goto out;
	}
	struct routed r = {
		.kind = (enum stanza_kind)h.stanza, .type = (enum stanza_type)h.type, .id = id,
		.from = from, .to = to, .bytes = p + var, .len = h.stanza_len, .hops = h.hops,
	};
	struct conn *t = conn_lookup(h.conn_id, h.conn_gen);
	switch (h.kind) {
	case ROUTE_DELIVER:
		if (t && t->state == C2S_BOUND)
			deliver_local(t, r.bytes, r.len);
		else
			recipient_gone(&r, addressed_to_component(to));
		break;
	case ROUTE_KICK:
		if (t)
			t->handler->stream_error(t, "conflict", "replaced by a new session");
		break;
	case ROUTE_PROBE:
		if (t && t->state == C2S_BOUND)
			c2s_answer_probe(t, from);
		break;
	case ROUTE_AUTH:
		if (t)
			c2s_auth_answer(t, h.seq, h.type == 1, id);
		break;
	}
out:
	free(to);
	free(from);
	free(id);
}

void router_fini(void)
{
	buf_free(&build);
}
